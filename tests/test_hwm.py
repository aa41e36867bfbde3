"""High-water marks for every sending socket type: block or drop, as libzmq does."""

from __future__ import annotations

import pytest
import trio

import triomq

from .helpers import wait_for_event, wait_subscribed

# (sender, receiver, options, what happens at the HWM)
BLOCKING = [
    (triomq.PUSH, triomq.PULL, {}),
    (triomq.DEALER, triomq.DEALER, {}),
    (triomq.PAIR, triomq.PAIR, {}),
    (triomq.ROUTER, triomq.DEALER, {"router_mandatory": True}),
]
DROPPING = [
    (triomq.PUB, triomq.SUB, {}),
    (triomq.XPUB, triomq.SUB, {}),
    (triomq.ROUTER, triomq.DEALER, {}),
]


def _msg(sender: triomq.SocketType, i: int) -> list[bytes]:
    return [b"peer", b"%d" % i] if sender is triomq.ROUTER else [b"%d" % i]


@pytest.mark.parametrize("transport", ["inproc", "tcp"])
@pytest.mark.parametrize("sender,receiver,options", BLOCKING, ids=lambda v: getattr(v, "name", ""))
async def test_blocking_types_wait_at_the_hwm(sender, receiver, options, transport) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(20):
        async with triomq.open_socket(receiver, rcvhwm=3, routing_id=b"peer", subscribe=()) as rx:
            ep = await rx.bind("inproc://hwm-block" if transport == "inproc" else "tcp://127.0.0.1:0")
            async with triomq.open_socket(sender, sndhwm=4, linger=0, **options) as tx:
                await tx.connect(ep)
                await tx.wait_peers()
                sent = 0
                while True:  # until every queue (and, on tcp, the kernel's buffers) is full
                    try:
                        tx.send_multipart_nowait(_msg(sender, sent))
                    except trio.WouldBlock:
                        if transport == "inproc":
                            break
                        with trio.move_on_after(0.2) as scope:
                            await tx.send_multipart(_msg(sender, sent))
                        if scope.cancelled_caught:
                            break
                    sent += 1
                if transport == "inproc":
                    assert sent == 4 + 3
                assert tx.statistics().dropped == 0
                # nothing was dropped: every message arrives, in order
                for i in range(sent):
                    assert (await rx.recv_multipart())[-1] == b"%d" % i


@pytest.mark.parametrize("sender,receiver,options", DROPPING, ids=lambda v: getattr(v, "name", ""))
async def test_dropping_types_drop_and_count_at_the_hwm(sender, receiver, options) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(20):
        async with triomq.open_socket(receiver, rcvhwm=3, routing_id=b"peer", subscribe=[b""] if receiver is triomq.SUB else ()) as rx:
            await rx.bind("inproc://hwm-drop")
            async with triomq.open_socket(sender, sndhwm=4, **options) as tx:
                async with tx.monitor() as events:
                    await tx.connect("inproc://hwm-drop")
                    await tx.wait_peers()
                    if sender is triomq.XPUB:
                        assert await tx.recv() == b"\x01"
                    for i in range(20):
                        tx.send_multipart_nowait(_msg(sender, i))  # never blocks
                    assert tx.statistics().dropped == 13  # 4 + 3 fit
                    (peer,) = tx.peer_statistics()
                    assert peer.dropped == (13 if sender is not triomq.ROUTER else 0)
                    event = await wait_for_event(events, triomq.MessagesDropped)
                    assert event.count >= 1
                    assert [(await rx.recv_multipart())[-1] for _ in range(7)] == [b"%d" % i for i in range(7)]


@pytest.mark.parametrize("end", ["window", "close"])
async def test_drop_events_add_up_to_the_dropped_count(end: str) -> None:
    """MessagesDropped events come at most ten times a second, but the drops
    of the rest of a tenth of a second are reported at its end (the publisher
    may have gone quiet), or when the socket closes: the counts add up to
    statistics().dropped."""
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.SUB, rcvhwm=1, subscribe=[b""]) as rx:
            await rx.bind("inproc://drop-events")
            async with triomq.open_socket(triomq.PUB, sndhwm=1) as tx, tx.monitor() as events:
                await tx.connect("inproc://drop-events")
                await tx.wait_peers()
                await wait_subscribed(tx, rx)
                for i in range(50):
                    tx.send_nowait(b"%d" % i)  # 2 fit, the rest are dropped, in one burst
                    if i == 10:
                        tx.send_many_nowait([[b"batch"]] * 5)
                dropped = tx.statistics().dropped
                assert dropped >= 50 + 5 - 2
                if end == "close":
                    await tx.aclose()  # before the window ends
                reported = 0
                async for event in events:
                    if isinstance(event, triomq.MessagesDropped):
                        reported += event.count
                        if end == "window" and reported >= dropped:
                            break
                assert reported == dropped == tx.statistics().dropped


async def test_zero_means_unlimited() -> None:
    async with triomq.open_socket(triomq.PULL, rcvhwm=0) as rx:
        await rx.bind("inproc://hwm-zero")
        async with triomq.open_socket(triomq.PUSH, sndhwm=0) as tx:
            await tx.connect("inproc://hwm-zero")
            for i in range(50_000):
                tx.send_nowait(b"%d" % i)
            assert rx.statistics().queued_in == 50_000
