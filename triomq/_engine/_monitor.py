"""Connection events, as immutable records (what libzmq's monitor socket reports)."""

from __future__ import annotations

import enum

import attrs


class FailureKind(enum.Enum):
    """Why a handshake failed."""

    PROTOCOL = "protocol"
    AUTH = "auth"
    TIMEOUT = "timeout"
    CLOSED = "closed"


@attrs.frozen
class MonitorEvent:
    """Base of every connection event. ``endpoint`` is the bound or connected endpoint."""

    endpoint: str


@attrs.frozen
class Listening(MonitorEvent):
    """A bind succeeded."""


@attrs.frozen
class BindFailed(MonitorEvent):
    reason: str


@attrs.frozen
class Accepted(MonitorEvent):
    """A peer connected to a bound endpoint (the handshake comes next)."""

    peer_address: str


@attrs.frozen
class Connected(MonitorEvent):
    """A connect reached its peer (the handshake comes next)."""


@attrs.frozen
class ConnectRetried(MonitorEvent):
    """A connect attempt failed; the next one is in ``delay`` seconds."""

    delay: float
    reason: str


@attrs.frozen
class HandshakeSucceeded(MonitorEvent):
    peer_address: str
    peer_socket_type: str
    peer_routing_id: bytes = attrs.field(repr=lambda b: b.hex())
    user_id: str = ""


@attrs.frozen
class HandshakeFailed(MonitorEvent):
    peer_address: str
    kind: FailureKind
    reason: str


@attrs.frozen
class Disconnected(MonitorEvent):
    """An established connection ended."""

    peer_address: str
    reason: str
    #: messages lost with the connection: queued for a peer that is gone for
    #: good, half-written, or written but never taken by the peer's kernel
    #: (see "Delivery accounting" in docs/cancellation.rst)
    lost: int = 0


@attrs.frozen
class Closed(MonitorEvent):
    """A bound endpoint stopped listening (unbind or socket close)."""


@attrs.frozen
class MessagesDropped(MonitorEvent):
    """Messages were dropped at a high-water mark (PUB, ROUTER) since the last report.

    A socket reports its drops at most ten times a second (those of the rest
    of a tenth of a second come at its end, or when the socket closes), so the
    counts add up to ``statistics().dropped``.
    """

    count: int


@attrs.frozen
class MulticastLoss(MonitorEvent):
    """An ``epgm://`` receiver lost data for good: it fell out of the sender's
    window (``recovery_ivl``) or its repairs failed. At least one message is gone;
    the stream resumes at the next whole message."""

    #: the sender's transport session id (``gsi.sport``, hex GSI)
    source: str
    #: the first lost PGM sequence number, and how many were lost
    first_sqn: int
    packets: int


@attrs.frozen
class SwapCorrupted(MonitorEvent):
    """A disk swap file failed its checks; the messages it still held are lost."""

    reason: str
    lost: int


@attrs.frozen
class SwapFailed(MonitorEvent):
    """The disk swap could not write or read its files (the disk is full, or
    an I/O error). A failed write loses nothing: that pipe keeps what it
    holds and stops spilling until it has drained, so the socket type's HWM
    rule (drop or wait) applies meanwhile. A failed read loses the rest of
    that file (*lost* messages)."""

    reason: str
    lost: int
