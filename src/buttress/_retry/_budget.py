"""RetryBudget: retries add at most ``ratio`` x requests in the window, plus a floor (Finagle's
retry budget). The one place that decides whether a retry may happen at all, shared by every
caller of a dependency, so a failing dependency sees a bounded multiple of its normal load."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._validate import at_least, positive

if TYPE_CHECKING:
    from .._clock import Clock


@dataclass(frozen=True, slots=True)
class RetryBudgetSnapshot:
    """A budget's figures over its window: ``requests`` (first attempts), ``retries`` made,
    ``available`` (retries it would allow now) and ``refused`` (retries refused, ever)."""

    requests: int
    retries: int
    available: int
    refused: int


class RetryBudget:
    """At most ``ratio`` x the requests of the last ``window`` seconds, plus
    ``min_per_second`` x ``window``, may be retried; thread- and task-safe.

    Each retried call deposits once (its first attempt); each retry withdraws one, or is
    refused and the call raises its last error at once. Share one budget between every caller
    of a dependency (a service's budget is shared by its calls).
    """

    __slots__ = (
        "_clock",
        "_floor",
        "_lock",
        "_ratio",
        "_requests",
        "_retries",
        "_window",
        "refused",
    )

    def __init__(
        self,
        *,
        ratio: float = 0.2,
        min_per_second: float = 10,
        window: float = 10.0,
        clock: Clock | None = None,
    ) -> None:
        ratio = at_least("ratio", ratio, 0)
        min_per_second = at_least("min_per_second", min_per_second, 0)
        window = positive("window", window)
        if clock is None:
            from .._clock import SystemClock

            clock = SystemClock()
        self._ratio = float(ratio)
        self._floor = float(min_per_second) * float(window)
        self._window = float(window)
        self._clock = clock
        self._lock = threading.Lock()
        # Times of the window's requests and retries: exact, and O(1) amortised per call.
        self._requests: deque[float] = deque()
        self._retries: deque[float] = deque()
        self.refused = 0

    @property
    def ratio(self) -> float:
        return self._ratio

    @property
    def window(self) -> float:
        return self._window

    @property
    def min_per_second(self) -> float:
        return self._floor / self._window

    def __repr__(self) -> str:
        return (
            f"RetryBudget(ratio={self._ratio!r}, min_per_second={self.min_per_second!r}, "
            f"window={self._window!r})"
        )

    def _expire(self, now: float) -> None:
        edge = now - self._window
        for q in (self._requests, self._retries):
            while q and q[0] <= edge:
                q.popleft()

    def record_request(self) -> None:
        """A retried call's first attempt: it adds ``ratio`` of a retry to the budget."""
        with self._lock:
            now = self._clock.monotonic()
            self._expire(now)
            self._requests.append(now)

    def try_retry(self) -> bool:
        """Take one retry from the budget: ``True`` if it may happen, ``False`` (counted in
        ``refused``) if retries in the window would exceed ``ratio`` x requests + floor."""
        with self._lock:
            now = self._clock.monotonic()
            self._expire(now)
            if len(self._retries) + 1 <= self._ratio * len(self._requests) + self._floor:
                self._retries.append(now)
                return True
            self.refused += 1
            return False

    def snapshot(self) -> RetryBudgetSnapshot:
        with self._lock:
            self._expire(self._clock.monotonic())
            requests, retries = len(self._requests), len(self._retries)
            allowed = int(self._ratio * requests + self._floor) - retries
            return RetryBudgetSnapshot(requests, retries, max(0, allowed), self.refused)
