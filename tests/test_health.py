"""The health report under each component state, its health+json rendering and endpoints."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import buttress as bt
from buttress._memory import MemoryReading


def probe_at(ratio: list[float]) -> Any:
    def probe() -> MemoryReading:
        return MemoryReading(source="cgroup_v2", limit=1000, used=int(ratio[0] * 1000), rss=None)

    return probe


def infra(clock: bt.ManualClock, cfg: dict[str, Any], **kw: Any) -> bt.Infrastructure:
    return bt.Infrastructure("h", cfg, clock=clock, env={}, background=False, **kw)


def statuses(report: bt.HealthReport) -> dict[str, str]:
    return {f"{c.kind}:{c.name}": c.status for c in report.checks}


def test_no_components_is_healthy(clock: bt.ManualClock) -> None:
    report = infra(clock, {"memory_manager": {"enabled": False}}).health()
    assert report.overall_status == "healthy"
    assert report.checks == ()
    assert report.http_status == 200
    assert report.to_health_json()["status"] == "pass"


def test_breaker_states_degrade_but_never_make_it_unhealthy(clock: bt.ManualClock) -> None:
    cfg = {
        "memory_manager": {"enabled": False},
        "circuit_breakers": {"db": {"shed_probability": {"light": 0, "medium": 0, "heavy": 0}}},
    }
    i = infra(clock, cfg)
    b = i.breakers["db"]
    assert i.health().overall_status == "healthy"
    for _ in range(3):
        with pytest.raises(ZeroDivisionError):
            b.call(lambda: 1 / 0)
    report = i.health()
    assert report.overall_status == "degraded"
    assert report.circuit_breakers["db"].degradation_level is bt.DegradationLevel.LIGHT
    check = next(c for c in report.checks if c.name == "db")
    assert check.observed == "degraded (light)"
    for _ in range(2):
        with pytest.raises(ZeroDivisionError):
            b.call(lambda: 1 / 0)
    report = i.health()
    assert report.circuit_breakers["db"].state is bt.BreakerState.OPEN
    assert report.overall_status == "degraded"
    assert report.http_status == 200
    b.force_open()
    assert i.health().overall_status == "degraded"
    b.reset()
    assert i.health().overall_status == "healthy"


def test_memory_levels_map_to_pass_warn_fail(clock: bt.ManualClock) -> None:
    ratio = [0.5]
    i = infra(clock, {"memory_manager": {"check_interval": 1.0}}, memory_probe=probe_at(ratio))
    assert i.health().overall_status == "healthy"
    ratio[0] = 0.75
    clock.advance(1.0)
    assert statuses(i.health())["memory:h.memory"] == "warn"
    ratio[0] = 0.9
    clock.advance(1.0)
    report = i.health()
    assert report.overall_status == "unhealthy"
    assert report.http_status == 503
    assert report.memory.level.value == "critical"
    assert report.to_health_json()["status"] == "fail"


def test_pool_waiting_warns_and_closed_fails(tmp_path: Path) -> None:
    cfg = {"memory_manager": {"enabled": False}, "connection_pools": {"db": {"max_size": 1}}}
    i = bt.Infrastructure(
        "h",
        cfg,
        env={},
        pools={"db": lambda: sqlite3.connect(tmp_path / "h.db", check_same_thread=False)},
    )
    with i:
        assert i.health().overall_status == "healthy"
        with i.protect("db"):
            assert i.health().connection_pools["db"].in_use == 1
    assert statuses(i.health())["connection_pool:db"] == "fail"


def test_pool_warns_for_overflow_in_use_not_idle_overflow(clock: bt.ManualClock) -> None:
    cfg = {
        "memory_manager": {"enabled": False},
        "connection_pools": {"db": {"max_size": 1, "max_overflow": 1, "overflow_ttl": 60.0}},
    }
    members = iter(range(100))
    # A real scheduler connects the members; the manual clock keeps overflow_ttl from passing.
    with bt.Infrastructure(
        "h", cfg, clock=clock, env={}, pools={"db": lambda: f"c{next(members)}"}
    ) as i:
        pool = i.pools["db"]
        a = pool.checkout(timeout=10.0)
        b = pool.checkout(timeout=10.0)  # beyond max_size: an overflow member
        check = next(c for c in i.health().checks if c.kind == "connection_pool")
        assert (check.status, check.reason) == ("warn", "0 waiting, 1 overflow in use")
        b.release()
        a.release()
        stats = pool.snapshot()
        assert (stats.overflow, stats.overflow_in_use, stats.in_use) == (1, 0, 0)
        check = next(c for c in i.health().checks if c.kind == "connection_pool")
        assert (check.status, check.reason) == ("pass", "0/2 in use")
        assert i.health().overall_status == "healthy"


def test_chaos_experiments_show_as_degraded(clock: bt.ManualClock) -> None:
    i = infra(clock, {"memory_manager": {"enabled": False}, "chaos": {"enabled": True}})
    with i.chaos.experiment("payments", failure_rate=0.5, duration=30.0, name="latency-drill"):
        report = i.health()
        assert report.overall_status == "degraded"
        assert [e["name"] for e in report.chaos_engineering["active_experiments"]] == [
            "latency-drill"
        ]
    assert i.health().overall_status == "healthy"


def test_experiments_listed_while_chaos_is_off_do_not_degrade_health(
    clock: bt.ManualClock,
) -> None:
    i = infra(clock, {"memory_manager": {"enabled": False}, "chaos": {"enabled": True}})
    with i.chaos.experiment("payments", failure_rate=1.0, name="drill"):
        i.chaos.disable()  # the experiment stays listed but injects nothing
        report = i.health()
        assert report.overall_status == "healthy"
        assert [e["name"] for e in report.chaos_engineering["active_experiments"]] == ["drill"]


def test_health_json_shape_and_to_dict(clock: bt.ManualClock) -> None:
    i = infra(
        clock,
        {
            "memory_manager": {"enabled": False},
            "circuit_breakers": {"db": {}},
            "rate_limiting": {"limiters": {"api": {"limit": 10}}},
        },
    )
    i.call("api", lambda: None)
    doc = i.health().to_health_json()
    assert doc["serviceId"] == "h"
    assert set(doc["checks"]) == {"circuit_breaker:db", "rate_limiter:api"}
    entry = doc["checks"]["circuit_breaker:db"][0]
    assert entry["status"] == "pass"
    assert entry["observedValue"] == "closed"
    assert entry["time"].startswith("2026-01-01T")
    plain = json.loads(json.dumps(i.health().to_dict()))
    assert plain["rate_limiters"]["api"]["algorithm"] == "token_bucket"
    assert plain["services"]["api"]["calls"] == 1
    assert plain["overall_status"] == "healthy"


def test_wsgi_and_asgi_apps(clock: bt.ManualClock) -> None:
    ratio = [0.95]
    i = infra(clock, {}, memory_probe=probe_at(ratio))
    app = bt.health_wsgi_app(i)
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"], seen["headers"] = status, dict(headers)

    body = b"".join(app({"REQUEST_METHOD": "GET"}, start_response))
    assert seen["status"] == "503 Service Unavailable"
    assert seen["headers"]["content-type"] == "application/health+json"
    assert json.loads(body)["status"] == "fail"

    ratio[0] = 0.1
    clock.advance(3600.0)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(bt.health_asgi_app(i.health)({"type": "http", "method": "GET"}, receive, send))
    assert sent[0]["status"] == 503  # hysteresis: one sample below is not enough to leave
    assert json.loads(sent[1]["body"])["checks"]["memory:h.memory"][0]["status"] == "fail"


def test_a_pool_below_min_size_whose_connects_fail_warns_or_fails(clock: bt.ManualClock) -> None:
    up = [False]
    members = iter(range(100))

    def connect() -> str:
        if not up[0]:
            raise ConnectionRefusedError("connection refused")
        return f"c{next(members)}"

    def pool_verdict(i: bt.Infrastructure, name: str) -> tuple[str, str]:
        check = next(c for c in i.health().checks if c.name == name)
        return check.status, check.reason

    cfg = {
        "memory_manager": {"enabled": False},
        "connection_pools": {
            "kept": {"min_size": 2, "max_size": 2, "connect_backoff": 1.0},
            "lazy": {"min_size": 0, "max_size": 1, "checkout_timeout": 0.001},
        },
    }
    pools = {"kept": connect, "lazy": connect}
    with bt.Infrastructure("h", cfg, clock=clock, env={}, background=False, pools=pools) as i:
        i.run_maintenance()  # the first min_size connect fails
        status, reason = pool_verdict(i, "kept")
        assert status == "fail"
        assert reason == "no connection (0 waiting); 1 connect(s) failed in a row, last: " + (
            "ConnectionRefusedError"  # the type only: its message may name hosts and roles
        )
        check = next(c for c in i.health().checks if c.name == "kept")
        assert check.detail == "ConnectionRefusedError('connection refused')"
        assert i.health().overall_status == "unhealthy"
        assert pool_verdict(i, "lazy") == ("pass", "0/0 in use")  # never asked to connect
        with pytest.raises(bt.PoolTimeoutError):
            i.pools["lazy"].connection().__enter__()  # books a connect
        i.run_maintenance()  # which fails: nothing retries until a caller comes, so a warning
        assert pool_verdict(i, "lazy")[0] == "warn"
        up[0] = True
        clock.advance(1.0)
        i.run_maintenance()  # one member back
        kept = i.pools["kept"].snapshot()
        assert (kept.size, kept.connect_failures, kept.last_connect_error) == (1, 0, None)
        assert pool_verdict(i, "kept") == ("pass", "0/1 in use")  # below min_size, filling up
        up[0] = False
        clock.advance(1.0)
        i.run_maintenance()  # the second member's connect fails: one left, below min_size
        status, reason = pool_verdict(i, "kept")
        assert status == "warn"
        assert reason.startswith("1 of min_size 2 connected; 1 connect(s) failed in a row")
