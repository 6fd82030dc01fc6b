"""The sync/async primitive pairs that generated code switches between.

``tools/async_to_sync.py`` turns ``*_async.py`` modules into their sync twins by renaming
(``ACell`` → ``Cell``, ``acall`` → ``call``, ``AsyncScheduler`` → ``Scheduler``, ...) and
dropping ``async``/``await``. Every real difference between the two worlds lives here, in pairs
with the same interface, so the transform never has to understand code.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from time import monotonic as _monotonic
from types import TracebackType
from typing import Any, TypeAlias, TypeGuard, TypeVar

from ._clock import Clock
from ._fork import fork_safe_lock
from ._scheduler import WORKERS, AsyncScheduler, Scheduler

__all__ = [
    "ACell",
    "ALock",
    "Cell",
    "ExcInfo",
    "Lock",
    "Stragglers",
    "acall",
    "acall_within",
    "acurrent_owner",
    "aspawn",
    "call",
    "call_within",
    "current_owner",
    "is_async_callable",
    "owner_alive",
    "spawn",
    "stop_nowait",
    "weak_job",
]

T = TypeVar("T")

ExcInfo: TypeAlias = tuple[type[BaseException] | None, BaseException | None, TracebackType | None]
"""What a context manager's exit receives: ``def __exit__(self, *exc_info: Unpack[ExcInfo])``."""

# -- mutual exclusion --------------------------------------------------------------------------

# A pool's lock; a forked child gets it back unlocked (a thread holding it did not come along).
Lock = fork_safe_lock


class ALock:
    """No lock at all: an asyncio pool lives on one event loop and never awaits while holding
    its "lock", so its critical sections cannot interleave. Kept so both shells read alike."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# -- one waiter's wake-up cell ------------------------------------------------------------------

CLOCK_POLL = 0.005
"""How often (real seconds) a wait on a clock other than the system's looks again whether the
real work it waits for (a connect) is still under way."""


class Cell:
    """A thread waits on its own raw lock; the pool releases it to hand over. Never a Condition,
    which is slow and lets newcomers barge past the woken thread."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def wait(self, timeout: float | None) -> bool:
        """True when woken, False on timeout. A timeout beyond what the platform can wait
        (``threading.TIMEOUT_MAX``, some 292 years) waits for ever."""
        if timeout is None or timeout > threading.TIMEOUT_MAX:
            return self._lock.acquire()
        return self._lock.acquire(timeout=max(timeout, 0.0))

    def wait_on_clock(self, clock: Clock, deadline: float, busy: Callable[[], bool]) -> bool:
        """:meth:`wait` until ``clock`` reaches ``deadline``, for a clock other than the
        system's (a :class:`~buttress.ManualClock`): the wait ends as soon as the clock is
        moved there (by any thread), looked at every :data:`CLOCK_POLL` seconds. A thread
        cannot tell whether another will hand a member back in real time, so it never moves
        the clock itself, and what was left of the wait then still bounds it in real seconds,
        as on the system clock. (``busy`` is the asyncio twin's.)"""
        real_deadline = _monotonic() + (deadline - clock.monotonic())
        while True:
            left = real_deadline - _monotonic()
            if clock.monotonic() >= deadline or left <= 0:
                return self._lock.acquire(blocking=False)
            if self._lock.acquire(timeout=min(CLOCK_POLL, left)):
                return True

    def wake(self) -> bool:
        """Wake the waiter; always reaches a thread (a late one finds its member passed on)."""
        self._lock.release()
        return True

    def timed_out(self) -> bool:
        return False  # wake() never fails for a thread


class ACell:
    """A task waits on its own future; the pool resolves it to hand over."""

    __slots__ = ("_future",)

    def __init__(self) -> None:
        self._future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    async def wait(self, timeout: float | None) -> bool:
        """True when woken, False on timeout; cancellation propagates."""
        future = self._future
        if timeout is None:
            return await future
        # One timer handle, cheaper than asyncio.timeout() on this path.
        timer = future.get_loop().call_later(max(timeout, 0.0), _expire, future)
        try:
            return await future
        finally:
            timer.cancel()

    async def wait_on_clock(self, clock: Clock, deadline: float, busy: Callable[[], bool]) -> bool:
        """:meth:`wait` until ``clock`` reaches ``deadline``, for a clock other than the
        system's: the task sleeps on the clock (a :class:`~buttress.ManualClock` jumps there
        once the loop has nothing else to run; a handover wakes it first), except while
        ``busy()`` (a connect running in a thread, timed by no clock), when it waits in real
        time, looking again every :data:`CLOCK_POLL` seconds. Cancellation propagates."""
        future = self._future
        try:
            while not future.done():
                left = deadline - clock.monotonic()
                if left <= 0:
                    future.set_result(False)  # as a timeout: a late wake() finds it done
                    break
                if busy():
                    await asyncio.wait((future,), timeout=CLOCK_POLL)
                    continue
                sleeper = asyncio.ensure_future(clock.asleep(left))
                try:
                    await asyncio.wait((future, sleeper), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    sleeper.cancel()
        except BaseException:
            future.cancel()  # as when the future itself is awaited and cancelled
            raise
        return future.result()

    def wake(self) -> bool:
        """Wake the waiter; False when it is already gone (timed out or cancelled)."""
        if self._future.done():
            return False
        self._future.set_result(True)
        return True

    def timed_out(self) -> bool:
        """After a failed wake: whether the waiter gave up by timeout (else: cancelled)."""
        f = self._future
        return f.done() and not f.cancelled() and f.result() is False


def _expire(future: asyncio.Future[bool]) -> None:
    if not future.done():
        future.set_result(False)


# -- who holds a member ------------------------------------------------------------------------

current_owner: Callable[[], Any] = threading.current_thread
acurrent_owner: Callable[[], Any] = asyncio.current_task


def owner_alive(owner: Any) -> bool:
    """Whether the thread or task that took a member can still return it."""
    if owner is None:
        return True
    if isinstance(owner, threading.Thread):
        return owner.is_alive()
    return not owner.done()


# -- calling user code -------------------------------------------------------------------------


def call(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


async def acall(fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn``; await what it returns when that is awaitable (sync or async callbacks)."""
    result = fn(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


class Stragglers:
    """Calls given up at their deadline that still run, and what becomes of what they return.

    Only threads straggle: a thread cannot be stopped, so :func:`call_within` leaves it to
    finish and hands a value it returns late to ``dispose`` (a connection nobody waits for any
    more: close it). A task is cancelled at its deadline instead (:func:`acall_within`), so the
    asyncio side never counts any.
    """

    __slots__ = ("_lock", "count", "dispose")

    def __init__(self, dispose: Callable[[Any], Any] | None = None) -> None:
        self.dispose = dispose
        self.count = 0
        self._lock = fork_safe_lock()

    def left(self) -> None:
        with self._lock:
            self.count += 1

    def returned(self, value: Any, error: BaseException | None) -> None:
        with self._lock:
            self.count -= 1
        if error is None and self.dispose is not None:
            self.dispose(value)

    def forget(self) -> None:
        """In a forked child: the straggling threads are the parent's."""
        self.count = 0


class _Errand:
    """One call run in a worker thread for a caller who waits for it until a deadline."""

    __slots__ = ("abandoned", "args", "done", "error", "fn", "lock", "stragglers", "value")

    def __init__(
        self, fn: Callable[..., Any], args: tuple[Any, ...], stragglers: Stragglers | None
    ) -> None:
        self.fn = fn
        self.args = args
        self.stragglers = stragglers
        self.value: Any = None
        self.error: BaseException | None = None
        self.abandoned = False
        self.lock = threading.Lock()
        self.done = threading.Lock()  # released when the call has returned
        self.done.acquire()

    def run(self) -> None:
        value: Any = None
        error: BaseException | None = None
        try:
            value = self.fn(*self.args)
        except BaseException as exc:  # handed to the caller, who raises it
            error = exc
        with self.lock:
            self.value, self.error = value, error
            late = self.abandoned
            self.done.release()
        self.fn = self.args = None  # type: ignore[assignment]  # nothing kept alive by a stray
        if late and self.stragglers is not None:
            self.stragglers.returned(value, error)

    def give_up(self) -> bool:
        """The caller stops waiting; False if the call has returned meanwhile."""
        with self.lock:
            if self.done.acquire(blocking=False):
                self.done.release()
                return False
            self.abandoned = True
        if self.stragglers is not None:
            self.stragglers.left()
        return True


def call_within(
    timeout: float | None,
    what: str,
    fn: Callable[..., T],
    *args: Any,
    stragglers: Stragglers | None = None,
) -> T:
    """``fn(*args)``, given up after ``timeout`` seconds: then ``TimeoutError``.

    With a timeout, the call runs in a worker thread and this thread waits for it; a call
    that outlives its deadline runs on, unwaited (``stragglers`` counts it and disposes of what
    it returns). ``None``: called here, waited for as long as it takes.
    """
    if timeout is None:
        return fn(*args)
    errand = _Errand(fn, args, stragglers)
    WORKERS.run(errand.run)
    try:
        finished = errand.done.acquire(timeout=min(max(timeout, 0.0), threading.TIMEOUT_MAX))
    except BaseException:
        errand.give_up()  # interrupted while waiting: nobody will collect it
        raise
    if not finished and errand.give_up():
        raise TimeoutError(f"{what} took longer than {timeout:g}s")
    if errand.error is not None:
        raise errand.error
    return errand.value  # type: ignore[no-any-return]


async def acall_within(
    timeout: float | None,
    what: str,
    fn: Callable[..., Any],
    *args: Any,
    stragglers: Stragglers | None = None,
) -> Any:
    """:func:`acall`, cancelled after ``timeout`` seconds: then ``TimeoutError``.

    A plain function runs on the loop and cannot be interrupted; ``stragglers`` is unused
    (a cancelled call does not run on). ``None``: no deadline.
    """
    if timeout is None:
        return await acall(fn, *args)
    deadline = asyncio.timeout(max(timeout, 0.0))
    try:
        async with deadline:
            return await acall(fn, *args)
    except TimeoutError:
        if deadline.expired():
            raise TimeoutError(f"{what} took longer than {timeout:g}s") from None
        raise  # fn's own


def is_async_callable(fn: object) -> TypeGuard[Callable[..., Awaitable[Any]]]:
    """Whether calling ``fn`` gives a coroutine: a coroutine function, a ``partial`` of one,
    or an object whose ``__call__`` is one (which ``inspect.iscoroutinefunction`` misses)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    call_method = getattr(type(fn), "__call__", None)  # noqa: B004 (the method, not callable())
    return not inspect.isroutine(fn) and inspect.iscoroutinefunction(call_method)


# -- background jobs ---------------------------------------------------------------------------


def weak_job(method: Callable[[], T]) -> Callable[[], T | None]:
    """A scheduler job calling a bound method without keeping its object alive.

    The object is held by a plain weak reference beside its method's function: a WeakMethod's
    callback can print an "Exception ignored" traceback at interpreter exit (Python 3.11)."""
    ref = weakref.ref(method.__self__)  # type: ignore[attr-defined]
    func = method.__func__  # type: ignore[attr-defined]

    def job() -> T | None:
        owner = ref()
        return None if owner is None else func(owner)

    job.__qualname__ = getattr(method, "__qualname__", "job")
    return job


def spawn(fn: Callable[[], Any], running: set[Any]) -> None:
    """Run ``fn()`` now, in this thread: the sync twin of :func:`aspawn` (``running`` unused)."""
    fn()


def aspawn(fn: Callable[[], Coroutine[Any, Any, Any]], running: set[Any]) -> None:
    """Run ``fn()`` in a new task of the running loop, without waiting for it.

    For work that must happen where nothing may be awaited (a cancellation on its way out) and
    no scheduler is left to run it. ``running`` holds the task until it ends (the loop keeps
    only weak references to tasks). Without a running loop, nothing is started.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    task = loop.create_task(fn())
    running.add(task)
    task.add_done_callback(running.discard)


def stop_nowait(scheduler: Scheduler | AsyncScheduler) -> None:
    """Stop a scheduler without waiting (safe in finalizers)."""
    if isinstance(scheduler, Scheduler):
        scheduler.close(wait=False)
    else:
        scheduler.close()
