"""A limiter's numbers for the health report: counts, and decisions made within budget.

The hot path only bumps :func:`itertools.count` counters (one C call each, atomic under the
GIL, no lock). Windowed figures come from *marks*: at most once per tenth of ``window`` the
limiter records the running totals with their time (:meth:`Counters.mark`), and a figure
"over the last window" is the running total now minus the one at the oldest mark still inside
the window (so the window is exact to a tenth of its length).
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from .._counting import count_of

__all__ = ["Counters", "RateLimiterSnapshot", "ScopeSnapshot", "count_of"]

MARKS_PER_WINDOW = 10


class Counters:
    """Admitted, denied (per refusing scope) and slow decisions, plus the marks."""

    __slots__ = ("_lock", "_marks", "admitted", "budget", "denied", "sampled", "slow", "window")

    def __init__(self, scopes: int, *, window: float, budget: float) -> None:
        self.admitted = itertools.count()
        self.denied = tuple(itertools.count() for _ in range(scopes))
        self.sampled = itertools.count()  # decisions whose latency was measured
        self.slow = itertools.count()  # ... and found over budget
        self.window = window
        self.budget = budget
        self._lock = threading.Lock()
        self._marks: deque[tuple[float, int, int, int]] = deque()

    def measure(self, latency: float) -> None:
        """One decision's latency was measured (a sample of the decisions)."""
        next(self.sampled)
        if latency > self.budget:
            next(self.slow)

    def totals(self) -> tuple[int, int, int, int]:
        """``(decisions, sampled, slow, admitted)`` so far."""
        admitted = count_of(self.admitted)
        decisions = admitted + sum(count_of(c) for c in self.denied)
        return decisions, count_of(self.sampled), count_of(self.slow), admitted

    def mark(self, now: float) -> float:
        """Record the running totals at ``now``; returns when the next mark is due."""
        step = self.window / MARKS_PER_WINDOW
        with self._lock:
            marks = self._marks
            if marks and now < marks[-1][0] + step:
                return marks[-1][0] + step  # another thread marked first
            decisions, sampled, slow, _ = self.totals()
            marks.append((now, decisions, sampled, slow))
            horizon = now - self.window - 2 * step
            while marks and marks[0][0] < horizon:
                marks.popleft()
            return now + step

    def in_window(self, now: float) -> tuple[int, float]:
        """``(decisions, rating)`` over about the last ``window`` seconds.

        The rating is the share of measured decisions that were within budget (1.0 when none
        was measured).
        """
        decisions, sampled, slow, _ = self.totals()
        start = now - self.window - self.window / MARKS_PER_WINDOW
        with self._lock:
            for t, d0, m0, s0 in self._marks:
                if t >= start:
                    measured = sampled - m0
                    rating = 1.0 if measured <= 0 else max(0.0, 1.0 - (slow - s0) / measured)
                    return decisions - d0, rating
        return 0, 1.0


@dataclass(frozen=True, slots=True)
class ScopeSnapshot:
    """One scope as the health report shows it; ``limit`` is the current one when adaptive."""

    name: str
    algorithm: str
    limit: float
    window: float
    by: str | None
    denied: int
    min_limit: float | None
    max_limit: float | None


@dataclass(frozen=True, slots=True)
class RateLimiterSnapshot:
    """A limiter at one instant: what it is, how much it admitted and refused, how fast.

    ``algorithm`` is the scopes' algorithm, or ``"mixed"``. ``denied`` counts refusals (each
    charged, in ``scopes``, to the scope that refused). ``performance_rating`` is the share of
    the decisions in the last ``stats_window`` seconds made within ``latency_budget``.
    ``keys`` is ``None`` when not counted (a shared server, or a backend that is down).
    ``backend_status`` is ``"ok"`` or ``"down"`` (its last call failed), ``failure_policy``
    what decisions do meanwhile, ``backend_errors`` how many backend calls have failed.
    """

    name: str
    namespace: str
    algorithm: str
    admitted: int
    denied: int
    performance_rating: float
    decisions_in_window: int
    latency_budget: float
    keys: int | None
    waiting: int
    scopes: tuple[ScopeSnapshot, ...]
    backend_status: str = "ok"
    failure_policy: str = "fail_open"
    backend_errors: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
