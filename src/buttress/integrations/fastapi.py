"""buttress in FastAPI: dependencies. See docs/integrations/fastapi.md.

* :func:`rate_limit`: ``Depends(rate_limit(limiter, key=...))`` on a route (or a router, or
  the app) limits its requests; a refused one raises :class:`Refused` (``429`` with
  ``Retry-After`` and the ``RateLimit`` fields), an admitted one's response carries the
  ``RateLimit`` fields too, and the dependency's value is the admitting
  :class:`~buttress.Decision`.
* :func:`protect`: ``Depends(protect(infra, "db"))`` runs the endpoint inside
  ``infra.protect("db")``; the dependency's value is the guard (``guard.connection`` is the
  pooled member); a refusal raises :class:`Refused` (``429`` or ``503``). An
  ``HTTPException(404)`` the endpoint raises is neutral for the breaker, as every 4xx but
  408 and 429.

Keys are as :mod:`buttress.integrations.asgi` takes them (``client_ip()``, ``api_key()``, a
function of the ASGI scope, or a dict of these): a function is given ``request.scope``. A
request without an id a scope needs raises ``HTTPException(400)``. The app-wide middlewares
are there too, and work in FastAPI unchanged.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from fastapi import HTTPException, Request, Response

from .._errors import ContextError, RejectedError
from ..ratelimit._decision import Decision, exceeded
from ..ratelimit._limiter import RateLimiter
from ._http import admitted_headers, client_ip, refusal_document, refused, unidentified
from .asgi import _limiter, _reader

__all__ = ["Refused", "protect", "rate_limit"]


class Refused(HTTPException):
    """A refusal as FastAPI's ``HTTPException``: the status and header fields of
    :func:`~buttress.integrations._http.refused` (429 or 503, ``Retry-After``, the
    ``RateLimit`` fields); ``detail`` is its body (``error``, ``message``, ``retry_after``),
    so FastAPI answers ``{"detail": {...}}``. ``refusal`` is the
    :class:`~buttress.RejectedError` itself."""

    def __init__(self, refusal: RejectedError) -> None:
        answer = refused(refusal)
        fields = {k: v for k, v in answer.headers if k != "content-type"}
        super().__init__(answer.status, detail=refusal_document(refusal), headers=fields)
        self.refusal = refusal


def rate_limit(
    limiter: RateLimiter | str,
    *,
    key: Any = None,
    infra: Any = None,
    headers: bool = True,
    cost: float = 1,
) -> Callable[[Request, Response], Awaitable[Decision]]:
    """A dependency limiting each request by ``limiter`` (a :class:`~buttress.RateLimiter`
    or the name of one of ``infra``'s). ``key`` (default the client's address,
    :func:`~buttress.integrations.asgi.client_ip`) says whose request it is; ``headers``
    puts the ``RateLimit`` fields on admitted responses (those of an endpoint that returns
    data: a ``Response`` it returns itself is sent as it is); ``cost`` is charged per
    request."""
    chosen = _limiter(limiter, infra)
    read = _reader(client_ip() if key is None else key)
    in_memory = chosen._in_memory  # decides without I/O: no coroutine per request

    async def rate_limited(request: Request, response: Response) -> Decision:
        try:
            k = read(request.scope)
            decision = (
                chosen.try_acquire(k, cost)
                if in_memory
                else await chosen.try_acquire_async(k, cost)
            )
        except ContextError as exc:
            raise _unidentified(exc) from None
        if not decision.allowed:
            raise Refused(exceeded(decision))
        if headers:
            for name, value in admitted_headers(decision):
                response.headers[name] = value
        return decision

    return rate_limited


def protect(
    infra: Any, service: str, *, key: Any = None
) -> Callable[[Request], AsyncIterator[Any]]:
    """A dependency running the endpoint inside ``infra.protect(service)``: its value is the
    guard. ``key`` (as for :func:`rate_limit`; none by default) fills the service's
    limiter. To give requests a timeout, or to count the 5xx responses an endpoint returns,
    use :class:`~buttress.integrations.asgi.ProtectMiddleware`."""
    if not callable(getattr(infra, "protect", None)):
        raise TypeError(f"protect(): infra must be a buttress.Infrastructure, got {infra!r}")
    if not isinstance(service, str):
        raise TypeError(f"protect(): service must be a service's name, got {service!r}")
    read = None if key is None else _reader(key)

    async def protected(request: Request) -> AsyncIterator[Any]:
        try:
            k = read(request.scope) if read is not None else None
            if isinstance(k, Mapping):
                guard = infra.protect(service, context=k)
            else:
                guard = infra.protect(service, rate_key=k)
            await guard.__aenter__()
        except RejectedError as exc:
            raise Refused(exc) from None
        except ContextError as exc:
            raise _unidentified(exc) from None
        try:
            yield guard
        except BaseException as exc:  # the endpoint raised: the breaker classifies it
            await guard.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        await guard.__aexit__(None, None, None)

    return protected


def _unidentified(exc: ContextError) -> HTTPException:
    """A request the limiter cannot tell apart, as FastAPI's ``HTTPException``: the status
    and body of :func:`~buttress.integrations._http.unidentified` (400, the body as
    ``detail``)."""
    answer = unidentified(exc)
    return HTTPException(answer.status, detail=json.loads(answer.body))
