"""Sequence-number arithmetic and the PGM transmit and receive windows.

PGM sequence numbers are 32-bit and wrap, so on the wire they are compared with
serial-number arithmetic (``sqn_lt`` and friends).  Inside the windows we
"unwrap" them into unbounded Python ints ("extended" sequence numbers) relative
to the window's lead, which makes every range computation plain integer
arithmetic; ``ext & SQN_MASK`` gives the wire value back.

This module imports nothing but the standard library and attrs.
"""

from __future__ import annotations

import enum
import math
from collections import deque

import attrs

from ._packets import Fragment

__all__ = [
    "SQN_MASK",
    "Delivered",
    "LostRange",
    "ReceiveWindow",
    "RxSlot",
    "SlotState",
    "TransmitWindow",
    "TxEntry",
    "sqn_add",
    "sqn_diff",
    "sqn_gt",
    "sqn_gte",
    "sqn_lt",
    "sqn_lte",
    "sqn_unwrap",
    "window_sqns",
]

SQN_BITS = 32
SQN_MOD = 1 << SQN_BITS
SQN_MASK = SQN_MOD - 1
_SQN_HALF = 1 << (SQN_BITS - 1)


def sqn_add(a: int, n: int) -> int:
    """``a + n`` modulo 2**32."""
    return (a + n) & SQN_MASK


def sqn_diff(a: int, b: int) -> int:
    """The signed serial distance ``a - b``, in ``[-2**31, 2**31)``."""
    d = (a - b) & SQN_MASK
    return d - SQN_MOD if d >= _SQN_HALF else d


def sqn_lt(a: int, b: int) -> bool:
    return sqn_diff(a, b) < 0


def sqn_lte(a: int, b: int) -> bool:
    return sqn_diff(a, b) <= 0


def sqn_gt(a: int, b: int) -> bool:
    return sqn_diff(a, b) > 0


def sqn_gte(a: int, b: int) -> bool:
    return sqn_diff(a, b) >= 0


def sqn_unwrap(sqn: int, ref_ext: int) -> int:
    """The extended sequence number nearest ``ref_ext`` whose low 32 bits are ``sqn``."""
    return ref_ext + sqn_diff(sqn, ref_ext & SQN_MASK)


def window_sqns(rate_kbps: float, recovery_ivl: float, max_tpdu: int, minimum: int = 2) -> int:
    """How many packets a window holds: ``rate × recovery interval / max TPDU``.

    This is how OpenPGM sizes its windows from ``PGM_TXW_MAX_RTE`` /
    ``PGM_TXW_SECS`` (which libzmq derives from ZMQ_RATE and ZMQ_RECOVERY_IVL).
    """
    if rate_kbps <= 0 or recovery_ivl <= 0 or max_tpdu <= 0:
        raise ValueError("rate, recovery interval and max TPDU must be positive")
    nbytes = rate_kbps * 1000.0 / 8.0 * recovery_ivl
    return max(minimum, math.ceil(nbytes / max_tpdu))


# --------------------------------------------------------------------------- transmit


@attrs.define(eq=False)
class TxEntry:
    """One transmitted TSDU, kept for repairs."""

    payload: bytes
    fragment: Fragment | None
    last_repair: float = -math.inf


class TransmitWindow:
    """The source's retransmit buffer.

    Holds at most ``max_sqns`` packets and (beyond the newest one) at most
    ``max_bytes`` payload bytes; pushing more evicts the oldest, which advances
    the trail.  An empty window has ``trail == lead + 1``.
    """

    def __init__(self, max_sqns: int, max_bytes: int, initial_sqn: int) -> None:
        if max_sqns < 1:
            raise ValueError("a transmit window holds at least one packet")
        self.max_sqns = max_sqns
        self.max_bytes = max_bytes
        self._entries: deque[TxEntry] = deque()
        self._bytes = 0
        self.trail_ext = initial_sqn & SQN_MASK
        self.lead_ext = self.trail_ext - 1

    @property
    def trail(self) -> int:
        return self.trail_ext & SQN_MASK

    @property
    def lead(self) -> int:
        return self.lead_ext & SQN_MASK

    @property
    def next_sqn(self) -> int:
        return (self.lead_ext + 1) & SQN_MASK

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def push(self, payload: bytes, fragment: Fragment | None) -> int:
        """Append the next packet; returns its extended sequence number."""
        self._entries.append(TxEntry(payload, fragment))
        self._bytes += len(payload)
        self.lead_ext += 1
        while len(self._entries) > self.max_sqns or (
            self._bytes > self.max_bytes and len(self._entries) > 1
        ):
            old = self._entries.popleft()
            self._bytes -= len(old.payload)
            self.trail_ext += 1
        return self.lead_ext

    def unwrap(self, sqn: int) -> int:
        return sqn_unwrap(sqn, self.lead_ext)

    def get_ext(self, ext: int) -> TxEntry | None:
        i = ext - self.trail_ext
        if 0 <= i < len(self._entries):
            return self._entries[i]
        return None

    def get(self, sqn: int) -> TxEntry | None:
        """The entry for wire sequence number ``sqn``, if still in the window."""
        return self.get_ext(self.unwrap(sqn))


# --------------------------------------------------------------------------- receive


class SlotState(enum.Enum):
    BACK_OFF = 1  # missing; a NAK goes out when the random back-off expires
    WAIT_NCF = 2  # NAK sent (or another receiver's seen); waiting for an NCF
    WAIT_DATA = 3  # NCF seen; waiting for the RDATA
    HAVE_DATA = 4
    LOST = 5  # given up; delivered as a loss


@attrs.define(eq=False)
class RxSlot:
    state: SlotState
    packet: object = None
    deadline: float = math.inf
    timer_id: int = 0
    ncf_retries: int = 0
    data_retries: int = 0


@attrs.frozen
class Delivered:
    ext: int
    packet: object


@attrs.frozen
class LostRange:
    first_ext: int
    count: int


WindowEvent = Delivered | LostRange


class ReceiveWindow:
    """A receiver's per-source window: gap tracking and in-order release.

    Everything below ``next_ext`` has been released (delivered or reported
    lost); ``slots`` holds ``next_ext .. lead_ext``.  The window never spans more
    than ``max_sqns`` sequence numbers: extending the lead further forces the
    oldest missing packets out as lost.  ``drain()`` returns, in sequence order,
    the packets and losses that are ready.
    """

    def __init__(self, max_sqns: int) -> None:
        if max_sqns < 1:
            raise ValueError("a receive window holds at least one packet")
        self.max_sqns = max_sqns
        self.defined = False
        self.next_ext = 0
        self.lead_ext = -1
        self.slots: dict[int, RxSlot] = {}
        self._events: list[WindowEvent] = []

    def define(self, next_ext: int) -> None:
        """Start the window: the first packet we care about is ``next_ext``."""
        self.defined = True
        self.next_ext = next_ext
        self.lead_ext = next_ext - 1

    def unwrap(self, sqn: int) -> int:
        return sqn_unwrap(sqn, self.lead_ext)

    def _lost(self, first: int, count: int) -> None:
        if count <= 0:
            return
        if self._events:
            last = self._events[-1]
            if isinstance(last, LostRange) and last.first_ext + last.count == first:
                self._events[-1] = LostRange(last.first_ext, last.count + count)
                return
        self._events.append(LostRange(first, count))

    def advance_floor(self, floor: int) -> None:
        """Nothing below ``floor`` can be repaired any more: release it."""
        if floor <= self.next_ext:
            return
        top = min(self.lead_ext, floor - 1)
        ext = self.next_ext
        slots = self.slots
        while ext <= top:
            slot = slots.pop(ext)
            if slot.state is SlotState.HAVE_DATA:
                self._events.append(Delivered(ext, slot.packet))
            else:
                self._lost(ext, 1)
            ext += 1
        if floor - 1 > self.lead_ext:
            first = self.lead_ext + 1  # >= next_ext: the window is never "negative"
            self._lost(first, floor - first)
            self.lead_ext = floor - 1
        self.next_ext = floor

    def extend(self, new_lead: int) -> list[int]:
        """Make ``new_lead`` the lead; returns the new placeholders (state BACK_OFF).

        The caller decides the state of the placeholders, in particular the last
        one when it is the packet that just arrived.
        """
        if new_lead <= self.lead_ext:
            return []
        floor = new_lead - self.max_sqns + 1
        if floor > self.next_ext:
            self.advance_floor(floor)
        start = max(self.lead_ext + 1, self.next_ext)
        created = list(range(start, new_lead + 1))
        slots = self.slots
        for ext in created:
            slots[ext] = RxSlot(SlotState.BACK_OFF)
        self.lead_ext = new_lead
        return created

    def drain(self) -> list[WindowEvent]:
        """Release, in order, everything from ``next_ext`` that is received or lost."""
        slots = self.slots
        ext = self.next_ext
        while ext <= self.lead_ext:
            slot = slots.get(ext)
            if slot is None:  # pragma: no cover - invariant
                break
            if slot.state is SlotState.HAVE_DATA:
                del slots[ext]
                self._events.append(Delivered(ext, slot.packet))
            elif slot.state is SlotState.LOST:
                del slots[ext]
                self._lost(ext, 1)
            else:
                break
            ext += 1
        self.next_ext = ext
        events = self._events
        self._events = []
        return events
