"""How a finished call counts: the one classification the breaker and the protect pipeline share.

A call ends in one of four ways. :func:`classify` decides which for a call that raised, by
the breaker's ``record`` / ``ignore`` settings; a call that returned is a success unless the
breaker's ``failure_result`` says otherwise (the shell asks it).

=============  ===================================================================
``SUCCESS``    counts in the window as a call that worked
``FAILURE``    counts as a failure (and may degrade or open the breaker)
``IGNORED``    an exception ``ignore`` names, or an HTTP client error (below):
               counted in its own tally, nothing else
``CANCELLED``  the caller gave up (task cancelled, interrupt, exit): says nothing
               about the dependency, so it is neutral too
=============  ===================================================================

An HTTP client error (a status from 400 to 499) says the request was wrong, not that the
dependency fails: a web framework's ``HTTPException(404)`` raised through a protected call, an
upstream's 404 in ``httpx.HTTPStatusError``. With ``client_errors_neutral`` (the default) it is
``IGNORED``, except 408 (Request Timeout) and 429 (Too Many Requests), which say the server is
slow or overloaded, and so count like any other exception. :func:`http_status` finds the
status without importing any framework.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from enum import IntEnum
from typing import TYPE_CHECKING, Any

from .._errors import ButtressError, CallTimeoutError

if TYPE_CHECKING:
    from ._config import BreakerConfig


class Outcome(IntEnum):
    """How one call ended, as the breaker counts it."""

    SUCCESS = 0
    FAILURE = 1
    IGNORED = 2
    CANCELLED = 3

    @property
    def health(self) -> bool | None:
        """What the outcome says about the dependency: ``True`` healthy, ``False`` failing,
        ``None`` nothing (ignored and cancelled calls). Adaptive limits learn from it."""
        return _HEALTH[self]


_HEALTH = {
    Outcome.SUCCESS: True,
    Outcome.FAILURE: False,
    Outcome.IGNORED: None,
    Outcome.CANCELLED: None,
}

# Ways a call can end that say nothing about the dependency's health.
CANCELLATION: tuple[type[BaseException], ...] = (
    asyncio.CancelledError,
    KeyboardInterrupt,
    SystemExit,
    GeneratorExit,
)


def classify(config: BreakerConfig, exc: BaseException) -> Outcome:
    """The outcome of a call that raised ``exc``: cancelled, an injected fault (always a
    failure: chaos simulates one whatever ``record`` says), a :class:`~buttress.CallTimeoutError`
    (always a failure: a hung dependency must open the breaker), ignored (by ``ignore``, or as an
    HTTP client error), recorded, or else a success (an exception ``record`` does not name is
    the caller's business, not a sign that the dependency fails)."""
    if isinstance(exc, CANCELLATION):
        return Outcome.CANCELLED
    if getattr(exc, "injected", False) is True:
        return Outcome.FAILURE
    if isinstance(exc, CallTimeoutError):  # the call's own timeout: the dependency hung
        return Outcome.FAILURE
    for matcher in config.ignore:
        if _matches(matcher, exc):
            return Outcome.IGNORED
    if config.client_errors_neutral and is_client_error(exc):
        return Outcome.IGNORED
    for matcher in config.record:
        if _matches(matcher, exc):
            return Outcome.FAILURE
    return Outcome.SUCCESS


def health_of(config: BreakerConfig | None, exc: BaseException) -> bool | None:
    """What a call that raised ``exc`` says about its dependency (see :attr:`Outcome.health`):
    as a breaker with ``config`` classifies it, or, with no breaker, a failure unless the
    caller gave up or the request was wrong (an HTTP client error, as a breaker's default)."""
    if config is not None:
        return classify(config, exc).health
    return None if isinstance(exc, CANCELLATION) or is_client_error(exc) else False


# -- HTTP client errors --------------------------------------------------------------------------

# Statuses from 400 to 499 that still say the server is in trouble: slow, or overloaded.
OVERLOAD_STATUSES = frozenset({408, 429})

# Django's exceptions carry no status; its request handler answers them with these.
_DJANGO_STATUS = {
    ("django.http.response", "Http404"): 404,
    ("django.core.exceptions", "PermissionDenied"): 403,
    ("django.core.exceptions", "BadRequest"): 400,
    ("django.core.exceptions", "SuspiciousOperation"): 400,
    ("django.http.multipartparser", "MultiPartParserError"): 400,
}

StatusReader = Callable[[BaseException], Any]
_UNSEEN: Any = object()

# The way to read each exception class's status, found once per class (None: it has none).
_READERS: dict[type[BaseException], StatusReader | None] = {}
_MAX_READERS = 1024  # classes made at run time must not grow it without end


def is_client_error(exc: BaseException) -> bool:
    """Whether ``exc`` stands for an HTTP client error that says nothing about the server:
    a status from 400 to 499, other than 408 and 429."""
    if _READERS.get(exc.__class__, _UNSEEN) is None:
        return False  # OSError, TimeoutError, ...: the common failures cost one lookup
    status = http_status(exc)
    return status is not None and 400 <= status < 500 and status not in OVERLOAD_STATUSES


def http_status(exc: BaseException) -> int | None:
    """The HTTP status ``exc`` carries, if any: ``status_code`` (Starlette, FastAPI, Django
    REST framework), ``status`` (aiohttp, urllib), ``code`` (Werkzeug, Flask, urllib), or its
    ``response``'s ``status_code`` / ``status`` (httpx, requests); Django's ``Http404``,
    ``PermissionDenied``, ``BadRequest`` and ``SuspiciousOperation`` by their class. Read by
    attribute, so no framework is imported; a built-in exception is never read at all."""
    cls = exc.__class__
    reader = _READERS.get(cls, _UNSEEN)
    if reader is _UNSEEN:
        if len(_READERS) >= _MAX_READERS:
            _READERS.clear()
        reader = _READERS[cls] = _reader_for(cls)
    if reader is None:
        return None
    try:
        status = reader(exc)
    except Exception:  # a property that raises: no status, not a second error
        return None
    return _as_status(status)


def result_status(result: object) -> int | None:
    """The HTTP status a returned response carries: its ``status_code`` (httpx, requests) or
    ``status`` (aiohttp's ``ClientResponse``, ``urllib``'s), read as :func:`http_status` reads
    an exception's ``response``. ``None`` for a value with neither (or with a non-int one)."""
    try:
        status = _response_status(result)
    except Exception:  # a property that raises: no status, not a second error
        return None
    return _as_status(status)


def _as_status(status: Any) -> int | None:
    if isinstance(status, int) and not isinstance(status, bool):
        return int(status)  # an HTTPStatus, an IntEnum: the number
    return None


def _reader_for(cls: type[BaseException]) -> StatusReader | None:
    if cls.__module__ == "builtins" or issubclass(cls, ButtressError):
        # OSError, TimeoutError, a refusal: nothing to read. Another exception of buttress's
        # (a web integration's answered error, an outbound ErrorResponse) is read as any is.
        return None
    for base in cls.__mro__:
        status = _DJANGO_STATUS.get((base.__module__, base.__qualname__))
        if status is not None:
            return _constant(status)
    return _read_status


def _constant(status: int) -> StatusReader:
    return lambda _exc: status


def _read_status(exc: BaseException) -> Any:
    # The first of these attributes that is set (nested ifs: half the cost of a loop).
    status = getattr(exc, "status_code", None)
    if status is None:
        status = getattr(exc, "status", None)
        if status is None:
            status = getattr(exc, "code", None)
            if status is None:
                response = getattr(exc, "response", None)
                if response is not None:
                    status = _response_status(response)
    return status


def _response_status(response: object) -> Any:
    # httpx and requests call it status_code; aiohttp and urllib, status.
    status = getattr(response, "status_code", None)
    return getattr(response, "status", None) if status is None else status


def matches_any(matchers: tuple[Any, ...], exc: BaseException) -> bool:
    """Whether one of ``matchers`` (exception classes or predicates, as ``record`` and a
    retry's ``on`` take them) matches ``exc``."""
    return any(_matches(m, exc) for m in matchers)


def _matches(matcher: Any, exc: BaseException) -> bool:
    if isinstance(matcher, type):
        return isinstance(exc, matcher)
    return bool(matcher(exc))
