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
    """NULL: no security. A server with an authenticator asks it before sending READY."""

    name = b"NULL"

    def __init__(self, *, as_server: bool = False, authenticate: bool = False) -> None:
        # NULL has no roles on the wire: as-server is always 0 in the greeting
        super().__init__(as_server=False, authenticate=authenticate and as_server)
        self._sent_ready = False
        self._got_ready = False

    def start(self) -> list[bytes]:
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
        self.status = MechanismStatus.READY
        return [encode_ready(self.metadata)]
