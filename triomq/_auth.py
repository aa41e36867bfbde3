"""The request an authenticator is asked to judge (what libzmq sends a ZAP handler)."""

from __future__ import annotations

import attrs


@attrs.frozen
class AuthRequest:
    """One peer's handshake, for an ``authenticator`` to allow or deny.

    Attributes:
        mechanism: "NULL", "PLAIN" or "CURVE".
        address: the peer's IP address ("" for ipc).
        routing_id: the routing id the peer announced.
        domain: the socket's ``zap_domain``.
        username, password: PLAIN's credentials.
        public_key: CURVE: the client's long-term public key (32 raw bytes).
    """

    mechanism: str
    address: str
    routing_id: bytes = b""
    domain: str = ""
    username: bytes | None = None
    password: bytes | None = attrs.field(default=None, repr=False)
    public_key: bytes | None = None
