"""One place for background work: timed jobs, timed by one daemon thread or one asyncio task.

Components never start threads or timers of their own. Pool housekeeping, active health
checks and memory sampling are jobs on a scheduler: :class:`Scheduler` times them on one daemon
thread, :class:`AsyncScheduler` on one task of the running event loop. An ``Infrastructure``
owns one of each kind and passes it to every component; a component built alone owns a
scheduler of its own and closes it when it closes.

Jobs are plain callables taking no argument (coroutine functions too, on the async
scheduler). They run one at a time, in deadline order; a job that raises is logged on the
``buttress.scheduler`` logger and the scheduler carries on.

A job that may block (it connects, checks, closes, reads a file, calls user code) is given
``blocking=True``: the scheduler then only times it, and runs it elsewhere, in a worker thread
(:class:`Scheduler`) or a task of its own (:class:`AsyncScheduler`), so a job that hangs holds
up nothing else: no other job, no other pool, not :meth:`Scheduler.close`. A periodic blocking
job still running when it falls due again skips that turn. Worker threads are daemon threads,
kept a while for the next job (:data:`WORKERS`); nothing waits for a hung one.

A forked child keeps its schedulers' jobs, and gets them running again (see ``_fork.py``): a
thread does not survive a fork, so a thread scheduler that was running starts a new one there at
once; an asyncio one starts on the child's event loop at its first request from it.

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
import functools
import heapq
import inspect
import itertools
import math
import queue
import random
import threading
from collections.abc import Callable
from typing import Any, Final

from ._clock import Clock, SystemClock
from ._fork import call_in_forked_child, fork_safe_lock, fork_safe_rlock, reseed_in_child
from ._redact import redacted_logger

__all__ = ["WORKERS", "AsyncScheduler", "Handle", "Scheduler", "Workers"]

_log = redacted_logger("buttress.scheduler")

Job = Callable[[], Any]

_STOP: Final = object()
_INF: Final = float("inf")


class Handle:
    """A scheduled job; :meth:`cancel` stops it (a periodic job never runs again)."""

    __slots__ = ("blocking", "cancelled", "deadline", "fn", "interval", "jitter", "running", "seq")

    def __init__(
        self,
        fn: Job,
        deadline: float,
        interval: float | None,
        jitter: float,
        seq: int,
        blocking: bool = False,
    ) -> None:
        self.fn = fn
        self.deadline = deadline
        self.interval = interval
        self.jitter = jitter
        self.seq = seq
        self.blocking = blocking
        self.running = False  # a blocking job handed to a worker and not back yet
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def __lt__(self, other: Handle) -> bool:
        return (self.deadline, self.seq) < (other.deadline, other.seq)

    def __repr__(self) -> str:
        every = "" if self.interval is None else f" every={self.interval}"
        state = " blocking" if self.blocking else ""
        state += " cancelled" if self.cancelled else ""
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

    def new(
        self, fn: Job, delay: float, interval: float | None, jitter: float, blocking: bool
    ) -> Handle:
        if not callable(fn):
            raise TypeError(f"scheduler jobs must be callable, got {fn!r}")
        if not 0.0 <= delay < _INF:
            raise ValueError(f"delay must be a finite number of seconds >= 0, got {delay!r}")
        h = Handle(fn, self.clock.monotonic() + delay, interval, jitter, next(self.seq), blocking)
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

    def pop_due(self, now: float) -> Handle | None:
        """The next job due at ``now`` (deadline order), or None; a periodic one stays.

        One at a time, and a periodic job is moved to its next time in one step (never out
        of the heap): a fork while another thread is here loses no job in the child.
        """
        heap = self.heap
        while heap and heap[0].deadline <= now:
            h = heap[0]
            if h.cancelled:
                heapq.heappop(heap)
                continue
            if h.interval is None:
                heapq.heappop(heap)
                return h
            # Fixed rate from the planned time, restarted from now after falling behind;
            # always after now, so one run_due() runs it once.
            nxt = h.deadline + self.spread(h.interval, h.jitter)
            if nxt <= now:
                nxt = max(now + self.spread(h.interval, h.jitter), math.nextafter(now, _INF))
            h.deadline = nxt
            heapq.heapreplace(heap, h)
            return h
        return None

    def after_fork(self) -> None:
        """In a forked child: a new inbox (the old one may be mid-wait), with what it held;
        no job is running here, whatever the parent's workers were doing."""
        old, self.inbox = self.inbox, queue.SimpleQueue()
        while True:
            try:
                self.inbox.put(old.get_nowait())
            except queue.Empty:
                break
        for h in self.heap:
            h.running = False


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
        call_in_forked_child(self._after_fork)

    def _setup(self) -> None:
        raise NotImplementedError

    def _after_fork(self) -> None:
        t = self._timers
        t.after_fork()
        reseed_in_child(t.rng)  # siblings forked from one parent would draw the same jitter

    @property
    def clock(self) -> Clock:
        return self._timers.clock

    @property
    def closed(self) -> bool:
        return self._timers.closed

    def call_later(self, delay: float, fn: Job, *, blocking: bool = False) -> Handle:
        """Run ``fn()`` once, ``delay`` seconds from now (0: as soon as possible).

        ``blocking``: ``fn`` may block; it runs off the scheduler (see the module docstring).
        """
        h = self._timers.new(fn, delay, None, 0.0, blocking)
        self._wake()
        return h

    def call_every(
        self,
        interval: float,
        fn: Job,
        *,
        jitter: float = 0.0,
        delay: float | None = None,
        blocking: bool = False,
    ) -> Handle:
        """Run ``fn()`` every ``interval`` seconds, each period moved by up to ``± jitter``.

        The first run is ``delay`` seconds from now (default: one jittered interval).
        ``blocking``: ``fn`` may block; it runs off the scheduler, and a run still going when
        the next falls due skips that one.
        """
        if not 0.0 < interval < _INF:
            raise ValueError(f"interval must be a finite number of seconds > 0, got {interval!r}")
        if not 0.0 <= jitter < 1.0:
            raise ValueError(f"jitter must be in [0, 1), got {jitter!r}")
        first = self._timers.spread(interval, jitter) if delay is None else delay
        h = self._timers.new(fn, first, interval, jitter, blocking)
        self._wake()
        return h

    def cancel(self, handle: Handle) -> None:
        """Stop a job; cancelling twice, or a job that already ran, does nothing."""
        handle.cancel()

    def _wake(self) -> None:
        raise NotImplementedError


class Workers:
    """Daemon threads for blocking work: one per call in flight, each kept a while for the next.

    A thread left idle for ``idle_exit`` seconds ends. Nothing ever waits for a worker: a call
    that hangs keeps its thread, and only that one. (Not a ``ThreadPoolExecutor``: the
    interpreter joins its threads at exit, so one hung call would hang the exit.)
    """

    def __init__(self, name: str = "buttress-worker", idle_exit: float = 30.0) -> None:
        self.name = name
        self.idle_exit = idle_exit
        self._lock = fork_safe_lock()
        self._idle: list[queue.SimpleQueue[Job]] = []  # the waiting threads' inboxes
        self._count = itertools.count(1)
        call_in_forked_child(self._after_fork)

    def run(self, fn: Job) -> None:
        """Call ``fn()`` in a worker thread, now; what it raises is logged."""
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
        if inbox is None:
            inbox = queue.SimpleQueue()
            thread = threading.Thread(
                target=self._serve, args=(inbox,), name=f"{self.name}-{next(self._count)}"
            )
            thread.daemon = True
            inbox.put(fn)
            thread.start()
        else:
            inbox.put(fn)

    def _serve(self, inbox: queue.SimpleQueue[Job]) -> None:
        while True:
            try:
                fn = inbox.get(timeout=self.idle_exit)
            except queue.Empty:
                with self._lock:
                    if any(q is inbox for q in self._idle):
                        self._idle[:] = [q for q in self._idle if q is not inbox]
                        return
                continue  # taken for a call just now: it is on its way
            try:
                fn()
            except BaseException as exc:  # a worker outlives what it runs
                _log.error("blocking job %r raised", fn, exc_info=exc)
            del fn
            with self._lock:
                self._idle.append(inbox)

    def _after_fork(self) -> None:
        self._idle = []  # those threads are the parent's


WORKERS: Final = Workers()
"""The workers every scheduler and pool of the process share."""


class Scheduler(_Base):
    """Timed jobs on one daemon thread, started on first use and stopped by :meth:`close`.

    ``clock`` decides when a job is due (the thread waits in real time for that); ``rng``
    draws the jitter of periodic jobs. With ``background=False`` nothing runs until
    :meth:`run_due` is called, which runs every due job in the calling thread, blocking ones
    too.
    """

    def _setup(self) -> None:
        self._thread: threading.Thread | None = None
        # Reentrant: a finalizer may schedule (and so start) while this thread starts.
        self._start_lock = fork_safe_rlock()
        # One runner at a time: the thread, or a test calling run_due().
        self._run_lock = fork_safe_rlock()
        # Blocking jobs out with the workers, and a way to wait for them (tests).
        self._busy = 0
        self._idle = threading.Condition(fork_safe_lock())

    def _after_fork(self) -> None:
        super()._after_fork()
        self._busy = 0
        self._idle = threading.Condition(fork_safe_lock())
        t = self._timers
        was_running, self._thread = self._thread is not None, None
        if was_running and self._background and not t.closed:
            self._start()  # its periodic jobs are the child's too

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
            self._run_due(dispatch=True)
            deadline = t.next_deadline()
            timeout = None if deadline is None else deadline - t.clock.monotonic()
            if timeout is not None and timeout > threading.TIMEOUT_MAX:
                timeout = threading.TIMEOUT_MAX  # a manual clock far ahead: wake and look again
            inbox = t.inbox  # read again each time: a forked child has a new one
            try:
                if timeout is None:
                    msg = inbox.get()
                elif timeout > 0.0:
                    msg = inbox.get(timeout=timeout)
                else:
                    msg = None
            except queue.Empty:
                msg = None

    def run_due(self) -> int:
        """Run every job due at the clock's current time, here; returns how many ran."""
        return self._run_due(dispatch=False)

    def _run_due(self, *, dispatch: bool) -> int:
        t = self._timers
        ran = 0
        with self._run_lock:
            if not t.drain():
                return 0
            now = t.clock.monotonic()
            while not t.closed:
                h = t.pop_due(now)
                if h is None:
                    break
                if dispatch and h.blocking:
                    if h.running:
                        continue  # its last run is still going: skip this turn
                    self._hand_over(h)
                    ran += 1
                    continue
                ran += 1
                try:
                    h.fn()
                except Exception as exc:
                    _failed(h, exc)
        return ran

    def _hand_over(self, h: Handle) -> None:
        h.running = True
        with self._idle:
            self._busy += 1
        WORKERS.run(functools.partial(self._run_blocking, h, self._idle))

    def _run_blocking(self, h: Handle, idle: threading.Condition) -> None:
        try:
            if not (h.cancelled or self._timers.closed):
                h.fn()
        except Exception as exc:
            _failed(h, exc)
        finally:
            h.running = False
            with idle:
                if idle is self._idle:  # not a parent's, across a fork
                    self._busy -= 1
                    idle.notify_all()

    def _join_blocking(self, timeout: float | None = None) -> bool:
        """Wait until no blocking job is out with a worker; False on timeout (tests)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout)

    def close(self, *, wait: bool = True, timeout: float | None = 5.0) -> None:
        """Stop: pending jobs are dropped, a running one finishes. Idempotent.

        With ``wait`` (and when not called from a job), waits up to ``timeout`` seconds for
        the thread to end. Blocking jobs already out with workers are never waited for.
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
    must not block). A blocking job runs in a task of its own, so its waits hold up no other
    job (a plain callable still runs on the loop, which it blocks). The task starts at the
    first request made while a loop runs; requests made before are kept for it. With
    ``background=False`` nothing runs until :meth:`run_due` is awaited, which awaits every due
    job, blocking ones too.
    """

    def _setup(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._jobs: set[asyncio.Task[None]] = set()  # blocking jobs running in tasks of their own

    def _after_fork(self) -> None:
        super()._after_fork()
        # The parent's loop is not this process's: start on the child's, at its first request.
        self._task = self._loop = self._event = None
        self._jobs = set()

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
            await self._run_due(dispatch=True)
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
        return await self._run_due(dispatch=False)

    async def _run_due(self, *, dispatch: bool) -> int:
        t = self._timers
        if not t.drain():
            return 0
        ran = 0
        now = t.clock.monotonic()
        while not t.closed:
            h = t.pop_due(now)
            if h is None:
                break
            if dispatch and h.blocking:
                if h.running:
                    continue  # its last run is still going: skip this turn
                h.running = True
                task = asyncio.get_running_loop().create_task(self._run_blocking(h))
                self._jobs.add(task)
                task.add_done_callback(self._jobs.discard)
                ran += 1
                continue
            ran += 1
            await self._run_one(h)
        return ran

    async def _run_one(self, h: Handle) -> None:
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

    async def _run_blocking(self, h: Handle) -> None:
        try:
            if not (h.cancelled or self._timers.closed):
                await self._run_one(h)
        finally:
            h.running = False

    async def _join_blocking(self) -> None:
        """Wait until no blocking job's task is running (tests)."""
        while self._jobs:
            await asyncio.wait(set(self._jobs))

    def close(self) -> None:
        """Stop without waiting: pending jobs are dropped, running ones are cancelled."""
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
            self._cancel()
        else:
            loop.call_soon_threadsafe(self._cancel)

    def _cancel(self) -> None:
        for task in (self._task, *self._jobs):
            if task is not None:
                task.cancel()

    async def aclose(self) -> None:
        """Stop and wait for the task (and the blocking jobs' tasks) to end. Idempotent."""
        self.close()
        current = asyncio.current_task()
        for task in (self._task, *self._jobs):
            if task is None or task.done() or task is current:
                continue
            try:
                await task
            except asyncio.CancelledError:
                if current is not None and current.cancelling():
                    raise

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("running" if self._task else "idle")
        return f"<AsyncScheduler {self.name!r} {state}>"
