"""buttress in any ASGI application (Starlette, FastAPI, Litestar, Quart...): pure ASGI,
no framework imported. See docs/integrations/asgi.md.

* :class:`RateLimitMiddleware`: every HTTP request passes a :class:`~buttress.RateLimiter`
  first; a refused one is answered ``429`` with ``Retry-After`` and the ``RateLimit`` fields,
  an admitted one carries the ``RateLimit`` fields too (``headers=False`` leaves them off).
* :class:`ProtectMiddleware`: every HTTP request runs inside ``infra.protect(service)``
  (memory shedding, rate limit, breaker, timeout); a refusal is answered ``429`` or ``503``,
  a timeout before the response began ``504``. The breaker counts the app's answer by its
  status, as it counts a raised error with that status: a 5xx a failure, a 4xx neutral.
* :func:`limit`: the same limit on one endpoint (``request -> response``, Starlette's).
* Keys, as every web integration of buttress takes them: :func:`client_ip` (behind trusted
  proxies), :func:`api_key` (a header's value), a function of the ASGI scope (such as
  :func:`from_scope`: the user or org an authentication middleware put there), or a dict of
  these: the context a limiter of several scopes takes (``{"user": ..., "org": ...}``).
  A request without an id a scope needs is answered ``400``.

Only ``http`` requests are limited; ``websocket`` and ``lifespan`` pass through untouched.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any

from .._errors import CallTimeoutError, ConfigError, ContextError, RejectedError
from .._priority import NORMAL, PriorityName, priority_of
from ..http import admitted_fields
from ..ratelimit._decision import Decision, exceeded
from ..ratelimit._limiter import RateLimiter
from ._http import (
    Answer,
    AnsweredError,
    Headers,
    RequestKey,
    answered,
    api_key,
    check_key,
    client_ip,
    read_key,
    refused,
    unidentified,
)
from ._http import timed_out as timed_out_answer

__all__ = [
    "ProtectMiddleware",
    "RateLimitMiddleware",
    "api_key",
    "client_ip",
    "from_scope",
    "limit",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Exempt = str | Iterable[str] | Callable[[Scope], bool]

# -- key functions ---------------------------------------------------------------------------------


def from_scope(*path: str, default: Any = None) -> Callable[[Scope], Any]:
    """A value an outer middleware left in the scope, by a path of keys or attributes:
    ``from_scope("user", "org_id")`` reads ``scope["user"].org_id`` (Starlette's
    ``AuthenticationMiddleware`` sets ``scope["user"]``), ``from_scope("state", "tenant")``
    what ``request.state.tenant = ...`` set. ``default`` when a step is missing."""
    if not path or not all(isinstance(p, str) for p in path):
        raise TypeError(f"from_scope() takes one or more names, got {path!r}")

    def read(scope: Scope) -> Any:
        value: Any = scope
        for step in path:
            value = value.get(step) if isinstance(value, Mapping) else getattr(value, step, None)
            if value is None:
                return default
        return value

    return read


def _peer(scope: Scope) -> str | None:
    client = scope.get("client")
    return client[0] if client else None


def _header(scope: Scope, name: str) -> str | None:
    """A request header's value (``name`` in lower case), repeated fields joined by commas
    (as HTTP allows)."""
    wanted = name.encode("latin-1")
    found = [v for k, v in scope.get("headers", ()) if k == wanted]
    if not found:
        return None
    return b", ".join(found).decode("latin-1")


def _reader(key: Any, path: str = "key") -> Callable[[Scope], Any]:
    """``scope -> id or context`` for a key (see the module docstring)."""
    key = check_key(key, path)
    if isinstance(key, RequestKey):  # the common case, read without read_key's dispatch
        read = key.read
        return lambda scope: read(_peer(scope), functools.partial(_header, scope))
    return lambda scope: read_key(key, scope, _peer, _header)


# -- the rate-limit middleware ---------------------------------------------------------------------


class RateLimitMiddleware:
    """Every HTTP request passes ``limiter`` first (see the module docstring).

    ``limiter`` is a :class:`~buttress.RateLimiter`, or the name of one of ``infra``'s
    (``[rate_limiting.limiters.NAME]``). ``key`` says whose request it is (see the module
    docstring): by default the client's address (:func:`client_ip`, no proxy trusted).
    ``headers`` puts the ``RateLimit`` fields on admitted responses as well as refusals.
    ``exempt``: paths (each with everything below it: ``"/health"`` covers
    ``/health/livez``), or a predicate ``scope -> bool``. ``cost`` is charged per request.
    """

    __slots__ = ("_acquire", "_asynchronous", "_cost", "_exempt", "_headers", "_key", "app")

    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: RateLimiter | str,
        key: Any = None,
        infra: Any = None,
        headers: bool = True,
        exempt: Exempt = (),
        cost: float = 1,
    ) -> None:
        self.app = app
        chosen = _limiter(limiter, infra)
        self._key = _reader(client_ip() if key is None else key)
        self._headers = bool(headers)
        self._exempt = _exemption(exempt)
        self._cost = cost
        # A limiter in memory decides without I/O: no coroutine per request.
        self._asynchronous = not chosen._in_memory
        self._acquire: Any = chosen.try_acquire_async if self._asynchronous else chosen.try_acquire

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self._exempt is not None and self._exempt(scope)):
            await self.app(scope, receive, send)
            return
        try:
            key = self._key(scope)
            if self._asynchronous:
                decision = await self._acquire(key, self._cost)
            else:
                decision = self._acquire(key, self._cost)
        except ContextError as exc:  # no id for a scope: the request cannot be told apart
            await _send_answer(send, unidentified(exc))
            return
        if not decision.allowed:
            await _send_answer(send, refused(exceeded(decision)))
            return
        if not self._headers:
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, _with_fields(send, _admitted(decision)))


# -- the protect middleware ------------------------------------------------------------------------


class ProtectMiddleware:
    """Every HTTP request runs inside ``infra.protect(service, ...)`` (see the module
    docstring).

    ``service`` is a service's name, or ``scope -> name`` (one breaker per upstream, per
    route...). ``key`` (as for :class:`RateLimitMiddleware`; none by default) fills the
    service's limiter, if it has one. ``timeout`` (seconds; else the service's own) cancels
    a request that runs past it: ``504`` when nothing was sent yet. ``headers`` puts the
    ``RateLimit`` fields of the service's limiter on admitted responses. ``exempt`` as for
    :class:`RateLimitMiddleware`. ``priority`` (``"critical"``, ``"normal"``,
    ``"sheddable"``, or ``scope -> name``; else the service's own) is each request's priority
    under overload and degradation (docs/overload.md): health probes critical, a bulk export
    sheddable.

    The breaker counts each request by how the app ended it: an exception as the breaker's
    rules classify it; an answer of 400 or more as an exception with that status
    (:func:`~buttress.integrations._http.answered`): a 5xx a failure, a 4xx neutral
    (except 408 and 429), as any ``record`` / ``ignore`` status rule says.
    """

    __slots__ = (
        "_exempt",
        "_headers",
        "_infra",
        "_key",
        "_priority",
        "_service",
        "_timeout",
        "app",
    )

    def __init__(
        self,
        app: ASGIApp,
        *,
        infra: Any,
        service: str | Callable[[Scope], str],
        key: Any = None,
        timeout: float | None = None,
        headers: bool = True,
        exempt: Exempt = (),
        priority: PriorityName | Callable[[Scope], PriorityName] | None = None,
    ) -> None:
        if not callable(getattr(infra, "protect", None)):
            raise TypeError(
                f"ProtectMiddleware: infra must be a buttress.Infrastructure, got {infra!r}"
            )
        if not (isinstance(service, str) or callable(service)):
            raise TypeError(
                "ProtectMiddleware: service must be a name or a function scope -> name, "
                f"got {service!r}"
            )
        if isinstance(priority, str) or not (priority is None or callable(priority)):
            priority_of(priority, None, NORMAL)  # a wrong name fails here, not per request
        self.app = app
        self._infra = infra
        self._service = service
        self._priority = priority
        self._key = None if key is None else _reader(key)
        self._timeout = timeout
        self._headers = bool(headers)
        self._exempt = _exemption(exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self._exempt is not None and self._exempt(scope)):
            await self.app(scope, receive, send)
            return
        service = self._service if isinstance(self._service, str) else self._service(scope)
        priority = self._priority if not callable(self._priority) else self._priority(scope)
        response = _Response(send)
        try:
            key = self._key(scope) if self._key is not None else None
            keyed = {"context": key} if isinstance(key, Mapping) else {"rate_key": key}
            guard = self._infra.protect(service, timeout=self._timeout, priority=priority, **keyed)
            async with guard:
                response.entered = True
                if self._headers and guard.decision is not None:
                    response.fields = _admitted(guard.decision)
                await self.app(scope, receive, response.send)
                response.error = answered(response.status)
                if response.error is not None:
                    raise response.error  # counted by its status, then dropped below
        except AnsweredError as exc:
            if exc is not response.error:
                raise
        except ContextError as exc:  # no id for a scope of the service's limiter
            if response.entered:
                raise
            await _send_answer(send, unidentified(exc))
        except RejectedError as exc:  # refused at the door, or by a call inside the app
            if response.started:
                raise
            await _send_answer(send, refused(exc))
        except CallTimeoutError as exc:
            if response.started:
                raise
            await _send_answer(send, timed_out_answer(exc))


class _Response:
    """What a middleware sees of the app's response: whether it began, with which status."""

    __slots__ = ("_send", "entered", "error", "fields", "started", "status")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.entered = False  # the protection admitted the request: the app runs
        self.started = False
        self.status = 0
        self.fields: list[tuple[bytes, bytes]] = []
        self.error: AnsweredError | None = None

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            self.status = int(message["status"])
            if self.fields:
                message["headers"] = [*message.get("headers", ()), *self.fields]
        await self._send(message)


# -- one endpoint's limit --------------------------------------------------------------------------


def limit(
    limiter: RateLimiter | str,
    *,
    key: Any = None,
    infra: Any = None,
    headers: bool = True,
    cost: float = 1,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Limit one endpoint of the ``request -> response`` kind (Starlette's ``Route``; for
    FastAPI see :func:`buttress.integrations.fastapi.rate_limit`): ``limiter``, ``key``,
    ``infra``, ``headers`` and ``cost`` as for :class:`RateLimitMiddleware` (a function key is
    given ``request.scope``). A refused request gets the 429 answer (400 without an id) and
    the endpoint is not called.
    """
    chosen = _limiter(limiter, infra)
    read = _reader(client_ip() if key is None else key)
    in_memory = chosen._in_memory  # decides without I/O: no coroutine per request

    def decorate(endpoint: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(endpoint):
            raise TypeError(f"limit(...) decorates an endpoint function, got {endpoint!r}")

        def answer(decision: Decision, response: Any) -> Any:
            if not headers:
                return response
            return _Fielded(response, _admitted(decision))

        if inspect.iscoroutinefunction(endpoint):

            @functools.wraps(endpoint)
            async def limited_async(request: Any) -> Any:
                try:
                    k = read(request.scope)
                    decision = (
                        chosen.try_acquire(k, cost)
                        if in_memory
                        else await chosen.try_acquire_async(k, cost)
                    )
                except ContextError as exc:
                    return _Answered(unidentified(exc))
                if not decision.allowed:
                    return _Answered(refused(exceeded(decision)))
                return answer(decision, await endpoint(request))

            return limited_async

        @functools.wraps(endpoint)  # run in a worker thread by the framework, as the endpoint
        def limited(request: Any) -> Any:
            try:
                decision = chosen.try_acquire(read(request.scope), cost)
            except ContextError as exc:
                return _Answered(unidentified(exc))
            if not decision.allowed:
                return _Answered(refused(exceeded(decision)))
            return answer(decision, endpoint(request))

        return limited

    return decorate


class _Answered:
    """An :class:`~buttress.integrations._http.Answer` as an ASGI response."""

    __slots__ = ("answer",)

    def __init__(self, answer: Answer) -> None:
        self.answer = answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _send_answer(send, self.answer)


class _Fielded:
    """A response (any ASGI callable) with header fields added to its start."""

    __slots__ = ("fields", "response")

    def __init__(self, response: ASGIApp, fields: list[tuple[bytes, bytes]]) -> None:
        self.response = response
        self.fields = fields

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.response(scope, receive, _with_fields(send, self.fields))


# -- shared ----------------------------------------------------------------------------------------


def _limiter(limiter: RateLimiter | str, infra: Any) -> RateLimiter:
    if isinstance(limiter, RateLimiter):
        return limiter
    if not isinstance(limiter, str):
        raise TypeError(
            f"limiter must be a buttress.RateLimiter or a limiter's name, got {limiter!r}"
        )
    limiters = getattr(infra, "limiters", None)
    if not isinstance(limiters, Mapping):
        raise TypeError(
            f"limiter={limiter!r} names a limiter: pass infra= (a buttress.Infrastructure) "
            "to find it in"
        )
    found = limiters.get(limiter)
    if found is None:
        known = ", ".join(sorted(limiters)) or "none"
        raise ConfigError("limiter", f"no limiter named {limiter!r} (configured: {known})")
    return found  # type: ignore[no-any-return]


def _exemption(exempt: Exempt) -> Callable[[Scope], bool] | None:
    if callable(exempt):
        return exempt
    paths = (exempt,) if isinstance(exempt, str) else tuple(exempt)
    for path in paths:
        if not isinstance(path, str) or not path.startswith("/"):
            raise TypeError(f"exempt paths start with '/', got {path!r}")
    if not paths:
        return None
    exact = frozenset(p.rstrip("/") or "/" for p in paths)
    below = tuple(p.rstrip("/") + "/" for p in paths)

    def exempted(scope: Scope) -> bool:
        path: str = scope.get("path", "")
        return path in exact or path.startswith(below)

    return exempted


def _encoded(fields: Headers) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in fields]


def _admitted(decision: Decision) -> list[tuple[bytes, bytes]]:
    """The ``RateLimit`` fields of an admitting decision, encoded (on every admitted
    response: made without :func:`_encoded`'s generality)."""
    policy, state = admitted_fields(decision)
    return [
        (b"ratelimit-policy", policy.encode("latin-1")),
        (b"ratelimit", state.encode("latin-1")),
    ]


def _with_fields(send: Send, fields: list[tuple[bytes, bytes]]) -> Send:
    async def send_with_fields(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), *fields]
        await send(message)

    return send_with_fields


async def _send_answer(send: Send, answer: Answer) -> None:
    headers = _encoded(answer.headers)
    headers.append((b"content-length", str(len(answer.body)).encode("latin-1")))
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})
