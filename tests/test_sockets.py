"""Socket behaviour over every transport: the foundation's promises."""

from __future__ import annotations

import os
import pathlib
import socket as stdlib_socket
from typing import Any

import pytest
import trio
import trio.testing

import triomq
from triomq._endpoint import parse_endpoint
from triomq._zmtp._frames import encode_message
from triomq._zmtp._greeting import encode_greeting

from .helpers import wait_for_event


def free_tcp_port() -> int:
    with stdlib_socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fixed_endpoint(transport: str, tmp_name: str) -> str:
    """An endpoint known before binding (for connect-before-bind and restarts)."""
    if transport == "tcp":
        return f"tcp://127.0.0.1:{free_tcp_port()}"
    if transport == "ipc":
        return f"ipc://@triomq-test-{os.getpid()}-{tmp_name}"
    return f"inproc://{tmp_name}"


@pytest.mark.parametrize("sizes", [[0], [1], [255], [256], [70_000], [0, 1, 255, 256, 70_000] * 10])
async def test_push_pull_frames(endpoint: str, sizes: list[int]) -> None:
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.PULL) as pull, triomq.open_socket(triomq.PUSH) as push:
            await push.connect(await pull.bind(endpoint))
            frames = [bytes([i % 251]) * n for i, n in enumerate(sizes)]
            await push.send_multipart(frames)
            await push.send(b"last")
            assert await pull.recv_multipart() == frames
            assert await pull.recv() == b"last"


async def test_many_messages_in_order(endpoint: str) -> None:
    with trio.fail_after(20):
        async with triomq.open_socket(triomq.PULL) as pull, triomq.open_socket(triomq.PUSH) as push:
            await push.connect(await pull.bind(endpoint))

            async def produce() -> None:
                for i in range(5000):
                    await push.send(b"%d" % i)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce)
                for i in range(5000):
                    assert await pull.recv() == b"%d" % i


async def test_connect_before_bind(transport: str) -> None:
    ep = fixed_endpoint(transport, "cbb")
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.PUSH) as push:
            await push.connect(ep)
            for i in range(10):
                await push.send(b"early %d" % i)  # queued: the pipe exists already
            async with triomq.open_socket(triomq.PULL) as pull:
                await pull.bind(ep)
                for i in range(10):
                    assert await pull.recv() == b"early %d" % i


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
async def test_reconnect_keeps_queued_messages(transport: str) -> None:
    ep = fixed_endpoint(transport, "reconnect")
    with trio.fail_after(15):
        async with triomq.open_socket(triomq.PUSH, reconnect_ivl=0.01) as push:
            await push.connect(ep)
            async with triomq.open_socket(triomq.PULL) as pull:
                await pull.bind(ep)
                await push.send(b"before")
                assert await pull.recv() == b"before"
            # the peer is gone; these wait in the connecting socket's pipe
            async with push.monitor() as events:
                for i in range(5):
                    await push.send(b"while away %d" % i)
                async with triomq.open_socket(triomq.PULL) as pull:
                    await pull.bind(ep)
                    for i in range(5):
                        assert await pull.recv() == b"while away %d" % i
                    await wait_for_event(events, triomq.HandshakeSucceeded)


async def test_reconnect_backoff_grows_to_max() -> None:
    ep = fixed_endpoint("tcp", "backoff")
    delays = []
    with trio.fail_after(10):
        async with triomq.open_socket(
            triomq.PUSH, reconnect_ivl=0.01, reconnect_ivl_max=0.08, linger=0
        ) as push:
            async with push.monitor() as events:
                await push.connect(ep)
                async for event in events:
                    if isinstance(event, triomq.ConnectRetried):
                        delays.append(event.delay)
                        if len(delays) == 6:
                            break
    # jitter adds up to one reconnect_ivl on top of the doubled interval
    bases = [0.01, 0.02, 0.04, 0.08, 0.08, 0.08]
    for delay, base in zip(delays, bases, strict=True):
        assert base <= delay <= base + 0.01


@pytest.mark.parametrize("reconnect_ivl", [None, 0])
@pytest.mark.parametrize("transport", ["tcp", "ipc"])
async def test_without_reconnection_a_lost_peer_takes_its_connect_with_it(
    transport: str, endpoint: str, reconnect_ivl: float | None
) -> None:
    # libzmq ends the endpoint when a connection ends and it may not reconnect
    # (session_base.cpp, reconnect()); a pipe kept for it took every other
    # message of a PUSH, and made close with the default linger wait forever
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.PULL) as live, triomq.open_socket(
            triomq.PUSH, reconnect_ivl=reconnect_ivl
        ) as push:
            live_ep = await live.bind(endpoint)
            await push.connect(live_ep)
            async with push.monitor() as events:
                async with triomq.open_socket(triomq.PULL) as gone:
                    gone_ep = await gone.bind(endpoint if transport == "tcp" else endpoint + "b")
                    await push.connect(gone_ep)
                    await push.wait_peers(2)
                ended = await wait_for_event(events, triomq.Disconnected)
                assert ended.endpoint == gone_ep
            assert push.statistics().pipes == 1
            with pytest.raises(triomq.EndpointError, match="not connected"):
                await push.disconnect(gone_ep)
            for i in range(10):
                await push.send(b"%d" % i)
            assert [await live.recv() for _ in range(10)] == [b"%d" % i for i in range(10)]
        # (and the close, with linger None, did not wait for the gone peer)


async def test_without_reconnection_a_lost_peers_queue_is_counted_lost() -> None:
    with trio.fail_after(10):
        async with triomq.open_socket(
            triomq.PUSH, reconnect_ivl=None, sndhwm=4, sndbuf=65536
        ) as push:
            async with push.monitor() as events:
                async with triomq.open_socket(triomq.PULL, rcvhwm=1, rcvbuf=65536) as pull:
                    await push.connect(await pull.bind("tcp://127.0.0.1:0"))
                    await push.wait_peers()
                    # fill the kernel's buffers, then the queue: the reader never reads
                    while push.statistics().queued_out < 4:
                        with pytest.raises(trio.WouldBlock):
                            while True:
                                push.send_nowait(b"x" * 100_000)
                        await trio.testing.wait_all_tasks_blocked()
                    queued = push.statistics().queued_out
                    await pull.aclose()
                ended = await wait_for_event(events, triomq.Disconnected)
                assert isinstance(ended, triomq.Disconnected)
            stats = push.statistics()
            assert (stats.pipes, stats.queued_out) == (0, 0)
            assert stats.lost == ended.lost >= queued


async def test_push_round_robins_over_peers(endpoint: str) -> None:
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.PUSH) as push:
            ep = await push.bind(endpoint)
            async with triomq.open_socket(triomq.PULL) as a, triomq.open_socket(triomq.PULL) as b:
                await a.connect(ep)
                await b.connect(ep)
                await push.wait_peers(2)
                for i in range(10):
                    await push.send(b"%d" % i)
                got_a = [await a.recv() for _ in range(5)]
                got_b = [await b.recv() for _ in range(5)]
                assert sorted(got_a + got_b, key=int) == [b"%d" % i for i in range(10)]
                assert {int(x) % 2 for x in got_a} | {int(x) % 2 for x in got_b} == {0, 1}
                assert len({int(x) % 2 for x in got_a}) == 1  # strictly alternating


async def test_pull_fair_queues(endpoint: str) -> None:
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.PULL) as pull:
            ep = await pull.bind(endpoint)
            async with triomq.open_socket(triomq.PUSH) as a, triomq.open_socket(triomq.PUSH) as b:
                await a.connect(ep)
                await b.connect(ep)
                await pull.wait_peers(2)
                for _ in range(20):
                    await a.send(b"a")
                    await b.send(b"b")
                # wait until both peers' messages are all queued, then read: alternating
                # (polls: no event for messages queued; under the fail_after)
                while pull.statistics().queued_in < 40:
                    await trio.sleep(0.001)
                got = [await pull.recv() for _ in range(40)]
                assert got.count(b"a") == got.count(b"b") == 20
                assert all(got[i] != got[i + 1] for i in range(39))


async def test_push_blocks_at_hwm_and_never_drops() -> None:
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.PULL, rcvhwm=2) as pull:
            await pull.bind("inproc://hwm")
            async with triomq.open_socket(triomq.PUSH, sndhwm=2) as push:
                await push.connect("inproc://hwm")
                for i in range(4):  # inproc capacity = sndhwm + rcvhwm
                    push.send_nowait(b"%d" % i)
                with pytest.raises(trio.WouldBlock):
                    push.send_nowait(b"4")
                with trio.move_on_after(0.05) as scope:
                    await push.send(b"4")
                assert scope.cancelled_caught  # waited, and queued nothing
                assert await pull.recv() == b"0"
                await push.send(b"4")  # room again
                assert [await pull.recv() for _ in range(4)] == [b"1", b"2", b"3", b"4"]
                with pytest.raises(trio.WouldBlock):
                    pull.recv_nowait()


async def test_push_over_tcp_blocks_when_peer_does_not_read() -> None:
    big = b"x" * (1 << 20)
    with trio.fail_after(20):
        async with triomq.open_socket(triomq.PULL, rcvhwm=1, rcvbuf=65536) as pull:
            ep = await pull.bind("tcp://127.0.0.1:0")
            async with triomq.open_socket(triomq.PUSH, sndhwm=1, linger=0) as push:
                await push.connect(ep)
                await push.wait_peers()
                sent = 0
                while True:
                    with trio.move_on_after(0.5) as scope:
                        await push.send(big)
                    if scope.cancelled_caught:
                        break
                    sent += 1
                assert sent < 64  # the kernel buffers hold some, then it blocks
                for _ in range(sent):
                    assert await pull.recv() == big
                assert push.statistics().dropped == 0


async def test_bound_socket_without_peer_makes_send_wait(endpoint: str) -> None:
    async with triomq.open_socket(triomq.PUSH, linger=0) as push:
        await push.bind(endpoint)
        with pytest.raises(trio.WouldBlock):
            push.send_nowait(b"nobody")
        with trio.move_on_after(0.05) as scope:
            await push.send(b"nobody")
        assert scope.cancelled_caught


async def test_connecting_socket_queues_up_to_hwm(transport: str) -> None:
    async with triomq.open_socket(triomq.PUSH, sndhwm=5, linger=0) as push:
        await push.connect(fixed_endpoint(transport, "nobody-home"))
        for i in range(5):
            push.send_nowait(b"%d" % i)
        with pytest.raises(trio.WouldBlock):
            push.send_nowait(b"6")
        assert push.statistics().queued_out == 5


async def test_pair_refuses_second_peer(endpoint: str) -> None:
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.PAIR) as server:
            ep = await server.bind(endpoint)
            async with triomq.open_socket(triomq.PAIR) as first:
                await first.connect(ep)
                await first.send(b"from first")
                assert await server.recv() == b"from first"
                async with server.monitor() as events, triomq.open_socket(
                    triomq.PAIR, linger=0
                ) as second:
                    await second.connect(ep)
                    if not endpoint.startswith("inproc"):
                        failed = await wait_for_event(events, triomq.HandshakeFailed)
                        assert "already has a peer" in failed.reason
                    try:
                        second.send_nowait(b"from second")  # queued at most, never delivered
                    except trio.WouldBlock:
                        assert endpoint.startswith("inproc")  # inproc refused it outright
                await server.send(b"to first")
                assert await first.recv() == b"to first"
                assert server.statistics().peers == 1
                with pytest.raises(trio.WouldBlock):
                    server.recv_nowait()


async def test_pair_connect_twice_is_an_error() -> None:
    async with triomq.open_socket(triomq.PAIR, linger=0) as pair:
        await pair.connect("inproc://pair-a")
        with pytest.raises(triomq.StateError):
            await pair.connect("inproc://pair-b")


async def test_cancelled_send_queues_nothing_and_cancelled_recv_consumes_nothing() -> None:
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.PULL, rcvhwm=1, rcvbuf=65536) as pull:
            await pull.bind("inproc://cancel")
            async with triomq.open_socket(triomq.PUSH, sndhwm=1) as push:
                # a cancelled recv with nothing to receive, then one with a message ready
                with trio.CancelScope() as scope:
                    scope.cancel()
                    await pull.recv()
                await push.connect("inproc://cancel")
                await push.send_multipart([b"a", b"1"])
                await push.send_multipart([b"b", b"2"])  # full now (1 + 1)
                with trio.CancelScope() as scope:
                    scope.cancel()
                    await pull.recv_multipart()  # cancelled before taking anything
                with trio.move_on_after(0.02):
                    await push.send_multipart([b"c", b"3"])  # cancelled while waiting
                with trio.CancelScope() as scope:
                    scope.cancel()
                    await push.send_multipart([b"d", b"4"])  # cancelled at once
                assert push.statistics().sent == 2
                assert await pull.recv_multipart() == [b"a", b"1"]
                assert await pull.recv_multipart() == [b"b", b"2"]
                with pytest.raises(trio.WouldBlock):
                    pull.recv_multipart_nowait()


async def test_send_and_recv_are_checkpoints() -> None:
    async with triomq.open_socket(triomq.PAIR) as a, triomq.open_socket(triomq.PAIR) as b:
        await a.bind("inproc://checkpoints")
        await b.connect("inproc://checkpoints")
        with trio.testing.assert_checkpoints():
            await a.send(b"x")
        with trio.testing.assert_checkpoints():
            assert await b.recv() == b"x"
        with trio.testing.assert_checkpoints():
            await b.wait_peers()


async def test_recv_refuses_multipart_without_consuming() -> None:
    async with triomq.open_socket(triomq.PAIR) as a, triomq.open_socket(triomq.PAIR) as b:
        await a.bind("inproc://multi")
        await b.connect("inproc://multi")
        await a.send_multipart([b"1", b"2"])
        with pytest.raises(triomq.StateError, match="recv_multipart"):
            await b.recv()
        assert await b.recv_multipart() == [b"1", b"2"]


async def test_async_iteration_ends_when_socket_closes() -> None:
    async with triomq.open_socket(triomq.PAIR) as a, triomq.open_socket(triomq.PAIR) as b:
        await a.bind("inproc://iter")
        await b.connect("inproc://iter")
        for i in range(3):
            await a.send(b"%d" % i)
        got = []
        async for msg in b:
            got.append(msg)
            if len(got) == 3:
                await b.aclose()
        assert got == [[b"0"], [b"1"], [b"2"]]


async def test_linger_none_delivers_queued_messages_after_close(endpoint: str) -> None:
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.PULL) as pull:
            ep = await pull.bind(endpoint)
            received = []

            async def receive() -> None:
                for _ in range(2000):
                    received.append(await pull.recv())

            async with trio.open_nursery() as nursery:
                async with triomq.open_socket(triomq.PUSH) as push:
                    await push.connect(ep)
                    for i in range(2000):
                        await push.send(b"%d" % i)
                    nursery.start_soon(receive)
                if not endpoint.startswith("inproc"):
                    # closing waited until everything queued was sent (an inproc
                    # peer reads straight from the shared queue, closed or not)
                    assert push.statistics().queued_out == 0
            assert received == [b"%d" % i for i in range(2000)]


async def test_linger_zero_closes_at_once() -> None:
    with trio.fail_after(2):
        async with triomq.open_socket(triomq.PUSH, linger=0) as push:
            await push.connect(fixed_endpoint("tcp", "nobody"))
            await push.send(b"lost")
    assert push.statistics().lost == 1


async def test_linger_bounds_close_time() -> None:
    with trio.fail_after(5):
        async with triomq.open_socket(triomq.PUSH, linger=0.1) as push:
            await push.connect(fixed_endpoint("tcp", "nobody"))
            await push.send(b"lost")
        assert push.statistics().lost == 1


async def test_exceptions_in_the_block_come_out_unwrapped() -> None:
    with pytest.raises(KeyError):
        async with triomq.open_socket(triomq.PUSH, linger=0) as push:
            await push.bind("tcp://127.0.0.1:0")
            raise KeyError("mine")


async def test_aclose_inside_the_block_does_not_cancel_the_block() -> None:
    async with triomq.open_socket(triomq.PUSH) as push:
        await push.aclose()
        reached = True
    assert reached


async def test_closed_socket_raises_closed_resource_error() -> None:
    async with triomq.open_socket(triomq.PUSH) as push:
        pass
    with pytest.raises(trio.ClosedResourceError):
        await push.send(b"x")
    await push.aclose()  # twice is fine


async def test_blocked_recv_wakes_with_closed_when_socket_closes() -> None:
    async with triomq.open_socket(triomq.PULL) as pull:
        async with trio.open_nursery() as nursery:

            async def recv_forever() -> None:
                with pytest.raises(trio.ClosedResourceError):
                    await pull.recv()

            nursery.start_soon(recv_forever)
            await trio.testing.wait_all_tasks_blocked()
            await pull.aclose()


async def test_unbind_and_disconnect(transport: str) -> None:
    ep = fixed_endpoint(transport, "unbind")
    async with triomq.open_socket(triomq.PULL) as pull, triomq.open_socket(triomq.PUSH) as push:
        await pull.bind(ep)
        await push.connect(ep)
        await push.send(b"1")
        assert await pull.recv() == b"1"
        await pull.unbind(ep)
        with pytest.raises(triomq.EndpointError):
            await pull.unbind(ep)
        await push.disconnect(ep)
        with pytest.raises(triomq.EndpointError):
            await push.disconnect(ep)
        assert push.statistics().pipes == 0


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
async def test_disconnect_writes_queued_messages_within_linger(endpoint: str) -> None:
    # libzmq's zmq_disconnect ends the session with its linger: what was
    # queued is still written (it used to be dropped at once)
    count, size = 500, 20_000
    with trio.fail_after(20):
        async with triomq.open_socket(triomq.PULL, rcvhwm=0) as pull, triomq.open_socket(
            triomq.PUSH, sndhwm=0
        ) as push:
            ep = await pull.bind(endpoint)
            await push.connect(ep)
            await push.wait_peers()
            async with push.monitor() as events:
                assert push.send_many_nowait([[b"x" * size]] * count) == count  # no checkpoint
                await push.disconnect(ep)  # returns at once: the writing goes on
                with pytest.raises(triomq.EndpointError):
                    await push.disconnect(ep)  # (forgotten already)
                for _ in range(count):
                    assert len(await pull.recv()) == size
                event = await wait_for_event(events, triomq.Disconnected)
                assert (event.reason, event.lost) == ("disconnect(): all written", 0)
                stats = push.statistics()
                assert (stats.pipes, stats.lost) == (0, 0)


async def test_disconnect_with_linger_zero_drops_and_counts() -> None:
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.PULL, rcvhwm=1) as pull, triomq.open_socket(
            triomq.PUSH, sndhwm=0, linger=0
        ) as push:
            ep = await pull.bind("tcp://127.0.0.1:0")
            await push.connect(ep)
            await push.wait_peers()
            push.send_many_nowait([[b"x" * 50_000]] * 200)
            await push.disconnect(ep)
            stats = push.statistics()
            assert stats.pipes == 0
            assert stats.lost > 0


async def test_connect_from_a_source_address() -> None:
    # libzmq's tcp://source_host:port;host:port binds the connection to the source
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.PULL) as pull, pull.monitor() as events:
            ep = await pull.bind("tcp://127.0.0.1:0")
            port = ep.rsplit(":", 1)[1]
            target = f"tcp://127.0.0.2:*;127.0.0.1:{port}"
            async with triomq.open_socket(triomq.PUSH) as push:
                await push.connect(target)
                accepted = await wait_for_event(events, triomq.Accepted)
                assert isinstance(accepted, triomq.Accepted)
                assert accepted.peer_address == "127.0.0.2"
                await push.send(b"from .2")
                assert await pull.recv() == b"from .2"
                # the source is part of the endpoint's name, as given
                await push.disconnect(target)
                assert push.statistics().pipes == 0
        for bad in ["tcp://127.0.0.2;127.0.0.1:5555", "tcp://127.0.0.2:x;127.0.0.1:5555"]:
            with pytest.raises(triomq.EndpointError):
                parse_endpoint(bad)


class _TwoAddresses(trio.abc.HostnameResolver):
    """Resolves every name to 127.0.0.2, then 127.0.0.1."""

    async def getaddrinfo(self, host, port, family=0, type=0, proto=0, flags=0):  # type: ignore[no-untyped-def]
        return [
            (stdlib_socket.AF_INET, stdlib_socket.SOCK_STREAM, 6, "", (ip, int(port)))
            for ip in ("127.0.0.2", "127.0.0.1")
        ]

    async def getnameinfo(self, sockaddr, flags):  # type: ignore[no-untyped-def]
        raise NotImplementedError


async def test_bind_to_a_name_binds_its_first_address_only() -> None:
    # as libzmq: trio.open_tcp_listeners bound each address, on its own port
    # for *, and bind() reported one of them
    trio.socket.set_custom_hostname_resolver(_TwoAddresses())
    with trio.fail_after(10), stdlib_socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))  # the second address's port is busy...
        taken.listen()
        port = taken.getsockname()[1]
        async with triomq.open_socket(triomq.PULL) as pull, triomq.open_socket(triomq.PUSH) as push:
            assert await pull.bind(f"tcp://multi:{port}") == f"tcp://multi:{port}"  # ...and unused
            wild = await pull.bind("tcp://multi:*")
            await push.connect(f"tcp://127.0.0.2:{wild.rsplit(':', 1)[1]}")
            await push.send(b"first address")
            assert await pull.recv() == b"first address"


async def test_binding_an_ipc_path_twice_then_unbind_closes_both(tmp_path: pathlib.Path) -> None:
    # libzmq: the second bind replaces the socket file; unbind closes both
    # listeners (the first one was left running, out of reach, until close)
    ep = f"ipc://{tmp_path}/twice"
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.PULL) as pull, pull.monitor() as events:
            assert await pull.bind(ep) == ep
            assert await pull.bind(ep) == ep
            async with triomq.open_socket(triomq.PUSH) as push:
                await push.connect(ep)
                await push.send(b"to the second")
                assert await pull.recv() == b"to the second"
            await pull.unbind(ep)
            closed = [await wait_for_event(events, triomq.Closed) for _ in range(2)]
            assert [event.endpoint for event in closed] == [ep, ep]
            assert not (tmp_path / "twice").exists()
            with pytest.raises(triomq.EndpointError, match="not bound"):
                await pull.unbind(ep)


async def test_inproc_disconnect_loses_only_what_no_binder_reads() -> None:
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.PULL) as pull, triomq.open_socket(triomq.PUSH) as push:
            await pull.bind("inproc://disconnect-accounting")
            await push.connect("inproc://disconnect-accounting")
            for i in range(5):
                await push.send(b"%d" % i)
            await push.disconnect("inproc://disconnect-accounting")
            # the binder still reads the shared queue: nothing was lost
            assert [await pull.recv() for _ in range(5)] == [b"%d" % i for i in range(5)]
            assert push.statistics().lost == 0
            # a connect that never found its binder: its queue is lost
            await push.connect("inproc://nobody-binds-this")
            for i in range(3):
                await push.send(b"%d" % i)
            await push.disconnect("inproc://nobody-binds-this")
            assert push.statistics().lost == 3
            # a binder that refuses the connection: its queue is lost too
            await push.connect("inproc://refuses")
            for i in range(2):
                await push.send(b"%d" % i)
            async with triomq.open_socket(triomq.SUB) as sub:
                await sub.bind("inproc://refuses")
            assert push.statistics().lost == 5
            assert push.statistics().pipes == 0


async def test_bind_errors() -> None:
    async with triomq.open_socket(triomq.PULL) as a, triomq.open_socket(triomq.PULL) as b:
        ep = await a.bind("tcp://127.0.0.1:0")
        with pytest.raises(triomq.EndpointError, match="cannot bind"):
            await b.bind(ep)
        await a.bind("inproc://taken")
        with pytest.raises(triomq.EndpointError, match="already bound"):
            await b.bind("inproc://taken")
        for bad in ["nonsense", "udp://1.2.3.4:5", "tcp://127.0.0.1", "tcp://127.0.0.1:99999"]:
            with pytest.raises(triomq.EndpointError):
                await b.bind(bad)


@pytest.mark.parametrize("host", ["a..b", "a" * 64 + ".example"])
async def test_host_the_resolver_refuses_is_retried_not_fatal(host: str) -> None:
    # getaddrinfo raises UnicodeError (a ValueError) for these: libzmq takes
    # them at connect() and retries, as for a name that does not resolve
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.PUSH, reconnect_ivl=0.01, linger=0) as push:
            async with push.monitor() as events:
                await push.connect(f"tcp://{host}:5555")
                for _ in range(2):
                    retried = await wait_for_event(events, triomq.ConnectRetried)
                    assert isinstance(retried, triomq.ConnectRetried)
                    assert "cannot resolve" in retried.reason
            assert push.statistics().pipes == 1  # the socket lives on


@pytest.mark.parametrize(
    "endpoint", ["tcp://a..b:0", "tcp://" + "a" * 64 + ".example:0", "ipc:///tmp/a\x00b"]
)
async def test_bind_to_a_name_the_resolver_refuses_is_an_endpoint_error(endpoint: str) -> None:
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.PULL) as pull, pull.monitor() as events:
            with pytest.raises(triomq.EndpointError, match="cannot bind"):
                await pull.bind(endpoint)
            failed = await wait_for_event(events, triomq.BindFailed)
            assert failed.endpoint == endpoint


async def test_tcp_wildcard_ipv6_and_abstract_ipc() -> None:
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.PULL) as pull, triomq.open_socket(triomq.PUSH) as push:
            ep = await pull.bind("tcp://*:0")
            port = ep.rsplit(":", 1)[1]
            await push.connect(f"tcp://127.0.0.1:{port}")
            await push.send(b"wild")
            assert await pull.recv() == b"wild"
        if stdlib_socket.has_ipv6:
            async with triomq.open_socket(triomq.PULL) as pull, triomq.open_socket(triomq.PUSH) as push:
                ep = await pull.bind("tcp://[::1]:0")
                assert ep.startswith("tcp://[::1]:")
                await push.connect(ep)
                await push.send(b"six")
                assert await pull.recv() == b"six"
        async with triomq.open_socket(triomq.PULL) as pull, triomq.open_socket(triomq.PUSH) as push:
            ep = await pull.bind(f"ipc://@triomq-abstract-{os.getpid()}")
            await push.connect(ep)
            await push.send(b"abstract")
            assert await pull.recv() == b"abstract"


@pytest.mark.skipif(not stdlib_socket.has_ipv6, reason="no IPv6")
async def test_tcp_wildcard_with_ipv6_is_dual_stack() -> None:
    # libzmq clears IPV6_V6ONLY: IPv4 clients reach an ipv6=True tcp://* bind too
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.PULL, ipv6=True) as pull:
            ep = await pull.bind("tcp://*:0")
            assert ep.startswith("tcp://[::]:")
            port = ep.rsplit(":", 1)[1]
            for host in ["127.0.0.1", "[::1]"]:
                async with triomq.open_socket(triomq.PUSH) as push:
                    await push.connect(f"tcp://{host}:{port}")
                    await push.send(host.encode())
                    assert await pull.recv() == host.encode()


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        encode_greeting(b"NULL", False)[:11] + b"\x00" * 53,  # wrong mechanism field
        encode_greeting(b"NULL", False) + b"\x04\x06\x05READY" + encode_message([b"x"]),
        encode_greeting(b"PLAIN", False),
    ],
)
async def test_bad_peer_is_dropped_and_good_peer_goes_on(garbage: bytes) -> None:
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.PULL, maxmsgsize=1000) as pull:
            ep = await pull.bind("tcp://127.0.0.1:0")
            port = int(ep.rsplit(":", 1)[1])
            async with pull.monitor() as events, triomq.open_socket(triomq.PUSH) as good:
                await good.connect(ep)
                await good.send(b"before")
                assert await pull.recv() == b"before"
                bad = await trio.open_tcp_stream("127.0.0.1", port)
                await bad.send_all(garbage)
                failed = await wait_for_event(events, triomq.HandshakeFailed)
                assert failed.kind in (triomq.FailureKind.PROTOCOL, triomq.FailureKind.CLOSED)
                # the socket closed the bad connection
                with trio.fail_after(5):
                    while True:
                        try:
                            if not await bad.receive_some(1000):
                                break
                        except trio.BrokenResourceError:
                            break
                await bad.aclose()
                await good.send(b"after")
                assert await pull.recv() == b"after"


async def test_oversized_frame_drops_the_peer() -> None:
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.PULL, maxmsgsize=100) as pull:
            ep = await pull.bind("tcp://127.0.0.1:0")
            async with pull.monitor() as events:
                async with triomq.open_socket(triomq.PUSH, linger=0) as big:
                    await big.connect(ep)
                    await big.send(b"x" * 101)
                    event = await wait_for_event(events, triomq.Disconnected)
                    assert "maxmsgsize" in event.reason
            async with triomq.open_socket(triomq.PUSH) as small:
                await small.connect(ep)
                await small.send(b"x" * 100)
                assert await pull.recv() == b"x" * 100


async def test_stalled_handshake_times_out() -> None:
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.PULL, handshake_ivl=0.2) as pull:
            ep = await pull.bind("tcp://127.0.0.1:0")
            async with pull.monitor() as events:
                stalled = await trio.open_tcp_stream("127.0.0.1", int(ep.rsplit(":", 1)[1]))
                failed = await wait_for_event(events, triomq.HandshakeFailed)
                assert failed.kind is triomq.FailureKind.TIMEOUT
                await stalled.aclose()


async def test_incompatible_peer_refused(endpoint: str) -> None:
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.PULL) as pull:
            ep = await pull.bind(endpoint)
            async with pull.monitor() as events, triomq.open_socket(triomq.PUB, linger=0) as pub:
                await pub.connect(ep)
                failed = await wait_for_event(events, triomq.HandshakeFailed)
                assert "incompatible socket types" in failed.reason


async def test_monitor_reports_lifecycle() -> None:
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.PULL) as pull:
            async with pull.monitor() as events:
                ep = await pull.bind("tcp://127.0.0.1:0")
                assert await wait_for_event(events, triomq.Listening) == triomq.Listening(ep)
                async with triomq.open_socket(triomq.PUSH) as push:
                    await push.connect(ep)
                    await wait_for_event(events, triomq.Accepted)
                    ok = await wait_for_event(events, triomq.HandshakeSucceeded)
                    assert ok.peer_socket_type == "PUSH"
                gone = await wait_for_event(events, triomq.Disconnected)
                assert gone.endpoint == ep
                await pull.unbind(ep)
                await wait_for_event(events, triomq.Closed)


async def test_monitor_reports_closed_on_close_to_every_monitor() -> None:
    """Closing the socket stops its listeners: each monitor sees Closed for each
    bound endpoint (libzmq: EVENT_CLOSED, then EVENT_MONITOR_STOPPED) before the
    events end; a monitor nobody reads (buffer 1, full) neither blocks the
    socket nor takes events from the others."""
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.PULL) as pull:
            async with pull.monitor() as events, pull.monitor(buffer=1) as _unread:
                ep = await pull.bind("tcp://127.0.0.1:0")
                inproc = await pull.bind("inproc://monitor-close")
                async with triomq.open_socket(triomq.PUSH) as push:
                    await push.connect(ep)
                    await push.send(b"through")
                    assert await pull.recv() == b"through"
                await pull.aclose()
                seen = [event async for event in events]
        assert [e for e in seen if isinstance(e, triomq.Listening)] == [
            triomq.Listening(ep), triomq.Listening(inproc)
        ]
        assert seen[-1] == triomq.Closed(ep)
        assert isinstance(seen[-2], triomq.Disconnected)


async def test_batch_calls_queue_whole_messages_and_respect_hwm() -> None:
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.PULL, rcvhwm=3) as pull:
            await pull.bind("inproc://batch")
            async with triomq.open_socket(triomq.PUSH, sndhwm=2) as push:
                await push.connect("inproc://batch")
                msgs = [[b"m%d" % i, b"part"] for i in range(8)]
                with trio.testing.assert_checkpoints():
                    assert await push.send_many(msgs) == 5  # capacity 2 + 3: the rest waits
                with pytest.raises(trio.WouldBlock):
                    push.send_many_nowait(msgs[5:])
                with trio.move_on_after(0.02) as scope:
                    await push.send_many(msgs[5:])  # waits; cancelled: nothing queued
                assert scope.cancelled_caught
                with trio.testing.assert_checkpoints():
                    assert await pull.recv_many(2) == msgs[:2]
                assert await push.send_many(msgs[5:]) == 2
                got = await pull.recv_many()
                assert got == msgs[2:7]
                assert await push.send_many(msgs[7:]) == 1
                assert pull.recv_many_nowait() == msgs[7:]
                with pytest.raises(trio.WouldBlock):
                    pull.recv_many_nowait()
                with trio.CancelScope() as cancelled:
                    cancelled.cancel()
                    await pull.recv_many()
                assert await push.send_many([]) == 0


async def test_batch_receive_over_tcp_keeps_order(endpoint: str) -> None:
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.PULL) as pull, triomq.open_socket(triomq.PUSH) as push:
            await push.connect(await pull.bind(endpoint))
            sent = [[b"%d" % i] * (i % 3 + 1) for i in range(3000)]

            async def produce() -> None:
                left = sent
                while left:
                    left = left[await push.send_many(left) :]

            got: list[list[bytes]] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce)
                while len(got) < len(sent):
                    got += await pull.recv_many(500)
            assert got == sent


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
async def test_large_batches_with_empty_frames_go_out_whole(transport: str) -> None:
    """Vectored writes (large batches) carry empty frames and multi-megabyte ones."""
    endpoint = "tcp://127.0.0.1:0" if transport == "tcp" else fixed_endpoint("ipc", "vectored")
    msgs = [[b""] * 50, [b"x" * 2_000_000, b"tail", b""], [b"", b"y" * 70_000], [b"end"]]
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.PULL) as pull, triomq.open_socket(triomq.PUSH) as push:
            await push.connect(await pull.bind(endpoint))
            await push.wait_peers()
            for msg in msgs:
                await push.send_multipart(msg)
            assert [await pull.recv_multipart() for _ in msgs] == msgs


async def test_a_reconnecting_peer_is_heard_in_order() -> None:
    """The old connection's unread messages come out before the new connection's."""
    ep = fixed_endpoint("tcp", "reorder")
    with trio.fail_after(15):
        async with triomq.open_socket(triomq.PULL) as pull, triomq.open_socket(
            triomq.PUSH, reconnect_ivl=0.01
        ) as push:
            await pull.bind(ep)
            await push.connect(ep)
            for i in range(100):
                await push.send(b"%d" % i)
            # (these two loops poll: no event for messages queued; under the fail_after)
            while pull.statistics().queued_in < 100:
                await trio.sleep(0.01)
            await pull.unbind(ep)  # drops the connection; its 100 messages stay readable
            await pull.bind(ep)
            for i in range(100, 200):
                await push.send(b"%d" % i)  # over the new connection, into a new pipe
            await pull.wait_peers()
            while pull.statistics().queued_in < 200:
                await trio.sleep(0.01)
            assert [await pull.recv() for _ in range(150)] == [b"%d" % i for i in range(150)]
            assert [m[0] for m in await pull.recv_many()] == [b"%d" % i for i in range(150, 200)]


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
async def test_large_messages_from_several_peers_at_once_arrive_whole(endpoint: str) -> None:
    """Large frames are read straight into pooled buffers: two connections
    gathering at the same time, sizes around the pool's limit, small frames
    between them, all arrive intact and in order per sender."""
    from triomq._zmtp._frames import SCRATCH_MAX

    sizes = [70_000, 1 << 20, 3 << 20, 10, SCRATCH_MAX, SCRATCH_MAX + 1, 5 << 20, 300_000]

    def message(sender: int, i: int, size: int) -> list[bytes]:
        pattern = bytes([sender, i]) + bytes(range(254))
        return [b"%d:%d" % (sender, i), (pattern * (size // 256 + 1))[:size]]

    with trio.fail_after(30):
        async with triomq.open_socket(triomq.PULL) as pull:
            ep = await pull.bind(endpoint)
            async with triomq.open_socket(triomq.PUSH) as a, triomq.open_socket(triomq.PUSH) as b:
                for push in (a, b):
                    await push.connect(ep)
                await pull.wait_peers(2)
                async with trio.open_nursery() as nursery:
                    for sender, push in enumerate((a, b)):
                        nursery.start_soon(
                            push.send_many, [message(sender, i, n) for i, n in enumerate(sizes)]
                        )
                    got: dict[int, list[list[bytes]]] = {0: [], 1: []}
                    for _ in range(2 * len(sizes)):
                        msg = await pull.recv_multipart()
                        got[int(msg[0].split(b":")[0])].append(msg)
                for sender in (0, 1):
                    assert got[sender] == [message(sender, i, n) for i, n in enumerate(sizes)]


async def test_a_connect_cancelled_as_its_dialer_starts_leaves_nothing_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # (a pipe without a dialer took a share of a PUSH's messages, and close waited for it)
    import triomq._socket as socket_module

    real_run_dialer = socket_module.run_dialer
    starting = trio.Event()
    go = trio.Event()

    async def run_dialer(*args: Any, **kwargs: Any) -> None:
        starting.set()
        await go.wait()  # the dialer starts slowly: connect() waits in nursery.start
        await real_run_dialer(*args, **kwargs)

    monkeypatch.setattr(socket_module, "run_dialer", run_dialer)
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.PULL) as pull:
            ep = await pull.bind("tcp://127.0.0.1:0")
            async with triomq.open_socket(triomq.PUSH) as push:
                with trio.CancelScope() as scope:
                    async with trio.open_nursery() as nursery:

                        async def cancel_when_starting() -> None:
                            await starting.wait()
                            scope.cancel()

                        nursery.start_soon(cancel_when_starting)
                        await push.connect(ep)
                assert scope.cancelled_caught
                assert push.statistics().pipes == 0
                go.set()
                await push.connect(ep)  # it can be made again, and all arrives
                for i in range(4):
                    await push.send(b"%d" % i)
                assert [await pull.recv() for _ in range(4)] == [b"0", b"1", b"2", b"3"]


async def test_cancellation_comes_out_of_open_socket_plain() -> None:
    # not as a group: `except trio.Cancelled` (and a caller's own groups) work
    for connect in (False, True):
        with trio.CancelScope() as scope:
            try:
                async with triomq.open_socket(triomq.PUSH, linger=0) as push:
                    if connect:
                        await push.connect("tcp://127.0.0.1:1")
                    scope.cancel()
                    await trio.sleep_forever()
            except BaseException as exc:
                assert type(exc) is trio.Cancelled
                raise
        assert scope.cancelled_caught
    with pytest.raises(ExceptionGroup) as info:
        async with triomq.open_socket(triomq.PUSH):
            raise ExceptionGroup("mine", [ValueError("v")])
    assert info.value.message == "mine"  # (the block's own group, as raised)


async def test_calls_after_close_raise_closed_resource_error() -> None:
    async with triomq.open_socket(triomq.PUSH) as push:
        pass
    for call in (push.disconnect("tcp://127.0.0.1:1"), push.unbind("tcp://127.0.0.1:1"), push.send_many([])):
        with pytest.raises(trio.ClosedResourceError):
            await call
    async with push.monitor() as events:  # ends at once: nothing more will happen
        assert [event async for event in events] == []


async def test_proxy_returns_when_its_destination_closes() -> None:
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.PULL) as front:
            await front.bind("inproc://proxy-dest-close")
            async with triomq.open_socket(triomq.PUSH, linger=0) as back:
                await back.bind("inproc://proxy-dest-close-out")
                async with trio.open_nursery() as nursery:
                    done = trio.Event()

                    async def run_proxy() -> None:
                        await triomq.proxy(front, back)
                        done.set()

                    nursery.start_soon(run_proxy)
                    await trio.testing.wait_all_tasks_blocked()
                    await back.aclose()  # nothing arrives on the frontend meanwhile
                    await done.wait()


async def test_proxy_raises_the_destination_error_itself() -> None:
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.DEALER) as front, triomq.open_socket(
            triomq.ROUTER, router_mandatory=True
        ) as back:
            await front.bind("inproc://proxy-err")
            async with triomq.open_socket(triomq.DEALER) as client:
                await client.connect("inproc://proxy-err")
                await client.send_multipart([b"no-such-peer", b"hi"])
                with pytest.raises(triomq.HostUnreachable):
                    await triomq.proxy(front, back)


async def test_a_message_put_back_keeps_its_peer() -> None:
    # recv() puts back a multipart message: with_peer still says who sent it
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.PULL) as pull, triomq.open_socket(triomq.PUSH) as push:
            ep = await pull.bind("tcp://127.0.0.1:0")
            await push.connect(ep)
            await push.send_multipart([b"a", b"b"])
            with pytest.raises(triomq.StateError):
                await pull.recv()
            msg, peer = await pull.recv_multipart_with_peer()
            assert msg == [b"a", b"b"]
            assert peer is not None and peer.socket_type == "PUSH"
