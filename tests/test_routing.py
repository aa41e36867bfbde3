"""probe_router (an empty message to each new peer), between triomq sockets."""

from __future__ import annotations

import tempfile

import pytest
import trio

import triomq


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
