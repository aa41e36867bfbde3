"""The PLAIN mechanism: handshake, authentication, refusals, and interop with libzmq."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st
from zmq.utils.monitor import recv_monitor_message

from triomq._errors import (
    AuthenticationError,
    HandshakeError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)
from triomq._mechanisms._plain import PlainMechanism
from triomq._socket_type import SocketType
from triomq._zmtp._commands import encode_command, encode_metadata
from triomq._zmtp._connection import ConnectionState, ZMTPConnection
from triomq._zmtp._events import (
    NEED_DATA,
    AuthenticationRequested,
    Event,
    HandshakeComplete,
    Message,
    PeerError,
)
from triomq._zmtp._mechanism import Credentials, MechanismStatus

TIMEOUT = 5.0


def client_mech(username: bytes = b"admin", password: bytes = b"secret") -> PlainMechanism:
    return PlainMechanism(as_server=False, authenticate=False, username=username, password=password)


def server_mech(authenticate: bool = True) -> PlainMechanism:
    return PlainMechanism(as_server=True, authenticate=authenticate)


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


# ---- the mechanism alone ---------------------------------------------------------


def test_wire_bytes() -> None:
    client, server = client_mech(), server_mech()
    client.metadata = {"Socket-Type": b"DEALER", "Identity": b""}
    server.metadata = {"Socket-Type": b"ROUTER", "Identity": b""}
    assert server.start() == []
    (hello,) = client.start()
    assert hello == b"\x05HELLO\x05admin\x06secret"
    assert server.receive_command(hello) == []
    assert server.status is MechanismStatus.AWAITING_AUTH
    assert server.credentials == Credentials(
        mechanism="PLAIN", username=b"admin", password=b"secret"
    )
    assert "secret" not in repr(server.credentials)
    (welcome,) = server.authentication_result(True, user_id=b"uid")
    assert welcome == b"\x07WELCOME"
    assert server.status is MechanismStatus.HANDSHAKING
    (initiate,) = client.receive_command(welcome)
    assert initiate == b"\x08INITIATE" + encode_metadata(client.metadata)
    (ready,) = server.receive_command(initiate)
    assert ready == b"\x05READY" + encode_metadata(server.metadata)
    assert client.receive_command(ready) == []
    assert client.status is server.status is MechanismStatus.READY
    assert server.user_id == b"uid"
    assert server.peer_metadata == client.metadata
    assert client.peer_metadata == server.metadata
    assert PlainMechanism.name == b"PLAIN" and not PlainMechanism.encrypts


def test_empty_credentials() -> None:
    (hello,) = client_mech(b"", b"").start()
    assert hello == b"\x05HELLO\x00\x00"
    server = server_mech()
    server.receive_command(hello)
    assert server.credentials == Credentials(mechanism="PLAIN", username=b"", password=b"")


def test_credentials_too_long() -> None:
    with pytest.raises(ValueError):
        client_mech(username=b"u" * 256)
    with pytest.raises(ValueError):
        client_mech(password=b"p" * 256)
    (hello,) = client_mech(b"u" * 255, b"p" * 255).start()
    server = server_mech()
    server.receive_command(hello)
    assert server.credentials is not None and server.credentials.username == b"u" * 255


def test_server_without_authenticator_refuses_everyone() -> None:
    server = server_mech(authenticate=False)
    with pytest.raises(AuthenticationError):
        server.receive_command(b"\x05HELLO\x05admin\x06secret")


def test_refusal_returns_error() -> None:
    server = server_mech()
    server.receive_command(b"\x05HELLO\x01u\x01p")
    assert server.authentication_result(False) == [encode_command(b"ERROR", b"\x03400")]
    server = server_mech()
    server.receive_command(b"\x05HELLO\x01u\x01p")
    assert server.authentication_result(False, reason="bad password") == [
        encode_command(b"ERROR", b"\x0cbad password")
    ]
    with pytest.raises(LocalProtocolError):
        server.authentication_result(True)


@pytest.mark.parametrize(
    "hello",
    [
        b"\x05HELLO",  # nothing
        b"\x05HELLO\x05adm",  # username cut short
        b"\x05HELLO\x05admin",  # no password length
        b"\x05HELLO\x05admin\x06secre",  # password cut short
        b"\x05HELLO\x05admin\x06secretX",  # extra data
    ],
)
def test_malformed_hello(hello: bytes) -> None:
    server = server_mech()
    with pytest.raises(RemoteProtocolError, match="malformed HELLO"):
        server.receive_command(hello)
    assert server.credentials is None


def test_commands_out_of_order() -> None:
    # server: INITIATE before HELLO, HELLO twice, INITIATE while waiting for the authenticator
    with pytest.raises(RemoteProtocolError):
        server_mech().receive_command(b"\x08INITIATE")
    server = server_mech()
    server.receive_command(b"\x05HELLO\x01u\x01p")
    with pytest.raises(RemoteProtocolError):
        server.receive_command(b"\x08INITIATE")
    server = server_mech()
    server.receive_command(b"\x05HELLO\x01u\x01p")
    server.authentication_result(True)
    with pytest.raises(RemoteProtocolError):
        server.receive_command(b"\x05HELLO\x01u\x01p")
    with pytest.raises(RemoteProtocolError):
        server_mech().receive_command(b"\x05READY")
    # client: READY before WELCOME, WELCOME twice, WELCOME with data, HELLO
    client = client_mech()
    client.start()
    with pytest.raises(RemoteProtocolError):
        client.receive_command(b"\x05READY")
    client = client_mech()
    client.start()
    client.receive_command(b"\x07WELCOME")
    with pytest.raises(RemoteProtocolError):
        client.receive_command(b"\x07WELCOME")
    client = client_mech()
    client.start()
    with pytest.raises(RemoteProtocolError):
        client.receive_command(b"\x07WELCOMEx")
    client = client_mech()
    client.start()
    with pytest.raises(RemoteProtocolError):
        client.receive_command(b"\x05HELLO\x00\x00")
    with pytest.raises(LocalProtocolError):
        client.start()
    with pytest.raises(RemoteProtocolError):
        client_mech().receive_command(b"")


def test_malformed_metadata() -> None:
    server = server_mech()
    server.receive_command(b"\x05HELLO\x01u\x01p")
    server.authentication_result(True)
    with pytest.raises(RemoteProtocolError):
        server.receive_command(b"\x08INITIATE\x0bSocket-Type\x00\x00\x00\x09REQ")


# ---- two triomq connections ------------------------------------------------------


def test_connections_handshake_and_messages() -> None:
    cli = ZMTPConnection(SocketType.REQ, client_mech(), routing_id=b"rid")
    srv = ZMTPConnection(SocketType.REP, server_mech())
    ce, se = pump(cli, srv)
    assert ce == []
    assert se == [
        AuthenticationRequested(
            Credentials(mechanism="PLAIN", username=b"admin", password=b"secret")
        )
    ]
    srv.authentication_result(True, user_id=b"admin")
    ce, se = pump(cli, srv)
    assert [type(e) for e in ce] == [HandshakeComplete]
    assert [type(e) for e in se] == [HandshakeComplete]
    assert se[0].user_id == b"admin" and se[0].peer_routing_id == b"rid"  # type: ignore[union-attr]
    srv.receive_data(cli.encode_message([b"", b"hello"]))
    assert srv.next_event() == Message([b"", b"hello"])


def test_connections_wrong_password() -> None:
    cli = ZMTPConnection(SocketType.REQ, client_mech(password=b"wrong"))
    srv = ZMTPConnection(SocketType.REP, server_mech())
    _, se = pump(cli, srv)
    creds = se[0].credentials  # type: ignore[union-attr]
    srv.authentication_result(creds.password == b"secret", reason="400")
    assert srv.state is ConnectionState.CLOSED
    ce, _ = pump(cli, srv)
    assert ce == [PeerError("400")]


def test_connections_no_authenticator() -> None:
    cli = ZMTPConnection(SocketType.REQ, client_mech())
    srv = ZMTPConnection(SocketType.REP, server_mech(authenticate=False))
    srv.receive_data(cli.data_to_send())
    cli.receive_data(srv.data_to_send())
    assert cli.next_event() is NEED_DATA
    srv.receive_data(cli.data_to_send())
    with pytest.raises(AuthenticationError):
        srv.next_event()
    cli.receive_data(srv.data_to_send())
    ev = cli.next_event()
    assert isinstance(ev, PeerError)


def test_connections_reordered_command() -> None:
    cli = ZMTPConnection(SocketType.REQ, client_mech())
    srv = ZMTPConnection(SocketType.REP, server_mech())
    srv.receive_data(cli.data_to_send())
    # an INITIATE where HELLO belongs: refused with an ERROR for the peer
    srv.receive_data(b"\x04\x09\x08INITIATE")
    with pytest.raises(RemoteProtocolError):
        srv.next_event()
    assert b"ERROR" in srv.data_to_send()
    assert srv.state is ConnectionState.CLOSED


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
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


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([b"HELLO", b"WELCOME", b"INITIATE", b"READY", b"ERROR", b"Z"]),
            st.binary(max_size=40),
        ),
        max_size=4,
    ),
    st.booleans(),
    st.booleans(),
)
def test_random_commands(cmds: list[tuple[bytes, bytes]], as_server: bool, allow: bool) -> None:
    mech = server_mech() if as_server else client_mech()
    mech.start()
    for name, data in cmds:
        try:
            mech.receive_command(encode_command(name, data))
        except (ProtocolError, HandshakeError):
            return
        if mech.status is MechanismStatus.AWAITING_AUTH:
            mech.authentication_result(allow)
            if not allow:
                return
        if mech.status is MechanismStatus.READY:
            return


# ---- interop with libzmq (pyzmq) over a raw TCP socket --------------------------------


class RawPeer:
    """Drives a ZMTPConnection over a blocking socket with a timeout."""

    def __init__(self, sock: socket.socket, conn: ZMTPConnection) -> None:
        sock.settimeout(TIMEOUT)
        self.sock = sock
        self.conn = conn

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


class Zmq:
    """A pyzmq context whose sockets are all closed at teardown."""

    def __init__(self) -> None:
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.made: list[zmq.Socket[bytes]] = []

    def socket(self, kind: int) -> zmq.Socket[bytes]:
        sock = self.ctx.socket(kind)
        sock.linger = 0
        sock.rcvtimeo = sock.sndtimeo = int(TIMEOUT * 1000)
        self.made.append(sock)
        return sock

    def close(self) -> None:
        for sock in self.made:
            sock.close(linger=0)
        self.ctx.term()


@pytest.fixture
def ctx() -> Iterator[Zmq]:
    env = Zmq()
    yield env
    env.close()


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as lsock:
        lsock.settimeout(TIMEOUT)
        yield lsock


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
            ok = self._policy(req)
            self._sock.send_multipart(
                [
                    req[0],
                    req[1],
                    b"200" if ok else b"400",
                    b"OK" if ok else b"no",
                    req[6] if ok else b"",
                    b"",
                ]
            )

    def close(self) -> None:
        self._stop.set()
        self._thread.join(TIMEOUT)
        self._sock.close()


def _plain_rep(ctx: Zmq) -> tuple[zmq.Socket[bytes], int]:
    rep = ctx.socket(zmq.REP)
    rep.plain_server = True
    return rep, rep.bind_to_random_port("tcp://127.0.0.1")


def test_interop_triomq_client_libzmq_server(ctx: Zmq) -> None:
    zap = ZapHandler(ctx, policy=lambda req: req[6:] == [b"admin", b"secret"])
    try:
        rep, port = _plain_rep(ctx)
        sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        with sock:
            peer = RawPeer(sock, ZMTPConnection(SocketType.REQ, client_mech()))
            ev = peer.next_event()
            assert isinstance(ev, HandshakeComplete) and ev.peer_socket_type is SocketType.REP
            sock.sendall(peer.conn.encode_message([b"", b"hello"]))
            msg = rep.recv(copy=False)
            assert msg.bytes == b"hello"
            assert msg.get("User-Id") == "admin"
            rep.send_multipart([b"wor", b"ld"])
            assert peer.next_event() == Message([b"", b"wor", b"ld"])
        (req,) = zap.requests
        assert req[0] == b"1.0" and req[5] == b"PLAIN" and req[6:] == [b"admin", b"secret"]
    finally:
        zap.close()


def test_connection_reads_libzmq_malformed_plain_error() -> None:
    """libzmq 4.3 writes PLAIN's ERROR as "\\x05ERROR" in C, which is 0x5E "RROR"."""
    cli = ZMTPConnection(SocketType.REQ, client_mech())
    cli.receive_data(ZMTPConnection(SocketType.REP, server_mech()).data_to_send())
    cli.next_event()
    cli.receive_data(b"\x04\x09\x5eRROR\x03400")
    assert cli.next_event() == PeerError("400")


def test_interop_wrong_password_libzmq_server(ctx: Zmq) -> None:
    zap = ZapHandler(ctx, policy=lambda req: req[6:] == [b"admin", b"secret"])
    try:
        _, port = _plain_rep(ctx)
        sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        with sock:
            peer = RawPeer(sock, ZMTPConnection(SocketType.REQ, client_mech(password=b"guess")))
            assert peer.next_event() == PeerError("400")
    finally:
        zap.close()


def test_interop_libzmq_server_error_bytes(ctx: Zmq) -> None:
    """Pin down what libzmq 4.3 sends when its ZAP handler refuses a PLAIN client."""
    zap = ZapHandler(ctx, policy=lambda req: False)
    try:
        _, port = _plain_rep(ctx)
        sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        with sock:
            conn = ZMTPConnection(SocketType.REQ, client_mech())
            sock.sendall(conn.data_to_send())
            received = b""
            while len(received) < 64:
                received += sock.recv(4096)
            conn.receive_data(received[:64])
            assert conn.next_event() is NEED_DATA
            sock.sendall(conn.data_to_send())  # HELLO
            while len(received) < 64 + 2 + 9:
                data = sock.recv(4096)
                if not data:
                    break
                received += data
        if zmq.zmq_version_info()[:2] == (4, 3):
            assert received[64:] == b"\x04\x09\x5eRROR\x03400"
        else:  # a libzmq with the escape fixed
            assert received[64:] in (b"\x04\x09\x5eRROR\x03400", b"\x04\x0a\x05ERROR\x03400")
    finally:
        zap.close()


def _libzmq_client(ctx: Zmq, port: int, password: bytes = b"secret") -> zmq.Socket[bytes]:
    req = ctx.socket(zmq.REQ)
    req.plain_username = b"admin"
    req.plain_password = password
    req.connect(f"tcp://127.0.0.1:{port}")
    return req


def test_interop_libzmq_client_triomq_server(ctx: Zmq, listener: socket.socket) -> None:
    req = _libzmq_client(ctx, listener.getsockname()[1])
    sock, _ = listener.accept()
    with sock:
        peer = RawPeer(sock, ZMTPConnection(SocketType.REP, server_mech()))
        ev = peer.next_event()
        assert ev == AuthenticationRequested(
            Credentials(mechanism="PLAIN", username=b"admin", password=b"secret")
        )
        peer.conn.authentication_result(True, user_id=b"admin")
        ev = peer.next_event()
        assert isinstance(ev, HandshakeComplete)
        assert ev.peer_socket_type is SocketType.REQ and ev.user_id == b"admin"
        req.send(b"hello")
        assert peer.next_event() == Message([b"", b"hello"])
        sock.sendall(peer.conn.encode_message([b"", b"world"]))
        assert req.recv() == b"world"


def _wait_handshake_failure(mon: zmq.Socket[bytes]) -> int:
    while mon.poll(int(TIMEOUT * 1000)):
        event = recv_monitor_message(mon)
        if event["event"] in (zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL):
            return int(event["event"])
        assert event["event"] != zmq.EVENT_HANDSHAKE_SUCCEEDED
    raise AssertionError("libzmq reported no handshake failure")


def test_interop_triomq_server_refuses_libzmq_client(ctx: Zmq, listener: socket.socket) -> None:
    req = _libzmq_client(ctx, listener.getsockname()[1], password=b"guess")
    mon = req.get_monitor_socket()
    ctx.made.append(mon)
    sock, _ = listener.accept()
    with sock:
        peer = RawPeer(sock, ZMTPConnection(SocketType.REP, server_mech()))
        ev = peer.next_event()
        assert isinstance(ev, AuthenticationRequested)
        assert ev.credentials.password == b"guess"
        peer.conn.authentication_result(False)
        out = peer.conn.data_to_send()
        # a well-formed ERROR; libzmq 4.3's PLAIN client expects its own malformed
        # one (0x5E "RROR") and reports a protocol error instead of "400", but it
        # does drop the connection either way
        assert out == b"\x04\x0a\x05ERROR\x03400"
        sock.sendall(out)
        assert _wait_handshake_failure(mon) in (
            zmq.EVENT_HANDSHAKE_FAILED_AUTH,
            zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
        )
    req.disable_monitor()


def test_interop_triomq_server_without_authenticator(ctx: Zmq, listener: socket.socket) -> None:
    _libzmq_client(ctx, listener.getsockname()[1])
    sock, _ = listener.accept()
    with sock:
        peer = RawPeer(sock, ZMTPConnection(SocketType.REP, server_mech(authenticate=False)))
        with pytest.raises(AuthenticationError):
            peer.next_event()
        assert peer.conn.state is ConnectionState.CLOSED
