"""Deadlines: a protected call's ``timeout``, and :func:`remaining` for the code it runs.

A call with a timeout runs with a deadline in a context variable: the smaller of its own
(``now + timeout``) and the one it runs under, so a nested protected call never outlives the
call around it. The operation reads :func:`remaining` to hand its client the time left (an
HTTP client's or a driver's own timeout), which is how a thread's call is made to stop: Python
cannot interrupt a thread.

Asyncio: the operation runs as a task raced against the deadline on the infrastructure's clock
(a :class:`~buttress.ManualClock` in tests, which jumps to it once the loop is idle); at the
deadline the task is cancelled and :class:`~buttress.CallTimeoutError` raised. Threads: the
operation runs to its end; a result that comes after the deadline is a
:class:`~buttress.CallTimeoutError` (the breaker counts it as a failure, the late result is
dropped).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

from ._errors import CallTimeoutError

if TYPE_CHECKING:
    from ._clock import Clock

__all__ = ["remaining", "with_timeout", "with_timeout_async"]

T = TypeVar("T")

# (deadline on the clock's monotonic scale, that clock), or None outside a timed call.
_DEADLINE: ContextVar[tuple[float, Clock] | None] = ContextVar("buttress_deadline", default=None)


def remaining() -> float | None:
    """Seconds left before the current protected call's deadline (0.0 once it has passed), or
    ``None`` when no call around this code has a timeout."""
    current = _DEADLINE.get()
    if current is None:
        return None
    deadline, clock = current
    left = deadline - clock.monotonic()
    return left if left > 0.0 else 0.0


def _deadline(clock: Clock, timeout: float) -> tuple[float, float]:
    """(now, the deadline): ``now + timeout``, or the enclosing call's deadline if sooner."""
    now = clock.monotonic()
    deadline = now + timeout
    outer = _DEADLINE.get()
    if outer is not None and outer[0] < deadline:
        deadline = outer[0]
    return now, deadline


def with_timeout(
    service: str, clock: Clock, timeout: float, fn: Callable[..., T], *args: Any, **kwargs: Any
) -> T:
    """Run ``fn`` with a deadline; a result after it raises :class:`CallTimeoutError`."""
    _, deadline = _deadline(clock, timeout)
    mark = _DEADLINE.set((deadline, clock))
    try:
        result = fn(*args, **kwargs)
    finally:
        _DEADLINE.reset(mark)
    if clock.monotonic() > deadline:
        raise CallTimeoutError(service, timeout)
    return result


async def with_timeout_async(
    service: str,
    clock: Clock,
    timeout: float,
    fn: Callable[..., Awaitable[T]],
    *args: Any,
    **kwargs: Any,
) -> T:
    """Await ``fn`` with a deadline; at the deadline it is cancelled and
    :class:`CallTimeoutError` raised."""
    now, deadline = _deadline(clock, timeout)
    mark = _DEADLINE.set((deadline, clock))
    try:
        work = asyncio.ensure_future(fn(*args, **kwargs))  # copies the context: it sees the mark
    finally:
        _DEADLINE.reset(mark)
    timer = asyncio.ensure_future(clock.asleep(deadline - now))
    try:
        await asyncio.wait((work, timer), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # our caller was cancelled: so is the work
        work.cancel()
        timer.cancel()
        raise
    if work.done():
        timer.cancel()
        return work.result()
    work.cancel()
    await asyncio.wait((work,))  # let it unwind (its finally blocks) before the caller goes on
    if not work.cancelled():
        work.exception()  # what it raised while cancelled is the timeout's: retrieved, dropped
    raise CallTimeoutError(service, timeout)
