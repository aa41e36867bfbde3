"""Socket options: ZeroMQ's names, Trio's units (seconds as floats), validated once."""

from __future__ import annotations

import math
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from attrs import validators as v

from ._socket_type import SocketType
from ._zmtp._commands import encode_metadata
from ._zmtp._connection import MAX_METADATA_SIZE

_count = v.and_(v.instance_of(int), v.ge(0))
#: bytes, -1 for the OS default, or None
_buffer_size = v.optional(v.and_(v.instance_of(int), v.ge(-1)))


def _seconds_value(instance: object, attribute: Any, value: float) -> None:
    """A duration in seconds: a non-negative number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{attribute.name} must be a number of seconds, not {value!r}")
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, not {value!r}")


def _seconds(instance: object, attribute: Any, value: float | None) -> None:
    """A duration in seconds, or None (never, unlimited)."""
    if value is not None:
        _seconds_value(instance, attribute, value)


#: the ranges Linux takes for TCP_KEEPIDLE and TCP_KEEPINTVL (seconds) and for
#: TCP_KEEPCNT: libzmq takes any value at setsockopt and every connection then
#: fails (a connect retried forever, an accept failed), so they are checked here
TCP_KEEPALIVE_SECONDS_MAX = 32767
TCP_KEEPALIVE_CNT_MAX = 127


def _leaves_os_default(value: object) -> bool:
    """-1 (libzmq's spelling) or None: leave the OS default."""
    return value is None or (not isinstance(value, bool) and isinstance(value, (int, float)) and value == -1)


def _tcp_keepalive(instance: object, attribute: Any, value: int | None) -> None:
    if value is not None and (isinstance(value, float) or not isinstance(value, int)):
        raise TypeError(f"tcp_keepalive must be -1 (or None), 0 or 1, not {value!r}")
    if value not in (None, -1, 0, 1):
        raise ValueError(
            f"tcp_keepalive must be -1 (or None: the OS default), 0 (off) or 1 (on), not {value!r}"
        )


def _tcp_keepalive_seconds(instance: object, attribute: Any, value: float | None) -> None:
    """TCP_KEEPIDLE / TCP_KEEPINTVL: whole seconds, as the kernel counts them."""
    if _leaves_os_default(value):
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{attribute.name} must be a number of seconds, not {value!r}")
    if not math.isfinite(value) or value != int(value):
        raise ValueError(
            f"{attribute.name} must be whole seconds (the kernel counts keepalive times in"
            f" seconds), not {value!r}"
        )
    if not 1 <= value <= TCP_KEEPALIVE_SECONDS_MAX:
        raise ValueError(
            f"{attribute.name} must be -1 (or None: the OS default) or 1 to"
            f" {TCP_KEEPALIVE_SECONDS_MAX} seconds, not {value!r}"
        )


def _tcp_keepalive_cnt(instance: object, attribute: Any, value: int | None) -> None:
    if _leaves_os_default(value):
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"tcp_keepalive_cnt must be a number of probes, not {value!r}")
    if not 1 <= value <= TCP_KEEPALIVE_CNT_MAX:
        raise ValueError(
            f"tcp_keepalive_cnt must be -1 (or None: the OS default) or 1 to"
            f" {TCP_KEEPALIVE_CNT_MAX} probes, not {value!r}"
        )


#: TCP_USER_TIMEOUT takes milliseconds in a C int
TCP_MAXRT_MAX = (2**31 - 1) / 1000


def _tcp_maxrt(instance: object, attribute: Any, value: float) -> None:
    """TCP_USER_TIMEOUT: seconds, kept to the millisecond (0 = the OS default)."""
    _seconds_value(instance, attribute, value)
    if value and not 0.001 <= value <= TCP_MAXRT_MAX:
        raise ValueError(
            f"tcp_maxrt must be 0 (the OS default) or 0.001 to {TCP_MAXRT_MAX:g} seconds"
            f" (the kernel counts milliseconds), not {value!r}"
        )


#: a PING carries its TTL in deciseconds, in 16 bits: libzmq refuses a
#: ZMQ_HEARTBEAT_TTL above 6553599 ms (EINVAL)
HEARTBEAT_TTL_MAX = 6553.599


def _heartbeat_ttl(instance: object, attribute: Any, value: float | None) -> None:
    _seconds(instance, attribute, value)
    if value is not None and value > HEARTBEAT_TTL_MAX:
        raise ValueError(
            f"heartbeat_ttl must be at most {HEARTBEAT_TTL_MAX} seconds (a PING carries"
            f" deciseconds in 16 bits), not {value!r}"
        )


def _ssl_context(instance: object, attribute: Any, value: object) -> None:
    # (checked when set, as the other options; whether it can serve a bind or
    # a connect is known only then: see _transports._stream.check_ssl_context)
    if value is not None and not isinstance(value, ssl.SSLContext):
        raise TypeError(f"ssl_context must be an ssl.SSLContext, not {type(value).__name__}")


def _tos(instance: object, attribute: Any, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"tos must be an int (the IP header's ToS byte), not {value!r}")
    if not 0 <= value <= 255:
        raise ValueError(f"tos must be 0 to 255 (the IP header's ToS byte), not {value!r}")


def _flag(instance: object, attribute: Any, value: bool) -> None:
    """True or False (libzmq refuses other values too)."""
    if not isinstance(value, bool):
        raise TypeError(f"{attribute.name} must be True or False, not {value!r}")


def _routing_id(instance: object, attribute: object, value: bytes) -> None:
    # (it may start with a zero byte, as libzmq 4.3's ZMQ_ROUTING_ID may; the
    # ids a ROUTER makes up start with one, and a peer's may then clash with one)
    if len(value) > 255:
        raise ValueError("routing_id is at most 255 bytes")


#: properties the connection announces itself (names compare ignoring case, RFC 37):
#: a metadata entry must not override them (Identity would forge the routing id)
_OWN_PROPERTIES = ("Socket-Type", "Identity")


def _metadata(instance: object, attribute: Any, value: dict[str, bytes]) -> None:
    """Extra handshake properties, checked when set: a bad one found at the first
    handshake would fail every connection instead of the call that set it."""
    for name, prop in value.items():
        if not isinstance(name, str):
            raise TypeError(f"metadata names are str, not {type(name).__name__}: {name!r}")
        if not name.isascii() or not 0 < len(name) < 256:
            raise ValueError(f"metadata name must be 1 to 255 ASCII characters: {name!r}")
        for own in _OWN_PROPERTIES:
            if name.lower() == own.lower():
                raise ValueError(
                    f"metadata may not set {name!r}: the socket announces {own} itself"
                    " (see the routing_id option)"
                )
        if not isinstance(prop, bytes):
            raise TypeError(f"metadata value of {name!r} must be bytes, not {type(prop).__name__}")
    size = len(encode_metadata(value))
    if size > MAX_METADATA_SIZE:
        # a peer would refuse our handshake (triomq at its handshake frame limit)
        raise ValueError(f"metadata takes {size} bytes encoded, more than {MAX_METADATA_SIZE}")


@attrs.frozen(kw_only=True)
class SocketOptions:
    """Every option a socket accepts. Pass them as keyword arguments to ``open_socket``.

    Times are in seconds. ``None`` means "never" or "unlimited" where libzmq uses -1.
    """

    #: messages queued per outgoing pipe before send blocks or drops (0 = unlimited)
    sndhwm: int = attrs.field(default=1000, validator=_count)
    #: messages queued per incoming pipe before the reader stops reading (0 = unlimited)
    rcvhwm: int = attrs.field(default=1000, validator=_count)
    #: keep only the latest message in each queue, both ways: a newer message
    #: replaces the one waiting (counted in ``statistics().conflated``), and
    #: sndhwm/rcvhwm do not apply. On PUSH, PULL, DEALER, PUB and SUB; the other
    #: types ignore it, as libzmq's do. Whole messages are kept (libzmq keeps
    #: the last frame). Not with ``swap`` (see "Flow control")
    conflate: bool = attrs.field(default=False, validator=_flag)
    #: how long closing waits for queued messages to be sent (None = until sent,
    #: 0 = drop). Defaults to None, but to 0 for SUB and XSUB (as libzmq)
    linger: float | None = attrs.field(default=None, validator=_seconds)
    #: first reconnect delay (None or 0 = do not reconnect, as libzmq's -1 and 0:
    #: a connection that was made and ends then takes its connect with it)
    reconnect_ivl: float | None = attrs.field(default=0.1, validator=_seconds)
    #: the largest reconnect delay with exponential backoff (0 = no backoff growth)
    reconnect_ivl_max: float = attrs.field(default=0.0, validator=_seconds_value)
    #: a handshake taking longer fails (None = no limit)
    handshake_ivl: float | None = attrs.field(default=30.0, validator=_seconds)
    #: refuse frames (and messages) larger than this many bytes (None = unlimited)
    maxmsgsize: int | None = attrs.field(default=None, validator=v.optional(_count))
    #: our routing id, announced to ROUTER peers
    routing_id: bytes = attrs.field(
        default=b"", converter=bytes, validator=v.and_(v.instance_of(bytes), _routing_id)
    )
    #: extra metadata properties announced in the handshake (names like "X-...";
    #: at most 63 KiB encoded, see _zmtp._connection.MAX_METADATA_SIZE). Copied
    #: when set, so that the checked dict is the one used
    metadata: dict[str, bytes] = attrs.field(factory=dict, converter=dict, validator=_metadata)
    #: with ``tcp://*``, listen on IPv6 as well as IPv4
    ipv6: bool = False
    #: only queue messages on pipes whose connection is complete
    immediate: bool = False
    #: backlog for listening sockets
    backlog: int = attrs.field(default=100, validator=_count)
    #: the kernel's send and receive buffers of each tcp/ipc/tls connection, in
    #: bytes (SO_SNDBUF, SO_RCVBUF; Linux doubles the figure and caps it at
    #: net.core.wmem_max/rmem_max). -1 leaves the OS default, as libzmq's
    #: default does. None (the default) is the OS default too, except that ipc
    #: connections ask for a 512 KiB send buffer: Linux's default for Unix
    #: sockets (208 KiB) halves the bandwidth of large messages (TCP tunes its
    #: own buffers). A tcp socket is sized before it connects or listens, as
    #: in libzmq (the handshake agrees the window scale from it).
    sndbuf: int | None = attrs.field(default=None, validator=_buffer_size)
    rcvbuf: int | None = attrs.field(default=None, validator=_buffer_size)
    #: a task waiting in recv on a socket whose only connection is tcp or ipc
    #: keeps trying to read it for this long (seconds of real time, letting
    #: other tasks run in between) before it sleeps until the kernel wakes it:
    #: CPU spent for latency, as Linux's SO_BUSY_POLL (0 = never; a triomq option)
    busy_poll: float = attrs.field(default=0.0, validator=_seconds_value)

    # --- tcp (tcp:// and tls://, both the connecting and the accepting end)
    #: TCP keepalives (SO_KEEPALIVE): 1 turns them on, 0 off, -1 (or None)
    #: leaves the OS default (off on Linux), as libzmq's ZMQ_TCP_KEEPALIVE
    tcp_keepalive: int | None = attrs.field(default=-1, validator=_tcp_keepalive)
    #: seconds a connection stays idle before the first keepalive probe
    #: (TCP_KEEPIDLE; whole seconds, 1 to 32767; -1 or None = the OS default,
    #: 7200 on Linux). Needs tcp_keepalive 0 or 1, as in libzmq, which ignores
    #: it otherwise
    tcp_keepalive_idle: float | None = attrs.field(default=-1, validator=_tcp_keepalive_seconds)
    #: unanswered probes before the connection is dropped (TCP_KEEPCNT; 1 to
    #: 127; -1 or None = the OS default, 9 on Linux). Needs tcp_keepalive 0 or 1
    tcp_keepalive_cnt: int | None = attrs.field(default=-1, validator=_tcp_keepalive_cnt)
    #: seconds between probes (TCP_KEEPINTVL; whole seconds, 1 to 32767; -1 or
    #: None = the OS default, 75 on Linux). Needs tcp_keepalive 0 or 1
    tcp_keepalive_intvl: float | None = attrs.field(default=-1, validator=_tcp_keepalive_seconds)
    #: the ToS byte of the IP packets of tcp and tls connections (IP_TOS, and
    #: IPV6_TCLASS on IPv6): DSCP in its upper six bits; the kernel keeps the
    #: two ECN bits to itself. Set on the listening socket, on each accepted
    #: one and on each connecting one before it connects, as libzmq's ZMQ_TOS
    #: (0 = leave the OS default; not used by ipc or epgm)
    tos: int = attrs.field(default=0, validator=_tos)
    #: how long data may stay unacknowledged before the kernel gives up on a
    #: tcp or tls connection (TCP_USER_TIMEOUT, kept to the millisecond),
    #: which then ends and is made again: seconds, as libzmq's ZMQ_TCP_MAXRT
    #: in milliseconds. 0 = the OS default (retransmissions for about 15
    #: minutes on Linux)
    tcp_maxrt: float = attrs.field(default=0.0, validator=_tcp_maxrt)

    # --- heartbeats
    #: send a PING on each connection this often (None: no heartbeats)
    heartbeat_ivl: float | None = attrs.field(default=None, validator=_seconds)
    #: drop a connection when nothing at all arrives this long after a PING
    #: (None: heartbeat_ivl; 0: never, PINGs only, as libzmq's 0)
    heartbeat_timeout: float | None = attrs.field(default=None, validator=_seconds)
    #: the TTL our PINGs carry: the peer drops the connection when nothing
    #: arrives from us for that long (to the decisecond, at most 6553.599 s)
    heartbeat_ttl: float | None = attrs.field(default=None, validator=_heartbeat_ttl)

    # --- request-reply and routing
    req_correlate: bool = True
    req_relaxed: bool = True
    router_mandatory: bool = False
    router_handover: bool = False
    #: send an empty message first on every new connection, accepted or made
    #: (also after a reconnect), so that a ROUTER peer learns of us at once
    #: (ROUTER, DEALER and REQ only). It comes before anything already queued
    #: and does not count against sndhwm. The peer must filter such messages:
    #: a ROUTER receives ``[routing id, b""]``, a DEALER ``[b""]``
    probe_router: bool = attrs.field(default=False, validator=v.instance_of(bool))

    # --- publish-subscribe
    xpub_verbose: bool = False
    xpub_verboser: bool = False
    xpub_manual: bool = False
    xpub_welcome_msg: bytes | None = None
    #: PUB and XPUB: at a subscriber's full queue, ``send`` waits (and
    #: ``send_nowait`` raises ``trio.WouldBlock``) until every subscriber the
    #: message matches has room, instead of dropping it for that one (libzmq's
    #: ZMQ_XPUB_NODROP). With ``swap``, the wait comes once the swap is full too
    xpub_nodrop: bool = attrs.field(default=False, validator=v.instance_of(bool))
    #: reverse the topic filter (libzmq's ZMQ_INVERT_MATCHING): a PUB or XPUB
    #: sends each message to the subscribers *no* prefix of it is subscribed to
    #: by, and a SUB receives only the messages none of its topics match. Set
    #: it on both ends (XSUB does not filter: there it changes nothing)
    invert_matching: bool = attrs.field(default=False, validator=v.instance_of(bool))
    #: topics to subscribe to from the start (SUB only)
    subscribe: tuple[bytes, ...] = attrs.field(default=(), converter=tuple)

    # --- security
    plain_server: bool = False
    plain_username: bytes | None = None
    #: (secrets are left out of the repr, which ends up in logs)
    plain_password: bytes | None = attrs.field(default=None, repr=False)
    curve_server: bool = False
    curve_publickey: bytes | str | None = None
    curve_secretkey: bytes | str | None = attrs.field(default=None, repr=False)
    curve_serverkey: bytes | str | None = None
    zap_domain: str = ""
    #: an async callable judging each peer's handshake (see triomq.auth)
    authenticator: Callable[[Any], Awaitable[Any]] | None = None
    #: ssl.SSLContext for tls:// endpoints
    ssl_context: ssl.SSLContext | None = attrs.field(default=None, validator=_ssl_context)
    #: server_hostname for tls:// connections (defaults to the endpoint's host)
    tls_hostname: str | None = None

    # --- multicast (epgm://)
    rate: int = attrs.field(default=100, validator=_count)
    recovery_ivl: float = attrs.field(default=10.0, validator=_seconds_value)
    multicast_hops: int = attrs.field(default=0, validator=_count)
    multicast_loop: bool = True
    multicast_maxtpdu: int = attrs.field(default=1500, validator=_count)
    #: on a receiver, NAK repeats before data is declared lost; None = libzmq's (2 without
    #: an NCF, 5 after one). Raise it on very lossy networks.
    multicast_nak_retries: int | None = attrs.field(default=None, validator=v.optional(_count))
    #: for tests, a triomq._pgm.FaultInjector that every datagram this socket
    #: sends goes through (drop, duplicate, delay, reorder)
    multicast_faults: Any = None
    #: the same for every datagram this socket receives
    multicast_faults_in: Any = None

    # --- disk swap
    #: bytes the socket may spill to disk once a peer's queue is at sndhwm,
    #: read back in order as the peer catches up (0 = no swap; see "Flow control")
    swap: int = attrs.field(default=0, validator=_count)
    #: where the swap's files go, in a fresh directory (None = the system's temporary directory)
    swap_dir: str | None = None

    def __attrs_post_init__(self) -> None:
        if _leaves_os_default(self.tcp_keepalive):
            tuned = [
                name
                for name in ("tcp_keepalive_idle", "tcp_keepalive_cnt", "tcp_keepalive_intvl")
                if not _leaves_os_default(getattr(self, name))
            ]
            if tuned:
                # libzmq takes them and silently sets nothing: keepalives stay off
                raise ValueError(
                    f"{', '.join(tuned)} {'has' if len(tuned) == 1 else 'have'} no effect"
                    " unless tcp_keepalive is set: pass tcp_keepalive=1 to turn TCP"
                    " keepalives on (libzmq ignores them with ZMQ_TCP_KEEPALIVE -1)"
                )
        if self.conflate and self.swap:
            raise ValueError(
                "conflate and swap cannot be combined: conflate keeps one message"
                " per queue, swap spills full queues to disk"
            )


#: the socket types that may set probe_router (libzmq: ROUTER, DEALER and REQ,
#: and REP, whose probes no peer can use)
_PROBING_TYPES = (SocketType.ROUTER, SocketType.DEALER, SocketType.REQ)
#: xpub_nodrop (libzmq refuses ZMQ_XPUB_NODROP on any other socket)
_PUBLISHERS = (SocketType.PUB, SocketType.XPUB)
#: invert_matching (libzmq takes ZMQ_INVERT_MATCHING on any socket, and ignores
#: it where it means nothing: surely a mistake, so refused)
_PUBSUB = (SocketType.PUB, SocketType.XPUB, SocketType.SUB, SocketType.XSUB)


def check_options_for_type(socket_type: SocketType, options: SocketOptions) -> None:
    """Options that only some socket types take, checked when the socket is made.

    Raises:
        ValueError: an option set on a socket type it does not apply to.
    """
    if options.probe_router and socket_type not in _PROBING_TYPES:
        raise ValueError(
            f"probe_router applies to ROUTER, DEALER and REQ sockets, not {socket_type.name}"
        )
    if options.xpub_nodrop and socket_type not in _PUBLISHERS:
        raise ValueError(f"xpub_nodrop applies to PUB and XPUB sockets, not {socket_type.name}")
    if options.invert_matching and socket_type not in _PUBSUB:
        raise ValueError(
            f"invert_matching applies to PUB, XPUB, SUB and XSUB sockets, not {socket_type.name}"
        )
