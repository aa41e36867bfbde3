"""The disk swap: when a pipe is at its HWM, further messages spill to spool files.

Order is kept across the three places a pipe's outgoing messages can be::

    pipe.outq (memory, bounded by sndhwm)  <  read back  <  on disk  <  pending (to write)

The application's ``send`` only encodes the message into ``pending`` (memory,
up to PENDING_LIMIT bytes); a task of the pipe writes pending records to
append-only segment files and reads them back into the pipe as the peer
catches up, both in a worker thread, in batches, so the Trio loop never waits
for the disk. When the disk holds nothing, pending records go straight back to
the pipe without touching it. A segment file is deleted once read, so disk
space is given back as messages are delivered; every file is removed when the
pipe goes away.

The byte budget (the ``swap`` option) is shared by a socket's pipes; when it
is spent, ``writable()`` says no and the socket type's normal HWM behaviour
applies (PUB drops, the others wait). While the budget lasts nothing is
dropped: if the worker thread falls behind (PENDING_LIMIT bytes of the
socket's records wait to be written) the socket's senders wait for it, a PUB
included, so memory stays bounded and the sender runs at the disk's pace.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Callable

import attrs
import trio

from .._swap import (
    RECORD_HEADER,
    CorruptRecord,
    decode_record,
    decode_records_untrusted,
    encode_record,
    split_records,
)
from ._pipe import Pipe

logger = logging.getLogger("triomq")

#: pending records are written out once they add up to this much
FLUSH_SIZE = 256 * 1024
#: a socket's senders wait while this much of its records is pending (waiting
#: for the worker thread), unless the budget is spent
PENDING_LIMIT = 32 * 1024 * 1024
#: a segment file is closed once it is this large
SEGMENT_SIZE = 4 * 1024 * 1024
READ_CHUNK = 1024 * 1024


@attrs.define(eq=False)
class SwapBudget:
    """The bytes a socket may keep spooled (in memory awaiting write, and on disk)."""

    limit: int
    used: int = 0
    #: bytes of records waiting for the worker thread, over all the pipes
    pending: int = 0
    directory: str = ""
    _owned: bool = False

    @classmethod
    def create(cls, limit: int, parent: str | None) -> SwapBudget:
        directory = tempfile.mkdtemp(prefix="triomq-swap-", dir=parent)
        return cls(limit, directory=directory, owned=True)

    def lagging(self) -> bool:
        """The disk is behind: senders wait (even a PUB), rather than drop
        what the budget has room for or let memory grow."""
        return self.pending >= PENDING_LIMIT and self.used < self.limit

    def remove(self) -> None:
        if self._owned:
            shutil.rmtree(self.directory, ignore_errors=True)


@attrs.define(eq=False)
class _Segment:
    path: str
    size: int = 0
    offset: int = 0
    records: int = 0
    records_read: int = 0
    closed: bool = False


@attrs.define(eq=False)
class SpoolStatistics:
    #: messages spooled and not yet back in the pipe
    spooled: int
    #: bytes of them on disk
    on_disk: int
    #: messages that went through the disk
    swapped: int
    #: records found corrupted (those and the rest of their file were dropped)
    corrupted: int


class Spool:
    """One pipe's overflow (the socket gives each pipe one when ``swap`` is set).

    Its bytes count in the shared budget from when a message is spooled until
    it is back in the pipe (or lost). If the disk fails (full, or an I/O
    error), the spool stops spilling until it has drained: what it holds is
    still delivered, in order, and the socket type's HWM rule applies meanwhile.
    """

    def __init__(self, pipe: Pipe, budget: SwapBudget, wake_senders: Callable[[], None]) -> None:
        self.pipe = pipe
        self.budget = budget
        self.wake_senders = wake_senders
        self.directory = tempfile.mkdtemp(prefix="pipe-", dir=budget.directory)
        #: records to write (only the record: a message is not held twice)
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._readback: deque[list[bytes]] = deque()
        self._readback_bytes: deque[int] = deque()
        self._segments: deque[_Segment] = deque()
        self._next_segment = 0
        self._count = 0
        self._lot = trio.lowlevel.ParkingLot()
        self.scope = trio.CancelScope()
        self.swapped = 0
        self.corrupted = 0
        #: messages lost with a corrupted segment, or one that could not be read
        self.lost = 0
        #: the bytes this spool counts in the budget
        self._held = 0
        #: a disk operation failed: no spilling until the spool has drained (its
        #: pending records then no longer count as waiting for the disk)
        self.failed = False
        self.on_corruption: Callable[[str, int], None] = lambda reason, lost: None
        self.on_failure: Callable[[str, int], None] = lambda reason, lost: None

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def has_room(self) -> bool:
        budget = self.budget
        return budget.used < budget.limit and not self.failed

    def append(self, msg: list[bytes]) -> None:
        """Spool a message (call only when :meth:`has_room`)."""
        record = encode_record(msg)
        self._pending.append(record)
        self._pending_bytes += len(record)
        budget = self.budget
        budget.used += len(record)
        budget.pending += len(record)
        self._held += len(record)
        self._count += 1
        self._lot.unpark_all()

    def wake(self) -> None:
        self._lot.unpark_all()

    def discard(self) -> int:
        """Give up what is spooled (its peer is gone for good): how many
        messages that loses (0 on a second call). Its budget is given back at
        once, for the socket's other pipes; the task ends and removes the files
        (a write under way finishes first, and counts itself out of pending)."""
        lost, self._count = self._count, 0
        self._let_go()
        self.scope.cancel()
        if lost:
            self.wake_senders()
        return lost

    def _let_go(self) -> None:
        """Give back the budget this spool holds, and drop what it holds in
        memory (a write under way counts itself out of pending when done)."""
        budget = self.budget
        budget.used -= self._held
        self._held = 0
        if not self.failed:
            budget.pending -= self._pending_bytes
        self._pending_bytes = 0
        self._pending.clear()
        self._readback.clear()
        self._readback_bytes.clear()

    def statistics(self) -> SpoolStatistics:
        on_disk = sum(s.size - s.offset for s in self._segments)
        return SpoolStatistics(self._count, on_disk, self.swapped, self.corrupted)

    # ------------------------------------------------------------------ the task

    async def run(self) -> None:
        """Move messages between memory, disk and the pipe until cancelled."""
        with self.scope:
            try:
                while True:
                    if not await self._step():
                        await self._lot.park()
            finally:
                self._remove_files()

    async def _step(self) -> bool:
        """Do what needs doing now; False if there was nothing."""
        outq = self.pipe.outq
        did = False
        if self._count and outq.room() > 0:
            did = True
            if self._readback:
                self._refill_from_readback()
            elif self._segments and self._unread_segment():
                await self._read_from_disk()
            elif self._pending:
                self._refill_from_pending()  # the disk is empty: skip it
            else:
                did = False
        if self._pending and not self.failed and (self._pending_bytes >= FLUSH_SIZE or outq.room() <= 0):
            await self._flush()
            did = True
        return did

    def _release(self, nbytes: int, messages: int) -> None:
        self.budget.used -= nbytes
        self._held -= nbytes
        self._count -= messages
        if not self._count:
            self.failed = False  # (drained: the disk may be tried again)
        self.wake_senders()

    def _refill_from_readback(self) -> None:
        outq = self.pipe.outq
        room = outq.room()
        moved: list[list[bytes]] = []
        freed = 0
        while self._readback and len(moved) < room:
            moved.append(self._readback.popleft())
            freed += self._readback_bytes.popleft()
        outq.put_many(moved)
        self._release(freed, len(moved))

    def _refill_from_pending(self) -> None:
        outq = self.pipe.outq
        room = outq.room()
        take = self._pending[:room]
        del self._pending[:room]
        freed = sum(map(len, take))
        self._pending_bytes -= freed
        if not self.failed:
            self.budget.pending -= freed
        outq.put_many([decode_record(record) for record in take])
        self._release(freed, len(take))

    def _unread_segment(self) -> _Segment | None:
        """The oldest segment with unread records; read ones are deleted (space back)."""
        while self._segments:
            seg = self._segments[0]
            if seg.offset < seg.size:
                return seg
            self._segments.popleft()
            _unlink(seg.path)
        return None

    async def _flush(self) -> None:
        """Write what is pending to disk, in one write (the records are let go
        once joined: during the write, memory holds the joined copy and the
        records sent meanwhile)."""
        batch = self._pending
        count = len(batch)
        self._pending = []
        # (it counts as pending until written: senders may wait for it)
        nbytes = self._pending_bytes
        self._pending_bytes = 0
        data = b"".join(batch)
        del batch
        seg = self._segments[-1] if self._segments and not self._segments[-1].closed else None
        if seg is None:
            seg = _Segment(os.path.join(self.directory, f"{self._next_segment:08d}.spool"))
            self._next_segment += 1
            self._segments.append(seg)
        try:
            await trio.to_thread.run_sync(_append, seg.path, data, abandon_on_cancel=False)
        except OSError as exc:
            # Nothing of it counts as written: a torn tail lies past seg.size,
            # and the segment takes no more. The records go back, first in line.
            seg.closed = True
            self._pending[:0] = split_records(data)
            self._pending_bytes += nbytes
            if not self.failed:
                self.failed = True  # (and what it holds no longer waits for the disk)
                self.budget.pending -= self._pending_bytes
            self._report_failure(f"cannot write {seg.path}: {exc.strerror or exc}", 0)
            return
        except BaseException:  # cancelled before the thread ran: the pipe is going
            self.budget.pending -= nbytes
            raise
        self.budget.pending -= nbytes
        seg.size += len(data)
        seg.records += count
        self.swapped += count
        if seg.size >= SEGMENT_SIZE:
            seg.closed = True
        self.wake_senders()

    async def _read_from_disk(self) -> None:
        seg = self._unread_segment()
        assert seg is not None
        want = min(seg.size - seg.offset, READ_CHUNK)
        try:
            data = await trio.to_thread.run_sync(_read, seg.path, seg.offset, want, abandon_on_cancel=False)
            final = seg.offset + len(data) >= seg.size
            messages, used = decode_records_untrusted(data, final=final)
            if not messages and not final:
                # one record larger than a chunk: read exactly it
                length = int.from_bytes(data[2:6], "big")
                data = await trio.to_thread.run_sync(
                    _read, seg.path, seg.offset, RECORD_HEADER + length, abandon_on_cancel=False
                )
                messages, used = decode_records_untrusted(data, final=True)
        except OSError as exc:
            # the rest of this file is lost (later ones may still be read)
            lost = self._drop_segment(seg)
            self._report_failure(f"cannot read {seg.path}: {exc.strerror or exc}", lost)
            return
        except CorruptRecord as exc:
            messages, used = exc.messages, exc.consumed  # type: ignore[attr-defined]
            self._take(seg, messages, data[:used])
            self._corrupt(seg, str(exc))
            return
        self._take(seg, messages, data[:used])

    def _take(self, seg: _Segment, messages: list[list[bytes]], used: bytes) -> None:
        seg.offset += len(used)
        seg.records_read += len(messages)
        # the bytes each message held, so the budget is released as it leaves
        pos = 0
        for msg in messages:
            length = int.from_bytes(used[pos + 2 : pos + 6], "big")
            self._readback.append(msg)
            self._readback_bytes.append(RECORD_HEADER + length)
            pos += RECORD_HEADER + length
        if seg.offset >= seg.size:
            self._segments.popleft()
            _unlink(seg.path)

    def _corrupt(self, seg: _Segment, reason: str) -> None:
        """Drop what is left of a segment that failed its checks, and report it."""
        lost = self._drop_segment(seg)
        self.corrupted += 1
        logger.error("swap file %s is corrupted (%s): %d message(s) lost", seg.path, reason, lost)
        self.on_corruption(reason, lost)

    def _drop_segment(self, seg: _Segment) -> int:
        """Give up what is left of *seg*; how many messages that lost."""
        lost = seg.records - seg.records_read
        self.lost += lost
        self._segments.remove(seg)
        _unlink(seg.path)
        self._release(seg.size - seg.offset, lost)
        return lost

    def _report_failure(self, reason: str, lost: int) -> None:
        logger.error("disk swap of %s failed (%s): %d message(s) lost", self.pipe.endpoint, reason, lost)
        self.on_failure(reason, lost)
        self.wake_senders()

    def _remove_files(self) -> None:
        self._let_go()
        self._segments.clear()
        shutil.rmtree(self.directory, ignore_errors=True)
        self.wake_senders()  # (they may have waited for this pipe's disk)


def _append(path: str, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def _read(path: str, offset: int, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
