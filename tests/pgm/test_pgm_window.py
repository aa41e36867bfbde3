from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from triomq._pgm import (
    ReceiveWindow,
    TransmitWindow,
    sqn_add,
    sqn_diff,
    sqn_gt,
    sqn_gte,
    sqn_lt,
    sqn_lte,
    window_sqns,
)
from triomq._pgm._window import Delivered, LostRange, SlotState, sqn_unwrap

u32 = st.integers(0, 0xFFFFFFFF)
small = st.integers(-(2**31) + 1, 2**31 - 1)  # exactly 2**31 apart is ambiguous


def test_sqn_wraps() -> None:
    assert sqn_add(0xFFFFFFFF, 1) == 0
    assert sqn_add(0, -1) == 0xFFFFFFFF
    assert sqn_diff(0, 0xFFFFFFFF) == 1
    assert sqn_diff(0xFFFFFFFF, 0) == -1
    assert sqn_lt(0xFFFFFFF0, 5)
    assert sqn_gt(5, 0xFFFFFFF0)
    assert sqn_lte(7, 7) and sqn_gte(7, 7)
    assert not sqn_lt(7, 7)


@settings(database=None)
@given(u32, small)
def test_sqn_arithmetic_property(a: int, d: int) -> None:
    b = sqn_add(a, d)
    assert 0 <= b <= 0xFFFFFFFF
    assert sqn_diff(b, a) == d
    assert sqn_lt(a, b) == (d > 0)
    assert sqn_gte(a, b) == (d <= 0)
    assert sqn_unwrap(b, a + 5 * 2**32) == a + 5 * 2**32 + d


def test_window_sqns() -> None:
    # libzmq defaults: 100 kbit/s for 10 s in 1500-byte TPDUs.
    assert window_sqns(100, 10, 1500) == 84
    assert window_sqns(1, 0.001, 1500) == 2
    with pytest.raises(ValueError):
        window_sqns(0, 10, 1500)


def test_transmit_window_evicts_by_count() -> None:
    w = TransmitWindow(max_sqns=3, max_bytes=10**9, initial_sqn=0xFFFFFFFE)
    assert (w.trail, w.lead, len(w)) == (0xFFFFFFFE, 0xFFFFFFFD, 0)
    exts = [w.push(bytes([i]), None) for i in range(5)]
    assert [e & 0xFFFFFFFF for e in exts] == [0xFFFFFFFE, 0xFFFFFFFF, 0, 1, 2]
    assert (w.trail, w.lead, len(w)) == (0, 2, 3)
    assert w.get(0xFFFFFFFF) is None
    entry = w.get(0)
    assert entry is not None and entry.payload == b"\x02"
    assert w.get(3) is None


def test_transmit_window_evicts_by_bytes() -> None:
    w = TransmitWindow(max_sqns=100, max_bytes=250, initial_sqn=10)
    for _ in range(5):
        w.push(b"x" * 100, None)
    assert len(w) == 2 and w.nbytes == 200 and w.trail == 13 and w.lead == 14
    w.push(b"y" * 1000, None)  # never evicts the newest
    assert len(w) == 1 and w.trail == w.lead == 15


def _kinds(events: list[object]) -> list[tuple[str, int, int]]:
    out = []
    for e in events:
        if isinstance(e, Delivered):
            out.append(("d", e.ext, 1))
        else:
            assert isinstance(e, LostRange)
            out.append(("l", e.first_ext, e.count))
    return out


def test_receive_window_gap_and_drain() -> None:
    w = ReceiveWindow(max_sqns=10)
    w.define(100)
    assert w.extend(100) == [100]
    w.slots[100].state = SlotState.HAVE_DATA
    created = w.extend(103)
    assert created == [101, 102, 103]
    w.slots[103].state = SlotState.HAVE_DATA
    assert _kinds(w.drain()) == [("d", 100, 1)]
    w.slots[102].state = SlotState.LOST
    assert w.drain() == []  # 101 still missing
    w.slots[101].state = SlotState.HAVE_DATA
    assert _kinds(w.drain()) == [("d", 101, 1), ("l", 102, 1), ("d", 103, 1)]
    assert w.next_ext == 104 and not w.slots


def test_receive_window_capacity_and_trail() -> None:
    w = ReceiveWindow(max_sqns=4)
    w.define(0)
    w.extend(2)  # 0, 1, 2 missing
    w.slots[1].state = SlotState.HAVE_DATA
    # Jumping far ahead forces everything before the new window out.
    created = w.extend(1000)
    assert created == [997, 998, 999, 1000]
    assert _kinds(w.drain()) == [("l", 0, 1), ("d", 1, 1), ("l", 2, 995)]
    assert w.next_ext == 997
    # The source's trail passes missing packets: they are lost.
    w.slots[998].state = SlotState.HAVE_DATA
    w.advance_floor(999)
    assert _kinds(w.drain()) == [("l", 997, 1), ("d", 998, 1)]
    w.advance_floor(1005)
    assert _kinds(w.drain()) == [("l", 999, 6)]
    assert (w.next_ext, w.lead_ext) == (1005, 1004)
