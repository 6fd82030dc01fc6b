"""The bulkhead's shell: waits for a place, for threads and asyncio tasks alike, around the pure
:class:`~buttress._bulkhead._core.BulkheadState` (which decides who enters and who is served).

One object serves both worlds: its lock is a thread lock held only for a decision (never
across a wait), a thread waits on a lock of its own and a task on a future of its own, and a
place freed by a thread for a task (or the other way round) is handed over under the lock and
the waiter woken on its own loop. So a bulkhead shared by a thread pool and an event loop caps
them together.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any, Final, ParamSpec, TypeVar

from .. import events
from .._clock import Clock, SystemClock
from .._concurrency import ACell, Cell, Lock
from .._errors import BulkheadFullError, CircuitOpenError, ConfigError, RejectedError
from .._policies import remaining
from .._validate import int_between, timeout_or_none
from ._core import SERVED, BulkheadState, Limit, Waiter

__all__ = ["Bulkhead", "BulkheadPermit", "BulkheadSnapshot", "outcome_of"]

P = ParamSpec("P")
T = TypeVar("T")

EV_REJECTED = ("buttress", "bulkhead", "rejected")

# A bulkhead's places and queue are counted in a machine's memory; a typo must not ask for
# billions.
MAX_PLACES: Final = 1_000_000


def outcome_of(exc: BaseException | None) -> str:
    """How a call that held a place ended, for the service-time estimate and an adaptive
    limit: ``"success"``; ``"dropped"`` when it timed out, or was refused further on for
    overload (a rate limit, a shed, a full pool or bulkhead: the dependency has no room);
    ``"ignored"`` when it says nothing of the dependency's latency (cancelled, failed fast
    with an error, refused by an open breaker)."""
    if exc is None:
        return "success"
    if isinstance(exc, TimeoutError):
        return "dropped"
    if isinstance(exc, RejectedError):
        return "ignored" if isinstance(exc, CircuitOpenError) else "dropped"
    return "ignored"


@dataclass(frozen=True, slots=True)
class BulkheadSnapshot:
    """A bulkhead at one moment: its limit, the places in use and the queue; counts since it
    was made (``admitted`` includes ``waited``: the callers that entered after queueing);
    ``service_time`` the recent mean seconds a call held a place (``None`` before the first).
    ``adaptive`` is the adaptive limit's own snapshot as a dict, ``None`` for a fixed one."""

    name: str
    limit: int
    in_use: int
    waiting: int
    max_waiting: int
    wait_timeout: float | None
    admitted: int
    waited: int
    rejected: int
    timed_out: int
    peak_in_use: int
    service_time: float | None
    adaptive: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class BulkheadPermit:
    """A place held in a bulkhead; :meth:`release` gives it back (once; again does nothing).

    ``started`` is when it was taken (the bulkhead's clock), ``inflight`` the places in use
    then, itself included: an adaptive limit's sample is (time held, inflight, dropped)."""

    __slots__ = ("_bulkhead", "inflight", "released", "started")

    def __init__(self, bulkhead: Bulkhead, started: float, inflight: int) -> None:
        self._bulkhead = bulkhead
        self.started = started
        self.inflight = inflight
        self.released = False

    def release(self, exc: BaseException | None = None, *, outcome: str | None = None) -> None:
        """Give the place back. ``exc`` is what the call raised (``None``: it succeeded), which
        :func:`outcome_of` reads; ``outcome`` says it outright."""
        if self.released:
            return
        self.released = True
        if outcome is None:
            outcome = "success" if exc is None else outcome_of(exc)
        self._bulkhead._leave(self.started, self.inflight, outcome)

    def __enter__(self) -> BulkheadPermit:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release(exc_info[1] if isinstance(exc_info[1], BaseException) else None)

    async def __aenter__(self) -> BulkheadPermit:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.release(exc_info[1] if isinstance(exc_info[1], BaseException) else None)

    def __repr__(self) -> str:
        state = "released" if self.released else "held"
        return f"<BulkheadPermit of bulkhead {self._bulkhead.name!r} {state}>"


class Bulkhead:
    """A cap on calls in flight: at most ``max_concurrent`` at once (or an adaptive
    ``limit``, :class:`~buttress.AdaptiveConcurrency`); up to ``max_waiting`` more queue, in
    order (FIFO), each for at most ``wait_timeout`` seconds (``None``: as long as it takes)
    and never past the current call's deadline (:func:`~buttress.remaining`). A caller with
    no place raises :class:`~buttress.BulkheadFullError`.

    >>> search = bt.Bulkhead("search", max_concurrent=20, max_waiting=50, wait_timeout=0.5)
    >>> with search:           # threads; `async with search:` in a coroutine
    ...     pass
    >>> search.call(len, "abc")
    3

    Threads and tasks share one bulkhead; a cancelled or failing call always gives its place
    back; a place that frees goes to the first waiter, never to a caller that came later.
    ``try_enter()`` takes a place without waiting or raising (``None`` when full).
    """

    def __init__(
        self,
        name: str,
        max_concurrent: int | None = None,
        *,
        limit: Limit | None = None,
        max_waiting: int = 0,
        wait_timeout: float | None = 0.0,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError("name", f"must be a non-empty str, got {name!r}")
        if (max_concurrent is None) == (limit is None):
            raise ConfigError(
                "max_concurrent",
                "give max_concurrent (a fixed cap) or limit (an AdaptiveConcurrency), not "
                + ("both" if limit is not None else "neither"),
            )
        if limit is not None and not (hasattr(limit, "limit") and hasattr(limit, "record")):
            raise ConfigError(
                "limit", f"must be a bt.AdaptiveConcurrency (or a limit like one), got {limit!r}"
            )
        if max_concurrent is not None:
            int_between("max_concurrent", max_concurrent, 1, MAX_PLACES)
        int_between("max_waiting", max_waiting, 0, MAX_PLACES)
        timeout_or_none("wait_timeout", wait_timeout)
        self.name = name
        self.max_waiting = max_waiting
        self.wait_timeout = None if wait_timeout == float("inf") else wait_timeout
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._real_time = type(self.clock) is SystemClock
        self._adaptive = limit
        places: int | Limit = limit if limit is not None else max_concurrent  # type: ignore[assignment]
        self._state = BulkheadState(places, max_waiting)
        self._lock = Lock()
        # The place this context took with `with` / `async with` (see __enter__).
        self._held: ContextVar[tuple[float, int, Any] | None]
        self._held = ContextVar(f"bulkhead {name}", default=None)
        self._now = self.clock.monotonic
        self._listeners: list[Callable[[str, BulkheadFullError], None]] = []

    # -- the ways in ---------------------------------------------------------------------------

    def try_enter(self) -> BulkheadPermit | None:
        """A place now, or ``None`` (counted as a refusal): never waits, never raises."""
        state = self._state
        now = self._now()
        with self._lock:
            if state.enter():
                return BulkheadPermit(self, now, state.in_use)
            state.refuse()
            refusal = self._refusal("full")
        self._notify(refusal)
        return None

    def enter(self) -> BulkheadPermit:
        """A place for this thread, waiting for one if the bulkhead allows; raises
        :class:`~buttress.BulkheadFullError`. Give it back with ``permit.release()``."""
        now = self._now()
        got = self._take(Cell, now)
        if got.__class__ is int:
            return BulkheadPermit(self, now, got)
        return self._wait(got)  # type: ignore[arg-type]

    async def enter_async(self) -> BulkheadPermit:
        """:meth:`enter` for a task: waits without blocking its event loop."""
        now = self._now()
        got = self._take(_TaskCell, now)
        if got.__class__ is int:
            return BulkheadPermit(self, now, got)
        return await self._wait_async(got)  # type: ignore[arg-type]

    # `with` and `async with` hold their place as (taken at, in flight then, the one held
    # around it) in a context variable: no object per block, and nesting unwinds in order.

    def __enter__(self) -> None:
        now = self._now()
        got = self._take(Cell, now)
        if got.__class__ is not int:
            permit = self._wait(got)  # type: ignore[arg-type]
            now, got = permit.started, permit.inflight
        held = self._held
        held.set((now, got, held.get()))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        started, inflight = self._pop_held()
        self._leave(started, inflight, "success" if exc is None else outcome_of(exc))

    async def __aenter__(self) -> None:
        now = self._now()
        got = self._take(_TaskCell, now)
        if got.__class__ is not int:
            permit = await self._wait_async(got)  # type: ignore[arg-type]
            now, got = permit.started, permit.inflight
        held = self._held
        held.set((now, got, held.get()))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        started, inflight = self._pop_held()
        self._leave(started, inflight, "success" if exc is None else outcome_of(exc))

    def _take(self, cell: Callable[[], Any], now: float) -> int | Waiter:
        """A place now (the places in use then, itself included), or a waiter queued for one
        (its ``cell`` made by ``cell()``); raises the refusal when the bulkhead takes no
        waiters or its queue is full."""
        state = self._state
        with self._lock:
            if state.enter():
                return state.in_use
            waiter = self._queue(cell, now)
            refusal = None if waiter is not None else self._refusal("full")
        if waiter is None:
            raise self._notify(refusal)
        return waiter

    def _wait(self, waiter: Waiter) -> BulkheadPermit:
        timeout = self._wait_limit()
        try:
            if timeout is None or self._real_time:
                woken = waiter.cell.wait(timeout)
            else:
                deadline = waiter.since + timeout
                woken = waiter.cell.wait_on_clock(self.clock, deadline, _never)
        except BaseException:
            self._abandon(waiter, timed_out=False)
            raise
        return self._served(waiter, woken)

    async def _wait_async(self, waiter: Waiter) -> BulkheadPermit:
        timeout = self._wait_limit()
        try:
            if timeout is None or self._real_time:
                woken = await waiter.cell.wait(timeout)
            else:
                deadline = waiter.since + timeout
                woken = await waiter.cell.wait_on_clock(self.clock, deadline, _never)
        except BaseException:
            self._abandon(waiter, timed_out=False)
            raise
        return self._served(waiter, woken)

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` holding a place."""
        permit = self.enter()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            permit.release(exc)
            raise
        permit.release()
        return result

    async def call_async(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``await fn(*args, **kwargs)`` holding a place."""
        permit = await self.enter_async()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            permit.release(exc)
            raise
        permit.release()
        return result

    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]:
        """As a decorator: every call of ``fn`` holds a place (a coroutine function's calls
        wait as tasks)."""
        if asyncio.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def guarded_async(*args: Any, **kwargs: Any) -> Any:
                return await self.call_async(fn, *args, **kwargs)

            return guarded_async  # type: ignore[return-value]

        @functools.wraps(fn)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
            return self.call(fn, *args, **kwargs)

        return guarded

    # -- what it reports -----------------------------------------------------------------------

    @property
    def limit(self) -> int:
        """The most calls in flight at once, now (it moves, for an adaptive limit)."""
        return self._state.limit

    @property
    def in_use(self) -> int:
        return self._state.in_use

    @property
    def waiting(self) -> int:
        return self._state.n_waiting

    def snapshot(self) -> BulkheadSnapshot:
        state = self._state
        with self._lock:
            adaptive = self._adaptive
            return BulkheadSnapshot(
                name=self.name,
                limit=state.limit,
                in_use=state.in_use,
                waiting=state.n_waiting,
                max_waiting=self.max_waiting,
                wait_timeout=self.wait_timeout,
                admitted=state.admitted,
                waited=state.waited,
                rejected=state.rejected,
                timed_out=state.timed_out,
                peak_in_use=state.peak_in_use,
                service_time=state.service_time,
                adaptive=None if adaptive is None else _adaptive_dict(adaptive),
            )

    def on_refused(self, listener: Callable[[str, BulkheadFullError], None]) -> None:
        """Call ``listener(name, error)`` for every refusal (after the lock is released)."""
        self._listeners.append(listener)

    def __repr__(self) -> str:
        state = self._state
        kind = " (adaptive limit)" if self._adaptive is not None else ""
        return (
            f"<Bulkhead {self.name!r} {state.in_use}/{state.limit} in use{kind}, "
            f"{state.n_waiting}/{self.max_waiting} waiting>"
        )

    # -- internals -----------------------------------------------------------------------------

    def _queue(self, cell: Callable[[], Any], now: float) -> Waiter | None:
        """Under the lock, after a failed enter: a queued waiter, or None (refused: the
        bulkhead takes no waiters, or its queue is full)."""
        state = self._state
        if self.max_waiting == 0 or self.wait_timeout == 0:
            state.refuse()
            return None
        waiter = Waiter(cell(), now)
        return waiter if state.queue(waiter) else None

    def _wait_limit(self) -> float | None:
        """How long a queued caller may wait: its wait_timeout, within the call's deadline."""
        timeout = self.wait_timeout
        left = remaining()
        if left is not None and (timeout is None or left < timeout):
            return left
        return timeout

    def _served(self, waiter: Waiter, woken: bool) -> BulkheadPermit:
        """After a wait: the permit handed over, or (not woken) the timeout's refusal."""
        now = self._now()
        if not woken:
            with self._lock:
                kept = self._state.abandon(waiter, timed_out=True)
                handed = self._take_handoffs()
                refusal = None if kept else self._refusal("timeout")
            _wake(handed)
            if refusal is not None:
                raise self._notify(refusal)
        assert waiter.state == SERVED
        return BulkheadPermit(self, now, self._state.in_use)

    def _abandon(self, waiter: Waiter, *, timed_out: bool) -> None:
        with self._lock:
            self._state.abandon(waiter, timed_out=timed_out)
            handed = self._take_handoffs()
        _wake(handed)

    def _leave(self, started: float, inflight: int, outcome: str) -> None:
        now = self._now()
        state = self._state
        with self._lock:
            state.leave(now, started, inflight, outcome)
            if not state.handoffs:
                return
            woken = self._take_handoffs()
        _wake(woken)

    def _take_handoffs(self) -> list[Waiter]:
        state = self._state
        woken = state.handoffs
        if woken:
            state.handoffs = []
        return woken

    def _refusal(self, reason: str) -> BulkheadFullError:
        """Under the lock: the error for a refusal, with the figures of this moment."""
        state = self._state
        return BulkheadFullError(
            self.name,
            reason=reason,
            limit=state.limit,
            in_use=state.in_use,
            waiting=state.n_waiting,
            retry_after=state.retry_after(),
        )

    def _notify(self, error: BulkheadFullError | None) -> BulkheadFullError:
        """After the lock: report a refusal and tell the listeners; the error, to raise."""
        assert error is not None
        if events.enabled(EV_REJECTED):
            wait = error.retry_after
            events.emit(
                EV_REJECTED,
                {"retry_after": -1.0 if wait is None else wait},
                {"bulkhead": self.name, "reason": error.reason},
            )
        for listener in self._listeners:
            listener(self.name, error)
        return error

    def _pop_held(self) -> tuple[float, int]:
        held = self._held
        entry = held.get()
        if entry is None:
            raise RuntimeError(f"bulkhead {self.name!r}: exit without a matching enter")
        started, inflight, outer = entry
        held.set(outer)
        return started, inflight


def _never() -> bool:
    return False


def _wake(waiters: list[Waiter]) -> None:
    for waiter in waiters:
        waiter.cell.wake()


class _TaskCell(ACell):
    """A task's wake-up that a thread may also ring: on the task's own loop, or through it."""

    __slots__ = ("_loop",)

    def __init__(self) -> None:
        super().__init__()
        self._loop = asyncio.get_running_loop()

    def wake(self) -> bool:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            return super().wake()
        try:
            self._loop.call_soon_threadsafe(super().wake)
        except RuntimeError:
            return False  # its loop is closed: the task is gone with it
        return True


def _adaptive_dict(limit: Limit) -> dict[str, Any] | None:
    snapshot = getattr(limit, "snapshot", None)
    if snapshot is None:
        return {"limit": limit.limit}
    taken = snapshot()
    return taken.to_dict() if hasattr(taken, "to_dict") else dict(taken)
