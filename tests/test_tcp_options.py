"""The tcp options: ``tcp_keepalive``, ``tcp_keepalive_idle``/``_cnt``/``_intvl``, ``tos``.

As libzmq's ZMQ_TCP_KEEPALIVE* and ZMQ_TOS (see tests/interop/test_tcp_options.py
for the same figures read off libzmq's sockets): keepalive -1 sets nothing, 0 or
1 sets SO_KEEPALIVE and the three tunings on each connection, connecting or
accepted; the ToS byte goes on the listening socket, on each accepted one, and
on each connecting one before it connects (IP_TOS, and IPV6_TCLASS on IPv6).
ipc connections are left alone. The figures are read back from the kernel
sockets of both ends of real connections.
"""

from __future__ import annotations

import socket
import ssl
import struct
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trustme

import triomq
from triomq._endpoint import parse_endpoint
from triomq._transports._stream import SocketSetup, listen, tune_tcp

from .helpers import connection_socket

TIMEOUT = 10
TCP = socket.IPPROTO_TCP
#: Linux: the options of the packet that completed a TCP handshake, on the
#: accepted socket of a listener with IP_RECVTOS (one IP_TOS control message)
IP_PKTOPTIONS = 9

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="reads Linux-only socket figures")

KEEPALIVES: dict[str, Any] = {"tcp_keepalive": 1, "tcp_keepalive_idle": 30, "tcp_keepalive_cnt": 4, "tcp_keepalive_intvl": 5.0}
#: DSCP EF (46 << 2)
EF = 0xB8


def _ipv6_loopback_problem() -> str | None:
    """Why tcp over ::1 cannot be tested here (None if it can)."""
    if not socket.has_ipv6:
        return "Python was built without IPv6"
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        return f"no IPv6 loopback on this machine: cannot bind ::1 ({exc})"
    return None


def figures(sock: socket.socket) -> dict[str, int]:
    """The kernel's keepalive and ToS settings of *sock*."""
    got = {
        "keepalive": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        "idle": sock.getsockopt(TCP, socket.TCP_KEEPIDLE),
        "cnt": sock.getsockopt(TCP, socket.TCP_KEEPCNT),
        "intvl": sock.getsockopt(TCP, socket.TCP_KEEPINTVL),
        "tos": sock.getsockopt(socket.IPPROTO_IP, socket.IP_TOS),
    }
    if sock.family == socket.AF_INET6:
        got["tclass"] = sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS)
    return got


def os_defaults(family: int = socket.AF_INET) -> dict[str, int]:
    with socket.socket(family) as fresh:
        return figures(fresh)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_options(ca: trustme.CA) -> tuple[dict[str, Any], dict[str, Any]]:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "::1", "localhost").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return {"ssl_context": server}, {"ssl_context": client}


async def both_ends(
    endpoint: str, options: dict[str, Any], *, ca: trustme.CA | None = None
) -> tuple[dict[str, int], dict[str, int]]:
    """The figures of the accepted and the connecting end of one connection
    between two PAIRs opened with *options*, after a message went each way."""
    bind_extra: dict[str, Any] = {}
    connect_extra: dict[str, Any] = {}
    if endpoint.startswith("tls://"):
        assert ca is not None
        bind_extra, connect_extra = tls_options(ca)
    with trio.fail_after(TIMEOUT):
        async with (
            triomq.open_socket(triomq.PAIR, linger=0, **options, **bind_extra) as a,
            triomq.open_socket(triomq.PAIR, linger=0, **options, **connect_extra) as b,
        ):
            await b.connect(await a.bind(endpoint))
            await b.send(b"ping")
            assert await a.recv() == b"ping"
            await a.send(b"pong")
            assert await b.recv() == b"pong"
            return figures(connection_socket(a)), figures(connection_socket(b))


@pytest.fixture(params=["tcp", "tls"])
def scheme(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_defaults_leave_the_os_defaults(scheme: str, ca: trustme.CA) -> None:
    accepted, connecting = await both_ends(f"{scheme}://127.0.0.1:0", {}, ca=ca)
    assert accepted == connecting == os_defaults()


async def test_keepalives_and_tos_land_on_both_ends(scheme: str, ca: trustme.CA) -> None:
    accepted, connecting = await both_ends(f"{scheme}://127.0.0.1:0", {**KEEPALIVES, "tos": EF}, ca=ca)
    expected = {"keepalive": 1, "idle": 30, "cnt": 4, "intvl": 5, "tos": EF}
    assert accepted == connecting == expected


async def test_keepalive_alone_keeps_the_os_timings(scheme: str, ca: trustme.CA) -> None:
    accepted, connecting = await both_ends(f"{scheme}://127.0.0.1:0", {"tcp_keepalive": 1}, ca=ca)
    assert accepted == connecting == {**os_defaults(), "keepalive": 1}


async def test_keepalive_off_still_sets_the_timings_as_libzmq() -> None:
    # (libzmq applies them whenever ZMQ_TCP_KEEPALIVE is not -1)
    options = {**KEEPALIVES, "tcp_keepalive": 0}
    accepted, connecting = await both_ends("tcp://127.0.0.1:0", options)
    assert accepted == connecting == {"keepalive": 0, "idle": 30, "cnt": 4, "intvl": 5, "tos": 0}


async def test_tos_alone(scheme: str, ca: trustme.CA) -> None:
    accepted, connecting = await both_ends(f"{scheme}://127.0.0.1:0", {"tos": 0x28}, ca=ca)
    assert accepted == connecting == {**os_defaults(), "tos": 0x28}


async def test_the_kernel_keeps_the_ecn_bits_of_tcp() -> None:
    # (0xBB asks for ECN bits 0b11 too: a TCP socket's are the kernel's, as with libzmq)
    accepted, connecting = await both_ends("tcp://127.0.0.1:0", {"tos": EF | 0b11})
    assert accepted["tos"] == connecting["tos"] == EF


async def test_ipv6_gets_the_traffic_class_and_the_tos(scheme: str, ca: trustme.CA) -> None:
    problem = _ipv6_loopback_problem()
    if problem is not None:
        pytest.skip(problem)
    accepted, connecting = await both_ends(f"{scheme}://[::1]:0", {**KEEPALIVES, "tos": EF}, ca=ca)
    expected = {"keepalive": 1, "idle": 30, "cnt": 4, "intvl": 5, "tos": EF, "tclass": EF}
    assert accepted == connecting == expected


async def test_maxrt_lands_on_both_ends_in_milliseconds(scheme: str, ca: trustme.CA) -> None:
    """tcp_maxrt (seconds) is TCP_USER_TIMEOUT (milliseconds) on the connecting
    and the accepted end, as libzmq's ZMQ_TCP_MAXRT; 0 leaves the OS's 0."""
    bind_extra: dict[str, Any] = {}
    connect_extra: dict[str, Any] = {}
    if scheme == "tls":
        bind_extra, connect_extra = tls_options(ca)
    for maxrt, expected in [(2.5, 2500), (0.0015, 2), (0, 0)]:
        with trio.fail_after(TIMEOUT):
            async with (
                triomq.open_socket(triomq.PAIR, linger=0, tcp_maxrt=maxrt, **bind_extra) as a,
                triomq.open_socket(triomq.PAIR, linger=0, tcp_maxrt=maxrt, **connect_extra) as b,
            ):
                await b.connect(await a.bind(f"{scheme}://127.0.0.1:0"))
                await b.send(b"ping")
                assert await a.recv() == b"ping"
                got = [connection_socket(s).getsockopt(TCP, socket.TCP_USER_TIMEOUT) for s in (a, b)]
        assert got == [expected, expected], maxrt


@pytest.mark.parametrize(
    ("value", "error"),
    [(-1, ValueError), (0.0004, ValueError), (2.2e6, ValueError), ("1", TypeError), (True, TypeError)],
)
async def test_bad_maxrt_is_refused(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="tcp_maxrt"):
        triomq.SocketOptions(tcp_maxrt=value)


async def test_ipc_connections_are_left_alone() -> None:
    endpoint = f"ipc://{tempfile.mkdtemp(prefix='tq')}/s"
    with trio.fail_after(TIMEOUT):
        async with (
            triomq.open_socket(triomq.PAIR, linger=0, **KEEPALIVES, tos=EF) as a,
            triomq.open_socket(triomq.PAIR, linger=0, **KEEPALIVES, tos=EF) as b,
        ):
            await b.connect(await a.bind(endpoint))
            await b.send(b"ping")
            assert await a.recv() == b"ping"
            for end in (a, b):
                unix = connection_socket(end)
                assert unix.family == socket.AF_UNIX
                assert unix.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0


def _handshake_tos(accepted: socket.socket) -> int:
    """The ToS byte of the packet that completed the handshake of *accepted*
    (its listener had IP_RECVTOS)."""
    raw = accepted.getsockopt(socket.IPPROTO_IP, IP_PKTOPTIONS, 64)
    _, level, kind = struct.unpack_from("@Qii", raw)
    assert (level, kind) == (socket.IPPROTO_IP, socket.IP_TOS)
    return raw[16]


@linux_only
@pytest.mark.parametrize("source", [False, True], ids=["plain", "source_address"])
async def test_a_connecting_socket_has_its_tos_before_it_connects(scheme: str, source: bool) -> None:
    """The handshake's packets carry the ToS byte already, as libzmq's (which sets
    it between socket() and connect())."""
    ssl_context = ssl.create_default_context() if scheme == "tls" else None
    with socket.socket() as server:
        server.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        port = server.getsockname()[1]
        endpoint = f"{scheme}://127.0.0.1:0;127.0.0.1:{port}" if source else f"{scheme}://127.0.0.1:{port}"
        with trio.fail_after(TIMEOUT):
            async with triomq.open_socket(
                triomq.DEALER, linger=0, tos=EF, ssl_context=ssl_context
            ) as dealer:
                await dealer.connect(endpoint)
                await trio.lowlevel.wait_readable(server)
                accepted, _ = server.accept()
                with accepted:
                    assert _handshake_tos(accepted) == EF
                    assert accepted.getsockopt(socket.IPPROTO_IP, socket.IP_TOS) == 0  # (ours: untouched)


@linux_only
async def test_without_tos_the_handshake_is_unmarked() -> None:
    # (the check above, seen failing: the same listener sees 0 without the option)
    with socket.socket() as server:
        server.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        with trio.fail_after(TIMEOUT):
            async with triomq.open_socket(triomq.DEALER, linger=0) as dealer:
                await dealer.connect(f"tcp://127.0.0.1:{server.getsockname()[1]}")
                await trio.lowlevel.wait_readable(server)
                accepted, _ = server.accept()
                with accepted:
                    assert _handshake_tos(accepted) == 0


def _listening_sockets(bound: Any) -> Iterator[socket.socket]:
    for listener in bound.listeners:
        while isinstance(listener, trio.SSLListener):
            listener = listener.transport_listener
        yield listener.socket


@pytest.mark.parametrize(
    ("endpoint", "ipv6"),
    [("tcp://127.0.0.1:0", False), ("tls://127.0.0.1:0", False), ("tcp://*:0", True), ("tcp://[::1]:0", False)],
    ids=["tcp", "tls", "dual_stack", "ipv6"],
)
async def test_the_listening_socket_has_the_tos(endpoint: str, ipv6: bool, ca: trustme.CA) -> None:
    """Set before it binds, as libzmq does: the SYN-ACKs carry it."""
    if ipv6 or "[::1]" in endpoint:
        problem = _ipv6_loopback_problem()
        if problem is not None:
            pytest.skip(problem)
    ssl_context = tls_options(ca)[0]["ssl_context"] if endpoint.startswith("tls") else None
    bound = await listen(
        parse_endpoint(endpoint), ipv6=ipv6, ssl_context=ssl_context, setup=SocketSetup(tos=EF)
    )
    try:
        (sock,) = _listening_sockets(bound)
        assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_TOS) == EF
        if sock.family == socket.AF_INET6:
            assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS) == EF
        # (and no keepalives on it: libzmq sets those on connections only)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
    finally:
        await bound.aclose()


@pytest.mark.parametrize(("keepalive", "expected"), [(-1, 1), (None, 1), (0, 0), (1, 1)])
def test_keepalive_zero_turns_keepalives_off(keepalive: int | None, expected: int) -> None:
    """0 writes SO_KEEPALIVE=0 (libzmq does: a socket accepted from a listener
    with keepalives on has them off then), -1 and None leave what is there."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        with client:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(client))
            tune_tcp(stream, keepalive=keepalive, idle=-1, cnt=None, intvl=-1, tos=0)
            assert client.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == expected
            assert figures(client)["idle"] == os_defaults()["idle"]


def test_a_refused_setting_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    client = socket.socket()
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(client))
    client.close()  # (setsockopt now fails with EBADF, as a refusal would)
    with caplog.at_level("WARNING", logger="triomq"):
        tune_tcp(stream, keepalive=1, idle=30, cnt=4, intvl=5, tos=EF)
    for name in ("ToS to 0xb8", "SO_KEEPALIVE to 1", "TCP_KEEPIDLE to 30", "TCP_KEEPCNT to 4", "TCP_KEEPINTVL to 5"):
        assert name in caplog.text


def test_whole_seconds_as_floats_are_taken() -> None:
    opts = triomq.SocketOptions(tcp_keepalive=1, tcp_keepalive_idle=30.0, tcp_keepalive_intvl=1)
    assert (opts.tcp_keepalive_idle, opts.tcp_keepalive_intvl) == (30.0, 1)


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"tcp_keepalive": 2}, ValueError, "tcp_keepalive must be -1"),
        ({"tcp_keepalive": -2}, ValueError, "tcp_keepalive must be -1"),
        ({"tcp_keepalive": 1.0}, TypeError, "tcp_keepalive"),
        ({"tcp_keepalive": "on"}, TypeError, "tcp_keepalive"),
        ({"tcp_keepalive": 1, "tcp_keepalive_idle": 1.5}, ValueError, "whole seconds"),
        ({"tcp_keepalive": 1, "tcp_keepalive_intvl": 0.5}, ValueError, "whole seconds"),
        ({"tcp_keepalive": 1, "tcp_keepalive_idle": float("inf")}, ValueError, "whole seconds"),
        ({"tcp_keepalive": 1, "tcp_keepalive_idle": 0}, ValueError, "1 to 32767 seconds"),
        ({"tcp_keepalive": 1, "tcp_keepalive_idle": 32768}, ValueError, "1 to 32767 seconds"),
        ({"tcp_keepalive": 1, "tcp_keepalive_intvl": -2}, ValueError, "1 to 32767 seconds"),
        ({"tcp_keepalive": 1, "tcp_keepalive_idle": "30"}, TypeError, "number of seconds"),
        ({"tcp_keepalive": 1, "tcp_keepalive_idle": True}, TypeError, "number of seconds"),
        ({"tcp_keepalive": 1, "tcp_keepalive_cnt": 0}, ValueError, "1 to 127 probes"),
        ({"tcp_keepalive": 1, "tcp_keepalive_cnt": 128}, ValueError, "1 to 127 probes"),
        ({"tcp_keepalive": 1, "tcp_keepalive_cnt": 3.0}, TypeError, "number of probes"),
        ({"tos": -1}, ValueError, "0 to 255"),
        ({"tos": 256}, ValueError, "0 to 255"),
        ({"tos": 1.0}, TypeError, "ToS byte"),
        ({"tos": True}, TypeError, "ToS byte"),
    ],
)
async def test_bad_values_are_refused_at_open_socket(
    options: dict[str, Any], error: type[Exception], words: str
) -> None:
    # (libzmq takes 0 or 40000 seconds at setsockopt, then fails every connection)
    with pytest.raises(error, match=words):
        async with triomq.open_socket(triomq.DEALER, **options):
            pass  # pragma: no cover


@pytest.mark.parametrize(
    "tuning",
    [{"tcp_keepalive_idle": 30}, {"tcp_keepalive_cnt": 3}, {"tcp_keepalive_intvl": 5}],
)
@pytest.mark.parametrize("keepalive", [-1, None])
async def test_tunings_without_keepalive_are_refused(tuning: dict[str, Any], keepalive: int | None) -> None:
    """libzmq takes them with ZMQ_TCP_KEEPALIVE -1 and sets nothing: a user who
    meant to detect dead peers would get no keepalives at all."""
    with pytest.raises(ValueError, match="no effect unless tcp_keepalive is set"):
        async with triomq.open_socket(triomq.DEALER, tcp_keepalive=keepalive, **tuning):
            pass  # pragma: no cover


@pytest.mark.parametrize("keepalive", [0, 1])
def test_tunings_with_keepalive_on_or_off_are_taken(keepalive: int) -> None:
    opts = triomq.SocketOptions(**{**KEEPALIVES, "tcp_keepalive": keepalive})
    assert opts.tcp_keepalive_cnt == 4
