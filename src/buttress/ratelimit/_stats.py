"""A limiter's numbers for the health report: counts, and decisions made within budget.

Every decision a limiter returns is made, counted and announced by one step,
:meth:`Recorder.conclude`, whichever path decided it. The hot path only bumps
:func:`itertools.count` counters (one C call each, atomic under the GIL, no lock). Windowed
figures come from *marks*: at most once per tenth of ``window`` the limiter records the running
totals with their time (:meth:`Counters.mark`), and a figure "over the last window" is the
running total now minus the one at the oldest mark still inside the window (so the window is
exact to a tenth of its length).
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from .. import events
from .._counting import count_of
from .._fork import fork_safe_lock
from .._histogram import Histogram
from ._decision import Decision, Details

__all__ = [
    "EV_ALLOWED",
    "EV_DENIED",
    "Counters",
    "LatencySummary",
    "RateLimiterSnapshot",
    "Recorder",
    "ScopeSnapshot",
    "count_of",
]

EV_ALLOWED = ("buttress", "rate_limiter", "allowed")
EV_DENIED = ("buttress", "rate_limiter", "denied")
_enabled = events.enabled
_attached = events.attached  # empty when no handler listens: one cheap test first
_new = object.__new__

MARKS_PER_WINDOW = 10


class Counters:
    """Admitted, denied (per refusing scope) and slow decisions, plus the marks, and the
    histogram of the measured decisions' latencies.

    The histogram costs the measured decisions one ``deque.append`` (atomic, no lock): the
    latencies are folded in under the lock when read, or once 256 are queued.
    """

    __slots__ = (
        "_append",
        "_latencies",
        "_lock",
        "_marks",
        "_pending",
        "admitted",
        "budget",
        "denied",
        "sample_weight",
        "sampled",
        "slow",
        "window",
    )

    _BATCH = 256

    def __init__(self, scopes: int, *, window: float, budget: float) -> None:
        self.admitted = itertools.count()
        self.denied = tuple(itertools.count() for _ in range(scopes))
        self.sampled = itertools.count()  # decisions whose latency was measured
        self.slow = itertools.count()  # ... and found over budget
        self.window = window
        self.budget = budget
        self._lock = fork_safe_lock()
        self._marks: deque[tuple[float, int, int, int]] = deque()
        self._latencies = Histogram()
        self._pending: deque[float] = deque()
        self._append = self._pending.append
        self.sample_weight = 1  # decisions each measured one stands for (Recorder sets it)

    def measure(self, latency: float) -> None:
        """One decision's latency was measured (a sample of the decisions)."""
        next(self.sampled)
        if latency > self.budget:
            next(self.slow)
        self._append(latency)
        if len(self._pending) > self._BATCH:
            with self._lock:
                self._fold()

    def _fold(self) -> None:
        """Fold the queued latencies into the histogram (lock held); pops what was there."""
        pending = self._pending
        pop = pending.popleft
        record = self._latencies.record
        weight = self.sample_weight
        for _ in range(len(pending)):
            record(pop(), weight)

    def latency(self) -> Histogram:
        """A copy of the decision-latency histogram (each measured decision weighted by the
        decisions it stands for)."""
        copy = Histogram()
        with self._lock:
            self._fold()
            copy.merge(self._latencies)
        return copy

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


class Recorder:
    """Makes each decision a limiter returns, and keeps the books on it.

    :meth:`conclude` builds the lazy :class:`~._decision.Decision`, counts it (admitted, or
    denied by the refusing scope), measures the latency of one decision in ``measure_every``
    against the budget, emits its event, and first records the totals when a mark is due.
    """

    __slots__ = (
        "_admitted",
        "_denied",
        "_limiter",
        "_monotonic",
        "_namespace",
        "_one_scope",
        "_unmeasured_bits",
        "next_mark",
        "stats",
    )

    def __init__(
        self,
        stats: Counters,
        monotonic: Callable[[], float],
        *,
        limiter: str,
        namespace: str,
        measure_every: int,
    ) -> None:
        self.stats = stats
        self._admitted = stats.admitted
        self._denied = stats.denied
        self._one_scope = len(stats.denied) == 1
        self._monotonic = monotonic
        self._limiter = limiter
        self._namespace = namespace
        # A count is measured when these bits of it are all 0: one in measure_every (a power
        # of 2), counted apart for admissions and for each scope's refusals.
        self._unmeasured_bits = measure_every - 1
        stats.sample_weight = measure_every
        self.next_mark = monotonic()  # when the statistics next record their totals

    def conclude(self, allowed: bool, details: Details, started: float, cost: float) -> Decision:
        """The decision on ``details``; ``started`` is when deciding began (monotonic clock)."""
        if started >= self.next_mark:
            # Before counting: a mark holds the totals from before its time.
            self.next_mark = self.stats.mark(started)
        # lazy_decision's steps, without its call: every decision comes this way.
        decision: Decision = _new(Decision)
        decision._details = details
        decision._resolved = None
        if not allowed:
            return self.refused(decision, started, cost)
        decision.allowed = True
        if not next(self._admitted) & self._unmeasured_bits:
            self.stats.measure(self._monotonic() - started)
        if _attached and _enabled(EV_ALLOWED):
            self.emit(EV_ALLOWED, decision, cost)
        return decision

    def refused(self, decision: Decision, started: float, cost: float) -> Decision:
        """Count and announce a refusal (``decision`` has its details; the compiled fast path
        builds it and calls this)."""
        decision.allowed = False
        if not next(self._denied[0 if self._one_scope else decision.index]) & self._unmeasured_bits:
            self.stats.measure(self._monotonic() - started)
        if _attached and _enabled(EV_DENIED):
            self.emit(EV_DENIED, decision, cost)
        return decision

    def emit(self, name: tuple[str, ...], d: Decision, cost: float) -> None:
        events.emit(
            name,
            {"cost": cost, "remaining": d.remaining, "retry_after": d.retry_after},
            {
                "limiter": self._limiter,
                "namespace": self._namespace,
                "scope": d.scope,
                "key": d.key,
            },
        )


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
class LatencySummary:
    """How long the limiter took to decide, since it was made (seconds). ``count`` is every
    decision; one in 16 is timed in memory (every one on SQLite and Redis), so the mean and
    percentiles are those of the timed decisions (percentiles within 1/128), ``max`` the
    slowest timed one."""

    count: int
    mean: float
    p50: float
    p95: float
    p99: float
    max: float


@dataclass(frozen=True, slots=True)
class RateLimiterSnapshot:
    """A limiter at one instant: what it is, how much it admitted and refused, how fast.

    ``algorithm`` is the scopes' algorithm, or ``"mixed"``. ``denied`` counts refusals (each
    charged, in ``scopes``, to the scope that refused). ``performance_rating`` is the share of
    the decisions in the last ``stats_window`` seconds made within ``latency_budget``.
    ``keys`` is ``None`` when not counted (a shared server, or a backend that is down).
    ``backend_status`` is ``"ok"`` or ``"down"`` (its last call failed), ``failure_policy``
    what decisions do meanwhile, ``backend_errors`` how many backend calls have failed,
    ``backend`` the backend's class (``"RedisBackend"``), ``backend_down_for`` how long the
    outage under way has lasted (seconds; ``None`` while the backend is up) and
    ``backend_error`` what the last failed call said while it is down (passwords masked).
    ``unreadable_states`` counts stored states the backend could not read (each decided as
    spent; never an outage). ``mode`` says who decides now: ``"backend"``, or while it is down
    the failure policy (``"local"``: this process's memory, at ``local_share`` of each limit;
    ``"fail_open"``, ``"fail_closed"``: nobody, every request admitted or refused).
    ``decision_latency`` is the histogram of decision times (:class:`LatencySummary`).
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
    decision_latency: LatencySummary | None = None
    backend_status: str = "ok"
    failure_policy: str = "fail_open"
    backend_errors: int = 0
    backend: str = ""
    backend_down_for: float | None = None
    backend_error: str | None = None
    unreadable_states: int = 0
    mode: str = "backend"
    local_share: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
