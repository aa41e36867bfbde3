"""conflate (ZMQ_CONFLATE) between triomq and libzmq: each side's queues keep the latest message."""

from __future__ import annotations

import socket as stdlib_socket
from typing import Any

import pytest
import trio
import zmq

import triomq

TEST_TIMEOUT = 20
N = 1000
LAST = b"%d" % N


def _fixed_endpoint(peers: Any, name: str) -> str:
    """An endpoint known before anyone binds it (to connect first)."""
    if peers.transport == "tcp":
        with stdlib_socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return f"tcp://127.0.0.1:{s.getsockname()[1]}"
    return f"ipc://{peers.ipc_dir}/{name}.ipc"


async def test_triomq_conflating_sub_fed_by_libzmq_pub(peers: Any, triomq_binds: bool) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with peers.link(
            triomq.SUB,
            zmq.PUB,
            triomq_binds=triomq_binds,
            tri_options={"conflate": True, "subscribe": [b""]},
            zmq_options={"SNDHWM": 0},  # (libzmq's PUB would drop some of the burst at its own HWM)
        ) as (sub, pub):
            # the subscription is there once a probe gets through
            while True:
                await peers.z(pub.send, b"probe")
                with trio.move_on_after(0.02):
                    await sub.recv()
                    break
            # late probes, if any, come before this marker (TCP keeps the order)
            await peers.z(pub.send, b"marker")
            while await sub.recv() != b"marker":
                pass
            before = sub.peer_statistics()[0]

            def burst() -> None:
                for i in range(1, N + 1):
                    pub.send(b"%d" % i)

            await peers.z(burst)
            while sub.peer_statistics()[0].received < before.received + N:
                await trio.sleep(0.001)  # (polls: every message of the burst has come in)
            assert sub.recv_many_nowait() == [[LAST]]
            assert sub.peer_statistics()[0].conflated - before.conflated == N - 1


async def test_a_conflating_triomq_sub_sends_every_subscription_to_libzmq(peers: Any, triomq_binds: bool) -> None:
    """libzmq's own conflating SUB would pass one of a burst of subscriptions on."""
    with trio.fail_after(TEST_TIMEOUT):
        topics = [b"t%02d" % i for i in range(50)]
        async with peers.link(
            triomq.SUB,
            zmq.XPUB,
            triomq_binds=triomq_binds,
            tri_options={"conflate": True},
            zmq_options={"XPUB_VERBOSE": 1},
        ) as (sub, xpub):
            for topic in topics:
                await sub.subscribe(topic)
            got = [await peers.z(xpub.recv) for _ in topics]
            assert got == [b"\x01" + topic for topic in topics]


async def test_libzmq_conflating_push_to_triomq_pull(peers: Any) -> None:
    """libzmq queues the latest message only, whatever SNDHWM says, and triomq
    gets it alone."""
    with trio.fail_after(TEST_TIMEOUT):
        endpoint = _fixed_endpoint(peers, "zpush")
        push = peers.zsocket(zmq.PUSH, CONFLATE=1, SNDHWM=10)
        push.connect(endpoint)

        def burst() -> None:
            for i in range(1, N + 1):
                push.send(b"%d" % i, zmq.NOBLOCK)  # never full

        await peers.z(burst)
        async with triomq.open_socket(triomq.PULL, linger=0) as pull:
            await pull.bind(endpoint)
            assert await pull.recv() == LAST
            await peers.z(push.send, b"end")
            assert await pull.recv() == b"end"


async def test_triomq_conflating_push_to_libzmq_pull(peers: Any) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        endpoint = _fixed_endpoint(peers, "tpush")
        async with triomq.open_socket(triomq.PUSH, conflate=True, sndhwm=10, linger=0) as push:
            await push.connect(endpoint)
            for i in range(1, N + 1):
                push.send_nowait(b"%d" % i)  # never full
            pull = peers.zsocket(zmq.PULL)
            await peers.z(pull.bind, endpoint)
            assert await peers.z(pull.recv) == LAST
            await push.send(b"end")
            assert await peers.z(pull.recv) == b"end"


async def test_a_triomq_conflating_pull_keeps_libzmq_multipart_messages_whole(peers: Any) -> None:
    """Where libzmq's conflating socket keeps the last frame, triomq keeps the last message."""
    with trio.fail_after(TEST_TIMEOUT):
        endpoint = _fixed_endpoint(peers, "multipart")
        push = peers.zsocket(zmq.PUSH)
        push.connect(endpoint)
        sent = [[b"a%d" % i, b"b%d" % i, b"c%d" % i] for i in range(1, 101)]

        def queue_all() -> None:
            for msg in sent:
                push.send_multipart(msg, zmq.NOBLOCK)  # (queued until triomq binds)

        await peers.z(queue_all)
        async with triomq.open_socket(triomq.PULL, conflate=True, linger=0) as pull:
            await pull.bind(endpoint)
            while True:
                stats = pull.statistics()
                if stats.conflated + stats.queued_in + stats.received == len(sent):
                    break
                await trio.sleep(0.001)  # (polls: every message has come in)
            assert pull.recv_many_nowait() == [sent[-1]]


@pytest.mark.parametrize("kind", ["pushpull", "pubsub"])
async def test_libzmq_conflating_receiver_fed_by_triomq(peers: Any, triomq_binds: bool, kind: str) -> None:
    """libzmq's receiving side conflates triomq's messages: it reads the latest."""
    with trio.fail_after(TEST_TIMEOUT):
        tri_type, zmq_type, zopts = (
            (triomq.PUSH, zmq.PULL, {})
            if kind == "pushpull"
            else (triomq.PUB, zmq.SUB, {"SUBSCRIBE": b""})
        )
        async with peers.link(
            tri_type, zmq_type, triomq_binds=triomq_binds, zmq_options={"CONFLATE": 1, **zopts}
        ) as (tsock, zsock):
            if kind == "pubsub":
                while True:  # (the subscription is there once a probe gets through)
                    await tsock.send(b"probe")
                    if await peers.z(peers.zpoll_recv, zsock, 20) is not None:
                        break
            for i in range(1, N + 1):
                await tsock.send(b"%d" % i)
            while tsock.statistics().queued_out:
                await trio.sleep(0.001)  # (polls: all written)

            def receive_until_last() -> list[bytes]:
                got = []
                while not got or got[-1] != LAST:
                    msg = zsock.recv()
                    if msg != b"probe":
                        got.append(msg)
                return got

            got = await peers.z(receive_until_last)
            numbers = [int(m) for m in got]
            assert numbers == sorted(set(numbers))  # in order, none twice
            assert len(got) < N  # the others were replaced in libzmq's queue
