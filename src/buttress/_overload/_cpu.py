"""``CpuMonitor``: the shell that samples a CPU probe on a clock and keeps the level.

It owns no thread. The infrastructure's scheduler calls :meth:`CpuMonitor.maybe_sample` (cheap
when nothing is due) or :meth:`~CpuMonitor.sample`; without a scheduler, reading
:attr:`~CpuMonitor.level` or :meth:`~CpuMonitor.snapshot` samples lazily once
``check_interval`` has passed on the clock. Listeners hear of every change of level.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._clock import Clock, SystemClock
from .._errors import ConfigError
from .._fork import fork_safe_lock
from .._pressure import LevelChange, PressureLevel
from .._redact import redacted_logger
from .._sampled import SampledMonitor
from ._cpu_policy import CpuConfig, CpuPolicy, CpuSignals, cpu_signals
from ._cpu_probe import CpuProbe, CpuReading
from ._listeners import add_listener, notify
from ._report import plain

__all__ = ["CpuListener", "CpuMonitor", "CpuSample", "CpuSnapshot"]

_log = redacted_logger("buttress.overload")

CpuProbeFn = Callable[[], CpuReading]
CpuListener = Callable[[LevelChange, "CpuSnapshot"], object]


@dataclass(frozen=True, slots=True)
class CpuSample:
    """One reading, the signals it gave against the previous one, and the level they led to.

    ``at`` is the clock's monotonic time, ``time`` its wall time.
    """

    level: PressureLevel
    signals: CpuSignals
    reading: CpuReading
    at: float
    time: float

    def to_dict(self) -> dict[str, Any]:
        return plain(self)


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    """What the health report shows: the level and the last sample's signals and limits.

    The signals are ``None`` before they can be known: the rates need two samples, and a
    platform may not report a value at all (no cgroup v2, no PSI). ``utilisation`` is of the
    cgroup's CPU, or of the process's where no cgroup is readable (``utilisation_source``);
    ``effective_cores`` is what it is measured against. ``throttled_seconds`` is the time the
    cgroup spent throttled between the last two samples. ``cgroup`` is the process's cgroup
    directory and ``quota_cgroup`` the one whose ``cpu.max`` binds.
    """

    name: str
    level: PressureLevel
    reason: str
    level_age: float
    throttle_ratio: float | None
    utilisation: float | None
    utilisation_source: str | None
    process_utilisation: float | None
    psi_some_avg10: float | None
    throttled_seconds: float | None
    effective_cores: float | None
    quota_cores: float | None
    cpuset_cpus: int | None
    cgroup: str | None
    quota_cgroup: str | None
    check_interval: float
    samples: int
    sample_age: float | None
    probe_errors: int

    def to_dict(self) -> dict[str, Any]:
        return plain(self)


class CpuMonitor(SampledMonitor[CpuSample, CpuProbeFn]):
    """Watches the CPU the process really has (its cgroup's quota and cpuset) and how much of
    it is used, throttled and waited for, as a level: ``normal``, ``warning``, ``critical``.

    >>> cpu = CpuMonitor()                        # doctest: +SKIP
    >>> cpu.sample().signals.throttle_ratio       # doctest: +SKIP

    ``root`` configures the default :class:`CpuProbe`; ``probe`` replaces it with any callable
    returning a :class:`CpuReading` (tests and scenarios). The other settings are
    :class:`CpuConfig`'s, which states their defaults and why.
    """

    _reading = "CpuReading"

    def __init__(
        self,
        *,
        check_interval: float = 1.0,
        throttle_warning: float | None = 0.10,
        throttle_critical: float | None = 0.50,
        utilisation_warning: float | None = 0.80,
        utilisation_critical: float | None = 0.95,
        psi_warning: float | None = 20.0,
        psi_critical: float | None = 50.0,
        exit_margin: float = 0.10,
        exit_samples: int = 3,
        probe: CpuProbeFn | None = None,
        root: str | os.PathLike[str] = "/",
        clock: Clock | None = None,
        name: str = "cpu",
    ) -> None:
        self.config = CpuConfig(
            check_interval=check_interval,
            throttle_warning=throttle_warning,
            throttle_critical=throttle_critical,
            utilisation_warning=utilisation_warning,
            utilisation_critical=utilisation_critical,
            psi_warning=psi_warning,
            psi_critical=psi_critical,
            exit_margin=exit_margin,
            exit_samples=exit_samples,
        )
        if probe is not None:
            if not callable(probe):
                raise ConfigError(
                    "probe", f"must be a callable returning a CpuReading, got {probe!r}"
                )
            if str(root) != "/":
                raise ConfigError("probe", "replaces the system probe: give it, or root")
        self._probe = probe if probe is not None else CpuProbe(root)
        self.name = name
        self.check_interval = self.config.check_interval
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._now = self.clock.monotonic
        self._policy = CpuPolicy(self.config, self._now())
        self._lock = fork_safe_lock()
        self._sampling = fork_safe_lock()  # one lazy/scheduled sample at a time
        self._listeners: list[CpuListener] = []
        self._previous: tuple[float, CpuReading] | None = None
        self._last: CpuSample | None = None
        self._last_attempt: float | None = None
        self._due_at = -math.inf  # monotonic time from which maybe_sample() samples
        self._samples = 0
        self._probe_errors = 0

    # -- what a scheduler calls (maybe_sample, next_sample_at: SampledMonitor) ---------------

    def _probe_failed(self, exc: Exception) -> None:
        """A failing probe is logged and counted (``probe_errors``)."""
        with self._lock:
            self._probe_errors += 1
        _log.warning("cpu probe %r failed", self._probe, exc_info=exc)

    def sample(self) -> CpuSample:
        """Read the probe now, derive the signals since the last reading, update the level."""
        now = self._begin_sample()
        reading = self._probe()
        if not isinstance(reading, CpuReading):
            raise TypeError(f"cpu probe returned {reading!r}, not a CpuReading")
        with self._lock:
            previous = self._previous
            elapsed = now - previous[0] if previous is not None else 0.0
            signals = cpu_signals(previous[1] if previous is not None else None, reading, elapsed)
            change = self._policy.observe(signals, now)
            sample = CpuSample(self._policy.level, signals, reading, now, self.clock.time())
            self._previous = (now, reading)
            self._last = sample
            self._samples += 1
            listeners = list(self._listeners) if change is not None else []
        if change is not None:
            self._changed(change, sample, listeners)
        return sample

    # -- reading -----------------------------------------------------------------------------

    # -- reading (level, last_sample, probe: SampledMonitor) ---------------------------------

    def snapshot(self) -> CpuSnapshot:
        """The level and last figures as the health report shows them."""
        if self._now() >= self._due_at:
            self.maybe_sample()
        with self._lock:
            return self._snapshot(self._now())

    def _snapshot(self, now: float) -> CpuSnapshot:
        s = self._last
        signals = s.signals if s is not None else CpuSignals()
        reading = s.reading if s is not None else CpuReading()
        cgroup = getattr(self._probe, "cgroup_path", None)
        return CpuSnapshot(
            name=self.name,
            level=self._policy.level,
            reason=self._policy.reason,
            level_age=now - self._policy.since,
            throttle_ratio=signals.throttle_ratio,
            utilisation=signals.utilisation,
            utilisation_source=signals.utilisation_source,
            process_utilisation=signals.process_utilisation,
            psi_some_avg10=signals.psi_some_avg10,
            throttled_seconds=signals.throttled_seconds,
            effective_cores=signals.effective_cores,
            quota_cores=reading.quota_cores,
            cpuset_cpus=reading.cpuset_cpus,
            cgroup=str(cgroup) if isinstance(cgroup, Path) else None,
            quota_cgroup=str(reading.quota_path) if reading.quota_path is not None else None,
            check_interval=self.check_interval,
            samples=self._samples,
            sample_age=now - s.at if s is not None else None,
            probe_errors=self._probe_errors,
        )

    # -- listeners -----------------------------------------------------------------------------

    def on_change(self, listener: CpuListener) -> Callable[[], None]:
        """Call ``listener(change, snapshot)`` after each change of level.

        Listeners run in the thread that samples, in the order they were added; one that raises
        is logged and the others still run. Returns a function that removes the listener.
        """
        return add_listener(self._listeners, self._lock, listener)

    def _changed(
        self, change: LevelChange, sample: CpuSample, listeners: list[CpuListener]
    ) -> None:
        s = sample.signals
        log = _log.warning if change.level.rank > change.previous.rank else _log.info
        log(
            "cpu %s: %s -> %s (%s; throttled %s, utilisation %s, psi some %s)",
            self.name,
            change.previous.value,
            change.level.value,
            change.reason,
            _figure(s.throttle_ratio),
            _figure(s.utilisation),
            _figure(s.psi_some_avg10),
        )
        if not listeners:
            return
        with self._lock:
            snapshot = self._snapshot(sample.at)
        notify(listeners, change, snapshot, _log, f"cpu {self.name}")

    def __repr__(self) -> str:
        return (
            f"CpuMonitor(name={self.name!r}, level={self._policy.level.value}, "
            f"check_interval={self.check_interval}, probe={self._probe!r})"
        )


def _figure(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.3g}"
