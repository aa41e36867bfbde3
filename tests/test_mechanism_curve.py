"""The CURVE mechanism: handshake, MESSAGE encryption, refusals, and interop with libzmq."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator

import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.bindings import (
    crypto_box_easy,
    crypto_box_easy_afternm,
    crypto_box_keypair,
    crypto_box_open_easy_afternm,
)

from triomq._errors import (
    AuthenticationError,
    HandshakeError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)
from triomq._mechanisms._curve import CurveMechanism
from triomq._mechanisms._z85 import normalize_key, z85_encode
from triomq._socket_type import SocketType
from triomq._zmtp._commands import (
    decode_command_untrusted,
    encode_command,
    encode_metadata,
    encode_ping,
)
from triomq._zmtp._connection import ConnectionState, ZMTPConnection
from triomq._zmtp._events import (
    NEED_DATA,
    AuthenticationRequested,
    ConnectionClosed,
    Event,
    HandshakeComplete,
    Message,
    PeerError,
    Pong,
)
from triomq._zmtp._frames import COMMAND, MORE, FrameDecoder, encode_frame
from triomq._zmtp._mechanism import Credentials, MechanismStatus

TIMEOUT = 5.0

SERVER_PUBLIC, SERVER_SECRET = crypto_box_keypair()
CLIENT_PUBLIC, CLIENT_SECRET = crypto_box_keypair()


def server_mech(*, authenticate: bool = False, secret: bytes = SERVER_SECRET) -> CurveMechanism:
    from nacl.bindings import crypto_scalarmult_base

    return CurveMechanism(
        as_server=True,
        authenticate=authenticate,
        public_key=crypto_scalarmult_base(secret),
        secret_key=secret,
    )


def client_mech(server_key: bytes = SERVER_PUBLIC) -> CurveMechanism:
    return CurveMechanism(
        as_server=False,
        authenticate=False,
        public_key=CLIENT_PUBLIC,
        secret_key=CLIENT_SECRET,
        server_key=server_key,
    )


# ---- driving two in-memory connections -------------------------------------------


def pump(a: ZMTPConnection, b: ZMTPConnection) -> tuple[list[Event], list[Event]]:
    """Shuttle bytes between *a* and *b* until neither has anything to say."""
    events: tuple[list[Event], list[Event]] = ([], [])
    for _ in range(50):
        moved = False
        for src, dst in ((a, b), (b, a)):
            data = src.data_to_send()
            if data:
                dst.receive_data(data)
                moved = True
        for conn, evs in ((a, events[0]), (b, events[1])):
            if conn.state is ConnectionState.CLOSED:
                continue
            while (ev := conn.next_event()) is not NEED_DATA:
                evs.append(ev)
                if conn.state is ConnectionState.CLOSED:
                    break
        if not moved:
            return events
    raise AssertionError("the connections never settled")


def handshake(
    client: CurveMechanism | None = None,
    server: CurveMechanism | None = None,
    client_type: SocketType = SocketType.REQ,
    server_type: SocketType = SocketType.REP,
) -> tuple[ZMTPConnection, ZMTPConnection]:
    cli = ZMTPConnection(client_type, client or client_mech(), routing_id=b"me")
    srv = ZMTPConnection(server_type, server or server_mech())
    ce, se = pump(cli, srv)
    assert [type(e) for e in ce] == [HandshakeComplete]
    assert [type(e) for e in se] == [HandshakeComplete]
    return cli, srv


def mech_handshake(client: CurveMechanism, server: CurveMechanism) -> dict[str, bytes]:
    """Run the four commands through the mechanisms directly; return them by name."""
    client.metadata = {"Socket-Type": b"REQ", "Identity": b""}
    server.metadata = {"Socket-Type": b"REP"}
    (hello,) = client.start()
    assert server.start() == []
    (welcome,) = server.receive_command(hello)
    (initiate,) = client.receive_command(welcome)
    (ready,) = server.receive_command(initiate)
    assert client.receive_command(ready) == []
    return {"HELLO": hello, "WELCOME": welcome, "INITIATE": initiate, "READY": ready}


def test_connection_frames_message_like_libzmq() -> None:
    """libzmq 4.3 sends MESSAGE in flags-0 frames (and drops COMMAND-flagged ones)."""
    cli, _ = handshake()
    assert cli.encode_message([b"x"])[0] == 0


# ---- wire layout ------------------------------------------------------------------


def test_command_sizes_and_layout() -> None:
    client, server = client_mech(), server_mech()
    cmds = mech_handshake(client, server)
    md_client = encode_metadata(client.metadata)
    md_server = encode_metadata(server.metadata)
    hello = cmds["HELLO"]
    assert len(hello) == 200
    assert hello[:8] == b"\x05HELLO\x01\x00"
    assert hello[8:80] == bytes(72)
    assert hello[112:120] == struct.pack(">Q", 1)
    assert len(cmds["WELCOME"]) == 168
    assert cmds["WELCOME"][:8] == b"\x07WELCOME"
    assert len(cmds["INITIATE"]) == 257 + len(md_client)
    assert cmds["INITIATE"][:9] == b"\x08INITIATE"
    assert cmds["INITIATE"][105:113] == struct.pack(">Q", 2)
    assert len(cmds["READY"]) == 30 + len(md_server)
    assert cmds["READY"][:14] == b"\x05READY" + struct.pack(">Q", 1)
    assert client.status is server.status is MechanismStatus.READY
    assert server.peer_metadata == client.metadata
    assert client.peer_metadata == server.metadata
    # first MESSAGEs: client nonce 3 (after HELLO 1 and INITIATE 2), server nonce 2
    m = client.encrypt_frame(0, b"hi")
    assert m[:16] == b"\x07MESSAGE" + struct.pack(">Q", 3)
    assert len(m) == 8 + 8 + 16 + 1 + 2
    assert server.encrypt_frame(0, b"")[8:16] == struct.pack(">Q", 2)


def test_message_flags_byte_uses_curve_bits() -> None:
    client, server = client_mech(), server_mech()
    mech_handshake(client, server)
    precom = client._precom
    for ours, theirs in ((0, 0), (MORE, 1), (COMMAND, 2), (MORE | COMMAND, 3)):
        body = client.encrypt_frame(ours, b"data")
        plain = crypto_box_open_easy_afternm(body[16:], b"CurveZMQMESSAGEC" + body[8:16], precom)
        assert plain == bytes((theirs,)) + b"data"
        assert server.decrypt_frame(body) == (ours, b"data")


def test_keys_may_be_z85() -> None:
    mech = CurveMechanism(
        as_server=False,
        authenticate=False,
        public_key=z85_encode(CLIENT_PUBLIC),
        secret_key=z85_encode(CLIENT_SECRET).decode(),  # type: ignore[arg-type]
        server_key=z85_encode(SERVER_PUBLIC),
    )
    mech_handshake(mech, server_mech())


def test_constructor_checks() -> None:
    with pytest.raises(ValueError, match="server_key"):
        CurveMechanism(
            as_server=False, authenticate=False, public_key=CLIENT_PUBLIC, secret_key=CLIENT_SECRET
        )
    with pytest.raises(ValueError, match="does not belong"):
        CurveMechanism(
            as_server=True, authenticate=False, public_key=CLIENT_PUBLIC, secret_key=SERVER_SECRET
        )
    with pytest.raises(ValueError):
        CurveMechanism(
            as_server=True, authenticate=False, public_key=b"short", secret_key=SERVER_SECRET
        )
    # the client role never asks an authenticator
    assert not client_mech().authenticate
    assert CurveMechanism.encrypts and CurveMechanism.name == b"CURVE"


def test_no_encryption_before_ready() -> None:
    client = client_mech()
    with pytest.raises(LocalProtocolError):
        client.encrypt_frame(0, b"x")
    with pytest.raises(LocalProtocolError):
        client.decrypt_frame(b"\x07MESSAGE" + bytes(25))
    with pytest.raises(LocalProtocolError):
        client.authentication_result(True)


# ---- two triomq connections ------------------------------------------------------


def test_handshake_and_messages() -> None:
    cli, srv = handshake()
    srv.receive_data(cli.encode_message([b"", b"hello", b"x" * 1000]))
    assert srv.next_event() == Message([b"", b"hello", b"x" * 1000])
    assert srv.next_event() is NEED_DATA
    cli.receive_data(srv.encode_message([b"", b"world"]))
    assert cli.next_event() == Message([b"", b"world"])
    # commands travel encrypted too
    cli.receive_data(srv.encode_ping(1.0, b"ctx"))
    ev = cli.next_event()
    assert type(ev).__name__ == "Ping" and ev.context == b"ctx"  # type: ignore[union-attr]
    srv.receive_data(cli.encode_pong(b"ctx"))
    assert srv.next_event() == Pong(b"ctx")


def test_many_messages_keep_nonces_in_step() -> None:
    cli, srv = handshake()
    wire = b"".join(cli.encode_message([b"", str(i).encode()]) for i in range(300))
    srv.receive_data(wire)
    got = [srv.next_event() for _ in range(300)]
    assert got == [Message([b"", str(i).encode()]) for i in range(300)]


def test_authenticator_allows() -> None:
    cli = ZMTPConnection(SocketType.DEALER, client_mech())
    srv = ZMTPConnection(SocketType.ROUTER, server_mech(authenticate=True))
    ce, se = pump(cli, srv)
    assert ce == []
    assert se == [AuthenticationRequested(Credentials(mechanism="CURVE", public_key=CLIENT_PUBLIC))]
    srv.authentication_result(True, user_id=b"alice")
    ce, se = pump(cli, srv)
    assert [type(e) for e in ce] == [HandshakeComplete]
    assert [type(e) for e in se] == [HandshakeComplete]
    assert se[0].user_id == b"alice"  # type: ignore[union-attr]
    srv.receive_data(cli.encode_message([b"hi"]))
    assert srv.next_event() == Message([b"hi"])


def test_authenticator_refuses() -> None:
    cli = ZMTPConnection(SocketType.DEALER, client_mech())
    srv = ZMTPConnection(SocketType.ROUTER, server_mech(authenticate=True))
    pump(cli, srv)
    srv.authentication_result(False, reason="go away")
    assert srv.state is ConnectionState.CLOSED
    ce, _ = pump(cli, srv)
    assert ce == [PeerError("go away")]


def test_wrong_server_key_is_refused_with_error() -> None:
    other_public, _ = crypto_box_keypair()
    cli = ZMTPConnection(SocketType.REQ, client_mech(server_key=other_public))
    srv = ZMTPConnection(SocketType.REP, server_mech())
    cli.receive_data(srv.data_to_send())
    srv.receive_data(cli.data_to_send())
    assert cli.next_event() is NEED_DATA  # greeting read, HELLO queued
    srv.receive_data(cli.data_to_send())
    with pytest.raises(AuthenticationError, match="HELLO"):
        srv.next_event()
    assert srv.state is ConnectionState.CLOSED
    cli.receive_data(srv.data_to_send())
    ev = cli.next_event()
    assert isinstance(ev, PeerError) and "HELLO" in ev.reason


def test_impostor_server_cannot_answer() -> None:
    # a server without the secret key the client expects cannot open HELLO
    _, impostor_secret = crypto_box_keypair()
    client, server = client_mech(), server_mech(secret=impostor_secret)
    (hello,) = client.start()
    with pytest.raises(AuthenticationError):
        server.receive_command(hello)
    # and a WELCOME boxed with the wrong long-term key does not open at the client
    forged = (
        b"\x07WELCOME"
        + bytes(16)
        + crypto_box_easy(bytes(128), b"WELCOME-" + bytes(16), hello[80:112], impostor_secret)
    )
    with pytest.raises(AuthenticationError, match="WELCOME"):
        client.receive_command(forged)


def test_tampered_commands_are_refused() -> None:
    def flip(body: bytes, at: int) -> bytes:
        return body[:at] + bytes((body[at] ^ 1,)) + body[at + 1 :]

    # tampered HELLO box
    client, server = client_mech(), server_mech()
    (hello,) = client.start()
    with pytest.raises(AuthenticationError):
        server.receive_command(flip(hello, 150))
    # tampered WELCOME
    client, server = client_mech(), server_mech()
    (hello,) = client.start()
    (welcome,) = server.receive_command(hello)
    with pytest.raises(AuthenticationError):
        client.receive_command(flip(welcome, 100))
    # tampered cookie, tampered INITIATE box
    for at in (50, 200):
        client, server = client_mech(), server_mech()
        (hello,) = client.start()
        (initiate,) = client.receive_command(server.receive_command(hello)[0])
        with pytest.raises(AuthenticationError):
            server.receive_command(flip(initiate, at))
    # tampered READY
    client, server = client_mech(), server_mech()
    (hello,) = client.start()
    (initiate,) = client.receive_command(server.receive_command(hello)[0])
    (ready,) = server.receive_command(initiate)
    with pytest.raises(AuthenticationError):
        client.receive_command(flip(ready, 20))


def test_vouch_from_another_key_is_refused() -> None:
    """A client claiming long-term key C but vouching with a different secret key."""
    client, server = client_mech(), server_mech(authenticate=True)
    (hello,) = client.start()
    (welcome,) = server.receive_command(hello)
    client.receive_command(welcome)  # sets S' and the shared key
    victim_public, _ = crypto_box_keypair()
    vouch_nonce = bytes(16)
    vouch = crypto_box_easy(
        client._cn_public + SERVER_PUBLIC, b"VOUCH---" + vouch_nonce, client._cn_peer, CLIENT_SECRET
    )
    short = struct.pack(">Q", 2)
    box = crypto_box_easy_afternm(
        victim_public + vouch_nonce + vouch, b"CurveZMQINITIATE" + short, client._precom
    )
    initiate = b"\x08INITIATE" + _cookie_from(welcome, client) + short + box
    with pytest.raises(AuthenticationError, match="vouch"):
        server.receive_command(initiate)
    assert server.credentials is None


def _cookie_from(welcome: bytes, client: CurveMechanism) -> bytes:
    from nacl.bindings import crypto_box_open_easy

    plain = crypto_box_open_easy(
        welcome[24:], b"WELCOME-" + welcome[8:24], SERVER_PUBLIC, client._cn_secret
    )
    return plain[32:128]


def test_reordered_and_malformed_commands() -> None:
    # server: INITIATE first, HELLO twice, READY, wrong sizes, wrong version
    client, server = client_mech(), server_mech()
    (hello,) = client.start()
    with pytest.raises(RemoteProtocolError):
        server_mech().receive_command(b"\x08INITIATE" + bytes(300))
    with pytest.raises(RemoteProtocolError):
        server_mech().receive_command(hello[:-1])
    with pytest.raises(RemoteProtocolError):
        server_mech().receive_command(hello + b"\x00")
    with pytest.raises(RemoteProtocolError, match="version"):
        server_mech().receive_command(hello[:6] + b"\x02\x00" + hello[8:])
    with pytest.raises(RemoteProtocolError):
        server_mech().receive_command(b"\x05READY")
    with pytest.raises(RemoteProtocolError):
        server_mech().receive_command(b"")
    server.receive_command(hello)
    with pytest.raises(RemoteProtocolError):
        server.receive_command(hello)
    with pytest.raises(RemoteProtocolError):
        server_mech().receive_command(b"\x08INITIATE" + bytes(10))
    # client: READY before WELCOME, WELCOME of the wrong size, HELLO
    with pytest.raises(RemoteProtocolError):
        client_mech().receive_command(b"\x05READY" + bytes(30))
    c = client_mech()
    c.start()
    with pytest.raises(RemoteProtocolError):
        c.receive_command(b"\x07WELCOME" + bytes(100))
    c = client_mech()
    c.start()
    with pytest.raises(RemoteProtocolError):
        c.receive_command(hello)
    with pytest.raises(LocalProtocolError):
        client.start()


def test_replayed_and_reordered_messages_are_refused() -> None:
    client, server = client_mech(), server_mech()
    mech_handshake(client, server)
    m1, m2, m3 = (client.encrypt_frame(0, b"%d" % i) for i in range(3))
    assert server.decrypt_frame(m2) == (0, b"1")
    with pytest.raises(RemoteProtocolError, match="nonce"):
        server.decrypt_frame(m2)  # replay
    with pytest.raises(RemoteProtocolError, match="nonce"):
        server.decrypt_frame(m1)  # older
    assert server.decrypt_frame(m3) == (0, b"2")
    # a server MESSAGE reflected back to the server does not open (other nonce prefix)
    back = server.encrypt_frame(0, b"mirror")
    with pytest.raises(RemoteProtocolError, match="open"):
        server.decrypt_frame(back[:8] + struct.pack(">Q", 1000) + back[16:])
    with pytest.raises(RemoteProtocolError, match="malformed"):
        server.decrypt_frame(b"\x07MESSAGE" + bytes(24))
    with pytest.raises(RemoteProtocolError, match="malformed"):
        server.decrypt_frame(b"\x05READY" + bytes(40))
    # a failed box does not move the nonce window
    m4 = client.encrypt_frame(MORE, b"ok")
    assert server.decrypt_frame(m4) == (MORE, b"ok")


def test_replayed_message_closes_the_connection() -> None:
    cli, srv = handshake()
    wire = cli.encode_message([b"", b"pay me"])
    srv.receive_data(wire)
    assert srv.next_event() == Message([b"", b"pay me"])
    srv.receive_data(wire)
    with pytest.raises(RemoteProtocolError):
        srv.next_event()
    assert srv.state is ConnectionState.CLOSED


# ---- robustness ----------------------------------------------------------------------

fuzz = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_NAMES = st.sampled_from([b"HELLO", b"WELCOME", b"INITIATE", b"READY", b"MESSAGE", b"ERROR", b"X"])


@fuzz
@given(st.binary(max_size=600))
def test_random_bytes_to_server_in_handshake(data: bytes) -> None:
    srv = ZMTPConnection(SocketType.REP, server_mech())
    srv.receive_data(ZMTPConnection(SocketType.REQ, client_mech()).data_to_send())
    srv.receive_data(data)
    srv.receive_data(b"")
    try:
        for _ in range(100):
            if srv.next_event() is NEED_DATA or srv.state is ConnectionState.CLOSED:
                break
    except (ProtocolError, HandshakeError):
        pass


@fuzz
@given(st.lists(st.tuples(_NAMES, st.binary(max_size=320)), max_size=4), st.booleans())
def test_random_commands_in_handshake(cmds: list[tuple[bytes, bytes]], as_server: bool) -> None:
    mech = server_mech(authenticate=True) if as_server else client_mech()
    mech.metadata = {"Socket-Type": b"REQ"}
    mech.start()
    for name, data in cmds:
        try:
            mech.receive_command(encode_command(name, data))
        except (ProtocolError, HandshakeError):
            return
        if mech.status is not MechanismStatus.HANDSHAKING:
            return


@fuzz
@given(st.binary(max_size=200))
def test_random_message_bodies_after_handshake(data: bytes) -> None:
    client, server = client_mech(), server_mech()
    mech_handshake(client, server)
    for body in (data, b"\x07MESSAGE" + data):
        try:
            server.decrypt_frame(body)
        except RemoteProtocolError:
            pass
    assert server.decrypt_frame(client.encrypt_frame(0, b"still fine")) == (0, b"still fine")


# ---- interop with libzmq (pyzmq), over a raw TCP socket ------------------------------


class RawPeer:
    """Drives a ZMTPConnection over a blocking socket with a timeout."""

    def __init__(self, sock: socket.socket, conn: ZMTPConnection) -> None:
        sock.settimeout(TIMEOUT)
        self.sock = sock
        self.conn = conn
        self._decoder: FrameDecoder | None = None

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def next_event(self) -> Event:
        while True:
            self.flush()
            try:
                ev = self.conn.next_event()
            finally:
                self.flush()  # an ERROR for the peer, on failure
            if ev is not NEED_DATA:
                return ev
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            self.conn.receive_data(data)

    # libzmq's framing of MESSAGE, straight through the mechanism
    def send_via_mechanism(self, frames: list[bytes], flags: int = 0) -> None:
        mech = self.conn.mechanism
        last = len(frames) - 1
        self.sock.sendall(
            b"".join(
                encode_frame(mech.encrypt_frame(flags | (MORE if i < last else 0), f))
                for i, f in enumerate(frames)
            )
        )

    def recv_via_mechanism(self) -> list[tuple[int, bytes]]:
        """Read one message (all its frames) as (flags, body), decrypting every frame."""
        if self._decoder is None:
            self._decoder = FrameDecoder()
            self._decoder.feed(self.conn._decoder.peek())  # already buffered by the connection
        decoder = self._decoder
        out: list[tuple[int, bytes]] = []
        while True:
            frame = decoder.next_frame()
            if frame is None:
                decoder.feed(self.sock.recv(65536))
                continue
            wire_flags, body = frame
            assert wire_flags == 0, "libzmq sends MESSAGE in a frame with flags 0"
            flags, plain = self.conn.mechanism.decrypt_frame(body)
            out.append((flags, plain))
            if not flags & MORE:
                return out


class Zmq:
    """A pyzmq context whose sockets are all closed at teardown."""

    def __init__(self) -> None:
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._made: list[zmq.Socket[bytes]] = []

    def socket(self, kind: int) -> zmq.Socket[bytes]:
        sock = self.ctx.socket(kind)
        sock.linger = 0
        sock.rcvtimeo = sock.sndtimeo = int(TIMEOUT * 1000)
        self._made.append(sock)
        return sock

    def close(self) -> None:
        for sock in self._made:
            sock.close(linger=0)
        self.ctx.term()


@pytest.fixture
def ctx() -> Iterator[Zmq]:
    env = Zmq()
    yield env
    env.close()


class ZapHandler:
    """A ZAP handler thread (RFC 27) answering libzmq with a Python policy."""

    def __init__(self, ctx: Zmq, policy: Callable[[list[bytes]], bool]) -> None:
        self.requests: list[list[bytes]] = []
        self._policy = policy
        self._sock = ctx.ctx.socket(zmq.REP)
        self._sock.linger = 0
        self._sock.bind("inproc://zeromq.zap.01")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._sock.poll(50):
                continue
            req = self._sock.recv_multipart()
            self.requests.append(req)
            version, request_id = req[0], req[1]
            ok = self._policy(req)
            self._sock.send_multipart(
                [
                    version,
                    request_id,
                    b"200" if ok else b"400",
                    b"OK" if ok else b"no",
                    b"user-x" if ok else b"",
                    b"",
                ]
            )

    def close(self) -> None:
        self._stop.set()
        self._thread.join(TIMEOUT)
        self._sock.close()


def z85(key: bytes) -> bytes:
    return z85_encode(key)


def connect_raw(
    port: int, mech: CurveMechanism, socket_type: SocketType = SocketType.REQ
) -> RawPeer:
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    return RawPeer(sock, ZMTPConnection(socket_type, mech))


def test_interop_triomq_client_libzmq_server(ctx: Zmq) -> None:
    rep = ctx.socket(zmq.REP)
    rep.curve_server = True
    rep.curve_secretkey = z85(SERVER_SECRET)
    port = rep.bind_to_random_port("tcp://127.0.0.1")
    peer = connect_raw(port, client_mech())
    with peer.sock:
        ev = peer.next_event()
        assert isinstance(ev, HandshakeComplete)
        assert ev.peer_socket_type is SocketType.REP
        peer.send_via_mechanism([b"", b"hello"])
        assert rep.recv_multipart() == [b"hello"]
        rep.send_multipart([b"wor", b"ld"])
        assert peer.recv_via_mechanism() == [(MORE, b""), (MORE, b"wor"), (0, b"ld")]
        # a PING inside MESSAGE (COMMAND flag 0x02 in the box) gets a PONG back
        peer.send_via_mechanism([encode_ping(0, b"ctx")], flags=COMMAND)
        ((flags, body),) = peer.recv_via_mechanism()
        assert flags == COMMAND
        assert decode_command_untrusted(body) == (b"PONG", b"ctx")


def test_interop_connection_messages_libzmq_server(ctx: Zmq) -> None:
    rep = ctx.socket(zmq.REP)
    rep.curve_server = True
    rep.curve_secretkey = z85(SERVER_SECRET)
    rep.rcvtimeo = 2000  # short: this fails until the connection is fixed
    port = rep.bind_to_random_port("tcp://127.0.0.1")
    peer = connect_raw(port, client_mech())
    with peer.sock:
        assert isinstance(peer.next_event(), HandshakeComplete)
        peer.sock.sendall(peer.conn.encode_message([b"", b"hello"]))
        assert rep.recv_multipart() == [b"hello"]
        rep.send(b"world")
        assert peer.next_event() == Message([b"", b"world"])


def test_interop_wrong_server_key_libzmq_server(ctx: Zmq) -> None:
    rep = ctx.socket(zmq.REP)
    rep.curve_server = True
    rep.curve_secretkey = z85(SERVER_SECRET)
    port = rep.bind_to_random_port("tcp://127.0.0.1")
    other_public, _ = crypto_box_keypair()
    peer = connect_raw(port, client_mech(server_key=other_public))
    with peer.sock:
        ev = peer.next_event()
        # libzmq drops a connection whose HELLO does not open, without ERROR
        assert isinstance(ev, (ConnectionClosed, PeerError))


def test_interop_libzmq_zap_sees_client_key_and_refuses(ctx: Zmq) -> None:
    zap = ZapHandler(ctx, policy=lambda req: False)
    try:
        rep = ctx.socket(zmq.REP)
        rep.curve_server = True
        rep.curve_secretkey = z85(SERVER_SECRET)
        port = rep.bind_to_random_port("tcp://127.0.0.1")
        peer = connect_raw(port, client_mech())
        with peer.sock:
            assert peer.next_event() == PeerError("400")
        (req,) = zap.requests
        assert req[5] == b"CURVE"
        assert req[6] == CLIENT_PUBLIC
    finally:
        zap.close()


def test_interop_libzmq_zap_allows(ctx: Zmq) -> None:
    zap = ZapHandler(ctx, policy=lambda req: req[6] == CLIENT_PUBLIC)
    try:
        rep = ctx.socket(zmq.REP)
        rep.curve_server = True
        rep.curve_secretkey = z85(SERVER_SECRET)
        port = rep.bind_to_random_port("tcp://127.0.0.1")
        peer = connect_raw(port, client_mech())
        with peer.sock:
            assert isinstance(peer.next_event(), HandshakeComplete)
            peer.send_via_mechanism([b"", b"hi"])
            msg = rep.recv(copy=False)
            assert msg.bytes == b"hi"
            assert msg.get("User-Id") == "user-x"
    finally:
        zap.close()


def _libzmq_client(
    ctx: Zmq, port: int, server_public: bytes = SERVER_PUBLIC
) -> tuple[zmq.Socket[bytes], bytes]:
    public, secret = zmq.curve_keypair()
    req = ctx.socket(zmq.REQ)
    req.curve_serverkey = z85(server_public)
    req.curve_publickey = public
    req.curve_secretkey = secret
    req.connect(f"tcp://127.0.0.1:{port}")
    return req, normalize_key(public)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as lsock:
        lsock.settimeout(TIMEOUT)
        yield lsock


def test_interop_libzmq_client_triomq_server(ctx: Zmq, listener: socket.socket) -> None:
    req, client_public = _libzmq_client(ctx, listener.getsockname()[1])
    sock, _ = listener.accept()
    with sock:
        peer = RawPeer(sock, ZMTPConnection(SocketType.REP, server_mech(authenticate=True)))
        ev = peer.next_event()
        assert ev == AuthenticationRequested(
            Credentials(mechanism="CURVE", public_key=client_public)
        )
        peer.conn.authentication_result(True, user_id=b"bob")
        ev = peer.next_event()
        assert isinstance(ev, HandshakeComplete)
        assert ev.peer_socket_type is SocketType.REQ and ev.user_id == b"bob"
        req.send(b"hello")
        assert peer.recv_via_mechanism() == [(MORE, b""), (0, b"hello")]
        peer.send_via_mechanism([b"", b"world"])
        assert req.recv() == b"world"


def test_interop_connection_messages_libzmq_client(ctx: Zmq, listener: socket.socket) -> None:
    req, _ = _libzmq_client(ctx, listener.getsockname()[1])
    sock, _ = listener.accept()
    with sock:
        peer = RawPeer(sock, ZMTPConnection(SocketType.REP, server_mech()))
        assert isinstance(peer.next_event(), HandshakeComplete)
        req.send(b"hello")
        assert peer.next_event() == Message([b"", b"hello"])
        sock.sendall(peer.conn.encode_message([b"", b"world"]))
        assert req.recv() == b"world"


def test_interop_libzmq_client_wrong_server_key(ctx: Zmq, listener: socket.socket) -> None:
    other_public, _ = crypto_box_keypair()
    _libzmq_client(ctx, listener.getsockname()[1], server_public=other_public)
    sock, _ = listener.accept()
    with sock:
        peer = RawPeer(sock, ZMTPConnection(SocketType.REP, server_mech()))
        with pytest.raises(AuthenticationError):
            peer.next_event()
        assert peer.conn.state is ConnectionState.CLOSED
