"""PLAIN and CURVE between triomq sockets and libzmq (pyzmq) sockets, both ways,
with triomq's authenticator on one side and libzmq's ZAP handler (``zmq.auth``)
on the other.

pyzmq sockets are blocking, driven from worker threads, with LINGER 0 and
receive timeouts; everything runs on 127.0.0.1, under ``trio.fail_after``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

import triomq
from triomq import auth

TEST_TIMEOUT = 20
TIMEOUT_MS = 5000
AUTH = triomq.FailureKind.AUTH

SERVER_PUBLIC, SERVER_SECRET = triomq.curve_keypair()
CLIENT_PUBLIC, CLIENT_SECRET = triomq.curve_keypair()
OTHER_PUBLIC, OTHER_SECRET = triomq.curve_keypair()

CURVE_SERVER = {"curve_server": True, "curve_secretkey": SERVER_SECRET}


def curve_client(
    public: bytes = CLIENT_PUBLIC, secret: bytes = CLIENT_SECRET, server: bytes = SERVER_PUBLIC
) -> dict[str, Any]:
    return {"curve_serverkey": server, "curve_publickey": public, "curve_secretkey": secret}


class ZSockets:
    """Blocking pyzmq sockets for one test, closed at its end."""

    def __init__(self, ctx: zmq.Context[Any]) -> None:
        self.ctx = ctx
        self.made: list[zmq.Socket[Any]] = []
        self.monitored: list[zmq.Socket[Any]] = []

    def socket(self, kind: int, **options: Any) -> zmq.Socket[Any]:
        sock = self.ctx.socket(kind)
        self.made.append(sock)
        sock.linger = 0
        sock.rcvtimeo = TIMEOUT_MS
        sock.sndtimeo = TIMEOUT_MS
        for name, value in options.items():
            setattr(sock, name, value)
        return sock

    def monitor(self, sock: zmq.Socket[Any]) -> zmq.Socket[Any]:
        mon = sock.get_monitor_socket()
        self.monitored.append(sock)
        self.made.append(mon)
        return mon

    def close_one(self, sock: zmq.Socket[Any]) -> None:
        if sock in self.monitored:
            # the monitor's inproc address is named after the fd: free it for reuse
            sock.disable_monitor()
            self.monitored.remove(sock)
        sock.close(linger=0)

    def close(self) -> None:
        # stop monitors while their PAIR sockets are open (else libzmq blocks)
        for sock in list(self.monitored):
            self.close_one(sock)
        for sock in self.made:
            sock.close(linger=0)


@pytest.fixture
def zs(zctx: zmq.Context[Any]) -> Iterator[ZSockets]:
    sockets = ZSockets(zctx)
    try:
        yield sockets
    finally:
        sockets.close()


@pytest.fixture
def zap_ctx() -> Iterator[zmq.Context[Any]]:
    """A context of its own for a libzmq ZAP handler (one per context)."""
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        yield ctx
    finally:
        ctx.destroy(linger=0)


@pytest.fixture
def zap(zap_ctx: zmq.Context[Any]) -> Iterator[ThreadAuthenticator]:
    authenticator = ThreadAuthenticator(zap_ctx)
    authenticator.start()
    try:
        yield authenticator
    finally:
        authenticator.stop()


async def z(fn: Any, *args: Any) -> Any:
    return await trio.to_thread.run_sync(fn, *args)


def zbind(sock: zmq.Socket[Any]) -> str:
    sock.bind("tcp://127.0.0.1:*")
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


def handshake_outcome(mon: zmq.Socket[Any]) -> tuple[str, int]:
    """(Blocking) the first handshake event libzmq reports, and its value."""
    while mon.poll(TIMEOUT_MS):
        event = recv_monitor_message(mon)
        kind = zmq.Event(event["event"])
        if kind.name.startswith("HANDSHAKE"):
            return kind.name, int(event["value"])
    raise AssertionError("libzmq reported no handshake outcome")


def recv_with_user_id(sock: zmq.Socket[Any]) -> tuple[bytes, str | None]:
    frame = sock.recv(copy=False)
    return frame.bytes, frame.get("User-Id")


async def next_event(events: Any, kind: type[Any]) -> Any:
    async for event in events:
        if isinstance(event, kind):
            return event
    raise AssertionError(f"monitor closed before a {kind.__name__} event")


# ---------------------------------------------------------------- triomq servers, libzmq clients


@pytest.mark.parametrize("with_authenticator", [False, True], ids=["any_key", "key_set"])
async def test_triomq_curve_server_libzmq_client(zs: ZSockets, with_authenticator: bool) -> None:
    options: dict[str, Any] = dict(CURVE_SERVER)
    if with_authenticator:
        options["authenticator"] = auth.curve_keys({CLIENT_PUBLIC: "carol"})
    with trio.fail_after(TEST_TIMEOUT):
        async with triomq.open_socket(triomq.REP, linger=0, **options) as rep:
            async with rep.monitor() as events:
                endpoint = await rep.bind("tcp://127.0.0.1:0")
                req = zs.socket(
                    zmq.REQ,
                    curve_serverkey=SERVER_PUBLIC,
                    curve_publickey=CLIENT_PUBLIC,
                    curve_secretkey=CLIENT_SECRET,
                )
                await z(req.connect, endpoint)
                await z(req.send_multipart, [b"secret", b"request"])
                assert await rep.recv_multipart() == [b"secret", b"request"]
                await rep.send(b"encrypted reply")
                assert await z(req.recv) == b"encrypted reply"
                ok = await next_event(events, triomq.HandshakeSucceeded)
                assert ok.user_id == ("carol" if with_authenticator else "")


async def test_triomq_plain_server_libzmq_client(zs: ZSockets) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with triomq.open_socket(
            triomq.ROUTER,
            linger=0,
            plain_server=True,
            authenticator=auth.passwords({"alice": "secret"}),
        ) as router:
            async with router.monitor() as events:
                endpoint = await router.bind("tcp://127.0.0.1:0")
                dealer = zs.socket(
                    zmq.DEALER, plain_username=b"alice", plain_password=b"secret", routing_id=b"a"
                )
                await z(dealer.connect, endpoint)
                await z(dealer.send, b"hi")
                assert await router.recv_multipart() == [b"a", b"hi"]
                await router.send_multipart([b"a", b"hello alice"])
                assert await z(dealer.recv) == b"hello alice"
                ok = await next_event(events, triomq.HandshakeSucceeded)
                assert ok.user_id == "alice"


@pytest.mark.parametrize(
    "bad",
    ["wrong_password", "unknown_user", "no_authenticator", "unknown_curve_key", "wrong_server_key"],
)
async def test_libzmq_clients_with_bad_credentials_refused(zs: ZSockets, bad: str) -> None:
    """The triomq server reports AUTH, libzmq reports an auth failure (or at least a
    failed handshake), and a good libzmq client gets through the same socket afterwards."""
    passwords = auth.passwords({"alice": "secret"})
    server_options: dict[str, Any]
    if bad in ("wrong_password", "unknown_user", "no_authenticator"):
        server_options = {"plain_server": True}
        if bad != "no_authenticator":
            server_options["authenticator"] = passwords
        good = {"plain_username": b"alice", "plain_password": b"secret"}
        bad_options = {
            "wrong_password": {"plain_username": b"alice", "plain_password": b"guess"},
            "unknown_user": {"plain_username": b"mallory", "plain_password": b"secret"},
            "no_authenticator": good,
        }[bad]
    else:
        server_options = {**CURVE_SERVER, "authenticator": auth.curve_keys([CLIENT_PUBLIC])}
        good = curve_client()
        bad_options = (
            curve_client(OTHER_PUBLIC, OTHER_SECRET)
            if bad == "unknown_curve_key"
            else curve_client(server=OTHER_PUBLIC)
        )
    with trio.fail_after(TEST_TIMEOUT):
        async with triomq.open_socket(triomq.PULL, linger=0, **server_options) as pull:
            async with pull.monitor() as events:
                endpoint = await pull.bind("tcp://127.0.0.1:0")
                push = zs.socket(zmq.PUSH, **bad_options)
                mon = zs.monitor(push)
                await z(push.connect, endpoint)
                failed = await next_event(events, triomq.HandshakeFailed)
                assert failed.kind is AUTH, failed
                if bad != "wrong_server_key":
                    # (PLAIN's refusal goes out in libzmq's own ERROR spelling) libzmq
                    # reports the ZAP status, as from a libzmq server. With a wrong
                    # server key it reports no handshake event at all, as it does
                    # against a libzmq server, which just hangs up.
                    assert await z(handshake_outcome, mon) == ("HANDSHAKE_FAILED_AUTH", 400)
                await z(zs.close_one, push)
                if bad == "no_authenticator":
                    return
                good_push = zs.socket(zmq.PUSH, **good)
                await z(good_push.connect, endpoint)
                await z(good_push.send, b"good")
                assert await pull.recv() == b"good"


# ---------------------------------------------------------------- libzmq servers, triomq clients


async def test_libzmq_curve_server_triomq_client(zs: ZSockets) -> None:
    """A libzmq CURVE server with no ZAP handler lets in any client with its public key."""
    with trio.fail_after(TEST_TIMEOUT):
        rep = zs.socket(zmq.REP, curve_server=True, curve_secretkey=SERVER_SECRET)
        endpoint = await z(zbind, rep)
        async with triomq.open_socket(triomq.REQ, linger=0, **curve_client()) as req:
            await req.connect(endpoint)
            await req.send_multipart([b"from", b"triomq"])
            assert await z(rep.recv_multipart) == [b"from", b"triomq"]
            await z(rep.send, b"from libzmq")
            assert await req.recv() == b"from libzmq"


async def test_libzmq_curve_server_refuses_wrong_server_key(zs: ZSockets) -> None:
    """libzmq closes without a word when it cannot open our HELLO: triomq reports AUTH anyway."""
    with trio.fail_after(TEST_TIMEOUT):
        rep = zs.socket(zmq.REP, curve_server=True, curve_secretkey=SERVER_SECRET)
        mon = zs.monitor(rep)
        endpoint = await z(zbind, rep)
        async with triomq.open_socket(
            triomq.REQ, linger=0, **curve_client(server=OTHER_PUBLIC)
        ) as req:
            async with req.monitor() as events:
                await req.connect(endpoint)
                failed = await next_event(events, triomq.HandshakeFailed)
                assert failed.kind is AUTH and "CURVE" in failed.reason
        name, _ = await z(handshake_outcome, mon)
        assert name == "HANDSHAKE_FAILED_PROTOCOL"


async def test_libzmq_plain_server_without_zap_refuses_triomq_client(zs: ZSockets) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        rep = zs.socket(zmq.REP, plain_server=True)
        endpoint = await z(zbind, rep)
        async with triomq.open_socket(
            triomq.REQ, linger=0, plain_username="alice", plain_password="secret"
        ) as req:
            async with req.monitor() as events:
                await req.connect(endpoint)
                failed = await next_event(events, triomq.HandshakeFailed)
                assert failed.kind is AUTH


async def test_libzmq_zap_handler_judges_triomq_plain_clients(
    zap_ctx: zmq.Context[Any], zap: ThreadAuthenticator
) -> None:
    zap.configure_plain(domain="*", passwords={"alice": "secret"})
    zsockets = ZSockets(zap_ctx)
    try:
        with trio.fail_after(TEST_TIMEOUT):
            pull = zsockets.socket(zmq.PULL, plain_server=True)
            endpoint = await z(zbind, pull)
            async with triomq.open_socket(
                triomq.PUSH, linger=0, plain_username="alice", plain_password="guess"
            ) as push:
                async with push.monitor() as events:
                    await push.connect(endpoint)
                    failed = await next_event(events, triomq.HandshakeFailed)
                    assert failed.kind is AUTH and "400" in failed.reason
            async with triomq.open_socket(
                triomq.PUSH, linger=0, plain_username="alice", plain_password="secret"
            ) as push:
                await push.connect(endpoint)
                await push.send(b"let me in")
                assert await z(recv_with_user_id, pull) == (b"let me in", "alice")
    finally:
        zsockets.close()


async def test_libzmq_zap_handler_judges_triomq_curve_clients_from_key_files(
    zap_ctx: zmq.Context[Any], zap: ThreadAuthenticator, tmp_path: Path
) -> None:
    """Key files written by triomq.auth, read by pyzmq's ZAP handler."""
    allowed_dir = tmp_path / "allowed"
    allowed_dir.mkdir()
    _, secret_file = auth.create_certificates(allowed_dir, "client")
    client_public, client_secret = auth.load_certificate(secret_file)
    assert client_secret is not None
    zap.configure_curve(domain="*", location=str(allowed_dir))
    zsockets = ZSockets(zap_ctx)
    try:
        with trio.fail_after(TEST_TIMEOUT):
            pull = zsockets.socket(zmq.PULL, curve_server=True, curve_secretkey=SERVER_SECRET)
            endpoint = await z(zbind, pull)
            async with triomq.open_socket(
                triomq.PUSH, linger=0, **curve_client(OTHER_PUBLIC, OTHER_SECRET)
            ) as push:
                async with push.monitor() as events:
                    await push.connect(endpoint)
                    failed = await next_event(events, triomq.HandshakeFailed)
                    assert failed.kind is AUTH and "400" in failed.reason
            async with triomq.open_socket(
                triomq.PUSH, linger=0, **curve_client(client_public, client_secret)
            ) as push:
                await push.connect(endpoint)
                await push.send(b"known key")
                assert await z(recv_with_user_id, pull) == (b"known key", client_public.decode())
    finally:
        zsockets.close()


@pytest.mark.parametrize("triomq_binds", [True, False], ids=["triomq_binds", "libzmq_binds"])
async def test_null_with_zap_and_an_authenticator_on_both_ends(
    zap_ctx: zmq.Context[Any], zap: ThreadAuthenticator, triomq_binds: bool
) -> None:
    """libzmq asks its ZAP handler at once and sends READY after the reply;
    triomq's dialer does the same, its acceptor waits for the peer's READY:
    whichever binds, neither waits for the other."""
    zap.allow("127.0.0.1")
    asked: list[triomq.AuthRequest] = []

    async def record(request: triomq.AuthRequest) -> str:
        asked.append(request)
        return "libzmq peer"

    zsockets = ZSockets(zap_ctx)
    try:
        with trio.fail_after(TEST_TIMEOUT):
            pull = zsockets.socket(zmq.PULL, zap_domain=b"global")
            async with triomq.open_socket(triomq.PUSH, linger=0, authenticator=record) as push:
                async with push.monitor() as events:
                    if triomq_binds:
                        endpoint = await push.bind("tcp://127.0.0.1:0")
                        await z(pull.connect, endpoint)
                    else:
                        await push.connect(await z(zbind, pull))
                    ok = await next_event(events, triomq.HandshakeSucceeded)
                    assert ok.user_id == "libzmq peer"
                    await push.send(b"both judged")
                    assert await z(pull.recv) == b"both judged"
        assert [request.mechanism for request in asked] == ["NULL"]
    finally:
        zsockets.close()


@pytest.mark.parametrize("curve", [False, True], ids=["null", "curve"])
async def test_libzmq_peer_with_large_metadata_is_taken(zs: ZSockets, curve: bool) -> None:
    """libzmq sends ZMQ_METADATA in READY (or INITIATE) without a size limit;
    triomq took only 8 KiB handshake frames, and refused such peers."""
    cert = b"c" * 9000
    options: dict[str, Any] = {}
    peer_options: dict[str, Any] = {}
    if curve:
        options = CURVE_SERVER
        peer_options = {
            "curve_serverkey": SERVER_PUBLIC,
            "curve_publickey": CLIENT_PUBLIC,
            "curve_secretkey": CLIENT_SECRET,
        }
    with trio.fail_after(TEST_TIMEOUT):
        async with triomq.open_socket(triomq.PULL, linger=0, **options) as pull:
            endpoint = await pull.bind("tcp://127.0.0.1:0")
            push = zs.socket(zmq.PUSH, **peer_options)
            push.setsockopt(zmq.METADATA, b"X-Cert:" + cert)
            await z(push.connect, endpoint)
            await z(push.send, b"with a certificate")
            message, peer = await pull.recv_multipart_with_peer()
    assert message == [b"with a certificate"]
    assert peer is not None and peer.metadata["X-Cert"] == cert
