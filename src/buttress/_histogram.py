"""A log-linear latency histogram in the manner of HdrHistogram: fixed relative precision.

Values (seconds) are recorded as whole microseconds. Below 128 µs every microsecond has its own
bucket; above, each power of two is split in 128 sub-buckets, so a recorded value is known to
within 1/128 (0.8 %) of itself, from a microsecond to hours, in a few hundred counters. Pure
and not thread-safe: callers lock around it (or keep one per thread and :meth:`merge`).

>>> h = Histogram()
>>> for ms in (1, 2, 3, 4, 100):
...     h.record(ms / 1000)
>>> round(h.percentile(50) * 1000, 1), round(h.max * 1000, 1)
(3.0, 100.0)
"""

from __future__ import annotations

from typing import Any

__all__ = ["Histogram"]

_SUB_BITS = 7
_SUB = 1 << _SUB_BITS  # sub-buckets per power of two
_UNIT = 1e-6  # one microsecond


def _index(v: int) -> int:
    if v < _SUB:
        return v
    shift = v.bit_length() - _SUB_BITS - 1
    return (shift + 1) * _SUB + ((v >> shift) - _SUB)


def _lowest(i: int) -> int:
    if i < _SUB:
        return i
    shift = i // _SUB - 1
    return ((i % _SUB) + _SUB) << shift


def _highest(i: int) -> int:
    if i < _SUB:
        return i
    shift = i // _SUB - 1
    return _lowest(i) + (1 << shift) - 1


class Histogram:
    """Counts of values (seconds) with 1/128 relative precision; O(1) per record."""

    __slots__ = ("_counts", "count", "max", "min", "total")

    def __init__(self) -> None:
        self._counts: list[int] = []
        self.count = 0
        self.total = 0.0
        self.max = 0.0
        self.min = 0.0

    def record(self, seconds: float, weight: int = 1) -> None:
        """Add one value (negative values count as 0), ``weight`` times: a value sampled one
        time in 8 stands for 8."""
        v = int(seconds / _UNIT) if seconds > 0 else 0
        i = _index(v)
        counts = self._counts
        if i >= len(counts):
            counts.extend([0] * (i + 1 - len(counts)))
        counts[i] += weight
        if not self.count or seconds < self.min:
            self.min = max(seconds, 0.0)
        if seconds > self.max:
            self.max = seconds
        self.count += weight
        self.total += seconds * weight

    def merge(self, other: Histogram) -> None:
        """Add every value of ``other`` to this histogram."""
        if not other.count:
            return
        if len(other._counts) > len(self._counts):
            self._counts.extend([0] * (len(other._counts) - len(self._counts)))
        for i, c in enumerate(other._counts):
            if c:
                self._counts[i] += c
        self.min = other.min if not self.count else min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.count += other.count
        self.total += other.total

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def percentile(self, p: float) -> float:
        """The value at or below which ``p`` percent of the values fall (0 when empty).

        Reported as the upper end of its bucket, capped at the true maximum, so it never
        understates a latency.
        """
        if not self.count:
            return 0.0
        if p >= 100:
            return self.max
        rank = max(1, int(p / 100.0 * self.count + 0.999999999))
        seen = 0
        for i, c in enumerate(self._counts):
            seen += c
            if seen >= rank:
                return min((_highest(i) + 1) * _UNIT, self.max) if i else min(_UNIT, self.max)
        return self.max  # pragma: no cover - the counts always reach count

    def summary(self) -> dict[str, Any]:
        """count, mean, p50, p95, p99, max (seconds)."""
        return {
            "count": self.count,
            "mean": self.mean,
            "p50": self.percentile(50),
            "p95": self.percentile(95),
            "p99": self.percentile(99),
            "max": self.max,
        }
