"""Time, injected.

Every component takes ``clock=``. Production code uses :class:`SystemClock`; tests use
:class:`ManualClock`, which moves only when told to, so no test waits for a state change.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import threading
import time as _time
from collections import deque
from typing import Any, Protocol, runtime_checkable

from ._validate import is_finite

__all__ = ["Clock", "ManualClock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """What buttress needs from a clock.

    ``monotonic()`` drives every timer and window (seconds, arbitrary origin); ``time()`` is
    wall-clock time for reports. ``sleep``/``asleep`` are how waiting shells wait, so a manual
    clock can make waits instant.
    """

    def monotonic(self) -> float: ...

    def time(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...

    async def asleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock: :func:`time.monotonic`, :func:`time.time` and real sleeps."""

    __slots__ = ()

    # Bound straight to the C functions: the breaker's hot path reads the clock once per call.
    monotonic = staticmethod(_time.monotonic)
    time = staticmethod(_time.time)
    sleep = staticmethod(_time.sleep)

    async def asleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"


# A sleeper: its deadline, its place among sleepers with the same deadline, and the future
# its task awaits. Sorted by the first two; the sequence number is unique, so futures are never
# compared.
_Sleeper = tuple[float, int, asyncio.Future[None]]


class ManualClock:
    """A clock that moves only when told to, or when every task waits for it.

    ``advance()`` and ``set()`` move it. ``asleep(seconds)`` behaves like trio's
    ``MockClock(autojump_threshold=0)``: the sleeper waits for the deadline ``now + seconds``;
    when its event loop has nothing else to run, the clock jumps to the earliest deadline of
    all its sleepers and wakes those due then, in the order they went to sleep. So sleeps of 5,
    5 and 1 s started together wake at 1, 5 and 5, and code that waits for room or for a
    timeout runs instantly and deterministically. ``advance()`` and ``set()``, from any
    thread, wake every sleeper whose deadline they pass.

    The jump waits for the loop to be idle, so a task that polls with ``await
    asyncio.sleep(0)`` until a sleeper has woken keeps the clock still for ever, as it would
    under trio: await the sleeper (or an event it sets) instead, or move the clock yourself.
    Tasks waiting on real I/O or on a thread count as idle: the clock does not wait for them.
    A clock whose sleepers sit on several loops jumps whenever one of those loops is idle.

    ``sleep(seconds)`` (for threads) cannot wait for anyone: it advances the clock at once,
    which is exact while a single thread uses the clock.

    >>> clock = ManualClock()
    >>> clock.advance(1.5)
    >>> clock.monotonic()
    1.5
    """

    __slots__ = ("_deadlines", "_lock", "_now", "_order", "_sleeping_on", "_wall_origin")

    def __init__(self, start: float = 0.0, *, wall: float = 1_767_225_600.0) -> None:
        # ``wall`` defaults to 2026-01-01T00:00:00Z so reports made under test are stable.
        for name, value in (("start", start), ("wall", wall)):
            if not is_finite(value):
                raise ValueError(f"ManualClock: {name} must be a finite number, got {value!r}")
        self._now = float(start)
        self._wall_origin = float(wall) - float(start)
        self._lock = threading.Lock()
        self._deadlines: list[_Sleeper] = []  # the sleepers, a heap: the earliest deadline first
        self._order = itertools.count()
        # How many sleepers wait on each loop: the loop's jumper stops watching at zero.
        self._sleeping_on: dict[asyncio.AbstractEventLoop, int] = {}

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._wall_origin + self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (which must not be negative)."""
        if not is_finite(seconds) or seconds < 0:
            raise ValueError(
                f"ManualClock.advance: seconds must be a finite number >= 0, got {seconds!r}"
            )
        with self._lock:
            self._now += seconds
            self._wake_due()

    def set(self, now: float) -> None:
        """Jump to the monotonic time ``now`` (never backwards)."""
        if not is_finite(now):
            raise ValueError(f"ManualClock.set: now must be a finite number, got {now!r}")
        with self._lock:
            if now < self._now:
                raise ValueError(f"ManualClock.set: time cannot go back from {self._now} to {now}")
            self._now = float(now)
            self._wake_due()

    def sleep(self, seconds: float) -> None:
        """Advance the clock by ``seconds`` at once, waking the async sleepers now due.

        A thread cannot wait for other threads to be idle, so this is exact only while one
        thread uses the clock: two threads sleeping 5 s together move it 10 s.
        """
        self.advance(max(0.0, seconds))

    async def asleep(self, seconds: float) -> None:
        """Wait until the clock reaches ``now + seconds`` (see the class docstring).

        ``seconds <= 0`` still yields to the loop once, as a real sleep would. An infinite
        sleep never ends by itself; cancelling it (as any sleep) removes the sleeper.
        """
        loop = asyncio.get_running_loop()
        if not seconds > 0:  # also NaN
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = loop.create_future()
        if seconds == math.inf:
            await future  # nothing wakes it: only cancellation ends it
            return
        with self._lock:
            deadline = self._now + seconds
            # Too short to move a float this large: due now, like a sleep of zero.
            due = deadline <= self._now
            sleeper = (deadline, next(self._order), future)
            if not due:
                heapq.heappush(self._deadlines, sleeper)
                self._sleeping_on[loop] = self._sleeping_on.get(loop, 0) + 1
        if due:
            await asyncio.sleep(0)
            return
        _jumper_for(loop).watch(self)
        try:
            await future
        finally:
            if future.cancelled() or not future.done():  # it left without being woken
                self._forget(sleeper)

    def _jump(self, loop: asyncio.AbstractEventLoop) -> bool:
        """``loop`` is idle (its jumper says): jump to the earliest deadline, wake who is due.

        Returns whether sleepers are left on ``loop``, for the jumper to keep watching.
        """
        with self._lock:
            self._drop_gone()
            if loop not in self._sleeping_on:
                return False  # woken meanwhile (advance): nothing here to jump for
            self._now = max(self._now, self._deadlines[0][0])
            self._wake_due()
            return loop in self._sleeping_on

    def _wake_due(self) -> None:
        """Wake, in deadline order, every sleeper the clock has reached (lock held)."""
        sleepers = self._deadlines
        while sleepers and sleepers[0][0] <= self._now:
            future = heapq.heappop(sleepers)[2]
            loop = future.get_loop()
            self._count_out(loop)
            # The future belongs to its loop, which may run in another thread. A closed loop
            # raises RuntimeError: nobody waits there any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, future)

    def _drop_gone(self) -> None:
        """Drop sleepers that will never need waking from the top of the heap (lock held):
        cancelled ones whose task has not yet run to remove them, and those on closed loops.
        A later jump would otherwise stop at their deadlines."""
        sleepers = self._deadlines
        while sleepers:
            future = sleepers[0][2]
            if not (future.done() or future.get_loop().is_closed()):
                return
            heapq.heappop(sleepers)
            self._count_out(future.get_loop())

    def _forget(self, sleeper: _Sleeper) -> None:
        """A sleeper leaves before its time (it may be gone already: woken or dropped)."""
        with self._lock:
            try:
                self._deadlines.remove(sleeper)
            except ValueError:
                return
            heapq.heapify(self._deadlines)
            self._count_out(sleeper[2].get_loop())

    def _count_out(self, loop: asyncio.AbstractEventLoop) -> None:
        left = self._sleeping_on[loop] - 1
        if left:
            self._sleeping_on[loop] = left
        else:
            del self._sleeping_on[loop]

    def __repr__(self) -> str:
        # The sleepers show: a test that hangs on a clock that never jumps says who waits.
        sleepers = len(self._deadlines)
        return f"ManualClock(now={self._now!r}{f', sleepers={sleepers}' if sleepers else ''})"


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


# -- jumping when a loop is idle -----------------------------------------------------------------
#
# asyncio has no public way to ask whether a loop has anything left to run. The stdlib loops
# (every asyncio.BaseEventLoop) keep their runnable callbacks in the ``_ready`` deque, and a
# callback that finds it empty when it runs is the last thing the loop has to do: before running
# callbacks, each turn polls I/O without waiting (a callback is ready) and moves due timers in,
# and anything a callback schedules lands in ``_ready`` too. So the jumper is a callback that
# re-schedules itself with ``call_soon`` until it finds ``_ready`` empty, and only then jumps.
# While tasks are runnable it costs one callback per loop turn; it never keeps an idle loop
# spinning, since each jump wakes at least one sleeper and it stops when none is left. Reading
# ``_ready`` is private API: it is checked to be a deque before it is trusted, and a loop
# without one gets the approximation below.
#
# Loops that do not expose it (uvloop, ...) get an approximation: the loop counts as idle after
# _QUIET_TURNS turns in which no sleeper went to sleep on it and no jump happened. Tasks that
# only sleep and hand work to each other settle well within that; a task kept busy for longer
# (a chain of more awaits than that before it sleeps) may see the clock jump under it.
#
# One jumper per loop serves every ManualClock with sleepers there: jumpers of two clocks would
# each see the other in ``_ready`` and never find the loop idle.

_QUIET_TURNS = 8


def _ready_queue(loop: asyncio.AbstractEventLoop) -> deque[Any] | None:
    """The stdlib loop's queue of runnable callbacks; None when the loop has none we know."""
    ready = getattr(loop, "_ready", None) if isinstance(loop, asyncio.BaseEventLoop) else None
    return ready if isinstance(ready, deque) else None


class _Jumper:
    """Jumps the manual clocks that have sleepers on one event loop when that loop is idle.

    Created, scheduled and run on the loop's own thread only.
    """

    __slots__ = ("_clocks", "_loop", "_quiet", "_ready", "_scheduled", "_settled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._ready = _ready_queue(loop)
        self._clocks: dict[ManualClock, None] = {}  # an ordered set
        self._scheduled = False
        self._settled = True  # (fallback) no sleeper came since the last turn
        self._quiet = 0  # (fallback) turns in a row with nothing new

    def watch(self, clock: ManualClock) -> None:
        """``clock`` has a new sleeper on this loop."""
        self._clocks[clock] = None
        self._settled = False
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._turn)

    def _turn(self) -> None:
        self._scheduled = False
        if self._idle():
            self._quiet = 0
            for clock in list(self._clocks):
                if not clock._jump(self._loop):
                    del self._clocks[clock]
        if self._clocks:
            self._scheduled = True
            self._loop.call_soon(self._turn)
        else:
            _stop_jumper(self._loop, self)

    def _idle(self) -> bool:
        if self._ready is not None:
            return not self._ready
        if not self._settled:
            self._settled = True
            self._quiet = 0
            return False
        self._quiet += 1
        return self._quiet >= _QUIET_TURNS


_jumpers: dict[asyncio.AbstractEventLoop, _Jumper] = {}
_jumpers_lock = threading.Lock()  # loops in several threads share the registry


def _jumper_for(loop: asyncio.AbstractEventLoop) -> _Jumper:
    with _jumpers_lock:
        jumper = _jumpers.get(loop)
        if jumper is None:
            # A loop closed while its jumper was scheduled never ran it to the end.
            for closed in [other for other in _jumpers if other.is_closed()]:
                del _jumpers[closed]
            jumper = _jumpers[loop] = _Jumper(loop)
        return jumper


def _stop_jumper(loop: asyncio.AbstractEventLoop, jumper: _Jumper) -> None:
    with _jumpers_lock:
        if _jumpers.get(loop) is jumper:
            del _jumpers[loop]
