"""buttress for Flask: an extension, view decorators, and the health blueprint.

Configured from ``app.config``::

    app.config["BUTTRESS_CONFIG"] = "buttress.toml"     # or a dict
    app.config["BUTTRESS_TRUSTED_PROXIES"] = ["10.0.0.0/8"]
    app.config["BUTTRESS_RATE_LIMIT"] = {"limiter": "api", "key": "ip"}  # every view's
    buttress = Buttress(app)          # or Buttress(), then buttress.init_app(app)

(``BUTTRESS_INFRASTRUCTURE``, ``BUTTRESS_NAMESPACE``, ``BUTTRESS_PROTECT`` and
``BUTTRESS_RATE_LIMIT_HEADERS`` as Django's ``BUTTRESS`` entries.)

* :class:`Buttress` guards every view by the default policy unless the view has its own
  (:func:`protect`, :func:`rate_limit`, below ``@app.route``) or is :func:`exempt`, and
  registers the error handler that answers a :class:`~buttress.RejectedError` (from a policy
  or a nested ``infra.call``) with 429 or 503 and its fields (``_http.refused``).
* :func:`health_blueprint`: ``/health``, ``/health/livez``, ``/health/readyz``.

An admitted request's answer carries its ``RateLimit`` fields unless
``BUTTRESS_RATE_LIMIT_HEADERS`` is false. An exception a view raises is classified as the
core classifies any (``abort(404)`` neutral); an answered 4xx is neutral too, an answered
5xx a failure of the protected service.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from flask import Blueprint, Flask, Response, current_app, g, request
from flask.typing import ResponseReturnValue

from .._errors import ContextError, RejectedError
from .._health import Probe, health_response
from .._priority import PriorityName
from ._http import Answer, api_key, client_ip, read_key
from ._views import (
    ATTRIBUTE,
    EXEMPT,
    Passage,
    Policy,
    ProcessInfrastructure,
    Settings,
    caller,
    enter,
    read_settings,
    refusal,
)

if TYPE_CHECKING:
    from werkzeug.wrappers import Request

    from .._infrastructure import Infrastructure
    from ..ratelimit._limiter import RateLimiter

__all__ = [
    "Buttress",
    "api_key",
    "client_ip",
    "exempt",
    "health_blueprint",
    "infrastructure",
    "protect",
    "rate_limit",
]

View = TypeVar("View", bound=Callable[..., Any])
PREFIX = "BUTTRESS_"
_PASSAGE = "_buttress_passage"


class _State:
    __slots__ = ("process", "settings")

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process = ProcessInfrastructure(settings)


class Buttress:
    """The extension: ``Buttress(app)``, or ``Buttress()`` and :meth:`init_app` in an app
    factory. ``infrastructure`` is used instead of one built from ``BUTTRESS_CONFIG``."""

    def __init__(
        self, app: Flask | None = None, *, infrastructure: Infrastructure | None = None
    ) -> None:
        self._infrastructure = infrastructure
        self._app: Flask | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        values = {
            name[len(PREFIX) :].lower(): value
            for name, value in app.config.items()
            if name.startswith(PREFIX)
        }
        if self._infrastructure is not None:
            values.setdefault("infrastructure", self._infrastructure)
        settings = read_settings(values, lambda name: PREFIX + name.upper())
        app.extensions["buttress"] = _State(settings)
        self._app = app
        app.before_request(_before)
        app.after_request(_after)
        app.teardown_request(_teardown)
        app.register_error_handler(RejectedError, _refused)
        app.register_error_handler(ContextError, _refused)

    def infrastructure(self) -> Infrastructure:
        """The infrastructure of the current app, or outside a request of the app this was
        last set up for (:func:`infrastructure`)."""
        if self._app is None or current_app:
            return infrastructure()
        with self._app.app_context():
            return infrastructure()


def _state() -> _State:
    state = current_app.extensions.get("buttress")
    if state is None:
        raise RuntimeError(
            f"buttress is not set up for app {current_app.name!r}: call Buttress(app) or "
            "Buttress().init_app(app) first"
        )
    return state  # type: ignore[no-any-return]


def infrastructure() -> Infrastructure:
    """The current app's infrastructure: the one given, or built from ``BUTTRESS_CONFIG`` on
    first use (and closed at exit)."""
    return _state().process.get()


def _peer(req: Request) -> str | None:
    return req.remote_addr


def _header(req: Request, name: str) -> str | None:
    return req.headers.get(name)


def _response(answer: Answer) -> Response:
    return Response(answer.body, status=answer.status, headers=list(answer.headers))


def _refused(exc: RejectedError | ContextError) -> Response:
    return _response(refusal(exc, _state().settings.rate_limit_headers))


def _enter(policy: Policy, state: _State | None = None) -> Passage:
    state = state or _state()
    key = read_key(caller(policy, state.settings.client), request, _peer, _header)
    return enter(state.process.get(), policy, key)


def _finish(response: Response, passage: Passage, state: _State | None = None) -> Response:
    passage.leave(response.status_code)
    if (state or _state()).settings.rate_limit_headers:
        headers = response.headers
        for name, value in passage.fields():
            if name not in headers:  # the view's own stay
                headers.add(name, value)
    return response


def _before() -> None:
    app = current_app._get_current_object()  # type: ignore[attr-defined]  # once, not per use
    view = app.view_functions.get(request.endpoint or "")
    if view is None or getattr(view, ATTRIBUTE, None) is not None:
        return  # no view (a 404, a static file's), its own policy, or exempt
    state: _State = app.extensions["buttress"]
    policy = state.settings.default
    if policy is not None:
        g.setdefault(_PASSAGE, _enter(policy, state))  # refused: the error handler answers


def _after(response: Response) -> Response:
    # Every answer comes here, an error's too (abort(404): 404; an unhandled one: 500).
    passage = g.pop(_PASSAGE, None)
    return response if passage is None else _finish(response, passage)


def _teardown(exc: BaseException | None) -> None:
    passage = g.pop(_PASSAGE, None)  # no answer was made: end it with what was raised
    if passage is not None:
        passage.leave(500, exc)


def _guarded(policy: Policy) -> Callable[[View], View]:
    def decorate(view: View) -> View:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> ResponseReturnValue:
            passage = _enter(policy)
            try:
                # An async view runs as Flask runs one (flask[async]): to its end, here.
                result = current_app.ensure_sync(view)(*args, **kwargs)
                answer = current_app.make_response(result)
            except BaseException as exc:
                passage.leave(exc=exc)
                raise  # a refusal from a nested call: the error handler answers it
            return _finish(answer, passage)

        setattr(guarded, ATTRIBUTE, policy)
        return guarded  # type: ignore[return-value]

    return decorate


def protect(
    service: str,
    *,
    key: Any = None,
    limiter: str | RateLimiter | None = None,
    cost: float = 1,
    critical: bool | None = None,
    priority: PriorityName | None = None,
) -> Callable[[View], View]:
    """Guard a view (below ``@app.route``) by the infrastructure's protection of
    ``service``; ``key`` names the caller: :func:`client_ip`, :func:`api_key`, a function of
    the request, or a mapping of them (``{"user": ..., "org": ...}``)."""
    return _guarded(Policy(service, limiter, key, cost, critical, priority))


def rate_limit(
    limiter: str | RateLimiter, *, key: Any = None, cost: float = 1
) -> Callable[[View], View]:
    """Guard a view by a rate limiter alone: a configured limiter's name or a
    :class:`~buttress.RateLimiter`; ``key`` as for :func:`protect`, by default the client's
    address (behind ``BUTTRESS_TRUSTED_PROXIES``)."""
    return _guarded(Policy(None, limiter, key, cost))


def exempt(view: View) -> View:
    """Leave a view (below ``@app.route``) out of the default policy."""
    setattr(view, ATTRIBUTE, EXEMPT)
    return view


def health_blueprint(url_prefix: str = "/health", name: str = "buttress_health") -> Blueprint:
    """A blueprint answering the health endpoints of the app's infrastructure at
    ``url_prefix`` (the report), ``url_prefix/livez`` and ``url_prefix/readyz``, each at its
    exact path (:func:`buttress.health_response`); left out of the default policy."""
    blueprint = Blueprint(name, __name__, url_prefix=url_prefix.rstrip("/"))

    @exempt
    def health(probe: Probe = "health") -> ResponseReturnValue:
        status, headers, body = health_response(infrastructure(), probe)
        return Response(body, status=status, headers=headers)

    blueprint.add_url_rule("", "health", health, methods=["GET"])
    blueprint.add_url_rule("/livez", "livez", health, defaults={"probe": "livez"})
    blueprint.add_url_rule("/readyz", "readyz", health, defaults={"probe": "readyz"})
    return blueprint
