"""``LoopLagMonitor``: one event loop's ticks, timed on a clock; ``LoopLagMonitors``: one monitor
per loop, made on first use.

The monitor is the shell of ``_loop_lag.LoopLag``: it keeps one ``call_later`` pending on its
loop, reads the clock when the tick is scheduled and when it runs, and hands both times to the
core. Its level and figures may be read from any thread; the ticks, and so the listeners, run
on the loop.

A service's calls may run on several loops (a loop per thread, a loop per test).
:class:`LoopLagMonitors` holds a monitor per loop, weakly (a loop that is gone takes its
monitor with it), and makes and starts one the first time a call asks from a running loop, so
:meth:`LoopLagMonitors.level` answers "how late is the loop this call runs on" in O(1).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._clock import Clock, SystemClock
from .._pressure import LevelChange, PressureLevel
from .._redact import redacted_logger
from ._listeners import add_listener, notify
from ._loop_lag import LagConfig, LoopLag
from ._report import plain

__all__ = ["LoopLagListener", "LoopLagMonitor", "LoopLagMonitors", "LoopLagSnapshot"]

_log = redacted_logger("buttress.overload")

LoopLagListener = Callable[[LevelChange, "LoopLagSnapshot"], object]

# asyncio's own fast "which loop runs this thread" (None outside one): get_running_loop()
# raises instead, which costs far more on the threads that have no loop.
_running_loop = asyncio._get_running_loop


@dataclass(frozen=True, slots=True)
class LoopLagSnapshot:
    """What the health report shows of one loop.

    ``lag_p99`` and ``lag_max`` describe the last complete window (``window_ticks`` ticks from
    ``window_start``; all ``None`` until one has completed); ``current_max`` is the largest lag
    of the window in progress, ``lag_last`` the last tick's. ``stalled`` is how long the pending
    tick is overdue now: above 0 only while the loop is stuck. ``level`` counts a stall in
    progress. Times are seconds; ``level_age`` and ``window_start`` are on the monotonic clock.
    """

    name: str
    level: PressureLevel
    reason: str
    level_age: float
    running: bool
    stalled: float
    lag_last: float | None
    lag_p99: float | None
    lag_max: float | None
    window_ticks: int | None
    window_start: float | None
    current_max: float | None
    ticks: int
    interval: float
    warning: float
    critical: float

    def to_dict(self) -> dict[str, Any]:
        return plain(self)


class LoopLagMonitor:
    """Measures how late one asyncio event loop runs a tick it keeps pending.

    ``start(loop)`` begins (from any thread; the running loop when ``loop`` is omitted) and
    ``stop()`` ends it; :attr:`level`, :meth:`stalled` and :meth:`snapshot` may be read from
    any thread. The settings are :class:`LagConfig`'s, which states their defaults and why.

    >>> async def main():                              # doctest: +SKIP
    ...     monitor = LoopLagMonitor()
    ...     monitor.start()
    ...     ...
    ...     monitor.level, monitor.snapshot().lag_p99
    """

    def __init__(
        self,
        *,
        interval: float = 0.05,
        window: float = 10.0,
        warning: float = 0.1,
        critical: float = 0.5,
        exit_margin: float = 0.1,
        exit_samples: int = 20,
        clock: Clock | None = None,
        name: str = "loop",
    ) -> None:
        self.config = LagConfig(
            interval=interval,
            window=window,
            warning=warning,
            critical=critical,
            exit_margin=exit_margin,
            exit_samples=exit_samples,
        )
        self.name = name
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._now = self.clock.monotonic
        self._warning = self.config.warning
        self._lag = LoopLag(self.config, self._now())
        self._lock = threading.Lock()  # the core's window and counters: ticks vs snapshots
        self._listeners: list[LoopLagListener] = []
        # Weak: a monitor kept by a registry keyed weakly by its loop must not keep the loop.
        self._loop: weakref.ref[asyncio.AbstractEventLoop] | None = None
        # Which start() the pending tick belongs to: a tick of an earlier start is ignored. No
        # handle is kept, since a handle holds its loop.
        self._generation = 0
        self._running = False

    # -- starting and stopping -----------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Start ticking on ``loop`` (default: the running loop); again on the same loop does
        nothing. From another thread the first tick is scheduled through the loop."""
        target = loop if loop is not None else asyncio.get_running_loop()
        with self._lock:
            current = self._loop() if self._loop is not None else None
            if self._running and current is target:
                return
            if self._running:
                raise RuntimeError(f"{self!r} already runs on another loop; stop() it first")
            self._loop = weakref.ref(target)
            self._running = True
            self._generation += 1
            generation = self._generation
        if _running_loop() is target:
            self._arm(generation)
        else:
            target.call_soon_threadsafe(self._arm, generation)

    def stop(self) -> None:
        """Stop ticking (from any thread): the pending tick will do nothing when it runs, and
        nothing is overdue from now on."""
        with self._lock:
            self._running = False
            self._generation += 1
            self._lag.stopped()

    @property
    def running(self) -> bool:
        return self._running

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop it measures (``None`` before :meth:`start`, or once the loop is gone)."""
        return self._loop() if self._loop is not None else None

    def _arm(self, generation: int) -> None:
        """Schedule the next tick (on the loop's thread)."""
        loop = self.loop
        with self._lock:
            if generation != self._generation or loop is None:
                return  # stopped (or started again) meanwhile
            self._lag.scheduled(self._now() + self.config.interval)
        loop.call_later(self.config.interval, self._tick, generation)

    def _tick(self, generation: int) -> None:
        with self._lock:
            if generation != self._generation:
                return
            now = self._now()
            change = self._lag.tick(now)
            listeners = list(self._listeners) if change is not None else []
            snapshot = self._snapshot(now) if listeners else None
        self._arm(generation)
        if change is not None:
            self._changed(change, snapshot, listeners)

    # -- reading (any thread) ----------------------------------------------------------------

    @property
    def level(self) -> PressureLevel:
        """The level, counting a stall in progress (a tick overdue by ``warning`` or more).

        Between stalls this costs a clock read and a comparison.
        """
        lag = self._lag
        due = lag.due
        if due is None or self._now() - due < self._warning:
            return lag.levels.level  # the hot path: protect() asks on every call
        if not self._loop_runs():
            return lag.levels.level  # overdue only because the loop is not running at all
        return lag.level_at(self._now())

    def stalled(self) -> float:
        """How long the pending tick is overdue now (0 while the loop keeps up, or stopped)."""
        return self._lag.stalled(self._now()) if self._loop_runs() else 0.0

    def _loop_runs(self) -> bool:
        loop = self.loop
        return loop is not None and loop.is_running()

    def snapshot(self) -> LoopLagSnapshot:
        """The level and the lag figures as the health report shows them."""
        with self._lock:
            return self._snapshot(self._now())

    def _snapshot(self, now: float) -> LoopLagSnapshot:
        lag = self._lag
        window = lag.window
        stalled = lag.stalled(now) if self._loop_runs() else 0.0
        level = lag.level_at(now) if stalled else lag.level
        return LoopLagSnapshot(
            name=self.name,
            level=level,
            reason="stalled" if level is not lag.level else lag.reason,
            level_age=now - lag.since,
            running=self._running,
            stalled=stalled,
            lag_last=lag.last,
            lag_p99=window.p99 if window is not None else None,
            lag_max=window.max if window is not None else None,
            window_ticks=window.ticks if window is not None else None,
            window_start=window.start if window is not None else None,
            current_max=lag.current_max,
            ticks=lag.ticks,
            interval=self.config.interval,
            warning=self.config.warning,
            critical=self.config.critical,
        )

    # -- listeners -----------------------------------------------------------------------------

    def on_change(self, listener: LoopLagListener) -> Callable[[], None]:
        """Call ``listener(change, snapshot)`` after each change of level.

        Listeners run on the loop, in the tick that moved the level (a stall is heard when its
        tick finally runs), in the order they were added; one that raises is logged and the
        others still run. Returns a function that removes the listener.
        """
        return add_listener(self._listeners, self._lock, listener)

    def _changed(
        self,
        change: LevelChange,
        snapshot: LoopLagSnapshot | None,
        listeners: list[LoopLagListener],
    ) -> None:
        log = _log.warning if change.level.rank > change.previous.rank else _log.info
        log(
            "event loop %s: %s -> %s (%s; last tick %.3f s late)",
            self.name,
            change.previous.value,
            change.level.value,
            change.reason,
            self._lag.last or 0.0,
        )
        if snapshot is None:
            return
        notify(listeners, change, snapshot, _log, f"event loop {self.name}")

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return f"LoopLagMonitor(name={self.name!r}, level={self._lag.level.value}, {state})"


class LoopLagMonitors:
    """A :class:`LoopLagMonitor` per event loop, each made and started the first time a call
    asks from that loop, with the same settings and listeners.

    Loops are held weakly: when a loop is gone, its monitor goes with it. :meth:`close` stops
    them all and makes no more.
    """

    def __init__(
        self,
        *,
        interval: float = 0.05,
        window: float = 10.0,
        warning: float = 0.1,
        critical: float = 0.5,
        exit_margin: float = 0.1,
        exit_samples: int = 20,
        clock: Clock | None = None,
        name: str = "loop",
    ) -> None:
        self.config = LagConfig(
            interval=interval,
            window=window,
            warning=warning,
            critical=critical,
            exit_margin=exit_margin,
            exit_samples=exit_samples,
        )
        self.clock = clock
        self.name = name
        # Keyed by id(loop), dropped by a finalizer when the loop is freed (before its id can
        # be reused): a WeakKeyDictionary in effect, without a weak reference made per look-up.
        self._monitors: dict[int, LoopLagMonitor] = {}
        self._listeners: list[LoopLagListener] = []
        self._lock = threading.Lock()
        self._closed = False
        self._made = 0

    def level(self) -> PressureLevel:
        """The level of the loop running this call; ``normal`` outside a running loop (a thread's
        call waits on no loop). The first call from a loop starts its monitor."""
        loop = _running_loop()
        if loop is None:
            return PressureLevel.NORMAL
        monitor = self._monitors.get(id(loop))
        if monitor is None:
            monitor = self.for_loop(loop)
            if monitor is None:
                return PressureLevel.NORMAL
        return monitor.level

    def for_loop(self, loop: asyncio.AbstractEventLoop | None = None) -> LoopLagMonitor | None:
        """The monitor of ``loop`` (default: the running loop), made and started now if it has
        none; ``None`` once closed."""
        target = loop if loop is not None else asyncio.get_running_loop()
        with self._lock:
            monitor = self._monitors.get(id(target))
            if monitor is not None or self._closed:
                return monitor
            self._made += 1
            monitor = LoopLagMonitor(
                interval=self.config.interval,
                window=self.config.window,
                warning=self.config.warning,
                critical=self.config.critical,
                exit_margin=self.config.exit_margin,
                exit_samples=self.config.exit_samples,
                clock=self.clock,
                name=f"{self.name}-{self._made}",
            )
            monitor.on_change(self._forward)
            self._monitors[id(target)] = monitor
            forget = weakref.finalize(target, self._forget, id(target), monitor)
            forget.atexit = False  # at exit there is nothing to tidy
        monitor.start(target)
        return monitor

    def _forget(self, key: int, monitor: LoopLagMonitor) -> None:
        """The loop ``key`` was freed: its monitor goes too."""
        with self._lock:
            if self._monitors.get(key) is monitor:
                del self._monitors[key]

    def monitors(self) -> list[LoopLagMonitor]:
        """The monitors of the loops still alive, oldest first."""
        with self._lock:
            return list(self._monitors.values())  # a dict's order: the order they were made

    def snapshots(self) -> list[LoopLagSnapshot]:
        return [monitor.snapshot() for monitor in self.monitors()]

    def worst(self) -> PressureLevel:
        """The highest level of any loop (a health report's summary)."""
        levels = [monitor.level for monitor in self.monitors()]
        return max(levels, key=lambda level: level.rank, default=PressureLevel.NORMAL)

    def on_change(self, listener: LoopLagListener) -> Callable[[], None]:
        """Call ``listener(change, snapshot)`` after each change of level of any loop's monitor,
        present or future (see :meth:`LoopLagMonitor.on_change`; ``snapshot.name`` says which
        loop). Returns a function that removes the listener."""
        return add_listener(self._listeners, self._lock, listener)

    def _forward(self, change: LevelChange, snapshot: LoopLagSnapshot) -> None:
        with self._lock:
            listeners = list(self._listeners)
        notify(listeners, change, snapshot, _log, f"event loop {snapshot.name}")

    def close(self) -> None:
        """Stop every monitor; no more are made (:meth:`level` is ``normal`` from now on)."""
        with self._lock:
            self._closed = True
            monitors = list(self._monitors.values())
            self._monitors.clear()
        for monitor in monitors:
            monitor.stop()

    def __len__(self) -> int:
        return len(self._monitors)

    def __repr__(self) -> str:
        return f"LoopLagMonitors(name={self.name!r}, loops={len(self)}, closed={self._closed})"
