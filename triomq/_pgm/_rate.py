"""A token bucket: the PGM source's rate limit (ZMQ_RATE, in kbit/s).

Time is passed in; nothing here sleeps.
"""

from __future__ import annotations

import math

__all__ = ["TokenBucket"]

# Float rounding can leave the bucket a hair short at exactly ready_at(); a
# hundredth of a byte of slack keeps "wake at ready_at, then send" working.
_SLACK = 0.01


class TokenBucket:
    """``rate`` bytes per second, bursts of up to ``burst`` bytes.

    ``try_consume(n, now)`` spends ``n`` bytes if the bucket holds them;
    ``ready_at(n)`` is the absolute time at which it will (given no other
    spending).
    """

    def __init__(self, rate: float, burst: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = float(rate)
        self.burst = float(burst)
        self.tokens = float(burst)
        self._last = -math.inf

    def _refill(self, now: float) -> None:
        if now > self._last:
            if self._last == -math.inf:
                self.tokens = self.burst
            else:
                self.tokens = min(self.burst, self.tokens + (now - self._last) * self.rate)
            self._last = now

    def available(self, now: float) -> float:
        self._refill(now)
        return self.tokens

    def try_consume(self, n: float, now: float) -> bool:
        self._refill(now)
        if self.tokens + _SLACK >= n or self.tokens + _SLACK >= self.burst:
            # A packet larger than the whole bucket goes when the bucket is full.
            self.tokens -= n
            return True
        return False

    def ready_at(self, n: float) -> float:
        """When ``try_consume(n, ...)`` will next succeed (``-inf``: now)."""
        need = min(n, self.burst)
        if self.tokens + _SLACK >= need or self._last == -math.inf:
            return -math.inf
        return self._last + (need - self.tokens) / self.rate
