"""What a rate limit adds to a request, buttress's ASGI middleware against slowapi's and
fastapi-limiter's.

    make bench BENCH=asgi        (or: .venv/bin/python benchmarks/asgi.py [--quick])

The app is called in process, by a direct ASGI call loop: one ``await app(scope, receive,
send)`` per request, with a prepared scope, a ``receive`` that returns the empty body and a
``send`` that drops the messages. No client and no server: what is timed is the framework and
the middleware. Overhead = candidate - the same app without a limit; every limit is far above
what the run reaches, so every request is admitted (and the limiter's work is the same as for
an ordinary request). Target: ours at most a tenth of the faster peer's overhead.

1. A Starlette app (one route answering ``PlainTextResponse``): ours
   (``RateLimitMiddleware``, with the ``RateLimit`` fields on the response, its default, and
   without) against slowapi's ``SlowAPIASGIMiddleware`` (its default limit, in memory, without
   its ``X-RateLimit`` fields, its default, and with them).
2. The same route in FastAPI, for the dependencies: ours (``Depends(rate_limit(...))``, and
   the middleware) against fastapi-limiter's ``RateLimiter`` dependency. A dependency that
   takes the request and the response costs FastAPI's injection (tens of µs) whoever writes
   it: the middleware is the cheap way to limit a whole app. fastapi-limiter 0.2 counts with
   pyrate-limiter, in memory or on Redis: both are timed, the Redis one against ours on the
   same Redis (127.0.0.1:6379, or BUTTRESS_REDIS_URL; left out when it does not answer).

Each round times every candidate in turn (process CPU time, so other processes on a shared
machine cost us less; for the Redis rows the round trip is mostly wait, which CPU time leaves
out: compare them with each other only); the best round of each is kept.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from typing import Any

import buttress as bt
from _timing import measure, report
from buttress.integrations.asgi import RateLimitMiddleware
from buttress.integrations.fastapi import rate_limit

QUICK = "--quick" in sys.argv
N = 2_000 if QUICK else 10_000
ROUNDS = 3 if QUICK else 7
HUGE = 10**9  # per second: never reached

REDIS_URL = os.environ.get("BUTTRESS_REDIS_URL", "redis://127.0.0.1:6379/0")

SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/",
    "raw_path": b"/",
    "root_path": "",
    "query_string": b"",
    "headers": [(b"host", b"bench"), (b"user-agent", b"bench")],
    "client": ("192.0.2.1", 1234),
    "server": ("bench", 80),
}


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message: Any) -> None:
    pass


def request(app: Any) -> Callable[[], Any]:
    """One request to ``app``; the scope is copied (a framework may write into it)."""

    def one() -> Any:
        return app(dict(SCOPE), receive, send)

    return one


LOOP = asyncio.new_event_loop()  # one loop for every round: the Redis clients stay bound to it


def time_in_loop(fn: Callable[[], Any], n: int) -> float:
    import time

    async def loop() -> float:
        rng = range(n)
        t0 = time.process_time()
        for _ in rng:
            await fn()
        return (time.process_time() - t0) / n * 1e9

    return LOOP.run_until_complete(loop())


def ours(name: str) -> bt.RateLimiter:
    return bt.RateLimiter([bt.Scope("ip", HUGE, 1.0)], name=name)


# -- 1. Starlette ----------------------------------------------------------------------------------


def starlette_apps() -> dict[str, Callable[[], Any]]:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hello")

    def app(*middleware: Middleware) -> Starlette:
        return Starlette(routes=[Route("/", hello)], middleware=list(middleware))

    out = {"bare Starlette": request(app())}
    out["buttress"] = request(app(Middleware(RateLimitMiddleware, limiter=ours("s1"))))
    out["buttress headers=False"] = request(
        app(Middleware(RateLimitMiddleware, limiter=ours("s2"), headers=False))
    )
    try:
        from slowapi import Limiter
        from slowapi.middleware import SlowAPIASGIMiddleware
        from slowapi.util import get_remote_address

        for name, headers in (("slowapi", False), ("slowapi headers", True)):
            limited = app(Middleware(SlowAPIASGIMiddleware))
            limited.state.limiter = Limiter(
                key_func=get_remote_address,
                default_limits=[f"{HUGE}/second"],
                headers_enabled=headers,
            )
            out[name] = request(limited)
    except ImportError:
        print("slowapi is not installed: pip install slowapi")
    return out


# -- 2. FastAPI ------------------------------------------------------------------------------------


def fastapi_apps(redis: bool) -> dict[str, Callable[[], Any]]:
    from fastapi import Depends, FastAPI
    from fastapi.responses import PlainTextResponse

    def app(*dependencies: Any) -> FastAPI:
        made = FastAPI()

        @made.get("/", response_class=PlainTextResponse, dependencies=list(dependencies))
        async def hello() -> str:
            return "hello"

        return made

    out = {"bare FastAPI": request(app())}
    out["buttress Depends"] = request(app(Depends(rate_limit(ours("f1")))))
    with_middleware = app()
    with_middleware.add_middleware(RateLimitMiddleware, limiter=ours("f2"))
    out["buttress middleware"] = request(with_middleware)
    try:
        from fastapi_limiter.depends import RateLimiter
        from pyrate_limiter import Duration, InMemoryBucket, Limiter, Rate

        rates = [Rate(HUGE, Duration.SECOND)]
        pyrate = Limiter(InMemoryBucket(rates))
        out["fastapi-limiter"] = request(app(Depends(RateLimiter(limiter=pyrate))))
    except ImportError:
        print("fastapi-limiter is not installed: pip install fastapi-limiter")
        return out
    if redis:
        from pyrate_limiter import RedisBucket
        from redis.asyncio import Redis

        async def on_redis() -> Any:  # an async bucket's limiter is made in its loop
            client = Redis.from_url(REDIS_URL)
            bucket = await RedisBucket.init(rates, client, "bench-asgi-fastapi-limiter")
            return Limiter(bucket)

        on_redis_limiter = LOOP.run_until_complete(on_redis())
        out["fastapi-limiter Redis"] = request(app(Depends(RateLimiter(limiter=on_redis_limiter))))
        shared = bt.RateLimiter(
            [bt.Scope("ip", HUGE, 1.0)],
            name="bench_asgi",
            backend=bt.ratelimit.backend_from_url(REDIS_URL),
        )
        out["buttress Depends Redis"] = request(app(Depends(rate_limit(shared))))
    return out


def redis_answers() -> bool:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping()
        return True
    except Exception:
        return False


def main() -> None:
    best = measure(starlette_apps(), time_in_loop, N, ROUNDS)
    over = report("1. Starlette app, rate-limit middleware", best, "bare Starlette", "buttress",
                  N, ROUNDS)  # fmt: skip
    if "slowapi" in over:
        print(f"   bare request {best['bare Starlette'] / 1000:.1f} µs; like for like:")
        for mine, theirs in (
            ("buttress", "slowapi headers"),
            ("buttress headers=False", "slowapi"),
        ):
            print(
                f"   {mine} adds {over[mine] / 1000:.1f} µs, {theirs} {over[theirs] / 1000:.1f} "
                f"µs: {over[mine] / over[theirs]:.3f} of it (target <= 0.1)"
            )
    redis = redis_answers()
    if not redis:
        print(f"\n(no Redis at {REDIS_URL}: the Redis rows are left out)")
    best = measure(fastapi_apps(redis), time_in_loop, N, ROUNDS)
    over = report("2. FastAPI app, rate-limit dependency", best, "bare FastAPI",
                  "buttress Depends", N, ROUNDS)  # fmt: skip
    if "fastapi-limiter" in over:
        print(
            f"   bare request {best['bare FastAPI'] / 1000:.1f} µs; fastapi-limiter adds "
            f"{over['fastapi-limiter'] / 1000:.1f} µs, buttress "
            f"{over['buttress Depends'] / 1000:.1f} µs "
            f"({over['buttress Depends'] / over['fastapi-limiter']:.3f} of fastapi-limiter's)"
        )


if __name__ == "__main__":
    main()
