"""Every timer runs on Trio's clock: reconnect backoff, handshake timeout, heartbeats, linger.

These tests run under MockClock: virtual minutes pass in real milliseconds. The
clock only jumps after 20 ms of real idleness, so real loopback I/O (which
takes microseconds) finishes before any virtual deadline can fire.
"""

from __future__ import annotations

import socket as stdlib_socket
from itertools import pairwise

import pytest
import trio
import trio.testing

import triomq
from triomq._zmtp._events import NEED_DATA, Ping

from .helpers import raw_handshake, wait_for_event


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.02)


def closed_port() -> int:
    with stdlib_socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_reconnect_backoff_on_virtual_time(clock: trio.testing.MockClock) -> None:
    async with triomq.open_socket(
        triomq.DEALER, reconnect_ivl=10, reconnect_ivl_max=80, linger=0
    ) as dealer:
        async with dealer.monitor() as events:
            start = trio.current_time()
            await dealer.connect(f"tcp://127.0.0.1:{closed_port()}")
            retries = []
            while len(retries) < 6:
                event = await wait_for_event(events, triomq.ConnectRetried)
                retries.append((trio.current_time() - start, event.delay))
    bases = [10, 20, 40, 80, 80, 80]
    for (_, delay), base in zip(retries, bases, strict=True):
        assert base <= delay <= base + 10
    # and the attempts really were that far apart on the clock
    gaps = [b[0] - a[0] for a, b in pairwise(retries)]
    for gap, (_, delay) in zip(gaps, retries, strict=False):  # one gap fewer
        assert gap == pytest.approx(delay, abs=0.1)


@pytest.mark.parametrize("reconnect_ivl", [None, 0])
async def test_no_reconnection_tries_once_and_never_spins(
    clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch, reconnect_ivl: float | None
) -> None:
    # libzmq reconnects only when reconnect_ivl > 0: 0 is "never", like -1
    # (it made the dialer retry at once, forever, at 100% CPU)
    from triomq._engine import _dialer

    attempts = 0
    failed = trio.Event()
    real_open_stream = _dialer.open_stream

    async def counting_open_stream(*args: object, **kwargs: object) -> trio.abc.Stream:
        nonlocal attempts
        attempts += 1
        if attempts > 2:  # a spinning dialer would starve the clock: stop it here
            raise RuntimeError("the dialer retried with reconnection off")
        try:
            return await real_open_stream(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            failed.set()

    monkeypatch.setattr(_dialer, "open_stream", counting_open_stream)
    with trio.fail_after(3600):
        async with triomq.open_socket(triomq.PUSH, reconnect_ivl=reconnect_ivl, linger=0) as push:
            async with push.monitor() as events:
                await push.connect(f"tcp://127.0.0.1:{closed_port()}")
                await failed.wait()
                await trio.sleep(600)  # virtual: ten minutes in which nothing may retry
                assert attempts == 1
                while True:
                    try:
                        event = events.receive_nowait()
                    except trio.WouldBlock:
                        break
                    assert not isinstance(event, triomq.ConnectRetried)
            # libzmq leaves such a pipe waiting: messages still queue on it
            push.send_nowait(b"queued")
            assert push.statistics().queued_out == 1


async def _silent_peer(listener: trio.SocketListener, socket_type: triomq.SocketType):  # type: ignore[no-untyped-def]
    """Accept one connection, complete the handshake, then never send again."""
    stream = await listener.accept()
    conn, _ = await raw_handshake(stream, socket_type)
    return stream, conn


async def test_heartbeat_timeout_on_virtual_time(clock: trio.testing.MockClock) -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    async with triomq.open_socket(
        triomq.DEALER, heartbeat_ivl=5, heartbeat_timeout=12, reconnect_ivl=1000, linger=0
    ) as dealer:
        async with dealer.monitor() as events:
            await dealer.connect(f"tcp://127.0.0.1:{port}")
            stream, conn = await _silent_peer(listener, triomq.ROUTER)
            connected_at = trio.current_time()
            gone = await wait_for_event(events, triomq.Disconnected)
            # first PING at 5 s, no answer within 12 s of it
            assert trio.current_time() - connected_at == pytest.approx(17, abs=0.5)
            assert "heartbeat" in gone.reason
            # the PINGs the peer saw carry no TTL (heartbeat_ttl unset)
            conn.receive_data(await stream.receive_some())
            pings = []
            while (event := conn.next_event()) is not NEED_DATA:
                pings.append(event)
            assert pings and all(p == Ping(0.0, b"") for p in pings)
            await stream.aclose()
    await listener.aclose()


async def test_heartbeat_timeout_zero_pings_but_never_drops(clock: trio.testing.MockClock) -> None:
    """libzmq's HEARTBEAT_TIMEOUT=0 (None is its -1, the interval): PINGs go
    out, and a peer that never answers is kept."""
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    async with triomq.open_socket(
        triomq.DEALER, heartbeat_ivl=5, heartbeat_timeout=0, reconnect_ivl=1000, linger=0
    ) as dealer:
        async with dealer.monitor() as events:
            await dealer.connect(f"tcp://127.0.0.1:{port}")
            stream, conn = await _silent_peer(listener, triomq.ROUTER)
            await wait_for_event(events, triomq.HandshakeSucceeded)
            await trio.sleep(60)
            pings: list[object] = []
            while len(pings) < 10:  # one every 5 s
                data = await stream.receive_some()
                if not data:
                    break
                conn.receive_data(data)
                while (event := conn.next_event()) is not NEED_DATA:
                    pings.append(event)
            assert len(pings) >= 10 and all(p == Ping(0.0, b"") for p in pings)
            assert dealer.statistics().peers == 1
            while True:
                try:
                    assert not isinstance(events.receive_nowait(), triomq.Disconnected)
                except trio.WouldBlock:
                    break
            await stream.aclose()
    await listener.aclose()


async def test_peer_ttl_drops_a_silent_connection(clock: trio.testing.MockClock) -> None:
    """A peer's PING with a TTL: if nothing more arrives within it, we hang up."""
    async with triomq.open_socket(triomq.ROUTER, linger=0) as router:
        ep = await router.bind("tcp://127.0.0.1:0")
        async with router.monitor() as events:
            stream = await trio.open_tcp_stream("127.0.0.1", int(ep.rsplit(":", 1)[1]))
            conn, _ = await raw_handshake(stream, triomq.DEALER)
            await wait_for_event(events, triomq.HandshakeSucceeded)
            sent_at = trio.current_time()
            await stream.send_all(conn.encode_ping(30.0))  # "hang up if silent for 30 s"
            gone = await wait_for_event(events, triomq.Disconnected)
            assert trio.current_time() - sent_at == pytest.approx(30, abs=0.5)
            assert "TTL" in gone.reason
            await stream.aclose()


async def test_handshake_timeout_on_virtual_time(clock: trio.testing.MockClock) -> None:
    async with triomq.open_socket(triomq.PULL, handshake_ivl=45) as pull:
        ep = await pull.bind("tcp://127.0.0.1:0")
        async with pull.monitor() as events:
            stalled = await trio.open_tcp_stream("127.0.0.1", int(ep.rsplit(":", 1)[1]))
            start = trio.current_time()
            failed = await wait_for_event(events, triomq.HandshakeFailed)
            assert failed.kind is triomq.FailureKind.TIMEOUT
            assert trio.current_time() - start == pytest.approx(45, abs=0.5)
            await stalled.aclose()


async def test_linger_on_virtual_time(clock: trio.testing.MockClock) -> None:
    start = trio.current_time()
    async with triomq.open_socket(triomq.PUSH, linger=7) as push:
        await push.connect(f"tcp://127.0.0.1:{closed_port()}")
        await push.send(b"never delivered")
    assert trio.current_time() - start == pytest.approx(7, abs=0.5)
    assert push.statistics().lost == 1


@pytest.mark.parametrize("linger", [7, None])
async def test_disconnect_writes_in_the_background_for_at_most_linger(
    clock: trio.testing.MockClock, linger: float | None
) -> None:
    async with triomq.open_socket(triomq.PULL, rcvhwm=1, rcvbuf=65536) as pull:
        ep = await pull.bind("tcp://127.0.0.1:0")
        async with triomq.open_socket(triomq.PUSH, linger=linger, sndhwm=0, sndbuf=65536) as push:
            await push.connect(ep)
            await push.wait_peers()
            async with push.monitor() as events:
                push.send_many_nowait([[b"x" * 100_000]] * 200)  # far more than the buffers hold
                start = trio.current_time()
                await push.disconnect(ep)  # the reader does not read: the rest waits
                assert trio.current_time() == start  # as zmq_disconnect, it returns at once
                with pytest.raises(triomq.EndpointError):
                    await push.disconnect(ep)
                if linger is None:  # it waits as long as it takes
                    await trio.sleep(1000)  # (virtual time)
                    assert push.statistics().pipes == 1
                    for _ in range(200):
                        assert len(await pull.recv()) == 100_000
                    event = await wait_for_event(events, triomq.Disconnected)
                    assert (event.reason, event.lost) == ("disconnect(): all written", 0)
                    assert push.statistics().lost == 0
                else:
                    event = await wait_for_event(events, triomq.Disconnected)
                    assert trio.current_time() - start == pytest.approx(7, abs=0.5)
                    assert event.reason == "disconnect(): linger expired"
                    assert event.lost > 0 and push.statistics().lost >= event.lost
                assert push.statistics().pipes == 0


async def test_heartbeats_do_not_disturb_req_rep(clock: trio.testing.MockClock) -> None:
    async with triomq.open_socket(triomq.REP, heartbeat_ivl=1) as rep, triomq.open_socket(
        triomq.REQ, heartbeat_ivl=1, heartbeat_timeout=3
    ) as req:
        await req.connect(await rep.bind("tcp://127.0.0.1:0"))
        for i in range(3):
            await req.send(b"q%d" % i)
            assert await rep.recv() == b"q%d" % i
            await trio.sleep(10)  # many heartbeats go back and forth in between
            await rep.send(b"a%d" % i)
            assert await req.recv() == b"a%d" % i
        assert rep.statistics().peers == 1  # never dropped


async def test_our_pings_to_a_peer_that_never_reads_queue_one_at_most(
    clock: trio.testing.MockClock,
) -> None:
    """A peer that reads nothing (a long heartbeat_timeout keeps it): once the kernel's
    buffers are full, one PING waits in the queue, not one more per interval."""
    clock.autojump_threshold = 0  # (20,000 jumps: no real idle time before each)
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    async with triomq.open_socket(
        triomq.DEALER, heartbeat_ivl=1, heartbeat_timeout=1e6, sndbuf=4096, linger=0
    ) as dealer:
        await dealer.connect(f"tcp://127.0.0.1:{port}")
        raw = await listener.accept()
        raw.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, 4096)
        await raw_handshake(raw, triomq.ROUTER)
        await trio.sleep(20000)  # 20,000 PINGs due: far more than the buffers hold
        assert dealer.statistics().peers == 1
        assert dealer.statistics().queued_out <= 1
        await raw.aclose()
    await listener.aclose()


@pytest.mark.parametrize("ttl", [6553.6, 1e9])
def test_a_ttl_a_ping_cannot_carry_is_refused(ttl: float) -> None:
    # libzmq: ZMQ_HEARTBEAT_TTL above 6553599 ms is EINVAL (a PING's TTL is 16 bits of deciseconds)
    with pytest.raises(ValueError, match="heartbeat_ttl"):
        triomq.SocketOptions(heartbeat_ttl=ttl)
    assert triomq.SocketOptions(heartbeat_ttl=6553.599).heartbeat_ttl == 6553.599
