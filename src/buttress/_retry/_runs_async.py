"""The runs of a :class:`~buttress.Retry`: a call and the attempt loop, each waiting on the clock.

Written once, as async code; ``tools/async_to_sync.py`` writes the thread twin, ``_runs.py``.
Every choice between attempts is the core's (``_core.py``, ``_plan.py``): a run only runs the
attempts and waits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from .._policies import DEADLINE
from ._core import SYSTEM_CLOCK, Attempt, AttemptLoop, RetryCore, ServiceCalls, name_of
from ._plan import Attempts

if TYPE_CHECKING:
    from .._clock import Clock

P = ParamSpec("P")
T = TypeVar("T")


class AsyncRuns(RetryCore):
    """``call_async`` and ``async for attempt in retry``."""

    __slots__ = ()

    async def call_async(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``fn(*args, **kwargs)``, retried; its result, or the last error (with a note)."""
        return await self.run_retried_async(fn, args, kwargs, None)  # type: ignore[no-any-return]

    async def run_retried_async(
        self,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        calls: ServiceCalls | None,
    ) -> Any:
        """``fn(*args, **kwargs)`` retried, for the pipeline (``calls``: the service's
        classification, clock and counters) or for ``call_async`` (``calls=None``)."""
        clock = self._clock or (calls.clock if calls is not None else SYSTEM_CLOCK)
        if self._budget is not None:
            self._budget.record_request()
        if self._deadline is None and DEADLINE.get() is None:
            # The common case, kept lean: a first attempt that succeeds costs one call.
            try:
                result = await fn(*args, **kwargs)
            except Exception as exc:
                return await self._again_async(
                    fn, args, kwargs, calls, clock, self._start(clock), exc, None
                )
            if self._on_result is None or not self._on_result(result):
                return result
            return await self._again_async(
                fn, args, kwargs, calls, clock, self._start(clock), None, result
            )
        state = self._start(clock)
        mark = DEADLINE.set((state.deadline, clock)) if state.deadline is not None else None
        try:
            try:
                result = await fn(*args, **kwargs)
            except Exception as exc:
                return await self._again_async(fn, args, kwargs, calls, clock, state, exc, None)
            if self._on_result is None or not self._on_result(result):
                return result
            return await self._again_async(fn, args, kwargs, calls, clock, state, None, result)
        finally:
            if mark is not None:
                DEADLINE.reset(mark)

    async def _again_async(
        self,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        calls: ServiceCalls | None,
        clock: Clock,
        state: Attempts,
        exc: Exception | None,
        result: Any,
    ) -> Any:
        """The attempts after a first one that failed (``exc``) or returned ``result`` that
        ``on_result`` turned down."""
        name = name_of(self, calls, fn)
        while True:
            if exc is not None:
                if not self._retryable(exc, calls):
                    self._stopped(state, exc, name)
                    raise exc
                wait = self._decide(state, exc, clock, calls, name)
                if wait is None:
                    raise exc
            else:
                wait = self._decide(state, result, clock, calls, name)
                if wait is None:
                    return result
            await clock.asleep(wait)
            exc = None
            try:
                result = await fn(*args, **kwargs)
            except Exception as e:
                exc = e
                continue
            if self._on_result is None or not self._on_result(result):
                if calls is not None and calls.record is not None:
                    calls.record("recovered")
                return result

    async def __aiter__(self) -> AsyncIterator[Attempt]:
        """``async for attempt in retry: with attempt: ...``: the block runs until it ends
        without a retried error, and the last error propagates (with a note) when the retry
        stops."""
        clock = self._clock or SYSTEM_CLOCK
        run = AttemptLoop(self, clock)
        yield Attempt(run)
        while run.wait is not None:
            wait, run.wait = run.wait, None
            await clock.asleep(wait)
            yield Attempt(run)
