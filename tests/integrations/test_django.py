"""buttress in Django, through Django's test client: the middleware's default policy, the
view decorators, refusals answered 429/503 with their fields, 4xx neutral and answered 5xx
counted by the breaker, settings read and checked, and the health views."""

from __future__ import annotations

import json
import types
from collections.abc import Iterator
from typing import Any

import pytest
from web_views import CONFIG, infrastructure

import buttress as bt

django = pytest.importorskip("django")

from django.conf import settings  # noqa: E402

if not settings.configured:  # the process's one configure(); each test overrides what it needs
    settings.configure(
        ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF=__name__,
        SECRET_KEY="buttress-django-tests",
        INSTALLED_APPS=[],
        MIDDLEWARE=[],
    )
    django.setup()

from django.core.exceptions import PermissionDenied  # noqa: E402
from django.http import Http404, HttpRequest, HttpResponse  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from django.urls import path  # noqa: E402

from buttress.integrations import django as bt_django  # noqa: E402

urlpatterns: list[Any] = []  # ROOT_URLCONF until a test overrides it

MIDDLEWARE = ["buttress.integrations.django.ButtressMiddleware"]


@pytest.fixture
def infra(clock: bt.ManualClock) -> Iterator[bt.Infrastructure]:
    with infrastructure(clock) as i:
        yield i


def ok(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


@bt_django.exempt
def free(request: HttpRequest) -> HttpResponse:
    return HttpResponse("free")


@bt_django.protect("payments")
def pay(request: HttpRequest, outcome: str) -> HttpResponse:
    if outcome == "missing":
        raise Http404("no such order")
    if outcome == "forbidden":
        raise PermissionDenied
    if outcome == "gone":
        return HttpResponse("gone", status=410)
    if outcome == "broken":
        return HttpResponse("upstream said no", status=502)
    if outcome == "raises":
        raise RuntimeError("the gateway hung up")
    return HttpResponse("paid")


@bt_django.rate_limit("api", key=bt_django.api_key())
def keyed(request: HttpRequest) -> HttpResponse:
    return HttpResponse("keyed")


@bt_django.rate_limit("api")
def anyone(request: HttpRequest) -> HttpResponse:
    return HttpResponse("anyone")


def nested(request: HttpRequest) -> HttpResponse:
    bt_django.infrastructure().call("payments", lambda: None)
    return HttpResponse("nested")


def urls(*patterns: Any) -> types.ModuleType:
    module = types.ModuleType("urls")  # what ROOT_URLCONF names: a module with urlpatterns
    module.urlpatterns = [  # type: ignore[attr-defined]
        path("ok", ok),
        path("free", free),
        path("pay/<str:outcome>", pay),
        path("keyed", keyed),
        path("anyone", anyone),
        path("nested", nested),
        *bt_django.health_urls(),
        *patterns,
    ]
    return module


def site(**buttress: Any) -> Any:
    return override_settings(ROOT_URLCONF=urls(), MIDDLEWARE=MIDDLEWARE, BUTTRESS=buttress)


def test_the_default_policy_limits_every_view_by_client_ip(infra: bt.Infrastructure) -> None:
    policy = {"limiter": "api", "key": "ip"}
    with site(infrastructure=infra, rate_limit=policy, trusted_proxies=["10.0.0.0/8"]):
        client = Client(REMOTE_ADDR="10.0.0.1")  # a trusted proxy in front of every client
        first = client.get("/ok", HTTP_X_FORWARDED_FOR="203.0.113.7")
        assert first.status_code == 200
        assert first["RateLimit"] == '"client";r=1;t=60'
        assert first["RateLimit-Policy"] == '"client";q=2;w=60'
        assert client.get("/ok", HTTP_X_FORWARDED_FOR="203.0.113.7").status_code == 200
        refused = client.get("/ok", HTTP_X_FORWARDED_FOR="203.0.113.7")
        assert refused.status_code == 429
        assert refused["Retry-After"] == "60"
        assert refused["RateLimit"] == '"client";r=0;t=60'
        assert json.loads(refused.content)["message"] == "rate limit 'client' exceeded"
        # Another client behind the same proxy has its own count.
        assert client.get("/ok", HTTP_X_FORWARDED_FOR="198.51.100.2").status_code == 200
        # An exempt view, and a view with its own policy, are not charged to the default.
        assert client.get("/free", HTTP_X_FORWARDED_FOR="203.0.113.7").status_code == 200
        assert client.get("/pay/fine", HTTP_X_FORWARDED_FOR="203.0.113.7").status_code == 200


def test_client_errors_are_neutral_and_server_errors_open_the_breaker(
    infra: bt.Infrastructure,
) -> None:
    breaker = infra.breakers["payments"]
    with site(infrastructure=infra):
        client = Client(raise_request_exception=False)
        for outcome in ("missing", "forbidden", "gone", "missing", "gone"):
            assert client.get(f"/pay/{outcome}").status_code in (404, 403, 410)
        assert breaker.state is bt.BreakerState.CLOSED
        assert client.get("/pay/broken").status_code == 502  # answered, not raised
        assert client.get("/pay/raises").status_code == 500
        assert breaker.state is bt.BreakerState.OPEN
        refused = client.get("/pay/fine")
        assert refused.status_code == 503
        assert refused["Retry-After"] == "30"
        assert json.loads(refused.content)["error"] == "CircuitOpenError"


def test_the_middleware_counts_what_its_default_policy_guards(
    infra: bt.Infrastructure,
) -> None:
    # The default policy's view raised Http404: neutral; its 500s: failures.
    breaker = infra.breakers["payments"]

    def lookup(request: HttpRequest, outcome: str) -> HttpResponse:
        if outcome == "missing":
            raise Http404
        return HttpResponse(status=500 if outcome == "broken" else 200)

    module = urls(path("lookup/<str:outcome>", lookup))
    with override_settings(
        ROOT_URLCONF=module,
        MIDDLEWARE=MIDDLEWARE,
        BUTTRESS={"infrastructure": infra, "protect": "payments"},
    ):
        client = Client()
        for _ in range(3):
            assert client.get("/lookup/missing").status_code == 404
        assert breaker.state is bt.BreakerState.CLOSED
        assert client.get("/lookup/broken").status_code == 500
        assert client.get("/lookup/broken").status_code == 500
        assert breaker.state is bt.BreakerState.OPEN
        assert client.get("/lookup/fine").status_code == 503
        assert client.get("/ok").status_code == 503  # every view is guarded by it


def test_a_refusal_raised_inside_a_view_is_answered(
    infra: bt.Infrastructure, clock: bt.ManualClock
) -> None:
    infra.breakers["payments"].force_open()
    with site(infrastructure=infra):
        answer = Client().get("/nested")
    assert answer.status_code == 503
    assert json.loads(answer.content)["error"] == "CircuitOpenError"


def test_the_api_key_decorator_answers_400_without_a_key(infra: bt.Infrastructure) -> None:
    with site(infrastructure=infra):
        client = Client()
        statuses = [client.get("/keyed", HTTP_X_API_KEY="k1").status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        assert client.get("/keyed", HTTP_X_API_KEY="k2").status_code == 200
        missing = client.get("/keyed")
        assert missing.status_code == 400
        assert json.loads(missing.content)["message"] == (
            "the request has no 'key' id for rate limit 'client'"
        )


def test_a_rate_limit_without_a_key_counts_each_client_behind_the_trusted_proxies(
    infra: bt.Infrastructure,
) -> None:
    with site(infrastructure=infra, trusted_proxies=["10.0.0.0/8"]):
        client = Client(REMOTE_ADDR="10.0.0.1")

        def get(forwarded_for: str) -> int:
            return int(client.get("/anyone", HTTP_X_FORWARDED_FOR=forwarded_for).status_code)

        assert [get("203.0.113.7") for _ in range(3)] == [200, 200, 429]
        assert get("198.51.100.2") == 200  # another client behind the same proxy
        direct = Client(REMOTE_ADDR="192.0.2.9").get("/anyone")
        assert direct.status_code == 200  # not behind a proxy: its own address
        assert direct["RateLimit"] == '"client";r=1;t=60'


def test_the_infrastructure_is_built_from_settings_once_and_closed(tmp_path: Any) -> None:
    with site(config=CONFIG, namespace="shop"):
        built = bt_django.infrastructure()
        assert built is bt_django.infrastructure()
        assert built.namespace == "shop"
        assert Client().get("/health/livez").status_code == 200
    assert built.closed  # the override ended: what it built is closed


def test_health_views_answer_at_their_paths(infra: bt.Infrastructure) -> None:
    with site(infrastructure=infra):
        client = Client()
        report = client.get("/health")
        assert report.status_code == 200
        assert json.loads(report.content)["serviceId"] == "web"
        assert client.get("/health/readyz").status_code == 200
        assert json.loads(client.get("/health/livez").content) == {"status": "pass"}
        assert client.post("/health").status_code == 405


@pytest.mark.parametrize(
    ("buttress", "path"),
    [
        ({"confg": {}}, "BUTTRESS.confg"),
        ({"rate_limit": {"limiter": "api", "key": "cookie"}}, "BUTTRESS.rate_limit.key"),
        ({"rate_limit": {"key": "ip"}}, "BUTTRESS.rate_limit.limiter"),
        ({"protect": {"service": "x", "cots": 2}}, "BUTTRESS.protect.cots"),
        ({"protect": "x", "rate_limit": "api"}, "BUTTRESS.rate_limit"),
        ({"trusted_proxies": ["proxy.internal"]}, "BUTTRESS.trusted_proxies[0]"),
        ({"rate_limit_headers": "yes"}, "BUTTRESS.rate_limit_headers"),
    ],
)
def test_bad_settings_name_the_setting(buttress: dict[str, Any], path: str) -> None:
    with site(**buttress), pytest.raises(bt.ConfigError) as info:
        bt_django.infrastructure()
    assert info.value.path == path


@bt_django.protect("payments")
async def pay_async(request: HttpRequest, outcome: str) -> HttpResponse:
    if outcome == "missing":
        raise Http404("no such order")
    if outcome == "broken":
        return HttpResponse("upstream said no", status=502)
    return HttpResponse("paid")


@bt_django.rate_limit("api", key=bt_django.api_key())
async def keyed_async(request: HttpRequest) -> HttpResponse:
    return HttpResponse("keyed")


def test_async_views_are_guarded_on_the_event_loop(infra: bt.Infrastructure) -> None:
    import asyncio
    import inspect

    from django.test import AsyncClient

    assert inspect.iscoroutinefunction(pay_async)  # Django runs it as an async view
    routes = urls(path("apay/<str:outcome>", pay_async), path("akeyed", keyed_async))
    breaker = infra.breakers["payments"]

    async def scenario() -> None:
        client = AsyncClient(raise_request_exception=False)
        assert (await client.get("/apay/missing")).status_code == 404  # neutral
        assert breaker.state is bt.BreakerState.CLOSED
        for _ in range(2):
            assert (await client.get("/apay/broken")).status_code == 502  # failures
        assert breaker.state is bt.BreakerState.OPEN
        refused = await client.get("/apay/fine")
        assert refused.status_code == 503 and refused["Retry-After"] == "30"
        first = await client.get("/akeyed", headers={"X-API-Key": "k1"})
        assert first.status_code == 200 and first["RateLimit"] == '"client";r=1;t=60'
        await client.get("/akeyed", headers={"X-API-Key": "k1"})
        assert (await client.get("/akeyed", headers={"X-API-Key": "k1"})).status_code == 429

    with override_settings(ROOT_URLCONF=routes, MIDDLEWARE=[], BUTTRESS={"infrastructure": infra}):
        asyncio.run(scenario())
