# DO NOT EDIT: generated from src/buttress/integrations/_sending_async.py
# by tools/async_to_sync.py; change the source and run it again.
"""One outbound request sent under its protection (``_outbound.py``'s docstring says how).
``_sending_async.py`` is the source; ``_sending.py``, for threads, is generated from it by
``tools/async_to_sync.py``.

``attempt(left)`` sends the request once, its timeout capped at ``left`` seconds (``None``:
no deadline); ``close`` frees a failing response that another attempt replaces. The client's
module (``httpx.py``, ``requests.py``) provides both.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from .._errors import RejectedError
from ..ratelimit._decision import exceeded
from ..ratelimit._limiter import RateLimiter
from ._outbound import ErrorResponse, Held, Outbound, time_left

R = TypeVar("R")


def send(
    outbound: Outbound,
    host: str,
    attempt: Callable[[float | None], R],
    close: Callable[[R], Any],
) -> R:
    """The answer to one request to ``host``: a response, or the refusal raised."""
    name = outbound.service_name(host) if outbound.infra is not None else None
    raises = outbound.raises(name)
    held = Held()

    def once() -> R:
        discarded = held.take()
        if discarded is not None:
            close(discarded)
        held.sent = True
        response = attempt(time_left())
        if raises(response):
            held.response = response
            raise ErrorResponse(response)
        return response

    try:
        return _run(outbound, host, name, once, held)
    except ErrorResponse as failed:
        if failed.response is held.response:
            return held.take()  # type: ignore[no-any-return]
        raise
    finally:
        discarded = held.take()
        if discarded is not None:
            close(discarded)


def _run(
    outbound: Outbound,
    host: str,
    name: str | None,
    once: Callable[[], R],
    held: Held,
) -> R:
    key = outbound.rate_key_for(host)
    if outbound.infra is not None:
        assert name is not None
        return outbound.infra.call(
            name,
            once,
            rate_key=key,
            limiter=outbound.limiter,
            timeout=outbound.timeout,
            retry=outbound.retry,
        )
    limiter = outbound.limiter
    if isinstance(limiter, RateLimiter):
        decision = limiter.try_acquire(key)
        if not decision.allowed:
            raise exceeded(decision)
    breaker = outbound.breaker_for(host)
    guarded = once if breaker is None else functools.partial(breaker.call, once)
    retry = outbound.retry
    try:
        return guarded() if retry is None else retry.call(guarded)
    except RejectedError:
        if isinstance(limiter, RateLimiter) and not held.sent:
            limiter.refund(key)  # refused by the breaker every time: no request was made
        raise
