"""ZMTPConnection: one ZMTP 3.x conversation as a state machine, bytes in, events out.

Usage, in the I/O layer::

    conn = ZMTPConnection(SocketType.PUSH, NullMechanism())
    await stream.send_all(conn.data_to_send())        # our greeting
    while True:
        conn.receive_data(await stream.receive_some())
        while (event := conn.next_event()) is not NEED_DATA:
            ...                                         # react to the event
        if out := conn.data_to_send():
            await stream.send_all(out)

All state rules live here; the mechanism object only judges handshake commands.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence

from .._errors import HandshakeError, LocalProtocolError, ProtocolError, RemoteProtocolError
from .._socket_type import SocketType
from ._commands import (
    decode_command_untrusted,
    decode_error_untrusted,
    decode_ping_untrusted,
    encode_command,
    encode_error,
    encode_ping,
    encode_pong,
    get_property,
)
from ._events import (
    NEED_DATA,
    AuthenticationRequested,
    ConnectionClosed,
    Event,
    HandshakeComplete,
    Message,
    NeedData,
    PeerError,
    Ping,
    Pong,
    Subscription,
)
from ._frames import COMMAND, MORE, Buffer, FrameDecoder, encode_frame, encode_messages_into
from ._greeting import (
    GREETING_SIZE,
    check_signature_untrusted,
    decode_greeting_untrusted,
    encode_greeting,
)
from ._mechanism import Mechanism, MechanismStatus

#: socket types that send an Identity property in READY (as libzmq does)
_SENDS_IDENTITY = frozenset({SocketType.REQ, SocketType.DEALER, SocketType.ROUTER})
#: socket types that read subscriptions sent as messages (\x01topic / \x00topic)
_READS_SUBSCRIPTIONS = frozenset({SocketType.PUB, SocketType.XPUB})

#: the largest frame taken before the handshake completes, checked on its header:
#: what an unauthenticated peer can make us buffer. libzmq has no such limit
#: (only maxmsgsize, unlimited by default), and its peers' READY/INITIATE carry
#: their ZMQ_METADATA, certificates even: 8 KiB refused those. 64 KiB holds a
#: few PEM certificates yet keeps a thousand half-open connections to 64 MiB,
#: and is one read of the handshake's 64 KiB receives.
MAX_HANDSHAKE_FRAME = 64 * 1024
#: our own metadata option may take this much, encoded: the rest of the frame is
#: left for Socket-Type, Identity (up to 255 bytes) and the command around them
#: (CURVE's INITIATE adds 257 bytes), so that our peers, triomq or libzmq, take it
MAX_METADATA_SIZE = MAX_HANDSHAKE_FRAME - 1024


class ConnectionState(enum.Enum):
    GREETING = "greeting"
    HANDSHAKE = "handshake"
    AUTHENTICATING = "authenticating"
    ACTIVE = "active"
    CLOSED = "closed"


class ZMTPConnection:
    """One side of a ZMTP 3.x connection.

    Args:
        socket_type: our socket type, announced in READY and checked against the peer's.
        mechanism: the security mechanism state machine (NULL, PLAIN, CURVE).
        routing_id: our Identity property (sent by REQ, DEALER and ROUTER).
        metadata: extra properties to announce (names like ``X-...``).
        maxmsgsize: refuse frames and messages larger than this many bytes.
    """

    def __init__(
        self,
        socket_type: SocketType,
        mechanism: Mechanism,
        *,
        routing_id: bytes = b"",
        metadata: Mapping[str, bytes] | None = None,
        maxmsgsize: int | None = None,
    ) -> None:
        self.socket_type = socket_type
        self.mechanism = mechanism
        self.maxmsgsize = maxmsgsize
        self.state = ConnectionState.GREETING
        self.peer_socket_type: SocketType | None = None
        self.peer_minor = 1
        self.peer_routing_id = b""
        props: dict[str, bytes] = {"Socket-Type": socket_type.value}
        if socket_type in _SENDS_IDENTITY:
            props["Identity"] = routing_id
        props.update(metadata or {})
        mechanism.metadata = props
        self._decoder = FrameDecoder(MAX_HANDSHAKE_FRAME)
        self._decoder.limit_name = "the handshake's frame limit"
        self._out: list[Buffer] = [encode_greeting(mechanism.name, mechanism.as_server)]
        self._parts: list[bytes] = []
        self._msg_size = 0
        self._eof = False
        self._eof_reported = False
        self._reads_subscriptions = socket_type in _READS_SUBSCRIPTIONS
        self._encrypts = False

    # ---- output -------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Bytes the connection wants sent (greeting, handshake commands, ERROR)."""
        if not self._out:
            return b""
        data = b"".join(self._out)
        self._out.clear()
        return data

    def _queue_command(self, body: bytes) -> None:
        if self._encrypts:
            self._out.append(encode_frame(self.mechanism.encrypt_frame(COMMAND, body)))
        else:
            self._out.append(encode_frame(body, COMMAND))

    def _require_active(self) -> None:
        if self.state is not ConnectionState.ACTIVE:
            raise LocalProtocolError(f"cannot send messages in state {self.state.value}")

    def encode_messages_into(self, out: list[Buffer], messages: Sequence[Sequence[Buffer]]) -> None:
        """Append the wire form of each message to *out* (bodies are not copied when unencrypted)."""
        self._require_active()
        if not self._encrypts:
            encode_messages_into(out, messages)
            return
        encrypt = self.mechanism.encrypt_frame
        for frames in messages:
            last = len(frames) - 1
            for i, body in enumerate(frames):
                out.append(encode_frame(encrypt(MORE if i < last else 0, bytes(body))))

    def encode_message(self, frames: Sequence[Buffer]) -> bytes:
        """One message's wire form."""
        out: list[Buffer] = []
        self.encode_messages_into(out, (frames,))
        return b"".join(out)

    def encode_subscription(self, topic: bytes, subscribe: bool) -> bytes:
        """A subscription or cancel, in the form the peer's ZMTP version expects."""
        self._require_active()
        if self.peer_minor >= 1:
            body = encode_command(b"SUBSCRIBE" if subscribe else b"CANCEL", topic)
            if self._encrypts:
                return encode_frame(self.mechanism.encrypt_frame(COMMAND, body))
            return encode_frame(body, COMMAND)
        return self.encode_message([(b"\x01" if subscribe else b"\x00") + topic])

    def encode_ping(self, ttl: float, context: bytes = b"") -> bytes:
        """A PING with *ttl* in seconds (sent as deciseconds)."""
        self._require_active()
        self._queue_command(encode_ping(int(ttl * 10), context))
        return self.data_to_send()

    def encode_pong(self, context: bytes) -> bytes:
        self._require_active()
        self._queue_command(encode_pong(context))
        return self.data_to_send()

    def encode_error(self, reason: str) -> bytes:
        """An ERROR command (unencrypted, as libzmq sends it); the connection is closed after it."""
        data = b""
        if self.state is not ConnectionState.GREETING:
            data = encode_frame(encode_error(reason), COMMAND)
        self.state = ConnectionState.CLOSED
        return data

    def send_failed(self) -> None:
        """The I/O layer could not send what we gave it: the connection is dead."""
        self.state = ConnectionState.CLOSED

    # ---- input --------------------------------------------------------------

    def receive_data(self, data: Buffer) -> None:
        """Bytes from the peer; ``b""`` means the peer closed the stream."""
        if not data:
            self._eof = True
        else:
            self._decoder.feed(data)

    def authentication_result(self, allowed: bool, *, user_id: bytes = b"", reason: str = "") -> None:
        """The authenticator's answer after an :class:`AuthenticationRequested` event."""
        if self.state is not ConnectionState.AUTHENTICATING:
            raise LocalProtocolError("no authentication is pending")
        for cmd in self.mechanism.authentication_result(allowed, user_id=user_id, reason=reason):
            self._queue_command(cmd)
        if not allowed:
            self.state = ConnectionState.CLOSED
        else:
            self.state = ConnectionState.HANDSHAKE

    def next_event(self) -> Event | NeedData:
        """The next event, or NEED_DATA.

        Raises:
            RemoteProtocolError, HandshakeError: the peer broke the protocol or
                failed the handshake. An ERROR command for the peer is then
                waiting in :meth:`data_to_send`, and the connection is closed.
        """
        try:
            return self._next_event()
        except ProtocolError as exc:
            self._fail(exc.reason)
            raise
        except HandshakeError as exc:
            self._fail(str(exc))
            raise

    def _fail(self, reason: str) -> None:
        if self.state in (ConnectionState.HANDSHAKE, ConnectionState.AUTHENTICATING):
            self._out.append(encode_frame(encode_error(reason), COMMAND))
        self.state = ConnectionState.CLOSED

    def _next_event(self) -> Event | NeedData:
        state = self.state
        if state is ConnectionState.ACTIVE:
            return self._next_active_event()
        if state is ConnectionState.GREETING:
            event = self._read_greeting()
            if event is not None:
                return event
            if self.state is ConnectionState.GREETING:
                return self._at_eof()
        if self.state is ConnectionState.HANDSHAKE:
            return self._read_handshake()
        if self.state is ConnectionState.ACTIVE:
            return self._next_active_event()
        if self.state is ConnectionState.AUTHENTICATING:
            return NEED_DATA
        return self._at_eof()

    def _at_eof(self) -> ConnectionClosed | NeedData:
        if self._eof and not self._eof_reported:
            # reported once; after it the connection only says NEED_DATA
            self._eof_reported = True
            self.state = ConnectionState.CLOSED
            return ConnectionClosed()
        return NEED_DATA

    def _read_greeting(self) -> Event | None:
        decoder = self._decoder
        check_signature_untrusted(decoder.peek()[:GREETING_SIZE])
        raw = decoder.take(GREETING_SIZE)
        if raw is None:
            return None
        greeting = decode_greeting_untrusted(raw)
        self.peer_minor = greeting.minor if greeting.major == 3 else 1
        self.state = ConnectionState.HANDSHAKE
        if greeting.mechanism != self.mechanism.name:
            raise HandshakeError(
                f"mechanism mismatch: we use {self.mechanism.name.decode()}, "
                f"the peer {greeting.mechanism.decode('ascii', 'replace')}"
            )
        for cmd in self.mechanism.start():
            self._queue_command(cmd)
        return None

    def _read_handshake(self) -> Event | NeedData:
        mech = self.mechanism
        if mech.status is MechanismStatus.READY:
            return self._handshake_done()
        if mech.status is MechanismStatus.AWAITING_AUTH:
            # asking before the peer's first command (NULL connecting with an authenticator)
            return self._authentication_requested()
        while True:
            frame = self._decoder.next_frame()
            if frame is None:
                return self._at_eof()
            flags, body = frame
            if not flags & COMMAND or flags & MORE:
                raise RemoteProtocolError("message frame before the handshake completed")
            if body[:5] == b"\x5eRROR":
                # libzmq 4.3's PLAIN writes ERROR's name as "\x05ERROR" in C: one byte
                # 0x5E, then "RROR" (a hex escape eats the E). Read it as the ERROR it is.
                self.state = ConnectionState.CLOSED
                return PeerError(decode_error_untrusted(body[5:]))
            name, data = decode_command_untrusted(body)
            if name == b"ERROR":
                self.state = ConnectionState.CLOSED
                return PeerError(decode_error_untrusted(data))
            for cmd in mech.receive_command(body):
                self._queue_command(cmd)
            status: MechanismStatus = mech.status  # (receive_command moves it on)
            if status is MechanismStatus.AWAITING_AUTH:
                return self._authentication_requested()
            if status is MechanismStatus.READY:
                return self._handshake_done()

    def _authentication_requested(self) -> AuthenticationRequested:
        credentials = self.mechanism.credentials
        assert credentials is not None
        self.state = ConnectionState.AUTHENTICATING
        return AuthenticationRequested(credentials)

    def announced_routing_id(self) -> bytes:
        """The Identity the peer announced (b"" if none), looked up ignoring case
        (RFC 37): the one value both the authenticator and the routing get, so a
        peer cannot show one a different id from the other."""
        return get_property(self.mechanism.peer_metadata, "Identity") or b""

    def _handshake_done(self) -> HandshakeComplete:
        mech = self.mechanism
        props = mech.peer_metadata
        raw_type = get_property(props, "Socket-Type")
        if raw_type is None:
            raise HandshakeError("peer did not announce its Socket-Type")
        peer_type = SocketType.from_wire(raw_type)
        if peer_type is None:
            raise HandshakeError(f"unknown peer socket type {raw_type!r}")
        if not self.socket_type.compatible_with(peer_type):
            raise HandshakeError(
                f"incompatible socket types: {self.socket_type.name} cannot talk to {peer_type.name}"
            )
        routing_id = self.announced_routing_id()
        if len(routing_id) > 255:
            raise HandshakeError("peer routing id is longer than 255 bytes")
        self.peer_socket_type = peer_type
        self.peer_routing_id = routing_id
        self._encrypts = mech.encrypts
        self._decoder.max_frame_size = self._frame_limit()
        self._decoder.limit_name = "maxmsgsize"
        self.state = ConnectionState.ACTIVE
        return HandshakeComplete(
            peer_socket_type=peer_type,
            peer_minor=self.peer_minor,
            peer_routing_id=routing_id,
            peer_metadata=dict(props),
            user_id=mech.user_id,
        )

    def _frame_limit(self) -> int | None:
        if self.maxmsgsize is None:
            return None
        if self._encrypts:
            # a MESSAGE command adds its name, nonce, flags and MAC around the frame
            return self.maxmsgsize + 64
        return self.maxmsgsize

    def bytes_wanted(self) -> int:
        """Bytes still missing from a large frame that is arriving (0 if none):
        a hint for how much the I/O layer could usefully read at once."""
        return self._decoder.wanted

    def gather_buffer(self) -> memoryview | None:
        """Memory to read the rest of a large arriving frame into, or None: an
        I/O layer that can read into memory reads there, then calls :meth:`gathered`
        (instead of :meth:`receive_data`). Saves a copy and fresh memory per frame."""
        if self._eof:
            return None
        return self._decoder.gather_buffer()

    def gathered(self, n: int) -> None:
        """*n* bytes were read into :meth:`gather_buffer`."""
        self._decoder.gathered(n)

    def read_messages(self, out: list[list[bytes]], limit: int) -> bool:
        """Decode up to *limit* whole data messages into *out*, without events.

        A fast path for the I/O layer, equivalent to taking ``Message`` events
        from :meth:`next_event`; it stops at anything else (commands, errors),
        which ``next_event`` then reports. Does nothing on encrypted
        connections or sockets that read subscriptions from messages.

        Returns True when nothing received is left to decode: ``next_event``
        would say NEED_DATA, and need not be asked. False says nothing.
        """
        if (
            self.state is not ConnectionState.ACTIVE
            or self._encrypts
            or self._reads_subscriptions
        ):
            return False
        decoder = self._decoder
        self._parts, self._msg_size = decoder.take_messages(
            out, self._parts, limit, self.maxmsgsize, self._msg_size
        )
        return decoder.drained() and not self._eof

    def _next_active_event(self) -> Event | NeedData:
        decoder = self._decoder
        parts = self._parts
        encrypts = self._encrypts
        while True:
            frame = decoder.next_frame()
            if frame is None:
                return self._at_eof()
            flags, body = frame
            if encrypts:
                # every frame is a MESSAGE command, whatever its wire flags (libzmq sends
                # flags 0); the real MORE/COMMAND flags are inside the box
                flags, body = self.mechanism.decrypt_frame(body)
            if flags & COMMAND:
                event = self._command(*decode_command_untrusted(body))
                if event is not None:
                    return event
                continue
            if self.maxmsgsize is not None:
                self._msg_size += len(body)
                if self._msg_size > self.maxmsgsize:
                    raise RemoteProtocolError(
                        f"message exceeds maxmsgsize {self.maxmsgsize}"
                    )
            if flags & MORE:
                parts.append(body)
                continue
            if parts:
                parts.append(body)
                frames = parts
                self._parts = parts = []
            else:
                frames = [body]
            self._msg_size = 0
            if (
                self._reads_subscriptions
                and len(frames) == 1
                and body
                and body[0] in (0, 1)
            ):
                return Subscription(body[1:], body[0] == 1)
            return Message(frames)

    def _command(self, name: bytes, data: bytes) -> Event | None:
        # a command may come between the frames of a multipart message: libzmq
        # 4.3 sends a PING or PONG there when its timer or a peer's PING falls
        # while it writes a large message. It is taken as it comes, and the
        # message goes on (as libzmq reads it)
        if name == b"PING":
            ttl, context = decode_ping_untrusted(data)
            return Ping(ttl / 10, context)
        if name == b"PONG":
            return Pong(data[:16])
        if name == b"SUBSCRIBE":
            return Subscription(data, True)
        if name == b"CANCEL":
            return Subscription(data, False)
        if name == b"ERROR":
            self.state = ConnectionState.CLOSED
            return PeerError(decode_error_untrusted(data))
        # libzmq ignores unknown commands after the handshake; so do we
        return None
