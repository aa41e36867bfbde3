"""Messages written but never taken by a peer that vanished are reported lost.

The peer here is a raw socket driven by the sans-I/O ZMTP layer, so the test
knows exactly which bytes the peer's kernel took: what it read, plus what
sits unread in its receive buffer (seen with MSG_PEEK). It then resets the
connection, and the sender's count of lost messages is checked against that
truth.
"""

from __future__ import annotations

import socket
import struct
import sys

import pytest
import trio

import triomq
from triomq._engine import _session
from triomq._mechanisms._null import NullMechanism
from triomq._socket_type import SocketType
from triomq._zmtp._connection import ZMTPConnection
from triomq._zmtp._events import HandshakeComplete, Message, NeedData

from .helpers import wait_for_event

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses Linux socket figures")

SIZE = 1024
COUNT = 12_000
#: the tests make writes small (WRITE_BUDGET), so the kernel's buffers hold many
#: of them; the accounting counts a write's messages together, so it may
#: over-count by one write's messages
BUDGET = 8 * 1024
ONE_WRITE = BUDGET // SIZE


@pytest.fixture(autouse=True)
def small_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_session, "WRITE_BUDGET", BUDGET)


def _messages_in(data: bytes) -> int:
    """Complete data messages in *data* (a PUSH's stream after its handshake)."""
    conn = ZMTPConnection(SocketType.PULL, NullMechanism())
    peer = ZMTPConnection(SocketType.PUSH, NullMechanism())
    done = False
    for _ in range(10):
        # (an empty receive_data() would mean end of file)
        if out := peer.data_to_send():
            conn.receive_data(out)
        if out := conn.data_to_send():
            peer.receive_data(out)
        while not isinstance(event := conn.next_event(), NeedData):
            done = done or isinstance(event, HandshakeComplete)
        while not isinstance(peer.next_event(), NeedData):
            pass
    assert done
    conn.receive_data(data)
    n = 0
    while isinstance(conn.next_event(), Message):
        n += 1
    return n


async def _handshake(sock: trio.socket.SocketType) -> None:
    """Do the ZMTP handshake as a PULL."""
    conn = ZMTPConnection(SocketType.PULL, NullMechanism())
    await sock.send(conn.data_to_send())
    while True:
        # read a byte at a time: the handshake's own bytes, and not one more
        byte = await sock.recv(1)
        assert byte, "the sender closed during the handshake"
        conn.receive_data(byte)
        event = conn.next_event()
        if out := conn.data_to_send():
            await sock.send(out)
        if isinstance(event, HandshakeComplete):
            return
        assert isinstance(event, NeedData), event


async def _stalled(push: triomq.Socket) -> None:
    """Wait until the sender's writer is blocked on a full socket: its queue
    stops moving (the kernel gives no event for that; this polls)."""
    last = -1
    steady = 0
    while steady < 5:
        queued = push.statistics().queued_out
        steady = steady + 1 if queued == last and queued > 0 else 0
        last = queued
        await trio.sleep(0.02)


async def _reset_with_unread(kind: str, tmp_path_factory: pytest.TempPathFactory, read: int) -> None:
    """The peer reads *read* bytes of data, stops, then resets the connection."""
    if kind == "tcp":
        listener = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        await listener.bind(("127.0.0.1", 0))
        endpoint = "tcp://127.0.0.1:%d" % listener.getsockname()[1]
    else:
        path = str(tmp_path_factory.mktemp("acct") / "peer")
        listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await listener.bind(path)
        endpoint = "ipc://" + path
    listener.listen(1)
    with trio.fail_after(20), listener:
        async with triomq.open_socket(triomq.PUSH, sndhwm=COUNT, linger=0) as push:
            async with push.monitor() as events:
                await push.connect(endpoint)
                sock, _ = await listener.accept()
                listener.close()  # the sender's reconnection attempts go nowhere
                with sock:
                    await _handshake(sock)
                    msgs = [[b"%08d" % i + b"x" * (SIZE - 8)] for i in range(COUNT)]
                    assert push.send_many_nowait(msgs) == COUNT
                    got = b""
                    while len(got) < read:
                        got += await sock.recv(read - len(got))
                    await _stalled(push)
                    # over TCP, what waits unread was acknowledged: the sender cannot
                    # know it is lost. A Unix socket's unread bytes count as lost.
                    unread = await sock.recv(1 << 20, socket.MSG_PEEK) if kind == "tcp" else b""
                    taken = _messages_in(got + unread)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                gone = await wait_for_event(events, triomq.Disconnected)
                assert isinstance(gone, triomq.Disconnected)
                queued = push.statistics().queued_out
        lost_truly = COUNT - queued - taken
        assert lost_truly > 0  # the test made a backlog in the kernel
        # TCP's figure is exact. A Unix socket's is read as we write: it includes
        # the kernel's buffer overhead (some percent too high), and misses what
        # the peer read while our writer was blocked on a full buffer
        slack = ONE_WRITE + (lost_truly // 8 + taken if kind == "ipc" else 0)
        assert lost_truly <= gone.lost <= lost_truly + slack, (lost_truly, gone.lost, taken, queued)


@pytest.mark.parametrize("read", [0, 100_000])
async def test_tcp_reset_reports_what_the_peer_never_acknowledged(
    tmp_path_factory: pytest.TempPathFactory, read: int
) -> None:
    await _reset_with_unread("tcp", tmp_path_factory, read)


@pytest.mark.parametrize("read", [0, 100_000])
async def test_ipc_reset_reports_what_the_peer_never_read(
    tmp_path_factory: pytest.TempPathFactory, read: int
) -> None:
    await _reset_with_unread("ipc", tmp_path_factory, read)


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
async def test_a_peer_that_read_everything_loses_nothing(
    transport: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    if transport == "tcp":
        endpoint = "tcp://127.0.0.1:0"
    else:
        endpoint = "ipc://" + str(tmp_path_factory.mktemp("acct") / "clean")
    with trio.fail_after(20):
        async with triomq.open_socket(triomq.PULL) as pull:
            ep = await pull.bind(endpoint)
            async with triomq.open_socket(triomq.PUSH) as push, push.monitor() as events:
                await push.connect(ep)
                msgs = [[b"m%d" % i] for i in range(5000)]
                async with trio.open_nursery() as nursery:

                    async def send_all() -> None:
                        sent = 0
                        while sent < len(msgs):
                            sent += await push.send_many(msgs[sent:])

                    nursery.start_soon(send_all)
                    for i in range(5000):
                        assert await pull.recv() == b"m%d" % i
                await pull.aclose()
                gone = await wait_for_event(events, triomq.Disconnected)
                assert isinstance(gone, triomq.Disconnected)
                assert gone.lost == 0
                assert push.statistics().lost == 0



async def test_tls_reset_reports_what_the_peer_never_acknowledged() -> None:
    """Over TLS, records add bytes: the peer's kernel holds ciphertext, of which
    every SIZE bytes carry at most one message."""
    import ssl

    import trustme

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    listener = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    await listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    with trio.fail_after(20), listener:
        async with triomq.open_socket(triomq.PUSH, sndhwm=COUNT, linger=0, ssl_context=client_ctx) as push:
            async with push.monitor() as events:
                await push.connect("tls://127.0.0.1:%d" % listener.getsockname()[1])
                raw, _ = await listener.accept()
                listener.close()
                tls = trio.SSLStream(trio.SocketStream(raw), server_ctx, server_side=True)
                await tls.do_handshake()
                conn = ZMTPConnection(SocketType.PULL, NullMechanism())
                await tls.send_all(conn.data_to_send())
                while True:
                    conn.receive_data(await tls.receive_some(1))
                    event = conn.next_event()
                    if out := conn.data_to_send():
                        await tls.send_all(out)
                    if isinstance(event, HandshakeComplete):
                        break
                assert push.send_many_nowait([[b"x" * SIZE] for _ in range(COUNT)]) == COUNT
                await _stalled(push)
                # acknowledged ciphertext that waits unread: at most this many messages
                unread = len(await raw.recv(1 << 20, socket.MSG_PEEK))
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                raw.close()
                gone = await wait_for_event(events, triomq.Disconnected)
                assert isinstance(gone, triomq.Disconnected)
                queued = push.statistics().queued_out
        written = COUNT - queued
        lost_at_least = written - unread // SIZE
        assert lost_at_least > 0
        # records cost a few dozen bytes each, so the ciphertext carries a few
        # messages fewer than unread // SIZE
        assert lost_at_least <= gone.lost <= lost_at_least + ONE_WRITE + 4, (lost_at_least, gone.lost, unread, queued)
