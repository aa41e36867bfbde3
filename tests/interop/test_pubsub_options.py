"""xpub_nodrop and invert_matching between triomq and libzmq (ZMQ_XPUB_NODROP,
ZMQ_INVERT_MATCHING)."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing
import zmq

import triomq

from .test_pubsub import _recv_poking

TEST_TIMEOUT = 20

#: the sync message: no subscription below matches it, so an inverted pair lets it through
SYNC = b"z-sync"
TRAFFIC = [b"a", b"b", b"ab", b"ba", b"", b"a-1", b"xa", b"A", b"a-2", b"b-a"]
END = b"z-end"
#: what an inverted pair lets through when the subscriber holds b"a"
NOT_A = [t for t in TRAFFIC if not t.startswith(b"a")] + [END]


def _zrecv_until_end(sub: Any) -> list[bytes]:
    """(Blocking) first frames up to END, late copies of SYNC left out."""
    got = []
    while True:
        msg = sub.recv_multipart()
        if msg[0] == SYNC:
            continue
        assert msg[1:] == [b"body"]
        got.append(msg[0])
        if msg[0] == END:
            return got


async def _recv_until_end(sub: triomq.Socket) -> list[bytes]:
    got = []
    while True:
        msg = await sub.recv_multipart()
        if msg[0] == SYNC:
            continue
        assert msg[1:] == [b"body"]
        got.append(msg[0])
        if msg[0] == END:
            return got


# ---------------------------------------------------------------- invert_matching


async def test_libzmq_inverted_sub_gets_what_its_topics_do_not_match_from_triomq(
    peers: Any, triomq_binds: bool
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with peers.link(
            triomq.PUB,
            zmq.SUB,
            triomq_binds=triomq_binds,
            tri_options={"invert_matching": True},
            zmq_options={"INVERT_MATCHING": 1, "SUBSCRIBE": b"a"},
        ) as (pub, sub):
            while True:  # until the libzmq SUB gets one
                await pub.send_multipart([SYNC, b"x"])
                if await peers.z(peers.zpoll_recv, sub, 20) is not None:
                    break
            for topic in [*TRAFFIC, END]:
                await pub.send_multipart([topic, b"body"])
            assert await peers.z(_zrecv_until_end, sub) == NOT_A


async def test_triomq_inverted_xpub_leaves_out_what_a_libzmq_xsub_subscribed(
    peers: Any, triomq_binds: bool
) -> None:
    """A libzmq XSUB does not filter: what it gets is what the inverted XPUB sent."""
    with trio.fail_after(TEST_TIMEOUT):
        async with peers.link(
            triomq.XPUB, zmq.XSUB, triomq_binds=triomq_binds, tri_options={"invert_matching": True}
        ) as (xpub, xsub):
            await peers.z(xsub.send, b"\x01a")
            assert await _recv_poking(peers, xpub, xsub) == [b"\x01a"]
            for topic in [*TRAFFIC, END]:
                await xpub.send_multipart([topic, b"body"])
            assert await peers.z(_zrecv_until_end, xsub) == NOT_A


async def test_triomq_inverted_sub_gets_what_its_topics_do_not_match_from_libzmq(
    peers: Any, triomq_binds: bool
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with peers.link(
            triomq.SUB,
            zmq.PUB,
            triomq_binds=triomq_binds,
            tri_options={"invert_matching": True, "subscribe": [b"a"]},
            zmq_options={"INVERT_MATCHING": 1},
        ) as (sub, pub):
            while True:  # until the triomq SUB gets one
                await peers.z(pub.send_multipart, [SYNC, b"x"])
                with trio.move_on_after(0.02):
                    await sub.recv_multipart()
                    break
            for topic in [*TRAFFIC, END]:
                await peers.z(pub.send_multipart, [topic, b"body"])
            assert await _recv_until_end(sub) == NOT_A


async def test_libzmq_inverted_xpub_leaves_out_what_a_triomq_xsub_subscribed(
    peers: Any, triomq_binds: bool
) -> None:
    """triomq's XSUB, as libzmq's, does not filter (invert_matching changes
    nothing there): what it gets is what libzmq's inverted XPUB sent it."""
    with trio.fail_after(TEST_TIMEOUT):
        async with peers.link(
            triomq.XSUB,
            zmq.XPUB,
            triomq_binds=triomq_binds,
            tri_options={"invert_matching": True},
            zmq_options={"INVERT_MATCHING": 1},
        ) as (xsub, xpub):
            await xsub.send(b"\x01a")
            assert await peers.z(xpub.recv_multipart) == [b"\x01a"]
            for topic in [*TRAFFIC, END]:
                await peers.z(xpub.send_multipart, [topic, b"body"])
            assert await _recv_until_end(xsub) == NOT_A


async def test_an_inverted_sub_without_topics_gets_everything_both_ways(peers: Any) -> None:
    """libzmq's inverted SUB with no subscription receives every message (its
    match is "no topic matches", XOR inverted); triomq's does the same, from
    a libzmq inverted PUB and for one."""
    with trio.fail_after(TEST_TIMEOUT):
        async with peers.link(
            triomq.SUB,
            zmq.PUB,
            triomq_binds=True,
            tri_options={"invert_matching": True},
            zmq_options={"INVERT_MATCHING": 1},
        ) as (sub, pub):
            while True:
                await peers.z(pub.send_multipart, [SYNC, b"x"])
                with trio.move_on_after(0.02):
                    await sub.recv_multipart()
                    break
            for topic in [*TRAFFIC, END]:
                await peers.z(pub.send_multipart, [topic, b"body"])
            assert await _recv_until_end(sub) == [*TRAFFIC, END]
        async with peers.link(
            triomq.PUB,
            zmq.SUB,
            triomq_binds=True,
            tri_options={"invert_matching": True},
            zmq_options={"INVERT_MATCHING": 1},
        ) as (pub, zsub):
            while True:
                await pub.send_multipart([SYNC, b"x"])
                if await peers.z(peers.zpoll_recv, zsub, 20) is not None:
                    break
            for topic in [*TRAFFIC, END]:
                await pub.send_multipart([topic, b"body"])
            assert await peers.z(_zrecv_until_end, zsub) == [*TRAFFIC, END]


# ---------------------------------------------------------------- xpub_nodrop


async def test_triomq_nodrop_pub_loses_nothing_to_a_slow_libzmq_sub(peers: Any, triomq_binds: bool) -> None:
    """A libzmq SUB that does not read: the triomq publisher's queue for it
    fills (after the kernel's buffers and libzmq's own queue), and then
    ``send_nowait`` raises WouldBlock rather than drop; ``send`` waits. When the
    SUB reads, every message arrives, in order."""
    payload = b"p" * 10_000
    with trio.fail_after(TEST_TIMEOUT):
        async with peers.link(
            triomq.XPUB,
            zmq.SUB,
            triomq_binds=triomq_binds,
            tri_options={"xpub_nodrop": True, "sndhwm": 10},
            zmq_options={"RCVHWM": 10, "SUBSCRIBE": b""},
        ) as (pub, sub):
            assert await _recv_poking(peers, pub, sub) == [b"\x01"]
            sent = refused = 0
            while sent < 10_000 and refused < 2:  # (bounded: a PUB that drops never refuses)
                try:
                    pub.send_nowait(b"%d:" % sent + payload)
                except trio.WouldBlock:
                    refused += 1
                    await trio.testing.wait_all_tasks_blocked()  # (the writer moves some to the kernel)
                    continue
                sent += 1
                refused = 0
            assert refused == 2, "the publisher never refused a message"
            total = sent + 200

            def read_all() -> list[bytes]:
                return [sub.recv() for _ in range(total)]

            async with trio.open_nursery() as nursery:

                async def send_rest() -> None:
                    for i in range(sent, total):
                        await pub.send(b"%d:" % i + payload)  # waits whenever the SUB is full

                nursery.start_soon(send_rest)
                got = await peers.z(read_all)
            assert got == [b"%d:" % i + payload for i in range(total)]
            assert pub.statistics().dropped == 0
