"""The ``sndbuf`` and ``rcvbuf`` options size each connection's kernel buffers.

libzmq's ZMQ_SNDBUF / ZMQ_RCVBUF: -1 leaves the OS default. triomq's default
(None) is the OS default as well, except that an ipc connection asks for a
larger send buffer than Linux gives Unix sockets (IPC_SNDBUF), which halves
the bandwidth of large messages. Linux doubles what is asked and caps it at
``net.core.wmem_max`` / ``rmem_max``; the expected figures follow that rule.
"""

from __future__ import annotations

import socket
import ssl
import tempfile
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

import triomq
from triomq._transports._stream import IPC_SNDBUF, set_buffers

from .helpers import connection_socket


def _sysctl(name: str) -> int:
    return int(Path(f"/proc/sys/net/core/{name}").read_text())


def _linux_sndbuf(value: int) -> int:
    return max(min(value, _sysctl("wmem_max")) * 2, 4608)


def _linux_rcvbuf(value: int) -> int:
    return max(min(value, _sysctl("rmem_max")) * 2, 2304)


def _ipc_endpoint() -> str:
    return f"ipc://{tempfile.mkdtemp(prefix='tq')}/s"


async def _buffers(endpoint: str, **options: Any) -> list[tuple[int, int]]:
    """(SO_SNDBUF, SO_RCVBUF) of the connection on the binding and the
    connecting side, after a message went through it each way."""
    async with (
        triomq.open_socket(triomq.PAIR, **options) as a,
        triomq.open_socket(triomq.PAIR, **options) as b,
    ):
        await b.connect(await a.bind(endpoint))
        await b.send(b"ping")
        assert await a.recv() == b"ping"
        await a.send(b"pong")
        assert await b.recv() == b"pong"
        return [
            (
                connection_socket(s).getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
                connection_socket(s).getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
            )
            for s in (a, b)
        ]


def _os_default(family: int) -> tuple[int, int]:
    left, right = socket.socketpair(family)
    with left, right:
        return (
            left.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
            left.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
        )


async def test_ipc_connections_get_a_larger_send_buffer_by_default() -> None:
    default_snd, default_rcv = _os_default(socket.AF_UNIX)
    expected = _linux_sndbuf(IPC_SNDBUF)
    assert await _buffers(_ipc_endpoint()) == [(expected, default_rcv)] * 2
    assert expected > default_snd or _sysctl("wmem_max") * 2 <= default_snd


async def test_minus_one_leaves_the_os_default() -> None:
    assert await _buffers(_ipc_endpoint(), sndbuf=-1, rcvbuf=-1) == [_os_default(socket.AF_UNIX)] * 2


async def test_tcp_buffers_are_left_to_the_kernel_by_default() -> None:
    # (the kernel sizes and tunes a TCP connection's buffers itself: nothing is set)
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        with client, accepted:
            untouched = client.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    (snd_a, _), (snd_b, _) = await _buffers("tcp://127.0.0.1:0")
    assert snd_a == snd_b == untouched


@pytest.mark.parametrize("scheme", ["tcp", "ipc"])
async def test_explicit_sizes_apply_to_both_ends(scheme: str) -> None:
    endpoint = "tcp://127.0.0.1:0" if scheme == "tcp" else _ipc_endpoint()
    got = await _buffers(endpoint, sndbuf=96 * 1024, rcvbuf=48 * 1024)
    assert got == [(_linux_sndbuf(96 * 1024), _linux_rcvbuf(48 * 1024))] * 2


def _rcv_wscale(sock: socket.socket) -> int:
    """The window scale the connection's handshake gave its receive side
    (struct tcp_info: the byte after six one-byte fields holds snd_wscale in
    its low four bits and rcv_wscale in its high four)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return info[6] >> 4


def _reference_wscales(rcvbuf: int | None) -> tuple[int, int]:
    """rcv_wscale of both ends of a plain connection whose sockets had
    SO_RCVBUF set (or not) before they listened and connected."""
    server = socket.socket()
    client = socket.socket()
    with server, client:
        for sock in (server, client):
            if rcvbuf is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        server.bind(("127.0.0.1", 0))
        server.listen()
        client.connect(server.getsockname())
        accepted, _ = server.accept()
        with accepted:
            return _rcv_wscale(accepted), _rcv_wscale(client)


@pytest.mark.parametrize("scheme", ["tcp", "tls"])
async def test_tcp_sizes_are_set_before_the_handshake(scheme: str) -> None:
    """As libzmq, a tcp socket gets its sizes before it connects or listens:
    the window scale is agreed in the handshake from the receive buffer, and a
    buffer shrunk afterwards takes less than the window the peer was told (a
    stream into an 8 KiB rcvbuf stalled on retransmissions, seconds for 1 MB).
    Both ends' window scales are those of sockets sized before the handshake."""
    small = 8192
    expected = _reference_wscales(small)
    assert expected != _reference_wscales(None)  # (else this proves nothing)
    server_tls: dict[str, Any] = {}
    client_tls: dict[str, Any] = {}
    if scheme == "tls":
        ca = trustme.CA()
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
        client_ctx = ssl.create_default_context()
        ca.configure_trust(client_ctx)
        server_tls, client_tls = {"ssl_context": server_ctx}, {"ssl_context": client_ctx}
    with trio.fail_after(10):
        async with (
            triomq.open_socket(triomq.PULL, rcvbuf=small, **server_tls) as pull,
            triomq.open_socket(triomq.PUSH, rcvbuf=small, **client_tls) as push,
        ):
            await push.connect(await pull.bind(f"{scheme}://127.0.0.1:0"))
            await push.wait_peers(1)
            payload = b"x" * 1000
            await push.send_many([[payload]] * 1000)
            assert len(await _recv_all(pull, 1000)) == 1000
            got = (_rcv_wscale(connection_socket(pull)), _rcv_wscale(connection_socket(push)))
    assert got == expected


async def _recv_all(sock: triomq.Socket, count: int) -> list[list[bytes]]:
    got: list[list[bytes]] = []
    while len(got) < count:
        got += await sock.recv_many(count - len(got))
    return got


async def test_a_large_message_crosses_ipc_with_the_default_buffers() -> None:
    big = bytes(range(256)) * (3 * 4096 + 7)  # 3 MiB and a bit: many buffers' worth
    async with (
        triomq.open_socket(triomq.PULL) as pull,
        triomq.open_socket(triomq.PUSH) as push,
    ):
        await push.connect(await pull.bind(_ipc_endpoint()))
        await push.send_multipart([b"head", big])
        assert await pull.recv_multipart() == [b"head", big]


def test_set_buffers_reaches_the_socket_under_tls() -> None:
    left, right = socket.socketpair(socket.AF_UNIX)
    with left, right:
        plain = trio.SocketStream(trio.socket.from_stdlib_socket(left))
        wrapped = trio.SSLStream(plain, ssl.create_default_context(), server_hostname="localhost")
        set_buffers(wrapped, sndbuf=None, rcvbuf=40 * 1024)
        assert left.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == _linux_sndbuf(IPC_SNDBUF)
        assert left.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == _linux_rcvbuf(40 * 1024)


def test_a_refused_size_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    left, right = socket.socketpair(socket.AF_UNIX)
    with left, right:
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(left))
        right.close()
        left.close()  # (setsockopt now fails with EBADF, as a refusal would)
        with caplog.at_level("INFO", logger="triomq"):
            set_buffers(stream, sndbuf=65536, rcvbuf=65536)
    assert caplog.text.count("could not set a socket's buffer size to 65536") == 2


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"sndbuf": -2}, ValueError),
        ({"rcvbuf": -5}, ValueError),
        ({"sndbuf": "big"}, TypeError),
        ({"rcvbuf": 1.5}, TypeError),
    ],
)
def test_invalid_sizes_are_refused(options: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        triomq.SocketOptions(**options)
