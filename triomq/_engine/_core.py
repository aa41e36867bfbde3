"""The interface the engine needs from a socket (implemented by ``triomq._socket``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .._options import SocketOptions
    from .._socket_type import SocketType
    from .._zmtp._connection import ZMTPConnection
    from .._zmtp._events import HandshakeComplete
    from .._zmtp._mechanism import Credentials
    from ._monitor import MonitorEvent
    from ._pipe import Pipe


class SocketCore(Protocol):
    options: SocketOptions
    socket_type: SocketType
    #: False for send-only sockets: received messages are discarded
    receives: bool

    def make_connection(self, *, accepted: bool) -> ZMTPConnection:
        """A fresh ZMTP state machine with this socket's type, mechanism and options,
        for a connection this socket *accepted* (or made)."""

    def emit(self, event: MonitorEvent) -> None:
        """Report a connection event to the socket's monitors (never blocks)."""

    def new_pipe(self, endpoint: str, *, persistent: bool) -> Pipe:
        """A pipe for a peer of *endpoint*, created but not yet attached."""

    def pipe_connected(self, pipe: Pipe, handshake: HandshakeComplete) -> str | None:
        """The peer on *pipe* completed its handshake; returns a reason to refuse it, or None."""

    def pipe_disconnected(self, pipe: Pipe) -> None:
        """The connection behind *pipe* ended."""

    def connect_ended(self, pipe: Pipe) -> None:
        """The connection of a connect that does not reconnect ended: forget the
        connect, and let *pipe* go (what it holds to send is lost)."""

    def pipe_subscription(self, pipe: Pipe, topic: bytes, subscribe: bool) -> None:
        """The peer on *pipe* subscribed or cancelled."""

    def pipe_flushed(self, pipe: Pipe) -> None:
        """Everything queued on *pipe* was written out."""

    def wake_receivers(self) -> None:
        """Tasks waiting to receive should look again (a connection was lent to them)."""

    def initial_subscriptions(self) -> list[bytes]:
        """Topics to announce to a peer that just connected (subscribers only)."""

    async def authenticate(
        self, credentials: Credentials, *, address: str, routing_id: bytes
    ) -> tuple[bool, bytes, str]:
        """Ask the authenticator: (allowed, user id, reason)."""
