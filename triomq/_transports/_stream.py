"""Stream transports: tcp://, ipc:// and tls:// (TLS over TCP).

tls:// is ZMTP inside TLS on a TCP connection: the ``ssl_context`` option is an
``ssl.SSLContext`` on both sides (a server context with its certificate chain to
bind; a client context trusting the server's CA to connect, checking the host
name against ``tls_hostname`` or the endpoint's host). The streams returned here
have not done the TLS handshake yet: the session does it first, under
``handshake_ivl``, and reports a refusal (see :func:`tls_failure`) as a failed
handshake, so a bad certificate never reaches the socket.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import socket as stdlib_socket
import ssl
from typing import Any

import attrs
import trio

from .._endpoint import Endpoint, split_source
from .._errors import EndpointError
from .._options import SocketOptions

logger = logging.getLogger("triomq")


@attrs.define(eq=False)
class BoundListener:
    """The listeners of one bind, the endpoint they resolved to, and what to clean up."""

    listeners: list[trio.abc.Listener[trio.abc.Stream]]
    endpoint: Endpoint
    unlink_path: str | None = None

    async def aclose(self) -> None:
        for listener in self.listeners:
            with trio.CancelScope(shield=True):
                await listener.aclose()
        if self.unlink_path:
            try:
                os.unlink(self.unlink_path)
            except OSError:
                pass


def _ipc_address(path: str) -> str:
    # libzmq: ipc://@name is Linux's abstract namespace
    return "\0" + path[1:] if path.startswith("@") else path


def peer_address(stream: trio.abc.Stream) -> str:
    """The peer's address as text (an IP for tcp/tls, "" for ipc)."""
    sock = _socket_of(stream)
    if sock is None:
        return ""
    try:
        addr = sock.getpeername()
    except OSError:
        return ""
    if isinstance(addr, tuple):
        return str(addr[0])
    return ""


def _socket_of(stream: trio.abc.Stream) -> Any:
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    return getattr(stream, "socket", None)


#: the send buffer an ipc connection asks for when the sndbuf option is None
#: (Linux doubles it: 1 MiB, where net.core.wmem_max allows)
IPC_SNDBUF = 512 * 1024


def set_buffers(stream: trio.abc.Stream, *, sndbuf: int | None, rcvbuf: int | None) -> None:
    """Size an ipc connection's kernel buffers (the ``sndbuf`` and ``rcvbuf``
    options; a tcp socket has its sizes before it connects or listens, see
    :class:`SocketSetup`).

    None is the OS default, but for the send buffer (IPC_SNDBUF); -1 is the OS
    default. A refusal by the kernel is logged and ignored.
    """
    sock = _socket_of(stream)
    if sock is None or sock.family != stdlib_socket.AF_UNIX:
        return
    _set_sizes(sock, IPC_SNDBUF if sndbuf is None else sndbuf, rcvbuf)


def _set_sizes(sock: Any, sndbuf: int | None, rcvbuf: int | None) -> None:
    for option, value in ((stdlib_socket.SO_SNDBUF, sndbuf), (stdlib_socket.SO_RCVBUF, rcvbuf)):
        if value is not None and value >= 0:
            try:
                sock.setsockopt(stdlib_socket.SOL_SOCKET, option, value)
            except OSError as exc:
                logger.info("could not set a socket's buffer size to %d: %s", value, exc)


@attrs.frozen
class SocketSetup:
    """What a tcp or tls socket is given before it connects or listens, as
    libzmq does: the ToS byte (``tos``, 0 = none), so that the handshake's
    packets carry it, and the kernel's buffer sizes (``sndbuf``/``rcvbuf``,
    None or -1 = the OS default). A connection's TCP window scale is fixed by
    its receive buffer at the handshake: shrunk afterwards, the buffer takes
    less than the window the peer was told, and the connection stalls on
    retransmissions (a 1 000-message stream into an 8 KiB receive buffer took
    13 s instead of 10 ms). Sockets a listener accepts inherit the sizes.
    """

    tos: int = 0
    sndbuf: int | None = None
    rcvbuf: int | None = None

    @classmethod
    def of(cls, options: SocketOptions) -> SocketSetup:
        return cls(tos=options.tos, sndbuf=options.sndbuf, rcvbuf=options.rcvbuf)

    def needed(self) -> bool:
        """Anything to set (else trio's own connect will do)."""
        return bool(self.tos) or any(
            size is not None and size >= 0 for size in (self.sndbuf, self.rcvbuf)
        )

    def apply(self, sock: Any) -> None:
        set_tos(sock, self.tos)
        _set_sizes(sock, self.sndbuf, self.rcvbuf)


#: nothing set before connect or listen
NO_SETUP = SocketSetup()


#: TCP_KEEPIDLE is TCP_KEEPALIVE on macOS (as in libzmq's tcp.cpp)
_TCP_KEEPIDLE: int | None = getattr(stdlib_socket, "TCP_KEEPIDLE", None) or getattr(
    stdlib_socket, "TCP_KEEPALIVE", None
)
_TCP_KEEPCNT: int | None = getattr(stdlib_socket, "TCP_KEEPCNT", None)
_TCP_KEEPINTVL: int | None = getattr(stdlib_socket, "TCP_KEEPINTVL", None)
_TCP_USER_TIMEOUT: int | None = getattr(stdlib_socket, "TCP_USER_TIMEOUT", None)
_IP_FAMILIES = (stdlib_socket.AF_INET, stdlib_socket.AF_INET6)


def _os_default(value: float | None) -> bool:
    return value is None or value == -1


def set_tos(sock: Any, tos: int) -> None:
    """Set the ToS byte of *sock*'s packets (the ``tos`` option; 0 leaves it).

    As libzmq's ``set_ip_type_of_service``: IP_TOS, and IPV6_TCLASS as well on
    an IPv6 socket (IP_TOS then covers IPv4-mapped peers). A refusal by the
    kernel is logged and ignored.
    """
    if not tos:
        return
    settings = [(stdlib_socket.IPPROTO_IP, stdlib_socket.IP_TOS)]
    if sock.family == stdlib_socket.AF_INET6 and hasattr(stdlib_socket, "IPV6_TCLASS"):
        settings.append((stdlib_socket.IPPROTO_IPV6, stdlib_socket.IPV6_TCLASS))
    for level, option in settings:
        try:
            sock.setsockopt(level, option, tos)
        except OSError as exc:
            logger.warning("could not set a tcp socket's ToS to %#x: %s", tos, exc)


def tune_tcp(
    stream: trio.abc.Stream,
    *,
    keepalive: int | None,
    idle: float | None,
    cnt: int | None,
    intvl: float | None,
    tos: int,
    maxrt: float = 0.0,
) -> None:
    """Apply the tcp options to a tcp or tls connection (an ipc one is left alone).

    As libzmq's ``tune_tcp_keepalives``: with *keepalive* -1 (or None) nothing
    is set; with 0 or 1, SO_KEEPALIVE is set to it and each of *idle*, *cnt*,
    *intvl* that is not -1 (or None) too. *tos* as :func:`set_tos`. *maxrt*
    (seconds; 0 = none) as libzmq's ``tune_tcp_maxrt``: TCP_USER_TIMEOUT in
    milliseconds. The values are checked by SocketOptions; a refusal by the
    kernel (a platform without the option) is logged and ignored, where libzmq
    fails the connection.
    """
    if _os_default(keepalive) and not tos and not maxrt:
        return
    sock = _socket_of(stream)
    if sock is None or sock.family not in _IP_FAMILIES:
        return
    set_tos(sock, tos)
    settings: list[tuple[int, int | None, str, float | None]] = [
        (stdlib_socket.IPPROTO_TCP, _TCP_USER_TIMEOUT, "TCP_USER_TIMEOUT", round(maxrt * 1000) or None),
    ]
    if not _os_default(keepalive):
        settings += [
            (stdlib_socket.SOL_SOCKET, stdlib_socket.SO_KEEPALIVE, "SO_KEEPALIVE", keepalive),
            (stdlib_socket.IPPROTO_TCP, _TCP_KEEPIDLE, "TCP_KEEPIDLE", idle),
            (stdlib_socket.IPPROTO_TCP, _TCP_KEEPCNT, "TCP_KEEPCNT", cnt),
            (stdlib_socket.IPPROTO_TCP, _TCP_KEEPINTVL, "TCP_KEEPINTVL", intvl),
        ]
    for level, option, name, value in settings:
        if value is None or value == -1:
            continue
        if option is None:
            logger.warning("cannot set %s to %s: this platform has no such option", name, value)
            continue
        try:
            sock.setsockopt(level, option, int(value))
        except OSError as exc:
            logger.warning("could not set %s to %s on a tcp connection: %s", name, value, exc)


async def open_stream(
    endpoint: Endpoint,
    *,
    ssl_context: ssl.SSLContext | None = None,
    tls_hostname: str | None = None,
    setup: SocketSetup = NO_SETUP,
) -> trio.abc.Stream:
    """Connect to *endpoint*.

    A tcp or tls socket gets *setup* (ToS byte, buffer sizes) before it
    connects, as in libzmq.

    Raises:
        OSError: the connection failed (the dialer retries), including a host
            name or path the resolver or the kernel refuses outright.
    """
    host = endpoint.host
    if endpoint.scheme != "ipc":
        if host == "*":
            raise EndpointError("cannot connect to a wildcard address")
        if endpoint.scheme == "tls":
            check_ssl_context(ssl_context, server_side=False)
    try:
        if endpoint.scheme == "ipc":
            return await trio.open_unix_socket(_ipc_address(endpoint.path))
        stream: trio.abc.Stream
        if endpoint.source is not None or setup.needed():
            stream = await _open_tcp_in_turn(host, endpoint.port, source=endpoint.source, setup=setup)
        else:
            stream = await trio.open_tcp_stream(host, endpoint.port)
    except ValueError as exc:
        # An empty label or one over 63 characters ("a..b") fails in the idna
        # codec (UnicodeError), a NUL byte in the socket call: ValueErrors, not
        # OSErrors. libzmq takes such a name at connect() and retries it as one
        # that does not resolve; so does the dialer, given an OSError.
        raise OSError(f"cannot resolve {endpoint}: {exc}") from exc
    if endpoint.scheme == "tls":
        assert ssl_context is not None
        # The TLS handshake is left to the session, which runs it under the
        # handshake timeout and reports its failure as a failed handshake.
        return trio.SSLStream(
            stream, ssl_context, server_hostname=tls_hostname or host, https_compatible=False
        )
    return stream


async def _open_tcp_in_turn(
    host: str, port: int, *, source: str | None, setup: SocketSetup
) -> trio.SocketStream:
    """Connect to (*host*, *port*) with a socket set up before it connects, which
    trio.open_tcp_stream cannot do: bound to the local address *source*
    (``host:port``, port 0 for any), as libzmq does for ``tcp://source;host:port``,
    and given *setup* (ToS byte, buffer sizes). Each of *host*'s addresses is tried
    in turn (no happy eyeballs: a source address has one family anyway, and
    libzmq tries one address).
    """
    local = split_source(source) if source is not None else None
    targets = await trio.socket.getaddrinfo(host, port, type=stdlib_socket.SOCK_STREAM)
    error: OSError | None = None
    for family, type_, proto, _, sockaddr in targets:
        sock = trio.socket.socket(family, type_, proto)
        try:
            setup.apply(sock)
            if local is not None:
                if local[1]:
                    sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEADDR, 1)
                await sock.bind(local)
            await sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:
            sock.close()
            raise
        return trio.SocketStream(sock)
    if error is None:  # pragma: no cover - getaddrinfo returns something or raises
        error = OSError(f"no address for {host}")
    raise error


def check_ssl_context(ssl_context: object, *, server_side: bool) -> None:
    """Raise EndpointError unless *ssl_context* can serve a tls:// bind (or connect)."""
    if ssl_context is None:
        raise EndpointError("tls:// needs the ssl_context option (an ssl.SSLContext)")
    if not isinstance(ssl_context, ssl.SSLContext):
        kind = type(ssl_context).__name__
        raise EndpointError(f"ssl_context must be an ssl.SSLContext, not {kind}")
    if server_side and ssl_context.protocol is ssl.PROTOCOL_TLS_CLIENT:
        raise EndpointError(
            "binding tls:// needs a server ssl_context, e.g. "
            "ssl.create_default_context(ssl.Purpose.CLIENT_AUTH) with load_cert_chain()"
        )
    if not server_side and ssl_context.protocol is ssl.PROTOCOL_TLS_SERVER:
        raise EndpointError(
            "connecting to tls:// needs a client ssl_context, e.g. "
            "ssl.create_default_context(cafile=...)"
        )


_SSL_LOCATION = re.compile(r"\s*\(_ssl\.c:\d+\)$")


def tls_failure(exc: BaseException) -> tuple[str, bool] | None:
    """What went wrong in the TLS layer, if *exc* (from a tls:// stream) comes from it.

    Returns ``(reason, refused)``: *refused* is True when the TLS layer refused
    the connection (a certificate that does not verify: unknown CA, wrong host
    name, missing client certificate; an alert from a peer that refused ours;
    bytes that are not TLS), False when the peer just closed the connection
    mid-TLS (which is what a peer refusing our certificate may look like).
    None if *exc* has nothing to do with TLS.
    """
    cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) else exc
    if not isinstance(cause, ssl.SSLError):
        return None
    if isinstance(cause, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return "the peer closed the TLS connection abruptly", False
    if isinstance(cause, ssl.SSLCertVerificationError) and cause.verify_message:
        return f"certificate verify failed: {cause.verify_message}", True
    return _SSL_LOCATION.sub("", str(cause.strerror or cause.reason or cause)), True


async def listen(
    endpoint: Endpoint,
    *,
    backlog: int = 100,
    ipv6: bool = False,
    ssl_context: ssl.SSLContext | None = None,
    setup: SocketSetup = NO_SETUP,
) -> BoundListener:
    """Listen on *endpoint*; the result carries the resolved endpoint (the real port).

    A tcp or tls listening socket gets *setup* before it binds, as in libzmq:
    its handshake replies carry the ToS byte, and the sockets it accepts
    inherit the buffer sizes (and, on Linux, the ToS byte; the session sets
    that on them too).

    Raises:
        EndpointError: the address cannot be bound (in use, no such interface).
    """
    if endpoint.scheme == "tls":
        check_ssl_context(ssl_context, server_side=True)
    try:
        if endpoint.scheme == "ipc":
            return await _listen_ipc(endpoint, backlog)
        return await _listen_tcp(endpoint, backlog, ipv6, ssl_context, setup)
    except EndpointError:
        raise
    except (OSError, ValueError) as exc:
        # ValueError: a host name the idna codec refuses (UnicodeError), a NUL
        # byte in an ipc path
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise EndpointError(f"cannot bind {endpoint}: {reason}") from exc


async def _listen_tcp(
    endpoint: Endpoint, backlog: int, ipv6: bool, ssl_context: ssl.SSLContext | None, setup: SocketSetup
) -> BoundListener:
    host = endpoint.host
    listener: trio.SocketListener | None = None
    if host == "*" and ipv6:
        listener = await _listen_dual_stack(endpoint.port, backlog, setup)
    if listener is None:
        if host == "*":
            host = "0.0.0.0"
        elif host == "localhost":
            host = "127.0.0.1"
        listener = await _listen_first(host, endpoint.port, backlog, ipv6, setup)
    sockname = listener.socket.getsockname()
    bound_host = endpoint.host if endpoint.host != "*" else sockname[0]
    # (a source address means nothing to a bind: libzmq binds the host part)
    resolved = attrs.evolve(endpoint, host=bound_host, port=sockname[1], source=None)
    if endpoint.scheme == "tls":
        assert ssl_context is not None  # checked by listen()
        # accept() returns at once; the TLS handshake runs in the session
        return BoundListener([trio.SSLListener(listener, ssl_context, https_compatible=False)], resolved)
    return BoundListener([listener], resolved)


async def _listen_first(
    host: str, port: int, backlog: int, ipv6: bool, setup: SocketSetup
) -> trio.SocketListener:
    """Listen on the first address *host* resolves to, as libzmq does.

    libzmq binds one address per bind. trio.open_tcp_listeners binds every
    address of a name, each on its own port when the port is 0 (``*``), and
    the endpoint could report only one of them. Without ``ipv6`` an IPv4
    address comes first (libzmq resolves IPv4 only then; an IPv6 literal such
    as ``[::1]`` is still taken).
    """
    infos = await trio.socket.getaddrinfo(
        host, port, type=stdlib_socket.SOCK_STREAM, flags=stdlib_socket.AI_PASSIVE
    )
    if not ipv6:
        infos.sort(key=lambda info: info[0] != stdlib_socket.AF_INET)  # (stable)
    family, type_, proto, _, sockaddr = infos[0]
    return await _listen_socket(family, type_, proto, sockaddr, backlog, v6only=True, setup=setup)


async def _listen_dual_stack(port: int, backlog: int, setup: SocketSetup) -> trio.SocketListener | None:
    """``tcp://*`` with ``ipv6=True``: one IPv6 socket that takes IPv4 clients too.

    libzmq clears IPV6_V6ONLY on its wildcard socket, so IPv4 clients reach it
    as ``::ffff:a.b.c.d``; trio.open_tcp_listeners would set it (IPv6 only).
    None on a host without IPv6: the caller listens on ``0.0.0.0`` instead,
    as libzmq falls back.
    """
    try:
        return await _listen_socket(
            stdlib_socket.AF_INET6, stdlib_socket.SOCK_STREAM, 0, ("::", port), backlog,
            v6only=False, setup=setup,
        )
    except OSError as exc:
        if exc.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
            raise
        logger.info("no IPv6 (%s): tcp://* listens on IPv4 only", exc)
        return None


async def _listen_socket(
    family: int, type_: int, proto: int, sockaddr: Any, backlog: int, *, v6only: bool,
    setup: SocketSetup,
) -> trio.SocketListener:
    """A listening socket, set up as trio.open_tcp_listeners does (SO_REUSEADDR,
    so that a restarted server can bind at once) but for IPV6_V6ONLY, which is
    the caller's choice, and given *setup* (ToS byte, buffer sizes)."""
    sock = trio.socket.socket(family, type_, proto)
    try:
        sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEADDR, 1)
        if family == stdlib_socket.AF_INET6:
            sock.setsockopt(stdlib_socket.IPPROTO_IPV6, stdlib_socket.IPV6_V6ONLY, int(v6only))
        setup.apply(sock)
        await sock.bind(sockaddr)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock)


async def _listen_ipc(endpoint: Endpoint, backlog: int) -> BoundListener:
    path = endpoint.path
    if path == "*":
        raise EndpointError("ipc://* (a generated path) is not supported; name a path")
    address = _ipc_address(path)
    sock = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    try:
        try:
            await sock.bind(address)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or address.startswith("\0"):
                raise
            # libzmq unlinks a stale socket file and binds again
            os.unlink(address)
            await sock.bind(address)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    unlink = None if address.startswith("\0") else address
    return BoundListener([trio.SocketListener(sock)], endpoint, unlink_path=unlink)
