"""PROBE_ROUTER and CONNECT_ROUTING_ID between triomq and libzmq.

triomq's ``probe_router`` option and ``connect(routing_id=...)`` against
libzmq's ``ZMQ_PROBE_ROUTER`` and ``ZMQ_CONNECT_ROUTING_ID``, both ways.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import zmq

import triomq

TEST_TIMEOUT = 20


# ---------------------------------------------------------------- PROBE_ROUTER


async def _recv_poking(tsock: triomq.Socket, zsock: Any, peers: Any) -> list[bytes]:
    """The triomq socket's next message, while the libzmq socket is kept busy:
    libzmq attaches an accepted connection's pipe (and so writes its probe)
    only when the application calls into the socket."""
    async with trio.open_nursery() as nursery:

        async def poke() -> None:
            while True:
                await peers.z(zsock.poll, 10)

        nursery.start_soon(poke)
        msg: list[bytes] = await tsock.recv_multipart()
        nursery.cancel_scope.cancel()
    return msg


@pytest.mark.parametrize("prober_type", [triomq.DEALER, triomq.REQ, triomq.ROUTER])
async def test_triomq_probe_reaches_a_libzmq_router(
    peers: Any, triomq_binds: bool, prober_type: triomq.SocketType
) -> None:
    """On the wire, one empty frame: libzmq's ROUTER hands out [id, b""]."""
    with trio.fail_after(TEST_TIMEOUT):
        async with peers.link(
            prober_type,
            zmq.ROUTER,
            triomq_binds=triomq_binds,
            tri_options={"probe_router": True, "routing_id": b"tri"},
            zmq_options={"ROUTING_ID": b"zmq"},
        ) as (prober, router):
            assert await peers.z(router.recv_multipart) == [b"tri", b""]
            if prober_type is triomq.ROUTER:
                await prober.send_multipart([b"zmq", b"hello"])
            else:
                await prober.send(b"hello")
            msg = await peers.z(router.recv_multipart)
            assert msg[0] == b"tri" and msg[-1] == b"hello"
            if prober_type is triomq.REQ:
                await peers.z(router.send_multipart, [*msg[:-1], b"answer"])
                assert await prober.recv() == b"answer"


@pytest.mark.parametrize("zmq_type", [zmq.DEALER, zmq.REQ, zmq.ROUTER])
async def test_libzmq_probe_reaches_a_triomq_router(peers: Any, triomq_binds: bool, zmq_type: int) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with peers.link(
            triomq.ROUTER,
            zmq_type,
            triomq_binds=triomq_binds,
            tri_options={"routing_id": b"tri"},
            zmq_options={"PROBE_ROUTER": 1, "ROUTING_ID": b"zmq"},
        ) as (router, prober):
            assert await _recv_poking(router, prober, peers) == [b"zmq", b""]
            if zmq_type == zmq.ROUTER:
                await peers.z(prober.send_multipart, [b"tri", b"hello"])
            else:
                await peers.z(prober.send, b"hello")
            msg = await router.recv_multipart()
            assert msg[0] == b"zmq" and msg[-1] == b"hello"


async def test_a_probing_triomq_router_greets_libzmq_dealers(peers: Any) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with triomq.open_socket(triomq.ROUTER, probe_router=True, linger=0) as router:
            endpoint = await router.bind(peers.endpoint())
            dealers = [peers.zsocket(zmq.DEALER, ROUTING_ID=b"d%d" % i) for i in range(2)]
            for dealer in dealers:
                await peers.z(dealer.connect, endpoint)
                assert await peers.z(dealer.recv_multipart) == [b""]
            await router.send_multipart([b"d1", b"to d1"])
            assert await peers.z(dealers[1].recv) == b"to d1"


@pytest.mark.parametrize("req_correlate", [True, False])
async def test_triomq_req_survives_a_probing_libzmq_router(
    peers: Any, triomq_binds: bool, req_correlate: bool
) -> None:
    """libzmq's own REQ drops the connection on the probe, for good (its session
    takes a lone empty frame for a protocol error); triomq's REQ skips it."""
    with trio.fail_after(TEST_TIMEOUT):
        async with peers.link(
            triomq.REQ,
            zmq.ROUTER,
            triomq_binds=triomq_binds,
            tri_options={"req_correlate": req_correlate},
            zmq_options={"PROBE_ROUTER": 1},
        ) as (req, router):
            for i in range(3):
                await req.send(b"request %d" % i)
                msg = await peers.z(router.recv_multipart)
                assert msg[-2:] == [b"", b"request %d" % i]
                await peers.z(router.send_multipart, [*msg[:-1], b"reply %d" % i])
                assert await req.recv() == b"reply %d" % i


# (ipc only: the restarted ROUTER binds the same address, which ipc frees at
# once and tcp does not)
@pytest.mark.parametrize("transport", ["ipc"], indirect=True)
async def test_triomq_probes_a_restarted_libzmq_router(peers: Any) -> None:
    """A reconnect is a new connection: the restarted ROUTER gets a probe too
    (libzmq's connecting DEALER would not send one: see "Coming from pyzmq")."""
    with trio.fail_after(TEST_TIMEOUT):
        async with triomq.open_socket(
            triomq.DEALER, probe_router=True, routing_id=b"tri", reconnect_ivl=0.01, linger=0
        ) as dealer, dealer.monitor() as events:
            first = peers.zsocket(zmq.ROUTER)
            endpoint = await peers.z(peers.zbind, first)
            await dealer.connect(endpoint)
            assert await peers.z(first.recv_multipart) == [b"tri", b""]
            await peers.z(first.close, 0)
            async for event in events:
                if isinstance(event, triomq.Disconnected):
                    break
            restarted = peers.zsocket(zmq.ROUTER)
            await peers.z(restarted.bind, endpoint)
            assert await peers.z(restarted.recv_multipart) == [b"tri", b""]
            await peers.z(restarted.send_multipart, [b"tri", b"welcome back"])
            assert await dealer.recv() == b"welcome back"


# ---------------------------------------------------------------- CONNECT_ROUTING_ID


async def test_triomq_router_names_a_libzmq_dealer(peers: Any) -> None:
    """triomq's connect(routing_id=...) against a libzmq DEALER that announces its
    own Identity: the name given wins, and is routable before the connection."""
    with trio.fail_after(TEST_TIMEOUT):
        dealer = peers.zsocket(zmq.DEALER, ROUTING_ID=b"its own")
        endpoint = await peers.z(peers.zbind, dealer)
        async with triomq.open_socket(triomq.ROUTER, router_mandatory=True, linger=0) as router:
            await router.connect(endpoint, routing_id=b"chosen")
            await router.send_multipart([b"chosen", b"hello"])
            assert await peers.z(dealer.recv) == b"hello"
            await peers.z(dealer.send, b"back")
            assert await router.recv_multipart() == [b"chosen", b"back"]
            with pytest.raises(triomq.HostUnreachable):
                await router.send_multipart([b"its own", b"x"])


async def test_triomq_router_names_a_libzmq_router(peers: Any) -> None:
    """ROUTER to ROUTER: the triomq side sends first; libzmq sees its routing_id."""
    with trio.fail_after(TEST_TIMEOUT):
        server = peers.zsocket(zmq.ROUTER)
        endpoint = await peers.z(peers.zbind, server)
        async with triomq.open_socket(triomq.ROUTER, routing_id=b"client", linger=0) as client:
            await client.connect(endpoint, routing_id=b"server")
            await client.send_multipart([b"server", b"hello"])
            assert await peers.z(server.recv_multipart) == [b"client", b"hello"]
            await peers.z(server.send_multipart, [b"client", b"hello yourself"])
            assert await client.recv_multipart() == [b"server", b"hello yourself"]


@pytest.mark.parametrize("tri_type", [triomq.ROUTER, triomq.DEALER])
async def test_libzmq_connect_routing_id_to_triomq(peers: Any, tri_type: triomq.SocketType) -> None:
    """libzmq's ZMQ_CONNECT_ROUTING_ID names a triomq peer (whose own routing_id
    then does not matter); a triomq ROUTER sees the libzmq ROUTER's ROUTING_ID."""
    with trio.fail_after(TEST_TIMEOUT):
        async with triomq.open_socket(tri_type, routing_id=b"tri", linger=0) as tsock:
            endpoint = await tsock.bind(peers.endpoint())
            client = peers.zsocket(zmq.ROUTER, ROUTING_ID=b"zmq", CONNECT_ROUTING_ID=b"named")
            await peers.z(client.connect, endpoint)
            await peers.z(client.send_multipart, [b"named", b"hello"])
            if tri_type is triomq.ROUTER:
                assert await tsock.recv_multipart() == [b"zmq", b"hello"]
                await tsock.send_multipart([b"zmq", b"back"])
            else:
                assert await tsock.recv() == b"hello"
                await tsock.send(b"back")
            assert await peers.z(client.recv_multipart) == [b"named", b"back"]
