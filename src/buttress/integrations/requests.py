"""A requests ``HTTPAdapter`` that protects every request: a breaker per host or per service,
a retry that honours ``Retry-After``, an outbound rate limit, the call's deadline as the
timeout.

>>> session.mount("https://", ProtectedAdapter(breaker=bt.CircuitBreaker("api")))  # doctest: +SKIP

How a request is protected is ``_outbound.py``'s docstring; docs/integrations/requests.md shows
it at work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util import Timeout

from .._breaker import CircuitBreaker
from .._retry import Retry
from ..ratelimit._limiter import RateLimiter
from ._outbound import DEFAULT_MAX_HOSTS, ErrorResponse, FailureRule, Outbound, cap, host_key
from ._sending import send

if TYPE_CHECKING:
    from .._infrastructure import Infrastructure

__all__ = ["ErrorResponse", "ProtectedAdapter"]


class ProtectedAdapter(HTTPAdapter):
    """A ``requests.adapters.HTTPAdapter`` that protects each request: mount it on a session
    (``session.mount("https://", adapter)``).

    The protection's arguments are those of
    :class:`buttress.integrations.httpx.ProtectedTransport` (``infra`` and ``service``, or
    ``breaker``; ``limiter``, ``rate_key``, ``retry``, ``timeout``, ``failure_status``,
    ``max_hosts``); ``adapter_args`` go to ``HTTPAdapter`` (``pool_connections``,
    ``pool_maxsize``, ...). Leave the adapter's own ``max_retries`` at 0: ``retry`` retries,
    with the breaker in the loop.

    A failing response is returned as it is once retrying stops; a refusal (an open breaker,
    a rate limit) raises its :class:`~buttress.RejectedError`. Inside a protected call with a
    timeout, what is left of its deadline (:func:`~buttress.remaining`) caps the ``timeout``
    the request is sent with (the connect and the read timeout alike).
    """

    def __init__(
        self,
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
        **adapter_args: Any,
    ) -> None:
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
        super().__init__(**adapter_args)

    def breaker_for(self, host: str) -> CircuitBreaker | None:
        """The breaker requests to ``host`` (``"api.example.com"``, or ``"127.0.0.1:8080"``
        with a port) go through without an infrastructure; ``None`` when there is none."""
        return self._outbound.breaker_for(host)

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,  # seconds, (connect, read), a urllib3 Timeout, or None
        verify: Any = True,  # as HTTPAdapter.send takes them (typed by requests' own version)
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        def attempt(left: float | None) -> requests.Response:
            sent = timeout if left is None else _capped(timeout, left)
            return super(ProtectedAdapter, self).send(
                request, stream=stream, timeout=sent, verify=verify, cert=cert, proxies=proxies
            )

        return send(self._outbound, _host(request.url), attempt, _close)


def _host(url: str | None) -> str:
    parts = urlsplit(url or "")
    return host_key(parts.hostname or "", parts.port)


def _capped(timeout: object, left: float) -> float | tuple[float, float]:
    """requests' ``timeout`` (seconds, ``(connect, read)``, a urllib3 ``Timeout`` or ``None``),
    neither part longer than ``left``."""
    if isinstance(timeout, tuple):
        connect, read = timeout
        return (cap(_seconds(connect), left), cap(_seconds(read), left))
    if isinstance(timeout, Timeout):
        return (
            cap(_seconds(timeout.connect_timeout), left),
            cap(_seconds(timeout.read_timeout), left),
        )
    return cap(_seconds(timeout), left)


def _seconds(value: object) -> float | None:
    # urllib3 reads "the default" as a sentinel object: no bound of ours to keep.
    return float(value) if isinstance(value, int | float) else None


def _close(response: requests.Response) -> None:
    response.close()
