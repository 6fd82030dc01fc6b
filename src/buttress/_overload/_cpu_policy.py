"""The CPU policy: signals from two readings, and a level from the signals. Pure.

Three signals, each compared with a warning and a critical threshold:

- **throttling**: Δ``nr_throttled`` ÷ Δ``nr_periods``, the share of the quota's enforcement
  periods (with work to run) in which the cgroup used up its quota and was stopped until the
  next period. It shows as latency before the average CPU looks high: threads can burn the
  quota early in a period and stall for the rest of it.
- **utilisation**: Δ``usage`` ÷ (Δt × effective cores), where the effective cores are the
  smaller of the cpuset's size and the quota (MAX ÷ PERIOD); with neither, the host's CPU
  count. Without a cgroup it is the process's own CPU time over the same cores
  (``utilisation_source`` says which).
- **PSI**: ``some avg10`` of CPU pressure, the share of the last 10 s in which at least one
  runnable task waited for a CPU (percent).

The level is the worst any signal reaches; an unknown signal (``None``) raises nothing. Levels
move by the rules of ``_pressure.py``: rising at once, falling after ``exit_samples`` samples in
a row below every threshold times (1 − ``exit_margin``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .._errors import ConfigError
from .._pressure import Hysteresis, LevelChange, PressureLevel, rank_of
from .._validate import in_interval, int_at_least, positive
from ._cpu_probe import CpuReading

__all__ = ["CpuConfig", "CpuPolicy", "CpuSignals", "cpu_signals", "effective_cores"]


@dataclass(frozen=True, slots=True)
class CpuConfig:
    """The CPU monitor's settings; validated on construction (``ConfigError`` names the field).

    A threshold of ``None`` ignores its signal at that level. The defaults, and why:

    - ``check_interval`` 1 s: each sample reads a handful of small files; a second holds ten
      enforcement periods of the default 100 ms, enough for a throttle ratio to mean something,
      and PSI's shortest average is 10 s, so sampling faster adds nothing.
    - ``throttle_warning`` 0.10: one period in ten ran out of quota, so requests already wait
      up to a period (100 ms by default) now and then; ``throttle_critical`` 0.50: half of them
      did, the quota sets the pace and queues only grow.
    - ``utilisation_warning`` 0.80, ``utilisation_critical`` 0.95: queueing delay grows as
      1 ÷ (1 − utilisation), four times the work's own time at 0.80 and nineteen at 0.95.
    - ``psi_warning`` 20 %, ``psi_critical`` 50 %: runnable work waited for a CPU a fifth of the
      time (latency is felt), then half of it (the CPU is the bottleneck).
    - ``exit_margin`` 0.10, ``exit_samples`` 3: three seconds in a row at least a tenth below
      the thresholds leave a level; the signals are averages already, so this is enough to stop
      flapping without holding a level long after the load has gone.
    """

    check_interval: float = 1.0
    throttle_warning: float | None = 0.10
    throttle_critical: float | None = 0.50
    utilisation_warning: float | None = 0.80
    utilisation_critical: float | None = 0.95
    psi_warning: float | None = 20.0
    psi_critical: float | None = 50.0
    exit_margin: float = 0.10
    exit_samples: int = 3

    def __post_init__(self) -> None:
        positive("check_interval", self.check_interval)
        for signal, interval in (("throttle", "(0, 1]"), ("utilisation", "(0, 1]")):
            _pair(self, signal, interval)
        _pair(self, "psi", "(0, 100]")  # a percentage
        in_interval("exit_margin", self.exit_margin, "[0, 1)")
        int_at_least("exit_samples", self.exit_samples, 1)


def _pair(config: object, signal: str, interval: str) -> None:
    """Check ``<signal>_warning`` and ``<signal>_critical``: each ``None`` or in ``interval``,
    and critical above warning when both are set."""
    warning = getattr(config, f"{signal}_warning")
    critical = getattr(config, f"{signal}_critical")
    if warning is not None:
        in_interval(f"{signal}_warning", warning, interval)
    if critical is not None:
        in_interval(f"{signal}_critical", critical, interval)
    if warning is not None and critical is not None and critical <= warning:
        raise ConfigError(
            f"{signal}_critical", f"must be above {signal}_warning ({warning!r}), got {critical!r}"
        )


@dataclass(frozen=True, slots=True)
class CpuSignals:
    """What two readings say about the time between them; ``None`` where it cannot be known.

    ``throttle_ratio`` and ``utilisation`` need a previous reading (the first sample has
    neither); ``throttled_seconds`` is the time the cgroup spent throttled meanwhile.
    """

    throttle_ratio: float | None = None
    utilisation: float | None = None
    utilisation_source: str | None = None
    process_utilisation: float | None = None
    psi_some_avg10: float | None = None
    effective_cores: float | None = None
    throttled_seconds: float | None = None


def effective_cores(reading: CpuReading) -> float | None:
    """The cores the cgroup can use: min(cpuset size, quota); with neither, the host's count.

    >>> effective_cores(CpuReading(quota_cores=1.5, cpuset_cpus=4, host_cpus=16))
    1.5
    >>> effective_cores(CpuReading(host_cpus=16))
    16.0
    """
    bounds = [float(b) for b in (reading.cpuset_cpus, reading.quota_cores) if b is not None]
    if bounds:
        return min(bounds)
    return float(reading.host_cpus) if reading.host_cpus else None


def _delta(previous: float | None, current: float | None) -> float | None:
    """How far a counter moved; ``None`` when unknown or when it went back (a reset)."""
    if previous is None or current is None or current < previous:
        return None
    return current - previous


def cpu_signals(previous: CpuReading | None, current: CpuReading, elapsed: float) -> CpuSignals:
    """The signals over the ``elapsed`` seconds from ``previous`` to ``current``.

    >>> before = CpuReading(usage_usec=0, nr_periods=100, nr_throttled=10, quota_cores=2.0)
    >>> after = CpuReading(usage_usec=1_500_000, nr_periods=110, nr_throttled=13,
    ...                    quota_cores=2.0)
    >>> s = cpu_signals(before, after, elapsed=1.0)
    >>> s.throttle_ratio, s.utilisation, s.utilisation_source
    (0.3, 0.75, 'cgroup')
    """
    psi = current.psi.some_avg10 if current.psi is not None else None
    cores = effective_cores(current)
    if previous is None or not (elapsed > 0 and math.isfinite(elapsed)):
        return CpuSignals(psi_some_avg10=psi, effective_cores=cores)
    periods = _delta(previous.nr_periods, current.nr_periods)
    throttled = _delta(previous.nr_throttled, current.nr_throttled)
    throttle_ratio: float | None = None
    if periods is not None and throttled is not None:
        # No period with work to run is no throttling (and no quota counts no periods).
        throttle_ratio = min(1.0, throttled / periods) if periods else 0.0
    throttled_usec = _delta(previous.throttled_usec, current.throttled_usec)

    def share(used_seconds: float | None) -> float | None:
        return used_seconds / (elapsed * cores) if used_seconds is not None and cores else None

    process_share = share(_delta(previous.process_seconds, current.process_seconds))
    utilisation, source = process_share, "process" if process_share is not None else None
    if previous.usage_usec is not None and current.usage_usec is not None:
        # The cgroup's usage when it is read (a reset gives no figure, not the process's).
        usage = _delta(previous.usage_usec, current.usage_usec)
        utilisation = share(usage / 1e6 if usage is not None else None)
        source = "cgroup" if utilisation is not None else None
    return CpuSignals(
        throttle_ratio=throttle_ratio,
        utilisation=utilisation,
        utilisation_source=source,
        process_utilisation=process_share,
        psi_some_avg10=psi,
        effective_cores=cores,
        throttled_seconds=throttled_usec / 1e6 if throttled_usec is not None else None,
    )


def _scaled(threshold: float | None, factor: float) -> float | None:
    return threshold * factor if threshold is not None else None


class CpuPolicy:
    """Turns successive :class:`CpuSignals` into a level, with hysteresis.

    >>> policy = CpuPolicy(CpuConfig(exit_samples=2))
    >>> policy.observe(CpuSignals(throttle_ratio=0.6), now=0.0).level.value
    'critical'
    >>> policy.observe(CpuSignals(throttle_ratio=0.0), now=1.0) is None   # once below: not yet
    True
    >>> policy.observe(CpuSignals(throttle_ratio=0.0), now=2.0).reason
    'recovered'
    """

    def __init__(self, config: CpuConfig | None = None, now: float = 0.0) -> None:
        self.config = config or CpuConfig()
        self._levels = Hysteresis(self.config.exit_samples, now)

    @property
    def level(self) -> PressureLevel:
        return self._levels.level

    @property
    def since(self) -> float:
        """The monotonic time the level was entered."""
        return self._levels.since

    @property
    def reason(self) -> str:
        """What raised the level (``throttling``, ``psi``, ``utilisation``), or ``recovered``."""
        return self._levels.reason

    @property
    def samples_to_leave(self) -> int:
        return self._levels.samples_to_leave

    def observe(self, signals: CpuSignals, now: float) -> LevelChange | None:
        """Feed one sample's signals; returns the change of level, if any."""
        c = self.config
        keep = 1.0 - c.exit_margin
        entered, held, reason = 0, 0, "initial"
        # The order breaks ties for the reason: throttling is the most direct evidence.
        for name, value, warning, critical in (
            ("throttling", signals.throttle_ratio, c.throttle_warning, c.throttle_critical),
            ("psi", signals.psi_some_avg10, c.psi_warning, c.psi_critical),
            ("utilisation", signals.utilisation, c.utilisation_warning, c.utilisation_critical),
        ):
            rank = rank_of(value, warning, critical)
            if rank > entered:
                entered, reason = rank, name
            held = max(held, rank_of(value, _scaled(warning, keep), _scaled(critical, keep)))
        return self._levels.step(entered, held, reason, now)

    def __repr__(self) -> str:
        return f"CpuPolicy(level={self.level.value}, reason={self.reason!r})"
