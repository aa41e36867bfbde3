"""The request an authenticator is asked to judge (what libzmq sends a ZAP handler),
and the answer that refuses it with a reason."""

from __future__ import annotations

import attrs


@attrs.frozen
class AuthRequest:
    """One peer's handshake, for an ``authenticator`` to allow or deny.

    Attributes:
        mechanism: "NULL", "PLAIN" or "CURVE".
        address: the peer's IP address ("" for ipc).
        routing_id: the routing id the peer announced (known for CURVE, and for
            NULL on the side that accepted the connection; PLAIN, and NULL on the
            side that connected, ask before the peer sends its metadata, as libzmq
            does, so it is empty there).
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


@attrs.frozen
class Deny:
    """An authenticator's refusal that says why (falsy, like any refusal).

    The reason is reported in the socket's ``HandshakeFailed`` event; the peer
    only learns the ZAP status code "400", as with libzmq.
    """

    reason: str = "denied"

    def __bool__(self) -> bool:
        return False
