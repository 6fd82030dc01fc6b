"""Time, injected.

Every component takes ``clock=``. Production code uses :class:`SystemClock`; tests use
:class:`ManualClock`, which moves only when told to, so no test waits for a state change.
"""

from __future__ import annotations

import asyncio
import threading
import time as _time
from typing import Protocol, runtime_checkable

from ._validate import is_finite

__all__ = ["Clock", "ManualClock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """What buttress needs from a clock.

    ``monotonic()`` drives every timer and window (seconds, arbitrary origin); ``time()`` is
    wall-clock time for reports. ``sleep``/``asleep`` are how waiting shells wait, so a manual
    clock can make waits instant.
    """

    def monotonic(self) -> float: ...

    def time(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...

    async def asleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock: :func:`time.monotonic`, :func:`time.time` and real sleeps."""

    __slots__ = ()

    # Bound straight to the C functions: the breaker's hot path reads the clock once per call.
    monotonic = staticmethod(_time.monotonic)
    time = staticmethod(_time.time)
    sleep = staticmethod(_time.sleep)

    async def asleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"


class ManualClock:
    """A clock that moves only when told to.

    ``sleep`` and ``asleep`` advance the clock by the requested time instead of waiting
    (the way trio's ``MockClock(autojump_threshold=0)`` makes timeouts instant), so code
    that waits for room or for a timeout runs instantly and deterministically.

    >>> clock = ManualClock()
    >>> clock.advance(1.5)
    >>> clock.monotonic()
    1.5
    """

    __slots__ = ("_lock", "_now", "_wall_origin")

    def __init__(self, start: float = 0.0, *, wall: float = 1_767_225_600.0) -> None:
        # ``wall`` defaults to 2026-01-01T00:00:00Z so reports made under test are stable.
        self._now = float(start)
        self._wall_origin = float(wall) - float(start)
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._wall_origin + self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (which must not be negative)."""
        if not is_finite(seconds) or seconds < 0:
            raise ValueError(
                f"ManualClock.advance: seconds must be a finite number >= 0, got {seconds!r}"
            )
        with self._lock:
            self._now += seconds

    def set(self, now: float) -> None:
        """Jump to the monotonic time ``now`` (never backwards)."""
        if not is_finite(now):
            raise ValueError(f"ManualClock.set: now must be a finite number, got {now!r}")
        with self._lock:
            if now < self._now:
                raise ValueError(f"ManualClock.set: time cannot go back from {self._now} to {now}")
            self._now = float(now)

    def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))

    async def asleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)  # still yield, as a real sleep would

    def __repr__(self) -> str:
        return f"ManualClock(now={self._now!r})"
