"""The shell the memory manager and the CPU monitor share: a probe read at most once per
``check_interval``, lazily by whoever asks for the level or by a scheduler, never twice at once.

Each monitor brings its probe, its pure policy (``_policy.level``) and its own :meth:`sample`
(what it reads and derives); this class decides *when* a sample is taken and what a failing
probe does to the level (nothing: it stays, and the next try waits a whole interval).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, ClassVar, Generic, TypeVar

from ._clock import Clock
from ._errors import ConfigError
from ._pressure import PressureLevel

S = TypeVar("S")  # a sample
P = TypeVar("P", bound=Callable[[], Any])  # a probe

ON_TIME = 0.9
"""A sample asked for up to a tenth of ``check_interval`` early counts as on time, so a
scheduler whose periods jitter never skips a whole period."""


class SampledMonitor(Generic[S, P]):
    """The timing of a monitor's samples; a subclass sets, in its constructor, the attributes
    annotated below, and defines :meth:`sample` and :meth:`_probe_failed`."""

    _reading: ClassVar[str]  # the type the probe returns, named in errors
    clock: Clock
    check_interval: float
    _now: Callable[[], float]
    _policy: Any  # has .level
    _probe: P
    _sampling: threading.Lock  # one lazy or scheduled sample at a time
    _last: S | None
    _last_attempt: float | None
    _due_at: float  # monotonic time from which maybe_sample() samples

    def sample(self) -> S:
        raise NotImplementedError

    def _probe_failed(self, exc: Exception) -> None:
        raise NotImplementedError

    def _begin_sample(self) -> float:
        """What every sample does first: note the attempt and when the next one is due."""
        now = self._now()
        self._last_attempt = now
        self._due_at = now + self.check_interval * ON_TIME
        return now

    @property
    def next_sample_at(self) -> float:
        """The monotonic time the next sample is due (now, before the first)."""
        last = self._last_attempt
        return self._now() if last is None else last + self.check_interval

    def maybe_sample(self) -> S | None:
        """Sample if ``check_interval`` has passed since the last sample; else ``None``.

        Between samples this costs a clock read and a comparison; a call up to a tenth of
        ``check_interval`` early counts as on time. Never raises for a failing probe: the
        monitor reports the error (:meth:`_probe_failed`), the level stays where it was, and
        the next try waits another ``check_interval``.
        """
        if self._now() < self._due_at:
            return None
        if not self._sampling.acquire(blocking=False):
            return None  # another thread is sampling right now
        try:
            if self._now() < self._due_at:
                return None
            try:
                return self.sample()
            except Exception as exc:
                self._probe_failed(exc)
                return None
        finally:
            self._sampling.release()

    @property
    def level(self) -> PressureLevel:
        """The current level (sampled first when a sample is due)."""
        if self._now() >= self._due_at:
            self.maybe_sample()
        level: PressureLevel = self._policy.level
        return level

    @property
    def last_sample(self) -> S | None:
        return self._last

    @property
    def probe(self) -> P:
        """What readings come from; assign another callable to play a scenario."""
        return self._probe

    @probe.setter
    def probe(self, probe: P) -> None:
        if not callable(probe):
            raise ConfigError(
                "probe", f"must be a callable returning a {self._reading}, got {probe!r}"
            )
        self._probe = probe
