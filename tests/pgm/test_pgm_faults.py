from __future__ import annotations

import random

import pytest

from triomq._pgm import DelayLine, FaultInjector


def run(seed: int, **kw: float) -> list[tuple[float, int]]:
    inj: FaultInjector[int] = FaultInjector(random.Random(seed), **kw)
    out: list[tuple[float, int]] = []
    for t in range(100):
        out += inj.apply(range(t * 10, t * 10 + 10), t * 0.01)
    return out


def test_reproducible() -> None:
    kw = {"drop": 0.2, "duplicate": 0.1, "reorder": 0.2, "delay": 0.003}
    assert run(1, **kw) == run(1, **kw)
    assert run(1, **kw) != run(2, **kw)


def test_rates() -> None:
    inj: FaultInjector[int] = FaultInjector(random.Random(3), drop=0.3, duplicate=0.1)
    out = inj.apply(range(20_000), 0.0)
    assert inj.sent == 20_000
    assert 0.28 < inj.dropped / 20_000 < 0.32
    assert len(out) == 20_000 - inj.dropped + inj.duplicated
    assert 0.08 < inj.duplicated / (20_000 - inj.dropped) < 0.12
    assert all(t == 0.0 for t, _ in out)


def test_delay_and_reorder() -> None:
    inj: FaultInjector[int] = FaultInjector(random.Random(4), drop=0.0, reorder=0.5, delay=0.001)
    line: DelayLine[int] = DelayLine()
    for i in range(1000):
        line.extend(inj.apply([i], i * 0.0005))
    assert len(line) == 1000
    assert line.next_deadline() >= 0.0
    got = line.pop_due(1e9)
    assert sorted(got) == list(range(1000))
    assert got != sorted(got)  # some overtook others
    assert line.next_deadline() == float("inf")


def test_partition() -> None:
    inj: FaultInjector[str] = FaultInjector(random.Random(5), drop=0.0)
    inj.partition(until=1.0)
    assert inj.apply(["a", "b"], 0.5) == []
    assert inj.apply(["c"], 1.0) == [(1.0, "c")]
    assert inj.dropped == 2


def test_validation() -> None:
    with pytest.raises(ValueError):
        FaultInjector(random.Random(), drop=1.5)
    with pytest.raises(ValueError):
        FaultInjector(random.Random(), delay=-1)


def test_delay_line_fifo_for_equal_times() -> None:
    line: DelayLine[str] = DelayLine()
    line.push(1.0, "b")
    line.push(0.5, "a")
    line.push(1.0, "c")
    assert line.pop_due(0.4) == []
    assert line.pop_due(1.0) == ["a", "b", "c"]
