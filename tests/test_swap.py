"""The disk swap: overflow spills to checksummed spool files instead of blocking or dropping."""

from __future__ import annotations

import errno
import glob
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

import triomq
from triomq._engine import _swap as _engine_swap
from triomq._swap import CorruptRecord, decode_record, decode_records_untrusted, encode_record

from .helpers import wait_for_event, wait_subscribed

# ------------------------------------------------------------------ record format


@given(st.lists(st.lists(st.binary(max_size=300), min_size=1, max_size=5), max_size=20))
def test_records_round_trip(messages: list[list[bytes]]) -> None:
    data = b"".join(encode_record(m) for m in messages)
    assert decode_records_untrusted(data, final=True) == (messages, len(data))
    # a pending record, still in memory, goes back to the pipe as its message
    assert [decode_record(encode_record(m)) for m in messages] == messages
    # an incomplete tail is left for the next read, unless the file ends there
    if data:
        got, used = decode_records_untrusted(data[:-1], final=False)
        assert got == messages[:-1] and used == len(data) - len(encode_record(messages[-1]))
        with pytest.raises(CorruptRecord, match="torn"):
            decode_records_untrusted(data[:-1], final=True)


@given(st.data())
def test_any_corruption_is_detected(data: st.DataObject) -> None:
    messages = [[b"alpha", b"beta"], [b"gamma" * 20], [b""]]
    raw = bytearray(b"".join(encode_record(m) for m in messages))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    try:
        got, _ = decode_records_untrusted(bytes(raw), final=True)
    except CorruptRecord as exc:
        got = exc.messages  # type: ignore[attr-defined]
    # whatever comes out is a prefix of what went in: never a corrupted message
    assert got == messages[: len(got)]
    assert len(got) < len(messages)


# ------------------------------------------------------------------ sockets


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def test_pub_with_swap_delivers_everything_to_a_slow_subscriber(tmp_path) -> None:  # type: ignore[no-untyped-def]
    n, payload = 200_000, b"x" * 1000  # 200 MB in all: far more than memory should hold
    with trio.fail_after(120):
        async with triomq.open_socket(
            triomq.PUB, sndhwm=100, swap=400 * 2**20, swap_dir=str(tmp_path)
        ) as pub:
            ep = await pub.bind("tcp://127.0.0.1:0")
            async with triomq.open_socket(triomq.SUB, subscribe=[b""], rcvhwm=100) as sub:
                await sub.connect(ep)
                await wait_subscribed(pub, sub)
                start_rss = rss_mb()
                peak_spooled = peak_rss = 0.0
                received = 0

                reader_done = trio.Event()

                async def slow_reader() -> None:
                    nonlocal received
                    while received < n:
                        for msg in await sub.recv_many(100):
                            assert msg == [b"%d:" % received + payload]
                            received += 1
                        await trio.lowlevel.checkpoint()
                    reader_done.set()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(slow_reader)
                    sent = 0
                    while sent < n:  # 500 at a time: far faster than the reader
                        batch = [[b"%d:" % i + payload] for i in range(sent, min(sent + 500, n))]
                        # never drops: at most it waits for the disk to catch up
                        sent += await pub.send_many(batch)
                        peak_spooled = max(peak_spooled, pub.statistics().spooled)
                        peak_rss = max(peak_rss, rss_mb())
                    while not reader_done.is_set():
                        peak_rss = max(peak_rss, rss_mb())
                        # say so at once, rather than wait for what will never come
                        assert pub.statistics().dropped == 0, "the publisher dropped messages"
                        with trio.move_on_after(0.05):  # sample memory every 50 ms meanwhile
                            await reader_done.wait()
                stats = pub.statistics()
                assert stats.dropped == 0 and received == n
                assert peak_spooled > 50_000  # most of it went through the disk...
                assert stats.spooled == 0  # ...and came back
                assert peak_rss - start_rss < 100  # while memory stayed bounded (MB)
                assert not glob.glob(str(tmp_path / "*" / "*" / "*.spool"))  # space given back
    assert os.listdir(tmp_path) == []  # spool files and directories gone after close


@asynccontextmanager
async def swapping_pub(
    tmp_path: Any, name: str, *, swap: int
) -> AsyncIterator[tuple[triomq.Socket, triomq.Socket, trio.MemoryReceiveChannel[Any]]]:
    """A PUB with a disk swap (sndhwm 10) and, over inproc, a SUB taking every
    topic (rcvhwm 10), subscribed; and the PUB's monitor events."""
    async with triomq.open_socket(triomq.PUB, sndhwm=10, swap=swap, swap_dir=str(tmp_path)) as pub:
        await pub.bind(f"inproc://{name}")
        async with pub.monitor() as events, triomq.open_socket(triomq.SUB, subscribe=[b""], rcvhwm=10) as sub:
            await sub.connect(f"inproc://{name}")
            await wait_subscribed(pub, sub)
            yield pub, sub, events


@pytest.fixture
def slow_disk(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Spool writes wait (in their worker thread) until the event is set; 64 KiB
    of a socket's records waiting for them are enough to hold its senders."""
    gate = threading.Event()
    real_append = _engine_swap._append

    def append(path: str, data: bytes) -> None:
        assert gate.wait(30), "the test never opened the gate"
        real_append(path, data)

    monkeypatch.setattr(_engine_swap, "_append", append)
    monkeypatch.setattr(_engine_swap, "PENDING_LIMIT", 64 * 1024)
    yield gate
    gate.set()  # (a failed test must not leave a worker thread waiting)


async def test_pub_with_swap_waits_for_a_slow_disk_instead_of_dropping(slow_disk, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(30):
        async with swapping_pub(tmp_path, "slow-disk", swap=10 * 2**20) as (pub, sub, _):
            sent = 0
            with pytest.raises(trio.WouldBlock):  # the disk is behind: not dropped, refused
                while True:
                    pub.send_nowait(b"%d:" % sent + b"p" * 1000)
                    sent += 1
            assert 20 + 64 <= sent <= 20 + 66  # the queue, then 64 KiB waiting for the disk
            assert pub.statistics().dropped == 0
            with pytest.raises(trio.WouldBlock):
                pub.send_many_nowait([[b"more"]])
            accepted = pub.statistics().sent

            async def send_last() -> None:
                await pub.send(b"%d:last" % sent)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_last)
                await trio.testing.wait_all_tasks_blocked()  # the spool is writing (held)
                assert pub.statistics().sent == accepted  # the send waits
                slow_disk.set()  # the disk catches up: the send goes through
            assert pub.statistics().dropped == 0
            for i in range(sent):
                assert await sub.recv() == b"%d:" % i + b"p" * 1000
            assert await sub.recv() == b"%d:last" % sent


async def test_a_failed_disk_write_loses_nothing_and_the_pub_falls_back_to_dropping(  # type: ignore[no-untyped-def]
    monkeypatch, tmp_path
) -> None:
    real_append = _engine_swap._append
    failing = True

    def append(path: str, data: bytes) -> None:
        if failing:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_append(path, data)

    monkeypatch.setattr(_engine_swap, "_append", append)
    with trio.fail_after(30):
        async with swapping_pub(tmp_path, "full-disk", swap=10 * 2**20) as (pub, sub, events):
            for i in range(100):
                pub.send_nowait(b"%d" % i)  # 20 queued, the rest spooled
            failed = await wait_for_event(events, triomq.SwapFailed)
            assert "No space left on device" in failed.reason and failed.lost == 0
            for i in range(100, 150):
                pub.send_nowait(b"%d" % i)  # the spool takes no more: a PUB drops
            assert pub.statistics().dropped == 50
            assert [await sub.recv() for _ in range(100)] == [b"%d" % i for i in range(100)]
            # drained: the disk is tried again, and now it works
            failing = False
            for i in range(200, 300):
                pub.send_nowait(b"%d" % i)
            assert pub.statistics().dropped == 50
            assert [await sub.recv() for _ in range(100)] == [b"%d" % i for i in range(200, 300)]
            assert pub.pattern.pipes[0].spool.swapped > 0  # type: ignore[attr-defined]


@pytest.fixture
def failing_reads(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Every spool read fails with EIO; the event is set once a write is done."""
    real_append = _engine_swap._append
    written = threading.Event()

    def append(path: str, data: bytes) -> None:
        real_append(path, data)
        written.set()

    def read(path: str, offset: int, size: int) -> bytes:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(_engine_swap, "_append", append)
    monkeypatch.setattr(_engine_swap, "_read", read)
    return written


async def test_a_failed_disk_read_loses_that_file_and_says_so(failing_reads, tmp_path) -> None:  # type: ignore[no-untyped-def]
    written = failing_reads
    with trio.fail_after(30):
        async with swapping_pub(tmp_path, "bad-disk", swap=10 * 2**20) as (pub, sub, events):
            for i in range(100):
                pub.send_nowait(b"%d" % i)
            await trio.to_thread.run_sync(written.wait)  # some of it is on disk
            got = [await sub.recv() for _ in range(20)]  # what was queued
            failed = await wait_for_event(events, triomq.SwapFailed)
            assert "Input/output error" in failed.reason and failed.lost > 0
            while pub.statistics().queued_out:  # what was still in memory
                got.append(await sub.recv())
            numbers = [int(m) for m in got]
            assert numbers == sorted(set(numbers)) and numbers[:20] == list(range(20))
            assert len(got) + failed.lost == 100
            assert pub.statistics().lost == failed.lost


async def test_send_many_stops_where_the_disk_falls_behind(slow_disk, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(30):
        async with swapping_pub(tmp_path, "slow-batch", swap=2**30) as (pub, sub, _):
            batch = [[b"%d:" % i + b"b" * 10_000] for i in range(1000)]  # 10 MB
            sent = pub.send_many_nowait(batch)
            # in one piece the batch would all wait in memory for the disk; it
            # stops at the limit (give or take a slice), dropping nothing
            assert 20 < sent < 1000
            assert pub.statistics().dropped == 0
            with pytest.raises(trio.WouldBlock):
                pub.send_many_nowait(batch[sent:])
            slow_disk.set()
            while sent < len(batch):
                sent += await pub.send_many(batch[sent:])
            assert pub.statistics().dropped == 0
            for i in range(1000):
                assert (await sub.recv()).startswith(b"%d:" % i)


async def test_closing_waits_for_an_inproc_peer_to_take_what_is_on_disk(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # (an inproc peer reads the shared queue after we close, but not our swap)
    with trio.fail_after(30):
        async with triomq.open_socket(triomq.PULL, rcvhwm=5) as pull:
            await pull.bind("inproc://swap-close")
            got: list[bytes] = []
            async with trio.open_nursery() as nursery:

                async def reader() -> None:
                    while len(got) < 100:
                        got.append(await pull.recv())

                async with triomq.open_socket(triomq.PUSH, sndhwm=5, swap=2**20, swap_dir=str(tmp_path)) as push:
                    await push.connect("inproc://swap-close")
                    for i in range(100):
                        push.send_nowait(b"%d" % i)
                    assert push.statistics().spooled == 90
                    nursery.start_soon(reader)
                assert push.statistics().lost == 0
            assert got == [b"%d" % i for i in range(100)]
        # with a linger and nobody reading, what the swap holds is counted lost
        async with triomq.open_socket(triomq.PULL, rcvhwm=5) as pull:
            await pull.bind("inproc://swap-close-2")
            async with triomq.open_socket(
                triomq.PUSH, sndhwm=5, swap=2**20, swap_dir=str(tmp_path), linger=0.2
            ) as push:
                await push.connect("inproc://swap-close-2")
                for i in range(100):
                    push.send_nowait(b"%d" % i)
            assert push.statistics().lost == 90


async def test_a_peer_gone_for_good_gives_its_swap_back(tmp_path) -> None:  # type: ignore[no-untyped-def]
    budget = 60_000
    with trio.fail_after(30):
        async with triomq.open_socket(
            triomq.ROUTER, sndhwm=1, swap=budget, swap_dir=str(tmp_path)
        ) as router, router.monitor() as events:
            ep = await router.bind("tcp://127.0.0.1:0")
            async with triomq.open_socket(triomq.DEALER, routing_id=b"A", rcvhwm=1) as a:
                await a.connect(ep)
                await a.send(b"hello")  # unread by the application when A leaves
                assert await router.recv_multipart() == [b"A", b"hello"]
                await a.send(b"unread")
                for _ in range(100):  # more than the swap holds: it fills up
                    router.send_multipart_nowait([b"A", b"x" * 1000])
                spooled = router.statistics().spooled
                assert spooled > 50
            await wait_for_event(events, triomq.Disconnected)
            stats = router.statistics()
            assert stats.spooled == 0 and stats.lost >= spooled  # given up at once, counted
            # its budget is free again: another peer's overflow spills, not dropped
            async with triomq.open_socket(triomq.DEALER, routing_id=b"B", rcvhwm=1) as b:
                await b.connect(ep)
                await b.send(b"hi")
                msg = await router.recv_multipart()
                while msg[0] != b"B":  # (A's unread message comes first)
                    msg = await router.recv_multipart()
                dropped = router.statistics().dropped  # (A's overflow, before)
                for _ in range(40):
                    router.send_multipart_nowait([b"B", b"y" * 1000])
                assert router.statistics().dropped == dropped


async def test_refused_inproc_connects_leave_no_swap_behind(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(30):
        async with triomq.open_socket(triomq.PAIR, swap=2**20, swap_dir=str(tmp_path)) as binder:
            await binder.bind("inproc://swap-refuse")
            async with triomq.open_socket(triomq.PAIR) as first:
                await first.connect("inproc://swap-refuse")
                for kind in [triomq.PAIR] * 5 + [triomq.PUSH] * 5:  # busy, and incompatible
                    async with triomq.open_socket(kind, linger=0) as other:
                        await other.connect("inproc://swap-refuse")
                await trio.testing.wait_all_tasks_blocked()  # (spool tasks end)
                assert len(glob.glob(str(tmp_path / "*" / "pipe-*"))) == 1


async def test_swap_losses_stay_counted_after_the_peer_goes(failing_reads, tmp_path) -> None:  # type: ignore[no-untyped-def]
    written = failing_reads
    with trio.fail_after(30):
        async with triomq.open_socket(triomq.PUSH, sndhwm=5, swap=2**20, swap_dir=str(tmp_path)) as push:
            async with push.monitor() as events:
                async with triomq.open_socket(triomq.PULL, rcvhwm=5) as pull:
                    await pull.bind("inproc://swap-lost")
                    await push.connect("inproc://swap-lost")
                    for i in range(100):
                        push.send_nowait(b"%d" % i)
                    await trio.to_thread.run_sync(written.wait)
                    for _ in range(10):  # what was queued: then the swap is read
                        await pull.recv()
                    failed = await wait_for_event(events, triomq.SwapFailed)
                    assert failed.lost > 0 and push.statistics().lost >= failed.lost
                assert push.statistics().pipes == 0
                assert push.statistics().lost >= failed.lost  # (it went down to 0)


async def test_connect_wakes_a_sender_waiting_for_room() -> None:
    # a new pipe takes messages while it connects (libzmq queues there too)
    with trio.fail_after(10):
        async with triomq.open_socket(triomq.PULL, rcvhwm=1) as pull:
            await pull.bind("inproc://room-wake")
            async with triomq.open_socket(triomq.PUSH, sndhwm=1, linger=0) as push:
                await push.connect("inproc://room-wake")
                while True:
                    try:
                        push.send_nowait(b"fill")
                    except trio.WouldBlock:
                        break
                sent = trio.Event()

                async def sender() -> None:
                    await push.send(b"waits")
                    sent.set()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(sender)
                    await trio.testing.wait_all_tasks_blocked()
                    assert not sent.is_set()
                    await push.connect("tcp://127.0.0.1:1")  # nobody there: queues meanwhile
                    await sent.wait()


async def test_pub_without_swap_drops_and_counts() -> None:
    with trio.fail_after(30):
        async with triomq.open_socket(triomq.PUB, sndhwm=100) as pub:
            await pub.bind("inproc://noswap")
            async with triomq.open_socket(triomq.SUB, subscribe=[b""], rcvhwm=100) as sub:
                await sub.connect("inproc://noswap")
                await wait_subscribed(pub, sub)
                for i in range(1000):
                    pub.send_nowait(b"%d" % i)
                assert pub.statistics().dropped == 800  # capacity 100 + 100, the rest dropped


async def test_push_with_swap_does_not_block_until_the_budget_is_spent(tmp_path) -> None:  # type: ignore[no-untyped-def]
    budget = 64 * 1024
    with trio.fail_after(30):
        async with triomq.open_socket(
            triomq.PUSH, sndhwm=10, swap=budget, swap_dir=str(tmp_path), linger=0
        ) as push:
            await push.connect("inproc://swap-push")  # nobody there yet
            sent = 0
            while True:
                try:
                    push.send_nowait(b"%06d" % sent + b"y" * 1000)
                except trio.WouldBlock:
                    break
                sent += 1
                if sent % 20 == 0:
                    await trio.lowlevel.checkpoint()  # let the spool write to disk
            assert 10 + budget // 1100 <= sent <= 10 + budget // 1000 + 2  # hwm, then the budget
            async with triomq.open_socket(triomq.PULL) as pull:
                await pull.bind("inproc://swap-push")
                for i in range(sent):
                    assert (await pull.recv())[:6] == b"%06d" % i
                await push.send(b"room again")
                assert await pull.recv() == b"room again"


@pytest.mark.parametrize(
    "sender,receiver",
    [
        (triomq.DEALER, triomq.DEALER),
        (triomq.PAIR, triomq.PAIR),
        (triomq.ROUTER, triomq.DEALER),
    ],
)
async def test_swap_works_for_blocking_and_routing_types(sender, receiver, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(30):
        async with triomq.open_socket(receiver, routing_id=b"peer", rcvhwm=5) as rx:
            ep = await rx.bind("tcp://127.0.0.1:0")
            async with triomq.open_socket(sender, sndhwm=5, swap=10 * 2**20, swap_dir=str(tmp_path)) as tx:
                await tx.connect(ep)
                await tx.wait_peers()
                prefix = [b"peer"] if sender is triomq.ROUTER else []
                for i in range(3000):
                    tx.send_multipart_nowait([*prefix, b"%d" % i, b"z" * 500])
                assert tx.statistics().dropped == 0
                for i in range(3000):
                    assert (await rx.recv_multipart())[0] == b"%d" % i


async def test_corrupted_spool_record_is_detected_and_never_delivered(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(30):
        async with triomq.open_socket(
            triomq.PUSH, sndhwm=1, swap=10 * 2**20, swap_dir=str(tmp_path), linger=0
        ) as push:
            async with push.monitor() as events:
                await push.connect("inproc://corrupt")
                for i in range(2000):
                    push.send_nowait(b"%d" % i + b"." * 500)
                # wait until the spool has written its files (polls: no event says the
                # spool has flushed to disk; under the fail_after)
                while not glob.glob(str(tmp_path / "*" / "*" / "*.spool")):
                    await trio.sleep(0.01)
                while push.pattern._lb.pipes[0].spool._pending:  # type: ignore[attr-defined]
                    await trio.sleep(0.01)
                (path,) = glob.glob(str(tmp_path / "*" / "*" / "*.spool"))
                # flip a byte in the middle of the file (one local read and write: a
                # blocking call is fine in a test)
                with open(path, "r+b") as f:  # noqa: ASYNC230
                    f.seek(os.path.getsize(path) // 2)  # noqa: ASYNC240
                    byte = f.read(1)
                    f.seek(-1, os.SEEK_CUR)
                    f.write(bytes([byte[0] ^ 0xFF]))
                async with triomq.open_socket(triomq.PULL) as pull:
                    await pull.bind("inproc://corrupt")
                    event = await wait_for_event(events, triomq.SwapCorrupted)
                    assert event.lost > 0
                    got = []
                    while push.statistics().queued_out:  # more is on its way
                        got += await pull.recv_many()
                    while True:
                        try:
                            got += pull.recv_many_nowait()
                        except trio.WouldBlock:
                            break
                    numbers = [int(m[0].split(b".")[0]) for m in got]
                    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
                    assert all(m[0] == b"%d" % k + b"." * 500 for m, k in zip(got, numbers, strict=True))
                    assert len(got) + event.lost == 2000
                    assert push.statistics().lost == event.lost
