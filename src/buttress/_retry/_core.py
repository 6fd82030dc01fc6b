"""``Retry``'s settings and the decisions every run of it shares.

The pure decisions (how long to wait, when to stop) are ``_plan.py``'s; this core adds the
shell's side: which failures are retried (:meth:`RetryCore._retryable`), the wait a failure
asks for, the deadline a run starts with, and announcing and counting each decision. The runs
themselves (``call``, ``call_async``, the attempt loops) are written once, as async code in
``_runs_async.py``; ``tools/async_to_sync.py`` writes their thread twin, ``_runs.py``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .. import events
from .._clock import SystemClock
from .._errors import RejectedError
from .._fork import call_in_forked_child, reseed_in_child
from .._policies import DEADLINE, falls_back, remaining
from .._validate import int_at_least, positive
from ._backoff import Backoff
from ._budget import RetryBudget
from ._plan import Attempts
from ._retry_after import asked_wait

if TYPE_CHECKING:
    from .._breaker._config import BreakerConfig
    from .._clock import Clock

RETRY_EVENT = ("buttress", "retry", "retry")
GAVE_UP_EVENT = ("buttress", "retry", "gave_up")

ExceptionFilter = (
    type[BaseException] | tuple[type[BaseException], ...] | Callable[[Exception], bool]
)

SYSTEM_CLOCK = SystemClock()


class ServiceCalls:
    """What the pipeline gives a retried call: the service's name, breaker classification,
    clock, and where its outcomes are counted (``record(outcome)``)."""

    __slots__ = ("clock", "config", "name", "record")

    def __init__(
        self,
        name: str,
        config: BreakerConfig | None,
        clock: Clock,
        record: Callable[[str], None] | None,
    ) -> None:
        self.name = name
        self.config = config
        self.clock = clock
        self.record = record


class RetryCore:
    """What every way of running a :class:`~buttress.Retry` shares: its settings, which
    failures it retries, and what it does after one (asking ``_plan.py``); the runs are
    ``_runs_async.py`` and its generated twin ``_runs.py``.
    """

    __slots__ = (
        "__weakref__",
        "_asked",
        "_attempts",
        "_backoff",
        "_budget",
        "_clock",
        "_deadline",
        "_on",
        "_on_result",
        "_rng",
        "name",
    )

    def __init__(
        self,
        *,
        attempts: int = 3,
        backoff: Backoff | None = None,
        on: ExceptionFilter | None = None,
        on_result: Callable[[Any], bool] | None = None,
        deadline: float | None = None,
        budget: RetryBudget | None = None,
        retry_after: Callable[[Any], float | None] | None = None,
        clock: Clock | None = None,
        seed: int | None = None,
        name: str | None = None,
    ) -> None:
        int_at_least("attempts", attempts, 1)
        if backoff is None:
            backoff = Backoff()
        elif not isinstance(backoff, Backoff):
            raise TypeError(f"backoff must be a buttress.Backoff, got {backoff!r}")
        if deadline is not None:
            deadline = positive("deadline", deadline)
        if budget is not None and not isinstance(budget, RetryBudget):
            raise TypeError(f"budget must be a buttress.RetryBudget, got {budget!r}")
        for label, fn in (("on_result", on_result), ("retry_after", retry_after)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{label} must be a callable, got {fn!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an int, got {seed!r}")
        self._attempts = attempts
        self._backoff = backoff
        self._on = _exception_filter(on)
        self._on_result = on_result
        self._deadline = deadline
        self._budget = budget
        self._asked = retry_after
        self._clock = clock
        self._rng = random.Random(seed)
        self.name = name
        if seed is None:  # a fixed seed is asked to repeat itself, also in a child
            call_in_forked_child(self._reseed)

    def _reseed(self) -> None:
        reseed_in_child(self._rng)

    @property
    def attempts(self) -> int:
        return self._attempts

    @property
    def backoff(self) -> Backoff:
        return self._backoff

    @property
    def deadline(self) -> float | None:
        return self._deadline

    @property
    def budget(self) -> RetryBudget | None:
        return self._budget

    def __repr__(self) -> str:
        parts = [f"attempts={self._attempts}", f"backoff={self._backoff!r}"]
        if self._deadline is not None:
            parts.append(f"deadline={self._deadline!r}")
        if self._budget is not None:
            parts.append(f"budget={self._budget!r}")
        if self.name is not None:
            parts.append(f"name={self.name!r}")
        return f"Retry({', '.join(parts)})"

    # -- what is retried ---------------------------------------------------------------------

    def _retryable(self, exc: Exception, calls: ServiceCalls | None) -> bool:
        if isinstance(exc, RejectedError) and exc.retry_after is None:
            return False  # a refusal that can never be admitted (a cost above the limit)
        if self._on is not None:
            return self._on(exc)
        return falls_back(calls.config if calls is not None else None, exc)

    def _wait_asked(self, outcome: Any, clock: Clock) -> float | None:
        if self._asked is None:
            return asked_wait(outcome, clock.time)
        seconds = self._asked(outcome)
        if seconds is not None and (
            isinstance(seconds, bool) or not isinstance(seconds, (int, float))
        ):
            raise TypeError(
                f"retry_after={self._asked!r} must return seconds (a number) or None, "
                f"got {seconds!r}"
            )
        return seconds

    def _start(self, clock: Clock) -> Attempts:
        """A call's attempts: its deadline is the nearer of its own and the caller's."""
        deadline = None
        if self._deadline is not None:
            deadline = clock.monotonic() + self._deadline
        outer = remaining()
        if outer is not None:
            edge = clock.monotonic() + outer
            deadline = edge if deadline is None or edge < deadline else deadline
        return Attempts(self._attempts, self._backoff, deadline, self._budget)

    def _decide(
        self,
        state: Attempts,
        outcome: Any,
        clock: Clock,
        calls: ServiceCalls | None,
        name: str,
    ) -> float | None:
        """After a failed attempt (``outcome``: its exception or unwanted result): the wait
        before the next, or ``None`` to stop (a stopped exception gets its note here)."""
        asked = self._wait_asked(outcome, clock)
        verdict = state.next_wait(clock.monotonic(), asked, self._rng)
        if isinstance(verdict, float):
            events.emit(
                RETRY_EVENT,
                {"attempt": state.number - 1, "wait": verdict},
                {"name": name, "error": _kind(outcome)},
            )
            if calls is not None and calls.record is not None:
                calls.record("retried")
            return verdict
        events.emit(
            GAVE_UP_EVENT,
            {"attempts": state.number},
            {"name": name, "reason": verdict, "error": _kind(outcome)},
        )
        if calls is not None and calls.record is not None:
            calls.record(verdict)
        if isinstance(outcome, BaseException):
            outcome.add_note(state.note(verdict, name, asked))
        return None

    def _stopped(self, state: Attempts, exc: BaseException, name: str) -> None:
        """An attempt after the first raised an error that is not retried: say so on it."""
        if state.number > 1:
            exc.add_note(state.note(None, name, None))


class AttemptLoop:
    """The state an attempt loop shares between its attempts."""

    __slots__ = ("clock", "retry", "state", "wait")

    def __init__(self, retry: RetryCore, clock: Clock) -> None:
        self.retry = retry
        self.clock = clock
        if retry._budget is not None:
            retry._budget.record_request()
        self.state = retry._start(clock)
        self.wait: float | None = None


class Attempt:
    """One attempt of an attempt loop: ``with attempt:`` around the work. ``number`` is
    1-based; inside the block :func:`buttress.remaining` reads the retry's deadline."""

    __slots__ = ("_loop", "_mark", "number")

    def __init__(self, loop: AttemptLoop) -> None:
        self._loop = loop
        self._mark: Any = None
        self.number = loop.state.number

    def __repr__(self) -> str:
        return f"<Attempt {self.number} of {self._loop.retry.attempts}>"

    def __enter__(self) -> Attempt:
        deadline = self._loop.state.deadline
        if deadline is not None:
            self._mark = DEADLINE.set((deadline, self._loop.clock))
        return self

    def __exit__(
        self,
        typ: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if self._mark is not None:
            DEADLINE.reset(self._mark)
            self._mark = None
        if exc is None or not isinstance(exc, Exception):
            return False
        loop = self._loop
        retry = loop.retry
        name = retry.name or "attempt loop"
        if not retry._retryable(exc, None):
            retry._stopped(loop.state, exc, name)
            return False
        wait = retry._decide(loop.state, exc, loop.clock, None, name)
        if wait is None:
            return False
        loop.wait = wait
        return True  # swallowed: the loop goes on after the wait


def _exception_filter(on: ExceptionFilter | None) -> Callable[[Exception], bool] | None:
    if on is None:
        return None
    if isinstance(on, type) and issubclass(on, BaseException):
        classes: tuple[type[BaseException], ...] = (on,)
    elif (
        isinstance(on, tuple)
        and on
        and all(isinstance(c, type) and issubclass(c, BaseException) for c in on)
    ):
        classes = on
    elif callable(on) and not isinstance(on, type):
        return on
    else:
        raise TypeError(
            "on must be an exception class, a non-empty tuple of them, or a predicate taking "
            f"the exception, got {on!r}"
        )
    return lambda exc: isinstance(exc, classes)


def name_of(retry: RetryCore, calls: ServiceCalls | None, fn: Any) -> str:
    if retry.name is not None:
        return retry.name
    if calls is not None:
        return calls.name
    return str(getattr(fn, "__qualname__", None) or repr(fn))


def _kind(outcome: Any) -> str:
    return type(outcome).__name__ if isinstance(outcome, BaseException) else "result"
