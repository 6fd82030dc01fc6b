"""One outbound request sent under its protection (``_outbound.py``'s docstring says how).
``_sending_async.py`` is the source; ``_sending.py``, for threads, is generated from it by
``tools/async_to_sync.py``.

``attempt(left)`` sends the request once, its timeout capped at ``left`` seconds (``None``:
no deadline); ``close`` frees a failing response that another attempt replaces. The client's
module (``httpx.py``, ``requests.py``) provides both.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .._errors import RejectedError
from ..ratelimit._decision import exceeded
from ..ratelimit._limiter import RateLimiter
from ._outbound import ErrorResponse, Held, Outbound, time_left

R = TypeVar("R")


async def send_async(
    outbound: Outbound,
    host: str,
    attempt: Callable[[float | None], Awaitable[R]],
    close: Callable[[R], Awaitable[Any]],
) -> R:
    """The answer to one request to ``host``: a response, or the refusal raised."""
    name = outbound.service_name(host) if outbound.infra is not None else None
    raises = outbound.raises(name)
    held = Held()

    async def once() -> R:
        discarded = held.take()
        if discarded is not None:
            await close(discarded)
        held.sent = True
        response = await attempt(time_left())
        if raises(response):
            held.response = response
            raise ErrorResponse(response)
        return response

    try:
        return await _run_async(outbound, host, name, once, held)
    except ErrorResponse as failed:
        if failed.response is held.response:
            return held.take()  # type: ignore[no-any-return]
        raise
    finally:
        discarded = held.take()
        if discarded is not None:
            await close(discarded)


async def _run_async(
    outbound: Outbound,
    host: str,
    name: str | None,
    once: Callable[[], Awaitable[R]],
    held: Held,
) -> R:
    key = outbound.rate_key_for(host)
    if outbound.infra is not None:
        assert name is not None
        return await outbound.infra.call_async(
            name,
            once,
            rate_key=key,
            limiter=outbound.limiter,
            timeout=outbound.timeout,
            retry=outbound.retry,
        )
    limiter = outbound.limiter
    if isinstance(limiter, RateLimiter):
        decision = await limiter.try_acquire_async(key)
        if not decision.allowed:
            raise exceeded(decision)
    breaker = outbound.breaker_for(host)
    guarded = once if breaker is None else functools.partial(breaker.call_async, once)
    retry = outbound.retry
    try:
        return await (guarded() if retry is None else retry.call_async(guarded))
    except RejectedError:
        if isinstance(limiter, RateLimiter) and not held.sent:
            await limiter.refund_async(
                key
            )  # refused by the breaker every time: no request was made
        raise
