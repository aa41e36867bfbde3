"""PAIR<->PAIR and PUSH->PULL between triomq and libzmq: frame sizes, multipart, ordering."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import zmq

import triomq

TEST_TIMEOUT = 20

SIZES = [0, 1, 255, 256, 70_000]

#: (triomq sender type, libzmq receiver type) for "triomq -> libzmq", and the reverse
KINDS = {
    "pair": (triomq.PAIR, zmq.PAIR, triomq.PAIR, zmq.PAIR),
    "pushpull": (triomq.PUSH, zmq.PULL, triomq.PULL, zmq.PUSH),
}


def _frame(size: int, seed: int) -> bytes:
    """A frame of *size* bytes whose content depends on its position."""
    pattern = bytes((seed * 31 + i) & 0xFF for i in range(256))
    return (pattern * (size // 256 + 1))[:size]


def _messages() -> list[list[bytes]]:
    msgs: list[list[bytes]] = [[_frame(size, i)] for i, size in enumerate(SIZES)]
    # all sizes in one message, in both orders
    msgs.append([_frame(size, 10 + i) for i, size in enumerate(SIZES)])
    msgs.append([_frame(size, 20 + i) for i, size in enumerate(reversed(SIZES))])
    # many frames, of varied sizes (empty ones included)
    msgs.append([_frame((i * 37) % 300, 30 + i) for i in range(50)])
    msgs.append([b""] * 50)
    # larger than one read or write batch of the engine
    msgs.append([_frame(2_000_000, 40), b"tail"])
    return msgs


def _types(kind: str, direction: str) -> tuple[triomq.SocketType, int]:
    tri_send, zmq_recv, tri_recv, zmq_send = KINDS[kind]
    return (tri_send, zmq_recv) if direction == "triomq_to_libzmq" else (tri_recv, zmq_send)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("direction", ["triomq_to_libzmq", "libzmq_to_triomq"])
async def test_frame_sizes_and_multipart(peers: Any, triomq_binds: bool, kind: str, direction: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        msgs = _messages()
        tri_type, zmq_type = _types(kind, direction)
        async with peers.link(tri_type, zmq_type, triomq_binds=triomq_binds) as (tsock, zsock):
            if direction == "triomq_to_libzmq":
                for msg in msgs:
                    await tsock.send_multipart(msg)
                got = [await peers.z(zsock.recv_multipart) for _ in msgs]
            else:
                for msg in msgs:
                    await peers.z(zsock.send_multipart, msg)
                got = [await tsock.recv_multipart() for _ in msgs]
            assert got == msgs


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("direction", ["triomq_to_libzmq", "libzmq_to_triomq"])
async def test_many_messages_in_order(peers: Any, triomq_binds: bool, kind: str, direction: str) -> None:
    count = 10_000
    with trio.fail_after(TEST_TIMEOUT):
        tri_type, zmq_type = _types(kind, direction)
        async with peers.link(tri_type, zmq_type, triomq_binds=triomq_binds) as (tsock, zsock):
            expected = [b"%d" % i for i in range(count)]
            if direction == "triomq_to_libzmq":

                def receive_all() -> list[bytes]:
                    return [zsock.recv() for _ in range(count)]

                async with trio.open_nursery() as nursery:
                    result: list[list[bytes]] = []

                    async def receiver() -> None:
                        result.append(await peers.z(receive_all))

                    nursery.start_soon(receiver)
                    for body in expected:
                        await tsock.send(body)
                got = result[0]
            else:

                def send_all() -> None:
                    for body in expected:
                        zsock.send(body)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(peers.z, send_all)
                    got = [await tsock.recv() for _ in range(count)]
            assert got == expected
            stats = tsock.statistics()
            assert stats.peers == 1
            if direction == "triomq_to_libzmq":
                assert stats.sent == count
            else:
                assert stats.received == count


@pytest.mark.parametrize("triomq_sends_first", [True, False])
async def test_pair_both_ways(peers: Any, triomq_binds: bool, triomq_sends_first: bool) -> None:
    """A PAIR connection carries messages both ways, alternating."""
    with trio.fail_after(TEST_TIMEOUT):
        async with peers.link(triomq.PAIR, zmq.PAIR, triomq_binds=triomq_binds) as (tsock, zsock):
            for i in range(20):
                if (i % 2 == 0) == triomq_sends_first:
                    msg = [b"from-triomq", b"%d" % i, _frame(300 * i, i)]
                    await tsock.send_multipart(msg)
                    assert await peers.z(zsock.recv_multipart) == msg
                else:
                    msg = [b"from-libzmq", b"%d" % i, _frame(300 * i, i)]
                    await peers.z(zsock.send_multipart, msg)
                    assert await tsock.recv_multipart() == msg
