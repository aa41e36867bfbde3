"""The triomq exception hierarchy.

Everything triomq raises on its own account derives from :class:`TriomqError`.
Trio's own exceptions are reused where they fit: ``trio.ClosedResourceError``
(your code closed the socket), ``trio.BusyResourceError`` and
``trio.WouldBlock`` (from the ``*_nowait`` methods).

This module imports nothing but the standard library: the sans-I/O layers use it.
"""

from __future__ import annotations


class TriomqError(Exception):
    """Base class of every error that triomq raises itself."""


class ProtocolError(TriomqError):
    """The ZMTP conversation went wrong. Not raised directly."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LocalProtocolError(ProtocolError):
    """We were asked to do something the protocol does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow.

    ``reason`` is the text the connection sends the peer in an ERROR command
    before it closes.
    """


class HandshakeError(TriomqError):
    """A handshake failed: bad greeting, incompatible peer, timeout."""


class AuthenticationError(HandshakeError):
    """The security mechanism or the authenticator refused the peer."""


class EndpointError(TriomqError, ValueError):
    """An endpoint string is malformed, or cannot be bound or connected."""


class StateError(TriomqError):
    """The socket cannot do that in its current state (libzmq's EFSM)."""


class HostUnreachable(TriomqError):
    """ROUTER with ``router_mandatory=True``: no peer has that routing id."""


class RequestFailed(TriomqError):
    """An RPC request got no reply after its last attempt."""
