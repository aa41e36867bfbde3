"""tls://: ZMTP over TLS on TCP, with trustme certificates.

A refused certificate (unknown CA, wrong host name, missing or untrusted client
certificate) is a failed handshake with ``FailureKind.AUTH`` on the side that
refused, a monitor event on the other, and never harms the socket: a good peer
gets through afterwards.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
import trustme

import triomq
from triomq import auth

from .helpers import raw_handshake

TIMEOUT = 10
AUTH = triomq.FailureKind.AUTH

Events = trio.MemoryReceiveChannel[triomq.MonitorEvent]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def other_ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA, *, client_ca: trustme.CA | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        client_ca.configure_trust(ctx)
    return ctx


def client_context(trusted: trustme.CA, *, cert_from: trustme.CA | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    trusted.configure_trust(ctx)
    if cert_from is not None:
        cert_from.issue_cert("client.example.org").configure_cert(ctx)
    return ctx


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
async def tls_server(
    ctx: ssl.SSLContext, **options: Any
) -> AsyncIterator[tuple[triomq.Socket, str, Events]]:
    async with triomq.open_socket(triomq.REP, linger=0, ssl_context=ctx, **options) as rep:
        async with rep.monitor() as events:
            endpoint = await rep.bind("tls://127.0.0.1:0")
            yield rep, endpoint, events


async def echo_once_on(req: triomq.Socket, rep: triomq.Socket, endpoint: str) -> None:
    await req.connect(endpoint)
    await req.send(b"ping")
    assert await rep.recv() == b"ping"
    await rep.send(b"pong")
    assert await req.recv() == b"pong"


async def echo_once(rep: triomq.Socket, endpoint: str, ctx: ssl.SSLContext, **options: Any) -> None:
    async with triomq.open_socket(triomq.REQ, linger=0, ssl_context=ctx, **options) as req:
        await req.connect(endpoint)
        await req.send(b"ping")
        assert await rep.recv() == b"ping"
        await rep.send(b"pong")
        assert await req.recv() == b"pong"


@asynccontextmanager
async def refused_client(
    endpoint: str, ctx: ssl.SSLContext, **options: Any
) -> AsyncIterator[Events]:
    async with triomq.open_socket(triomq.REQ, linger=0, ssl_context=ctx, **options) as req:
        async with req.monitor() as events:
            await req.connect(endpoint)
            yield events


async def test_tls_round_trip(ca: trustme.CA) -> None:
    with trio.fail_after(TIMEOUT):
        async with tls_server(server_context(ca)) as (rep, endpoint, events):
            assert endpoint.startswith("tls://127.0.0.1:")
            await echo_once(rep, endpoint, client_context(ca))
            ok = await next_event(events, triomq.HandshakeSucceeded)
            assert ok.peer_address == "127.0.0.1"


async def test_tls_carries_plain_authentication(ca: trustme.CA) -> None:
    with trio.fail_after(TIMEOUT):
        async with tls_server(
            server_context(ca), plain_server=True, authenticator=auth.passwords({"alice": "secret"})
        ) as (rep, endpoint, events):
            await echo_once(
                rep, endpoint, client_context(ca), plain_username="alice", plain_password="secret"
            )
            ok = await next_event(events, triomq.HandshakeSucceeded)
            assert ok.user_id == "alice"


async def test_unknown_ca_refused(ca: trustme.CA, other_ca: trustme.CA) -> None:
    with trio.fail_after(TIMEOUT):
        async with tls_server(server_context(ca)) as (rep, endpoint, events):
            async with refused_client(endpoint, client_context(other_ca)) as theirs:
                refused = await next_event(theirs, triomq.HandshakeFailed)
                assert refused.kind is AUTH and "certificate verify failed" in refused.reason
                # the client just hangs up (Python's ssl sends no alert): the server
                # can only say so
                failed = await next_event(events, triomq.HandshakeFailed)
                assert failed.kind in (AUTH, triomq.FailureKind.CLOSED) and "TLS" in failed.reason
            await echo_once(rep, endpoint, client_context(ca))


async def test_hostname_mismatch_refused(ca: trustme.CA) -> None:
    with trio.fail_after(TIMEOUT):
        async with tls_server(server_context(ca)) as (rep, endpoint, events):
            async with refused_client(
                endpoint, client_context(ca), tls_hostname="service.example.org"
            ) as theirs:
                refused = await next_event(theirs, triomq.HandshakeFailed)
                assert refused.kind is AUTH and "Hostname mismatch" in refused.reason
                await next_event(events, triomq.HandshakeFailed)
            # the name in the certificate works
            await echo_once(rep, endpoint, client_context(ca), tls_hostname="localhost")


@pytest.mark.parametrize("client_cert", ["none", "untrusted"])
async def test_mutual_tls_requires_a_trusted_client_certificate(
    ca: trustme.CA, other_ca: trustme.CA, client_cert: str
) -> None:
    client_ca = trustme.CA()
    bad_ctx = client_context(ca, cert_from=None if client_cert == "none" else other_ca)
    with trio.fail_after(TIMEOUT):
        async with tls_server(server_context(ca, client_ca=client_ca)) as (rep, endpoint, events):
            async with refused_client(endpoint, bad_ctx) as theirs:
                failed = await next_event(events, triomq.HandshakeFailed)
                assert failed.kind is AUTH and "TLS handshake failed" in failed.reason
                refused = await next_event(theirs, triomq.HandshakeFailed)
                assert refused.kind in (AUTH, triomq.FailureKind.CLOSED)
            await echo_once(rep, endpoint, client_context(ca, cert_from=client_ca))
            await no_pipes_left(rep, events)


async def test_plain_tcp_peer_on_a_tls_endpoint(ca: trustme.CA) -> None:
    with trio.fail_after(TIMEOUT):
        async with tls_server(server_context(ca)) as (rep, endpoint, events):
            tcp = endpoint.replace("tls://", "tcp://")
            async with triomq.open_socket(triomq.REQ, linger=0) as req:
                await req.connect(tcp)  # speaks ZMTP in the clear to a TLS server
                failed = await next_event(events, triomq.HandshakeFailed)
                assert failed.kind is AUTH and "TLS handshake failed" in failed.reason
            await echo_once(rep, endpoint, client_context(ca))


async def test_tls_client_on_a_plain_tcp_endpoint(ca: trustme.CA) -> None:
    with trio.fail_after(TIMEOUT):
        async with triomq.open_socket(triomq.REP, linger=0) as rep:
            endpoint = await rep.bind("tcp://127.0.0.1:0")
            tls = endpoint.replace("tcp://", "tls://")
            async with refused_client(tls, client_context(ca)) as theirs:
                refused = await next_event(theirs, triomq.HandshakeFailed)
                assert refused.kind is AUTH
            async with triomq.open_socket(triomq.REQ, linger=0) as req:
                await req.connect(endpoint)
                await req.send(b"clear")
                assert await rep.recv() == b"clear"


async def test_stalled_tls_peer_times_out(ca: trustme.CA) -> None:
    with trio.fail_after(TIMEOUT):
        async with tls_server(server_context(ca), handshake_ivl=0.3) as (rep, endpoint, events):
            host, _, port = endpoint.removeprefix("tls://").rpartition(":")
            async with await trio.open_tcp_stream(host, int(port)):
                # no ClientHello ever comes; a good client is served meanwhile
                await echo_once(rep, endpoint, client_context(ca))
                failed = await next_event(events, triomq.HandshakeFailed)
                assert failed.kind is triomq.FailureKind.TIMEOUT


async def test_tls_needs_the_right_context(ca: trustme.CA) -> None:
    async with triomq.open_socket(triomq.REP, linger=0) as rep:
        with pytest.raises(triomq.EndpointError, match="needs the ssl_context option"):
            await rep.bind("tls://127.0.0.1:0")
    async with triomq.open_socket(triomq.REP, linger=0, ssl_context=client_context(ca)) as rep:
        with pytest.raises(triomq.EndpointError, match="needs a server ssl_context"):
            await rep.bind("tls://127.0.0.1:0")
    # (a wrong type fails when the socket is made, as any bad option does)
    with pytest.raises(TypeError, match=r"ssl_context must be an ssl\.SSLContext, not str"):
        async with triomq.open_socket(triomq.REP, linger=0, ssl_context="cert.pem"):
            pass


async def test_a_close_is_a_tls_close_notify(ca: trustme.CA) -> None:
    """Closing a socket ends its TLS connections cleanly (close_notify): the
    peer sees a closed connection, not a truncated one, on either side."""
    with trio.fail_after(TIMEOUT):
        async with tls_server(server_context(ca)) as (rep, endpoint, events):
            async with triomq.open_socket(triomq.REQ, linger=0, ssl_context=client_context(ca)) as req:
                await req.connect(endpoint)
                await req.send(b"ping")
                assert await rep.recv() == b"ping"
            gone = await next_event(events, triomq.Disconnected)
            assert gone.reason == "peer closed the connection"
        # and the bound side closing, seen from the connecting side
        async with triomq.open_socket(triomq.REQ, linger=0, ssl_context=client_context(ca)) as req:
            async with req.monitor() as theirs:
                async with tls_server(server_context(ca)) as (rep, endpoint, events):
                    await echo_once_on(req, rep, endpoint)
                gone = await next_event(theirs, triomq.Disconnected)
                assert gone.reason == "peer closed the connection"


@pytest.mark.parametrize("scheme", ["tcp", "tls"])
async def test_bad_frame_while_our_writes_wait_costs_that_connection(ca: trustme.CA, scheme: str) -> None:
    """A peer that reads nothing (our writer waits on the full connection) and
    then breaks the protocol after the handshake: that connection is dropped
    (no ERROR after the handshake, as libzmq), the socket goes on. tcp too:
    the same path without TLS."""
    tls = scheme == "tls"
    options: dict[str, Any] = {"ssl_context": server_context(ca)} if tls else {}
    with trio.fail_after(TIMEOUT):
        async with triomq.open_socket(triomq.PUSH, linger=0, sndbuf=4096, **options) as push:
            async with push.monitor() as events:
                endpoint = await push.bind(f"{scheme}://127.0.0.1:0")
                host, _, port = endpoint.partition("://")[2].rpartition(":")
                raw: trio.abc.Stream = await trio.open_tcp_stream(host, int(port))
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # type: ignore[attr-defined]
                if tls:
                    raw = trio.SSLStream(raw, client_context(ca), server_hostname=host)
                await raw_handshake(raw, triomq.PULL)
                for _ in range(100):  # far more than the kernel's buffers hold
                    await push.send(bytes(65536))
                await trio.testing.wait_all_tasks_blocked()  # (our writer waits)
                await raw.send_all(b"\x80\x00")  # reserved flag bits: a protocol error
                gone = await next_event(events, triomq.Disconnected)
                assert "protocol error" in gone.reason
            # the socket goes on: a good peer gets messages
            async with triomq.open_socket(triomq.PULL, linger=0, **({"ssl_context": client_context(ca)} if tls else {})) as pull:
                await pull.connect(endpoint)
                await push.send(b"still here")
                assert await pull.recv() == b"still here"
            await raw.aclose()


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.02)


async def test_server_stalled_in_tls_handshake_times_out_and_is_retried(
    ca: trustme.CA, clock: trio.testing.MockClock
) -> None:
    """The connecting side of a stalled TLS handshake: handshake_ivl ends it, on
    Trio's clock, and the connect tries again."""
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    options: dict[str, Any] = {"ssl_context": client_context(ca), "handshake_ivl": 45}
    async with triomq.open_socket(triomq.PUSH, linger=0, **options) as push:
        async with push.monitor() as events:
            await push.connect(f"tls://127.0.0.1:{port}")
            silent = await listener.accept()  # never answers the ClientHello
            accepted_at = trio.current_time()
            failed = await next_event(events, triomq.HandshakeFailed)
            assert failed.kind is triomq.FailureKind.TIMEOUT
            assert trio.current_time() - accepted_at == pytest.approx(45, abs=0.5)
            await next_event(events, triomq.ConnectRetried)
            await silent.aclose()
    await listener.aclose()
