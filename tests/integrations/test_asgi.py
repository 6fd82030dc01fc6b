"""buttress.integrations.asgi against real Starlette apps, through httpx.ASGITransport, and
once over loopback with a real uvicorn server."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

import buttress as bt
from buttress.integrations.asgi import (
    ProtectMiddleware,
    RateLimitMiddleware,
    api_key,
    client_ip,
    from_scope,
    limit,
)
from buttress.ratelimit import backend_from_url
from buttress.testing import isolated_infrastructure
from servers import free_port, wait_until


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


def app_with(*middleware: Middleware, routes: list[Any] | None = None) -> Starlette:
    return Starlette(routes=routes or [Route("/", hello)], middleware=list(middleware))


def get(
    app: Any, *paths: str, client: tuple[str, int] = ("192.0.2.1", 1234), **kw: Any
) -> list[httpx.Response]:
    """GET each path in turn from ``app``, in process."""

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return [await http.get(p, **kw) for p in paths]

    return asyncio.run(run())


def limiter(*scopes: bt.Scope, clock: bt.ManualClock | None = None) -> bt.RateLimiter:
    return bt.RateLimiter(
        list(scopes) or [bt.Scope("ip", 2, 60.0)], name="api", clock=clock or bt.ManualClock()
    )


# -- RateLimitMiddleware ---------------------------------------------------------------------------


def test_the_limit_answers_429_with_retry_after_and_ratelimit_fields_until_the_window_moves() -> (
    None
):
    clock = bt.ManualClock()
    app = app_with(Middleware(RateLimitMiddleware, limiter=limiter(clock=clock)))
    first, second, third = get(app, "/", "/", "/")
    assert [first.status_code, second.status_code, third.status_code] == [200, 200, 429]
    assert first.text == "hello"
    assert first.headers["ratelimit-policy"] == '"ip";q=2;w=60'
    assert first.headers["ratelimit"] == '"ip";r=1;t=30'
    assert third.headers["retry-after"] == "30"
    assert third.headers["ratelimit"] == '"ip";r=0;t=60'
    assert third.headers["content-type"] == "application/json"
    body = third.json()
    assert body == {"error": "RateLimitExceeded", "message": "rate limit 'ip' exceeded",
                    "retry_after": 30.0}  # fmt: skip
    assert "192.0.2.1" not in third.text  # never the caller's id
    clock.advance(30.0)
    assert [r.status_code for r in get(app, "/", "/")] == [200, 429]
    # Another client has its own budget.
    assert get(app, "/", client=("192.0.2.2", 1))[0].status_code == 200


def test_headers_false_leaves_admitted_responses_alone() -> None:
    app = app_with(Middleware(RateLimitMiddleware, limiter=limiter(), headers=False))
    ok, _, refused = get(app, "/", "/", "/")
    assert "ratelimit" not in ok.headers and "ratelimit-policy" not in ok.headers
    assert refused.status_code == 429 and refused.headers["ratelimit"]


def test_exempt_paths_and_mounted_health_routes_answer_without_redirects() -> None:
    with isolated_infrastructure({}) as infra:
        health = bt.health_asgi_app(infra)
        routes = [Route("/", hello)] + [Route(p, health) for p in ("/health", "/livez", "/readyz")]
        app = app_with(
            Middleware(
                RateLimitMiddleware,
                limiter=limiter(bt.Scope("ip", 1, 60.0)),
                exempt=["/livez", "/readyz", "/health"],
            ),
            routes=routes,
        )
        answers = get(app, "/", "/livez", "/readyz", "/health", "/livez", "/", "/healthy")
    assert [r.status_code for r in answers] == [200, 200, 200, 200, 200, 429, 429]
    assert answers[1].json() == {"status": "pass"}
    assert answers[3].json()["status"] == "pass"
    assert answers[3].headers["content-type"] == "application/health+json"
    assert "ratelimit" not in answers[1].headers


def test_a_predicate_exempts_what_it_says() -> None:
    app = app_with(
        Middleware(
            RateLimitMiddleware,
            limiter=limiter(bt.Scope("ip", 1, 60.0)),
            exempt=lambda scope: scope["method"] == "OPTIONS",
        )
    )
    assert [r.status_code for r in get(app, "/", "/")] == [200, 429]

    async def options() -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return (await http.options("/")).status_code

    assert asyncio.run(options()) == 405  # through to the app: not refused


def test_the_client_behind_trusted_proxies_is_the_key_and_a_spoofed_header_is_not() -> None:
    key = client_ip(["10.0.0.0/8"])
    app = app_with(
        Middleware(RateLimitMiddleware, limiter=limiter(bt.Scope("ip", 1, 60.0)), key=key)
    )
    proxy = ("10.0.0.5", 4000)
    a = get(app, "/", "/", client=proxy, headers={"x-forwarded-for": "198.51.100.7"})
    b = get(app, "/", client=proxy, headers={"x-forwarded-for": "198.51.100.8, 10.0.0.9"})
    assert [r.status_code for r in a + b] == [200, 429, 200]
    # Not from a proxy: its own X-Forwarded-For is not believed, the peer is the client.
    spoofer = ("203.0.113.9", 1)
    c = get(app, "/", "/", client=spoofer, headers={"x-forwarded-for": "198.51.100.99"})
    assert [r.status_code for r in c] == [200, 429]


def test_an_api_key_and_the_user_and_org_make_a_hierarchical_context() -> None:
    class Tenant:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            # What an authentication middleware does: the user and org into the scope.
            user = dict(scope["headers"]).get(b"x-user", b"anon").decode()
            scope["user"] = type("User", (), {"id": user, "org_id": "acme"})()
            await self.app(scope, receive, send)

    scopes = [bt.Scope("user", 2, 60.0), bt.Scope("org", 3, 60.0), bt.Scope("key", 5, 60.0)]
    key = {"user": from_scope("user", "id"), "org": from_scope("user", "org_id"), "key": api_key()}
    app = app_with(
        Middleware(Tenant), Middleware(RateLimitMiddleware, limiter=limiter(*scopes), key=key)
    )
    ann = {"x-user": "ann", "x-api-key": "k1"}
    bob = {"x-user": "bob", "x-api-key": "k1"}
    assert [r.status_code for r in get(app, "/", "/", "/", headers=ann)] == [200, 200, 429]
    first, second = get(app, "/", "/", headers=bob)
    assert [first.status_code, second.status_code] == [200, 429]  # the org's 3 are spent
    assert second.headers["ratelimit-policy"] == '"user";q=2;w=60, "org";q=3;w=60, "key";q=5;w=60'
    assert second.json()["message"] == "rate limit 'org' exceeded"
    # No API key: the request cannot be told apart, a client error.
    unknown = get(app, "/", headers={"x-user": "cy"})[0]
    assert unknown.status_code == 400
    assert unknown.json()["message"] == "the request has no 'key' id for rate limit 'key'"


def test_a_limiter_by_name_from_the_infrastructure() -> None:
    cfg = {"rate_limiting": {"limiters": {"per_ip": {"scopes": [{"name": "ip", "limit": 1}]}}}}
    with isolated_infrastructure(cfg, clock=bt.ManualClock()) as infra:
        app = app_with(Middleware(RateLimitMiddleware, limiter="per_ip", infra=infra))
        assert [r.status_code for r in get(app, "/", "/")] == [200, 429]
        with pytest.raises(bt.ConfigError, match=r"no limiter named 'nope' \(configured: per_ip"):
            RateLimitMiddleware(hello, limiter="nope", infra=infra)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="pass infra="):
        RateLimitMiddleware(hello, limiter="per_ip")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="RateLimiter or a limiter's name"):
        RateLimitMiddleware(hello, limiter=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key: expected client_ip"):
        RateLimitMiddleware(hello, limiter=limiter(), key="ip")
    with pytest.raises(TypeError, match="exempt paths start with '/'"):
        RateLimitMiddleware(hello, limiter=limiter(), exempt=["health"])  # type: ignore[arg-type]


def test_a_shared_limiter_on_redis_is_awaited(redis_url: str) -> None:
    backend = backend_from_url(redis_url)
    shared = bt.RateLimiter([bt.Scope("ip", 2, 60.0)], name="asgi_test", backend=backend)
    shared.reset("192.0.2.50")
    app = app_with(Middleware(RateLimitMiddleware, limiter=shared))
    answers = get(app, "/", "/", "/", client=("192.0.2.50", 1))
    assert [r.status_code for r in answers] == [200, 200, 429]
    shared.reset("192.0.2.50")


# -- one endpoint's limit --------------------------------------------------------------------------


def test_limit_decorates_async_and_sync_endpoints() -> None:
    per_ip = limiter(bt.Scope("ip", 1, 60.0))

    @limit(per_ip)
    async def limited(request: Request) -> Response:
        return JSONResponse({"ok": True})

    @limit(limiter(bt.Scope("ip", 1, 60.0)), headers=False)
    def limited_sync(request: Request) -> Response:
        return PlainTextResponse("sync")

    app = app_with(routes=[Route("/a", limited), Route("/s", limited_sync), Route("/", hello)])
    a1, a2, s1, s2, free = get(app, "/a", "/a", "/s", "/s", "/")
    assert [a1.status_code, a2.status_code, s1.status_code, s2.status_code] == [200, 429, 200, 429]
    assert a1.json() == {"ok": True} and a1.headers["ratelimit"] == '"ip";r=0;t=60'
    assert s1.text == "sync" and "ratelimit" not in s1.headers
    assert a2.headers["retry-after"] == "60" and s2.headers["retry-after"] == "60"
    assert free.status_code == 200  # an endpoint without the decorator is not limited


# -- ProtectMiddleware -----------------------------------------------------------------------------

BREAKER = {
    "failure_threshold": 3,
    "degradation_threshold": None,
    "minimum_calls": 100,  # the rate never applies: three failures open it
    "reset_timeout": 60.0,
    "reset_timeout_jitter": 0.0,  # open for exactly 60 s: Retry-After: 60
}


@pytest.fixture
def infra() -> Iterator[bt.Infrastructure]:
    cfg = {
        "circuit_breakers": {"site": BREAKER, "other": BREAKER},
        "rate_limiting": {"limiters": {"site": {"scopes": [{"name": "ip", "limit": 100}]}}},
    }
    with isolated_infrastructure(cfg, clock=bt.ManualClock()) as infra:
        yield infra


async def status(request: Request) -> Response:
    code = int(request.path_params["code"])
    if request.query_params.get("raise"):
        raise HTTPException(code)
    return PlainTextResponse(str(code), status_code=code)


async def boom(request: Request) -> Response:
    raise RuntimeError("the app broke")


ROUTES = [Route("/status/{code}", status), Route("/boom", boom), Route("/", hello)]


def test_returned_5xx_open_the_breaker_and_then_the_answer_is_503(
    infra: bt.Infrastructure,
) -> None:
    app = app_with(
        Middleware(ProtectMiddleware, infra=infra, service="site", key=client_ip()),
        routes=ROUTES,
    )
    answers = get(app, "/", "/status/500", "/status/502", "/status/503", "/")
    assert [r.status_code for r in answers] == [200, 500, 502, 503, 503]
    assert answers[0].headers["ratelimit-policy"] == '"ip";q=100;w=60'  # the service's limiter
    assert answers[1].text == "500"  # the app's own answer goes out as it was
    refused = answers[4]
    assert refused.json()["error"] == "CircuitOpenError"
    assert refused.headers["retry-after"] == "60"
    assert infra.breakers["site"].state is bt.BreakerState.OPEN


def test_4xx_returned_or_raised_are_neutral_but_429_counts(infra: bt.Infrastructure) -> None:
    app = app_with(
        Middleware(ProtectMiddleware, infra=infra, service="site", key=client_ip()), routes=ROUTES
    )
    paths = ["/status/404", "/status/400?raise=1", "/status/403?raise=1", "/status/404"] * 3
    assert {r.status_code for r in get(app, *paths)} == {400, 403, 404}
    assert infra.breakers["site"].state is bt.BreakerState.CLOSED
    assert [r.status_code for r in get(app, *["/status/429"] * 3, "/")] == [429, 429, 429, 503]


def test_an_exception_counts_and_still_reaches_the_framework(infra: bt.Infrastructure) -> None:
    app = app_with(
        Middleware(ProtectMiddleware, infra=infra, service="site", key=client_ip()), routes=ROUTES
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)

    async def run() -> list[int]:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            return [(await http.get(p)).status_code for p in ["/boom"] * 3 + ["/"]]

    assert asyncio.run(run()) == [500, 500, 500, 503]


def test_a_request_past_its_timeout_is_answered_504_and_counts() -> None:
    clock = bt.ManualClock()

    async def hang(request: Request) -> Response:
        await asyncio.Event().wait()
        return PlainTextResponse("never")

    with isolated_infrastructure({"circuit_breakers": {"slow": BREAKER}}, clock=clock) as infra:
        app = app_with(
            Middleware(ProtectMiddleware, infra=infra, service="slow", timeout=2.0),
            routes=[Route("/", hang)],
        )
        answers = get(app, "/", "/", "/", "/")
        assert [r.status_code for r in answers] == [504, 504, 504, 503]
        assert answers[0].json()["error"] == "CallTimeoutError"
        assert clock.monotonic() == 6.0  # each cancelled at its deadline, no real wait


def test_the_service_may_follow_the_request(infra: bt.Infrastructure) -> None:
    def service(scope: Any) -> str:
        return "site" if scope["path"].startswith("/status") else "other"

    app = app_with(
        Middleware(ProtectMiddleware, infra=infra, service=service, key=client_ip()),
        routes=ROUTES,
    )
    get(app, "/status/500", "/status/500", "/status/500", "/")
    assert infra.breakers["site"].state is bt.BreakerState.OPEN
    assert get(app, "/")[0].status_code == 200  # another service: untouched
    with pytest.raises(TypeError, match=r"infra must be a buttress\.Infrastructure"):
        ProtectMiddleware(hello, infra=None, service="site")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="service must be a name"):
        ProtectMiddleware(hello, infra=infra, service=3)  # type: ignore[arg-type]


def test_a_degraded_breaker_sheds_the_requests_marked_sheddable() -> None:
    cfg = {
        "circuit_breakers": {
            "site": {**BREAKER, "failure_threshold": 6, "degradation_threshold": 2}
        }
    }

    def priority(scope: Any) -> str:
        return "sheddable" if scope["path"] == "/export" else "critical"

    export = Route("/export", hello)
    with isolated_infrastructure(cfg, clock=bt.ManualClock()) as infra:
        app = app_with(
            Middleware(ProtectMiddleware, infra=infra, service="site", priority=priority),
            routes=[*ROUTES, export],
        )
        assert [r.status_code for r in get(app, "/export", "/status/500", "/status/500")] == [
            200,
            500,
            500,
        ]
        assert infra.breakers["site"].state is bt.BreakerState.DEGRADED
        shed, kept = get(app, "/export", "/")
        assert shed.status_code == 503 and shed.json()["error"] == "LoadShedError"
        assert kept.status_code == 200  # critical: never shed
        with pytest.raises(bt.ConfigError, match="priority"):
            ProtectMiddleware(hello, infra=infra, service="site", priority="urgent")  # type: ignore[arg-type]


def test_the_services_limiter_answers_429(infra: bt.Infrastructure) -> None:
    cfg = {"rate_limiting": {"limiters": {"site": {"scopes": [{"name": "user", "limit": 1}]}}}}
    with isolated_infrastructure(cfg, clock=bt.ManualClock()) as infra:
        key = {"user": api_key("x-user")}
        app = app_with(
            Middleware(ProtectMiddleware, infra=infra, service="site", key=key), routes=ROUTES
        )
        ok, refused = get(app, "/", "/", headers={"x-user": "ann"})
        assert [ok.status_code, refused.status_code] == [200, 429]
        assert get(app, "/")[0].status_code == 400  # no X-User: no id for the scope
        assert refused.headers["ratelimit"] == '"user";r=0;t=60'
        assert json.loads(refused.text)["error"] == "RateLimitExceeded"


# -- over loopback ---------------------------------------------------------------------------------


def test_uvicorn_serves_the_limit_over_loopback() -> None:
    uvicorn = pytest.importorskip("uvicorn")
    clock = bt.ManualClock()
    infra = bt.Infrastructure("e2e", {}, env={}, background=False)
    app = app_with(
        Middleware(RateLimitMiddleware, limiter=limiter(clock=clock), exempt="/livez"),
        routes=[Route("/", hello), Route("/livez", bt.health_asgi_app(infra))],
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, what="uvicorn to start")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
            codes = [http.get("/").status_code for _ in range(3)]
            refused = http.get("/")
            assert http.get("/livez").status_code == 200
            clock.advance(30.0)
            again = http.get("/")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        infra.close()
    assert codes == [200, 200, 429]
    assert refused.headers["retry-after"] == "30"
    assert refused.headers["ratelimit-policy"] == '"ip";q=2;w=60'
    assert again.status_code == 200 and again.headers["ratelimit"] == '"ip";r=0;t=60'
