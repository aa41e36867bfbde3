"""The PLAIN mechanism (RFC 24/ZMTP-PLAIN): a username and password in clear text.

Client                        Server
  HELLO(username, password) ->
                            <-  WELCOME            (or ERROR if refused)
  INITIATE(metadata)        ->
                            <-  READY(metadata)

The server asks the authenticator after HELLO (``authenticate=True``). Like a
libzmq 4.3 PLAIN server without a ZAP handler, a server with
``authenticate=False`` lets no client in.

libzmq's PLAIN (every version to date) spells the ERROR command's name with a C
hex escape that eats the "E" (``"\x05ERROR"`` is 0x5E "RROR"), and its PLAIN
client recognises only that spelling: a well-formed ERROR makes it report a
protocol error instead of the ZAP status. ``libzmq_error=True`` sends libzmq's
spelling, so a refused libzmq client reports HANDSHAKE_FAILED_AUTH with the
status code; triomq reads both spellings.
"""

from __future__ import annotations

import enum

from .._errors import AuthenticationError, LocalProtocolError, RemoteProtocolError
from .._zmtp._commands import (
    decode_command_untrusted,
    decode_metadata_untrusted,
    encode_command,
    encode_error,
    encode_metadata,
)
from .._zmtp._mechanism import Credentials, Mechanism, MechanismStatus

__all__ = ["PlainMechanism"]


class _State(enum.Enum):
    # client
    SEND_HELLO = "send-hello"
    WAIT_WELCOME = "wait-welcome"
    WAIT_READY = "wait-ready"
    # server
    WAIT_HELLO = "wait-hello"
    WAIT_AUTH = "wait-auth"
    WAIT_INITIATE = "wait-initiate"
    # both
    DONE = "done"
    FAILED = "failed"


class PlainMechanism(Mechanism):
    """PLAIN, client or server.

    Args:
        as_server: play the server role (checks credentials).
        authenticate: (server) ask the authenticator; without one, every client is refused.
        username, password: (client) the credentials to send, at most 255 bytes each.
        libzmq_error: (server) refuse with ERROR spelled as libzmq's PLAIN client
            expects it (see the module docstring).
    """

    name = b"PLAIN"

    def __init__(
        self,
        *,
        as_server: bool,
        authenticate: bool,
        username: bytes = b"",
        password: bytes = b"",
        libzmq_error: bool = False,
    ) -> None:
        super().__init__(as_server=as_server, authenticate=authenticate and as_server)
        self._libzmq_error = libzmq_error
        username = bytes(username)
        password = bytes(password)
        if len(username) > 255:
            raise ValueError("PLAIN username is at most 255 bytes")
        if len(password) > 255:
            raise ValueError("PLAIN password is at most 255 bytes")
        self._username = username
        self._password = password
        self._state = _State.WAIT_HELLO if as_server else _State.SEND_HELLO

    def __repr__(self) -> str:
        role = "server" if self.as_server else "client"
        return f"<PlainMechanism {role} {self._state.value}>"

    # ---- handshake ----------------------------------------------------------

    def start(self) -> list[bytes]:
        if self.as_server:
            return []
        if self._state is not _State.SEND_HELLO:
            raise LocalProtocolError("PLAIN handshake already started")
        self._state = _State.WAIT_WELCOME
        u, p = self._username, self._password
        return [encode_command(b"HELLO", bytes((len(u),)) + u + bytes((len(p),)) + p)]

    def receive_command(self, body: bytes) -> list[bytes]:
        name, data = decode_command_untrusted(body)
        state = self._state
        if self.as_server:
            if state is _State.WAIT_HELLO and name == b"HELLO":
                return self._on_hello(data)
            if state is _State.WAIT_INITIATE and name == b"INITIATE":
                self.peer_metadata = decode_metadata_untrusted(data)
                self._state = _State.DONE
                self.status = MechanismStatus.READY
                return [encode_command(b"READY", encode_metadata(self.metadata))]
        else:
            if state is _State.WAIT_WELCOME and name == b"WELCOME":
                if data:
                    self._state = _State.FAILED
                    raise RemoteProtocolError("PLAIN: malformed WELCOME (unexpected data)")
                self._state = _State.WAIT_READY
                return [encode_command(b"INITIATE", encode_metadata(self.metadata))]
            if state is _State.WAIT_READY and name == b"READY":
                self.peer_metadata = decode_metadata_untrusted(data)
                self._state = _State.DONE
                self.status = MechanismStatus.READY
                return []
        self._state = _State.FAILED
        raise RemoteProtocolError(
            f"PLAIN handshake: unexpected command {name.decode('ascii', 'replace')!r}"
            f" in state {state.value}"
        )

    def _on_hello(self, data: bytes) -> list[bytes]:
        self._state = _State.FAILED  # until proven otherwise
        if not data:
            raise RemoteProtocolError("PLAIN: malformed HELLO (no username)")
        ulen = data[0]
        pos = 1 + ulen
        if len(data) < pos + 1:
            raise RemoteProtocolError("PLAIN: malformed HELLO (bad username length)")
        plen = data[pos]
        end = pos + 1 + plen
        if len(data) != end:
            raise RemoteProtocolError("PLAIN: malformed HELLO (bad password length)")
        username = data[1:pos]
        password = data[pos + 1 : end]
        self.credentials = Credentials(mechanism="PLAIN", username=username, password=password)
        if not self.authenticate:
            # libzmq 4.3: a PLAIN server with no ZAP handler lets no client through
            raise AuthenticationError("PLAIN: no authenticator, every client is refused")
        self._state = _State.WAIT_AUTH
        self.status = MechanismStatus.AWAITING_AUTH
        return []

    def authentication_result(
        self, allowed: bool, *, user_id: bytes = b"", reason: str = ""
    ) -> list[bytes]:
        if self._state is not _State.WAIT_AUTH:
            raise LocalProtocolError("PLAIN: no authentication is pending")
        if not allowed:
            self._state = _State.FAILED
            # libzmq sends the ZAP status code ("400") as the reason
            error = encode_error(reason or "400")
            if self._libzmq_error:
                error = b"\x5eRROR" + error[6:]
            return [error]
        self.user_id = bytes(user_id)
        self._state = _State.WAIT_INITIATE
        self.status = MechanismStatus.HANDSHAKING
        return [encode_command(b"WELCOME")]
