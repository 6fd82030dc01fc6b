"""Call policies around the protect pipeline: timeouts that count, deadlines, fallbacks.

The pure decisions (what a fallback may answer, the effective timeout of a nested call) are
functions here; ``_infrastructure/_policed_async.py`` places them around the pipeline:

* the fallback is outermost: it answers a call that was refused (a
  :class:`~buttress.RejectedError`) or failed with a failure the breaker records, never a
  :class:`~buttress.ConfigError` or a programming error (:data:`PROGRAMMING_ERRORS`);
* a retry (any object with ``call`` / ``call_async``, :class:`RetryPolicy`) sits inside it,
  after the rate limit (charged once per user request) and around the breaker, so each
  attempt is one breaker call and no layer that refuses is retried from inside;
* the timeout is innermost, around the operation alone: each attempt has its own.

A timeout sets a deadline, read by :func:`remaining`; a nested protected call's deadline is
the smaller of its own timeout and what is left of the outer one.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

from . import events
from ._breaker._outcome import health_of
from ._clock import SystemClock
from ._errors import CallTimeoutError, ConfigError, RejectedError

if TYPE_CHECKING:
    from ._breaker._config import BreakerConfig
    from ._clock import Clock

# The current deadline: (the clock's monotonic time at which it passes, that clock).
DEADLINE: ContextVar[tuple[float, Clock] | None] = ContextVar("buttress_deadline", default=None)

# Errors that say the code is wrong, not the dependency: a fallback never hides them.
PROGRAMMING_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    TypeError,
    NameError,
    AttributeError,
    AssertionError,
    SyntaxError,
)

LATE_RESULTS = ("raise", "keep")
TIMEOUT_EVENT = ("buttress", "service", "timeout")
FALLBACK_EVENT = ("buttress", "service", "fallback")


def timed_out(service: str, seconds: float) -> CallTimeoutError:
    """The error of a call past its timeout, announced as an event."""
    events.emit(TIMEOUT_EVENT, {"timeout": seconds}, {"service": service})
    return CallTimeoutError(service, seconds)


def fell_back(service: str, exc: BaseException) -> None:
    events.emit(FALLBACK_EVENT, None, {"service": service, "error": type(exc).__name__})


class RetryPolicy(Protocol):
    """What ``retry=`` takes: :class:`~buttress.Retry`, or any object that runs ``fn`` one or
    more times and returns its result (or raises its last error)."""

    def call(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any: ...

    async def call_async(
        self, fn: Callable[..., Awaitable[Any]], /, *args: Any, **kwargs: Any
    ) -> Any: ...


def remaining() -> float | None:
    """Seconds left before the current protected call's deadline (0.0 once it has passed),
    or ``None`` outside any call with a timeout. Pass it to the operation's client (a
    driver's or an HTTP client's timeout), so the call gives up in time."""
    current = DEADLINE.get()
    if current is None:
        return None
    left = current[0] - current[1].monotonic()
    return left if left > 0.0 else 0.0


def checked_timeout(timeout: Any) -> float:
    """``timeout`` as seconds, or a ``ConfigError`` (a ``ValueError``) / ``TypeError`` naming it."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds, got {timeout!r}")
    if not timeout > 0 or timeout == float("inf"):
        raise ConfigError(
            "timeout", f"must be a positive, finite number of seconds, got {timeout!r}"
        )
    return float(timeout)


def checked_fallback(fallback: Any) -> Callable[[BaseException], Any]:
    if not callable(fallback):
        raise TypeError(f"fallback must be a callable taking the exception, got {fallback!r}")
    return fallback  # type: ignore[no-any-return]


def checked_retry(retry: Any) -> RetryPolicy:
    if not (
        callable(getattr(retry, "call", None)) and callable(getattr(retry, "call_async", None))
    ):
        raise TypeError(
            "retry must be an object with call() and call_async() (a buttress.Retry), "
            f"got {retry!r}"
        )
    return retry  # type: ignore[no-any-return]


def window(timeout: float) -> float:
    """This call's seconds: its timeout, or what is left of an outer deadline if less."""
    left = remaining()
    return timeout if left is None or left > timeout else left


def falls_back(config: BreakerConfig | None, exc: BaseException) -> bool:
    """Whether a fallback answers a call that raised ``exc``: a refusal, or a failure the
    breaker (``config``; ``None``: the default classification) records; never a config or
    programming error, nor a cancellation."""
    if isinstance(exc, PROGRAMMING_ERRORS):
        return False
    if isinstance(exc, RejectedError):
        return True
    return isinstance(exc, Exception) and health_of(config, exc) is False


def timed(
    service: str, fn: Callable[..., Any], timeout: float, clock: Clock, late_result: str
) -> Callable[..., Any]:
    """``fn`` run under a deadline ``timeout`` seconds away (see :func:`remaining`). A thread
    cannot be interrupted: a result that comes after the deadline raises
    :class:`~buttress.CallTimeoutError` (so the breaker records a failure); with
    ``late_result="keep"`` the error carries the result for the caller to return."""
    now = clock.monotonic

    def attempt(*args: Any, **kwargs: Any) -> Any:
        seconds = window(timeout)
        deadline = now() + seconds
        mark = DEADLINE.set((deadline, clock))
        try:
            result = fn(*args, **kwargs)
        finally:
            DEADLINE.reset(mark)
        if now() > deadline:
            err = timed_out(service, seconds)
            if late_result == "keep":
                err.__dict__["_late"] = result
            raise err
        return result

    return attempt


async def _alarm(clock: Clock, seconds: float, ring: Callable[[], None]) -> None:
    await clock.asleep(seconds)
    ring()


def canceller(
    seconds: float, clock: Clock, real: bool
) -> tuple[asyncio.Timeout, asyncio.Task[None] | None]:
    """An ``asyncio.timeout`` that expires ``seconds`` from now on ``clock`` (``real``: the
    system clock, whose time the loop's timer keeps), and the task that rings it otherwise
    (cancel it when the block ends)."""
    if real:
        return asyncio.timeout(seconds), None
    cm = asyncio.timeout(None)
    loop = asyncio.get_running_loop()
    return cm, loop.create_task(_alarm(clock, seconds, lambda: cm.reschedule(loop.time())))


def timed_async(
    service: str, fn: Callable[..., Any], timeout: float, clock: Clock
) -> Callable[..., Any]:
    """``fn`` awaited under a deadline: cancelled when it passes, raising
    :class:`~buttress.CallTimeoutError`. The clock decides when: the event loop's own timer
    for the system clock, else a task sleeping on ``clock`` (a ManualClock jumps to it when
    every task waits)."""
    now = clock.monotonic
    real = type(clock) is SystemClock

    async def attempt(*args: Any, **kwargs: Any) -> Any:
        seconds = window(timeout)
        mark = DEADLINE.set((now() + seconds, clock))
        alarm = None
        try:
            cm, alarm = canceller(seconds, clock, real)
            try:
                async with cm:
                    return await fn(*args, **kwargs)
            except TimeoutError:
                if cm.expired():
                    raise timed_out(service, seconds) from None
                raise
        finally:
            if alarm is not None:
                alarm.cancel()
            DEADLINE.reset(mark)

    return attempt


def late(exc: BaseException) -> tuple[bool, Any]:
    """Whether ``exc`` carries a late result kept by ``late_result="keep"``, and the result."""
    if isinstance(exc, CallTimeoutError) and "_late" in exc.__dict__:
        return True, exc.__dict__.pop("_late")
    return False, None


def not_sync(value: Any) -> TypeError | None:
    if inspect.isawaitable(value):
        if inspect.iscoroutine(value):
            value.close()
        return TypeError("fallback returned an awaitable: use call_async() for an async fallback")
    return None
