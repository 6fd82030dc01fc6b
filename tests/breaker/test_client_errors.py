"""HTTP client errors (4xx) count for nothing in a breaker, by default; 408, 429 and 5xx count.

Each framework's real exception class is tested where the framework is installed (the dev
extra installs them); look-alike classes (the same attributes, or for Django the same module
and class name) hold the rule where it is not.
"""

from __future__ import annotations

import asyncio
import http
import io
import urllib.error
from typing import Any

import pytest

import buttress as bt
from buttress._breaker._outcome import Outcome, classify, health_of, http_status

DEFAULT = bt.BreakerConfig()
STRICT = bt.BreakerConfig(client_errors_neutral=False)


def outcome(exc: BaseException, config: bt.BreakerConfig = DEFAULT) -> Outcome:
    return classify(config, exc)


# -- look-alikes ---------------------------------------------------------------------------------


class StarletteLike(Exception):
    """Starlette's and FastAPI's ``HTTPException``: ``status_code`` set on the instance."""

    def __init__(self, status_code: int) -> None:
        self.status_code = status_code


class WerkzeugLike(Exception):
    """Werkzeug's (Flask's): ``code`` on the class."""

    code: int | None = None


class NotFoundLike(WerkzeugLike):
    code = 404


class Response:
    def __init__(self, status_code: int) -> None:
        self.status_code = status_code


class HttpxLike(Exception):
    """httpx's ``HTTPStatusError`` (and requests' ``HTTPError``): the status on ``response``."""

    def __init__(self, status_code: int) -> None:
        self.response = Response(status_code)


class AiohttpLike(Exception):
    """aiohttp's ``ClientResponseError``: ``status``."""

    def __init__(self, status: int) -> None:
        self.status = status


def django_like(module: str, name: str) -> type[Exception]:
    cls = type(name, (Exception,), {})
    cls.__module__ = module
    return cls


Http404Like = django_like("django.http.response", "Http404")
PermissionDeniedLike = django_like("django.core.exceptions", "PermissionDenied")
SuspiciousLike = django_like("django.core.exceptions", "SuspiciousOperation")


class DisallowedHostLike(SuspiciousLike):  # type: ignore[misc, valid-type]
    """A subclass is read by its base, as Django answers it."""


@pytest.mark.parametrize(
    "exc",
    [
        StarletteLike(404),
        StarletteLike(400),
        StarletteLike(401),
        StarletteLike(403),
        StarletteLike(422),
        StarletteLike(499),
        NotFoundLike(),
        HttpxLike(404),
        AiohttpLike(409),
        Http404Like(),
        PermissionDeniedLike(),
        SuspiciousLike(),
        DisallowedHostLike(),
    ],
    ids=repr,
)
def test_a_client_error_is_neutral_by_default(exc: Exception) -> None:
    assert outcome(exc) is Outcome.IGNORED
    assert health_of(DEFAULT, exc) is None  # an adaptive limit learns nothing from it
    assert health_of(None, exc) is None  # nor without a breaker
    assert outcome(exc, STRICT) is Outcome.FAILURE  # counted as any exception when off


@pytest.mark.parametrize(
    "exc",
    [
        StarletteLike(408),  # the server timed out: slow
        StarletteLike(429),  # the server is overloaded
        StarletteLike(500),
        StarletteLike(503),
        HttpxLike(429),
        HttpxLike(502),
        AiohttpLike(504),
        StarletteLike(399),
        StarletteLike(599),
        WerkzeugLike(),  # code None: no status
        ConnectionError("refused"),
        TimeoutError(),
    ],
    ids=repr,
)
def test_overload_server_errors_and_other_exceptions_still_fail(exc: Exception) -> None:
    assert outcome(exc) is Outcome.FAILURE
    assert outcome(exc, STRICT) is Outcome.FAILURE
    assert health_of(None, exc) is False


def test_the_rule_defers_to_record_ignore_chaos_and_cancellation() -> None:
    # ignore still wins, and a client error that record leaves out was never a failure.
    assert outcome(StarletteLike(500), bt.BreakerConfig(ignore=(StarletteLike,))) is (
        Outcome.IGNORED
    )
    narrow = bt.BreakerConfig(record=(ConnectionError,))
    assert outcome(StarletteLike(404), narrow) is Outcome.IGNORED
    assert outcome(StarletteLike(503), narrow) is Outcome.SUCCESS  # record does not name it
    injected = StarletteLike(404)
    injected.injected = True  # type: ignore[attr-defined]
    assert outcome(injected) is Outcome.FAILURE  # chaos simulates a failure, whatever it is
    assert outcome(asyncio.CancelledError()) is Outcome.CANCELLED


def test_odd_status_attributes_are_no_status() -> None:
    class Weird(Exception):
        status_code = "404"  # not an int
        code = True  # a bool is not a status

        @property
        def response(self) -> Any:
            raise RuntimeError("no response yet")  # as httpx's `request` before it is set

    class Enumish(Exception):
        status = http.HTTPStatus.NOT_FOUND  # an int subclass: read as its number

    assert http_status(Weird()) is None
    assert outcome(Weird()) is Outcome.FAILURE
    assert http_status(Enumish()) == 404 and type(http_status(Enumish())) is int
    assert http_status(ValueError()) is None
    urllib_404 = urllib.error.HTTPError("http://x", 404, "Not Found", None, io.BytesIO())  # type: ignore[arg-type]
    assert outcome(urllib_404) is Outcome.IGNORED


def test_a_breaker_stays_closed_through_client_errors(clock: bt.ManualClock) -> None:
    def breaker(**settings: Any) -> bt.CircuitBreaker:
        return bt.CircuitBreaker(
            "api", clock=clock, failure_threshold=3, degradation_threshold=None, **settings
        )

    def not_found() -> None:
        raise StarletteLike(404)

    neutral, counting = breaker(), breaker(client_errors_neutral=False)
    for b in (neutral, counting):
        for _ in range(3):
            with pytest.raises(StarletteLike):
                b.call(not_found)
    assert neutral.state is bt.BreakerState.CLOSED
    assert neutral.snapshot().total_ignored == 3
    assert counting.state is bt.BreakerState.OPEN
    with pytest.raises(bt.ConfigError, match="client_errors_neutral: must be True or False"):
        breaker(client_errors_neutral="no")


def test_the_setting_comes_from_a_configuration_file(clock: bt.ManualClock) -> None:
    cfg = {
        "circuit_breakers": {
            "api": {"failure_threshold": 2, "degradation_threshold": None},
            "strict": {
                "failure_threshold": 2,
                "degradation_threshold": None,
                "client_errors_neutral": False,
            },
        }
    }
    with bt.Infrastructure("t", cfg, clock=clock, env={}, background=False) as infra:
        for service in ("api", "strict"):
            for _ in range(2):
                with pytest.raises(StarletteLike):
                    infra.call(service, raise_, StarletteLike(404))
        assert infra.breakers["api"].state is bt.BreakerState.CLOSED
        assert infra.breakers["strict"].state is bt.BreakerState.OPEN


def raise_(exc: BaseException) -> None:
    raise exc


# -- the real classes ----------------------------------------------------------------------------


def test_starlette_and_fastapi_http_exceptions() -> None:
    exceptions = pytest.importorskip("starlette.exceptions")
    assert outcome(exceptions.HTTPException(404)) is Outcome.IGNORED
    assert outcome(exceptions.HTTPException(422, detail="bad")) is Outcome.IGNORED
    for status in (408, 429, 500, 503):
        assert outcome(exceptions.HTTPException(status)) is Outcome.FAILURE


def test_werkzeug_and_flask_http_exceptions() -> None:
    wz = pytest.importorskip("werkzeug.exceptions")
    for cls in (wz.BadRequest, wz.Unauthorized, wz.Forbidden, wz.NotFound, wz.Conflict):
        assert outcome(cls()) is Outcome.IGNORED, cls
    for cls in (wz.RequestTimeout, wz.TooManyRequests, wz.InternalServerError, wz.BadGateway):
        assert outcome(cls()) is Outcome.FAILURE, cls
    assert outcome(wz.HTTPException()) is Outcome.FAILURE  # no code: no status


def test_django_http_exceptions() -> None:
    pytest.importorskip("django")
    from django.core import exceptions
    from django.http import Http404
    from django.http.multipartparser import MultiPartParserError

    for exc in (
        Http404(),
        exceptions.PermissionDenied(),
        exceptions.BadRequest(),
        exceptions.SuspiciousOperation(),
        exceptions.DisallowedHost(),
        exceptions.RequestDataTooBig(),
        MultiPartParserError(),
    ):
        assert outcome(exc) is Outcome.IGNORED, exc
    assert outcome(exceptions.ObjectDoesNotExist()) is Outcome.FAILURE  # not an HTTP answer


def test_httpx_status_errors_from_an_upstream() -> None:
    httpx = pytest.importorskip("httpx")
    request = httpx.Request("GET", "http://upstream.invalid/")

    def status_error(status: int) -> Exception:
        response = httpx.Response(status, request=request)
        return httpx.HTTPStatusError(f"{status}", request=request, response=response)

    for status in (400, 401, 404, 409):
        assert outcome(status_error(status)) is Outcome.IGNORED
    for status in (408, 429, 500, 502, 503):
        assert outcome(status_error(status)) is Outcome.FAILURE
    assert outcome(httpx.ConnectError("refused")) is Outcome.FAILURE  # no request: no status
    assert outcome(httpx.ReadTimeout("slow", request=request)) is Outcome.FAILURE
