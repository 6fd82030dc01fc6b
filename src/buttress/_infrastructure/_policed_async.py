"""A call with policies: the fallback, the retry and each attempt's timeout, placed around the
protect pipeline (docs/timeouts-and-fallbacks.md, docs/retries.md).

Written once, as async code; ``tools/async_to_sync.py`` writes the thread twin, ``_policed.py``.
Where the two differ (a thread's late result, an async fallback), the difference is marked
``if True:  # ASYNC``. The order, outermost first:

1. the fallback answers a refusal or a recorded failure (``_policies.falls_back``);
2. the rate limit is charged once per request (:func:`charged_async`), then the retry runs the
   attempts through the same layers without the limiter;
3. each attempt's timeout wraps the operation alone.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._errors import RejectedError
from .._policies import (
    RetryPolicy,
    checked_fallback,
    checked_retry,
    checked_timeout,
    falls_back,
    fell_back,
    late,
    not_sync,
    timed,
    timed_async,
)
from .._retry import Retry
from ..ratelimit._decision import exceeded
from ._protect_async import run_async

if TYPE_CHECKING:
    from ._build import Route
    from ._infrastructure import Infrastructure


async def policed_async(
    infra: Infrastructure,
    route: Route,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    key: Any,
    priority: int,
    cost: float,
    timeout: float | None,
    retry: RetryPolicy | None,
    fallback: Callable[[BaseException], Any] | None,
) -> Any:
    """``fn(*args, **kwargs)`` through ``route`` with the call's policies (an argument left
    ``None`` takes the service's own)."""
    seconds = route.timeout if timeout is None else checked_timeout(timeout)
    answer = route.fallback if fallback is None else checked_fallback(fallback)
    policy = route.retry if retry is None else checked_retry(retry)
    if seconds is not None:
        if True:  # ASYNC: the attempt is cancelled at its timeout
            fn = timed_async(route.name, fn, seconds, infra.clock)
        else:
            fn = timed(route.name, fn, seconds, infra.clock, route.late_result)
    attempts = route  # the route each attempt takes: without the limiter once charged
    reached: list[bool] = []  # set when an attempt reaches the operation
    try:
        if policy is None:
            return await run_async(route, fn, args, kwargs, key, priority, cost)
        attempts = await charged_async(infra, route, key, cost)
        if attempts is not route:
            fn = _reaching(fn, reached)
        if isinstance(policy, Retry):
            return await policy.run_retried_async(
                run_async,
                (attempts, fn, args, kwargs, key, priority, cost),
                {},
                infra._retried(route),
            )
        return await policy.call_async(run_async, attempts, fn, args, kwargs, key, priority, cost)
    except BaseException as exc:
        if attempts is not route and not reached and _refused(exc):
            # Every attempt was refused (or the caller gave up first): the request did no
            # work, so its charge goes back, as a refused call's does in the pipeline.
            assert route.limiter is not None
            await route.limiter.refund_async(key, cost)
        if not isinstance(exc, Exception):
            raise
        kept, result = late(exc)  # a thread's late result, kept by late_result="keep"
        if kept:
            return result
        if answer is None or not answered(route, exc):
            raise
        value = answer(exc)
        if True:  # ASYNC: a fallback may be a coroutine function
            if inspect.isawaitable(value):
                value = await value
        else:
            wrong = not_sync(value)
            if wrong is not None:
                raise wrong from exc
        return value


async def charged_async(infra: Infrastructure, route: Route, key: Any, cost: float) -> Route:
    """Charge the rate limit once for a retried request; the route its attempts take (the
    same layers without the limiter)."""
    limiter = route.limiter
    if limiter is None:
        return route
    d = await limiter.try_acquire_async(key, cost)
    if not d.allowed:
        err = exceeded(d)
        route.metrics.record_rejection(err)
        raise err
    return infra._limited(route, False)


def _reaching(fn: Callable[..., Any], reached: list[bool]) -> Callable[..., Any]:
    """``fn``, noting in ``reached`` that an attempt got to it (the result, awaitable or not,
    is handed back as it is)."""

    def reach(*args: Any, **kwargs: Any) -> Any:
        reached.append(True)
        return fn(*args, **kwargs)

    return reach


def _refused(exc: BaseException) -> bool:
    return isinstance(exc, RejectedError) or not isinstance(exc, Exception)


def answered(route: Route, exc: BaseException) -> bool:
    """Whether a fallback answers the call's ``exc`` (see ``_policies.falls_back``); one that
    does is counted and announced here."""
    config = route.breaker.config if route.breaker is not None else None
    if not falls_back(config, exc):
        return False
    route.metrics.record_fallback()
    fell_back(route.name, exc)
    return True
