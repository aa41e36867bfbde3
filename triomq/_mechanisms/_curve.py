"""The CURVE mechanism (RFC 26/CurveZMQ), byte for byte as libzmq 4.3 speaks it.

Keys: C/c the client's long-term public/secret key, S/s the server's, C'/c' and
S'/s' the short-term (per connection) keys, K the server's cookie key.
``Box[x](A->B)`` is crypto_box of x from A's secret to B's public key; the
stored box is the 16-byte MAC followed by the ciphertext. Short nonces are
8-byte big-endian counters appended to a 16-byte prefix; long nonces are 16
random bytes appended to an 8-byte prefix.

=========  ====  ==========================================================
command    size  layout (after the name-length and name)
=========  ====  ==========================================================
HELLO      200   version 1.0 | 72 zero bytes | C' | short nonce |
                 Box[64 zero bytes](C'->S)                   ("CurveZMQHELLO---")
WELCOME    168   long nonce | Box[S' | cookie](S->C')                ("WELCOME-")
                 cookie = long nonce | SecretBox[C' | s'](K)          ("COOKIE--")
INITIATE   257+  cookie | short nonce |
                 Box[C | vouch | metadata](C'->S')           ("CurveZMQINITIATE")
                 vouch = long nonce | Box[C' | S](C->S')              ("VOUCH---")
READY      30+   short nonce | Box[metadata](S'->C')         ("CurveZMQREADY---")
MESSAGE    33+   short nonce | Box[flags | body](C'->S' / S'->C')
                 ("CurveZMQMESSAGEC" from the client, "CurveZMQMESSAGES" from the server)
=========  ====  ==========================================================

Sizes count the whole command body (name included). The flags byte inside a
MESSAGE uses 0x01 for MORE and 0x02 for COMMAND. Short nonces count up from 1
on each side (the client's HELLO is 1, INITIATE 2; the server's READY is 1);
a received MESSAGE nonce must be above every nonce seen before from that peer.

This module needs PyNaCl (``pip install triomq[curve]``).
"""

from __future__ import annotations

import enum
import hmac
import os
import struct

try:
    from nacl.bindings import (
        crypto_box_beforenm,
        crypto_box_easy,
        crypto_box_easy_afternm,
        crypto_box_keypair,
        crypto_box_open_easy,
        crypto_box_open_easy_afternm,
        crypto_scalarmult_base,
        crypto_secretbox_easy,
        crypto_secretbox_open_easy,
    )
    from nacl.exceptions import CryptoError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("the CURVE mechanism needs PyNaCl: pip install 'triomq[curve]'") from exc

from .._errors import AuthenticationError, LocalProtocolError, RemoteProtocolError
from .._zmtp._commands import (
    decode_command_untrusted,
    decode_metadata_untrusted,
    encode_error,
    encode_metadata,
)
from .._zmtp._frames import COMMAND, MORE
from .._zmtp._mechanism import Credentials, Mechanism, MechanismStatus
from ._z85 import normalize_key

__all__ = ["CurveMechanism"]

_U64 = struct.Struct(">Q")
_MAC = 16
_MAX_NONCE = 2**64 - 1

_HELLO = b"\x05HELLO"
_WELCOME = b"\x07WELCOME"
_INITIATE = b"\x08INITIATE"
_READY = b"\x05READY"
_MESSAGE = b"\x07MESSAGE"

_HELLO_SIZE = 200
_WELCOME_SIZE = 168
_INITIATE_MIN_SIZE = 257
_READY_MIN_SIZE = 30
_MESSAGE_MIN_SIZE = 33

_HELLO_PREFIX = b"CurveZMQHELLO---"
_INITIATE_PREFIX = b"CurveZMQINITIATE"
_READY_PREFIX = b"CurveZMQREADY---"
_MESSAGE_PREFIX_C = b"CurveZMQMESSAGEC"
_MESSAGE_PREFIX_S = b"CurveZMQMESSAGES"
_WELCOME_PREFIX = b"WELCOME-"
_COOKIE_PREFIX = b"COOKIE--"
_VOUCH_PREFIX = b"VOUCH---"

# the flags byte inside a MESSAGE box
_CURVE_MORE = 0x01
_CURVE_COMMAND = 0x02

#: (our ZMTP flags & (MORE|COMMAND)) -> CURVE flags byte, and back
_TO_CURVE = [
    bytes(((_CURVE_MORE if f & MORE else 0) | (_CURVE_COMMAND if f & COMMAND else 0),))
    for f in range(8)
]
_FROM_CURVE = [
    (MORE if f & _CURVE_MORE else 0) | (COMMAND if f & _CURVE_COMMAND else 0) for f in range(256)
]


class _State(enum.Enum):
    # client
    SEND_HELLO = "send-hello"
    WAIT_WELCOME = "wait-welcome"
    WAIT_READY = "wait-ready"
    # server
    WAIT_HELLO = "wait-hello"
    WAIT_INITIATE = "wait-initiate"
    WAIT_AUTH = "wait-auth"
    # both
    READY = "ready"
    FAILED = "failed"


class CurveMechanism(Mechanism):
    """CURVE, client or server.

    Args:
        as_server: play the server role.
        authenticate: (server) ask the authenticator with the client's long-term
            public key; without one, any client that knows our public key gets in
            (as libzmq 4.3 without a ZAP handler).
        public_key, secret_key: our long-term key pair (32 raw bytes or 40 Z85 characters).
        server_key: (client) the server's long-term public key.

    Raises:
        ValueError: a malformed key, a public key that does not match the secret
            key, or a client without ``server_key``.
    """

    name = b"CURVE"
    encrypts = True

    def __init__(
        self,
        *,
        as_server: bool,
        authenticate: bool,
        public_key: bytes,
        secret_key: bytes,
        server_key: bytes | None = None,
    ) -> None:
        super().__init__(as_server=as_server, authenticate=authenticate and as_server)
        self._public = normalize_key(public_key)
        self._secret = normalize_key(secret_key)
        if not hmac.compare_digest(crypto_scalarmult_base(self._secret), self._public):
            raise ValueError("CURVE public key does not belong to the secret key")
        if as_server:
            self._server_key = self._public
        else:
            if server_key is None:
                raise ValueError("a CURVE client needs the server's public key (server_key)")
            self._server_key = normalize_key(server_key)
        # short-term key pair, fresh for every connection
        self._cn_public, self._cn_secret = crypto_box_keypair()
        #: the peer's short-term public key (C' on the server, S' on the client)
        self._cn_peer = b""
        #: crypto_box_beforenm(peer short-term public, our short-term secret)
        self._precom = b""
        self._cookie_key = b""
        #: next short nonce we send; the highest one received from the peer
        self._nonce = 1
        self._peer_nonce = 0
        if as_server:
            self._state = _State.WAIT_HELLO
            self._send_prefix, self._recv_prefix = _MESSAGE_PREFIX_S, _MESSAGE_PREFIX_C
        else:
            self._state = _State.SEND_HELLO
            self._send_prefix, self._recv_prefix = _MESSAGE_PREFIX_C, _MESSAGE_PREFIX_S

    def __repr__(self) -> str:
        role = "server" if self.as_server else "client"
        return f"<CurveMechanism {role} {self._state.value}>"

    # ---- helpers ------------------------------------------------------------

    def _next_nonce(self) -> bytes:
        nonce = self._nonce
        if nonce > _MAX_NONCE:
            raise LocalProtocolError("CURVE: short nonces exhausted, reconnect")
        self._nonce = nonce + 1
        return _U64.pack(nonce)

    def _fail_auth(self, reason: str) -> AuthenticationError:
        self._state = _State.FAILED
        return AuthenticationError(f"CURVE: {reason}")

    def _fail_protocol(self, reason: str) -> RemoteProtocolError:
        self._state = _State.FAILED
        return RemoteProtocolError(f"CURVE: {reason}")

    # ---- handshake ----------------------------------------------------------

    def start(self) -> list[bytes]:
        if self.as_server:
            return []
        if self._state is not _State.SEND_HELLO:
            raise LocalProtocolError("CURVE handshake already started")
        short = self._next_nonce()
        try:
            box = crypto_box_easy(
                bytes(64), _HELLO_PREFIX + short, self._server_key, self._cn_secret
            )
        except CryptoError:
            # libsodium refuses a server key that is a low-order point
            raise self._fail_auth("the server key is not a usable public key") from None
        self._state = _State.WAIT_WELCOME
        return [_HELLO + b"\x01\x00" + bytes(72) + self._cn_public + short + box]

    def receive_command(self, body: bytes) -> list[bytes]:
        name, _ = decode_command_untrusted(body)
        state = self._state
        if self.as_server:
            if state is _State.WAIT_HELLO and name == b"HELLO":
                return self._on_hello(body)
            if state is _State.WAIT_INITIATE and name == b"INITIATE":
                return self._on_initiate(body)
        else:
            if state is _State.WAIT_WELCOME and name == b"WELCOME":
                return self._on_welcome(body)
            if state is _State.WAIT_READY and name == b"READY":
                return self._on_ready(body)
        raise self._fail_protocol(
            f"unexpected command {name.decode('ascii', 'replace')!r} in state {state.value}"
        )

    # client side

    def _on_welcome(self, body: bytes) -> list[bytes]:
        if len(body) != _WELCOME_SIZE:
            raise self._fail_protocol(f"malformed WELCOME ({len(body)} bytes, not {_WELCOME_SIZE})")
        try:
            plain = crypto_box_open_easy(
                body[24:], _WELCOME_PREFIX + body[8:24], self._server_key, self._cn_secret
            )
            self._cn_peer = plain[:32]
            self._precom = crypto_box_beforenm(self._cn_peer, self._cn_secret)
        except CryptoError:
            raise self._fail_auth("cannot open WELCOME (wrong server key?)") from None
        cookie = plain[32:128]

        # vouch = Box[C' | S](C->S'), proving we hold the long-term secret key c
        vouch_nonce = os.urandom(16)
        try:
            vouch = crypto_box_easy(
                self._cn_public + self._server_key,
                _VOUCH_PREFIX + vouch_nonce,
                self._cn_peer,
                self._secret,
            )
        except CryptoError:  # pragma: no cover - beforenm above already checked S'
            raise self._fail_auth("the server's short-term key is not usable") from None
        short = self._next_nonce()
        box = crypto_box_easy_afternm(
            self._public + vouch_nonce + vouch + encode_metadata(self.metadata),
            _INITIATE_PREFIX + short,
            self._precom,
        )
        self._state = _State.WAIT_READY
        return [_INITIATE + cookie + short + box]

    def _on_ready(self, body: bytes) -> list[bytes]:
        if len(body) < _READY_MIN_SIZE:
            raise self._fail_protocol(f"malformed READY ({len(body)} bytes)")
        short = body[6:14]
        try:
            plain = crypto_box_open_easy_afternm(body[14:], _READY_PREFIX + short, self._precom)
        except CryptoError:
            raise self._fail_auth("cannot open READY") from None
        self.peer_metadata = decode_metadata_untrusted(plain)
        self._peer_nonce = _U64.unpack(short)[0]
        self._state = _State.READY
        self.status = MechanismStatus.READY
        return []

    # server side

    def _on_hello(self, body: bytes) -> list[bytes]:
        if len(body) != _HELLO_SIZE:
            raise self._fail_protocol(f"malformed HELLO ({len(body)} bytes, not {_HELLO_SIZE})")
        if body[6:8] != b"\x01\x00":
            raise self._fail_protocol(f"unsupported CurveZMQ version {body[6]}.{body[7]}")
        cn_client = body[80:112]
        short = body[112:120]
        try:
            signature = crypto_box_open_easy(
                body[120:200], _HELLO_PREFIX + short, cn_client, self._secret
            )
        except CryptoError:
            raise self._fail_auth("cannot open HELLO (client has the wrong server key?)") from None
        if not hmac.compare_digest(signature, bytes(64)):
            raise self._fail_auth("HELLO signature box is not 64 zero bytes")
        self._cn_peer = cn_client
        self._peer_nonce = _U64.unpack(short)[0]

        # cookie = long nonce | SecretBox[C' | s'](K), with a fresh cookie key K
        self._cookie_key = os.urandom(32)
        cookie_nonce = os.urandom(16)
        cookie = cookie_nonce + crypto_secretbox_easy(
            cn_client + self._cn_secret, _COOKIE_PREFIX + cookie_nonce, self._cookie_key
        )
        welcome_nonce = os.urandom(16)
        box = crypto_box_easy(
            self._cn_public + cookie, _WELCOME_PREFIX + welcome_nonce, cn_client, self._secret
        )
        self._state = _State.WAIT_INITIATE
        return [_WELCOME + welcome_nonce + box]

    def _on_initiate(self, body: bytes) -> list[bytes]:
        if len(body) < _INITIATE_MIN_SIZE:
            raise self._fail_protocol(f"malformed INITIATE ({len(body)} bytes)")
        try:
            cookie = crypto_secretbox_open_easy(
                body[25:105], _COOKIE_PREFIX + body[9:25], self._cookie_key
            )
        except CryptoError:
            raise self._fail_auth("cannot open the INITIATE cookie") from None
        if not hmac.compare_digest(cookie, self._cn_peer + self._cn_secret):
            raise self._fail_auth("INITIATE cookie is not ours")
        # the cookie has served its purpose
        self._cookie_key = b""
        short = body[105:113]
        try:
            self._precom = crypto_box_beforenm(self._cn_peer, self._cn_secret)
            plain = crypto_box_open_easy_afternm(body[113:], _INITIATE_PREFIX + short, self._precom)
        except CryptoError:
            raise self._fail_auth("cannot open INITIATE") from None
        client_key = plain[:32]
        try:
            vouch = crypto_box_open_easy(
                plain[48:128], _VOUCH_PREFIX + plain[32:48], client_key, self._cn_secret
            )
        except CryptoError:
            raise self._fail_auth("cannot open the INITIATE vouch") from None
        if not hmac.compare_digest(vouch, self._cn_peer + self._server_key):
            raise self._fail_auth("the vouch does not name this connection's keys")
        nonce = _U64.unpack(short)[0]
        self.peer_metadata = decode_metadata_untrusted(plain[128:])
        self._peer_nonce = nonce
        if self.authenticate:
            self.credentials = Credentials(mechanism="CURVE", public_key=client_key)
            self._state = _State.WAIT_AUTH
            self.status = MechanismStatus.AWAITING_AUTH
            return []
        return [self._produce_ready()]

    def _produce_ready(self) -> bytes:
        short = self._next_nonce()
        box = crypto_box_easy_afternm(
            encode_metadata(self.metadata), _READY_PREFIX + short, self._precom
        )
        self._state = _State.READY
        self.status = MechanismStatus.READY
        return _READY + short + box

    def authentication_result(
        self, allowed: bool, *, user_id: bytes = b"", reason: str = ""
    ) -> list[bytes]:
        if self._state is not _State.WAIT_AUTH:
            raise LocalProtocolError("CURVE: no authentication is pending")
        if not allowed:
            self._state = _State.FAILED
            # libzmq sends the ZAP status code ("400") as the reason
            return [encode_error(reason or "400")]
        self.user_id = bytes(user_id)
        return [self._produce_ready()]

    # ---- after the handshake ------------------------------------------------

    def encrypt_frame(self, flags: int, body: bytes) -> bytes:
        """Wrap one frame (ZMTP *flags*: MORE, COMMAND) into a MESSAGE command body."""
        if self._state is not _State.READY:
            raise LocalProtocolError("CURVE: cannot encrypt before the handshake completes")
        short = self._next_nonce()
        plain = b"".join((_TO_CURVE[flags & 7], body))  # body may be any buffer
        return b"".join(
            (
                _MESSAGE,
                short,
                crypto_box_easy_afternm(plain, self._send_prefix + short, self._precom),
            )
        )

    def decrypt_frame(self, body: bytes) -> tuple[int, bytes]:
        """Unwrap a MESSAGE command body into ``(ZMTP flags, frame body)``.

        Raises:
            RemoteProtocolError: not a MESSAGE, too short, a nonce not above the
                last one (a replay), or a box that does not open.
        """
        if self._state is not _State.READY:
            raise LocalProtocolError("CURVE: cannot decrypt before the handshake completes")
        if len(body) < _MESSAGE_MIN_SIZE or body[:8] != _MESSAGE:
            raise RemoteProtocolError("CURVE: malformed MESSAGE")
        short = body[8:16]
        nonce = _U64.unpack(short)[0]
        if nonce <= self._peer_nonce:
            raise RemoteProtocolError(
                f"CURVE: MESSAGE nonce {nonce} is not above the last one ({self._peer_nonce})"
            )
        try:
            plain = crypto_box_open_easy_afternm(body[16:], self._recv_prefix + short, self._precom)
        except CryptoError:
            raise RemoteProtocolError("CURVE: cannot open MESSAGE") from None
        self._peer_nonce = nonce
        return _FROM_CURVE[plain[0]], plain[1:]
