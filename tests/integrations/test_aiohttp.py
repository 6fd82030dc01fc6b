"""buttress in aiohttp.web, through aiohttp's real test server (TestServer, TestClient over
loopback): the middleware's default policy and per-handler policies, refusals answered
429/503 with their fields, 4xx neutral and answered 5xx counted by the breaker, and the
health routes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from web_views import infrastructure

import buttress as bt

web = pytest.importorskip("aiohttp.web")

from aiohttp.test_utils import TestClient, TestServer  # noqa: E402

from buttress.integrations import aiohttp as bt_aiohttp  # noqa: E402


@pytest.fixture
def infra(clock: bt.ManualClock) -> Iterator[bt.Infrastructure]:
    with infrastructure(clock) as i:
        yield i


def make_app(infra: bt.Infrastructure, **middleware: Any) -> web.Application:
    app = web.Application(middlewares=[bt_aiohttp.buttress_middleware(infra, **middleware)])

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    @bt_aiohttp.exempt
    async def free(request: web.Request) -> web.Response:
        return web.Response(text="free")

    @bt_aiohttp.protect("payments")
    async def pay(request: web.Request) -> web.Response:
        outcome = request.match_info["outcome"]
        if outcome == "missing":
            raise web.HTTPNotFound()
        if outcome == "gone":
            return web.Response(status=410)
        if outcome == "broken":
            return web.Response(status=502)
        if outcome == "raises":
            raise RuntimeError("the gateway hung up")
        return web.Response(text="paid")

    @bt_aiohttp.rate_limit("api", key=bt_aiohttp.api_key())
    async def keyed(request: web.Request) -> web.Response:
        return web.Response(text="keyed")

    @bt_aiohttp.rate_limit("api")
    async def anyone(request: web.Request) -> web.Response:
        return web.Response(text="anyone")

    async def nested(request: web.Request) -> web.Response:
        await infra.call_async("payments", _nothing)
        return web.Response(text="nested")

    app.add_routes(
        [
            web.get("/ok", ok),
            web.get("/free", free),
            web.get("/pay/{outcome}", pay),
            web.get("/keyed", keyed),
            web.get("/anyone", anyone),
            web.get("/nested", nested),
            *bt_aiohttp.health_routes(infra),
        ]
    )
    return app


async def _nothing() -> None:
    return None


@pytest.fixture
async def serve() -> AsyncIterator[Any]:
    clients: list[TestClient[Any, Any]] = []

    async def start(app: web.Application) -> TestClient[Any, Any]:
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


async def test_the_default_policy_limits_every_handler_by_client_ip(
    infra: bt.Infrastructure, serve: Any
) -> None:
    # The test client connects from 127.0.0.1: trusted here, as a proxy in front would be.
    default = bt_aiohttp.policy(limiter="api", key=bt_aiohttp.client_ip(["127.0.0.1"]))
    client = await serve(make_app(infra, default=default))
    behind = {"X-Forwarded-For": "203.0.113.7"}
    first = await client.get("/ok", headers=behind)
    assert first.status == 200
    assert first.headers["RateLimit"] == '"client";r=1;t=60'
    assert (await client.get("/ok", headers=behind)).status == 200
    refused = await client.get("/ok", headers=behind)
    assert refused.status == 429
    assert refused.headers["Retry-After"] == "60"
    assert refused.headers["RateLimit-Policy"] == '"client";q=2;w=60'
    assert (await refused.json())["message"] == "rate limit 'client' exceeded"
    assert (await client.get("/ok", headers={"X-Forwarded-For": "198.51.100.2"})).status == 200
    for path in ("/free", "/health/livez", "/pay/fine"):
        assert (await client.get(path, headers=behind)).status == 200


async def test_client_errors_are_neutral_and_server_errors_open_the_breaker(
    infra: bt.Infrastructure, serve: Any
) -> None:
    breaker = infra.breakers["payments"]
    client = await serve(make_app(infra))
    for outcome in ("missing", "gone", "missing", "gone"):
        assert (await client.get(f"/pay/{outcome}")).status in (404, 410)
    assert breaker.state is bt.BreakerState.CLOSED
    assert (await client.get("/pay/broken")).status == 502  # answered, not raised
    assert (await client.get("/pay/raises")).status == 500
    assert breaker.state is bt.BreakerState.OPEN
    refused = await client.get("/pay/fine")
    assert (refused.status, refused.headers["Retry-After"]) == (503, "30")
    assert (await refused.json())["error"] == "CircuitOpenError"


async def test_a_refusal_raised_inside_a_handler_is_answered(
    infra: bt.Infrastructure, serve: Any
) -> None:
    infra.breakers["payments"].force_open()
    client = await serve(make_app(infra))
    answer = await client.get("/nested")
    assert answer.status == 503
    assert (await answer.json())["error"] == "CircuitOpenError"


async def test_the_api_key_policy_answers_400_without_a_key(
    infra: bt.Infrastructure, serve: Any
) -> None:
    client = await serve(make_app(infra, rate_limit_headers=False))
    statuses = []
    for _ in range(3):
        answer = await client.get("/keyed", headers={"X-API-Key": "k1"})
        statuses.append(answer.status)
        assert "RateLimit" not in answer.headers
    assert statuses == [200, 200, 429]
    missing = await client.get("/keyed")
    assert missing.status == 400
    assert (await missing.json())["error"] == "ContextError"


async def test_a_rate_limit_without_a_key_counts_the_peer(
    infra: bt.Infrastructure, serve: Any
) -> None:
    client = await serve(make_app(infra))
    first = await client.get("/anyone", headers={"X-Forwarded-For": "203.0.113.7"})
    assert first.headers["RateLimit"] == '"client";r=1;t=60'
    # No proxy is trusted: a forwarded address is not believed, the peer (127.0.0.1) counts.
    second = await client.get("/anyone", headers={"X-Forwarded-For": "198.51.100.2"})
    third = await client.get("/anyone")
    assert (second.status, third.status) == (200, 429)


async def test_the_health_routes_answer_at_their_paths(
    infra: bt.Infrastructure, serve: Any
) -> None:
    client = await serve(make_app(infra, default=bt_aiohttp.policy("payments")))
    infra.breakers["payments"].force_open()
    assert (await client.get("/health")).status == 200  # degraded, not refused
    assert (await (await client.get("/health/livez")).json()) == {"status": "pass"}
    assert (await client.get("/health/readyz")).status == 200
    assert (await client.get("/ok")).status == 503


def test_a_bad_default_is_a_type_error(infra: bt.Infrastructure) -> None:
    with pytest.raises(TypeError, match="default must be a policy"):
        bt_aiohttp.buttress_middleware(infra, default="payments")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="a policy needs a service to protect or a limiter"):
        bt_aiohttp.policy()
