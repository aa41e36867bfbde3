"""The interface every security mechanism implements, as a sans-I/O state machine.

A mechanism sees only command bodies (``name-length | name | data``) during the
handshake and returns the command bodies to send in reply. Encrypting mechanisms
(CURVE) also wrap and unwrap every frame after the handshake. The connection
(:mod:`._connection`) owns framing and state; mechanisms never see bytes of the
stream and never do I/O.
"""

from __future__ import annotations

import abc
import enum
from typing import ClassVar

import attrs

from .._errors import LocalProtocolError


class MechanismStatus(enum.Enum):
    #: Commands are still being exchanged.
    HANDSHAKING = "handshaking"
    #: The server has the client's credentials and waits for the authenticator's answer.
    AWAITING_AUTH = "awaiting-auth"
    #: The handshake is complete; messages may flow.
    READY = "ready"


@attrs.frozen
class Credentials:
    """What a client proved during the handshake, for the authenticator to judge."""

    #: "NULL", "PLAIN" or "CURVE"
    mechanism: str
    username: bytes | None = None
    password: bytes | None = attrs.field(default=None, repr=False)
    #: the client's long-term CURVE public key (32 raw bytes)
    public_key: bytes | None = None


class Mechanism(abc.ABC):
    """A security mechanism's state machine (NULL, PLAIN, CURVE).

    Attributes:
        as_server: the role this side plays in the mechanism (from the options).
        metadata: our properties (Socket-Type, Identity, ...), set by the connection
            before :meth:`start`.
        peer_metadata: the peer's properties, once received.
        status: where the handshake stands.
        credentials: set while ``status`` is AWAITING_AUTH.
        user_id: the user id the authenticator gave, for received messages' metadata.
    """

    #: the mechanism's name in the greeting
    name: ClassVar[bytes]
    #: True if frames are wrapped in MESSAGE commands after the handshake (CURVE)
    encrypts: ClassVar[bool] = False

    def __init__(self, *, as_server: bool = False, authenticate: bool = False) -> None:
        self.as_server = as_server
        #: a server asks the authenticator when this is True
        self.authenticate = authenticate
        self.metadata: dict[str, bytes] = {}
        self.peer_metadata: dict[str, bytes] = {}
        self.status = MechanismStatus.HANDSHAKING
        self.credentials: Credentials | None = None
        self.user_id = b""

    @abc.abstractmethod
    def start(self) -> list[bytes]:
        """Command bodies to send once the greetings are exchanged."""

    @abc.abstractmethod
    def receive_command(self, body: bytes) -> list[bytes]:
        """Take one command from the peer during the handshake; return commands to send.

        Raises:
            RemoteProtocolError: the command is malformed or out of order.
            AuthenticationError: the peer's proof is wrong (bad key, bad box).
        """

    def authentication_result(
        self, allowed: bool, *, user_id: bytes = b"", reason: str = ""
    ) -> list[bytes]:
        """The authenticator's answer while AWAITING_AUTH; returns commands to send.

        A refusal is reported by raising AuthenticationError after returning
        the ERROR command to send (see :class:`ZMTPConnection`).
        """
        raise LocalProtocolError(f"{self.name.decode()} does not ask an authenticator")

    def encrypt_frame(self, flags: int, body: bytes) -> bytes:
        """Wrap one frame after the handshake; returns a MESSAGE command body."""
        raise LocalProtocolError(f"{self.name.decode()} does not encrypt")

    def decrypt_frame(self, body: bytes) -> tuple[int, bytes]:
        """Unwrap a MESSAGE command body into ``(flags, frame body)``."""
        raise LocalProtocolError(f"{self.name.decode()} does not encrypt")
