"""RetryBudget: retries add at most ``ratio`` x requests in the window plus a floor (Finagle)."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from buttress._errors import ConfigError


class RetryBudget:
    """Shared by every caller; thread- and task-safe (a lock guards short, non-blocking updates).

    Each first attempt deposits (``record_request``); each retry withdraws (``try_retry``),
    allowed while retries in the last ``window`` seconds stay within ``ratio`` x requests in it
    + ``min_per_second`` x ``window``.
    """

    def __init__(
        self,
        *,
        ratio: float = 0.2,
        min_per_second: float = 10,
        window: float = 10.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        for name, value in (
            ("ratio", ratio),
            ("min_per_second", min_per_second),
            ("window", window),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ConfigError(name, f"must be a number >= 0, got {value!r}")
        if window <= 0:
            raise ConfigError("window", f"must be > 0, got {window!r}")
        if clock is None:
            import time

            clock = time.monotonic
        self._ratio = float(ratio)
        self._floor = float(min_per_second) * float(window)
        self._window = float(window)
        self._clock = clock
        self._lock = threading.Lock()
        self._requests: deque[float] = deque()
        self._retries: deque[float] = deque()
        self.refused = 0

    def _expire(self, now: float) -> None:
        edge = now - self._window
        for q in (self._requests, self._retries):
            while q and q[0] <= edge:
                q.popleft()

    def record_request(self) -> None:
        with self._lock:
            now = self._clock()
            self._expire(now)
            self._requests.append(now)

    def try_retry(self) -> bool:
        with self._lock:
            now = self._clock()
            self._expire(now)
            if len(self._retries) + 1 <= self._ratio * len(self._requests) + self._floor:
                self._retries.append(now)
                return True
            self.refused += 1
            return False
