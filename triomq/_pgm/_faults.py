"""Deterministic fault injection for datagram links.

The engine's datagram layer (and the tests' simulated network) passes outgoing
datagrams through :meth:`FaultInjector.apply`, which returns when each copy
should be delivered -- or nothing, if it was dropped.  All randomness comes
from the injected :class:`random.Random`, so a seed reproduces a run.
:class:`DelayLine` is a small timed queue to hold what ``apply`` returns.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Iterable
from typing import Generic, TypeVar

__all__ = ["DelayLine", "FaultInjector"]

T = TypeVar("T")


class FaultInjector(Generic[T]):
    """Drops, duplicates, delays and reorders datagrams.

    * ``drop``: probability a datagram is lost;
    * ``duplicate``: probability a delivered datagram is delivered twice;
    * ``delay``: each copy is delayed uniformly in ``[0, delay]`` seconds;
    * ``reorder``: probability a copy is held back a further
      ``[0, reorder_delay]`` seconds (default ``max(2 × delay, 1 ms)``), so
      that later datagrams overtake it.

    :meth:`partition` drops everything until a given time (a link outage).
    Counters ``sent``, ``dropped`` and ``duplicated`` report what happened.
    """

    def __init__(
        self,
        rng: random.Random,
        drop: float = 0.1,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        delay: float = 0.0,
        *,
        reorder_delay: float | None = None,
    ) -> None:
        for name, p in (("drop", drop), ("duplicate", duplicate), ("reorder", reorder)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability")
        if delay < 0:
            raise ValueError("delay must be >= 0")
        self.rng = rng
        self.drop = drop
        self.duplicate = duplicate
        self.reorder = reorder
        self.delay = delay
        self.reorder_delay = reorder_delay if reorder_delay is not None else max(2 * delay, 0.001)
        self.down_until = -math.inf
        self.sent = 0
        self.dropped = 0
        self.duplicated = 0

    def partition(self, until: float) -> None:
        """Drop every datagram handed over before ``until``."""
        self.down_until = until

    def _when(self, now: float) -> float:
        rng = self.rng
        t = now
        if self.delay:
            t += rng.random() * self.delay
        if self.reorder and rng.random() < self.reorder:
            t += rng.random() * self.reorder_delay
        return t

    def apply(self, datagrams: Iterable[T], now: float) -> list[tuple[float, T]]:
        """``(deliver_at, datagram)`` for each copy to deliver, in delivery order."""
        rng = self.rng
        out: list[tuple[float, T]] = []
        for d in datagrams:
            self.sent += 1
            if now < self.down_until or (self.drop and rng.random() < self.drop):
                self.dropped += 1
                continue
            out.append((self._when(now), d))
            if self.duplicate and rng.random() < self.duplicate:
                self.duplicated += 1
                out.append((self._when(now), d))
        out.sort(key=lambda item: item[0])
        return out


class DelayLine(Generic[T]):
    """Items that become due at given times; FIFO among equal times."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, T]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, deliver_at: float, item: T) -> None:
        heapq.heappush(self._heap, (deliver_at, next(self._seq), item))

    def extend(self, timed: Iterable[tuple[float, T]]) -> None:
        for deliver_at, item in timed:
            self.push(deliver_at, item)

    def next_deadline(self) -> float:
        return self._heap[0][0] if self._heap else math.inf

    def pop_due(self, now: float) -> list[T]:
        out: list[T] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            out.append(heapq.heappop(heap)[2])
        return out
