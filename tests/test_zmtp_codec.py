"""The sans-I/O ZMTP layer: greeting, frames, commands, metadata, the connection state machine."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from triomq._errors import HandshakeError, ProtocolError, RemoteProtocolError, TriomqError
from triomq._mechanisms._null import NullMechanism
from triomq._socket_type import SocketType
from triomq._zmtp._commands import (
    decode_metadata_untrusted,
    encode_command,
    encode_metadata,
    get_property,
)
from triomq._zmtp._connection import MAX_HANDSHAKE_FRAME, ConnectionState, ZMTPConnection
from triomq._zmtp._events import (
    NEED_DATA,
    AuthenticationRequested,
    ConnectionClosed,
    HandshakeComplete,
    Message,
    PeerError,
    Ping,
    Pong,
    Subscription,
)
from triomq._zmtp._frames import (
    COMMAND,
    MORE,
    SCRATCH_MAX,
    FrameDecoder,
    encode_frame,
    encode_message,
    encode_messages_into,
    frame_header,
)
from triomq._zmtp._greeting import GREETING_SIZE, decode_greeting_untrusted, encode_greeting
from triomq._zmtp._mechanism import Credentials

frames_st = st.lists(st.binary(max_size=600), min_size=1, max_size=6)


def events(conn: ZMTPConnection) -> list[object]:
    out = []
    while (event := conn.next_event()) is not NEED_DATA:
        out.append(event)
    return out


def pump(a: ZMTPConnection, b: ZMTPConnection) -> tuple[list[object], list[object]]:
    """Shuttle bytes both ways until both are quiet; the events each side saw."""
    seen_a: list[object] = []
    seen_b: list[object] = []
    for _ in range(10):
        moved = False
        if out := a.data_to_send():
            b.receive_data(out)
            moved = True
        seen_b += events(b)
        if out := b.data_to_send():
            a.receive_data(out)
            moved = True
        seen_a += events(a)
        if not moved:
            break
    return seen_a, seen_b


def connected_pair(a_type: SocketType = SocketType.PUSH, b_type: SocketType = SocketType.PULL):
    a = ZMTPConnection(a_type, NullMechanism(), routing_id=b"")
    b = ZMTPConnection(b_type, NullMechanism())
    pump(a, b)
    assert a.state is ConnectionState.ACTIVE and b.state is ConnectionState.ACTIVE
    return a, b


# ---------------------------------------------------------------- greeting


def test_greeting_layout_matches_libzmq() -> None:
    g = encode_greeting(b"NULL", False)
    assert len(g) == GREETING_SIZE
    assert g[:10] == b"\xff\x00\x00\x00\x00\x00\x00\x00\x01\x7f"
    assert g[10:12] == b"\x03\x01"
    assert g[12:32] == b"NULL" + bytes(16)
    assert g[32] == 0 and g[33:] == bytes(31)
    decoded = decode_greeting_untrusted(encode_greeting(b"CURVE", True))
    assert (decoded.major, decoded.minor, decoded.mechanism, decoded.as_server) == (3, 1, b"CURVE", True)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda g: b"\x00" + g[1:],  # bad signature start
        lambda g: g[:9] + b"\x00" + g[10:],  # bad signature end
        lambda g: g[:10] + b"\x02" + g[11:],  # ZMTP 2.0
        lambda g: g[:12] + b"null" + g[16:],  # lower-case mechanism
        lambda g: g[:32] + b"\x05" + g[33:],  # bad as-server
    ],
)
def test_bad_greeting_is_a_protocol_error(mutate) -> None:  # type: ignore[no-untyped-def]
    conn = ZMTPConnection(SocketType.PULL, NullMechanism())
    conn.receive_data(mutate(encode_greeting(b"NULL", False)))
    with pytest.raises(RemoteProtocolError):
        conn.next_event()
    assert conn.state is ConnectionState.CLOSED


def test_bad_signature_detected_from_the_first_byte() -> None:
    conn = ZMTPConnection(SocketType.PULL, NullMechanism())
    conn.receive_data(b"GET / HTTP/1.1\r\n")
    with pytest.raises(RemoteProtocolError, match="signature"):
        conn.next_event()


def test_mechanism_mismatch_is_refused_with_error_command() -> None:
    conn = ZMTPConnection(SocketType.PULL, NullMechanism())
    conn.data_to_send()
    conn.receive_data(encode_greeting(b"PLAIN", True))
    with pytest.raises(HandshakeError, match="mechanism mismatch"):
        conn.next_event()
    assert b"\x05ERROR" in conn.data_to_send()


# ---------------------------------------------------------------- frames


@given(frames_st)
def test_message_round_trip_through_any_split(frames: list[bytes]) -> None:
    data = encode_message(frames)
    for cut in sorted({0, 1, 2, len(data) // 2, max(len(data) - 1, 0), len(data)}):
        dec = FrameDecoder()
        dec.feed(data[:cut])
        got = []
        while (f := dec.next_frame()) is not None:
            got.append(f)
        dec.feed(data[cut:])
        while (f := dec.next_frame()) is not None:
            got.append(f)
        assert [body for _, body in got] == frames
        assert [bool(flags & MORE) for flags, _ in got] == [True] * (len(frames) - 1) + [False]


@pytest.mark.parametrize("size", [0, 1, 255, 256, 70000])
def test_short_and_long_frames(size: int) -> None:
    frame = encode_frame(b"x" * size)
    if size < 256:
        assert frame[:2] == bytes((0, size))
    else:
        assert frame[0] == 0x02 and int.from_bytes(frame[1:9], "big") == size
    dec = FrameDecoder()
    for i in range(0, len(frame), 7):  # byte dribble
        dec.feed(frame[i : i + 7])
    assert dec.next_frame() == (0, b"x" * size)


def test_oversized_frame_rejected_before_its_body_arrives() -> None:
    dec = FrameDecoder(max_frame_size=1000)
    dec.feed(b"\x02" + (10**12).to_bytes(8, "big"))
    with pytest.raises(RemoteProtocolError, match="exceeds maxmsgsize"):
        dec.next_frame()
    assert dec.buffered == 9  # nothing of the announced body was buffered


def test_invalid_flags_rejected() -> None:
    dec = FrameDecoder()
    dec.feed(b"\x08\x00")
    with pytest.raises(RemoteProtocolError, match="invalid flags"):
        dec.next_frame()


def test_metadata_round_trip_and_case_insensitive_lookup() -> None:
    props = {"Socket-Type": b"REQ", "Identity": b"", "X-Big": b"v" * 300}
    raw = encode_metadata(props)
    # libzmq's REQ READY, as captured on the wire
    assert encode_command(b"READY", encode_metadata({"Socket-Type": b"REQ", "Identity": b""})) == (
        b"\x05READY\x0bSocket-Type\x00\x00\x00\x03REQ\x08Identity\x00\x00\x00\x00"
    )
    decoded = decode_metadata_untrusted(raw)
    assert decoded == props
    assert get_property(decoded, "socket-type") == b"REQ"


def test_metadata_with_a_name_twice_is_refused_whatever_its_case() -> None:
    """Names compare ignoring case (RFC 37): "Identity" then "identity" would
    route by one and show the other, so the peer is refused (libzmq sends each
    name once)."""
    raw = encode_metadata({"Socket-Type": b"DEALER", "Identity": b"A"}) + encode_metadata(
        {"identity": b"B"}
    )
    with pytest.raises(RemoteProtocolError, match="'identity' given twice"):
        decode_metadata_untrusted(raw)


@given(st.binary(max_size=200))
def test_metadata_garbage_is_a_protocol_error_or_parses(data: bytes) -> None:
    try:
        decode_metadata_untrusted(data)
    except RemoteProtocolError:
        pass


# ---------------------------------------------------------------- connection


def test_null_handshake_and_messages() -> None:
    a, b = connected_pair(SocketType.DEALER, SocketType.ROUTER)
    assert a.peer_socket_type is SocketType.ROUTER
    b.receive_data(a.encode_message([b"", b"hello", b"x" * 300]))
    assert events(b) == [Message([b"", b"hello", b"x" * 300])]


def test_handshake_complete_reports_peer_identity() -> None:
    a = ZMTPConnection(SocketType.DEALER, NullMechanism(), routing_id=b"me")
    b = ZMTPConnection(SocketType.ROUTER, NullMechanism())
    _, (hs,) = pump(a, b)
    assert isinstance(hs, HandshakeComplete)
    assert hs.peer_routing_id == b"me" and hs.peer_socket_type is SocketType.DEALER
    assert hs.peer_minor == 1


def test_null_with_an_authenticator_on_both_sides_completes() -> None:
    """The connecting side asks at once (as libzmq does), the accepting side once
    the peer's READY is in: neither waits for the other's READY before its own."""
    dialer = ZMTPConnection(
        SocketType.DEALER,
        NullMechanism(as_server=True, authenticate=True, ask_at_once=True),
        routing_id=b"me",
    )
    acceptor = ZMTPConnection(SocketType.ROUTER, NullMechanism(as_server=True, authenticate=True))
    seen_dialer, seen_acceptor = pump(dialer, acceptor)
    # the dialer asked before any READY: it knows no peer Identity yet
    assert seen_dialer == [AuthenticationRequested(Credentials(mechanism="NULL"))]
    assert dialer.announced_routing_id() == b""
    assert seen_acceptor == []  # and holds its READY until its own answer
    dialer.authentication_result(True, user_id=b"server")
    seen_dialer, seen_acceptor = pump(dialer, acceptor)
    assert seen_dialer == []
    # the acceptor judges with the Identity the dialer announced
    assert seen_acceptor == [AuthenticationRequested(Credentials(mechanism="NULL"))]
    assert acceptor.announced_routing_id() == b"me"
    acceptor.authentication_result(True, user_id=b"client")
    seen_dialer, seen_acceptor = pump(dialer, acceptor)
    (done_dialer,) = seen_dialer
    (done_acceptor,) = seen_acceptor
    assert isinstance(done_dialer, HandshakeComplete) and done_dialer.user_id == b"server"
    assert isinstance(done_acceptor, HandshakeComplete) and done_acceptor.user_id == b"client"
    assert done_acceptor.peer_routing_id == b"me"


def test_null_dialer_that_refuses_never_sends_ready() -> None:
    dialer = ZMTPConnection(
        SocketType.PUSH, NullMechanism(as_server=True, authenticate=True, ask_at_once=True)
    )
    acceptor = ZMTPConnection(SocketType.PULL, NullMechanism())
    seen_dialer, _ = pump(dialer, acceptor)
    assert seen_dialer == [AuthenticationRequested(Credentials(mechanism="NULL"))]
    dialer.authentication_result(False, reason="400")
    assert dialer.state is ConnectionState.CLOSED
    _, seen_acceptor = pump(dialer, acceptor)
    assert seen_acceptor == [PeerError("400")]


def test_handshake_takes_large_metadata_and_refuses_larger_frames_at_their_header() -> None:
    # libzmq puts its ZMQ_METADATA in READY, unlimited: a certificate or two fits
    cert = b"c" * 60_000
    a = ZMTPConnection(SocketType.PUSH, NullMechanism(), metadata={"X-Cert": cert})
    b = ZMTPConnection(SocketType.PULL, NullMechanism())
    _, (done,) = pump(a, b)
    assert isinstance(done, HandshakeComplete) and done.peer_metadata["X-Cert"] == cert
    c = ZMTPConnection(SocketType.PULL, NullMechanism())
    c.receive_data(encode_greeting(b"NULL", False) + frame_header(MAX_HANDSHAKE_FRAME + 1, COMMAND))
    with pytest.raises(RemoteProtocolError, match="exceeds the handshake's frame limit 65536"):
        events(c)


def test_incompatible_socket_types_refused() -> None:
    a = ZMTPConnection(SocketType.PUB, NullMechanism())
    b = ZMTPConnection(SocketType.PULL, NullMechanism())
    with pytest.raises(HandshakeError, match="incompatible socket types: PUB cannot talk to PULL"):
        pump(a, b)
    assert a.state is ConnectionState.CLOSED
    assert b"\x05ERROR" in a.data_to_send()


def test_message_before_handshake_refused() -> None:
    a = ZMTPConnection(SocketType.PUSH, NullMechanism())
    b = ZMTPConnection(SocketType.PULL, NullMechanism())
    b.receive_data(a.data_to_send()[:GREETING_SIZE] + encode_message([b"sneaky"]))
    with pytest.raises(RemoteProtocolError, match="before the handshake"):
        events(b)


def test_peer_error_command_during_handshake() -> None:
    b = ZMTPConnection(SocketType.PULL, NullMechanism())
    b.receive_data(encode_greeting(b"NULL", False) + encode_frame(b"\x05ERROR\x03bad", COMMAND))
    assert events(b) == [PeerError("bad")]


def test_subscriptions_both_wire_forms() -> None:
    pub, sub = connected_pair(SocketType.PUB, SocketType.SUB)
    # 3.1 peer: SUBSCRIBE command
    wire = sub.encode_subscription(b"abc", True)
    assert wire == b"\x04\x0d\x09SUBSCRIBEabc"
    pub.receive_data(wire + sub.encode_subscription(b"abc", False))
    assert events(pub) == [Subscription(b"abc", True), Subscription(b"abc", False)]
    # a 3.0 peer gets (and sends) the message form
    sub.peer_minor = 0
    wire = sub.encode_subscription(b"abc", True)
    assert wire == b"\x00\x04\x01abc"
    pub.receive_data(wire + encode_message([b"\x00abc"]))
    assert events(pub) == [Subscription(b"abc", True), Subscription(b"abc", False)]


def test_ping_pong_and_unknown_commands() -> None:
    a, b = connected_pair()
    b.receive_data(a.encode_ping(1.0, b"ctx") + encode_frame(b"\x05HELLOworld", COMMAND))
    assert events(b) == [Ping(1.0, b"ctx")]
    a.receive_data(b.encode_pong(b"ctx"))
    assert events(a) == [Pong(b"ctx")]


def test_commands_between_the_frames_of_a_message() -> None:
    """libzmq 4.3 writes a PING or PONG between the frames of a multipart message
    when its heartbeat timer (or a peer's PING) falls while it writes a large one:
    the command is taken and the message goes on, by either decoding path."""
    stream = (
        encode_frame(b"a", MORE)
        + encode_frame(b"\x04PING\x00\x0actx", COMMAND)
        + encode_frame(b"b" * 300, MORE)
        + encode_frame(b"\x04PONG", COMMAND)
        + encode_frame(b"\x05HELLO", COMMAND)
        + encode_frame(b"c")
    )
    _, b = connected_pair()
    b.receive_data(stream)
    assert events(b) == [Ping(1.0, b"ctx"), Pong(b""), Message([b"a", b"b" * 300, b"c"])]
    _, b = connected_pair()
    b.receive_data(stream)
    out: list[list[bytes]] = []
    seen: list[object] = []
    while True:
        b.read_messages(out, 10)
        event = b.next_event()
        if event is NEED_DATA:
            break
        seen.append(event)
    assert out + [e.frames for e in seen if isinstance(e, Message)] == [[b"a", b"b" * 300, b"c"]]
    assert [e for e in seen if not isinstance(e, Message)] == [Ping(1.0, b"ctx"), Pong(b"")]
    assert b.state is ConnectionState.ACTIVE


def test_ping_context_over_16_bytes_is_cut_as_libzmq_does() -> None:
    """libzmq 4.3 answers a PING whose context is over 16 bytes with its first
    16 and keeps the connection; a PING without its TTL is malformed."""
    _, b = connected_pair()
    b.receive_data(encode_frame(b"\x04PING\x00\x0a" + b"c" * 16 + b"d" * 4, COMMAND))
    b.receive_data(encode_frame(b"after"))
    assert events(b) == [Ping(1.0, b"c" * 16), Message([b"after"])]
    b.receive_data(encode_frame(b"\x04PING\x00", COMMAND))
    with pytest.raises(RemoteProtocolError, match="malformed PING"):
        events(b)


def test_eof_gives_connection_closed() -> None:
    _, b = connected_pair()
    b.receive_data(b"")
    assert events(b) == [ConnectionClosed()]
    assert b.next_event() is NEED_DATA  # reported once


def test_maxmsgsize_counts_whole_message() -> None:
    a = ZMTPConnection(SocketType.PUSH, NullMechanism())
    b = ZMTPConnection(SocketType.PULL, NullMechanism(), maxmsgsize=100)
    pump(a, b)
    b.receive_data(a.encode_message([b"x" * 60, b"y" * 60]))
    with pytest.raises(RemoteProtocolError, match="maxmsgsize"):
        events(b)



def test_bulk_decoding_counts_short_frames_against_maxmsgsize() -> None:
    """Frames under 256 bytes each can still add up past maxmsgsize: the bulk
    path hands over the messages before, and leaves that one to next_event."""
    a = ZMTPConnection(SocketType.PUSH, NullMechanism())
    b = ZMTPConnection(SocketType.PULL, NullMechanism(), maxmsgsize=300)
    pump(a, b)
    b.receive_data(b"".join(a.encode_message(m) for m in ([b"ok"], [b"x" * 200, b"y" * 200], [b"after"])))
    got: list[list[bytes]] = []
    b.read_messages(got, 10)
    assert got == [[b"ok"]]
    with pytest.raises(RemoteProtocolError, match="maxmsgsize"):
        b.next_event()


def test_bulk_decoding_counts_a_gathered_large_frame_against_maxmsgsize() -> None:
    """A large frame that goes over maxmsgsize only with the frames before it,
    and arrives in pieces, is gathered by next_frame (which checks one frame's
    size); taking it afterwards, the bulk path counts the whole message and
    leaves it to next_event, which refuses it."""
    a = ZMTPConnection(SocketType.PUSH, NullMechanism())
    b = ZMTPConnection(SocketType.PULL, NullMechanism(), maxmsgsize=100_000)
    pump(a, b)
    wire = a.encode_message([b"a" * 60_000, b"b" * 70_000])
    cut = 9 + 60_000 + 9 + 100  # the second frame only begun
    got: list[list[bytes]] = []
    with pytest.raises(RemoteProtocolError, match="maxmsgsize"):
        for piece in (wire[:cut], wire[cut:]):
            b.receive_data(piece)
            while not b.read_messages(got, 10):
                event = b.next_event()
                if event is NEED_DATA:
                    break
                assert isinstance(event, Message)
                got.append(event.frames)
    assert got == []

@settings(max_examples=300)
@given(st.binary(max_size=300), st.integers(min_value=0, max_value=3))
def test_garbage_after_greeting_gives_only_protocol_errors(garbage: bytes, skip: int) -> None:
    conn = ZMTPConnection(SocketType.PULL, NullMechanism(), maxmsgsize=10_000)
    good = encode_greeting(b"NULL", False) + encode_frame(
        encode_command(b"READY", encode_metadata({"Socket-Type": b"PUSH"})), COMMAND
    )
    conn.receive_data(good[: len(good) - skip * 5] + garbage)
    try:
        for _ in range(1000):
            if conn.next_event() is NEED_DATA:
                break
    except (ProtocolError, HandshakeError):
        assert conn.state is ConnectionState.CLOSED


@settings(max_examples=300)
@given(st.binary(min_size=1, max_size=200))
def test_random_bytes_never_raise_unexpected_errors(data: bytes) -> None:
    conn = ZMTPConnection(SocketType.ROUTER, NullMechanism(), maxmsgsize=1000)
    conn.receive_data(data)
    try:
        while conn.next_event() is not NEED_DATA:
            pass
    except TriomqError:
        pass


def _decode_in_pieces(messages: list[list[bytes]], data, limits: st.SearchStrategy[int], cuts: int) -> None:  # type: ignore[no-untyped-def]
    """Feed *messages*' wire form in random pieces; after each, take what
    read_messages hands over (at most the limit drawn for the call), then one
    next_event, as the reader does: the same messages come out, in order."""
    a, b = connected_pair()
    wire = b"".join(a.encode_message(m) for m in messages)
    splits = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=cuts)))
    got: list[list[bytes]] = []
    last = 0
    for cut in [*splits, len(wire)]:
        b.receive_data(wire[last:cut]) if cut > last else None
        last = max(last, cut)
        while True:
            before = len(got)
            limit = data.draw(limits)
            b.read_messages(got, limit)
            assert len(got) - before <= limit
            event = b.next_event()
            if event is NEED_DATA:
                break
            assert isinstance(event, Message)
            got.append(event.frames)
    assert got == messages


@settings(max_examples=200)
@given(st.lists(frames_st, min_size=1, max_size=8), st.data())
def test_bulk_message_decoding_matches_event_decoding(messages: list[list[bytes]], data) -> None:  # type: ignore[no-untyped-def]
    """read_messages (the fast path) and next_event see the same messages, for any split."""
    _decode_in_pieces(messages, data, st.just(3), cuts=4)


#: mostly runs of single short frames (the decoder's fast path), broken up by
#: multipart, long and empty messages
short_runs_st = st.lists(
    st.one_of(
        st.lists(st.binary(max_size=255), min_size=1, max_size=1),
        st.lists(st.binary(max_size=255), min_size=1, max_size=1),
        st.lists(st.binary(max_size=255), min_size=1, max_size=1),
        frames_st,
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=200)
@given(short_runs_st)
def test_batch_encoding_matches_frame_by_frame(messages: list[list[bytes]]) -> None:
    """Batches take a bulk path when every message is one short frame, and a
    loop otherwise: both write what frame_header and the bodies spell out."""
    expected = b"".join(
        frame_header(len(body), MORE if i < len(m) - 1 else 0) + body for m in messages for i, body in enumerate(m)
    )
    singles = [m for m in messages if len(m) == 1 and len(m[0]) < 256]
    for batch in (messages, singles, singles * 20):
        out: list[bytes | bytearray | memoryview] = [b"before"]
        encode_messages_into(out, batch)
        assert out[0] == b"before"
        want = expected if batch is messages else b"".join(frame_header(len(m[0])) + m[0] for m in batch)
        assert b"".join(out[1:]) == want


@settings(max_examples=200)
@given(short_runs_st, st.data())
def test_bulk_decoding_of_short_single_frames_matches_event_decoding(messages: list[list[bytes]], data) -> None:  # type: ignore[no-untyped-def]
    """Runs of short one-frame messages, any split, any limit per call: the
    fast path hands over exactly what next_event would, never more than asked."""
    _decode_in_pieces(messages, data, st.integers(0, 50), cuts=6)


@settings(max_examples=200)
@given(st.lists(frames_st, min_size=1, max_size=8), st.integers(0, 1200), st.data())
def test_bulk_decoding_enforces_maxmsgsize_like_event_decoding(  # type: ignore[no-untyped-def]
    messages: list[list[bytes]], limit: int, data
) -> None:
    """With a maxmsgsize, the fast path hands the same messages over and leaves
    the first oversized one to next_event, which refuses it, as the event path does."""

    def decode(bulk: bool) -> tuple[list[list[bytes]], str | None]:
        a = ZMTPConnection(SocketType.PUSH, NullMechanism())
        b = ZMTPConnection(SocketType.PULL, NullMechanism(), maxmsgsize=limit)
        pump(a, b)
        got: list[list[bytes]] = []
        b.receive_data(b"".join(a.encode_message(m) for m in messages))
        try:
            while True:
                if bulk:
                    b.read_messages(got, data.draw(st.integers(1, 4)))
                event = b.next_event()
                if event is NEED_DATA:
                    return got, None
                assert isinstance(event, Message)
                got.append(event.frames)
        except RemoteProtocolError as exc:
            return got, str(exc)

    expected = decode(bulk=False)
    assert decode(bulk=True) == expected
    fitting = [m for m in messages[: len(expected[0])]]
    assert expected[0] == fitting
    assert all(sum(map(len, m)) <= limit for m in fitting)


def test_bulk_decoding_gathers_a_large_frame_in_pieces() -> None:
    a, b = connected_pair()
    big = bytes(range(256)) * 4096  # 1 MiB
    wire = a.encode_message([b"head", big])
    got: list[list[bytes]] = []
    for i in range(0, len(wire), 65536):
        b.receive_data(wire[i : i + 65536])
        b.read_messages(got, 10)
    assert got == [[b"head", big]]


def test_bulk_decoding_leaves_invalid_frames_to_next_event() -> None:
    a, b = connected_pair()
    b.receive_data(a.encode_message([b"ok"]) + b"\x02" + (1 << 63).to_bytes(8, "big"))
    got: list[list[bytes]] = []
    b.read_messages(got, 10)
    assert got == [[b"ok"]]
    with pytest.raises(RemoteProtocolError, match="top bit"):
        b.next_event()


# ---------------------------------------------------------------- large frames read into a buffer


def _decode_with_gathering(wire: bytes, cuts: list[int], use_buffer: list[bool]) -> list[tuple[int, bytes]]:
    """Decode *wire* read in pieces, as the session does: while a large frame is
    gathered, a read goes into gather_buffer() when *use_buffer* says so."""
    dec = FrameDecoder()
    frames: list[tuple[int, bytes]] = []
    pos = 0
    step = 0
    while pos < len(wire) or dec.wanted:
        cut = cuts[step % len(cuts)]
        view = dec.gather_buffer() if use_buffer[step % len(use_buffer)] else None
        if view is not None:
            n = min(len(view), cut, len(wire) - pos)
            view[:n] = wire[pos : pos + n]
            dec.gathered(n)
        else:
            n = min(cut, len(wire) - pos)
            dec.feed(wire[pos : pos + n])
        pos += n
        step += 1
        while (frame := dec.next_frame()) is not None:
            frames.append(frame)
        if n == 0:
            break
    return frames


@settings(max_examples=60, deadline=None)  # (a megabyte read 64 bytes at a time is slow)
@given(
    st.lists(st.sampled_from([10, 255, 70_000, 300_000]), min_size=1, max_size=5),
    st.lists(st.integers(64, 200_000), min_size=1, max_size=6),
    st.lists(st.booleans(), min_size=1, max_size=4),
)
def test_large_frames_read_into_the_gather_buffer_decode_the_same(
    sizes: list[int], cuts: list[int], use_buffer: list[bool]
) -> None:
    bodies = [bytes([i]) * n for i, n in enumerate(sizes)]
    wire = b"".join(encode_frame(b, MORE if i < len(bodies) - 1 else 0) for i, b in enumerate(bodies))
    frames = _decode_with_gathering(wire, cuts, use_buffer)
    assert [body for _, body in frames] == bodies
    assert [flags for flags, _ in frames] == [MORE] * (len(bodies) - 1) + [0]


def test_gather_buffer_only_while_a_large_frame_is_incomplete() -> None:
    dec = FrameDecoder()
    assert dec.gather_buffer() is None
    body = bytes(range(256)) * 1024  # 256 KiB
    wire = encode_frame(body)
    dec.feed(wire[:1000])
    assert dec.next_frame() is None
    view = dec.gather_buffer()
    assert view is not None and len(view) == len(wire) - 1000
    assert dec.wanted == len(view)
    with pytest.raises(ValueError):
        dec.gathered(len(view) + 1)
    view[:] = wire[1000:]
    del view
    dec.gathered(len(wire) - 1000)
    frame = dec.next_frame()
    assert frame == (0, body)
    assert dec.gather_buffer() is None and dec.wanted == 0
    # the buffer went back to the pool: the next large frame reuses it, and the
    # frame already handed out is not disturbed
    dec.feed(encode_frame(b"\xff" * len(body))[:10])
    assert dec.next_frame() is None
    view = dec.gather_buffer()
    assert view is not None
    view[:] = b"\xff" * len(view)
    assert frame[1] == bytes(range(256)) * 1024


def test_frames_above_the_buffer_limit_are_fed_in_pieces() -> None:
    dec = FrameDecoder()
    dec.feed(encode_frame(b"x" * (SCRATCH_MAX + 1))[:100])
    assert dec.next_frame() is None
    assert dec.wanted > 0
    assert dec.gather_buffer() is None


# ---------------------------------------------------------------- whole streams, any split

#: what a peer sends after the handshake: messages (a few with a frame over the
#: decoder's big-frame threshold) and commands, some between a message's frames
_traffic_st = st.lists(
    st.one_of(
        st.tuples(st.just("msg"), st.lists(st.binary(max_size=300), min_size=1, max_size=4)),
        st.tuples(st.just("big"), st.integers(65_536, 140_000)),
        st.tuples(
            st.sampled_from(["PING", "PONG", "SUBSCRIBE", "CANCEL", "X-UNKNOWN"]),
            st.binary(max_size=16),
        ),
        st.tuples(st.just("split"), st.sampled_from(["PING", "PONG", "X-UNKNOWN"])),
    ),
    max_size=12,
)


def _peer_stream(traffic: list[tuple[str, object]]) -> bytes:
    """Everything a DEALER peer sends a ROUTER: greeting, READY, then *traffic*."""
    peer = ZMTPConnection(SocketType.DEALER, NullMechanism(), routing_id=b"peer-id")
    us = ZMTPConnection(SocketType.ROUTER, NullMechanism())
    wire = peer.data_to_send()
    us.receive_data(wire)
    events(us)
    peer.receive_data(us.data_to_send())
    events(peer)
    wire += peer.data_to_send()
    for kind, arg in traffic:
        if kind == "msg":
            wire += peer.encode_message(arg)  # type: ignore[arg-type]
        elif kind == "big":
            wire += peer.encode_message([b"head", bytes([7]) * arg])  # type: ignore[list-item]
        elif kind == "split":
            command = encode_command(str(arg).encode(), b"\x00\x01")
            wire += encode_frame(b"a", MORE) + encode_frame(command, COMMAND)
            wire += encode_frame(b"b")
        else:
            body = b"\x00\x05" + arg if kind == "PING" else arg  # type: ignore[operator]
            wire += encode_frame(encode_command(kind.encode(), body), COMMAND)  # type: ignore[arg-type]
    return wire


def _decode_stream(wire: bytes, cuts: list[int], limits: list[int], gather: list[bool]) -> list[object]:
    """The events a ROUTER's connection gives for *wire* read in pieces, taking
    messages by both paths (read_messages with the drawn limits, next_event) and
    reading into gather_buffer() when drawn, as the session's reader does."""
    conn = ZMTPConnection(SocketType.ROUTER, NullMechanism())
    seen: list[object] = []
    step = 0

    def drain() -> None:
        nonlocal step
        while True:
            out: list[list[bytes]] = []
            conn.read_messages(out, limits[step % len(limits)])
            step += 1
            seen.extend(Message(frames) for frames in out)
            event = conn.next_event()
            if event is NEED_DATA:
                return
            seen.append(event)

    pos = 0
    for cut in [*sorted(cuts), len(wire)]:
        while pos < cut:
            view = conn.gather_buffer() if gather[step % len(gather)] else None
            if view is not None:
                n = min(len(view), cut - pos)
                view[:n] = wire[pos : pos + n]
                del view
                conn.gathered(n)
            else:
                n = cut - pos
                conn.receive_data(wire[pos:cut])
            pos += n
            drain()
    return seen


@settings(max_examples=150, deadline=None)
@given(_traffic_st, st.data())
def test_any_split_of_a_whole_stream_decodes_the_same(traffic, data) -> None:  # type: ignore[no-untyped-def]
    """A peer's whole stream, from the first byte of its greeting, cut anywhere
    and decoded by any mix of the connection's paths, gives the events it gives
    read in one piece by next_event alone."""
    wire = _peer_stream(traffic)
    expected = _decode_stream(wire, [], [0], [False])
    assert isinstance(expected[0], HandshakeComplete)
    assert expected[0].peer_routing_id == b"peer-id"
    assert sum(isinstance(e, Message) for e in expected) == sum(
        kind in ("msg", "big", "split") for kind, _ in traffic
    )
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=8))
    # cuts in the greeting and the handshake too, byte by byte
    cuts += data.draw(st.lists(st.integers(0, min(len(wire), 130)), max_size=6))
    limits = data.draw(st.lists(st.integers(0, 4), min_size=1, max_size=4))
    gather = data.draw(st.lists(st.booleans(), min_size=1, max_size=3))
    assert _decode_stream(wire, cuts, limits, gather) == expected
