"""REQ/REP and DEALER/ROUTER between triomq and libzmq: envelopes, routing ids, correlation."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import zmq

import triomq

TEST_TIMEOUT = 20


# ---------------------------------------------------------------- REQ / REP


async def test_triomq_req_libzmq_rep(peers: Any, triomq_binds: bool) -> None:
    """triomq REQ (correlating by default) against a libzmq REP, which echoes the envelope."""
    with trio.fail_after(TEST_TIMEOUT):
        async with peers.link(triomq.REQ, zmq.REP, triomq_binds=triomq_binds) as (req, rep):
            for i in range(20):
                request = [b"request", b"%d" % i, b"x" * (i * 50)]
                await req.send_multipart(request)
                assert await peers.z(rep.recv_multipart) == request
                reply = [b"reply", b"%d" % i, b""]
                await peers.z(rep.send_multipart, reply)
                assert await req.recv_multipart() == reply


@pytest.mark.parametrize(
    "zmq_options",
    [{}, {"REQ_CORRELATE": 1, "REQ_RELAXED": 1}],
    ids=["plain_req", "correlate_relaxed_req"],
)
async def test_libzmq_req_triomq_rep(peers: Any, triomq_binds: bool, zmq_options: dict[str, int]) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with peers.link(
            triomq.REP, zmq.REQ, triomq_binds=triomq_binds, zmq_options=zmq_options
        ) as (rep, req):
            for i in range(20):
                request = [b"request", b"%d" % i]
                await peers.z(req.send_multipart, request)
                assert await rep.recv_multipart() == request
                reply = [b"reply", b"%d" % i, b"y" * 300]
                await rep.send_multipart(reply)
                assert await peers.z(req.recv_multipart) == reply


async def test_libzmq_relaxed_req_resend_to_triomq_rep(peers: Any, triomq_binds: bool) -> None:
    """A libzmq REQ (correlate + relaxed) gives up on a request and sends another;
    triomq REP answers both, and the REQ keeps only the answer to the new one."""
    with trio.fail_after(TEST_TIMEOUT):
        async with peers.link(
            triomq.REP,
            zmq.REQ,
            triomq_binds=triomq_binds,
            zmq_options={"REQ_CORRELATE": 1, "REQ_RELAXED": 1},
        ) as (rep, req):
            await peers.z(req.send, b"first")
            assert await rep.recv() == b"first"
            await peers.z(req.send, b"second")  # relaxed: no reply awaited
            await rep.send(b"answer to first")
            assert await rep.recv() == b"second"
            await rep.send(b"answer to second")
            assert await peers.z(req.recv) == b"answer to second"
            # and the socket pair keeps working
            await peers.z(req.send, b"third")
            assert await rep.recv() == b"third"
            await rep.send(b"answer to third")
            assert await peers.z(req.recv) == b"answer to third"


async def test_triomq_req_cancelled_recv_then_new_request(peers: Any, triomq_binds: bool) -> None:
    """A triomq REQ whose recv is cancelled sends a new request; the late answer
    to the old one (from a libzmq REP) is dropped."""
    with trio.fail_after(TEST_TIMEOUT):
        async with peers.link(triomq.REQ, zmq.REP, triomq_binds=triomq_binds) as (req, rep):
            await req.send(b"old request")
            assert await peers.z(rep.recv) == b"old request"
            # the REP withholds its reply: the recv times out
            with trio.move_on_after(0.2) as scope:
                await req.recv()
            assert scope.cancelled_caught
            await req.send(b"new request")
            # libzmq REP must answer before it may read the next request
            await peers.z(rep.send, b"late answer to old")
            assert await peers.z(rep.recv) == b"new request"
            await peers.z(rep.send, b"answer to new")
            assert await req.recv() == b"answer to new"
            # nothing else is pending, and the pair keeps working
            await req.send(b"another")
            assert await peers.z(rep.recv) == b"another"
            await peers.z(rep.send, b"answer to another")
            assert await req.recv() == b"answer to another"


# ---------------------------------------------------------------- DEALER / ROUTER


async def test_libzmq_dealer_with_id_to_triomq_router(peers: Any, triomq_binds: bool) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with peers.link(
            triomq.ROUTER, zmq.DEALER, triomq_binds=triomq_binds, zmq_options={"ROUTING_ID": b"zmq-dealer"}
        ) as (router, dealer):
            assert peers.handshake.peer_socket_type == "DEALER"
            assert peers.handshake.peer_routing_id == b"zmq-dealer"
            for i in range(10):
                await peers.z(dealer.send_multipart, [b"hello", b"%d" % i])
                assert await router.recv_multipart() == [b"zmq-dealer", b"hello", b"%d" % i]
                await router.send_multipart([b"zmq-dealer", b"back", b"%d" % i])
                assert await peers.z(dealer.recv_multipart) == [b"back", b"%d" % i]


async def test_triomq_dealer_with_id_to_libzmq_router(peers: Any, triomq_binds: bool) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with peers.link(
            triomq.DEALER, zmq.ROUTER, triomq_binds=triomq_binds, tri_options={"routing_id": b"tri-dealer"}
        ) as (dealer, router):
            for i in range(10):
                await dealer.send_multipart([b"hello", b"%d" % i])
                assert await peers.z(router.recv_multipart) == [b"tri-dealer", b"hello", b"%d" % i]
                await peers.z(router.send_multipart, [b"tri-dealer", b"back", b"%d" % i])
                assert await dealer.recv_multipart() == [b"back", b"%d" % i]


async def test_triomq_dealer_without_id_to_libzmq_router(peers: Any, triomq_binds: bool) -> None:
    """libzmq generates the id of a triomq DEALER that sets none (5 bytes, 0x00 first)."""
    with trio.fail_after(TEST_TIMEOUT):
        async with peers.link(triomq.DEALER, zmq.ROUTER, triomq_binds=triomq_binds) as (dealer, router):
            await dealer.send(b"hello")
            rid, body = await peers.z(router.recv_multipart)
            assert body == b"hello"
            assert len(rid) == 5 and rid[0] == 0
            await peers.z(router.send_multipart, [rid, b"back"])
            assert await dealer.recv() == b"back"


async def test_triomq_router_generates_ids(peers: Any) -> None:
    """Ids a triomq ROUTER makes for peers without one: 5 bytes, 0x00 first, distinct,
    and routing by them reaches the right libzmq DEALER."""
    with trio.fail_after(TEST_TIMEOUT):
        async with triomq.open_socket(triomq.ROUTER, linger=0) as router:
            endpoint = await router.bind(peers.endpoint())
            dealers = [peers.zsocket(zmq.DEALER) for _ in range(3)]
            for d in dealers:
                await peers.z(d.connect, endpoint)
            ids = {}
            for i, d in enumerate(dealers):
                await peers.z(d.send, b"dealer %d" % i)
                rid, body = await router.recv_multipart()
                ids[body] = rid
            assert len(set(ids.values())) == 3
            for rid in ids.values():
                assert len(rid) == 5 and rid[:1] == b"\x00"
            for i, _ in enumerate(dealers):
                await router.send_multipart([ids[b"dealer %d" % i], b"to dealer %d" % i])
            for i, d in enumerate(dealers):
                assert await peers.z(d.recv) == b"to dealer %d" % i


async def test_libzmq_req_to_triomq_router_envelope(peers: Any, triomq_binds: bool) -> None:
    """A (plain) libzmq REQ's request reaches a triomq ROUTER as [id, b"", body]."""
    with trio.fail_after(TEST_TIMEOUT):
        async with peers.link(
            triomq.ROUTER, zmq.REQ, triomq_binds=triomq_binds, zmq_options={"ROUTING_ID": b"the-req"}
        ) as (router, req):
            for i in range(5):
                await peers.z(req.send_multipart, [b"body", b"%d" % i])
                assert await router.recv_multipart() == [b"the-req", b"", b"body", b"%d" % i]
                await router.send_multipart([b"the-req", b"", b"reply %d" % i])
                assert await peers.z(req.recv) == b"reply %d" % i


async def test_libzmq_req_generated_id_to_triomq_router(peers: Any, triomq_binds: bool) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with peers.link(triomq.ROUTER, zmq.REQ, triomq_binds=triomq_binds) as (router, req):
            await peers.z(req.send, b"body")
            rid, delimiter, body = await router.recv_multipart()
            assert (delimiter, body) == (b"", b"body")
            assert len(rid) == 5 and rid[:1] == b"\x00"
            await router.send_multipart([rid, b"", b"reply"])
            assert await peers.z(req.recv) == b"reply"


async def test_triomq_req_to_libzmq_router(peers: Any, triomq_binds: bool) -> None:
    """triomq REQ (correlating) through a libzmq ROUTER that echoes the envelope."""
    with trio.fail_after(TEST_TIMEOUT):
        async with peers.link(
            triomq.REQ, zmq.ROUTER, triomq_binds=triomq_binds, tri_options={"routing_id": b"tri-req"}
        ) as (req, router):
            for i in range(5):
                await req.send(b"request %d" % i)
                msg = await peers.z(router.recv_multipart)
                assert msg[0] == b"tri-req"
                assert msg[-1] == b"request %d" % i
                delimiter = msg.index(b"", 1)
                assert delimiter == len(msg) - 2
                await peers.z(router.send_multipart, [*msg[: delimiter + 1], b"reply %d" % i])
                assert await req.recv() == b"reply %d" % i


async def test_libzmq_dealer_triomq_rep(peers: Any, triomq_binds: bool) -> None:
    """A libzmq DEALER speaking REQ envelopes by hand to a triomq REP."""
    with trio.fail_after(TEST_TIMEOUT):
        async with peers.link(triomq.REP, zmq.DEALER, triomq_binds=triomq_binds) as (rep, dealer):
            await peers.z(dealer.send_multipart, [b"hop", b"", b"request"])
            assert await rep.recv() == b"request"
            await rep.send(b"reply")
            assert await peers.z(dealer.recv_multipart) == [b"hop", b"", b"reply"]


_REQUESTS_SOME_WITHOUT_DELIMITER = [
    [b""],  # the only empty frame is the last one: no delimiter
    [b"id", b""],
    [b"no delimiter at all"],
    [b"a", b"b", b"", b"body"],
    [b"", b"last"],
]


async def test_triomq_rep_drops_requests_without_delimiter_as_libzmq(peers: Any, triomq_binds: bool) -> None:
    """libzmq's REP takes an empty frame as the delimiter only if more frames
    follow; other requests are dropped. triomq's REP hands out (and answers)
    exactly the requests a libzmq REP does, and no zero-frame message."""

    def through_libzmq_rep() -> tuple[list[list[bytes]], list[list[bytes]]]:
        rep = peers.zsocket(zmq.REP)
        dealer = peers.zsocket(zmq.DEALER)
        dealer.connect(peers.zbind(rep))
        for msg in _REQUESTS_SOME_WITHOUT_DELIMITER:
            dealer.send_multipart(msg)
        got = []
        while not got or got[-1] != [b"last"]:
            got.append(rep.recv_multipart())
            rep.send(b"R")
        return got, [dealer.recv_multipart() for _ in got]

    expected = await peers.z(through_libzmq_rep)
    assert expected == ([[b"body"], [b"last"]], [[b"a", b"b", b"", b"R"], [b"", b"R"]])
    with trio.fail_after(TEST_TIMEOUT):
        async with peers.link(triomq.REP, zmq.DEALER, triomq_binds=triomq_binds) as (rep, dealer):
            for msg in _REQUESTS_SOME_WITHOUT_DELIMITER:
                await peers.z(dealer.send_multipart, msg)
            got = []
            while not got or got[-1] != [b"last"]:
                got.append(await rep.recv_multipart())
                await rep.send(b"R")
            replies = [await peers.z(dealer.recv_multipart) for _ in got]
            assert (got, replies) == expected
            assert rep.statistics().dropped == 3


async def test_router_server_that_echoes_the_envelope_serves_every_req(peers: Any, transport: str) -> None:
    """The server the docs describe (dealer-router.rst): echo every frame up to
    and including the first empty one. It answers libzmq's REQ and triomq's
    correlating REQ alike; a server that replies ``[id, b"", reply]`` needs
    triomq REQs made with ``req_correlate=False``."""

    async def echo_envelope(router: triomq.Socket, count: int) -> None:
        for _ in range(count):
            msg = await router.recv_multipart()
            split = msg.index(b"", 1) + 1
            envelope, request = msg[:split], msg[split:]
            await router.send_multipart([*envelope, b"re:" + request[0]])

    async def naive(router: triomq.Socket) -> None:
        rid, _, *request = await router.recv_multipart()
        await router.send_multipart([rid, b"", b"re:" + request[-1]])

    with trio.fail_after(TEST_TIMEOUT):
        async with triomq.open_socket(triomq.ROUTER) as router:
            ep = await router.bind(peers.endpoint())
            zreq = peers.zsocket(zmq.REQ)
            await peers.z(zreq.connect, ep)
            async with triomq.open_socket(triomq.REQ) as req:
                await req.connect(ep)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(echo_envelope, router, 2)
                    await peers.z(zreq.send, b"from libzmq")
                    assert await peers.z(zreq.recv) == b"re:from libzmq"
                    await req.send(b"from triomq")
                    assert await req.recv() == b"re:from triomq"
            async with triomq.open_socket(triomq.REQ, req_correlate=False) as req:
                await req.connect(ep)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(naive, router)
                    await req.send(b"plain")
                    assert await req.recv() == b"re:plain"


async def test_libzmq_dealer_with_a_zero_byte_id_to_triomq_router(peers: Any, triomq_binds: bool) -> None:
    """libzmq 4.3 lets a peer's routing id start with a zero byte (only ids it
    generates do), and its ROUTER accepts such a peer: so does triomq's."""
    with trio.fail_after(TEST_TIMEOUT):
        async with peers.link(
            triomq.ROUTER, zmq.DEALER, triomq_binds=triomq_binds, zmq_options={"ROUTING_ID": b"\x00abc"}
        ) as (router, dealer):
            await peers.z(dealer.send, b"hi")
            assert await router.recv_multipart() == [b"\x00abc", b"hi"]
            await router.send_multipart([b"\x00abc", b"hello"])
            assert await peers.z(dealer.recv) == b"hello"


async def test_triomq_dealer_with_a_zero_byte_id_to_libzmq_router(peers: Any, triomq_binds: bool) -> None:
    """The routing_id option takes an id starting with a zero byte, as libzmq's does."""
    with trio.fail_after(TEST_TIMEOUT):
        async with peers.link(
            triomq.DEALER, zmq.ROUTER, triomq_binds=triomq_binds, tri_options={"routing_id": b"\x00abc"}
        ) as (dealer, router):
            await dealer.send(b"hi")
            assert await peers.z(router.recv_multipart) == [b"\x00abc", b"hi"]
