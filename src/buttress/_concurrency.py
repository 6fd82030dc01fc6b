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
from types import TracebackType
from typing import Any, TypeAlias, TypeGuard, TypeVar

from ._scheduler import AsyncScheduler, Scheduler

__all__ = [
    "ACell",
    "ALock",
    "Cell",
    "ExcInfo",
    "Lock",
    "acall",
    "acurrent_owner",
    "aspawn",
    "call",
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

Lock = threading.Lock


class ALock:
    """No lock at all: an asyncio pool lives on one event loop and never awaits while holding
    its "lock", so its critical sections cannot interleave. Kept so both shells read alike."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# -- one waiter's wake-up cell ------------------------------------------------------------------


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
    """A scheduler job calling a bound method without keeping its object alive."""
    ref = weakref.WeakMethod(method)

    def job() -> T | None:
        fn = ref()
        return None if fn is None else fn()

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
