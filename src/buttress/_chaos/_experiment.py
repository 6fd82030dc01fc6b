"""``Experiment``: fault settings laid over one injector for a bounded time."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, TypedDict

from .._errors import ConfigError
from .._validate import in_interval, positive

if TYPE_CHECKING:
    from ._faults import FaultInjector, FaultSettings, SettingsSnapshot

__all__ = ["Experiment", "ExperimentSnapshot"]


class ExperimentSnapshot(TypedDict):
    """An experiment as the health report lists it."""

    name: str
    target: str
    settings: SettingsSnapshot
    started: float | None
    duration: float | None
    remaining: float | None
    running: bool
    calls: int
    injected_failures: int
    injected_delays: int


_numbers = itertools.count(1)
_starts = itertools.count(1)  # orders experiments started at the same clock time


class Experiment:
    """A chaos experiment on one target; a context manager for ``with`` and ``async with``.

    Made by :meth:`Chaos.experiment <buttress.Chaos.experiment>` or
    :meth:`FaultInjector.experiment <buttress.FaultInjector.experiment>`. While it runs, the
    target's calls get its settings instead of the standing ones; it is listed among the
    active experiments. It ends on exit from the block (or :meth:`stop`) or once ``duration``
    seconds have passed on the injector's clock, whichever is first. Entering it twice is an
    error: make a new one.
    """

    def __init__(
        self,
        injector: FaultInjector,
        settings: FaultSettings,
        *,
        duration: float | None = None,
        name: str | None = None,
    ) -> None:
        if name is not None and (not isinstance(name, str) or not name):
            raise ConfigError("name", f"must be a non-empty string, got {name!r}")
        self.injector = injector
        self.settings = settings
        self.duration = positive("duration", duration) if duration is not None else None
        self.name = name if name is not None else f"{injector.name}#{next(_numbers)}"
        self.started_at: float | None = None  # monotonic
        self.start_seq = 0
        self.started: float | None = None  # wall clock
        self.ends_at: float | None = None
        self.ended_at: float | None = None
        self.end_reason: str | None = None
        self.calls = 0
        self.injected_failures = 0
        self.injected_delays = 0
        self.announced = False  # its start was reported (a delayed one: once it began)

    @property
    def target(self) -> str:
        return self.injector.name

    @property
    def running(self) -> bool:
        """Started, not ended and not past its end (expiry is judged from the clock)."""
        if self.started_at is None or self.ended_at is not None:
            return False
        now = self.injector.clock.monotonic()
        return now >= self.started_at and (self.ends_at is None or now < self.ends_at)

    @property
    def pending(self) -> bool:
        """Started with a delay (by a schedule) that has not passed yet."""
        return (
            self.started_at is not None
            and self.ended_at is None
            and self.injector.clock.monotonic() < self.started_at
        )

    @property
    def remaining(self) -> float | None:
        """Seconds left (``None`` for an open-ended experiment that is running)."""
        if self.pending or self.started_at is None:
            return self.duration
        if not self.running:
            return 0.0
        if self.ends_at is None:
            return None
        return max(0.0, self.ends_at - self.injector.clock.monotonic())

    @property
    def elapsed(self) -> float:
        if self.started_at is None:
            return 0.0
        end = self.ended_at if self.ended_at is not None else self.injector.clock.monotonic()
        return max(0.0, end - self.started_at)

    def start(self, *, delay: float = 0.0) -> Experiment:
        """Start it now, or ``delay`` seconds from now (on the injector's clock: a schedule's
        experiments are all started at once, each with its delay)."""
        if self.started_at is not None:
            raise RuntimeError(f"experiment {self.name!r} was already started; make a new one")
        delay = in_interval("delay", delay, "[0, inf)")
        clock = self.injector.clock
        self.started_at = clock.monotonic() + delay
        self.start_seq = next(_starts)
        self.started = clock.time() + delay
        if self.duration is not None:
            self.ends_at = self.started_at + self.duration
        try:
            self.injector._begin(self)
        except BaseException:
            self.started_at = self.started = self.ends_at = None
            raise
        return self

    def stop(self) -> None:
        """End the experiment now (nothing happens if it has already ended)."""
        if self.started_at is not None:
            self.injector._end(self, self.injector.clock.monotonic())

    def _finish(self, now: float) -> str:
        """Mark the end (called by the injector under its lock); returns why it ended."""
        if self.started_at is not None and now < self.started_at:
            self.ended_at, self.end_reason = now, "cancelled"  # stopped before it began
            self.started_at = now
        elif self.ends_at is not None and now >= self.ends_at:
            self.ended_at, self.end_reason = self.ends_at, "expired"
        else:
            self.ended_at, self.end_reason = now, "exited"
        return self.end_reason

    def _count(self, fail: bool, delayed: bool) -> None:
        self.calls += 1
        self.injected_failures += fail
        self.injected_delays += delayed

    def __enter__(self) -> Experiment:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> Experiment:
        return self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        self.stop()

    def to_dict(self) -> ExperimentSnapshot:
        """What the health report lists for an experiment."""
        return {
            "name": self.name,
            "target": self.target,
            "settings": self.settings.to_dict(),
            "started": self.started,
            "duration": self.duration,
            "remaining": self.remaining,
            "running": self.running,
            "calls": self.calls,
            "injected_failures": self.injected_failures,
            "injected_delays": self.injected_delays,
        }

    def __repr__(self) -> str:
        if self.pending:
            state = "pending"
        else:
            state = "running" if self.running else (self.end_reason or "not started")
        return f"<Experiment {self.name!r} on {self.target!r} {state}>"
