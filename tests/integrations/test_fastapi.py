"""buttress.integrations.fastapi against a real FastAPI app, through httpx.ASGITransport."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException
from fastapi.responses import PlainTextResponse

import buttress as bt
from buttress.integrations.asgi import RateLimitMiddleware, api_key, client_ip
from buttress.integrations.fastapi import Refused, protect, rate_limit
from buttress.testing import isolated_infrastructure


def get(app: Any, *paths: str, **kw: Any) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, client=("192.0.2.1", 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return [await http.get(p, **kw) for p in paths]

    return asyncio.run(run())


def test_a_route_dependency_answers_429_in_fastapis_shape_with_the_fields() -> None:
    clock = bt.ManualClock()
    per_user = bt.RateLimiter([bt.Scope("user", 2, 60.0)], name="api", clock=clock)
    app = FastAPI()
    limited = Depends(rate_limit(per_user, key={"user": api_key("x-user")}))

    @app.get("/items", dependencies=[limited])
    async def items() -> dict[str, int]:
        return {"items": 3}

    @app.get("/decision")
    async def decision(d: bt.Decision = limited) -> dict[str, int]:
        return {"remaining": d.remaining}

    @app.get("/free")
    async def free() -> str:
        return "free"

    ann = {"x-user": "ann"}
    first, second, third = get(app, "/items", "/decision", "/items", headers=ann)
    assert [first.status_code, second.status_code, third.status_code] == [200, 200, 429]
    assert first.json() == {"items": 3}
    assert first.headers["ratelimit"] == '"user";r=1;t=30'
    assert second.json() == {"remaining": 0}
    assert third.headers["retry-after"] == "30"
    assert third.headers["ratelimit-policy"] == '"user";q=2;w=60'
    assert third.json() == {
        "detail": {
            "error": "RateLimitExceeded",
            "message": "rate limit 'user' exceeded",
            "retry_after": 30.0,
        }
    }
    assert get(app, "/free", headers=ann)[0].status_code == 200
    anonymous = get(app, "/items")[0]
    assert anonymous.status_code == 400
    assert anonymous.json()["detail"]["error"] == "ContextError"
    assert get(app, "/items", headers={"x-user": "bob"})[0].status_code == 200
    clock.advance(30.0)
    assert get(app, "/items", headers=ann)[0].status_code == 200


def test_a_router_wide_dependency_by_name_without_headers() -> None:
    cfg = {"rate_limiting": {"limiters": {"per_ip": {"scopes": [{"name": "ip", "limit": 1}]}}}}
    with isolated_infrastructure(cfg, clock=bt.ManualClock()) as infra:
        router = APIRouter(dependencies=[Depends(rate_limit("per_ip", infra=infra, headers=False))])

        @router.get("/a")
        async def a() -> str:
            return "a"

        app = FastAPI()
        app.include_router(router)
        ok, refused = get(app, "/a", "/a")
        assert [ok.status_code, refused.status_code] == [200, 429]
        assert "ratelimit" not in ok.headers and refused.headers["ratelimit"]
        with pytest.raises(bt.ConfigError, match="no limiter named 'nope'"):
            rate_limit("nope", infra=infra)


def test_the_middleware_works_in_fastapi_unchanged() -> None:
    app = FastAPI()
    app.add_middleware(
        RateLimitMiddleware,
        limiter=bt.RateLimiter([bt.Scope("ip", 1, 60.0)], clock=bt.ManualClock()),
        key=client_ip(),
    )

    @app.get("/")
    async def root() -> str:
        return "root"

    assert [r.status_code for r in get(app, "/", "/")] == [200, 429]


BREAKER = {
    "failure_threshold": 3,
    "degradation_threshold": None,
    "minimum_calls": 100,
    "reset_timeout": 60.0,
    "reset_timeout_jitter": 0.0,  # open for exactly 60 s: Retry-After: 60
}


@pytest.fixture
def infra() -> Iterator[bt.Infrastructure]:
    with isolated_infrastructure(
        {"circuit_breakers": {"db": BREAKER}}, clock=bt.ManualClock()
    ) as infra:
        yield infra


def test_protect_counts_what_the_endpoint_raises_and_404s_are_neutral(
    infra: bt.Infrastructure,
) -> None:
    app = FastAPI()
    guarded = Depends(protect(infra, "db"))

    @app.get("/missing", dependencies=[guarded])
    async def missing() -> str:
        raise HTTPException(404, "no such row")

    @app.get("/broken", dependencies=[guarded])
    async def broken() -> str:
        raise HTTPException(502, "upstream broke")

    @app.get("/guard")
    async def guard(g: Any = guarded) -> str:
        return type(g).__name__

    @app.get("/text", response_class=PlainTextResponse, dependencies=[guarded])
    async def text() -> str:
        return "fine"

    assert {r.status_code for r in get(app, *["/missing"] * 5)} == {404}
    assert infra.breakers["db"].state is bt.BreakerState.CLOSED
    assert get(app, "/guard")[0].json() == "Protection"
    assert [r.status_code for r in get(app, "/broken", "/broken", "/broken")] == [502] * 3
    refused = get(app, "/text")[0]
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "60"
    assert refused.json()["detail"]["error"] == "CircuitOpenError"


def test_refused_is_an_http_exception_carrying_the_refusal() -> None:
    exc = bt.CircuitOpenError("db", "open", retry_after=2.5)
    wrapped = Refused(exc)
    assert isinstance(wrapped, HTTPException)
    assert (wrapped.status_code, wrapped.headers) == (503, {"retry-after": "3"})
    assert wrapped.refusal is exc
    with pytest.raises(TypeError, match=r"infra must be a buttress\.Infrastructure"):
        protect(None, "db")
