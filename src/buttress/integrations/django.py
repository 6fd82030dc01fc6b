"""buttress for Django: a middleware, view decorators, and the health views.

Configured from ``settings.BUTTRESS``::

    BUTTRESS = {
        "config": "buttress.toml",        # or a dict; or "infrastructure": an Infrastructure
        "namespace": "web",
        "trusted_proxies": ["10.0.0.0/8"],
        "rate_limit": {"limiter": "api", "key": "ip"},   # or "protect": {"service": ...}
    }

* :class:`ButtressMiddleware` guards every view by the default policy (``protect`` or
  ``rate_limit`` above) unless the view has its own (:func:`protect`, :func:`rate_limit`) or
  is :func:`exempt`; it answers a refusal a view raises (a nested ``infra.call``) too.
* :func:`protect` / :func:`rate_limit` guard one view, with or without the middleware; an
  ``async def`` view is guarded on the event loop (the limiter and pool awaited).
* :func:`health_urls`: ``health``, ``health/livez``, ``health/readyz`` for ``urlpatterns``.

The infrastructure is built once per process, on first use, and closed at exit (or when a
test overrides ``BUTTRESS``). A refused request is answered 429 or 503 with ``Retry-After``
and ``RateLimit`` fields (``_http.refused``); an admitted one carries its ``RateLimit``
fields unless ``"rate_limit_headers": False``. An exception a view raises is classified as
the core classifies any (``Http404``, ``PermissionDenied`` neutral); an answered 4xx is
neutral too, an answered 5xx a failure of the protected service.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from inspect import iscoroutinefunction
from typing import TYPE_CHECKING, Any, TypeVar

from django.conf import settings as django_settings
from django.core.signals import setting_changed
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseNotAllowed
from django.urls import URLPattern, path

from .._health import Probe, health_response
from .._priority import PriorityName
from ._http import Answer, Headers, api_key, client_ip, read_key
from ._views import (
    ATTRIBUTE,
    EXEMPT,
    REFUSALS,
    Passage,
    Policy,
    ProcessInfrastructure,
    Settings,
    caller,
    enter,
    enter_async,
    read_settings,
    refusal,
)

if TYPE_CHECKING:
    from .._infrastructure import Infrastructure
    from ..ratelimit._limiter import RateLimiter

__all__ = [
    "ButtressMiddleware",
    "api_key",
    "client_ip",
    "exempt",
    "health_urls",
    "health_view",
    "infrastructure",
    "protect",
    "rate_limit",
]

View = TypeVar("View", bound=Callable[..., Any])


class _State:
    """``settings.BUTTRESS`` as read, and the process's infrastructure."""

    def __init__(self) -> None:
        self.settings: Settings = read_settings(
            getattr(django_settings, "BUTTRESS", {}), "BUTTRESS"
        )
        self.process = ProcessInfrastructure(self.settings)


_state: _State | None = None
_state_lock = threading.Lock()


def _current() -> _State:
    global _state
    state = _state
    if state is None:
        with _state_lock:
            state = _state
            if state is None:
                state = _state = _State()
    return state


def _reset(*, setting: str, **_: Any) -> None:
    # A test's override_settings(BUTTRESS=...) starts over; what was built is closed.
    global _state
    if setting == "BUTTRESS":
        with _state_lock:
            state, _state = _state, None
        if state is not None:
            state.process.close()


setting_changed.connect(_reset, dispatch_uid="buttress.integrations.django")


def infrastructure() -> Infrastructure:
    """The process's infrastructure (``settings.BUTTRESS``), built on first use."""
    return _current().process.get()


def _peer(request: HttpRequest) -> str | None:
    peer: str | None = request.META.get("REMOTE_ADDR")
    return peer


def _header(request: HttpRequest, name: str) -> str | None:
    value: str | None = request.headers.get(name)
    return value


def _response(answer: Answer) -> HttpResponse:
    return HttpResponse(answer.body, status=answer.status, headers=dict(answer.headers))


def _passed(request: HttpRequest, policy: Policy) -> Passage | HttpResponse:
    """The request let through ``policy``, or the answer that refuses it."""
    state = _current()
    try:
        key = read_key(caller(policy, state.settings.client), request, _peer, _header)
        return enter(state.process.get(), policy, key)
    except REFUSALS as exc:
        return _response(refusal(exc, state.settings.rate_limit_headers))


def _finish(response: HttpResponseBase, passage: Passage, exc: BaseException | None) -> None:
    passage.leave(response.status_code, exc)
    if _current().settings.rate_limit_headers:
        _add(response, passage.fields())


def _add(response: HttpResponseBase, fields: Headers) -> None:
    for name, value in fields:
        if name not in response:
            response[name] = value


async def _passed_async(request: HttpRequest, policy: Policy) -> Passage | HttpResponse:
    """:func:`_passed` for an ``async def`` view: the limiter and the pool are awaited."""
    state = _current()
    try:
        key = read_key(caller(policy, state.settings.client), request, _peer, _header)
        return await enter_async(state.process.get(), policy, key)
    except REFUSALS as exc:
        return _response(refusal(exc, state.settings.rate_limit_headers))


async def _finish_async(
    response: HttpResponseBase, passage: Passage, exc: BaseException | None
) -> None:
    await passage.leave_async(response.status_code, exc)
    if _current().settings.rate_limit_headers:
        _add(response, passage.fields())


def _guarded(policy: Policy) -> Callable[[View], View]:
    def decorate(view: View) -> View:
        if iscoroutinefunction(view):
            return _guarded_async(policy, view)

        @functools.wraps(view)
        def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            passage = _passed(request, policy)
            if isinstance(passage, HttpResponse):
                return passage
            try:
                response: HttpResponseBase = view(request, *args, **kwargs)
            except REFUSALS as exc:  # a nested protected call refused: answered, not a 500
                answer = _response(refusal(exc, _current().settings.rate_limit_headers))
                _finish(answer, passage, exc)
                return answer
            except BaseException as exc:
                passage.leave(exc=exc)
                raise
            _finish(response, passage, None)
            return response

        setattr(guarded, ATTRIBUTE, policy)
        return guarded  # type: ignore[return-value]

    return decorate


def _guarded_async(policy: Policy, view: View) -> View:
    """The guard of an ``async def`` view (Django runs it on its event loop, under ASGI)."""

    @functools.wraps(view)
    async def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        passage = await _passed_async(request, policy)
        if isinstance(passage, HttpResponse):
            return passage
        try:
            response: HttpResponseBase = await view(request, *args, **kwargs)
        except REFUSALS as exc:  # a nested protected call refused: answered, not a 500
            answer = _response(refusal(exc, _current().settings.rate_limit_headers))
            await _finish_async(answer, passage, exc)
            return answer
        except BaseException as exc:
            await passage.leave_async(exc=exc)
            raise
        await _finish_async(response, passage, None)
        return response

    setattr(guarded, ATTRIBUTE, policy)
    return guarded  # type: ignore[return-value]


def protect(
    service: str,
    *,
    key: Any = None,
    limiter: str | RateLimiter | None = None,
    cost: float = 1,
    critical: bool | None = None,
    priority: PriorityName | None = None,
) -> Callable[[View], View]:
    """Guard a view by the infrastructure's protection of ``service`` (its rate limit,
    breaker, pool, shedding); ``key`` names the caller: :func:`client_ip`, :func:`api_key`,
    a function of the request, or a mapping of them (``{"user": ..., "org": ...}``)."""
    return _guarded(Policy(service, limiter, key, cost, critical, priority))


def rate_limit(
    limiter: str | RateLimiter, *, key: Any = None, cost: float = 1
) -> Callable[[View], View]:
    """Guard a view by a rate limiter alone: a configured limiter's name or a
    :class:`~buttress.RateLimiter`; ``key`` as for :func:`protect`, by default the client's
    address (behind ``BUTTRESS["trusted_proxies"]``)."""
    return _guarded(Policy(None, limiter, key, cost))


def exempt(view: View) -> View:
    """Leave a view out of the middleware's default policy."""
    setattr(view, ATTRIBUTE, EXEMPT)
    return view


_PASSAGE = "_buttress_passage"
_RAISED = "_buttress_raised"


class ButtressMiddleware:
    """Guards every view by ``settings.BUTTRESS``'s default policy (a view's own decorator
    or :func:`exempt` takes its place), and answers a refusal any view raises."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        try:
            response = self.get_response(request)
        except BaseException as exc:
            passage = request.__dict__.pop(_PASSAGE, None)
            if passage is not None:
                passage.leave(exc=exc)
            raise
        passage = request.__dict__.pop(_PASSAGE, None)
        if passage is not None:
            _finish(response, passage, request.__dict__.pop(_RAISED, None))
        return response

    def process_view(
        self, request: HttpRequest, view: Callable[..., Any], args: Any, kwargs: Any
    ) -> HttpResponseBase | None:
        if getattr(view, ATTRIBUTE, None) is not None:
            return None  # its own policy, or exempt
        policy = _current().settings.default
        if policy is None:
            return None
        passage = _passed(request, policy)
        if isinstance(passage, HttpResponse):
            return passage
        request.__dict__[_PASSAGE] = passage
        return None

    def process_exception(
        self, request: HttpRequest, exception: Exception
    ) -> HttpResponseBase | None:
        if _PASSAGE in request.__dict__:
            request.__dict__[_RAISED] = exception  # classified as raised, not as answered
        if isinstance(exception, REFUSALS):
            return _response(refusal(exception, _current().settings.rate_limit_headers))
        return None


# -- health -----------------------------------------------------------------------------------


@exempt  # a probe is never limited nor refused by the service's breaker
def health_view(request: HttpRequest, probe: Probe = "health") -> HttpResponseBase:
    """The health report of the process's infrastructure (``probe``: ``"health"``,
    ``"livez"`` or ``"readyz"``), from :func:`buttress.health_response`; left out of the
    middleware's default policy."""
    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET", "HEAD"])
    status, headers, body = health_response(infrastructure(), probe)
    return HttpResponse(body, status=status, headers=headers)


def health_urls(prefix: str = "health") -> list[URLPattern]:
    """URL patterns for the health endpoints: ``prefix`` (the report), ``prefix/livez`` and
    ``prefix/readyz``, each answered at its exact path (no redirect)."""
    prefix = prefix.strip("/")
    return [
        path(prefix, health_view, name="buttress-health"),
        path(f"{prefix}/livez", health_view, {"probe": "livez"}, name="buttress-livez"),
        path(f"{prefix}/readyz", health_view, {"probe": "readyz"}, name="buttress-readyz"),
    ]
