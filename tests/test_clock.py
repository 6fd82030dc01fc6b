from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Awaitable, Callable

import pytest

from buttress import Clock, ManualClock, SystemClock, _clock


def test_manual_clock_moves_only_when_told() -> None:
    c = ManualClock(5.0)
    assert c.monotonic() == 5.0
    c.advance(1.5)
    assert c.monotonic() == 6.5
    c.set(10.0)
    assert c.monotonic() == 10.0
    assert c.time() - c.monotonic() == pytest.approx(ManualClock(0).time())
    with pytest.raises(ValueError, match="seconds must be a finite number >= 0"):
        c.advance(-1)
    with pytest.raises(ValueError, match="cannot go back"):
        c.set(1.0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "5", True, None])
def test_manual_clock_refuses_what_would_corrupt_it(bad: object) -> None:
    c = ManualClock(5.0)
    with pytest.raises(ValueError, match="seconds"):
        c.advance(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="now must be a finite number"):
        c.set(bad)  # type: ignore[arg-type]
    assert c.monotonic() == 5.0  # unchanged


def test_manual_sleep_advances_instead_of_waiting() -> None:
    c = ManualClock()
    c.sleep(3.0)  # real-time: no, ManualClock.sleep advances the clock
    asyncio.run(c.asleep(2.0))  # real-time: no, the idle loop makes the clock jump to its end
    assert c.monotonic() == 5.0


def test_both_clocks_satisfy_the_protocol() -> None:
    assert isinstance(SystemClock(), Clock)
    assert isinstance(ManualClock(), Clock)
    s = SystemClock()
    assert s.monotonic() <= s.monotonic()


# -- asleep: trio's MockClock(autojump_threshold=0) --------------------------------------------


def sleeper(
    clock: ManualClock, woke: list[tuple[str, float]]
) -> Callable[[str, float], Awaitable[None]]:
    """A coroutine function: sleep on ``clock``, then note who woke and when."""

    async def sleep(name: str, seconds: float) -> None:
        await clock.asleep(seconds)
        woke.append((name, clock.monotonic()))

    return sleep


async def test_concurrent_sleepers_wake_at_their_own_deadlines(clock: ManualClock) -> None:
    woke: list[tuple[str, float]] = []
    sleep = sleeper(clock, woke)
    await asyncio.gather(sleep("five", 5.0), sleep("five again", 5.0), sleep("one", 1.0))
    assert woke == [("one", 1.0), ("five", 5.0), ("five again", 5.0)]
    assert clock.monotonic() == 5.0  # not 11: sleeps overlap, they do not add up


async def test_sleepers_due_together_wake_in_the_order_they_slept(clock: ManualClock) -> None:
    woke: list[tuple[str, float]] = []
    sleep = sleeper(clock, woke)

    async def twice(name: str) -> None:  # reaches t=2 too, but goes to sleep for it later
        await clock.asleep(1.0)
        await sleep(name, 1.0)

    await asyncio.gather(sleep("a", 2.0), twice("late"), sleep("b", 2.0), sleep("c", 2.0))
    assert woke == [("a", 2.0), ("b", 2.0), ("c", 2.0), ("late", 2.0)]


async def test_a_task_sleeping_twice_interleaves_with_others(clock: ManualClock) -> None:
    woke: list[tuple[str, float]] = []
    sleep = sleeper(clock, woke)

    async def twice() -> None:
        await sleep("first", 2.0)
        await sleep("second", 2.0)

    await asyncio.gather(twice(), sleep("other", 3.0))
    assert woke == [("first", 2.0), ("other", 3.0), ("second", 4.0)]


async def test_a_cancelled_sleeper_is_forgotten(clock: ManualClock) -> None:
    woke: list[tuple[str, float]] = []
    sleep = sleeper(clock, woke)
    doomed = asyncio.create_task(sleep("doomed", 1.0))
    kept = asyncio.create_task(sleep("kept", 5.0))
    await asyncio.sleep(0)  # real-time: one event-loop turn, for both to go to sleep
    assert repr(clock) == "ManualClock(now=0.0, sleepers=2)"
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert repr(clock) == "ManualClock(now=0.0, sleepers=1)"
    assert clock.monotonic() == 0.0
    await kept
    assert woke == [("kept", 5.0)]
    assert repr(clock) == "ManualClock(now=5.0)"


async def test_a_task_busy_with_other_awaits_holds_the_clock_still(clock: ManualClock) -> None:
    """The clock jumps only when nothing else can run: a task passing messages back and forth
    with another sees no time pass, however many awaits that takes."""
    woke: list[tuple[str, float]] = []
    seen: list[float] = []
    ping: asyncio.Queue[int] = asyncio.Queue()
    pong: asyncio.Queue[int] = asyncio.Queue()

    async def echo() -> None:
        while (n := await ping.get()) >= 0:
            await pong.put(n)

    async def busy() -> None:
        for n in range(50):
            await ping.put(n)
            assert await pong.get() == n
            seen.append(clock.monotonic())
        await ping.put(-1)
        woke.append(("busy done", clock.monotonic()))

    await asyncio.gather(sleeper(clock, woke)("sleeper", 1.0), busy(), echo())
    assert seen == [0.0] * 50
    assert woke == [("busy done", 0.0), ("sleeper", 1.0)]


async def test_zero_negative_and_infinite_sleeps(clock: ManualClock) -> None:
    ran: list[str] = []

    async def other() -> None:
        ran.append("other")

    task = asyncio.create_task(other())
    await clock.asleep(0)  # yields once: the other task runs
    assert ran == ["other"]
    await task
    await clock.asleep(-3.0)
    await clock.asleep(math.nan)
    assert clock.monotonic() == 0.0

    forever = asyncio.create_task(clock.asleep(math.inf))
    await clock.asleep(2.0)  # the endless sleeper is no deadline to jump to
    assert clock.monotonic() == 2.0
    assert not forever.done()
    forever.cancel()
    with pytest.raises(asyncio.CancelledError):
        await forever


async def test_advance_from_another_thread_wakes_the_sleepers_it_passes(
    clock: ManualClock,
) -> None:
    """A task polling the loop keeps it from ever being idle, so no jump can happen: only the
    other thread's ``advance`` can wake the first sleeper (through ``call_soon_threadsafe``)."""
    woke: list[tuple[str, float]] = []
    sleep = sleeper(clock, woke)
    asleep = threading.Event()

    def mover() -> None:
        asleep.wait()
        clock.advance(3.0)

    thread = threading.Thread(target=mover)
    thread.start()
    short = asyncio.create_task(sleep("short", 3.0))
    long = asyncio.create_task(sleep("long", 10.0))
    await asyncio.sleep(0)  # real-time: one event-loop turn, for both to go to sleep
    asleep.set()
    while not short.done():
        await asyncio.sleep(0)  # real-time: loop turns until the other thread's wake arrives
    thread.join()
    assert woke == [("short", 3.0)]
    await long  # the loop is idle again: the clock jumps
    assert woke == [("short", 3.0), ("long", 10.0)]


async def test_set_and_sync_sleep_wake_the_async_sleepers_due(clock: ManualClock) -> None:
    woke: list[tuple[str, float]] = []
    sleep = sleeper(clock, woke)
    tasks = [asyncio.create_task(sleep(name, t)) for name, t in (("a", 1.0), ("b", 4.0))]
    await asyncio.sleep(0)  # real-time: one event-loop turn, for both to go to sleep
    clock.sleep(2.5)  # a thread's sleep: the clock moves at once
    clock.set(3.0)
    await tasks[0]
    assert woke == [("a", 3.0)]  # woken on the way, at the time it found when it ran
    await tasks[1]
    assert woke == [("a", 3.0), ("b", 4.0)]


async def test_two_clocks_on_one_loop_keep_their_own_time() -> None:
    first, second = ManualClock(), ManualClock(100.0)
    woke: list[tuple[str, float]] = []
    await asyncio.gather(
        sleeper(first, woke)("first", 5.0),
        sleeper(second, woke)("second", 1.0),
        sleeper(first, woke)("first again", 2.0),
    )
    assert sorted(woke) == [("first", 5.0), ("first again", 2.0), ("second", 101.0)]


def test_loops_in_threads_each_jump_their_own_clock() -> None:
    results: dict[int, list[tuple[str, float]]] = {}

    def run(n: int) -> None:
        clock = ManualClock()
        woke: list[tuple[str, float]] = []
        sleep = sleeper(clock, woke)

        async def main() -> None:
            await asyncio.gather(sleep("long", 2.0 * n), sleep("short", float(n)))

        asyncio.run(main())
        results[n] = woke

    threads = [threading.Thread(target=run, args=(n,)) for n in (1, 2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {n: [("short", float(n)), ("long", 2.0 * n)] for n in (1, 2, 3)}


def test_one_clock_serves_one_loop_after_another(clock: ManualClock) -> None:
    woke: list[tuple[str, float]] = []
    sleep = sleeper(clock, woke)
    loops: list[asyncio.AbstractEventLoop] = []

    async def run(name: str) -> None:
        loops.append(asyncio.get_running_loop())
        await sleep(name, 1.0)

    asyncio.run(run("first run"))
    asyncio.run(run("second run"))
    assert woke == [("first run", 1.0), ("second run", 2.0)]
    assert not set(loops) & set(_clock._jumpers)  # each jumper stopped with its last sleeper


async def test_loops_without_a_visible_ready_queue_jump_after_quiet_turns(
    clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvloop and other loops do not show their ready queue: the fallback still wakes
    concurrent sleepers in deadline order."""
    monkeypatch.setattr(_clock, "_ready_queue", lambda loop: None)
    woke: list[tuple[str, float]] = []
    sleep = sleeper(clock, woke)
    await asyncio.gather(sleep("five", 5.0), sleep("five again", 5.0), sleep("one", 1.0))
    assert woke == [("one", 1.0), ("five", 5.0), ("five again", 5.0)]
