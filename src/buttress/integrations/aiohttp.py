"""buttress for aiohttp.web: a middleware, handler decorators, and the health routes.

::

    app = web.Application(middlewares=[buttress_middleware(infra, default=...)])
    app.add_routes(health_routes(infra))

* :func:`buttress_middleware` guards every handler by its own policy (:func:`protect`,
  :func:`rate_limit` on the handler) or else the ``default`` one, unless it is
  :func:`exempt`; it answers a :class:`~buttress.RejectedError` (from a policy or a nested
  ``infra.call_async``) with 429 or 503 and its fields (``_http.refused``).
* :func:`health_routes`: ``/health``, ``/health/livez``, ``/health/readyz``.

The decorators only mark a handler; the middleware applies the policy, asynchronously (the
limiter's backend and the pool are awaited). An exception a handler raises is classified as
the core classifies any (``web.HTTPNotFound`` neutral); an answered 4xx is neutral too, an
answered 5xx a failure of the protected service.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web

from .._health import Probe, health_response
from .._priority import PriorityName
from ._http import Answer, ClientIP, TrustedProxies, api_key, client_ip, read_key
from ._views import ATTRIBUTE, EXEMPT, REFUSALS, Policy, caller, enter_async, refusal

if TYPE_CHECKING:
    from .._infrastructure import Infrastructure
    from ..ratelimit._limiter import RateLimiter

__all__ = [
    "api_key",
    "buttress_middleware",
    "client_ip",
    "exempt",
    "health_routes",
    "policy",
    "protect",
    "rate_limit",
]

_CLIENT = ClientIP(TrustedProxies())  # a rate limit without a key: the peer's address

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Callable[..., Any])


def _peer(request: web.Request) -> str | None:
    return request.remote


def _header(request: web.Request, name: str) -> str | None:
    return request.headers.get(name)


def _response(answer: Answer) -> web.Response:
    return web.Response(body=answer.body, status=answer.status, headers=list(answer.headers))


def buttress_middleware(
    infra: Infrastructure,
    *,
    default: Policy | None = None,
    rate_limit_headers: bool = True,
) -> Any:
    """The middleware: each request's handler guarded by its own policy, else ``default``
    (:func:`policy`), under ``infra``; refusals answered. ``rate_limit_headers=False``
    leaves the ``RateLimit`` fields out of every answer (``Retry-After`` stays)."""
    if default is not None and not isinstance(default, Policy):
        raise TypeError(f"default must be a policy (aiohttp.policy()), got {default!r}")

    @web.middleware
    async def buttress(request: web.Request, handler: Handler) -> web.StreamResponse:
        chosen = _policy_of(request, default)
        if chosen is None:
            return await _answering(handler, request, rate_limit_headers)
        try:
            key = read_key(caller(chosen, _CLIENT), request, _peer, _header)
            passage = await enter_async(infra, chosen, key)
        except REFUSALS as exc:
            return _response(refusal(exc, rate_limit_headers))
        try:
            response = await handler(request)
        except REFUSALS as exc:  # a nested protected call refused
            await passage.leave_async(exc=exc)
            return _response(refusal(exc, rate_limit_headers))
        except web.HTTPException as exc:  # raised as an answer: read by its status
            await passage.leave_async(exc=exc)
            if rate_limit_headers:
                _add(exc.headers, passage.fields())
            raise
        except BaseException as exc:
            await passage.leave_async(exc=exc)
            raise
        await passage.leave_async(response.status)
        if rate_limit_headers and not response.prepared:
            _add(response.headers, passage.fields())
        return response

    return buttress


async def _answering(
    handler: Handler, request: web.Request, rate_limit_headers: bool
) -> web.StreamResponse:
    try:
        return await handler(request)
    except REFUSALS as exc:
        return _response(refusal(exc, rate_limit_headers))


def _add(headers: Any, fields: Iterable[tuple[str, str]]) -> None:
    for name, value in fields:
        headers.setdefault(name, value)


def _policy_of(request: web.Request, default: Policy | None) -> Policy | None:
    handler = request.match_info.handler
    own = getattr(handler, ATTRIBUTE, None)
    if own is None:  # a class-based view's method, or a handler a decorator wrapped
        own = getattr(getattr(handler, "__wrapped__", None), ATTRIBUTE, None)
    if own is EXEMPT:
        return None
    return own if own is not None else default


def policy(
    service: str | None = None,
    *,
    limiter: str | RateLimiter | None = None,
    key: Any = None,
    cost: float = 1,
    critical: bool | None = None,
    priority: PriorityName | None = None,
) -> Policy:
    """A policy for :func:`buttress_middleware`'s ``default``: ``service``'s protection (with
    ``limiter`` in its limiter's place when given), or ``limiter`` alone."""
    return Policy(service, limiter, key, cost, critical, priority)


def protect(
    service: str,
    *,
    key: Any = None,
    limiter: str | RateLimiter | None = None,
    cost: float = 1,
    critical: bool | None = None,
    priority: PriorityName | None = None,
) -> Callable[[H], H]:
    """Mark a handler to be guarded by the infrastructure's protection of ``service``;
    ``key`` names the caller: :func:`client_ip`, :func:`api_key`, a function of the request,
    or a mapping of them (``{"user": ..., "org": ...}``)."""
    return _marking(Policy(service, limiter, key, cost, critical, priority))


def rate_limit(limiter: str | RateLimiter, *, key: Any = None, cost: float = 1) -> Callable[[H], H]:
    """Mark a handler to be guarded by a rate limiter alone (a configured limiter's name or a
    :class:`~buttress.RateLimiter`); ``key`` as for :func:`protect`, by default the peer's
    address (behind proxies: ``key=client_ip(trusted_proxies=[...])``)."""
    return _marking(Policy(None, limiter, key, cost))


def _marking(chosen: Policy) -> Callable[[H], H]:
    def mark(handler: H) -> H:
        setattr(handler, ATTRIBUTE, chosen)
        return handler

    return mark


def exempt(handler: H) -> H:
    """Leave a handler out of the middleware's default policy."""
    setattr(handler, ATTRIBUTE, EXEMPT)
    return handler


def health_routes(infra: Infrastructure, prefix: str = "/health") -> list[web.RouteDef]:
    """Routes for the health endpoints of ``infra``: ``prefix`` (the report),
    ``prefix/livez`` and ``prefix/readyz`` (GET, and HEAD), each at its exact path
    (:func:`buttress.health_response`); left out of the default policy."""
    prefix = "/" + prefix.strip("/")

    def endpoint(probe: Probe) -> Handler:
        @exempt
        async def health(request: web.Request) -> web.StreamResponse:
            status, headers, body = health_response(infra, probe)
            return web.Response(body=body, status=status, headers=headers)

        return health

    return [
        web.get(prefix, endpoint("health")),
        web.get(f"{prefix}/livez", endpoint("livez")),
        web.get(f"{prefix}/readyz", endpoint("readyz")),
    ]
