"""The breaker's call paths: everything that waits (a call, an injected latency, a health check).

They are written once, as async code in ``_calls_async.py``; ``tools/async_to_sync.py`` writes
their thread twin, ``_calls.py``. Where the two must differ, the difference is marked
``if True:  # ASYNC``: the sync file keeps the ``else`` branch.

Each call path has the same shape: admit (``_enter_async``: the machine decides under the
lock, a refused call may run a due health check and be admitted after all, an injected fault
is applied), run the call with no lock held, record its outcome.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, Self, TypeVar, cast

from .._concurrency import ExcInfo
from .._priority import CRITICAL, NORMAL
from ._core import MAX_PENDING, SUCCESS, BreakerCore, Ticket
from ._machine import Refused

if TYPE_CHECKING:
    from ._breaker import CircuitBreaker

P = ParamSpec("P")
T = TypeVar("T")

AsyncFn = Callable[..., Awaitable[Any]]
AsyncRunner = Callable[
    [Callable[..., Awaitable[Any]], tuple[Any, ...], dict[str, Any]], Awaitable[Any]
]


class AsyncCalls(BreakerCore):
    """The ways into a breaker that wait: calls, ``with`` blocks, tickets, health checks."""

    _run_async: AsyncRunner  # made by _make_run_async()
    _wrap_async: Callable[[AsyncFn], AsyncFn]  # made by _make_wrap_async()

    async def call_async(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn(*args, **kwargs)`` under the breaker and return its result.

        Raises :class:`~buttress.CircuitOpenError` when open and :class:`~buttress.LoadShedError`
        when the call is shed while degraded; otherwise returns or raises what ``fn`` does.
        """
        return await self._run_async(fn, args, kwargs)  # type: ignore[no-any-return]

    async def _call_async(
        self,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        critical: bool,
    ) -> T:
        """A call on the general path: any state, any setting."""
        ticket = await self._enter_async(critical)
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            self._record_exit(ticket, exc)
            raise
        self._on_result(ticket, result)
        return result

    def _make_run_async(self) -> AsyncRunner:
        """The lock-free path of :meth:`call_async`, as a closure over what it reads.

        Closed, with a plain config (no slow-call timing, no result predicate, nothing
        injected), a call takes no lock: a success within the current time bucket is queued
        (``deque.append`` is atomic) and counted at the next locked step; anything else takes
        the general path. Every attribute is read once here, not on each call: at a few
        hundred nanoseconds a call, a frame or an attribute load shows.
        """
        m = self._machine
        pending = self._pending
        append = pending.append
        now = self._now
        general_async = self._call_async
        record = self._record
        classify = self._classify
        lock = self._lock
        drain = self._drain

        async def run_async(
            fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            gen = m.fast_gen
            if gen < 0:
                return await general_async(fn, args, kwargs, False)
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                record(gen, 0, classify(exc), now(), 0.0)
                raise
            t = now()
            if t < m.bucket_end:
                append(gen)
                if len(pending) > MAX_PENDING:
                    with lock:
                        drain()
                return result
            record(gen, 0, SUCCESS, t, 0.0)
            return result

        return run_async

    def _make_wrap_async(self) -> Callable[[AsyncFn], AsyncFn]:
        """The ``@breaker`` wrapper of a coroutine function, made per function: the body of
        :meth:`_make_run_async`'s closure with ``fn`` bound. Written out a second time on
        purpose: the decorator is the hottest way in, and a call through ``run_async`` would
        cost a frame per call (a quarter of the whole overhead). The model-based test drives
        both."""
        m = self._machine
        pending = self._pending
        append = pending.append
        now = self._now
        general_async = self._call_async
        record = self._record
        classify = self._classify
        lock = self._lock
        drain = self._drain

        def wrap_async(fn: AsyncFn) -> AsyncFn:
            @functools.wraps(fn)
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                gen = m.fast_gen
                if gen < 0:
                    return await general_async(fn, args, kwargs, False)
                try:
                    result = await fn(*args, **kwargs)
                except BaseException as exc:
                    record(gen, 0, classify(exc), now(), 0.0)
                    raise
                t = now()
                if t < m.bucket_end:
                    append(gen)
                    if len(pending) > MAX_PENDING:
                        with lock:
                            drain()
                    return result
                record(gen, 0, SUCCESS, t, 0.0)
                return result

            return wrapper

        return wrap_async

    def _wrap_critical_async(self, fn: AsyncFn) -> AsyncFn:
        """The ``@breaker(critical=True)`` wrapper of a coroutine function: always the general
        path, which passes ``critical`` (such a call is never shed)."""
        general_async = self._call_async

        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            return await general_async(fn, args, kwargs, True)

        return wrapper

    async def begin_async(self, priority: int = NORMAL) -> Ticket:
        """Admit one call (raising when refused); hand the ticket to :meth:`end` afterwards.

        The low-level pair under ``Infrastructure.protect``: no object per call, and the
        lock-free path when closed. Fault injection on the breaker itself is applied.
        """
        gen = self._machine.fast_gen
        if gen >= 0 and priority != CRITICAL:
            return gen, 0, 0.0
        return await self._enter_async(priority)

    async def _enter_async(self, priority: int) -> Ticket:
        """Admit one call or raise its refusal; apply the fault injected into it."""
        now = self._now()
        d = self._admit(now, priority)
        if isinstance(d, Refused):
            if self._may_probe_health(d) and await self.check_health_async():
                d = self._admit_again(priority)
            if isinstance(d, Refused):
                raise self._refusal(d)
        ticket, fault = self._admitted(d, now)
        if fault is not None:
            if fault.delay:
                await self._delay_async(ticket, fault.delay)
            if fault.fail:
                raise self._inject_failure(ticket, fault)
        return ticket

    async def _delay_async(self, ticket: Ticket, delay: float) -> None:
        try:
            await self.clock.asleep(delay)
        except BaseException as exc:  # interrupted in the injected latency: as if in the call
            self._record_exit(ticket, exc)
            raise

    async def __aenter__(self) -> Self:
        ticket = await self._enter_async(False)
        self._open_blocks.set((*self._open_blocks.get(), ticket))
        return self

    async def __aexit__(self, *exc_info: *ExcInfo) -> Literal[False]:
        blocks = self._open_blocks.get()
        self._open_blocks.set(blocks[:-1])
        self._record_exit(blocks[-1], exc_info[1])
        return False

    async def check_health_async(self) -> bool | None:
        """Run the health check if one is due (open, interval elapsed).

        Returns its result, or ``None`` when no check was due. Success moves the breaker to
        half_open early. The infrastructure's scheduler calls this; so does a refused call.
        """
        check = self._health_check
        if True:  # ASYNC
            if check is None:
                return None
        else:
            if check is None or self._health_is_async:
                return None  # a coroutine function is checked by check_health_async()
        gen = self._health_check_due()
        if gen is None:
            return None
        t0 = time.monotonic()
        ok, err = False, None
        try:
            if True:  # ASYNC
                if self._health_is_async:
                    ok = bool(await cast(Callable[[], Awaitable[bool]], check)())
                else:  # a plain function runs in a worker thread, off the event loop
                    ok = bool(await asyncio.to_thread(cast(Callable[[], bool], check)))
            else:
                ok = bool(cast(Callable[[], bool], check)())
        except Exception as exc:
            err = repr(exc)
        except BaseException:
            self._health_check_abandoned(gen)
            raise
        self._health_checked(gen, ok, err, time.monotonic() - t0)
        return ok


class AsyncGuardCalls:
    """``async with breaker.guard(critical=True):`` (see ``Guard``)."""

    if not TYPE_CHECKING:  # the attributes are Guard's slots; mypy reads them from there
        __slots__ = ()

    _breaker: CircuitBreaker
    _critical: bool
    _ticket: Ticket | None

    async def __aenter__(self) -> Self:
        self._ticket = await self._breaker._enter_async(self._critical)
        return self

    async def __aexit__(self, *exc_info: *ExcInfo) -> Literal[False]:
        ticket, self._ticket = self._ticket, None
        if ticket is not None:
            self._breaker._record_exit(ticket, exc_info[1])
        return False
