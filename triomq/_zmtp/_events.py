"""Events a :class:`ZMTPConnection` returns from ``next_event()``.

They are plain, immutable records. Don't subclass them.
"""

from __future__ import annotations

import enum

import attrs

from .._socket_type import SocketType
from ._mechanism import Credentials


class NeedData(enum.Enum):
    """Sentinel: more bytes are needed before the next event."""

    NEED_DATA = "NEED_DATA"


NEED_DATA = NeedData.NEED_DATA


@attrs.frozen
class HandshakeComplete:
    """The greeting and the mechanism's handshake are done; messages may flow."""

    peer_socket_type: SocketType
    #: ZMTP minor version the peer greeted with (1 for 3.1, 0 for 3.0)
    peer_minor: int
    #: the peer's chosen routing id (its Identity property), possibly empty
    peer_routing_id: bytes
    peer_metadata: dict[str, bytes] = attrs.field(eq=False)
    user_id: bytes = b""


@attrs.frozen
class AuthenticationRequested:
    """A server needs the authenticator's decision; answer with ``authentication_result``."""

    credentials: Credentials


class Message:
    """A whole message (all its frames) from the peer."""

    __slots__ = ("frames",)

    def __init__(self, frames: list[bytes]) -> None:
        self.frames = frames

    def __repr__(self) -> str:
        return f"Message({self.frames!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Message) and other.frames == self.frames

    __hash__ = None  # type: ignore[assignment]


@attrs.frozen
class Subscription:
    """A subscribe (``subscribe=True``) or cancel, in either wire form."""

    topic: bytes
    subscribe: bool


@attrs.frozen
class Ping:
    #: the peer's TTL for us, in seconds (0 if none)
    ttl: float
    context: bytes


@attrs.frozen
class Pong:
    context: bytes


@attrs.frozen
class PeerError:
    """The peer sent ERROR; the connection is over."""

    reason: str


@attrs.frozen
class ConnectionClosed:
    """The peer closed the stream."""


Event = (
    HandshakeComplete
    | AuthenticationRequested
    | Message
    | Subscription
    | Ping
    | Pong
    | PeerError
    | ConnectionClosed
)
