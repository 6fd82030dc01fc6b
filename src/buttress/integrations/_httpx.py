# DO NOT EDIT: generated from src/buttress/integrations/_httpx_async.py
# by tools/async_to_sync.py; change the source and run it again.
"""An httpx transport that protects each request (``buttress.integrations.httpx`` exports it
and says what it does). ``_httpx_async.py`` is the source; ``_httpx.py``, for threads, is
generated from it by ``tools/async_to_sync.py``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx

from .._breaker import CircuitBreaker
from .._retry import Retry
from ..ratelimit._limiter import RateLimiter
from ._outbound import DEFAULT_MAX_HOSTS, FailureRule, Outbound, cap, host_key
from ._sending import send

if TYPE_CHECKING:
    from .._infrastructure import Infrastructure

_TIMEOUTS = ("connect", "read", "write", "pool")


class ProtectedTransport(httpx.BaseTransport):
    """An ``httpx.Client`` transport that protects each request; it wraps ``inner``
    (by default ``httpx.HTTPTransport()``).

    Protect through an infrastructure's service (``infra=``, ``service=``: a name, or a
    callable taking the host and returning one; its breaker, limiter, timeout and retry as
    configured), or through a breaker of your own: ``breaker=`` one
    :class:`~buttress.CircuitBreaker` for every request, or a callable taking the host and
    returning a new breaker, called once per host (at most ``max_hosts`` kept, the least
    recently used forgotten first).

    ``limiter``: a :class:`~buttress.RateLimiter` (or, with ``infra``, a limiter's name) for
    an outbound quota, charged once per request; ``rate_key``: its id, or a callable taking
    the host. ``retry``: a :class:`~buttress.Retry`; each attempt passes the breaker.
    ``timeout`` (with ``infra``): the service's call timeout for this client.
    ``failure_status``: which responses are failures, as statuses (``[429, "5xx"]``) or a
    predicate taking the response; by default the service's breaker's ``failure_result``,
    else every 5xx and 429. 4xx answers count for nothing.

    A failing response is returned as it is once retrying stops; a refusal (an open breaker,
    a rate limit) raises its :class:`~buttress.RejectedError` (``CircuitOpenError``,
    ``RateLimitExceeded``). Inside a protected call with a timeout, what is left of its
    deadline (:func:`~buttress.remaining`) caps each of the request's timeouts.
    """

    def __init__(
        self,
        inner: httpx.BaseTransport | None = None,
        *,
        infra: Infrastructure | None = None,
        service: str | Callable[[str], str] | None = None,
        breaker: CircuitBreaker | Callable[[str], CircuitBreaker] | None = None,
        limiter: RateLimiter | str | None = None,
        rate_key: Any = None,
        retry: Retry | None = None,
        timeout: float | None = None,
        failure_status: FailureRule | None = None,
        max_hosts: int = DEFAULT_MAX_HOSTS,
    ) -> None:
        if inner is not None and not isinstance(inner, httpx.BaseTransport):
            raise TypeError(f"inner must be an httpx.BaseTransport, got {inner!r}")
        self._inner = inner if inner is not None else httpx.HTTPTransport()
        self._outbound = Outbound(
            infra=infra,
            service=service,
            breaker=breaker,
            limiter=limiter,
            rate_key=rate_key,
            retry=retry,
            timeout=timeout,
            failure_status=failure_status,
            max_hosts=max_hosts,
        )

    def breaker_for(self, host: str) -> CircuitBreaker | None:
        """The breaker requests to ``host`` (``"api.example.com"``, or ``"127.0.0.1:8080"``
        with a port) go through without an infrastructure; ``None`` when there is none."""
        return self._outbound.breaker_for(host)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        attempt = functools.partial(self._send, request, request.extensions.get("timeout"))
        return send(self._outbound, _host(request), attempt, _close)

    def _send(self, request: httpx.Request, timeouts: Any, left: float | None) -> httpx.Response:
        if left is not None:
            request.extensions = {**request.extensions, "timeout": _capped(timeouts, left)}
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


def _host(request: httpx.Request) -> str:
    return host_key(request.url.host, request.url.port)


def _capped(timeouts: Any, left: float) -> dict[str, float]:
    """The request's timeouts (httpx's ``{"connect": ..., "read": ..., ...}``, each seconds or
    ``None``), none longer than ``left``."""
    given = timeouts if isinstance(timeouts, dict) else {}
    return {name: cap(given.get(name), left) for name in _TIMEOUTS}


def _close(response: httpx.Response) -> None:
    response.close()
