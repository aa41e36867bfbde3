"""probe_router (an empty message to each new peer) and connect(routing_id=...)
(a ROUTER names the peer of its connect itself), between triomq sockets."""

from __future__ import annotations

import tempfile

import pytest
import trio

import triomq

from .helpers import wait_for_event


def _ipc_endpoint() -> str:
    return f"ipc://{tempfile.mkdtemp(prefix='tq')}/s"


# ---------------------------------------------------------------- probe_router


@pytest.mark.parametrize("prober_type", [triomq.DEALER, triomq.REQ, triomq.ROUTER])
async def test_probe_is_the_first_message_a_router_gets_from_a_new_peer(
    prober_type: triomq.SocketType, endpoint: str
) -> None:
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.ROUTER, routing_id=b"server") as router:
            ep = await router.bind(endpoint)
            async with triomq.open_socket(prober_type, probe_router=True, routing_id=b"P") as prober:
                await prober.connect(ep)
                assert await router.recv_multipart() == [b"P", b""]
                if prober_type is triomq.ROUTER:
                    await prober.wait_peers()
                    await prober.send_multipart([b"server", b"hello"])
                else:
                    await prober.send(b"hello")
                msg = await router.recv_multipart()
                assert msg[0] == b"P" and msg[-1] == b"hello"
                if prober_type is triomq.REQ:
                    # a REQ's probe is a lone empty frame, not a request: the
                    # REQ is waiting for the answer to its real request only
                    assert msg[-2] == b""
                    await router.send_multipart([*msg[:-1], b"answer"])
                    assert await prober.recv() == b"answer"
                assert prober.statistics().sent == 1  # (the probe is not the application's)


@pytest.mark.parametrize("kind", ["ipc", "inproc"])
async def test_probe_goes_before_what_was_queued_before_the_connection(kind: str) -> None:
    endpoint = _ipc_endpoint() if kind == "ipc" else "inproc://probe-queued-before"
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.DEALER, probe_router=True, routing_id=b"D") as dealer:
            await dealer.connect(endpoint)  # nobody there yet
            await dealer.send(b"early")
            async with triomq.open_socket(triomq.ROUTER) as router:
                await router.bind(endpoint)
                assert await router.recv_multipart() == [b"D", b""]
                assert await router.recv_multipart() == [b"D", b"early"]


async def test_probe_does_not_take_a_place_under_sndhwm() -> None:
    """libzmq queues the probe at connect() and it fills one of sndhwm's places
    until the connection is made; triomq's goes at the connection, in front."""
    endpoint = _ipc_endpoint()
    with trio.fail_after(10):
        async with triomq.open_socket(
            triomq.DEALER, probe_router=True, routing_id=b"D", sndhwm=1
        ) as dealer:
            await dealer.connect(endpoint)
            dealer.send_nowait(b"only")  # the one place is the application's
            with pytest.raises(trio.WouldBlock):
                dealer.send_nowait(b"one too many")
            async with triomq.open_socket(triomq.ROUTER) as router:
                await router.bind(endpoint)
                assert await router.recv_multipart() == [b"D", b""]
                assert await router.recv_multipart() == [b"D", b"only"]
                (peer,) = dealer.peer_statistics()
                assert peer.sent == 1


async def test_a_bound_probing_router_greets_each_new_peer(endpoint: str) -> None:
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.ROUTER, probe_router=True) as router:
            ep = await router.bind(endpoint)
            async with triomq.open_socket(triomq.DEALER, routing_id=b"a") as a, \
                    triomq.open_socket(triomq.DEALER, routing_id=b"b") as b:
                for dealer in (a, b):
                    await dealer.connect(ep)
                    assert await dealer.recv_multipart() == [b""]
                await router.send_multipart([b"b", b"to b"])
                assert await b.recv() == b"to b"


async def test_probe_on_every_connection_also_after_a_reconnect() -> None:
    """libzmq's connecting socket probes once per connect(): a ROUTER that is
    restarted never hears of it. triomq probes each connection."""
    with trio.fail_after(10):
        async with triomq.open_socket(
            triomq.DEALER, probe_router=True, routing_id=b"D", reconnect_ivl=0.01
        ) as dealer:
            async with triomq.open_socket(triomq.ROUTER, linger=0) as router:
                ep = await router.bind("tcp://127.0.0.1:0")
                await dealer.connect(ep)
                assert await router.recv_multipart() == [b"D", b""]
            async with triomq.open_socket(triomq.ROUTER) as restarted:
                await restarted.bind(ep)
                assert await restarted.recv_multipart() == [b"D", b""]
                await restarted.send_multipart([b"D", b"welcome back"])
                assert await dealer.recv() == b"welcome back"


@pytest.mark.parametrize("req_correlate", [True, False])
async def test_a_req_skips_the_probe_of_a_probing_router(req_correlate: bool, endpoint: str) -> None:
    """The probe reaches a REQ that has already sent its request: it is no reply.
    (libzmq's REQ takes it for a protocol error and drops the connection for good.)"""
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.ROUTER, probe_router=True) as router:
            ep = await router.bind(endpoint)
            async with triomq.open_socket(triomq.REQ, req_correlate=req_correlate) as req:
                await req.connect(ep)
                await req.send(b"request")  # queued: sent once connected, before the probe comes
                msg = await router.recv_multipart()
                assert msg[-2:] == [b"", b"request"]
                await router.send_multipart([*msg[:-1], b"reply"])
                assert await req.recv() == b"reply"


@pytest.mark.parametrize(
    "socket_type",
    [triomq.PAIR, triomq.PUB, triomq.SUB, triomq.XPUB, triomq.XSUB, triomq.PUSH, triomq.PULL, triomq.REP],
)
async def test_probe_router_only_on_router_dealer_and_req(socket_type: triomq.SocketType) -> None:
    with pytest.raises(ValueError, match="probe_router applies to ROUTER, DEALER and REQ"):
        async with triomq.open_socket(socket_type, probe_router=True):
            pass  # pragma: no cover


async def test_probe_router_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="probe_router"):
        async with triomq.open_socket(triomq.DEALER, probe_router=1):
            pass  # pragma: no cover


# ---------------------------------------------------------------- connect(routing_id=...)


async def test_connect_routing_id_names_the_peer_at_once(endpoint: str) -> None:
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.DEALER, routing_id=b"its own") as dealer, \
                triomq.open_socket(triomq.ROUTER, router_mandatory=True) as router:
            ep = await dealer.bind(endpoint)
            await router.connect(ep, routing_id=b"chosen")
            # routable before the connection is made: the message waits for it
            await router.send_multipart([b"chosen", b"hello"])
            assert await dealer.recv() == b"hello"
            await dealer.send(b"back")
            assert await router.recv_multipart() == [b"chosen", b"back"]
            # the id the peer announced is not a route
            with pytest.raises(triomq.HostUnreachable):
                await router.send_multipart([b"its own", b"x"])
            (peer,) = router.peers()
            assert peer.routing_id == b"chosen"
            if not endpoint.startswith("inproc"):  # (inproc has no handshake metadata)
                assert peer.metadata["Identity"] == b"its own"


async def test_connect_routing_id_is_for_that_connect_only(endpoint: str) -> None:
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.ROUTER, router_mandatory=True) as router, \
                triomq.open_socket(triomq.DEALER, routing_id=b"first") as first, \
                triomq.open_socket(triomq.DEALER, routing_id=b"second") as second:
            if endpoint.startswith("inproc"):
                ep1, ep2 = endpoint + "-1", endpoint + "-2"
            elif endpoint.startswith("ipc"):
                ep1, ep2 = endpoint + "1", endpoint + "2"
            else:
                ep1 = ep2 = endpoint
            await router.connect(await first.bind(ep1), routing_id=b"one")
            await router.connect(await second.bind(ep2))
            await router.wait_peers(2)
            await router.send_multipart([b"one", b"to first"])
            await router.send_multipart([b"second", b"to second"])  # its own id
            assert await first.recv() == b"to first"
            assert await second.recv() == b"to second"


async def test_router_to_router_the_connecting_side_sends_first(endpoint: str) -> None:
    """The case ZMQ_CONNECT_ROUTING_ID is for: a ROUTER that connects to a ROUTER
    can address it without waiting for a message; the bound side sees the
    connecting ROUTER's own routing_id, never the name it gave its peer."""
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.ROUTER) as server, \
                triomq.open_socket(triomq.ROUTER, routing_id=b"client") as client:
            ep = await server.bind(endpoint)
            await client.connect(ep, routing_id=b"server")
            await client.send_multipart([b"server", b"hello"])
            assert await server.recv_multipart() == [b"client", b"hello"]
            await server.send_multipart([b"client", b"hello yourself"])
            assert await client.recv_multipart() == [b"server", b"hello yourself"]


async def test_connect_routing_id_is_kept_across_reconnects() -> None:
    """Messages to the id queue while the peer is away, and reach whoever
    answers at the endpoint next, whatever id that one announces."""
    with trio.fail_after(10):
        async with triomq.open_socket(
            triomq.ROUTER, router_mandatory=True, reconnect_ivl=0.01
        ) as router, router.monitor() as events:
            async with triomq.open_socket(triomq.DEALER, routing_id=b"X", linger=0) as dealer:
                ep = await dealer.bind("tcp://127.0.0.1:0")
                await router.connect(ep, routing_id=b"Y")
                await router.send_multipart([b"Y", b"one"])
                assert await dealer.recv() == b"one"
            await wait_for_event(events, triomq.Disconnected)
            assert router.statistics().peers == 0
            await router.send_multipart([b"Y", b"while away"])  # queued, not unreachable
            async with triomq.open_socket(triomq.DEALER, routing_id=b"Z") as restarted:
                await restarted.bind(ep)
                assert await restarted.recv() == b"while away"
                await restarted.send(b"back")
                assert await router.recv_multipart() == [b"Y", b"back"]


async def test_connect_routing_id_with_immediate_routes_only_once_connected() -> None:
    """libzmq ignores ZMQ_CONNECT_ROUTING_ID when IMMEDIATE is set (the pipe is
    made at the connection, which its id does not reach); triomq applies it."""
    endpoint = _ipc_endpoint()
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.ROUTER, router_mandatory=True, immediate=True) as router:
            await router.connect(endpoint, routing_id=b"Y")
            with pytest.raises(triomq.HostUnreachable):
                await router.send_multipart([b"Y", b"too early"])
            async with triomq.open_socket(triomq.DEALER, routing_id=b"X") as dealer:
                await dealer.bind(endpoint)
                await router.wait_peers()
                await router.send_multipart([b"Y", b"now"])
                assert await dealer.recv() == b"now"


async def test_connect_routing_id_already_in_use() -> None:
    """libzmq aborts the process (an assertion); triomq raises StateError."""
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.ROUTER, linger=0) as router:
            await router.connect("inproc://nobody-1", routing_id=b"A")
            with pytest.raises(triomq.StateError, match="already in use"):
                await router.connect("inproc://nobody-2", routing_id=b"A")
            async with triomq.open_socket(triomq.DEALER, routing_id=b"B") as dealer:
                await dealer.connect(await router.bind("inproc://router-in-use"))
                await router.wait_peers()
                with pytest.raises(triomq.StateError, match="already in use"):
                    await router.connect("inproc://nobody-3", routing_id=b"B")
            # disconnect() frees the id
            await router.disconnect("inproc://nobody-1")
            await router.connect("inproc://nobody-4", routing_id=b"A")


async def test_a_peer_announcing_a_connect_routing_id_is_refused_or_takes_it(endpoint: str) -> None:
    """As any duplicate id: refused, or with router_handover the newcomer takes
    it, and the connect goes on under its peer's own id (as libzmq)."""
    with trio.fail_after(10):
        for handover in (False, True):
            suffix = f"-{handover}" if endpoint.startswith("inproc") else ""
            async with triomq.open_socket(
                triomq.ROUTER, router_handover=handover, reconnect_ivl=0.01
            ) as router, router.monitor() as events, triomq.open_socket(
                triomq.DEALER, routing_id=b"target"
            ) as target:
                target_ep = await target.bind("tcp://127.0.0.1:0")
                await router.connect(target_ep, routing_id=b"A")
                await router.wait_peers()
                router_ep = await router.bind(endpoint + suffix)
                async with triomq.open_socket(triomq.DEALER, routing_id=b"A", linger=0) as newcomer:
                    await newcomer.connect(router_ep)
                    if not handover:
                        if not endpoint.startswith("inproc"):  # (inproc refuses in connect)
                            event = await wait_for_event(events, triomq.HandshakeFailed)
                            assert "already in use" in event.reason
                        assert router.statistics().peers == 1
                        await router.send_multipart([b"A", b"to the connect's peer"])
                        assert await target.recv() == b"to the connect's peer"
                        continue
                    await newcomer.send(b"from the newcomer")
                    assert await router.recv_multipart() == [b"A", b"from the newcomer"]
                    await router.send_multipart([b"A", b"to the newcomer"])
                    assert await newcomer.recv() == b"to the newcomer"
                    # the connect's connection was ended; it reconnects as its peer's id
                    await wait_for_event(events, triomq.Disconnected)
                    await router.wait_peers(2)
                    await router.send_multipart([b"target", b"to the connect's peer"])
                    assert await target.recv() == b"to the connect's peer"


async def test_connect_routing_id_checks() -> None:
    async with triomq.open_socket(triomq.DEALER, linger=0) as dealer:
        with pytest.raises(ValueError, match="for ROUTER sockets"):
            await dealer.connect("inproc://x", routing_id=b"A")
    async with triomq.open_socket(triomq.ROUTER, linger=0) as router:
        with pytest.raises(ValueError, match="empty"):
            await router.connect("inproc://x", routing_id=b"")
        with pytest.raises(TypeError, match="bytes"):
            await router.connect("inproc://x", routing_id="A")  # type: ignore[arg-type]
        assert router.statistics().pipes == 0
