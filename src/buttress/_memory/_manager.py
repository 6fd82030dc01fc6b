"""``MemoryManager``: the shell that samples a probe, feeds the policy and runs relief.

It owns no thread. The infrastructure's scheduler calls :meth:`MemoryManager.maybe_sample`
(cheap when nothing is due) or :meth:`~MemoryManager.sample`; without a scheduler, reading
:attr:`~MemoryManager.level`, :meth:`~MemoryManager.should_shed` or
:meth:`~MemoryManager.snapshot` samples lazily once ``check_interval`` has passed on the clock.
"""

from __future__ import annotations

import gc
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from types import MappingProxyType
from typing import Any

from .. import events
from .._clock import Clock, SystemClock
from .._concurrency import is_async_callable
from .._deprecated import warn_renamed
from .._errors import ConfigError, LoadShedError
from .._fork import fork_safe_lock
from .._redact import redacted_logger
from .._sampled import SampledMonitor
from .._validate import positive
from ._policy import LevelChange, MemoryLevel, PolicyConfig, PressurePolicy
from ._probe import MemoryReading, Psi, Source, SystemProbe

__all__ = ["MemoryManager", "MemorySample", "MemorySnapshot", "Probe", "ReliefCallback"]

_log = redacted_logger("buttress.memory")

EV_SAMPLE = ("buttress", "memory", "sample")
EV_LEVEL = ("buttress", "memory", "level_change")
EV_RELIEF = ("buttress", "memory", "relief")
EV_GC = ("buttress", "memory", "gc")
EV_LIMIT = ("buttress", "memory", "limit_events")
EV_SHED = ("buttress", "memory", "shed")
EV_PROBE_ERROR = ("buttress", "memory", "probe_error")

# The memory.events counters reported when they grow (cgroup v1 maps failcnt to max).
LIMIT_EVENTS = ("high", "max", "oom", "oom_kill")

Probe = Callable[[], MemoryReading]
ReliefCallback = Callable[["MemorySample"], object]


@dataclass(frozen=True, slots=True)
class MemorySample:
    """One measurement and the level it led to.

    ``ratio`` is ``used / limit``; ``used`` is the working set (cgroup), the host's used
    memory, or process RSS, as ``source`` says. ``psi`` is ``None`` where the kernel has no
    PSI. ``events`` holds the increases of the cgroup's limit counters since the previous
    sample. ``at`` is the clock's monotonic time, ``time`` its wall time.
    """

    level: MemoryLevel
    ratio: float
    source: str
    limit: int
    used: int
    rss: int | None
    psi: Psi | None
    soft_limit: int | None
    events: Mapping[str, int]
    at: float
    time: float

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


@dataclass(frozen=True, slots=True)
class MemorySnapshot:
    """What the health report shows: the level, the last sample's figures, relief counts.

    The figures are ``None`` before the first successful sample; the PSI averages are
    ``None`` where the kernel has no PSI (never 0).
    """

    name: str
    level: MemoryLevel
    reason: str
    level_age: float
    shedding: bool
    ratio: float | None
    source: str | None
    limit: int | None
    used: int | None
    rss: int | None
    psi_some_avg10: float | None
    psi_full_avg10: float | None
    warning_threshold: float
    critical_threshold: float
    check_interval: float
    samples: int
    sample_age: float | None
    relief_runs: int
    gc_runs: int
    shed: int
    limit_events: Mapping[str, int]

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


class MemoryManager(SampledMonitor[MemorySample, Probe]):
    """Watches the memory pressure the process really faces and relieves it.

    >>> mm = MemoryManager(warning_threshold=0.70, critical_threshold=0.85)  # doctest: +SKIP
    >>> sample = mm.sample()                      # doctest: +SKIP
    >>> sample.ratio, sample.source, sample.level # doctest: +SKIP
    (0.41, 'cgroup_v2', <MemoryLevel.NORMAL: 'normal'>)

    ``source``, ``limit_bytes`` and ``root`` configure the default :class:`SystemProbe`;
    ``probe`` replaces it with any callable returning a :class:`MemoryReading` (tests and
    scenarios simulate pressure this way). ``exit_margin`` / ``exit_samples`` are the
    hysteresis, ``psi_warning`` / ``psi_critical`` the PSI stall shares (percent of
    ``some`` / ``full`` avg10) that raise the level, ``gc_interval`` the least time between two
    ``gc.collect()`` runs. With ``pressure_relief_enabled=False`` the manager only measures:
    no callbacks, no collection, no shedding (``pressure_relief`` is its old, deprecated name).
    """

    _reading = "MemoryReading"

    def __init__(
        self,
        *,
        check_interval: float = 30.0,
        warning_threshold: float = 0.70,
        critical_threshold: float = 0.85,
        pressure_relief_enabled: bool = True,
        source: Source | str = "auto",
        limit_bytes: int | None = None,
        probe: Probe | None = None,
        root: str | os.PathLike[str] = "/",
        exit_margin: float = 0.05,
        exit_samples: int = 3,
        psi_warning: float | None = 10.0,
        psi_critical: float | None = 10.0,
        gc_interval: float = 30.0,
        clock: Clock | None = None,
        name: str = "memory",
        pressure_relief: bool | None = None,
    ) -> None:
        if pressure_relief is not None:
            warn_renamed("MemoryManager(pressure_relief=...)")
            pressure_relief_enabled = pressure_relief
        interval = positive("check_interval", check_interval)
        self.config = PolicyConfig(
            warning_threshold=warning_threshold,
            critical_threshold=critical_threshold,
            exit_margin=exit_margin,
            exit_samples=exit_samples,
            psi_warning=psi_warning,
            psi_critical=psi_critical,
            gc_interval=gc_interval,
        )
        if probe is not None:
            if not callable(probe):
                raise ConfigError("probe", f"must be a callable returning a reading, got {probe!r}")
            if source != "auto" or limit_bytes is not None or str(root) != "/":
                raise ConfigError(
                    "probe", "replaces the system probe: give it, or source/limit_bytes/root"
                )
        self._probe: Probe = (
            probe
            if probe is not None
            else SystemProbe(source=source, limit_bytes=limit_bytes, root=root)
        )
        self.name = name
        self.check_interval = interval
        self.pressure_relief_enabled = bool(pressure_relief_enabled)
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._policy = PressurePolicy(self.config, self.clock.monotonic())
        self._lock = fork_safe_lock()
        self._sampling = fork_safe_lock()  # one lazy/scheduled sample at a time
        self._callbacks: dict[MemoryLevel, list[ReliefCallback]] = {lvl: [] for lvl in MemoryLevel}
        self._last: MemorySample | None = None
        self._last_attempt: float | None = None
        self._now = self.clock.monotonic
        self._due_at = -math.inf  # monotonic time from which maybe_sample() samples
        self._counters: Mapping[str, int] | None = None
        self._limit_events = dict.fromkeys(LIMIT_EVENTS, 0)
        self._samples = 0
        self._relief_runs = 0
        self._gc_runs = 0
        self._shed = 0

    # -- what a scheduler calls (maybe_sample, next_sample_at: SampledMonitor) ---------------

    def _probe_failed(self, exc: Exception) -> None:
        """A failing probe is logged and reported as a ``probe_error`` event."""
        _log.warning("memory probe %r failed", self._probe, exc_info=exc)
        events.emit(EV_PROBE_ERROR, {}, {"manager": self.name, "error": repr(exc)})

    def sample(self) -> MemorySample:
        """Read the probe now, update the level and run any relief that is due."""
        now = self._begin_sample()
        reading = self._probe()
        if not isinstance(reading, MemoryReading):
            raise TypeError(f"memory probe returned {reading!r}, not a MemoryReading")
        psi = reading.psi
        with self._lock:
            change = self._policy.observe(
                reading.ratio,
                psi.some_avg10 if psi is not None else None,
                psi.full_avg10 if psi is not None else None,
                now,
            )
            increases = self._count_limit_events(reading.events)
            sample = MemorySample(
                level=self._policy.level,
                ratio=reading.ratio,
                source=reading.source,
                limit=reading.limit,
                used=reading.used,
                rss=reading.rss,
                psi=psi,
                soft_limit=reading.soft_limit,
                events=increases,
                at=now,
                time=self.clock.time(),
            )
            self._last = sample
            self._samples += 1
            run_gc = self.pressure_relief_enabled and self._policy.gc_due(now)
            if run_gc:
                self._policy.gc_ran(now)
        self._report(sample, change)
        if self.pressure_relief_enabled and change is not None:
            for level in change.crossed:
                self._run_callbacks(level, sample)
        if run_gc:
            self._collect(sample)
        return sample

    # -- reading -----------------------------------------------------------------------------

    @property
    def pressure_relief(self) -> bool:
        """Deprecated: :attr:`pressure_relief_enabled`."""
        warn_renamed("MemoryManager.pressure_relief")
        return self.pressure_relief_enabled

    def should_shed(self, critical: bool = False) -> bool:
        """Whether work should be refused for memory: at ``critical``, non-critical work only.

        ``protect()`` raises ``LoadShedError(reason="memory_pressure")`` when this is true;
        :meth:`raise_if_shedding` does the same for code that uses the manager alone.
        """
        if critical or not self.pressure_relief_enabled:
            return False
        if self._now() >= self._due_at:  # the hot path: one clock read between samples
            self.maybe_sample()
        return self._policy.level is MemoryLevel.CRITICAL

    def raise_if_shedding(self, critical: bool = False) -> None:
        """Raise :class:`~buttress.LoadShedError` when :meth:`should_shed` says so.

        ``retry_after`` is the earliest the level could fall: the time to the next sample plus
        the further samples the hysteresis needs.
        """
        if not self.should_shed(critical):
            return
        with self._lock:
            self._shed += 1
            further = max(0, self._policy.samples_to_leave - 1)
        retry_after = max(0.0, self.next_sample_at - self.clock.monotonic())
        retry_after += further * self.check_interval
        if events.enabled(EV_SHED):
            events.emit(
                EV_SHED,
                {"retry_after": retry_after},
                {"manager": self.name, "level": MemoryLevel.CRITICAL.value},
            )
        raise LoadShedError(
            "memory_pressure",
            level=MemoryLevel.CRITICAL.value,
            source=self.name,
            retry_after=retry_after,
        )

    def snapshot(self) -> MemorySnapshot:
        """The level and last figures as the health report shows them."""
        level = self.level
        now = self.clock.monotonic()
        s = self._last
        psi = s.psi if s is not None else None
        with self._lock:
            return MemorySnapshot(
                name=self.name,
                level=level,
                reason=self._policy.reason,
                level_age=now - self._policy.since,
                shedding=self.pressure_relief_enabled and level is MemoryLevel.CRITICAL,
                ratio=s.ratio if s is not None else None,
                source=s.source if s is not None else None,
                limit=s.limit if s is not None else None,
                used=s.used if s is not None else None,
                rss=s.rss if s is not None else None,
                psi_some_avg10=psi.some_avg10 if psi is not None else None,
                psi_full_avg10=psi.full_avg10 if psi is not None else None,
                warning_threshold=self.config.warning_threshold,
                critical_threshold=self.config.critical_threshold,
                check_interval=self.check_interval,
                samples=self._samples,
                sample_age=now - s.at if s is not None else None,
                relief_runs=self._relief_runs,
                gc_runs=self._gc_runs,
                shed=self._shed,
                limit_events=MappingProxyType(dict(self._limit_events)),
            )

    # -- relief --------------------------------------------------------------------------------

    def on_pressure(self, level: MemoryLevel | str, callback: ReliefCallback) -> Callable[[], None]:
        """Call ``callback(sample)`` each time the level rises to ``level`` (or past it).

        ``on_pressure("normal", cb)`` instead runs ``cb`` on recovery to normal. The
        infrastructure registers its pools' ``trim()`` here; caches can register to clear. A
        callback runs once per entry, in the thread that samples; one that raises is logged
        and reported, and the others still run.
        Returns a function that unregisters the callback.
        """
        lvl = MemoryLevel.parse(level)
        if not callable(callback):
            raise ConfigError("callback", f"must be callable, got {callback!r}")
        if is_async_callable(callback):
            raise ConfigError(
                "callback",
                f"{callback!r} is a coroutine function, which nothing would await: callbacks run "
                "in the sampling thread; pass a plain function (it may schedule async work)",
            )
        with self._lock:
            self._callbacks[lvl].append(callback)

        def unregister() -> None:
            with self._lock:
                if callback in self._callbacks[lvl]:
                    self._callbacks[lvl].remove(callback)

        return unregister

    def _run_callbacks(self, level: MemoryLevel, sample: MemorySample) -> None:
        with self._lock:
            callbacks = list(self._callbacks[level])
        for callback in callbacks:
            started = self.clock.monotonic()
            error: str | None = None
            try:
                callback(sample)
            except Exception as exc:
                error = repr(exc)
                _log.error("memory relief callback %r raised", callback, exc_info=exc)
            with self._lock:
                self._relief_runs += 1
            if events.enabled(EV_RELIEF):
                events.emit(
                    EV_RELIEF,
                    {"duration": self.clock.monotonic() - started},
                    {
                        "manager": self.name,
                        "level": level.value,
                        "callback": _describe(callback),
                        "error": error,
                    },
                )

    def _collect(self, sample: MemorySample) -> None:
        started = self.clock.monotonic()
        collected = gc.collect()
        with self._lock:
            self._gc_runs += 1
        if events.enabled(EV_GC):
            events.emit(
                EV_GC,
                {"duration": self.clock.monotonic() - started, "collected": collected},
                {"manager": self.name, "level": sample.level.value},
            )

    # -- internals -----------------------------------------------------------------------------

    def _count_limit_events(self, counters: Mapping[str, int]) -> Mapping[str, int]:
        """Increases of the limit counters since the previous sample (the first is a baseline)."""
        previous, self._counters = self._counters, counters
        if previous is None:
            return MappingProxyType({})
        increases = {}
        for key in LIMIT_EVENTS:
            grew = counters.get(key, 0) - previous.get(key, 0)
            if grew > 0:  # a drop means the counters were reset: a new baseline
                increases[key] = grew
                self._limit_events[key] += grew
        return MappingProxyType(increases)

    def _report(self, sample: MemorySample, change: LevelChange | None) -> None:
        if events.enabled(EV_SAMPLE):
            psi = sample.psi
            events.emit(
                EV_SAMPLE,
                {"ratio": sample.ratio, "used": sample.used, "limit": sample.limit},
                {
                    "manager": self.name,
                    "source": sample.source,
                    "level": sample.level.value,
                    "rss": sample.rss,
                    "psi_some_avg10": psi.some_avg10 if psi is not None else None,
                    "psi_full_avg10": psi.full_avg10 if psi is not None else None,
                },
            )
        if sample.events and events.enabled(EV_LIMIT):
            events.emit(
                EV_LIMIT,
                {key: sample.events.get(key, 0) for key in LIMIT_EVENTS},
                {"manager": self.name, "source": sample.source},
            )
        if change is not None:
            log = _log.warning if change.level.rank > change.previous.rank else _log.info
            log(
                "memory %s: %s -> %s (%s, ratio %.3f of %d bytes, source %s)",
                self.name,
                change.previous.value,
                change.level.value,
                change.reason,
                sample.ratio,
                sample.limit,
                sample.source,
            )
            if events.enabled(EV_LEVEL):
                events.emit(
                    EV_LEVEL,
                    {"ratio": sample.ratio},
                    {
                        "manager": self.name,
                        "from_level": change.previous.value,
                        "to_level": change.level.value,
                        "reason": change.reason,
                        "source": sample.source,
                    },
                )

    def __repr__(self) -> str:
        return (
            f"MemoryManager(name={self.name!r}, level={self._policy.level.value}, "
            f"check_interval={self.check_interval}, probe={self._probe!r})"
        )


def _describe(callback: Callable[..., object]) -> str:
    return getattr(callback, "__qualname__", None) or repr(callback)


def _plain(obj: MemorySample | MemorySnapshot) -> dict[str, Any]:
    """A JSON-ready dict: levels as strings, mappings as dicts, PSI as a dict or ``None``."""
    out: dict[str, Any] = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, MemoryLevel):
            value = value.value
        elif isinstance(value, Mapping):
            value = dict(value)
        elif isinstance(value, Psi):
            value = asdict(value)
        out[f.name] = value
    return out
