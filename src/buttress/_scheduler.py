"""One place for background work: timed jobs run by one daemon thread or one asyncio task.

Components never start threads or timers of their own. Pool housekeeping, active health
checks and memory sampling are jobs on a scheduler: :class:`Scheduler` runs them on one daemon
thread, :class:`AsyncScheduler` on one task of the running event loop. An ``Infrastructure``
owns one of each kind and passes it to every component; a component built alone owns a
scheduler of its own and closes it when it closes.

Jobs are plain callables taking no argument (coroutine functions too, on the async
scheduler). They run one at a time, in deadline order; a job that raises is logged on the
``buttress.scheduler`` logger and the scheduler carries on.

Scheduling is safe from any thread and from finalizers (``__del__``, weakref callbacks): a
request is one put on a :class:`queue.SimpleQueue`, which never takes a lock a finalizer could
already hold.

``background=False`` makes a scheduler that runs nothing by itself: tests call
:meth:`Scheduler.run_due` to run what is due at the (manual) clock's current time.

>>> sched = Scheduler(background=False)
>>> seen = []
>>> handle = sched.call_later(0.0, lambda: seen.append("ran"))
>>> sched.run_due()
1
>>> seen
['ran']
"""

from __future__ import annotations

import asyncio
import heapq
import inspect
import itertools
import queue
import random
import threading
from collections.abc import Callable
from typing import Any, Final

from ._clock import Clock, SystemClock
from ._redact import redacted_logger

__all__ = ["AsyncScheduler", "Handle", "Scheduler"]

_log = redacted_logger("buttress.scheduler")

Job = Callable[[], Any]

_STOP: Final = object()
_INF: Final = float("inf")


class Handle:
    """A scheduled job; :meth:`cancel` stops it (a periodic job never runs again)."""

    __slots__ = ("cancelled", "deadline", "fn", "interval", "jitter", "seq")

    def __init__(
        self, fn: Job, deadline: float, interval: float | None, jitter: float, seq: int
    ) -> None:
        self.fn = fn
        self.deadline = deadline
        self.interval = interval
        self.jitter = jitter
        self.seq = seq
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def __lt__(self, other: Handle) -> bool:
        return (self.deadline, self.seq) < (other.deadline, other.seq)

    def __repr__(self) -> str:
        every = "" if self.interval is None else f" every={self.interval}"
        state = " cancelled" if self.cancelled else ""
        name = getattr(self.fn, "__qualname__", self.fn)
        return f"<Handle {name!r} at={self.deadline}{every}{state}>"


class _Timers:
    """The pure part: a heap of handles, fed from a thread-safe inbox. No I/O, no waiting."""

    def __init__(self, clock: Clock, rng: random.Random) -> None:
        self.clock = clock
        self.rng = rng
        self.inbox: queue.SimpleQueue[Handle | object] = queue.SimpleQueue()
        self.heap: list[Handle] = []
        self.seq = itertools.count()
        self.closed = False

    def new(self, fn: Job, delay: float, interval: float | None, jitter: float) -> Handle:
        if not callable(fn):
            raise TypeError(f"scheduler jobs must be callable, got {fn!r}")
        if not 0.0 <= delay < _INF:
            raise ValueError(f"delay must be a finite number of seconds >= 0, got {delay!r}")
        h = Handle(fn, self.clock.monotonic() + delay, interval, jitter, next(self.seq))
        if self.closed:
            h.cancelled = True
        else:
            self.inbox.put(h)
        return h

    def spread(self, interval: float, jitter: float) -> float:
        """``interval`` moved by up to ``± jitter`` of itself, uniformly."""
        if not jitter:
            return interval
        return interval * (1.0 + jitter * (2.0 * self.rng.random() - 1.0))

    def drain(self, msg: Handle | object | None = None) -> bool:
        """Move requests from the inbox to the heap; False once a stop request is seen."""
        while True:
            if msg is _STOP:
                # Put back: a run_due() from another thread may be what drained it, and the
                # background thread must still see it and end.
                self.inbox.put(_STOP)
                return False
            if isinstance(msg, Handle) and not msg.cancelled:
                heapq.heappush(self.heap, msg)
            try:
                msg = self.inbox.get_nowait()
            except queue.Empty:
                return True

    def next_deadline(self) -> float | None:
        heap = self.heap
        while heap and heap[0].cancelled:
            heapq.heappop(heap)
        return heap[0].deadline if heap else None

    def pop_due(self, now: float) -> list[Handle]:
        """The jobs due at ``now`` in deadline order; periodic ones are put back first."""
        due: list[Handle] = []
        heap = self.heap
        while heap and heap[0].deadline <= now:
            h = heapq.heappop(heap)
            if h.cancelled:
                continue
            due.append(h)
            if h.interval is not None:
                # Fixed rate from the planned time, restarted from now after falling behind.
                nxt = h.deadline + self.spread(h.interval, h.jitter)
                h.deadline = nxt if nxt > now else now + self.spread(h.interval, h.jitter)
                heapq.heappush(heap, h)
        return due


def _failed(h: Handle, exc: BaseException) -> None:
    _log.error("scheduled job %r raised; the scheduler carries on", h.fn, exc_info=exc)


class _Base:
    """What both schedulers share: the request API."""

    _timers: _Timers

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        name: str = "buttress-scheduler",
        background: bool = True,
    ) -> None:
        clock = clock if clock is not None else SystemClock()
        self._timers = _Timers(clock, rng if rng is not None else random.Random())
        self.name = name
        self._background = background
        self._setup()

    def _setup(self) -> None:
        raise NotImplementedError

    @property
    def clock(self) -> Clock:
        return self._timers.clock

    @property
    def closed(self) -> bool:
        return self._timers.closed

    def call_later(self, delay: float, fn: Job) -> Handle:
        """Run ``fn()`` once, ``delay`` seconds from now (0: as soon as possible)."""
        h = self._timers.new(fn, delay, None, 0.0)
        self._wake()
        return h

    def call_every(
        self, interval: float, fn: Job, *, jitter: float = 0.0, delay: float | None = None
    ) -> Handle:
        """Run ``fn()`` every ``interval`` seconds, each period moved by up to ``± jitter``.

        The first run is ``delay`` seconds from now (default: one jittered interval).
        """
        if not 0.0 < interval < _INF:
            raise ValueError(f"interval must be a finite number of seconds > 0, got {interval!r}")
        if not 0.0 <= jitter < 1.0:
            raise ValueError(f"jitter must be in [0, 1), got {jitter!r}")
        first = self._timers.spread(interval, jitter) if delay is None else delay
        h = self._timers.new(fn, first, interval, jitter)
        self._wake()
        return h

    def cancel(self, handle: Handle) -> None:
        """Stop a job; cancelling twice, or a job that already ran, does nothing."""
        handle.cancel()

    def _wake(self) -> None:
        raise NotImplementedError


class Scheduler(_Base):
    """Timed jobs on one daemon thread, started on first use and stopped by :meth:`close`.

    ``clock`` decides when a job is due (the thread waits in real time for that); ``rng``
    draws the jitter of periodic jobs. With ``background=False`` nothing runs until
    :meth:`run_due` is called.
    """

    def _setup(self) -> None:
        self._thread: threading.Thread | None = None
        # Reentrant: a finalizer may schedule (and so start) while this thread starts.
        self._start_lock = threading.RLock()
        # One runner at a time: the thread, or a test calling run_due().
        self._run_lock = threading.RLock()

    def _wake(self) -> None:
        # Put by _Timers.new already woke a waiting thread; start one if there is none yet.
        if self._background and self._thread is None and not self._timers.closed:
            self._start()

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None and not self._timers.closed:
                t = threading.Thread(target=self._loop, name=self.name, daemon=True)
                t.start()
                self._thread = t

    def _loop(self) -> None:
        t = self._timers
        msg: Handle | object | None = None
        while t.drain(msg):
            self.run_due()
            deadline = t.next_deadline()
            timeout = None if deadline is None else deadline - t.clock.monotonic()
            if timeout is not None and timeout > threading.TIMEOUT_MAX:
                timeout = threading.TIMEOUT_MAX  # a manual clock far ahead: wake and look again
            try:
                if timeout is None:
                    msg = t.inbox.get()
                elif timeout > 0.0:
                    msg = t.inbox.get(timeout=timeout)
                else:
                    msg = None
            except queue.Empty:
                msg = None

    def run_due(self) -> int:
        """Run every job due at the clock's current time; returns how many ran."""
        t = self._timers
        ran = 0
        with self._run_lock:
            if not t.drain():
                return 0
            for h in t.pop_due(t.clock.monotonic()):
                if h.cancelled or t.closed:
                    continue
                ran += 1
                try:
                    h.fn()
                except Exception as exc:
                    _failed(h, exc)
        return ran

    def close(self, *, wait: bool = True, timeout: float | None = 5.0) -> None:
        """Stop: pending jobs are dropped, a running one finishes. Idempotent.

        With ``wait`` (and when not called from a job), waits up to ``timeout`` seconds for
        the thread to end.
        """
        t = self._timers
        t.closed = True
        t.inbox.put(_STOP)
        thread = self._thread
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("running" if self._thread else "idle")
        return f"<Scheduler {self.name!r} {state}>"


class AsyncScheduler(_Base):
    """Timed jobs on one task of the running event loop; the asyncio twin of :class:`Scheduler`.

    Jobs may be coroutine functions (awaited) or plain callables (called on the loop, so they
    must not block). The task starts at the first request made while a loop runs; requests
    made before are kept for it. With ``background=False`` nothing runs until :meth:`run_due` is
    awaited.
    """

    def _setup(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

    def _wake(self) -> None:
        if not self._background or self._timers.closed:
            return
        loop = self._loop
        if loop is not None and (
            loop.is_closed() or (self._task is not None and self._task.done())
        ):
            loop = None  # that loop has ended (a second asyncio.run, a test's own loop): move on
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # no loop yet: the request waits in the inbox for the first start
            self._loop = loop
            self._event = asyncio.Event()
            self._task = loop.create_task(self._run(), name=self.name)
            return
        if not loop.is_closed():
            # Thread-safe and safe in finalizers: one deque append and a self-pipe write.
            loop.call_soon_threadsafe(self._set_event)

    def _set_event(self) -> None:
        if self._event is not None:
            self._event.set()

    async def _run(self) -> None:
        t = self._timers
        event = self._event
        assert event is not None
        while True:
            event.clear()
            if not t.drain():
                return
            await self.run_due()
            deadline = t.next_deadline()
            timeout = None if deadline is None else deadline - t.clock.monotonic()
            if timeout is not None and timeout <= 0.0:
                continue
            try:
                async with asyncio.timeout(timeout):
                    await event.wait()
            except TimeoutError:
                pass

    async def run_due(self) -> int:
        """Run (and await) every job due at the clock's current time; returns how many ran."""
        t = self._timers
        if not t.drain():
            return 0
        ran = 0
        for h in t.pop_due(t.clock.monotonic()):
            if h.cancelled or t.closed:
                continue
            ran += 1
            try:
                result = h.fn()
                if inspect.isawaitable(result):
                    await result
            except asyncio.CancelledError as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # we are being stopped
                _failed(h, exc)  # the job cancelled itself
            except Exception as exc:
                _failed(h, exc)
        return ran

    def close(self) -> None:
        """Stop without waiting: pending jobs are dropped, a running one is cancelled."""
        t = self._timers
        t.closed = True
        t.inbox.put(_STOP)
        task, loop = self._task, self._loop
        if task is None or loop is None or loop.is_closed() or task.done():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            task.cancel()
        else:
            loop.call_soon_threadsafe(task.cancel)

    async def aclose(self) -> None:
        """Stop and wait for the task to end. Idempotent."""
        self.close()
        task = self._task
        if task is not None and not task.done() and task is not asyncio.current_task():
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("running" if self._task else "idle")
        return f"<AsyncScheduler {self.name!r} {state}>"
