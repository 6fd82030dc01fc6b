"""The memory policy: levels with hysteresis, and when relief is due. Pure: ``now`` is passed in.

A level is the worse of what the ratio (working set ÷ limit) says and what PSI says. Rising is
immediate: one sample over a threshold enters the level, because by the time memory is short
there is no time to wait. Falling is slow: the level is left only after ``exit_samples``
samples in a row below its threshold minus ``exit_margin`` (for PSI: below half its
threshold), so a ratio wobbling around a threshold does not flap relief on and off (oomd's
"sustained, not falling fast" rule, turned around).
"""

from __future__ import annotations

from dataclasses import dataclass

from .._errors import ConfigError
from .._pressure import Hysteresis, LevelChange, PressureLevel
from .._validate import in_interval, int_at_least, is_finite

__all__ = ["LevelChange", "MemoryLevel", "PolicyConfig", "PressurePolicy"]

# A PSI level is left once its stall share is below this fraction of the threshold.
PSI_EXIT_FRACTION = 0.5

# Memory, CPU and loop lag share one set of levels (``_pressure.py``); memory named it first.
MemoryLevel = PressureLevel


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """Thresholds of the policy; validated on construction.

    ``psi_warning`` is the ``some avg10`` stall share (percent) that means warning,
    ``psi_critical`` the ``full avg10`` share that means critical; ``None`` ignores PSI.
    """

    warning_threshold: float = 0.70
    critical_threshold: float = 0.85
    exit_margin: float = 0.05
    exit_samples: int = 3
    psi_warning: float | None = 10.0
    psi_critical: float | None = 10.0
    gc_interval: float = 30.0

    def __post_init__(self) -> None:
        w = in_interval("warning_threshold", self.warning_threshold, "(0, 1]")
        c = in_interval("critical_threshold", self.critical_threshold, "(0, 1]")
        if c <= w:
            raise ConfigError(
                "critical_threshold", f"must be above warning_threshold ({w!r}), got {c!r}"
            )
        if not (is_finite(self.exit_margin) and 0.0 <= self.exit_margin < w):
            raise ConfigError(
                "exit_margin", f"must be in [0, warning_threshold), got {self.exit_margin!r}"
            )
        int_at_least("exit_samples", self.exit_samples, 1)
        for name in ("psi_warning", "psi_critical"):
            value = getattr(self, name)
            if value is not None:
                in_interval(name, value, "(0, 100]")  # a percentage
        in_interval("gc_interval", self.gc_interval, "[0, inf]")  # 0: at every check under pressure


class PressurePolicy:
    """Turns successive (ratio, PSI) samples into a level, with hysteresis.

    >>> policy = PressurePolicy(PolicyConfig(exit_samples=2))
    >>> policy.observe(0.9, None, None, now=0.0).level.value
    'critical'
    >>> policy.observe(0.5, None, None, now=1.0) is None    # once below: not yet
    True
    >>> policy.observe(0.5, None, None, now=2.0).level.value      # twice: leave
    'normal'
    """

    def __init__(self, config: PolicyConfig | None = None, now: float = 0.0) -> None:
        self.config = config or PolicyConfig()
        self._levels = Hysteresis(self.config.exit_samples, now)
        self.last_gc: float | None = None

    @property
    def level(self) -> MemoryLevel:
        return self._levels.level

    @property
    def since(self) -> float:
        """The monotonic time the level was entered."""
        return self._levels.since

    @property
    def reason(self) -> str:
        """What raised the level (``ratio``, ``psi``), or ``recovered`` / ``initial``."""
        return self._levels.reason

    def observe(
        self,
        ratio: float,
        psi_some: float | None,
        psi_full: float | None,
        now: float,
    ) -> LevelChange | None:
        """Feed one sample; returns the change of level, if any."""
        entered, reason = self._entered(ratio, psi_some, psi_full)
        held = max(entered, self._held(ratio, psi_some, psi_full))
        return self._levels.step(entered, held, reason, now)

    @property
    def samples_to_leave(self) -> int:
        """How many more samples below the exit line it takes to leave the level (0: normal)."""
        return self._levels.samples_to_leave

    def gc_due(self, now: float) -> bool:
        """Whether relief should run ``gc.collect()`` now (under pressure, rate-limited)."""
        if self.level is MemoryLevel.NORMAL:
            return False
        return self.last_gc is None or now - self.last_gc >= self.config.gc_interval

    def gc_ran(self, now: float) -> None:
        self.last_gc = now

    def _entered(
        self, ratio: float, psi_some: float | None, psi_full: float | None
    ) -> tuple[int, str]:
        return self._rank(ratio, psi_some, psi_full, margin=0.0, psi_factor=1.0)

    def _held(self, ratio: float, psi_some: float | None, psi_full: float | None) -> int:
        """The highest level the sample still holds on to, with the exit margins applied."""
        m = self.config.exit_margin
        return self._rank(ratio, psi_some, psi_full, margin=m, psi_factor=PSI_EXIT_FRACTION)[0]

    def _rank(
        self,
        ratio: float,
        psi_some: float | None,
        psi_full: float | None,
        *,
        margin: float,
        psi_factor: float,
    ) -> tuple[int, str]:
        c = self.config
        by_ratio = 0
        if ratio >= c.critical_threshold - margin:
            by_ratio = 2
        elif ratio >= c.warning_threshold - margin:
            by_ratio = 1
        by_psi = 0
        if c.psi_critical is not None and psi_full is not None:
            by_psi = 2 if psi_full >= c.psi_critical * psi_factor else 0
        if not by_psi and c.psi_warning is not None and psi_some is not None:
            by_psi = 1 if psi_some >= c.psi_warning * psi_factor else 0
        return (by_psi, "psi") if by_psi > by_ratio else (by_ratio, "ratio")
