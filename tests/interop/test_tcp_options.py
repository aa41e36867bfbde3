"""The tcp options set the kernel's sockets as libzmq's do.

For each set of options, a libzmq socket and a triomq socket with the same
options are linked both ways (libzmq binds and triomq connects, then the
reverse), and the keepalive and ToS figures of the four connection sockets are
read back with getsockopt: libzmq's through the file descriptors its monitor
events carry (ACCEPTED, CONNECTED), triomq's through its pipes. The connecting
sockets must agree, and so must the accepted ones.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import zmq
from zmq.utils.monitor import recv_monitor_message

import triomq

TIMEOUT = 20
TIMEOUT_MS = 5000
TCP = socket.IPPROTO_TCP
IP_PKTOPTIONS = 9  # Linux
EF = 0xB8

#: triomq option -> libzmq option
ZMQ_NAMES = {
    "tcp_keepalive": zmq.TCP_KEEPALIVE,
    "tcp_keepalive_idle": zmq.TCP_KEEPALIVE_IDLE,
    "tcp_keepalive_cnt": zmq.TCP_KEEPALIVE_CNT,
    "tcp_keepalive_intvl": zmq.TCP_KEEPALIVE_INTVL,
    "tos": zmq.TOS,
    "tcp_maxrt": zmq.TCP_MAXRT,
}
#: triomq's seconds -> libzmq's milliseconds
ZMQ_MS = {"tcp_maxrt"}

CASES = {
    "defaults": {},
    "keepalive_on": {"tcp_keepalive": 1},
    "keepalive_tuned": {"tcp_keepalive": 1, "tcp_keepalive_idle": 30, "tcp_keepalive_cnt": 4,
                        "tcp_keepalive_intvl": 5},
    "keepalive_off_tuned": {"tcp_keepalive": 0, "tcp_keepalive_idle": 40, "tcp_keepalive_cnt": 2,
                            "tcp_keepalive_intvl": 3},
    "tos": {"tos": EF},
    "tos_with_ecn_bits": {"tos": EF | 0b11},
    "maxrt": {"tcp_maxrt": 2.5},
    "everything": {"tcp_keepalive": 1, "tcp_keepalive_idle": 60, "tcp_keepalive_cnt": 3,
                   "tcp_keepalive_intvl": 10, "tos": 0x28, "tcp_maxrt": 30},
}


def figures(sock: socket.socket) -> dict[str, int]:
    return {
        "keepalive": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        "idle": sock.getsockopt(TCP, socket.TCP_KEEPIDLE),
        "cnt": sock.getsockopt(TCP, socket.TCP_KEEPCNT),
        "intvl": sock.getsockopt(TCP, socket.TCP_KEEPINTVL),
        "tos": sock.getsockopt(socket.IPPROTO_IP, socket.IP_TOS),
        "maxrt": sock.getsockopt(TCP, socket.TCP_USER_TIMEOUT),
    }


def figures_of_fd(fd: int) -> dict[str, int]:
    """The figures of one of libzmq's sockets (a duplicate of its descriptor)."""
    with socket.socket(fileno=os.dup(fd)) as sock:
        return figures(sock)


def triomq_figures(sock: triomq.Socket) -> dict[str, int]:
    (pipe,) = [p for p in sock._pipes if p.connected]
    return figures(pipe.link.stream.socket)  # type: ignore[union-attr]


class Libzmq:
    """pyzmq sockets with options and a monitor, closed at the end."""

    def __init__(self, ctx: zmq.Context[Any]) -> None:
        self.ctx = ctx
        self.made: list[tuple[zmq.Socket[Any], zmq.Socket[Any]]] = []

    def socket(self, options: dict[str, Any]) -> tuple[zmq.Socket[Any], zmq.Socket[Any]]:
        sock = self.ctx.socket(zmq.PAIR)
        sock.linger = 0
        sock.rcvtimeo = sock.sndtimeo = TIMEOUT_MS
        for name, value in options.items():
            sock.setsockopt(ZMQ_NAMES[name], round(value * 1000) if name in ZMQ_MS else value)
        mon = sock.get_monitor_socket()
        self.made.append((sock, mon))
        return sock, mon

    def close(self) -> None:
        for sock, mon in self.made:
            sock.disable_monitor()
            mon.close(linger=0)
            sock.close(linger=0)


@pytest.fixture
def libzmq(zctx: zmq.Context[Any]) -> Iterator[Libzmq]:
    made = Libzmq(zctx)
    try:
        yield made
    finally:
        made.close()


def connection_fd(mon: zmq.Socket[Any], kind: int) -> int:
    """(Blocking) the descriptor of libzmq's ACCEPTED or CONNECTED event."""
    while mon.poll(TIMEOUT_MS):
        event = recv_monitor_message(mon)
        if event["event"] == kind:
            return int(event["value"])
    raise AssertionError(f"libzmq reported no {zmq.Event(kind).name}")


async def z(fn: Any, *args: Any) -> Any:
    return await trio.to_thread.run_sync(fn, *args)


@pytest.mark.parametrize("options", list(CASES.values()), ids=list(CASES))
async def test_connections_get_libzmqs_figures(libzmq: Libzmq, options: dict[str, Any]) -> None:
    with trio.fail_after(TIMEOUT):
        # libzmq binds, triomq connects
        zbound, zmon = libzmq.socket(options)
        await z(zbound.bind, "tcp://127.0.0.1:*")
        endpoint = zbound.getsockopt_string(zmq.LAST_ENDPOINT)
        async with triomq.open_socket(triomq.PAIR, linger=0, **options) as tconnecting:
            await tconnecting.connect(endpoint)
            await tconnecting.send(b"ping")
            assert await z(zbound.recv) == b"ping"
            libzmq_accepted = figures_of_fd(await z(connection_fd, zmon, zmq.EVENT_ACCEPTED))
            triomq_connecting = triomq_figures(tconnecting)

        # triomq binds, libzmq connects
        zconnecting, zmon = libzmq.socket(options)
        async with triomq.open_socket(triomq.PAIR, linger=0, **options) as tbound:
            await z(zconnecting.connect, await tbound.bind("tcp://127.0.0.1:0"))
            await z(zconnecting.send, b"ping")
            assert await tbound.recv() == b"ping"
            libzmq_connecting = figures_of_fd(await z(connection_fd, zmon, zmq.EVENT_CONNECTED))
            triomq_accepted = triomq_figures(tbound)

    assert triomq_connecting == libzmq_connecting
    assert triomq_accepted == libzmq_accepted
    # (the figures compared are the ones asked for, not two untouched sockets)
    if options.get("tcp_keepalive") == 1:
        assert triomq_connecting["keepalive"] == triomq_accepted["keepalive"] == 1
    if "tcp_maxrt" in options:
        assert triomq_connecting["maxrt"] == triomq_accepted["maxrt"] == options["tcp_maxrt"] * 1000
    if "tos" in options:
        assert triomq_connecting["tos"] == triomq_accepted["tos"] == options["tos"] & ~0b11


def handshake_tos(server: socket.socket) -> int:
    """(Blocking) accept one connection on *server* (which has IP_RECVTOS) and
    return the ToS byte of the packet that completed its handshake."""
    server.settimeout(TIMEOUT_MS / 1000)
    accepted, _ = server.accept()
    with accepted:
        raw = accepted.getsockopt(socket.IPPROTO_IP, IP_PKTOPTIONS, 64)
    _, level, kind = struct.unpack_from("@Qii", raw)
    assert (level, kind) == (socket.IPPROTO_IP, socket.IP_TOS)
    return raw[16]


@pytest.mark.skipif(sys.platform != "linux", reason="IP_PKTOPTIONS is Linux's")
@pytest.mark.parametrize("tos", [0, EF])
async def test_the_handshake_carries_the_tos_as_libzmqs(libzmq: Libzmq, tos: int) -> None:
    """libzmq sets the ToS byte before connect(): so does triomq."""
    seen = {}
    with trio.fail_after(TIMEOUT):
        for who in ("libzmq", "triomq"):
            with socket.socket() as server:
                server.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
                server.bind(("127.0.0.1", 0))
                server.listen()
                endpoint = "tcp://127.0.0.1:%d" % server.getsockname()[1]
                if who == "libzmq":
                    zsock, _ = libzmq.socket({"tos": tos})
                    await z(zsock.connect, endpoint)
                    seen[who] = await z(handshake_tos, server)
                else:
                    async with triomq.open_socket(triomq.PAIR, linger=0, tos=tos) as tsock:
                        await tsock.connect(endpoint)
                        seen[who] = await z(handshake_tos, server)
    assert seen == {"libzmq": tos, "triomq": tos}
