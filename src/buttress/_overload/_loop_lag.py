"""Event-loop lag, the pure core: how late a loop's ticks run, per window, and the level it means.

A monitor asks its loop to run a tick ``interval`` seconds from now (one ``call_later``, no
patching of the loop, so uvloop works too). A loop busy with a slow callback runs the tick late:
the **lag** of a tick is how much later than due it ran (never below 0; a timer may fire a
little early). :class:`LoopLag` takes the times and keeps:

- per window of at least ``window`` seconds, the p99 and the max lag of its ticks. A window
  closes with the first tick at or after its end, and includes that tick, so a stall shows in
  the window it ends;
- the lag of the last tick;
- **stalled now**: while a tick is overdue, the time since it was due. A loop that is stuck
  runs no tick, so this is the only way a stall in progress is seen (from another thread, or by
  the loop's first callback when it comes back) before its tick lands.

A stall of d seconds that covers a tick's due time delays it by between d − ``interval`` and d,
and every stall of at least ``interval`` covers one (ticks are due every ``interval`` while the
loop keeps up). A stall counts once however long it lasts, as one late tick.

The level moves by the rules of ``_pressure.py``, one sample per tick: a tick whose lag reaches
``warning`` or ``critical`` enters that level at once; ``exit_samples`` ticks in a row below the
threshold times (1 − ``exit_margin``) leave it. :meth:`LoopLag.level_at` also counts a stall in
progress, without moving the level: the move happens when the late tick runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .._errors import ConfigError
from .._pressure import Hysteresis, LevelChange, PressureLevel, rank_of
from .._validate import in_interval, int_at_least, positive

__all__ = ["LagConfig", "LagWindow", "LoopLag", "percentile"]


@dataclass(frozen=True, slots=True)
class LagConfig:
    """The loop-lag monitor's settings; validated on construction (``ConfigError`` names the
    field). The defaults, and why:

    - ``interval`` 0.05 s: every stall of 50 ms or more delays a tick, so every stall that
      reaches the warning threshold is seen, at 20 callbacks a second (a few microseconds each:
      well under 0.1 % of a core). Node's monitor ticks every 10 ms, five times the cost for
      stalls too short to matter here.
    - ``window`` 10 s: 200 ticks, enough for a p99 that is not simply the max (the two worst
      ticks), short enough to describe now.
    - ``warning`` 0.1 s: asyncio's own debug mode calls a callback slow at 0.1 s; every request
      on the loop waits that long behind it. ``critical`` 0.5 s: half a second of nothing
      served, the scale of client timeouts and health-check deadlines.
    - ``exit_margin`` 0.1, ``exit_samples`` 20: a second of ticks on time (20 at 50 ms) leaves
      a level, so a loop that stalls every few hundred milliseconds stays at its level rather
      than flapping with each stall.
    """

    interval: float = 0.05
    window: float = 10.0
    warning: float = 0.1
    critical: float = 0.5
    exit_margin: float = 0.1
    exit_samples: int = 20

    def __post_init__(self) -> None:
        interval = positive("interval", self.interval)
        window = positive("window", self.window)
        if window < interval:
            raise ConfigError("window", f"must be at least interval ({interval!r}), got {window!r}")
        warning = positive("warning", self.warning)
        critical = positive("critical", self.critical)
        if critical <= warning:
            raise ConfigError("critical", f"must be above warning ({warning!r}), got {critical!r}")
        in_interval("exit_margin", self.exit_margin, "[0, 1)")
        int_at_least("exit_samples", self.exit_samples, 1)


@dataclass(frozen=True, slots=True)
class LagWindow:
    """The lag of the ticks of one window, from ``start`` to ``end`` (monotonic seconds)."""

    start: float
    end: float
    ticks: int
    p99: float
    max: float


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile: the smallest value with ``share`` of the values at or below
    it (``values`` not empty).

    >>> percentile([0.0] * 99 + [1.0], 0.99), percentile([0.0] * 98 + [1.0, 2.0], 0.99)
    (0.0, 1.0)
    """
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


class LoopLag:
    """The lag of one loop's ticks and its level. Pure: every time is an argument.

    >>> lag = LoopLag(LagConfig(interval=0.25, exit_samples=2), now=0.0)
    >>> lag.scheduled(due=0.25)
    >>> lag.stalled(now=1.0), lag.level_at(now=1.0).value     # stuck, the tick not yet run
    (0.75, 'critical')
    >>> lag.level.value                                       # the ticks so far: on time
    'normal'
    >>> lag.tick(now=1.25).level.value                        # it runs a second late
    'critical'
    >>> lag.last, lag.stalled(now=1.25)
    (1.0, 0.0)
    """

    __slots__ = (
        "_current",
        "_exit_critical",
        "_exit_warning",
        "_window_start",
        "config",
        "due",
        "last",
        "levels",
        "ticks",
        "window",
    )

    def __init__(self, config: LagConfig | None = None, now: float = 0.0) -> None:
        self.config = c = config or LagConfig()
        self.levels = Hysteresis(c.exit_samples, now)  # the level the ticks have set
        self._exit_warning = c.warning * (1.0 - c.exit_margin)
        self._exit_critical = c.critical * (1.0 - c.exit_margin)
        self.due: float | None = None  # when the pending tick is due; None: no tick pending
        self.last: float | None = None  # the lag of the last tick
        self.ticks = 0
        self.window: LagWindow | None = None  # the last complete window
        self._window_start = now
        self._current: list[float] = []  # the lags of the current window's ticks

    @property
    def level(self) -> PressureLevel:
        """The level the ticks so far set (a stall in progress counts in :meth:`level_at`)."""
        return self.levels.level

    @property
    def since(self) -> float:
        return self.levels.since

    @property
    def reason(self) -> str:
        """``lag`` (a late tick raised the level), ``recovered`` or ``initial``."""
        return self.levels.reason

    @property
    def current_max(self) -> float | None:
        """The largest lag in the current window so far (``None``: no tick yet)."""
        return max(self._current) if self._current else None

    def scheduled(self, due: float) -> None:
        """A tick is now pending, due at ``due``."""
        self.due = due

    def stopped(self) -> None:
        """No tick is pending any more (the monitor stopped): nothing can be overdue."""
        self.due = None

    def tick(self, now: float) -> LevelChange | None:
        """The pending tick ran at ``now``; returns the change of level it makes, if any."""
        due = self.due
        if due is None:
            return None  # not scheduled (stopped meanwhile): nothing to measure
        self.due = None
        lag = max(0.0, now - due)
        self.last = lag
        self.ticks += 1
        self._current.append(lag)
        if now >= self._window_start + self.config.window:
            self.window = LagWindow(
                start=self._window_start,
                end=now,
                ticks=len(self._current),
                p99=percentile(self._current, 0.99),
                max=max(self._current),
            )
            self._window_start = now
            self._current = []
        c = self.config
        entered = rank_of(lag, c.warning, c.critical)
        held = rank_of(lag, self._exit_warning, self._exit_critical)
        return self.levels.step(entered, held, "lag", now)

    def stalled(self, now: float) -> float:
        """How long the pending tick is overdue at ``now`` (0 when none is)."""
        due = self.due
        return now - due if due is not None and now > due else 0.0

    def level_at(self, now: float) -> PressureLevel:
        """The level, counting a stall in progress at ``now`` as the lag its tick will have."""
        level = self.levels.level
        due = self.due
        if due is None or now - due < self.config.warning:
            return level  # the common case: one subtraction, one comparison
        stalled = rank_of(now - due, self.config.warning, self.config.critical)
        return PressureLevel.of_rank(stalled) if stalled > level.rank else level

    def __repr__(self) -> str:
        return f"LoopLag(level={self.level.value}, ticks={self.ticks}, last={self.last!r})"
