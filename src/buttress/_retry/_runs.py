# DO NOT EDIT: generated from src/buttress/_retry/_runs_async.py
# by tools/async_to_sync.py; change the source and run it again.
"""The runs of a :class:`~buttress.Retry`: a call and the attempt loop, each waiting on the clock.

Written once, as async code; ``tools/async_to_sync.py`` writes the thread twin, ``_runs.py``.
Every choice between attempts is the core's (``_core.py``, ``_plan.py``): a run only runs the
attempts and waits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from .._policies import DEADLINE
from ._core import SYSTEM_CLOCK, Attempt, AttemptLoop, RetryCore, ServiceCalls, name_of
from ._plan import Attempts

if TYPE_CHECKING:
    from .._clock import Clock

P = ParamSpec("P")
T = TypeVar("T")


class Runs(RetryCore):
    """``call`` and ``for attempt in retry``."""

    __slots__ = ()

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)``, retried; its result, or the last error (with a note)."""
        return self.run_retried(fn, args, kwargs, None)  # type: ignore[no-any-return]

    def run_retried(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        calls: ServiceCalls | None,
    ) -> Any:
        """``fn(*args, **kwargs)`` retried, for the pipeline (``calls``: the service's
        classification, clock and counters) or for ``call`` (``calls=None``)."""
        clock = self._clock or (calls.clock if calls is not None else SYSTEM_CLOCK)
        if self._budget is not None:
            self._budget.record_request()
        if self._deadline is None and DEADLINE.get() is None:
            # The common case, kept lean: a first attempt that succeeds costs one call.
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                return self._again(fn, args, kwargs, calls, clock, self._start(clock), exc, None)
            if self._on_result is None or not self._on_result(result):
                return result
            return self._again(fn, args, kwargs, calls, clock, self._start(clock), None, result)
        state = self._start(clock)
        mark = DEADLINE.set((state.deadline, clock)) if state.deadline is not None else None
        try:
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                return self._again(fn, args, kwargs, calls, clock, state, exc, None)
            if self._on_result is None or not self._on_result(result):
                return result
            return self._again(fn, args, kwargs, calls, clock, state, None, result)
        finally:
            if mark is not None:
                DEADLINE.reset(mark)

    def _again(
        self,
        fn: Callable[..., Any],
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
            clock.sleep(wait)
            exc = None
            try:
                result = fn(*args, **kwargs)
            except Exception as e:
                exc = e
                continue
            if self._on_result is None or not self._on_result(result):
                if calls is not None and calls.record is not None:
                    calls.record("recovered")
                return result

    def __iter__(self) -> Iterator[Attempt]:
        """``for attempt in retry: with attempt: ...``: the block runs until it ends
        without a retried error, and the last error propagates (with a note) when the retry
        stops."""
        clock = self._clock or SYSTEM_CLOCK
        run = AttemptLoop(self, clock)
        yield Attempt(run)
        while run.wait is not None:
            wait, run.wait = run.wait, None
            clock.sleep(wait)
            yield Attempt(run)
