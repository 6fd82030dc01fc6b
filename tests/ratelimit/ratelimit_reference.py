"""Independent reference limiters in exact arithmetic, for the model-based tests.

Written from the textbook definitions, not from buttress's code:

* the token bucket is the ITU-T I.371 *continuous-state leaky bucket* (a level that drains
  at one unit per emission interval, admitting while level + cost <= burst), the dual of the
  virtual-scheduling (TAT) form buttress uses;
* the fixed window counts per ``floor(t / window)``;
* the sliding window is the weighted two-window counter, estimate
  ``previous * (1 - fraction) + current``.

Everything is :class:`fractions.Fraction`, so the reference has no rounding at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

F = Fraction


@dataclass
class RefTokenBucket:
    limit: Fraction
    window: Fraction
    burst: Fraction
    buckets: dict[str, tuple[Fraction, Fraction]] = field(default_factory=dict)  # level, at

    @property
    def interval(self) -> Fraction:
        return self.window / self.limit

    def _level(self, key: str, now: Fraction) -> Fraction:
        level, at = self.buckets.get(key, (F(0), now))
        return max(F(0), level - (now - at) / self.interval)

    def fits(self, key: str, now: Fraction, cost: Fraction) -> bool:
        return self._level(key, now) + cost <= self.burst

    def charge(self, key: str, now: Fraction, cost: Fraction) -> None:
        self.buckets[key] = (self._level(key, now) + cost, now)

    def refund(self, key: str, now: Fraction, cost: Fraction) -> None:
        self.buckets[key] = (max(F(0), self._level(key, now) - cost), now)

    def reset(self, key: str) -> None:
        self.buckets.pop(key, None)

    def retry_after(self, key: str, now: Fraction, cost: Fraction) -> float:
        if cost > self.burst:
            return math.inf
        excess = self._level(key, now) + cost - self.burst
        return float(max(F(0), excess) * self.interval)

    def remaining(self, key: str, now: Fraction) -> int:
        return math.floor(self.burst - self._level(key, now))


@dataclass
class RefFixedWindow:
    limit: Fraction
    window: Fraction
    counts: dict[str, tuple[int, Fraction]] = field(default_factory=dict)  # index, used

    def _used(self, key: str, now: Fraction) -> Fraction:
        index = math.floor(now / self.window)
        stored = self.counts.get(key)
        return stored[1] if stored is not None and stored[0] == index else F(0)

    def fits(self, key: str, now: Fraction, cost: Fraction) -> bool:
        return self._used(key, now) + cost <= self.limit

    def charge(self, key: str, now: Fraction, cost: Fraction) -> None:
        self.counts[key] = (math.floor(now / self.window), self._used(key, now) + cost)

    def refund(self, key: str, now: Fraction, cost: Fraction) -> None:
        self.counts[key] = (math.floor(now / self.window), max(F(0), self._used(key, now) - cost))

    def reset(self, key: str) -> None:
        self.counts.pop(key, None)

    def retry_after(self, key: str, now: Fraction, cost: Fraction) -> float:
        if cost > self.limit:
            return math.inf
        if self.fits(key, now, cost):
            return 0.0
        return float((math.floor(now / self.window) + 1) * self.window - now)

    def remaining(self, key: str, now: Fraction) -> int:
        return math.floor(self.limit - self._used(key, now))


@dataclass
class RefSlidingWindow:
    limit: Fraction
    window: Fraction
    counts: dict[str, tuple[int, Fraction, Fraction]] = field(default_factory=dict)

    def _view(self, key: str, now: Fraction) -> tuple[int, Fraction, Fraction, Fraction]:
        """(index, fraction, current, previous) at ``now``."""
        index = math.floor(now / self.window)
        fraction = now / self.window - index
        stored = self.counts.get(key)
        if stored is None or stored[0] < index - 1:
            return index, fraction, F(0), F(0)
        if stored[0] == index - 1:
            return index, fraction, F(0), stored[1]
        return index, fraction, stored[1], stored[2]

    def estimate(self, key: str, now: Fraction) -> Fraction:
        _, fraction, current, previous = self._view(key, now)
        return previous * (1 - fraction) + current

    def fits(self, key: str, now: Fraction, cost: Fraction) -> bool:
        return self.estimate(key, now) + cost <= self.limit

    def charge(self, key: str, now: Fraction, cost: Fraction) -> None:
        index, _, current, previous = self._view(key, now)
        self.counts[key] = (index, current + cost, previous)

    def refund(self, key: str, now: Fraction, cost: Fraction) -> None:
        index, _, current, previous = self._view(key, now)
        taken = min(current, cost)
        self.counts[key] = (index, current - taken, max(F(0), previous - (cost - taken)))

    def reset(self, key: str) -> None:
        self.counts.pop(key, None)

    def remaining(self, key: str, now: Fraction) -> int:
        return max(0, math.floor(self.limit - self.estimate(key, now)))


Reference = RefTokenBucket | RefFixedWindow | RefSlidingWindow
