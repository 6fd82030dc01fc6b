"""The protect pipeline through every way in: what a refusal costs, and how it is reported.

``infra.call``, ``infra.call_async``, ``with infra.protect()``, ``async with infra.protect()``
and ``@infra.protected`` (plain and coroutine functions) run the same steps (one source,
``_protect_async.py``, and its generated thread twin); each test here runs all six.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

import buttress as bt
from conftest import IN_CI
from servers import RedisServer

CTX = {"user_id": "u1", "org_id": "o1"}
WAYS = ("call", "call_async", "protect", "protect_async", "protected", "protected_async")


def through(infra: bt.Infrastructure, way: str, *, cost: float = 1, ctx: Any = CTX) -> str:
    """One call to service "svc" through ``way``; returns what the operation returned."""

    def work() -> str:
        return "ok"

    async def awork() -> str:
        return "ok"

    if way == "call":
        return infra.call("svc", work, context=ctx, cost=cost)
    if way == "call_async":
        return asyncio.run(infra.call_async("svc", awork, context=ctx, cost=cost))
    if way == "protect":
        with infra.protect("svc", context=ctx, cost=cost):
            return work()
    if way == "protect_async":

        async def block() -> str:
            async with infra.protect("svc", context=ctx, cost=cost):
                return await awork()

        return asyncio.run(block())
    if way == "protected":
        return infra.protected("svc", context=ctx, cost=cost)(work)()
    assert way == "protected_async"
    return asyncio.run(infra.protected("svc", context=ctx, cost=cost)(awork)())


def limiter_config(backend: str, limit: int = 5) -> dict[str, Any]:
    return {
        "circuit_breakers": {
            "svc": {
                "failure_threshold": 1,
                "degradation_threshold": None,
                "failure_rate_threshold": None,
                "degradation_rate_threshold": None,
                "reset_timeout": 60.0,
            }
        },
        "rate_limiting": {
            "backend": backend,
            "limiters": {
                "svc": {
                    "scopes": [
                        {"name": "user", "limit": limit, "window": 1.0},
                        {"name": "org", "limit": 100, "window": 1.0},
                    ]
                }
            },
        },
    }


def trip(infra: bt.Infrastructure) -> None:
    with pytest.raises(ZeroDivisionError):
        infra.call("svc", lambda: 1 / 0, context={"user_id": "tripper", "org_id": "o9"})
    assert infra.breakers["svc"].state is bt.BreakerState.OPEN


# -- a refusal for a cost above the limit ------------------------------------------------------


@pytest.mark.parametrize("way", WAYS)
def test_a_cost_above_the_limit_is_refused_with_no_retry_after(
    clock: bt.ManualClock, way: str
) -> None:
    with bt.Infrastructure("t", limiter_config("memory"), clock=clock, env={}) as infra:
        with pytest.raises(bt.RateLimitExceeded) as info:
            through(infra, way, cost=10)
        err = info.value
        assert err.retry_after is None  # no wait makes room for 10 in a limit of 5
        assert err.scope == "user" and err.limit == 5
        assert "inf" not in str(err)
        assert through(infra, way, cost=5) == "ok"  # nothing was charged by the refusal


# -- a refusal by the breaker costs nothing ----------------------------------------------------


@pytest.mark.parametrize("way", WAYS)
def test_an_open_breaker_refuses_and_the_memory_charge_comes_back(
    clock: bt.ManualClock, way: str
) -> None:
    with bt.Infrastructure("t", limiter_config("memory"), clock=clock, env={}) as infra:
        trip(infra)
        for _ in range(8):  # more than the user's 5: every refusal was refunded
            with pytest.raises(bt.CircuitOpenError):
                through(infra, way)
        assert infra.limiters["svc"].peek(CTX).remaining == 4  # all 5 left, less the peek's 1
        rejected = infra.services["svc"].snapshot(now=clock.monotonic()).rejected_by_reason
        assert rejected == {"CircuitOpenError": 8}


@pytest.fixture(scope="module")
def private_redis() -> Iterator[str]:
    """A redis-server of this module's own: its command statistics count our calls only."""
    if shutil.which("redis-server") is None:
        if IN_CI:
            pytest.fail("redis-server is not on PATH (CI=true)")
        pytest.skip("redis-server is not on PATH")
    server = RedisServer().start()
    try:
        yield server.url
    finally:
        server.kill()


def script_calls(url: str) -> int:
    """How many Lua scripts the server has run (EVALSHA and EVAL), from INFO commandstats;
    a call refused for a script not loaded yet (NOSCRIPT, answered by loading it) is not one."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    ran = 0
    for command in ("evalsha", "eval", "fcall"):
        entry = stats.get(f"cmdstat_{command}", {})
        ran += int(entry.get("calls", 0)) - int(entry.get("failed_calls", 0))
    return ran


@pytest.mark.redis
@pytest.mark.parametrize("way", WAYS)
def test_an_open_breaker_refuses_before_a_redis_limit_is_charged(
    private_redis: str, way: str
) -> None:
    cfg = limiter_config(private_redis)
    with bt.Infrastructure(f"t{os.getpid()}{way}", cfg, env={}) as infra:
        through(infra, way)  # the scripts are loaded and a call charged: one script call
        before = script_calls(private_redis)
        trip(infra)
        tripped = script_calls(private_redis)
        assert tripped == before + 1  # the failing call was charged while the breaker closed
        for _ in range(5):
            with pytest.raises(bt.CircuitOpenError):
                through(infra, way)
        assert script_calls(private_redis) == tripped  # no charge, so no refund either
        assert infra.services["svc"].snapshot(now=0.0).rejected_by_reason == {"CircuitOpenError": 5}


@pytest.mark.redis
def test_a_later_refusal_on_redis_is_refunded(private_redis: str) -> None:
    """The breaker admits, the limit is charged, the pool refuses: the charge goes back."""
    cfg = {
        **limiter_config(private_redis, limit=2),
        # One member, made before the calls; a checkout that would wait is refused at once.
        "connection_pools": {"svc": {"min_size": 1, "max_size": 1, "max_waiting": 0}},
    }
    infra = bt.Infrastructure("refund", cfg, env={}, pools={"svc": object}, background=False)
    try:
        infra.pools["svc"].open(wait=True)
        before = script_calls(private_redis)
        with (
            infra.protect("svc", context={"user_id": "a", "org_id": "o"}),
            pytest.raises(bt.PoolTimeoutError),
        ):
            infra.call("svc", lambda conn: None, context=CTX)
        assert script_calls(private_redis) == before + 3  # two charges and one refund
        for _ in range(2):  # u1's 2 are all there: the refused call's charge came back
            infra.call("svc", lambda conn: None, context=CTX)
    finally:
        infra.close()


# -- the bulkhead: after the rate limit, before the breaker -------------------------------------


def bulkhead_config() -> dict[str, Any]:
    config = limiter_config("memory")
    config["services"] = {"svc": {"bulkhead": {"max_concurrent": 1}}}
    return config


@pytest.mark.parametrize("way", WAYS)
def test_a_full_bulkhead_refuses_and_the_charge_comes_back(clock: bt.ManualClock, way: str) -> None:
    with bt.Infrastructure("t", bulkhead_config(), clock=clock, env={}) as infra:
        bulkhead = infra.bulkheads["svc"]
        holder = bulkhead.try_enter()  # the one place, taken elsewhere
        assert holder is not None
        for _ in range(8):  # more than the user's 5: every refusal was refunded
            with pytest.raises(bt.BulkheadFullError):
                through(infra, way)
        assert infra.limiters["svc"].peek(CTX).remaining == 4
        assert infra.breakers["svc"].snapshot().call_count == 0  # the breaker never saw them
        holder.release()
        assert through(infra, way) == "ok"
        assert bulkhead.in_use == 0


@pytest.mark.parametrize("way", WAYS)
def test_an_open_breaker_gives_the_bulkheads_place_back(clock: bt.ManualClock, way: str) -> None:
    with bt.Infrastructure("t", bulkhead_config(), clock=clock, env={}) as infra:
        trip(infra)
        for _ in range(3):
            with pytest.raises(bt.CircuitOpenError):
                through(infra, way)
        snapshot = infra.bulkheads["svc"].snapshot()
        assert snapshot.in_use == 0 and snapshot.admitted == 4  # the trip, and 3 refused after
        assert snapshot.service_time is None  # a refusal is no sample of the dependency
