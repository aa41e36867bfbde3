"""Security at the socket level: PLAIN and CURVE between triomq sockets, the
authenticator option and the policies of ``triomq.auth``, and bad peers.

Every refusal is checked twice: the monitor reports it (with the right
``FailureKind`` and a reason), and a good peer still gets through the same
socket afterwards (or meanwhile).
"""

from __future__ import annotations

import os
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import zmq.auth

import triomq
from triomq import auth
from triomq._mechanisms._curve import CurveMechanism
from triomq._mechanisms._select import make_mechanism
from triomq._options import SocketOptions
from triomq._socket_type import SocketType
from triomq._zmtp._commands import encode_metadata
from triomq._zmtp._connection import MAX_METADATA_SIZE, ZMTPConnection
from triomq._zmtp._events import NEED_DATA, HandshakeComplete

TIMEOUT = 10
AUTH = triomq.FailureKind.AUTH

SERVER_PUBLIC, SERVER_SECRET = triomq.curve_keypair()
CLIENT_PUBLIC, CLIENT_SECRET = triomq.curve_keypair()
OTHER_PUBLIC, OTHER_SECRET = triomq.curve_keypair()

Events = trio.MemoryReceiveChannel[triomq.MonitorEvent]


async def next_event(
    events: Events, kind: type[Any], predicate: Callable[[Any], bool] = lambda e: True
) -> Any:
    async for event in events:
        if isinstance(event, kind) and predicate(event):
            return event
    raise AssertionError(f"monitor closed before a {kind.__name__} event")


async def no_pipes_left(sock: triomq.Socket, events: Events) -> None:
    """Wait until the socket holds no pipe: refused peers never got one, good ones
    are gone (each pipe's end is followed by a Disconnected event)."""
    while sock.statistics().pipes:
        await events.receive()


@asynccontextmanager
async def server(**options: Any) -> AsyncIterator[tuple[triomq.Socket, str, Events]]:
    """A PULL socket bound on 127.0.0.1, with its monitor."""
    async with triomq.open_socket(triomq.PULL, linger=0, **options) as pull:
        async with pull.monitor() as events:
            endpoint = await pull.bind("tcp://127.0.0.1:0")
            yield pull, endpoint, events


@asynccontextmanager
async def client(endpoint: str, **options: Any) -> AsyncIterator[tuple[triomq.Socket, Events]]:
    """A PUSH socket connected to *endpoint*, with its monitor."""
    async with triomq.open_socket(triomq.PUSH, linger=0, **options) as push:
        async with push.monitor() as events:
            await push.connect(endpoint)
            yield push, events


async def good_peer_gets_through(
    pull: triomq.Socket, endpoint: str, tag: bytes, **options: Any
) -> None:
    async with client(endpoint, **options) as (push, _):
        await push.send(tag)
        assert await pull.recv() == tag


def curve_client_options(
    public: bytes = CLIENT_PUBLIC, secret: bytes = CLIENT_SECRET
) -> dict[str, Any]:
    return {"curve_serverkey": SERVER_PUBLIC, "curve_publickey": public, "curve_secretkey": secret}


CURVE_SERVER = {"curve_server": True, "curve_secretkey": SERVER_SECRET}
GOOD_PLAIN = {"plain_username": "alice", "plain_password": "secret"}


def greeting(mechanism: bytes) -> bytes:
    return b"\xff" + bytes(7) + b"\x01\x7f\x03\x01" + mechanism.ljust(20, b"\x00") + bytes(32)


def frame(body: bytes, flags: int = 0) -> bytes:
    return bytes((flags, len(body))) + body


def command(name: bytes, data: bytes = b"") -> bytes:
    return frame(bytes((len(name),)) + name + data, 0x04)


def hello(username: bytes, password: bytes) -> bytes:
    return command(
        b"HELLO", bytes((len(username),)) + username + bytes((len(password),)) + password
    )


async def open_raw(endpoint: str) -> trio.SocketStream:
    host, _, port = endpoint.removeprefix("tcp://").rpartition(":")
    return await trio.open_tcp_stream(host, int(port))


async def read_until_closed(stream: trio.abc.Stream) -> bytes:
    data = bytearray()
    while True:
        try:
            chunk = await stream.receive_some(65536)
        except trio.BrokenResourceError:
            return bytes(data)
        if not chunk:
            return bytes(data)
        data += chunk


# ---------------------------------------------------------------- PLAIN


async def test_plain_round_trip_carries_the_user_id() -> None:
    with trio.fail_after(TIMEOUT):
        async with triomq.open_socket(
            triomq.REP,
            linger=0,
            plain_server=True,
            authenticator=auth.passwords({"alice": "secret"}),
        ) as rep:
            async with rep.monitor() as events:
                endpoint = await rep.bind("tcp://127.0.0.1:0")
                async with triomq.open_socket(triomq.REQ, linger=0, **GOOD_PLAIN) as req:
                    await req.connect(endpoint)
                    await req.send(b"ping")
                    assert await rep.recv() == b"ping"
                    await rep.send(b"pong")
                    assert await req.recv() == b"pong"
                ok = await next_event(events, triomq.HandshakeSucceeded)
                assert ok.user_id == "alice" and ok.peer_socket_type == "REQ"


@pytest.mark.parametrize(
    ("credentials", "reason"),
    [
        ({"plain_username": "alice", "plain_password": "guess"}, "wrong password for user 'alice'"),
        ({"plain_username": "bob", "plain_password": "secret"}, "unknown user 'bob'"),
    ],
)
async def test_plain_bad_credentials_refused(credentials: dict[str, str], reason: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with server(plain_server=True, authenticator=auth.passwords({"alice": "secret"})) as (
            pull,
            endpoint,
            events,
        ):
            async with client(endpoint, **credentials) as (_, bad_events):
                failed = await next_event(events, triomq.HandshakeFailed)
                assert failed.kind is AUTH and reason in failed.reason
                theirs = await next_event(bad_events, triomq.HandshakeFailed)
                assert theirs.kind is AUTH and "400" in theirs.reason
                await good_peer_gets_through(pull, endpoint, b"good", **GOOD_PLAIN)
            await no_pipes_left(pull, events)


async def test_plain_server_without_authenticator_refuses_everyone() -> None:
    with trio.fail_after(TIMEOUT):
        async with server(plain_server=True) as (_, endpoint, events):
            async with client(endpoint, **GOOD_PLAIN) as (_, client_events):
                failed = await next_event(events, triomq.HandshakeFailed)
                assert failed.kind is AUTH and "no authenticator" in failed.reason
                theirs = await next_event(client_events, triomq.HandshakeFailed)
                assert theirs.kind is AUTH


# ---------------------------------------------------------------- CURVE


async def test_curve_server_without_authenticator_accepts_key_holders() -> None:
    with trio.fail_after(TIMEOUT):
        async with server(**CURVE_SERVER) as (pull, endpoint, events):
            # any client key will do, as long as it knows the server's public key
            await good_peer_gets_through(pull, endpoint, b"one", **curve_client_options())
            await good_peer_gets_through(
                pull, endpoint, b"two", **curve_client_options(OTHER_PUBLIC, OTHER_SECRET)
            )
            ok = await next_event(events, triomq.HandshakeSucceeded)
            assert ok.user_id == ""


async def test_curve_keys_authenticator_names_the_user() -> None:
    with trio.fail_after(TIMEOUT):
        async with server(
            **CURVE_SERVER, authenticator=auth.curve_keys({CLIENT_PUBLIC: "carol"})
        ) as (
            pull,
            endpoint,
            events,
        ):
            await good_peer_gets_through(pull, endpoint, b"hi", **curve_client_options())
            ok = await next_event(events, triomq.HandshakeSucceeded)
            assert ok.user_id == "carol"


async def test_curve_unknown_client_key_refused() -> None:
    with trio.fail_after(TIMEOUT):
        async with server(**CURVE_SERVER, authenticator=auth.curve_keys([CLIENT_PUBLIC])) as (
            pull,
            endpoint,
            events,
        ):
            async with client(endpoint, **curve_client_options(OTHER_PUBLIC, OTHER_SECRET)) as (
                _,
                theirs,
            ):
                failed = await next_event(events, triomq.HandshakeFailed)
                assert failed.kind is AUTH
                assert f"CURVE key not allowed: {OTHER_PUBLIC.decode()}" in failed.reason
                refused = await next_event(theirs, triomq.HandshakeFailed)
                assert refused.kind is AUTH and "400" in refused.reason
                await good_peer_gets_through(pull, endpoint, b"good", **curve_client_options())
                ok = await next_event(events, triomq.HandshakeSucceeded)
                assert ok.user_id == CLIENT_PUBLIC.decode()


async def test_curve_wrong_server_key_refused() -> None:
    with trio.fail_after(TIMEOUT):
        async with server(**CURVE_SERVER) as (pull, endpoint, events):
            wrong = {**curve_client_options(), "curve_serverkey": OTHER_PUBLIC}
            async with client(endpoint, **wrong) as (_, theirs):
                failed = await next_event(events, triomq.HandshakeFailed)
                assert failed.kind is AUTH and "cannot open HELLO" in failed.reason
                refused = await next_event(theirs, triomq.HandshakeFailed)
                assert refused.kind is AUTH
                await good_peer_gets_through(pull, endpoint, b"good", **curve_client_options())


async def test_mechanism_mismatch_is_a_protocol_failure() -> None:
    with trio.fail_after(TIMEOUT):
        async with server(**CURVE_SERVER) as (pull, endpoint, events):
            async with client(endpoint, **GOOD_PLAIN):
                failed = await next_event(events, triomq.HandshakeFailed)
                assert (
                    failed.kind is triomq.FailureKind.PROTOCOL
                    and "mechanism mismatch" in failed.reason
                )
                await good_peer_gets_through(pull, endpoint, b"good", **curve_client_options())


async def raw_curve_client(endpoint: str) -> tuple[trio.SocketStream, ZMTPConnection]:
    """A hand-driven CURVE PUSH client that has completed its handshake."""
    mech = CurveMechanism(
        as_server=False,
        authenticate=False,
        public_key=CLIENT_PUBLIC,
        secret_key=CLIENT_SECRET,
        server_key=SERVER_PUBLIC,
    )
    conn = ZMTPConnection(SocketType.PUSH, mech)
    stream = await open_raw(endpoint)
    await stream.send_all(conn.data_to_send())
    while True:
        conn.receive_data(await stream.receive_some(65536))
        while (event := conn.next_event()) is not NEED_DATA:
            if isinstance(event, HandshakeComplete):
                return stream, conn
        if out := conn.data_to_send():
            await stream.send_all(out)


async def test_curve_message_that_fails_to_decrypt_closes_the_connection() -> None:
    with trio.fail_after(TIMEOUT):
        async with server(**CURVE_SERVER) as (pull, endpoint, events):
            stream, conn = await raw_curve_client(endpoint)
            async with stream:
                await stream.send_all(conn.encode_message([b"genuine"]))
                assert await pull.recv() == b"genuine"
                forged = bytearray(conn.encode_message([b"forged"]))
                forged[-1] ^= 0x01
                await stream.send_all(bytes(forged) + conn.encode_message([b"after"]))
                gone = await next_event(events, triomq.Disconnected)
                assert "cannot open MESSAGE" in gone.reason
                await read_until_closed(stream)
            await good_peer_gets_through(pull, endpoint, b"good", **curve_client_options())
            with pytest.raises(trio.WouldBlock):
                pull.recv_nowait()  # neither the forged message nor the one after it


# ---------------------------------------------------------------- bad peers


@pytest.mark.parametrize("stall", ["silent", "greeting_only", "after_hello"])
async def test_stalled_peer_times_out(stall: str) -> None:
    opening = {
        "silent": b"",
        "greeting_only": greeting(b"PLAIN"),
        "after_hello": greeting(b"PLAIN") + hello(b"alice", b"secret"),
    }[stall]
    with trio.fail_after(TIMEOUT):
        async with server(
            plain_server=True, authenticator=auth.passwords({"alice": "secret"}), handshake_ivl=0.3
        ) as (pull, endpoint, events):
            stream = await open_raw(endpoint)
            async with stream:
                await stream.send_all(opening)
                # the stalled peer does not hold up a good one
                await good_peer_gets_through(pull, endpoint, b"meanwhile", **GOOD_PLAIN)
                failed = await next_event(events, triomq.HandshakeFailed)
                assert failed.kind is triomq.FailureKind.TIMEOUT and "timed out" in failed.reason
                await read_until_closed(stream)
            await no_pipes_left(pull, events)


async def test_slow_authenticator_times_out() -> None:
    async def never(request: triomq.AuthRequest) -> bool:
        await trio.sleep_forever()
        raise AssertionError

    with trio.fail_after(TIMEOUT):
        async with server(plain_server=True, authenticator=never, handshake_ivl=0.3) as (
            _,
            endpoint,
            events,
        ):
            async with client(endpoint, **GOOD_PLAIN):
                failed = await next_event(events, triomq.HandshakeFailed)
                assert failed.kind is triomq.FailureKind.TIMEOUT


async def test_frames_before_authenticating_are_refused() -> None:
    with trio.fail_after(TIMEOUT):
        async with server(plain_server=True, authenticator=auth.passwords({"alice": "secret"})) as (
            pull,
            endpoint,
            events,
        ):
            # a message instead of HELLO
            stream = await open_raw(endpoint)
            async with stream:
                await stream.send_all(greeting(b"PLAIN") + frame(b"sneaky"))
                await read_until_closed(stream)
            failed = await next_event(events, triomq.HandshakeFailed)
            assert (
                failed.kind is triomq.FailureKind.PROTOCOL
                and "before the handshake" in failed.reason
            )

            # a refused HELLO with the rest of the handshake and a message pipelined behind it
            stream = await open_raw(endpoint)
            async with stream:
                await stream.send_all(
                    greeting(b"PLAIN")
                    + hello(b"alice", b"guess")
                    + command(b"INITIATE", b"\x0bSocket-Type\x00\x00\x00\x04PUSH")
                    + frame(b"sneaky")
                )
                await read_until_closed(stream)
            failed = await next_event(events, triomq.HandshakeFailed)
            assert failed.kind is AUTH
            await good_peer_gets_through(pull, endpoint, b"good", **GOOD_PLAIN)
            with pytest.raises(trio.WouldBlock):
                pull.recv_nowait()
            await no_pipes_left(pull, events)


@pytest.mark.parametrize("mechanism", [b"PLAIN", b"CURVE"])
async def test_huge_frame_before_authenticating_is_refused_at_its_header(mechanism: bytes) -> None:
    options: dict[str, Any] = (
        dict(CURVE_SERVER)
        if mechanism == b"CURVE"
        else {"plain_server": True, "authenticator": auth.passwords({"alice": "secret"})}
    )
    good = curve_client_options() if mechanism == b"CURVE" else GOOD_PLAIN
    with trio.fail_after(TIMEOUT):
        async with server(**options) as (pull, endpoint, events):
            stream = await open_raw(endpoint)
            async with stream:
                # a 1 TiB command: only its 9-byte header is ever sent
                await stream.send_all(greeting(mechanism) + b"\x06" + struct.pack(">Q", 1 << 40))
                failed = await next_event(events, triomq.HandshakeFailed)
                assert failed.kind is triomq.FailureKind.PROTOCOL
                await read_until_closed(stream)
            await good_peer_gets_through(pull, endpoint, b"good", **good)


# ---------------------------------------------------------------- the authenticator option


async def test_authenticator_is_asked_once_per_handshake_with_the_request() -> None:
    requests: list[triomq.AuthRequest] = []

    async def record(request: triomq.AuthRequest) -> str:
        requests.append(request)
        return "dave"

    with trio.fail_after(TIMEOUT):
        async with triomq.open_socket(
            triomq.ROUTER, linger=0, zap_domain="global", authenticator=record, **CURVE_SERVER
        ) as router:
            endpoint = await router.bind("tcp://127.0.0.1:0")
            async with triomq.open_socket(
                triomq.DEALER, linger=0, routing_id=b"d1", **curve_client_options()
            ) as dealer:
                await dealer.connect(endpoint)
                await dealer.send(b"x")
                assert await router.recv_multipart() == [b"d1", b"x"]
    (request,) = requests
    assert request.mechanism == "CURVE" and request.address == "127.0.0.1"
    assert request.routing_id == b"d1" and request.domain == "global"
    assert request.public_key == triomq.z85_decode(CLIENT_PUBLIC)
    assert request.username is None and request.password is None


class Unjudgeable:
    """An answer whose truth cannot be told."""

    def __bool__(self) -> bool:
        raise RuntimeError("no truth value")


@pytest.mark.parametrize(
    ("answer", "allowed", "reason"),
    [
        (True, True, ""),
        (b"bytes-id", True, ""),
        (False, False, "denied"),
        (None, False, "denied"),
        (auth.Deny("not on a Tuesday"), False, "not on a Tuesday"),
        # a user id that cannot be UTF-8 denies (it used to end the whole socket)
        ("caf\udce9", False, "surrogates not allowed"),
        (Unjudgeable(), False, "RuntimeError: no truth value"),
    ],
)
async def test_authenticator_answers(answer: Any, allowed: bool, reason: str) -> None:
    def sync_policy(request: triomq.AuthRequest) -> Any:  # a plain function works too
        return answer

    with trio.fail_after(TIMEOUT):
        async with server(plain_server=True, authenticator=sync_policy) as (pull, endpoint, events):
            if allowed:
                await good_peer_gets_through(pull, endpoint, b"in", **GOOD_PLAIN)
                ok = await next_event(events, triomq.HandshakeSucceeded)
                assert ok.user_id == ("bytes-id" if isinstance(answer, bytes) else "")
            else:
                async with client(endpoint, **GOOD_PLAIN):
                    failed = await next_event(events, triomq.HandshakeFailed)
                    assert failed.kind is AUTH and failed.reason.endswith(reason)


async def test_authenticator_that_raises_denies_and_the_socket_carries_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    async def flaky(request: triomq.AuthRequest) -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("database down")
        return True

    with trio.fail_after(TIMEOUT):
        async with server(plain_server=True, authenticator=flaky) as (pull, endpoint, events):
            async with client(endpoint, **GOOD_PLAIN) as (push, _):
                failed = await next_event(events, triomq.HandshakeFailed)
                assert failed.kind is AUTH and "RuntimeError: database down" in failed.reason
                # the client reconnects, and the authenticator lets it in this time
                await push.send(b"retry")
                assert await pull.recv() == b"retry"
    assert "authenticator raised" in caplog.text


async def test_an_unexpected_error_in_a_handshake_costs_only_that_connection(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    original = triomq.Socket.authenticate
    calls = 0

    async def buggy(self: triomq.Socket, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise KeyError("a bug in the handshake")  # stands for any bug of ours
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(triomq.Socket, "authenticate", buggy)
    with trio.fail_after(TIMEOUT):
        async with server(plain_server=True, authenticator=auth.passwords({"alice": "secret"})) as (
            pull,
            endpoint,
            events,
        ):
            async with client(endpoint, **GOOD_PLAIN) as (push, _):
                failed = await next_event(events, triomq.HandshakeFailed)
                assert failed.kind is triomq.FailureKind.PROTOCOL
                assert failed.reason == "internal error: KeyError: 'a bug in the handshake'"
                # the socket lives on: the client's next attempt gets in
                await push.send(b"after the bug")
                assert await pull.recv() == b"after the bug"
    assert calls == 2
    assert "unexpected error in a handshake" in caplog.text


def properties(*pairs: tuple[bytes, bytes]) -> bytes:
    return b"".join(
        bytes((len(name),)) + name + struct.pack(">I", len(value)) + value for name, value in pairs
    )


@pytest.mark.parametrize(
    ("pairs", "outcome"),
    [
        ([(b"Identity", b"admin")], "denied"),
        ([(b"identity", b"admin")], "denied"),  # property names ignore case (RFC 37)
        ([(b"IDENTITY", b"admin")], "denied"),
        # two spellings: refused before any authenticator sees it (which one
        # would it judge, and which would the ROUTER route by?)
        ([(b"identity", b"guest"), (b"Identity", b"admin")], "refused"),
    ],
)
async def test_authenticator_judges_the_routing_id_the_socket_uses(
    pairs: list[tuple[bytes, bytes]], outcome: str
) -> None:
    seen: list[bytes] = []

    async def no_admin(request: triomq.AuthRequest) -> Any:
        seen.append(request.routing_id)
        return auth.Deny("reserved") if request.routing_id == b"admin" else True

    ready = properties((b"Socket-Type", b"DEALER"), *pairs)
    with trio.fail_after(TIMEOUT):
        async with triomq.open_socket(triomq.ROUTER, linger=0, authenticator=no_admin) as router:
            async with router.monitor() as events:
                endpoint = await router.bind("tcp://127.0.0.1:0")
                stream = await open_raw(endpoint)
                async with stream:
                    await stream.send_all(
                        greeting(b"NULL") + command(b"READY", ready) + frame(b"hello")
                    )
                    failed = await next_event(events, triomq.HandshakeFailed)
                    if outcome == "denied":
                        assert failed.kind is AUTH and failed.reason.endswith("reserved")
                        assert seen == [b"admin"]
                    else:
                        assert failed.kind is triomq.FailureKind.PROTOCOL
                        assert "given twice" in failed.reason
                        assert seen == []


async def test_null_with_authenticators_on_both_ends() -> None:
    """Each side holds its READY until its own authenticator answers; only the
    accepting side waits for the peer's READY first (it used to be both, and
    the handshake never completed)."""
    asked: dict[str, triomq.AuthRequest] = {}

    def judge(side: str) -> Callable[[triomq.AuthRequest], Any]:
        async def check(request: triomq.AuthRequest) -> str:
            asked[side] = request
            return f"seen by {side}"

        return check

    with trio.fail_after(TIMEOUT):
        async with triomq.open_socket(
            triomq.ROUTER, linger=0, authenticator=judge("router")
        ) as router:
            async with router.monitor() as events:
                endpoint = await router.bind("tcp://127.0.0.1:0")
                async with triomq.open_socket(
                    triomq.DEALER, linger=0, routing_id=b"d1", authenticator=judge("dealer")
                ) as dealer:
                    async with dealer.monitor() as dealer_events:
                        await dealer.connect(endpoint)
                        await dealer.send(b"hello")
                        message, peer = await router.recv_multipart_with_peer()
                        assert message == [b"d1", b"hello"]
                        assert peer is not None and peer.user_id == "seen by router"
                        ok = await next_event(dealer_events, triomq.HandshakeSucceeded)
                        assert ok.user_id == "seen by dealer"
                ok = await next_event(events, triomq.HandshakeSucceeded)
                assert ok.user_id == "seen by router"
    assert asked["router"].routing_id == b"d1"  # the acceptor knows the peer's Identity
    assert asked["dealer"].routing_id == b""  # the dialer asks before it arrives
    assert asked["dealer"].mechanism == asked["router"].mechanism == "NULL"


async def test_null_dialer_with_an_authenticator_refuses_the_server() -> None:
    with trio.fail_after(TIMEOUT):
        async with server() as (pull, endpoint, events):
            async with client(
                endpoint, authenticator=lambda request: auth.Deny("not this server")
            ) as (_, client_events):
                failed = await next_event(client_events, triomq.HandshakeFailed)
                assert failed.kind is AUTH and failed.reason.endswith("not this server")
                # the server hears the ZAP status, as from libzmq, and makes no pipe
                failed = await next_event(events, triomq.HandshakeFailed)
                assert failed.kind is AUTH and failed.reason.endswith("ERROR 400")
            assert pull.statistics().pipes == 0


@pytest.mark.parametrize(
    ("options", "mechanism", "then", "kind"),
    [
        # a NULL peer with an authenticator may refuse either side: AUTH
        ({}, b"NULL", command(b"ERROR", b"\x03400"), AUTH),
        # a PLAIN client judges no one: its status code is no refusal of the server
        (
            {"plain_server": True, "authenticator": auth.passwords({"alice": "secret"})},
            b"PLAIN",
            command(b"ERROR", b"\x03400"),
            triomq.FailureKind.PROTOCOL,
        ),
        # "closed" in a peer's text chooses nothing; a real hang-up is CLOSED
        ({}, b"NULL", command(b"ERROR", b"\x06closed"), triomq.FailureKind.PROTOCOL),
        ({}, b"NULL", b"", triomq.FailureKind.CLOSED),
    ],
)
async def test_peer_error_kinds(
    options: dict[str, Any], mechanism: bytes, then: bytes, kind: triomq.FailureKind
) -> None:
    with trio.fail_after(TIMEOUT):
        async with server(**options) as (_, endpoint, events):
            stream = await open_raw(endpoint)
            async with stream:
                await stream.send_all(greeting(mechanism) + then)
                if not then:
                    await stream.send_eof()
                failed = await next_event(events, triomq.HandshakeFailed)
                assert failed.kind is kind


async def test_peer_error_text_cannot_forge_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    forged = b"closed\nCRITICAL triomq: admin logged in"
    caplog.set_level("INFO", logger="triomq")
    with trio.fail_after(TIMEOUT):
        async with server() as (_, endpoint, events):
            stream = await open_raw(endpoint)
            async with stream:
                await stream.send_all(
                    greeting(b"NULL") + command(b"ERROR", bytes((len(forged),)) + forged)
                )
                failed = await next_event(events, triomq.HandshakeFailed)
    assert failed.reason.endswith(forged.decode())  # the event keeps the text as it came
    (record,) = [r for r in caplog.records if "admin logged in" in r.getMessage()]
    assert "\n" not in record.getMessage() and "\\nCRITICAL" in record.getMessage()


async def test_null_mechanism_with_address_policy() -> None:
    with trio.fail_after(TIMEOUT):
        async with server(authenticator=auth.deny_addresses("127.0.0.0/8")) as (
            _,
            endpoint,
            events,
        ):
            async with client(endpoint):
                failed = await next_event(events, triomq.HandshakeFailed)
                assert failed.kind is AUTH and "address denied: 127.0.0.1" in failed.reason
        async with server(authenticator=auth.allow_addresses("127.0.0.1")) as (pull, endpoint, _):
            await good_peer_gets_through(pull, endpoint, b"local")


# ---------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"curve_server": True}, "a CURVE server needs curve_secretkey"),
        ({"curve_serverkey": SERVER_PUBLIC}, "a CURVE client needs curve_secretkey"),
        (
            {"curve_server": True, "curve_secretkey": b"short"},
            "curve_secretkey: a CURVE key is 32 raw bytes",
        ),
        (
            {"curve_server": True, "curve_secretkey": "x" * 39 + "~"},
            "curve_secretkey: invalid Z85 character",
        ),
        (
            {
                "curve_serverkey": SERVER_PUBLIC,
                "curve_secretkey": CLIENT_SECRET,
                "curve_publickey": OTHER_PUBLIC,
            },
            "curve_publickey does not belong to curve_secretkey",
        ),
        (
            {"curve_serverkey": b"1" * 31, "curve_secretkey": CLIENT_SECRET},
            "curve_serverkey: a CURVE key is 32 raw bytes",
        ),
        (
            {
                "curve_server": True,
                "curve_serverkey": SERVER_PUBLIC,
                "curve_secretkey": SERVER_SECRET,
            },
            "exclusive",
        ),
        (
            {"curve_server": True, "curve_secretkey": SERVER_SECRET, "plain_server": True},
            "both CURVE and PLAIN",
        ),
        ({"plain_username": "u" * 256}, "plain_username is at most 255 bytes"),
        # keys without a role: not a NULL socket that accepts anyone in clear text
        ({"curve_secretkey": SERVER_SECRET}, "CURVE keys are set but no CURVE role"),
        (
            {"curve_secretkey": SERVER_SECRET, "curve_publickey": SERVER_PUBLIC},
            "set curve_server=True for a server",
        ),
        ({"curve_publickey": CLIENT_PUBLIC}, "or curve_serverkey"),
        ({"authenticator": "allow everyone"}, "authenticator must be an async callable"),
    ],
)
def test_bad_security_options_are_explained(options: dict[str, Any], message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        make_mechanism(SocketOptions(**options))


@pytest.mark.parametrize(
    ("metadata", "error", "message"),
    [
        ({"X-caf\u00e9": b"1"}, ValueError, "1 to 255 ASCII"),
        ({"": b"1"}, ValueError, "1 to 255 ASCII"),
        ({"X-" + "a" * 254: b"1"}, ValueError, "1 to 255 ASCII"),
        ({b"X-Raw": b"1"}, TypeError, "metadata names are str"),
        ({"X-Text": "1"}, TypeError, "must be bytes, not str"),
        ({"identity": b"admin"}, ValueError, "announces Identity itself"),
        ({"SOCKET-TYPE": b"ROUTER"}, ValueError, "announces Socket-Type itself"),
    ],
)
async def test_bad_metadata_is_refused_when_set(
    metadata: dict[Any, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        SocketOptions(metadata=metadata)
    # at open_socket, not at the first handshake (where it used to end the socket)
    with pytest.raises(error, match=message):
        async with triomq.open_socket(triomq.PULL, metadata=metadata):
            raise AssertionError("opened")


async def test_the_largest_metadata_we_accept_passes_the_largest_handshake() -> None:
    """Our metadata option is capped so that a peer with triomq's handshake
    frame limit takes it, even in CURVE's INITIATE with a 255-byte routing id."""
    overhead = len(encode_metadata({"X-Cert": b""}))
    cert = b"c" * (MAX_METADATA_SIZE - overhead)
    with pytest.raises(ValueError, match="more than"):
        SocketOptions(metadata={"X-Cert": cert + b"c"})
    with trio.fail_after(TIMEOUT):
        async with triomq.open_socket(triomq.ROUTER, linger=0, **CURVE_SERVER) as router:
            endpoint = await router.bind("tcp://127.0.0.1:0")
            async with triomq.open_socket(
                triomq.DEALER,
                linger=0,
                routing_id=b"r" * 255,
                metadata={"X-Cert": cert},
                **curve_client_options(),
            ) as dealer:
                await dealer.connect(endpoint)
                await dealer.send(b"big handshake")
                message, peer = await router.recv_multipart_with_peer()
    assert message == [b"r" * 255, b"big handshake"]
    assert peer is not None and peer.metadata["X-Cert"] == cert


def test_metadata_is_copied_when_set() -> None:
    metadata = {"X-" + "a" * 253: b"1"}  # the longest name
    options = SocketOptions(metadata=metadata)
    metadata["Identity"] = b"admin"  # too late: the options hold their own copy
    assert list(options.metadata) == ["X-" + "a" * 253]


async def test_curve_keys_without_a_role_fail_at_open_socket() -> None:
    with pytest.raises(ValueError, match="CURVE keys are set but no CURVE role"):
        async with triomq.open_socket(
            triomq.PULL, curve_secretkey=SERVER_SECRET, curve_publickey=SERVER_PUBLIC
        ):
            raise AssertionError("a socket given CURVE keys opened without CURVE")


def test_options_repr_leaves_the_secrets_out() -> None:
    options = SocketOptions(
        plain_username=b"alice", plain_password=b"hunter2", curve_secretkey=CLIENT_SECRET
    )
    text = repr(options)
    assert "hunter2" not in text and CLIENT_SECRET.decode() not in text
    assert "plain_password" not in text and "curve_secretkey" not in text
    assert "plain_username=b'alice'" in text  # the rest is still shown
    assert options.plain_password == b"hunter2"  # and still held


def test_security_options_pick_the_mechanism() -> None:
    assert make_mechanism(SocketOptions()).name == b"NULL"
    assert make_mechanism(SocketOptions(plain_password=b"pw")).name == b"PLAIN"
    server_mech = make_mechanism(SocketOptions(**CURVE_SERVER))
    assert server_mech.name == b"CURVE" and server_mech.as_server
    raw = {
        "curve_serverkey": triomq.z85_decode(SERVER_PUBLIC),
        "curve_secretkey": triomq.z85_decode(CLIENT_SECRET),
    }
    client_mech = make_mechanism(SocketOptions(**raw))
    assert client_mech.name == b"CURVE" and not client_mech.as_server


# ---------------------------------------------------------------- policies


def request(
    mechanism: str = "NULL", address: str = "127.0.0.1", **fields: Any
) -> triomq.AuthRequest:
    return triomq.AuthRequest(mechanism=mechanism, address=address, **fields)


async def test_address_policies() -> None:
    allow = auth.allow_addresses("127.0.0.1", "10.0.0.0/8", "::1")
    assert await allow(request(address="127.0.0.1")) is True
    assert await allow(request(address="10.20.30.40")) is True
    assert await allow(request(address="::ffff:10.1.2.3")) is True
    assert await allow(request(address="::1")) is True
    assert not await allow(request(address="192.168.1.1"))
    assert not await allow(request(address=""))  # ipc
    deny = auth.deny_addresses("192.168.0.0/16")
    assert not await deny(request(address="192.168.1.1"))
    assert await deny(request(address="127.0.0.1")) is True
    assert await deny(request(address="")) is True
    with pytest.raises(ValueError, match="not an IP address"):
        auth.allow_addresses("localhost")


async def test_password_table() -> None:
    check = auth.passwords({b"alice": b"secret"})
    assert await check(request("PLAIN", username=b"alice", password=b"secret")) == "alice"
    assert (await check(request("PLAIN", username=b"alice", password=b"no"))) == auth.Deny(
        "wrong password for user 'alice'"
    )
    assert not await check(request("CURVE", public_key=bytes(32)))


async def test_curve_key_set() -> None:
    raw = triomq.z85_decode(CLIENT_PUBLIC)
    check = auth.curve_keys([raw])
    assert await check(request("CURVE", public_key=raw)) == CLIENT_PUBLIC.decode()
    assert not await check(request("CURVE", public_key=triomq.z85_decode(OTHER_PUBLIC)))
    assert not await check(request("PLAIN", username=b"a", password=b"b"))
    with pytest.raises(ValueError, match="not a CURVE public key"):
        auth.curve_keys(["nope"])


async def test_combining_policies() -> None:
    both = auth.all_of(auth.allow_addresses("127.0.0.1"), auth.passwords({"alice": "secret"}))
    good = request("PLAIN", username=b"alice", password=b"secret")
    assert await both(good) == "alice"
    far = request("PLAIN", address="10.0.0.1", username=b"alice", password=b"secret")
    assert await both(far) == auth.Deny("address not allowed: 10.0.0.1")
    either = auth.any_of(auth.allow_addresses("10.0.0.0/8"), auth.passwords({"alice": "secret"}))
    assert await either(good) == "alice"
    assert await either(far) is True
    refused = await either(request("PLAIN", username=b"alice", password=b"x"))
    assert isinstance(refused, auth.Deny)
    assert refused.reason == "address not allowed: 127.0.0.1; wrong password for user 'alice'"


async def test_key_directory_follows_its_files(tmp_path: Path) -> None:
    alice_public, _ = auth.create_certificates(tmp_path, "alice")
    public, secret = auth.load_certificate(tmp_path / "alice.key_secret")
    assert secret is not None and triomq.curve_public(secret) == public
    (tmp_path / "broken.key").write_text("public-key = nonsense\n")
    check = auth.curve_key_directory(tmp_path)
    alice = request("CURVE", public_key=triomq.z85_decode(public))
    assert await check(alice) == "alice"
    # a new client, added while the server runs
    bob_public, _ = triomq.curve_keypair()
    (tmp_path / "bob.key").write_text(bob_public.decode() + "\n")  # a bare key works too
    bob = request("CURVE", public_key=triomq.z85_decode(bob_public))
    assert await check(bob) == "bob"
    alice_public.unlink()
    assert not await check(alice)
    assert not await auth.curve_key_directory(tmp_path / "missing")(bob)


def test_key_files_are_compatible_with_pyzmq(tmp_path: Path) -> None:
    ours_public, ours_secret = auth.create_certificates(tmp_path, "ours")
    _, theirs_secret = zmq.auth.create_certificates(tmp_path, "theirs")
    assert zmq.auth.load_certificate(ours_secret) == auth.load_certificate(ours_secret)
    assert zmq.auth.load_certificate(ours_public) == auth.load_certificate(ours_public)
    assert auth.load_certificate(theirs_secret) == zmq.auth.load_certificate(theirs_secret)
    assert set(auth.load_certificates(tmp_path)) == set(zmq.auth.load_certificates(tmp_path))
    assert sorted(auth.load_certificates(tmp_path).values()) == ["ours", "theirs"]
    assert os.stat(ours_secret).st_mode & 0o077 == 0
    (tmp_path / "empty.key").write_text("# nothing here\n")
    with pytest.raises(ValueError, match="no public key"):
        auth.load_certificate(tmp_path / "empty.key")


async def test_key_file_names_that_are_not_utf8_give_valid_user_ids(tmp_path: Path) -> None:
    public_path, secret_path = auth.create_certificates(tmp_path, "tmp")
    client_public, client_secret = auth.load_certificate(secret_path)
    secret_path.unlink()
    # a Latin-1 name: the OS hands it over with a lone surrogate ("caf\udce9.key")
    os.rename(public_path, os.path.join(os.fsencode(tmp_path), b"caf\xe9.key"))
    assert auth.load_certificates(tmp_path) == {client_public: "caf\ufffd"}
    with trio.fail_after(TIMEOUT):
        async with server(authenticator=auth.curve_key_directory(tmp_path), **CURVE_SERVER) as (
            pull,
            endpoint,
            _,
        ):
            async with client(
                endpoint, **curve_client_options(client_public, client_secret)
            ) as (push, _):
                await push.send(b"hello")
                message, peer = await pull.recv_multipart_with_peer()
    assert message == [b"hello"]
    assert peer is not None and peer.user_id == "caf\ufffd"


def test_secret_key_file_is_private_whatever_was_there(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    # an old secret file readable by all keeps no such mode
    (keys / "old.key_secret").write_text("stale\n")
    os.chmod(keys / "old.key_secret", 0o644)
    _, secret_path = auth.create_certificates(keys, "old")
    assert os.stat(secret_path).st_mode & 0o777 == 0o600
    assert auth.load_certificate(secret_path)[1] is not None
    # a symlink planted where the secret goes is replaced, not written through
    elsewhere = tmp_path / "elsewhere.txt"
    (keys / "planted.key_secret").symlink_to(elsewhere)
    _, secret_path = auth.create_certificates(keys, "planted")
    assert not elsewhere.exists()
    assert not secret_path.is_symlink() and os.stat(secret_path).st_mode & 0o777 == 0o600
    assert sorted(p.name for p in keys.iterdir()) == [
        "old.key",
        "old.key_secret",
        "planted.key",
        "planted.key_secret",
    ]  # no temporary file left behind
