"""The NULL mechanism (RFC 23/37): both sides send READY with their metadata."""

from __future__ import annotations

from .._errors import RemoteProtocolError
from .._zmtp._commands import (
    decode_command_untrusted,
    decode_metadata_untrusted,
    encode_error,
    encode_ready,
)
from .._zmtp._mechanism import Credentials, Mechanism, MechanismStatus


class NullMechanism(Mechanism):
    """NULL: no security. A side with an authenticator asks it before sending READY.

    NULL has no roles, so both sides of a connection may ask, and a side that
    asks holds its READY until the answer (a refused peer gets ERROR, never
    READY, as from libzmq). When to ask: *ask_at_once* asks as soon as the
    greetings are exchanged, as libzmq does (the request then has no peer
    Identity); otherwise the peer's READY is awaited first, so the
    authenticator sees the Identity the peer announced. Two sides that both
    awaited the other's READY would wait for ever: the socket lets only the
    accepting side await it, and a connecting one asks at once.
    """

    name = b"NULL"

    def __init__(
        self, *, as_server: bool = False, authenticate: bool = False, ask_at_once: bool = False
    ) -> None:
        # NULL has no roles on the wire: as-server is always 0 in the greeting
        super().__init__(as_server=False, authenticate=authenticate and as_server)
        self._ask_at_once = ask_at_once and self.authenticate
        self._sent_ready = False
        self._got_ready = False

    def start(self) -> list[bytes]:
        if self._ask_at_once:
            self.credentials = Credentials(mechanism="NULL")
            self.status = MechanismStatus.AWAITING_AUTH
            return []
        if self.authenticate:
            return []
        self._sent_ready = True
        return [encode_ready(self.metadata)]

    def receive_command(self, body: bytes) -> list[bytes]:
        name, data = decode_command_untrusted(body)
        if name != b"READY" or self._got_ready:
            raise RemoteProtocolError(f"NULL handshake: unexpected command {name!r}")
        self.peer_metadata = decode_metadata_untrusted(data)
        self._got_ready = True
        if self.authenticate and not self._sent_ready:
            self.credentials = Credentials(mechanism="NULL")
            self.status = MechanismStatus.AWAITING_AUTH
            return []
        self.status = MechanismStatus.READY
        return []

    def authentication_result(
        self, allowed: bool, *, user_id: bytes = b"", reason: str = ""
    ) -> list[bytes]:
        if not allowed:
            return [encode_error(reason or "authentication refused")]
        self.user_id = user_id
        self._sent_ready = True
        # asked at once, the peer's READY may still be on its way
        self.status = MechanismStatus.READY if self._got_ready else MechanismStatus.HANDSHAKING
        return [encode_ready(self.metadata)]
