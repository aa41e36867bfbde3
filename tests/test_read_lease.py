"""A receiving task reads its socket's only connection itself (the read lease).

While a task waits in ``recv`` on a socket with one tcp/ipc connection, the
connection's reader task steps aside and the receiving task reads, decodes
and queues, saving a hand-off between tasks on every request/reply. These
tests check that it happens, and that nothing else changes: what ends the
connection still ends it, heartbeats and commands are still read when the
application stops receiving, other peers and closing still wake the
receiver, cancellation consumes nothing, and no descriptor is left behind.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

import triomq
from triomq._mechanisms._null import NullMechanism
from triomq._socket_type import SocketType
from triomq._zmtp._connection import ZMTPConnection
from triomq._zmtp._events import NEED_DATA, HandshakeComplete

from .helpers import wait_for_event


class _StepCounter(trio.abc.Instrument):
    """Counts the steps of the connections' engine tasks."""

    def __init__(self) -> None:
        self.engine_steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith("_Session._guard"):
            self.engine_steps += 1


async def _waiting(receiver: triomq.Socket) -> None:
    """Wait until *receiver*'s task waits in recv: parked, or reading its lent
    connection (polls: with busy_poll it spins, never blocked, so
    wait_all_tasks_blocked cannot tell)."""
    while not len(receiver._recv_lot):
        lender = receiver._lender
        if lender is not None and lender._borrower_waiting:  # type: ignore[attr-defined]
            return
        await trio.lowlevel.checkpoint()


async def _lend(receiver: triomq.Socket, send: Callable[[bytes], Awaitable[None]]) -> None:
    """Receive a few messages sent only once *receiver* waits: its connection's
    reader then lends the connection to the receiving task, which keeps it."""
    for _ in range(3):
        async with trio.open_nursery() as nursery:

            async def send_later() -> None:
                await _waiting(receiver)
                await send(b"warm")

            nursery.start_soon(send_later)
            assert (await receiver.recv_multipart())[-1] == b"warm"
    lender = receiver._lender
    assert lender is not None and lender._lent  # type: ignore[attr-defined]  # (the premise)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _zmtp_peer(port: int, socket_type: SocketType) -> tuple[trio.SocketStream, ZMTPConnection]:
    """A hand-driven ZMTP peer, connected and past its handshake."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    conn = ZMTPConnection(socket_type, NullMechanism())
    await stream.send_all(conn.data_to_send())
    done = False
    while not done:
        conn.receive_data(await stream.receive_some(4096))
        event = conn.next_event()
        while event is not NEED_DATA:
            done = done or isinstance(event, HandshakeComplete)
            event = conn.next_event()
        out = conn.data_to_send()  # (our READY: after the events that called for it)
        if out:
            await stream.send_all(out)
    return stream, conn


@pytest.mark.parametrize("busy_poll", [0, 0.01])
@pytest.mark.parametrize("transport", ["tcp", "ipc"])
async def test_request_reply_runs_no_engine_task_per_message(endpoint: str, busy_poll: float) -> None:
    # (with busy_poll the receivers spin before they wait: the lease holds all the same)
    async with triomq.open_socket(triomq.REP, busy_poll=busy_poll) as rep, triomq.open_socket(
        triomq.REQ, busy_poll=busy_poll
    ) as req:
        await req.connect(await rep.bind(endpoint))

        async def serve() -> None:
            async for msg in rep:
                await rep.send_multipart(msg)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            for i in range(5):  # the first exchanges go through the reader tasks
                await req.send(b"warm %d" % i)
                assert await req.recv() == b"warm %d" % i
            counter = _StepCounter()
            trio.lowlevel.add_instrument(counter)
            try:
                for i in range(200):
                    await req.send(b"q%d" % i)
                    assert await req.recv() == b"q%d" % i
            finally:
                trio.lowlevel.remove_instrument(counter)
            nursery.cancel_scope.cancel()
    # without the lease each side's reader task runs at least once per message
    # (400 steps); with it they run only now and then, to check on the lease
    assert counter.engine_steps < 100


async def test_large_messages_through_a_borrowing_receiver() -> None:
    sizes = [1, 70_000, 1 << 20, 5 << 20, 3, 200_000]
    async with triomq.open_socket(triomq.PULL) as pull, triomq.open_socket(triomq.PUSH) as push:
        await push.connect(await pull.bind("tcp://127.0.0.1:0"))
        async with trio.open_nursery() as nursery:

            async def produce() -> None:
                for round_ in range(3):
                    for n, size in enumerate(sizes):
                        await push.send(bytes([n + round_]) * size)

            nursery.start_soon(produce)
            for round_ in range(3):
                for n, size in enumerate(sizes):
                    assert await pull.recv() == bytes([n + round_]) * size


async def test_peer_closing_while_borrowed_ends_the_connection_and_the_socket_goes_on() -> None:
    async with triomq.open_socket(triomq.DEALER) as dealer, dealer.monitor() as events:
        async with triomq.open_socket(triomq.ROUTER) as router:
            ep = await router.bind("tcp://127.0.0.1:0")
            await dealer.connect(ep)
            await dealer.send(b"hello")
            peer, _ = await router.recv_multipart()
            await _lend(dealer, lambda body: router.send_multipart([peer, body]))

            got: list[bytes] = []

            async def receive() -> None:
                got.append(await dealer.recv())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive)  # waits, borrowing the connection
                await trio.testing.wait_all_tasks_blocked()
                await router.aclose()
                event = await wait_for_event(events, triomq.Disconnected)
                assert isinstance(event, triomq.Disconnected) and "closed" in event.reason
                # the receiver goes on waiting; a new peer on the same address answers it
                async with triomq.open_socket(triomq.ROUTER) as router2:
                    await router2.bind(ep)
                    await dealer.send(b"again")
                    peer, body = await router2.recv_multipart()
                    assert body == b"again"
                    await router2.send_multipart([peer, b"two"])
            assert got == [b"two"]


async def test_garbage_while_borrowed_drops_that_peer_only() -> None:
    async with triomq.open_socket(triomq.PULL) as pull, pull.monitor() as events:
        ep = await pull.bind("tcp://127.0.0.1:0")
        port = int(ep.rsplit(":", 1)[1])
        stream, conn = await _zmtp_peer(port, SocketType.PUSH)

        async def send(body: bytes) -> None:
            out: list[bytes] = []
            conn.encode_messages_into(out, [[body]])
            await stream.send_all(b"".join(out))

        await _lend(pull, send)
        got: list[bytes] = []
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:

                async def receive() -> None:
                    got.append(await pull.recv())

                nursery.start_soon(receive)
                await trio.testing.wait_all_tasks_blocked()  # the receiver reads the connection
                await stream.send_all(b"\x7f" * 16)  # no such frame flags
                event = await wait_for_event(events, triomq.Disconnected)
                assert isinstance(event, triomq.Disconnected) and "protocol error" in event.reason
                # the receiver goes on waiting, and hears another peer
                async with triomq.open_socket(triomq.PUSH) as push:
                    await push.connect(ep)
                    await push.send(b"good")
                    await trio.testing.wait_all_tasks_blocked()
        assert got == [b"good"]
        await stream.aclose()


@pytest.mark.parametrize("busy_poll", [0, 60])
@pytest.mark.parametrize("other", ["tcp", "inproc"])
async def test_another_peer_wakes_a_borrowing_receiver(other: str, busy_poll: float) -> None:
    # (with busy_poll, a spin far longer than the test: only the wake ends it in time)
    async with triomq.open_socket(triomq.PULL, busy_poll=busy_poll) as pull:
        await pull.bind("inproc://lease-wake")
        ep = await pull.bind("tcp://127.0.0.1:0")
        async with triomq.open_socket(triomq.PUSH) as first, triomq.open_socket(triomq.PUSH) as second:
            await first.connect(ep)
            await _lend(pull, first.send)
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:

                    async def later() -> None:
                        await _waiting(pull)  # pull waits on `first` alone
                        await second.connect(ep if other == "tcp" else "inproc://lease-wake")
                        await second.send(b"other")

                    nursery.start_soon(later)
                    assert await pull.recv() == b"other"


@pytest.mark.parametrize("busy_poll", [0, 60])
async def test_closing_the_socket_wakes_a_borrowing_receiver(busy_poll: float) -> None:
    # (with busy_poll, a spin far longer than the test: only the wake ends it in time)
    async with triomq.open_socket(triomq.PUSH) as push, triomq.open_socket(
        triomq.PULL, busy_poll=busy_poll
    ) as pull:
        await push.connect(await pull.bind("tcp://127.0.0.1:0"))
        await _lend(pull, push.send)
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:

                async def receive() -> None:
                    with pytest.raises(trio.ClosedResourceError):
                        await pull.recv()

                nursery.start_soon(receive)
                await _waiting(pull)
                await pull.aclose()


@pytest.mark.parametrize("busy_poll", [0, 0.002])
async def test_cancelled_borrowing_receives_consume_nothing(busy_poll: float) -> None:
    # (with busy_poll, many are cancelled while spinning; the producer runs meanwhile)
    count = 300
    async with triomq.open_socket(triomq.PULL, busy_poll=busy_poll) as pull, triomq.open_socket(
        triomq.PUSH
    ) as push:
        await push.connect(await pull.bind("tcp://127.0.0.1:0"))
        got: list[bytes] = []
        async with trio.open_nursery() as nursery:

            async def produce() -> None:
                for i in range(count):
                    await push.send(b"%d" % i)
                    if i % 7 == 0:
                        # gaps in the traffic (the scenario, not a wait): receives time out in them
                        await trio.sleep(0.0005)

            nursery.start_soon(produce)
            timeouts = 0
            with trio.fail_after(30):
                while len(got) < count:
                    # very short waits: many are cancelled while borrowing the connection
                    with trio.move_on_after(0.0002) as scope:
                        got.append(await pull.recv())
                    timeouts += scope.cancelled_caught
    assert got == [b"%d" % i for i in range(count)]
    assert timeouts > 0


async def test_the_reader_takes_the_connection_back_when_the_application_stops_receiving() -> None:
    async with triomq.open_socket(triomq.REP) as rep, triomq.open_socket(triomq.REQ) as req:
        await req.connect(await rep.bind("tcp://127.0.0.1:0"))
        for _ in range(3):  # rep's task now reads the connection while it waits
            await req.send(b"q")
            assert await rep.recv() == b"q"
            await rep.send(b"a")
            assert await req.recv() == b"a"
        # rep stops receiving; a request arrives all the same and is queued by
        # the reader task (no event says so: poll the queue)
        await req.send(b"unread")
        with trio.fail_after(10):
            while rep.statistics().queued_in == 0:
                await trio.sleep(0.001)
        assert await rep.recv() == b"unread"


def test_recv_nowait_reads_a_lent_connection() -> None:
    # a clock that never moves: the reader never takes the connection back, so
    # whatever recv_nowait finds, it read itself
    clock = trio.testing.MockClock(rate=0)

    async def main() -> None:
        async with triomq.open_socket(triomq.PULL) as pull, triomq.open_socket(triomq.PUSH) as push:
            await push.connect(await pull.bind("tcp://127.0.0.1:0"))
            await _lend(pull, push.send)
            with pytest.raises(trio.WouldBlock):
                pull.recv_nowait()
            await push.send(b"two")
            await push.send(b"three")
            got: list[bytes] = []
            for _ in range(1_000_000):
                try:
                    got.append(pull.recv_nowait())
                except trio.WouldBlock:
                    await trio.lowlevel.checkpoint()
                if len(got) == 2:
                    break
            assert got == [b"two", b"three"]

    trio.run(main, clock=clock)


async def test_heartbeats_are_answered_while_borrowed(autojump_clock: trio.testing.MockClock) -> None:
    # the DEALER's task reads its connection while waiting for a slow reply;
    # the ROUTER's PINGs must be answered meanwhile, or it would drop the peer
    async with triomq.open_socket(
        triomq.ROUTER, heartbeat_ivl=1, heartbeat_timeout=2
    ) as router, triomq.open_socket(triomq.DEALER) as dealer, router.monitor() as events:
        await dealer.connect(await router.bind("tcp://127.0.0.1:0"))
        await dealer.send(b"q")
        peer, _ = await router.recv_multipart()
        await _lend(dealer, lambda body: router.send_multipart([peer, body]))
        with trio.fail_after(60):  # (virtual time: a dropped peer never gets the reply)
            async with trio.open_nursery() as nursery:

                async def slow_reply() -> None:
                    await trio.sleep(30)  # many heartbeat timeouts' worth
                    await router.send_multipart([peer, b"late"])

                nursery.start_soon(slow_reply)
                assert await dealer.recv() == b"late"
        assert router.statistics().peers == 1
        with pytest.raises(trio.WouldBlock):
            while True:
                event = events.receive_nowait()
                assert not isinstance(event, triomq.Disconnected), event


async def test_no_descriptor_is_left_behind() -> None:
    async with triomq.open_socket(triomq.REP) as rep, rep.monitor() as events:
        ep = await rep.bind("tcp://127.0.0.1:0")
        before = _open_fds()
        for _ in range(5):
            async with triomq.open_socket(triomq.REQ) as req:
                await req.connect(ep)
                for _ in range(3):
                    await req.send(b"q")
                    assert await rep.recv() == b"q"
                    await rep.send(b"a")
                    assert await req.recv() == b"a"
            with trio.fail_after(10):  # rep saw the connection end
                await wait_for_event(events, triomq.Disconnected)
            assert rep.statistics().peers == 0
        assert _open_fds() == before


async def test_out_of_descriptors_falls_back_to_the_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dup(fd: int) -> int:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(os, "dup", no_dup)  # (only the read lease duplicates descriptors)
    async with triomq.open_socket(triomq.REP) as rep, triomq.open_socket(triomq.REQ) as req:
        await req.connect(await rep.bind("tcp://127.0.0.1:0"))
        for i in range(20):
            await req.send(b"q%d" % i)
            assert await rep.recv() == b"q%d" % i
            await rep.send(b"a%d" % i)
            assert await req.recv() == b"a%d" % i


# ------------------------------------------------------------------ busy_poll
#
# With busy_poll, a borrowing receiver keeps trying to read (a pass of the loop
# apart) before it sleeps in the kernel. The same guarantees hold, and the
# tests above check them with busy_poll too: it is woken by other peers and by
# closing, cancelled receives consume nothing, other tasks run meanwhile.


async def test_busy_poll_ends_on_a_frozen_clock(autojump_clock: trio.testing.MockClock) -> None:
    # the spin is measured in real time: on a clock that only jumps when every
    # task is blocked, a spin on Trio's clock would never end
    async with triomq.open_socket(triomq.PUSH) as push, triomq.open_socket(triomq.PULL, busy_poll=0.002) as pull:
        await push.connect(await pull.bind("tcp://127.0.0.1:0"))
        await _lend(pull, push.send)
        with trio.move_on_after(5) as scope:  # (virtual seconds)
            await pull.recv()
        assert scope.cancelled_caught
        await push.send(b"after")
        assert await pull.recv() == b"after"


@pytest.mark.parametrize(("value", "error"), [(-0.001, ValueError), ("fast", TypeError)])
def test_busy_poll_is_a_duration(value: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        triomq.SocketOptions(busy_poll=value)  # type: ignore[arg-type]
