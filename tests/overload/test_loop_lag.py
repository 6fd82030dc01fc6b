"""Event-loop lag: the pure core with exact figures, the monitor on a manual clock and a
stand-in loop, the per-loop registry, and one real loop stalled by a busy callback."""

from __future__ import annotations

import asyncio
import doctest
import gc
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from buttress import ConfigError, ManualClock
from buttress._overload import _loop_lag
from buttress._overload._loop_lag import LagConfig, LoopLag, percentile
from buttress._overload._loop_monitor import LoopLagMonitor, LoopLagMonitors, LoopLagSnapshot
from buttress._pressure import LevelChange, PressureLevel

N, W, C = PressureLevel.NORMAL, PressureLevel.WARNING, PressureLevel.CRITICAL


def test_doctests() -> None:
    assert doctest.testmod(_loop_lag).failed == 0


# -- the pure core ----------------------------------------------------------------------------


def drive(lag: LoopLag, start: float, lags: list[float], interval: float = 0.25) -> float:
    """Schedule and run one tick per lag, each ``interval`` after the previous ran; returns the
    time of the last."""
    now = start
    for late in lags:
        lag.scheduled(now + interval)
        now = now + interval + late
        lag.tick(now)
    return now


def test_ticks_on_time_have_no_lag_and_early_ones_none_below_zero() -> None:
    lag = LoopLag(LagConfig(interval=0.25))
    lag.scheduled(0.25)
    assert lag.tick(0.25) is None
    assert lag.last == 0.0
    lag.scheduled(0.5)
    lag.tick(0.499)  # a timer may fire within the clock's resolution early
    assert lag.last == 0.0
    assert lag.ticks == 2
    assert lag.level is N


def test_a_late_tick_enters_its_level_at_once() -> None:
    lag = LoopLag(LagConfig(interval=0.25))
    lag.scheduled(0.25)
    change = lag.tick(0.375)  # 0.125 s late: warning
    assert change is not None
    assert (change.previous, change.level, change.reason, change.at) == (N, W, "lag", 0.375)
    lag.scheduled(0.625)
    change = lag.tick(1.25)  # 0.625 s late: critical
    assert change is not None
    assert (change.level, change.crossed) == (C, (C,))


def test_falling_needs_exit_samples_ticks_below_the_exit_line() -> None:
    lag = LoopLag(LagConfig(interval=0.25, exit_samples=3, exit_margin=0.5))
    drive(lag, 0.0, [1.0])
    assert lag.level is C
    # 0.25 holds critical (0.5 x 0.5); 0.0625 holds warning (0.1 x 0.5 = 0.05).
    levels: list[PressureLevel] = []
    for late in [0.25, 0.0625, 0.0625, 0.0625, 0.0, 0.0, 0.0]:
        drive(lag, 10.0 + len(levels), [late])
        levels.append(lag.level)
    assert levels == [C, C, C, W, W, W, N]
    assert lag.reason == "recovered"


def test_stalled_now_is_seen_before_the_tick_runs_and_forgotten_once_it_has() -> None:
    lag = LoopLag(LagConfig(interval=0.25))
    lag.scheduled(1.0)
    assert lag.stalled(0.5) == 0.0  # not due yet
    assert lag.stalled(1.0) == 0.0
    assert lag.stalled(1.0625) == 0.0625
    assert lag.level_at(1.0625) is N  # below warning
    assert lag.level_at(1.125) is W
    assert lag.level_at(1.5) is C
    assert lag.level is N  # a stall in progress moves nothing yet
    change = lag.tick(1.75)
    assert change is not None
    assert change.level is C
    assert lag.stalled(1.75) == 0.0
    assert lag.level_at(1.75) is C


def test_a_stopped_loop_has_nothing_overdue() -> None:
    lag = LoopLag()
    lag.scheduled(1.0)
    lag.stopped()
    assert (lag.stalled(100.0), lag.level_at(100.0)) == (0.0, N)
    assert lag.tick(100.0) is None  # a tick that was no longer scheduled measures nothing
    assert lag.ticks == 0


def test_windows_keep_p99_and_max_and_close_with_the_tick_that_ends_them() -> None:
    lag = LoopLag(LagConfig(interval=0.25, window=10.0, exit_samples=1))
    # 40 ticks of 0.25 s: the 40th runs at 10.0 + 0.5 (its own lag) and closes the window.
    lags = [0.0] * 38 + [0.125, 0.5]
    end = drive(lag, 0.0, lags)
    assert end == 10.625
    assert lag.window is not None
    assert (lag.window.start, lag.window.end, lag.window.ticks) == (0.0, 10.625, 40)
    assert lag.window.max == 0.5
    assert lag.window.p99 == 0.5  # nearest rank: ceil(0.99 x 40) = the 40th of 40
    assert lag.current_max is None  # the next window has no tick yet
    drive(lag, end, [0.0625])
    assert lag.current_max == 0.0625
    assert lag.window.ticks == 40


def test_percentile_is_nearest_rank() -> None:
    values = [float(i) for i in range(1, 201)]  # 200 ticks
    assert percentile(values, 0.99) == 198.0
    assert percentile(values, 1.0) == 200.0
    assert percentile([3.0], 0.99) == 3.0


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"interval": 0}, "interval"),
        ({"interval": float("nan")}, "interval"),
        ({"window": 0.01}, "window"),
        ({"warning": -1}, "warning"),
        ({"critical": 0.1}, "critical"),
        ({"critical": True}, "critical"),
        ({"exit_margin": 1.0}, "exit_margin"),
        ({"exit_samples": 0}, "exit_samples"),
    ],
)
def test_bad_settings_name_the_field(kwargs: dict[str, Any], path: str) -> None:
    for make in (LagConfig, LoopLagMonitor, LoopLagMonitors):
        with pytest.raises(ConfigError) as info:
            make(**kwargs)
        assert info.value.path == path


# -- the monitor, on a manual clock and a stand-in loop ---------------------------------------


class StandInLoop:
    """What a monitor uses of a loop: timers run when the test says, on the manual clock."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.timers: list[tuple[float, Callable[..., object], tuple[Any, ...]]] = []
        self.soon: list[tuple[Callable[..., object], tuple[Any, ...]]] = []
        self.running = True

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> None:
        self.timers.append((self.clock.monotonic() + delay, callback, args))

    def call_soon_threadsafe(self, callback: Callable[..., object], *args: Any) -> None:
        self.soon.append((callback, args))

    def is_running(self) -> bool:
        return self.running

    def is_closed(self) -> bool:
        return False

    def run_soon(self) -> None:
        soon, self.soon = self.soon, []
        for callback, args in soon:
            callback(*args)

    def tick_at(self, lag: float) -> None:
        """Move the clock to the pending timer's due time plus ``lag``, and run it."""
        (due, callback, args), *self.timers = self.timers
        self.clock.set(max(self.clock.monotonic(), due + lag))
        callback(*args)


def started(clock: ManualClock, **kwargs: Any) -> tuple[LoopLagMonitor, StandInLoop]:
    loop = StandInLoop(clock)
    monitor = LoopLagMonitor(interval=0.25, clock=clock, **kwargs)
    monitor.start(loop)  # type: ignore[arg-type]
    loop.run_soon()  # started from outside the loop: the first tick is scheduled through it
    return monitor, loop


def test_the_monitor_keeps_one_tick_pending_and_measures_its_lag(clock: ManualClock) -> None:
    monitor, loop = started(clock, exit_samples=2)
    heard: list[tuple[LevelChange, LoopLagSnapshot]] = []
    monitor.on_change(lambda change, snapshot: heard.append((change, snapshot)))
    assert len(loop.timers) == 1
    loop.tick_at(0.0)
    assert len(loop.timers) == 1  # the next one, and only one
    clock.advance(0.25 + 0.75)  # the loop is stuck 0.75 s past the due time
    assert monitor.stalled() == 0.75
    assert monitor.level is C  # seen before the tick lands
    stuck = monitor.snapshot()
    assert (stuck.level, stuck.reason, stuck.stalled) == (C, "stalled", 0.75)
    assert heard == []  # listeners hear when the tick runs
    loop.tick_at(0.75)
    assert [(c.previous, c.level) for c, _ in heard] == [(N, C)]
    snapshot = heard[0][1]
    assert (snapshot.level, snapshot.lag_last, snapshot.stalled, snapshot.ticks) == (C, 0.75, 0, 2)
    loop.tick_at(0.0)
    loop.tick_at(0.0)
    assert [(c.previous, c.level) for c, _ in heard] == [(N, C), (C, N)]
    assert monitor.snapshot().to_dict()["level"] == "normal"


def test_a_loop_that_is_not_running_is_not_stalled(clock: ManualClock) -> None:
    monitor, loop = started(clock)
    loop.running = False  # between run_until_complete() calls, say
    clock.advance(5.0)
    assert (monitor.stalled(), monitor.level) == (0.0, N)


def test_stop_forgets_the_pending_tick_and_start_again_resumes(clock: ManualClock) -> None:
    monitor, loop = started(clock)
    monitor.stop()
    assert not monitor.running
    clock.advance(5.0)
    assert monitor.level is N
    loop.tick_at(0.0)  # the tick pending at stop() runs, and does nothing
    assert monitor.snapshot().ticks == 0
    assert loop.timers == []
    monitor.start(loop)  # type: ignore[arg-type]
    monitor.start(loop)  # type: ignore[arg-type]  # again on the same loop: nothing more
    loop.run_soon()
    assert len(loop.timers) == 1
    with pytest.raises(RuntimeError, match="another loop"):
        monitor.start(StandInLoop(clock))  # type: ignore[arg-type]


def test_listeners_that_raise_do_not_stop_the_others(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    monitor, loop = started(clock)
    heard: list[PressureLevel] = []

    def broken(change: LevelChange, snapshot: LoopLagSnapshot) -> None:
        raise RuntimeError("listener bug")

    monitor.on_change(broken)
    remove = monitor.on_change(lambda change, snapshot: heard.append(change.level))
    loop.tick_at(0.125)
    assert heard == [W]
    assert "listener bug" in caplog.text
    remove()
    loop.tick_at(1.0)
    assert heard == [W]
    with pytest.raises(ConfigError):
        monitor.on_change("print")  # type: ignore[arg-type]


# -- one monitor per loop -----------------------------------------------------------------------


def test_outside_a_loop_the_level_is_normal_and_nothing_is_made() -> None:
    monitors = LoopLagMonitors()
    assert monitors.level() is N
    assert len(monitors) == 0


async def test_the_running_loop_gets_one_monitor_made_on_first_use() -> None:
    monitors = LoopLagMonitors(name="web")
    try:
        assert monitors.level() is N
        monitor = monitors.for_loop()
        assert monitor is not None
        assert monitor is monitors.for_loop(asyncio.get_running_loop())
        assert (monitor.running, monitor.name, len(monitors)) == (True, "web-1", 1)
        assert monitors.worst() is N
        assert [s.name for s in monitors.snapshots()] == ["web-1"]
    finally:
        monitors.close()
    assert not monitor.running
    assert monitors.level() is N  # closed: no more are made
    assert monitors.for_loop() is None


def test_each_loop_has_its_own_and_a_loop_that_is_gone_takes_its_monitor() -> None:
    monitors = LoopLagMonitors()

    async def ask() -> LoopLagMonitor | None:
        monitors.level()
        return monitors.for_loop()

    made = [asyncio.run(ask())]
    thread = threading.Thread(target=lambda: made.append(asyncio.run(ask())))
    thread.start()
    thread.join()
    first, second = made
    assert first is not None
    assert second is not None
    assert first is not second
    assert (first.name, second.name) == ("loop-1", "loop-2")
    del first, second
    made.clear()
    gc.collect()
    assert len(monitors) == 0
    monitors.close()


def test_registry_listeners_hear_every_loop(clock: ManualClock) -> None:
    monitors = LoopLagMonitors(interval=0.25, clock=clock)
    heard: list[tuple[str, PressureLevel]] = []
    remove = monitors.on_change(lambda change, snap: heard.append((snap.name, change.level)))
    loops = [StandInLoop(clock), StandInLoop(clock)]
    for loop in loops:
        monitors.for_loop(loop)  # type: ignore[arg-type]
        loop.run_soon()
    loops[1].tick_at(0.75)
    assert heard == [("loop-2", C)]
    assert monitors.worst() is C
    remove()
    loops[0].tick_at(0.75)
    assert heard == [("loop-2", C)]
    monitors.close()


# -- a real loop, stalled by a busy callback ------------------------------------------------------


async def test_a_busy_callback_makes_the_loop_critical_then_it_recovers() -> None:
    # real-time: a callback busy for 0.8 s of the real clock stalls the loop under a monitor
    # on the real clock; every wait below is for the monitor's own notifications.
    monitor = LoopLagMonitor(interval=0.02, exit_samples=3)
    levels: list[PressureLevel] = []
    lags: list[float | None] = []
    reached = {level: asyncio.Event() for level in PressureLevel}

    def heard(change: LevelChange, snapshot: LoopLagSnapshot) -> None:
        levels.append(change.level)
        lags.append(snapshot.lag_last)
        reached[change.level].set()

    monitor.on_change(heard)
    seen_while_stuck: dict[str, Any] = {}

    def busy() -> None:
        end = time.monotonic() + 0.8
        while time.monotonic() < end:
            pass
        # Still inside the stall: the pending tick is overdue and the level already says so.
        seen_while_stuck.update(level=monitor.level, stalled=monitor.stalled())

    monitor.start()
    try:
        async with asyncio.timeout(30):
            asyncio.get_running_loop().call_soon(busy)
            await reached[C].wait()
            await reached[N].wait()
    finally:
        monitor.stop()
    assert seen_while_stuck["level"] is C
    assert seen_while_stuck["stalled"] >= 0.5
    # (A tick late by 0.1 s on a loaded machine may add a warning before or after.)
    stall_lag = lags[levels.index(C)]
    assert stall_lag is not None
    assert stall_lag >= 0.5
    assert levels[-1] is N
