"""The conflate option: each queue keeps only the latest whole message (libzmq's ZMQ_CONFLATE)."""

from __future__ import annotations

import os
import socket as stdlib_socket
from typing import Any

import pytest
import trio
import trio.testing

import triomq

N = 1000


def fixed_endpoint(transport: str, name: str) -> str:
    """An endpoint known before binding (to connect before the peer binds)."""
    if transport == "tcp":
        with stdlib_socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return f"tcp://127.0.0.1:{s.getsockname()[1]}"
    if transport == "ipc":
        return f"ipc://@triomq-conflate-{os.getpid()}-{name}"
    return f"inproc://conflate-{name}"


async def arrived(sock: triomq.Socket, count: int) -> None:
    """Wait until *count* messages came into *sock*'s queues: each one is
    either waiting there or was replaced (polls: no event for that)."""
    while True:
        stats = sock.statistics()
        if stats.conflated + stats.queued_in >= count:
            return
        await trio.sleep(0.001)


def numbered(count: int, prefix: bytes = b"") -> list[list[bytes]]:
    return [[prefix + b"%d" % i] for i in range(1, count + 1)]


async def test_bad_values_and_swap_are_refused() -> None:
    with pytest.raises(ValueError, match="conflate and swap cannot be combined"):
        async with triomq.open_socket(triomq.PUSH, conflate=True, swap=1 << 20):
            pass
    with pytest.raises(TypeError, match="conflate must be True or False, not 1"):
        async with triomq.open_socket(triomq.PUSH, conflate=1):
            pass
    assert triomq.SocketOptions().conflate is False


@pytest.mark.parametrize("pull_binds", [True, False], ids=["pull_binds", "push_binds"])
async def test_a_conflating_receiver_keeps_the_latest(endpoint: str, pull_binds: bool) -> None:
    with trio.fail_after(10):
        async with (
            triomq.open_socket(triomq.PULL, conflate=True, rcvhwm=10) as pull,
            triomq.open_socket(triomq.PUSH) as push,
        ):
            if pull_binds:
                await push.connect(await pull.bind(endpoint))
            else:
                await pull.connect(await push.bind(endpoint))
            await pull.wait_peers()
            await push.wait_peers()
            async with pull.monitor() as events:
                for msg in numbered(N):
                    await push.send_multipart(msg)
                await arrived(pull, N)
                # rcvhwm=10 did not hold the sender back, and nothing was dropped
                assert pull.recv_many_nowait() == [[b"%d" % N]]
                with pytest.raises(trio.WouldBlock):
                    pull.recv_nowait()
                stats = pull.statistics()
                assert (stats.received, stats.conflated, stats.dropped, stats.lost) == (1, N - 1, 0, 0)
                assert [p.conflated for p in pull.peer_statistics()] == [N - 1]
                # an inproc queue is both sockets' own: the sender sees it conflate
                inproc = endpoint.startswith("inproc")
                assert push.statistics().conflated == (N - 1 if inproc else 0)
                seen = []
                while True:
                    try:
                        seen.append(events.receive_nowait())
                    except trio.WouldBlock:
                        break
                assert not [e for e in seen if isinstance(e, triomq.MessagesDropped)]


@pytest.mark.parametrize("batch", [False, True], ids=["send", "send_many"])
async def test_a_conflating_sender_queues_only_the_latest(transport: str, batch: bool) -> None:
    """Sent before the peer is there: the queue holds the last message only,
    whatever sndhwm says; the peer gets that one."""
    with trio.fail_after(10):
        endpoint = fixed_endpoint(transport, f"sender-{batch}")
        async with triomq.open_socket(triomq.PUSH, conflate=True, sndhwm=10) as push:
            await push.connect(endpoint)
            if batch:
                assert push.send_many_nowait(numbered(N)) == N
            else:
                for msg in numbered(N):
                    push.send_multipart_nowait(msg)  # never full
            stats = push.statistics()
            assert (stats.sent, stats.queued_out, stats.conflated) == (N, 1, N - 1)
            async with triomq.open_socket(triomq.PULL) as pull:
                await pull.bind(endpoint)
                assert await pull.recv() == b"%d" % N
                await push.send(b"end")
                assert await pull.recv() == b"end"  # nothing else was queued
            assert push.statistics().dropped == 0


async def test_a_conflating_push_without_peers_still_waits() -> None:
    """No pipe, no queue: send waits, as libzmq's (EAGAIN)."""
    async with triomq.open_socket(triomq.PUSH, conflate=True) as push:
        with pytest.raises(trio.WouldBlock):
            push.send_nowait(b"x")


async def test_an_inproc_binder_that_conflates_conflates_the_pair() -> None:
    """triomq's rule: a queue two inproc sockets share conflates if either
    does. (libzmq takes the connecting socket's option alone.) What the
    connecting socket queued before the bind is conflated too."""
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.PUSH) as push:
            await push.connect("inproc://conflate-binder")
            for msg in numbered(N):
                push.send_multipart_nowait(msg)
            assert push.statistics().queued_out == N
            async with triomq.open_socket(triomq.PULL, conflate=True) as pull:
                await pull.bind("inproc://conflate-binder")
                assert push.statistics().conflated == pull.statistics().conflated == N - 1
                assert pull.recv_many_nowait() == [[b"%d" % N]]
                for msg in numbered(5, b"again "):
                    push.send_multipart_nowait(msg)  # (past the old sndhwm too)
                assert pull.recv_many_nowait() == [[b"again 5"]]


async def test_the_whole_last_message_is_kept(endpoint: str) -> None:
    """libzmq keeps the last frame of a multipart message; triomq the last message."""
    with trio.fail_after(10):
        async with (
            triomq.open_socket(triomq.PULL, conflate=True) as pull,
            triomq.open_socket(triomq.PUSH) as push,
        ):
            await push.connect(await pull.bind(endpoint))
            sent = [[b"a%d" % i, b"", b"c" * (i * 100)] for i in range(1, 101)]
            assert await push.send_many(sent) == len(sent)
            await arrived(pull, len(sent))
            assert pull.recv_many_nowait() == [sent[-1]]


async def test_one_message_per_peer(endpoint: str) -> None:
    """Each peer's queue conflates on its own: recv_many gets each peer's latest."""
    with trio.fail_after(10):
        async with (
            triomq.open_socket(triomq.PULL, conflate=True) as pull,
            triomq.open_socket(triomq.PUSH) as a,
            triomq.open_socket(triomq.PUSH) as b,
        ):
            bound = await pull.bind(endpoint)
            await a.connect(bound)
            await b.connect(bound)
            await pull.wait_peers(2)
            for i in range(1, 101):
                await a.send(b"a%d" % i)
                await b.send(b"b%d" % i)
            await arrived(pull, 200)
            assert sorted(pull.recv_many_nowait()) == [[b"a100"], [b"b100"]]


async def test_a_cancelled_recv_consumes_nothing_and_newer_messages_replace() -> None:
    with trio.fail_after(10):
        async with (
            triomq.open_socket(triomq.PULL, conflate=True) as pull,
            triomq.open_socket(triomq.PUSH) as push,
        ):
            await push.connect(await pull.bind("inproc://conflate-cancel"))
            await push.send(b"1")
            with trio.CancelScope() as scope:
                scope.cancel()
                await pull.recv()
            assert scope.cancelled_caught
            await push.send(b"2")
            assert await pull.recv() == b"2"
            async with trio.open_nursery() as nursery:  # a wait cancelled before anything came
                nursery.start_soon(pull.recv)
                await trio.testing.wait_all_tasks_blocked()
                nursery.cancel_scope.cancel()
            await push.send(b"3")
            assert await pull.recv() == b"3"
            stats = pull.statistics()
            assert (stats.received, stats.conflated) == (2, 1)


async def test_a_subscriber_keeps_the_latest_and_sends_every_subscription(endpoint: str) -> None:
    """Subscriptions are not messages: none is conflated away. (libzmq's
    conflating SUB passes one of a burst of subscriptions upstream.)"""
    with trio.fail_after(10):
        topics = [b"t%02d" % i for i in range(50)]
        async with (
            triomq.open_socket(triomq.XPUB, xpub_verbose=True) as xpub,
            triomq.open_socket(triomq.SUB, conflate=True, subscribe=topics[:25]) as sub,
        ):
            await sub.connect(await xpub.bind(endpoint))
            for topic in topics[25:]:
                await sub.subscribe(topic)
            reports = {(await xpub.recv())[1:] for _ in topics}
            assert reports == set(topics)
            for i in range(1, N + 1):
                await xpub.send(b"t07 %d" % i)
                await xpub.send(b"unwanted %d" % i)  # (filtered at the publisher)
            await arrived(sub, N)
            assert sub.recv_many_nowait() == [[b"t07 %d" % N]]
            assert sub.statistics().conflated == N - 1


async def test_a_publisher_conflates_for_each_subscriber() -> None:
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.PUB, conflate=True, sndhwm=10) as pub:
            await pub.bind("inproc://conflate-pub")
            async with (
                triomq.open_socket(triomq.SUB, subscribe=[b""]) as s1,
                triomq.open_socket(triomq.SUB, subscribe=[b""]) as s2,
                triomq.open_socket(triomq.SUB, subscribe=[b"1"]) as s3,
            ):
                for sub in (s1, s2, s3):
                    await sub.connect("inproc://conflate-pub")
                for msg in numbered(N):
                    await pub.send_multipart(msg)
                assert s1.recv_many_nowait() == s2.recv_many_nowait() == [[b"%d" % N]]
                assert s3.recv_many_nowait() == [[b"1000"]]
                stats = pub.statistics()
                # every message went to s1 and s2, those starting with 1 to s3
                to_s3 = sum(1 for (m,) in numbered(N) if m.startswith(b"1"))
                assert (stats.dropped, stats.conflated) == (0, 2 * (N - 1) + to_s3 - 1)
                assert sorted(p.conflated for p in pub.peer_statistics()) == [to_s3 - 1, N - 1, N - 1]


async def test_a_dealer_conflates_both_ways(transport: str) -> None:
    with trio.fail_after(10):
        endpoint = fixed_endpoint(transport, "dealer")
        async with triomq.open_socket(triomq.DEALER, conflate=True, routing_id=b"D") as dealer:
            await dealer.connect(endpoint)
            for msg in numbered(100, b"d"):
                dealer.send_multipart_nowait(msg)
            async with triomq.open_socket(triomq.ROUTER) as router:
                await router.bind(endpoint)
                assert await router.recv_multipart() == [b"D", b"d100"]
                for i in range(1, 101):
                    await router.send_multipart([b"D", b"r%d" % i])
                await arrived(dealer, 99 + 100)  # (99 replaced on the way out)
                assert dealer.recv_many_nowait() == [[b"r100"]]
                assert dealer.statistics().conflated == 99 + 99


@pytest.mark.parametrize(
    "kinds",
    [(triomq.PAIR, triomq.PAIR), (triomq.XPUB, triomq.XSUB), (triomq.ROUTER, triomq.DEALER)],
    ids=lambda k: f"{k[0].name}-{k[1].name}",
)
async def test_other_types_ignore_it(endpoint: str, kinds: Any) -> None:
    """As libzmq: PAIR, REQ, REP, ROUTER, XPUB and XSUB accept conflate and ignore it."""
    sender_type, receiver_type = kinds
    with trio.fail_after(10):
        receiver_conflates = receiver_type is not triomq.DEALER  # (a DEALER would conflate)
        async with (
            triomq.open_socket(sender_type, conflate=True) as sender,
            triomq.open_socket(receiver_type, conflate=receiver_conflates, routing_id=b"R") as receiver,
        ):
            await receiver.connect(await sender.bind(endpoint))
            if receiver_type is triomq.XSUB:
                await receiver.send(b"\x01")
                assert await sender.recv() == b"\x01"
            await sender.wait_peers()
            envelope = [b"R"] if sender_type is triomq.ROUTER else []
            for (body,) in numbered(100):
                await sender.send_multipart([*envelope, body])
            assert [await receiver.recv() for _ in range(100)] == [m for (m,) in numbered(100)]
            assert sender.statistics().conflated == receiver.statistics().conflated == 0


async def test_the_hwm_still_holds_where_it_is_ignored(transport: str) -> None:
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.PAIR, conflate=True, sndhwm=5, linger=0) as pair:
            await pair.connect(fixed_endpoint(transport, "pair-hwm"))
            for i in range(5):
                pair.send_nowait(b"%d" % i)
            with pytest.raises(trio.WouldBlock):
                pair.send_nowait(b"one too many")
        async with triomq.open_socket(triomq.REQ, conflate=True) as req, triomq.open_socket(
            triomq.REP, conflate=True
        ) as rep:
            await req.connect(await rep.bind(fixed_endpoint(transport, "reqrep")))
            await req.send(b"ping")
            assert await rep.recv() == b"ping"
            await rep.send(b"pong")
            assert await req.recv() == b"pong"


def test_the_queue_keeps_control_items_and_the_latest_message() -> None:
    """The queue itself: control items (subscriptions, heartbeats) stay, in
    order; a message takes the waiting one's place; wake-ups come once."""
    from triomq._engine._pipe import ConflatingQueue, MessageQueue, SubscriptionCommand

    woken: list[str] = []
    queue = ConflatingQueue()
    queue.on_readable = lambda: woken.append("readable")
    sub_a, sub_b = SubscriptionCommand(b"a", True), SubscriptionCommand(b"b", True)
    queue.put(sub_a)
    queue.put([b"1"])
    queue.put(sub_b)
    queue.put([b"2"])
    queue.put_many([[b"3"], [b"4"]])
    assert queue.writable() and queue.room() > 1 << 20
    assert queue.get_batch(10) == [sub_a, [b"4"], sub_b]
    assert (queue.replaced, woken) == (3, ["readable"])
    queue.put([b"5"])
    queue.unget([b"older"])  # (taken back after a newer one came: the newer one stays)
    assert (queue.get(), queue.replaced, woken) == ([b"5"], 4, ["readable", "readable"])

    # a SUB's queue: what its filter rejects replaces nothing
    wanted = ConflatingQueue(lambda msg: msg[0].startswith(b"A"))
    wanted.put_many([[b"A1"], [b"B1"], [b"A2"], [b"B2"]])
    wanted.put([b"B3"])
    assert (len(wanted), wanted.peek(), wanted.replaced) == (1, [b"A2"], 1)
    successor = wanted.successor()
    assert (len(successor), successor.replaced, successor.admit) == (0, 1, wanted.admit)

    # taking over a plain queue's messages (an inproc pair joined by a binder that conflates)
    plain = MessageQueue(10)
    plain.put_many([sub_a, [b"x"], [b"y"]])
    taken = ConflatingQueue().take_over(plain)
    assert (taken.get_batch(10), taken.replaced) == ([sub_a, [b"y"]], 1)
