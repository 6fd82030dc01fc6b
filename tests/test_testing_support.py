"""buttress.testing: isolation, the five scenarios, load tests, the pytest plugin."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import buttress as bt
from buttress.testing import (
    SCENARIOS,
    isolated_infrastructure,
    isolated_infrastructure_async,
    load_test,
    load_test_async,
    simulate_failures,
)

pytest_plugins = ["pytester"]


def full_config() -> dict[str, Any]:
    """Every component, with a breaker band wide enough for every severity (3..9 failures)."""
    return {
        "circuit_breakers": {
            "payments": {
                "failure_threshold": 9,
                "degradation_threshold": 3,
                "failure_rate_threshold": None,
                "degradation_rate_threshold": None,
            }
        },
        "rate_limiting": {
            "limiters": {
                "payments": {
                    "scopes": [
                        {"name": "user", "limit": 20, "window": 60.0},
                        {"name": "org", "limit": 100, "window": 60.0},
                        {"name": "global", "limit": 10_000, "window": 60.0},
                    ]
                }
            }
        },
        "connection_pools": {
            "payments": {"max_size": 2, "max_overflow": 1, "checkout_timeout": 5.0}
        },
        "memory_manager": {"check_interval": 30.0},
    }


def sqlite_pool(tmp_path: Path) -> dict[str, Any]:
    db = tmp_path / "s.db"
    return {"payments": lambda: sqlite3.connect(db, check_same_thread=False)}


def test_guide_five_scenarios_leave_health_healthy_or_degraded(tmp_path: Path) -> None:
    with isolated_infrastructure(full_config(), pools=sqlite_pool(tmp_path), seed=3) as infra:
        results = simulate_failures(infra, SCENARIOS)
        assert [r.name for r in results] == list(SCENARIOS)
        assert all(r.ok for r in results), [(r.name, r.summary) for r in results]
        assert infra.health().overall_status in ("healthy", "degraded")


def test_each_scenario_did_what_it_names(tmp_path: Path) -> None:
    with isolated_infrastructure(full_config(), pools=sqlite_pool(tmp_path), seed=3) as infra:
        by_name = {r.name: r for r in simulate_failures(infra)}

        chaos = by_name["circuit_breaker_chaos"].details
        assert chaos["state"] == "open"
        assert chaos["injected"] == 9  # the breaker opens at its 9th failure
        assert not infra.chaos.enabled  # the master switch is back off

        memory = by_name["memory_pressure"].details
        assert memory["levels"] == ["warning", "critical"]
        assert memory["shed_at_critical"] and memory["critical_passes"]
        assert memory["level_after"] == "normal"

        burst = by_name["rate_limit_burst"].details
        assert burst["admitted"] == 20 and burst["denied_by_scope"] == {"user": 10}
        # the burst's charges were given back: a real user has the whole org allowance
        limiter = infra.limiters["payments"]
        assert limiter.peek({"user_id": "real", "org_id": "real-org"}).allowed

        pool = by_name["connection_pool_exhaustion"].details
        assert pool["held"] == 3 and pool["refused_with"] == "PoolTimeoutError"
        assert pool["overflow_in_use"] == 1
        assert infra.pools["payments"].snapshot().in_use == 0

        walk = by_name["gradual_degradation"].details
        assert walk["levels"] == ["light", "medium", "heavy"]
        assert walk["state"] == "open"

        scheduled = by_name["scheduled_chaos"]
        assert scheduled.ok, scheduled.summary
        assert scheduled.details["finished"] == len(scheduled.details["plan"]) == 3
        assert scheduled.details["injected"] > 0
        assert scheduled.details["recovery_times"]  # real time: one a call (10 ms) after an end
        assert not infra.chaos.enabled


def test_missing_components_are_reported_not_raised() -> None:
    with isolated_infrastructure({"memory_manager": {"enabled": False}}) as infra:
        results = simulate_failures(infra)
    assert [r.ok for r in results] == [False] * 6
    assert results[0].summary == "no circuit breaker to act on"


def test_unknown_scenario_is_a_config_error() -> None:
    with isolated_infrastructure({}) as infra, pytest.raises(bt.ConfigError, match="flood"):
        simulate_failures(infra, ["flood"])


def test_an_unknown_service_is_a_config_error_before_any_scenario_runs() -> None:
    cfg = {"circuit_breakers": {"search": {}}}
    with isolated_infrastructure(cfg) as infra:
        with pytest.raises(bt.ConfigError, match="did you mean 'search'"):
            simulate_failures(infra, service="serach")
        assert infra.breakers["search"].state is bt.BreakerState.CLOSED  # nothing ran


def test_isolation_gives_each_infrastructure_its_own_namespace() -> None:
    cfg = {"rate_limiting": {"limiters": {"api": {"limit": 1, "window": 60.0}}}}
    with isolated_infrastructure(cfg) as a, isolated_infrastructure(cfg) as b:
        assert a.namespace != b.namespace
        a.call("api", lambda: None)
        with pytest.raises(bt.RateLimitExceeded):
            a.call("api", lambda: None)
        b.call("api", lambda: None)
    assert a.scheduler.closed and b.scheduler.closed


def test_isolated_async_infrastructure() -> None:
    async def main() -> None:
        async with isolated_infrastructure_async({"circuit_breakers": {"svc": {}}}) as infra:

            async def op() -> int:
                return 3

            assert await infra.call_async("svc", op) == 3

    asyncio.run(main())


@pytest.mark.parametrize("mode", ["asyncio", "threads"])
def test_guide_load_test(mode: str) -> None:
    """The guide's load test: 50 users, 10 s, 100 operations each."""
    cfg = {
        "circuit_breakers": {"svc": {}},
        "rate_limiting": {"limiters": {"svc": {"limit": 1000, "hierarchical": True}}},
    }
    with isolated_infrastructure(cfg) as infra:
        result = load_test(
            infra,
            lambda: None,
            service="svc",
            concurrent_users=50,
            duration=10.0,
            operations_per_user=100,
            mode=mode,  # type: ignore[arg-type]
            progress=False,
        )
        assert result.operations == 5000
        assert result.success_rate > 0.95
        assert result.average_latency < 0.010
        assert result.throughput > 1000
        assert result.p50 <= result.p95 <= result.p99 <= result.max_latency
        assert infra.services["svc"].snapshot(now=infra.clock.monotonic()).calls == 5000


def test_load_test_counts_refusals_and_errors() -> None:
    cfg = {"rate_limiting": {"limiters": {"svc": {"scopes": [{"name": "user", "limit": 3}]}}}}
    with isolated_infrastructure(cfg) as infra:
        calls = {"n": 0}

        def flaky() -> None:
            calls["n"] += 1
            if calls["n"] % 2:
                raise ValueError("bad")

        result = load_test(
            infra,
            flaky,
            service="svc",
            concurrent_users=4,
            operations_per_user=5,
            mode="threads",
            progress=False,
        )
    assert result.operations == 20
    assert result.rejections == {"RateLimitExceeded": 8}  # 4 users x (5 - 3)
    assert sum(result.errors.values()) + result.successes == 12
    assert set(result.errors) == {"ValueError"}
    assert result.success_rate == result.successes / 20


def test_load_test_stops_at_the_duration() -> None:
    import time

    def slow() -> None:
        time.sleep(0.01)  # real-time: the operation under test takes real time

    result = load_test(
        None,
        slow,
        concurrent_users=2,
        duration=0.1,
        operations_per_user=10_000,
        mode="threads",
        progress=False,
    )
    assert 2 <= result.operations < 100


def test_load_test_async_inside_a_loop() -> None:
    async def op() -> None:
        await asyncio.sleep(0)  # real-time: one event-loop turn, no time passes

    async def main() -> bt.testing.LoadTestResult:  # type: ignore[name-defined]
        return await load_test_async(
            None, op, concurrent_users=10, operations_per_user=10, progress=False
        )

    result = asyncio.run(main())
    assert result.operations == 100 and result.success_rate == 1.0


def test_load_test_awaits_what_a_plain_callable_returns() -> None:
    ran: list[int] = []

    async def fetch() -> None:
        await asyncio.sleep(0)  # real-time: one event-loop turn, no time passes
        ran.append(1)

    class Client:
        async def __call__(self) -> None:
            await fetch()

    for operation in (lambda: fetch(), Client()):
        ran.clear()
        result = load_test(
            None, operation, concurrent_users=2, operations_per_user=5, progress=False
        )
        assert result.operations == 10 and result.success_rate == 1.0
        assert len(ran) == 10  # awaited, not dropped with a "never awaited" warning


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"concurrent_users": 0}, "concurrent_users"),
        ({"duration": -1}, "duration"),
        ({"operations_per_user": 0}, "operations_per_user"),
        ({"mode": "processes"}, "mode"),
        ({"service": "svc"}, "service"),
    ],
)
def test_load_test_bad_input(kwargs: dict[str, Any], path: str) -> None:
    with pytest.raises(bt.ConfigError) as info:
        load_test(None, lambda: None, progress=False, **kwargs)
    assert info.value.path == path


def test_pytest_plugin_fixtures(pytester: pytest.Pytester) -> None:
    # Its own ini file: a stray configuration in a parent folder (/tmp) must not be picked up.
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(
        """
        def test_uses_fixtures(buttress_infra, buttress_clock, buttress_simulate):
            infra = buttress_infra({"circuit_breakers": {"db": {}}})
            assert infra.clock is buttress_clock
            results = buttress_simulate(infra, ["circuit_breaker_chaos"])
            assert results[0].ok
            assert infra.health().overall_status == "degraded"
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:asyncio")
    result.assert_outcomes(passed=1)


def test_scheduled_chaos_scenario_on_a_manual_clock_replays() -> None:
    cfg = {"circuit_breakers": {"svc": {}}, "chaos": {"seed": 4}}
    runs = []
    for _ in range(2):
        with isolated_infrastructure(cfg, clock=bt.ManualClock()) as infra:
            (result,) = simulate_failures(infra, "scheduled_chaos")
            assert result.ok, result.summary
            runs.append(result.details)
            listed = infra.health().chaos_engineering["schedules"]
            assert [s["name"] for s in listed] == [result.details["schedule"]]
    times = runs[0]["recovery_times"]
    assert len(times) == 3 and all(0 < t <= 0.01 + 1e-9 for t in times)  # a call every 10 ms
    assert runs[0]["plan"] == runs[1]["plan"] and runs[0]["injected"] == runs[1]["injected"]


def test_scenarios_prove_what_they_name_from_a_known_start() -> None:
    cfg = {"circuit_breakers": {"svc": {"failure_threshold": 5, "degradation_threshold": 3}}}
    with isolated_infrastructure(cfg) as infra:
        infra.breakers["svc"].force_open()  # already open: the scenario must still open it
        (chaos,) = simulate_failures(infra, "circuit_breaker_chaos")  # one name as a str
        assert chaos.ok, chaos.summary
        assert "open" in chaos.details["transitions"]
        assert chaos.details["injected"] >= 1
        # Failures counted 3 to 5 leave no room for heavy: the walk says so and still passes.
        (walk,) = simulate_failures(infra, ["gradual_degradation"])
        assert walk.ok, walk.summary
        assert walk.details["levels"] == ["light", "medium"]
        assert walk.details["skipped"] == ["heavy"]
    with pytest.raises(bt.InfrastructureClosedError):
        simulate_failures(infra, SCENARIOS)


def test_isolation_removes_its_redis_keys(redis_url: str) -> None:
    import redis

    cfg = {
        "rate_limiting": {"backend": redis_url, "limiters": {"api": {"limit": 5, "window": 60.0}}},
        "memory_manager": {"enabled": False},
    }
    client = redis.Redis.from_url(redis_url)
    try:
        with isolated_infrastructure(cfg) as infra:
            infra.call("api", lambda: None)
            pattern = "*" + infra.namespace + "*"
            assert client.keys(pattern)  # the call left state in Redis ...
        assert client.keys(pattern) == []  # ... and leaving the block removed it

        async def main() -> str:
            async with isolated_infrastructure_async(cfg) as ainfra:
                await ainfra.call_async("api", asyncio.sleep, 0)
                assert client.keys("*" + ainfra.namespace + "*")
                return ainfra.namespace

        namespace = asyncio.run(main())
        assert client.keys("*" + namespace + "*") == []
    finally:
        client.close()


def test_isolated_fleets_share_nothing_and_leave_no_keys(redis_url: str) -> None:
    """Two isolated infrastructures from one configuration naming a fleet namespace: a
    fleet-wide force-open in one is not seen by the other, and no fleet key is left."""
    import redis

    cfg = {
        "fleet": {"url": redis_url, "namespace": "shop", "sync_interval": "100ms"},
        "circuit_breakers": {"payments": {"fleet": True}},
        "memory_manager": {"enabled": False},
    }
    client = redis.Redis.from_url(redis_url)
    try:
        with isolated_infrastructure(cfg) as a, isolated_infrastructure(cfg) as b:
            assert a.config.fleet.namespace == a.namespace != b.config.fleet.namespace
            a.breakers["payments"].force_open(fleet=True, reason="drill")
            fleet_a, fleet_b = a._build.made_fleet, b._build.made_fleet
            assert fleet_a is not None and fleet_b is not None
            fleet_a.sync()
            fleet_b.sync()
            assert a.breakers["payments"].state is bt.BreakerState.FORCED_OPEN
            assert b.breakers["payments"].state is bt.BreakerState.CLOSED
            assert b.breakers["payments"].snapshot().fleet.override is None  # type: ignore[union-attr]
            pattern = "*" + a.namespace + ":fleet:*"
            assert client.keys(pattern)
        assert client.keys(pattern) == []  # the override record too, which never expires
        assert client.keys("shop:fleet:{payments}:*") == []  # the file's namespace untouched
    finally:
        client.close()
