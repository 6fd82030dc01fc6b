"""The metrics exporters: Prometheus exposition parsed back, OpenTelemetry through the SDK.

One scenario drives every component into a known state (an open breaker, a degraded one, a
chaos target, a limiter refusing by two scopes, a pool at its limit, critical memory); both
exporters must show exactly those numbers, and no rate-limit key (user or org id) anywhere.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families

import buttress as bt
from buttress._memory import MemoryReading, Psi
from buttress.exporters.otel import instrument_infrastructure
from buttress.exporters.prometheus import InfrastructureCollector, register_prometheus

USER_A, USER_B, USER_C, USER_D = "user-4711", "user-4712", "user-4713", "user-4714"
ORG_A, ORG_B = "org-0815", "org-0816"
SECRETS = (USER_A, USER_B, USER_C, USER_D, ORG_A, ORG_B, "4711", "0815")

NO_MEMORY: dict[str, Any] = {"memory_manager": {"enabled": False}}
NO_RATE = {"failure_rate_threshold": None, "degradation_rate_threshold": None}
CONFIG: dict[str, Any] = {
    "circuit_breakers": {
        "payments": {"failure_threshold": 2, "degradation_threshold": None, **NO_RATE},
        "catalog": {"failure_threshold": 9, "degradation_threshold": 3, **NO_RATE},
        "flaky": {
            "failure_threshold": 99,
            "degradation_threshold": None,
            **NO_RATE,
            "fault_injection": {"enabled": True, "failure_rate": 1.0},
        },
    },
    "rate_limiting": {
        "limiters": {
            "payments": {
                "scopes": [
                    {"name": "user", "limit": 2, "window": 60.0},
                    {"name": "org", "limit": 4, "window": 60.0},
                ]
            }
        }
    },
    "connection_pools": {"db": {"min_size": 2, "max_size": 2, "checkout_timeout": 0.001}},
    "memory_manager": {"check_interval": 5.0},
    "chaos": {"enabled": True},
    "services": {
        "payments": {"pool": False},
        "catalog": {"limiter": False, "pool": False},
        "flaky": {"limiter": False, "pool": False},
        "reports": {"breaker": False, "limiter": False, "pool": "db"},
    },
}


class Probe:
    """A memory probe the test turns up: ``used`` of 1 GB, RSS 800 MB, some PSI."""

    def __init__(self) -> None:
        self.used = 100_000_000

    def __call__(self) -> MemoryReading:
        psi = Psi(some_avg10=5.0, some_avg60=0.0, some_avg300=0.0, some_total=0, full_avg10=1.0)
        return MemoryReading(
            source="scenario", limit=1_000_000_000, used=self.used, rss=800_000_000, psi=psi
        )


def ok(seconds: float, clock: bt.ManualClock) -> Any:
    def run(*_: Any) -> None:
        clock.advance(seconds)

    return run


def fail(seconds: float, clock: bt.ManualClock) -> Any:
    def run(*_: Any) -> None:
        clock.advance(seconds)
        raise ValueError("boom")

    return run


def drive(infra: bt.Infrastructure, clock: bt.ManualClock, probe: Probe) -> None:
    """Every component into a known state. Comments give what the exporters must show."""
    call = infra.call

    def ctx(user: str, org: str) -> dict[str, str]:
        return {"user_id": user, "org_id": org}

    # payments: 3 successes (10 ms), a user-scope and an org-scope refusal, 2 failures (30 ms)
    # that open the breaker, then one call refused by the open breaker (its quota refunded).
    call("payments", ok(0.010, clock), context=ctx(USER_A, ORG_A))
    call("payments", ok(0.010, clock), context=ctx(USER_A, ORG_A))
    with pytest.raises(bt.RateLimitExceeded):
        call("payments", ok(0.010, clock), context=ctx(USER_A, ORG_A))
    call("payments", ok(0.010, clock), context=ctx(USER_B, ORG_A))
    with pytest.raises(ValueError, match="boom"):
        call("payments", fail(0.030, clock), context=ctx(USER_C, ORG_A))
    with pytest.raises(bt.RateLimitExceeded):
        call("payments", ok(0.010, clock), context=ctx(USER_D, ORG_A))
    with pytest.raises(ValueError, match="boom"):
        call("payments", fail(0.030, clock), context=ctx(USER_C, ORG_B))
    with pytest.raises(bt.CircuitOpenError):
        call("payments", ok(0.010, clock), context=ctx(USER_D, ORG_B))

    # catalog: 4 failures of 9 allowed, degraded from 3 (critical calls: none shed).
    for _ in range(4):
        with pytest.raises(ValueError, match="boom"):
            call("catalog", fail(0.001, clock), critical=True)
    infra.cache_hit("catalog")
    infra.cache_hit("catalog")
    infra.cache_miss("catalog")

    # flaky: chaos fails every call.
    with pytest.raises(bt.InjectedFault):
        call("flaky", ok(0.001, clock), critical=True)

    # reports: the pool is filled, both connections are held, a third checkout times out;
    # one is given back. Then memory goes critical and a non-critical call is shed.
    infra.run_maintenance()
    infra.run_maintenance()
    first, second = infra.pools["db"].connection(), infra.pools["db"].connection()
    first.__enter__()
    second.__enter__()
    with pytest.raises(bt.PoolTimeoutError):
        call("reports", ok(0.001, clock))
    first.__exit__(None, None, None)
    assert infra.memory is not None
    probe.used = 900_000_000
    infra.memory.sample()
    with pytest.raises(bt.LoadShedError):
        call("reports", ok(0.001, clock))


@pytest.fixture
def infra(clock: bt.ManualClock) -> Iterator[bt.Infrastructure]:
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    probe = Probe()
    with bt.Infrastructure(
        "shop",
        CONFIG,
        clock=clock,
        seed=7,
        env={},
        background=False,
        pools={"db": bt.ResourceSpec(create=lambda: conn, close=lambda c: None)},
        memory_probe=probe,
    ) as infra:
        drive(infra, clock, probe)
        yield infra


def test_the_scenario_is_what_the_exporters_are_checked_against(infra: bt.Infrastructure) -> None:
    """The components' own snapshots, so a change there shows here and not as an exporter bug."""
    report = infra.health()
    pay = report.circuit_breakers["payments"]
    assert (pay.state, pay.total_successes, pay.total_failures, pay.total_rejected) == (
        "open",
        3,
        2,
        1,
    )
    assert report.circuit_breakers["catalog"].degradation_level == "light"
    lim = report.rate_limiters["payments"]
    assert (lim.admitted, [s.denied for s in lim.scopes]) == (6, [1, 1])
    pool = report.connection_pools["db"]
    assert (pool.size, pool.in_use, pool.checkouts, pool.timeouts) == (2, 1, 2, 1)
    assert report.memory.level == "critical"
    assert report.overall_status == "unhealthy"


# -- Prometheus --------------------------------------------------------------------------------


def scrape(registry: CollectorRegistry) -> tuple[str, dict[tuple[str, frozenset[Any]], float]]:
    text = generate_latest(registry).decode()
    values: dict[tuple[str, frozenset[Any]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in values, f"duplicate series {key}"
            values[key] = s.value
    return text, values


def series(metric: str, /, **labels: str) -> tuple[str, frozenset[Any]]:
    return metric, frozenset({"namespace": "shop", **labels}.items())


def test_prometheus_exposition_has_every_component_with_exact_values(
    infra: bt.Infrastructure,
) -> None:
    registry = CollectorRegistry()
    register_prometheus(infra, registry)
    text, v = scrape(registry)

    state = "buttress_circuit_breaker_state"
    assert v[series(state, name="payments", state="open")] == 1
    assert v[series(state, name="payments", state="closed")] == 0
    assert sum(v[series(state, name="catalog", state=s)] for s in bt.BreakerState) == 1
    assert v[series(state, name="catalog", state="degraded")] == 1
    assert v[series("buttress_circuit_breaker_degradation_level", name="catalog")] == 1
    assert v[series("buttress_circuit_breaker_degradation_level", name="payments")] == 0
    calls = "buttress_circuit_breaker_calls_total"
    assert {o: v[series(calls, name="payments", outcome=o)] for o in _OUTCOMES} == {
        "success": 3,
        "failure": 2,
        "ignored": 0,
        "cancelled": 0,
        "rejected": 1,
        "shed": 0,
    }
    assert v[series(calls, name="catalog", outcome="failure")] == 4
    assert v[series("buttress_circuit_breaker_failure_ratio", name="payments")] == 0.4
    assert v[series("buttress_circuit_breaker_window_calls", name="payments")] == 5
    assert v[series("buttress_circuit_breaker_opens_total", name="payments")] == 1

    decisions = "buttress_rate_limiter_decisions_total"
    assert v[series(decisions, name="payments", result="admitted", scope="")] == 6
    assert v[series(decisions, name="payments", result="denied", scope="user")] == 1
    assert v[series(decisions, name="payments", result="denied", scope="org")] == 1
    assert v[series("buttress_rate_limiter_limit", name="payments", scope="org")] == 4
    assert v[series("buttress_rate_limiter_window_seconds", name="payments", scope="user")] == 60
    assert v[series("buttress_rate_limiter_performance_rating", name="payments")] == 1
    assert v[series("buttress_rate_limiter_waiting_requests", name="payments")] == 0

    assert v[series("buttress_pool_connections", name="db", state="used")] == 1
    assert v[series("buttress_pool_connections", name="db", state="idle")] == 1
    assert v[series("buttress_pool_max_size", name="db")] == 2
    assert v[series("buttress_pool_pending_requests", name="db")] == 0
    assert v[series("buttress_pool_checkouts_total", name="db")] == 2
    assert v[series("buttress_pool_timeouts_total", name="db")] == 1
    assert v[series("buttress_pool_connects_total", name="db")] == 2
    assert v[series("buttress_pool_errors_total", name="db", kind="connect")] == 0
    assert v[series("buttress_pool_wait_seconds", name="db", quantile="0.99")] == 0
    assert v[series("buttress_pool_wait_seconds_count", name="db")] == 2

    assert v[series("buttress_memory_level", level="critical")] == 1
    assert v[series("buttress_memory_level", level="normal")] == 0
    assert v[series("buttress_memory_pressure_ratio")] == 0.9
    assert v[series("buttress_memory_working_set_bytes")] == 900_000_000
    assert v[series("buttress_memory_limit_bytes")] == 1_000_000_000
    assert v[series("buttress_memory_rss_bytes")] == 800_000_000
    assert v[series("buttress_memory_psi_avg10_ratio", kind="some")] == 0.05
    assert v[series("buttress_memory_psi_avg10_ratio", kind="full")] == 0.01
    assert v[series("buttress_memory_threshold_ratio", level="critical")] == 0.85
    assert v[series("buttress_memory_shedding")] == 1
    assert v[series("buttress_memory_shed_calls_total")] == 1

    assert v[series("buttress_service_calls_total", name="payments")] == 5
    assert v[series("buttress_service_errors_total", name="payments", error_type="ValueError")] == 2
    rejections = "buttress_service_rejections_total"
    assert v[series(rejections, name="payments", reason="RateLimitExceeded")] == 2
    assert v[series(rejections, name="payments", reason="CircuitOpenError")] == 1
    assert v[series(rejections, name="reports", reason="PoolTimeoutError")] == 1
    assert v[series(rejections, name="reports", reason="LoadShedError")] == 1
    duration = "buttress_service_call_duration_seconds"
    assert v[series(duration + "_count", name="payments")] == 5
    assert v[series(duration + "_sum", name="payments")] == pytest.approx(0.09)
    assert v[series(duration, name="payments", quantile="0.5")] == pytest.approx(0.010, rel=0.01)
    assert v[series(duration, name="payments", quantile="1.0")] == pytest.approx(0.030)
    assert v[series("buttress_service_cache_hits_total", name="catalog")] == 2
    assert v[series("buttress_service_cache_misses_total", name="catalog")] == 1

    assert v[series("buttress_chaos_enabled")] == 1
    faults = "buttress_chaos_injected_faults_total"
    assert v[series(faults, target="flaky", kind="failure")] == 1
    assert v[series(faults, target="flaky", kind="delay")] == 0
    assert v[series("buttress_health_status", status="unhealthy")] == 1
    assert v[series("buttress_health_status", status="healthy")] == 0

    for secret in SECRETS:
        assert secret not in text


_OUTCOMES = ("success", "failure", "ignored", "cancelled", "rejected", "shed")
_BOUNDED = {
    "namespace",
    "name",
    "state",
    "mode",  # a limiter's: backend or one of the three failure policies
    "outcome",
    "result",
    "scope",
    "kind",
    "level",
    "reason",
    "error_type",
    "event",
    "target",
    "status",
    "quantile",
}


def test_prometheus_labels_are_bounded_and_names_follow_the_conventions(
    infra: bt.Infrastructure,
) -> None:
    registry = CollectorRegistry()
    register_prometheus(infra, registry)
    families = list(text_string_to_metric_families(generate_latest(registry).decode()))
    assert len(families) > 40
    for family in families:
        assert family.name.startswith("buttress_")
        assert not family.name.endswith(("_milliseconds", "_ms", "_percent", "_kb"))
        for s in family.samples:
            assert s.name.endswith("_total") == (family.type == "counter"), s.name
            assert set(s.labels) <= _BOUNDED, (family.name, s.labels)
            if family.name.endswith("_ratio") or family.name.endswith("_rating"):
                assert 0.0 <= s.value <= 1.0, (family.name, s.value)


def test_openmetrics_exposition_parses_too(infra: bt.Infrastructure) -> None:
    registry = CollectorRegistry()
    register_prometheus(infra, registry)
    text = generate_openmetrics(registry).decode()
    families = {f.name: f for f in parse_openmetrics(text)}
    assert families["buttress_pool_wait_seconds"].unit == "seconds"
    assert families["buttress_memory_working_set_bytes"].unit == "bytes"
    assert families["buttress_circuit_breaker_calls"].type == "counter"


def test_one_collector_serves_several_namespaces_on_a_registry(
    infra: bt.Infrastructure, clock: bt.ManualClock
) -> None:
    registry = CollectorRegistry()
    with bt.Infrastructure(
        "admin",
        {"circuit_breakers": {"payments": {}}, **NO_MEMORY},
        clock=clock,
        env={},
        background=False,
    ) as other:
        first = register_prometheus(infra, registry)
        assert register_prometheus(other, registry) is first
        assert register_prometheus(other, registry) is first  # again: no-op
        _, v = scrape(registry)
        open_ = "buttress_circuit_breaker_state"
        assert v[series(open_, name="payments", state="open")] == 1
        admin = {"namespace": "admin", "name": "payments", "state": "closed"}
        assert v[(open_, frozenset(admin.items()))] == 1

        twin = bt.Infrastructure("admin", NO_MEMORY, clock=clock, env={}, background=False)
        with pytest.raises(bt.ConfigError, match="namespace: an infrastructure named 'admin'"):
            register_prometheus(twin, registry)
        twin.close()

        assert first.remove(other)
        assert not first.remove(other)
        _, v = scrape(registry)
        assert not any(dict(labels)["namespace"] == "admin" for _, labels in v)

        registry.unregister(first)
        second = register_prometheus(other, registry)  # unregistered by hand: a fresh one
        assert second is not first
        assert second.infrastructures == (other,)


def test_by_default_the_collector_goes_on_prometheus_clients_registry(
    infra: bt.Infrastructure,
) -> None:
    collector = register_prometheus(infra)
    try:
        value = REGISTRY.get_sample_value("buttress_memory_pressure_ratio", {"namespace": "shop"})
        assert value == 0.9
    finally:
        REGISTRY.unregister(collector)
    assert (
        REGISTRY.get_sample_value("buttress_memory_pressure_ratio", {"namespace": "shop"}) is None
    )


def test_a_second_prefix_is_a_second_collector(infra: bt.Infrastructure) -> None:
    registry = CollectorRegistry()
    register_prometheus(infra, registry)
    register_prometheus(infra, registry, prefix="shop")
    _, v = scrape(registry)
    assert v[series("shop_memory_pressure_ratio")] == v[series("buttress_memory_pressure_ratio")]
    with pytest.raises(bt.ConfigError, match="prefix"):
        InfrastructureCollector(infra, prefix="my-app")


def test_registering_does_not_scrape(clock: bt.ManualClock) -> None:
    """describe() gives the registry the names, so registering reads no component."""
    with bt.Infrastructure(
        "t", {"circuit_breakers": {"a": {}}, **NO_MEMORY}, clock=clock, env={}, background=False
    ) as infra:
        reports: list[bt.HealthReport] = []
        health = infra.health

        def counted() -> bt.HealthReport:
            reports.append(health())
            return reports[-1]

        infra.health = counted  # type: ignore[method-assign]
        registry = CollectorRegistry(auto_describe=True)
        register_prometheus(infra, registry)
        assert reports == []
        scrape(registry)
        assert len(reports) == 1


# -- OpenTelemetry -----------------------------------------------------------------------------


Points = dict[tuple[str, frozenset[Any]], Any]


def collect(reader: InMemoryMetricReader) -> Points:
    data = reader.get_metrics_data()
    points: Points = {}
    if data is None:
        return points
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            assert sm.scope.name == "buttress"
            for metric in sm.metrics:
                for p in metric.data.data_points:
                    key = (metric.name, frozenset(p.attributes.items()))
                    assert key not in points, f"duplicate point {key}"
                    points[key] = p if isinstance(p, HistogramDataPoint) else p.value
    return points


def attrs(metric: str, /, **labels: Any) -> tuple[str, frozenset[Any]]:
    return metric, frozenset({"buttress.namespace": "shop", **labels}.items())


def pool(metric: str, /, **labels: Any) -> tuple[str, frozenset[Any]]:
    return attrs(metric, **{"db.client.connection.pool.name": "db", **labels})


@dataclass
class Otel:
    reader: InMemoryMetricReader
    provider: MeterProvider

    def collect(self) -> Points:
        return collect(self.reader)


@pytest.fixture
def otel() -> Iterator[Otel]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    yield Otel(reader, provider)
    provider.shutdown()


def test_otel_reports_pools_under_the_semantic_conventions_and_the_rest_under_buttress(
    infra: bt.Infrastructure, otel: Otel
) -> None:
    with instrument_infrastructure(infra, otel.provider):
        p = otel.collect()

    state = "db.client.connection.state"
    assert p[pool("db.client.connection.count", **{state: "used"})] == 1
    assert p[pool("db.client.connection.count", **{state: "idle"})] == 1
    assert p[pool("db.client.connection.max")] == 2
    assert p[pool("db.client.connection.pending_requests")] == 0
    assert p[pool("db.client.connection.timeouts")] == 1
    assert p[pool("buttress.pool.checkouts")] == 2
    assert p[pool("buttress.pool.wait_time", **{"buttress.quantile": 1.0})] == 0

    b = "buttress.name"
    assert p[attrs("buttress.circuit_breaker.state", **{b: "payments"}, **_st("open"))] == 1
    assert p[attrs("buttress.circuit_breaker.state", **{b: "payments"}, **_st("closed"))] == 0
    assert p[attrs("buttress.circuit_breaker.degradation_level", **{b: "catalog"})] == 1
    calls = "buttress.circuit_breaker.calls"
    assert p[attrs(calls, **{b: "payments", "buttress.outcome": "success"})] == 3
    assert p[attrs(calls, **{b: "payments", "buttress.outcome": "rejected"})] == 1
    decisions = "buttress.rate_limiter.decisions"
    assert p[attrs(decisions, **{b: "payments", "buttress.result": "admitted"})] == 6
    denied = {b: "payments", "buttress.result": "denied", "buttress.scope": "user"}
    assert p[attrs(decisions, **denied)] == 1
    assert p[attrs("buttress.rate_limiter.limit", **{b: "payments", "buttress.scope": "user"})] == 2
    assert p[attrs("buttress.memory.level", **{"buttress.level": "critical"})] == 1
    assert p[attrs("buttress.memory.utilization")] == 0.9
    assert p[attrs("buttress.memory.usage")] == 900_000_000
    assert p[attrs("buttress.memory.psi.avg10", **{"buttress.kind": "full"})] == 0.01
    assert p[attrs("buttress.service.errors", **{b: "payments", "error.type": "ValueError"})] == 2
    latency = attrs("buttress.service.duration", **{b: "payments", "buttress.quantile": 1.0})
    assert p[latency] == pytest.approx(0.030)
    assert p[attrs("buttress.health.status", **{"buttress.status": "unhealthy"})] == 1

    shown = repr(p)
    for secret in SECRETS:
        assert secret not in shown


def _st(state: str) -> dict[str, str]:
    return {"buttress.state": state}


def test_otel_handle_close_stops_reporting_and_a_namespace_is_instrumented_once(
    infra: bt.Infrastructure, otel: Otel, clock: bt.ManualClock
) -> None:
    provider = otel.provider
    handle = instrument_infrastructure(infra, provider)
    with pytest.raises(bt.ConfigError, match="already instrumented"):
        instrument_infrastructure(infra, provider)
    with bt.Infrastructure(
        "admin", {"circuit_breakers": {"a": {}}, **NO_MEMORY}, clock=clock, env={}, background=False
    ) as other:
        other_handle = instrument_infrastructure(other, provider)
        namespaces = {dict(a)["buttress.namespace"] for _, a in otel.collect()}
        assert namespaces == {"shop", "admin"}
        handle.close()
        handle.close()
        assert "closed" in repr(handle)
        namespaces = {dict(a)["buttress.namespace"] for _, a in otel.collect()}
        assert namespaces == {"admin"}
        other_handle.close()
    # closed handles free the namespace: it can be instrumented again
    with instrument_infrastructure(infra, provider):
        assert any(dict(a)["buttress.namespace"] == "shop" for _, a in otel.collect())


async def turns(done: Any) -> None:
    """Let the loop's other tasks run until ``done()`` (a bounded number of turns)."""
    for _ in range(100):
        if done():
            return
        await asyncio.sleep(0)  # real-time: one event-loop turn, no time passes
    raise AssertionError("the loop never got there")


def test_otel_pool_histograms_record_waits_from_the_pool_events(
    otel: Otel, clock: bt.ManualClock
) -> None:
    """An async pool under the manual clock: a borrower waits exactly 0.25 s."""
    provider = otel.provider
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    cfg = {"connection_pools": {"db": {"async": True, "min_size": 1, "max_size": 1}}, **NO_MEMORY}

    async def main() -> Points:
        async with bt.Infrastructure(
            "shop",
            cfg,
            clock=clock,
            env={},
            background=False,
            pools={"db": bt.ResourceSpec(create=lambda: conn, close=lambda c: None)},
        ) as infra:
            assert infra.async_scheduler is not None
            await infra.async_scheduler.run_due()
            db = infra.async_pools["db"]
            await turns(lambda: db.snapshot().size == 1)  # the connect runs as a task
            with instrument_infrastructure(infra, provider, pool_histograms=True):
                async with db.connection():
                    clock.advance(0.5)

                    async def borrow() -> None:
                        async with db.connection():
                            clock.advance(1.0)

                    task = asyncio.create_task(borrow())
                    await turns(lambda: db.snapshot().waiting == 1)
                    clock.advance(0.25)
                await task
                points = otel.collect()
            assert db.snapshot().wait_max == 0.25
            return points

    p = asyncio.run(main())
    wait = p[pool("db.client.connection.wait_time")]
    assert (wait.count, wait.sum, wait.max) == (2, 0.25, 0.25)
    use = p[pool("db.client.connection.use_time")]
    assert (use.count, use.sum) == (2, 1.75)
    assert p[pool("buttress.pool.wait_time", **{"buttress.quantile": 1.0})] == 0.25
    assert p[pool("buttress.pool.queued_checkouts")] == 1


def test_otel_pool_histograms_refuse_two_pools_they_cannot_tell_apart(
    otel: Otel, clock: bt.ManualClock
) -> None:
    provider = otel.provider
    cfg = {
        "connection_pools": {"db": {"factory": "sqlite3:connect", "args": [":memory:"]}},
        **NO_MEMORY,
    }
    with (
        bt.Infrastructure("a", cfg, clock=clock, env={}, background=False) as a,
        bt.Infrastructure("b", cfg, clock=clock, env={}, background=False) as b,
    ):
        with instrument_infrastructure(a, provider, pool_histograms=True):
            with pytest.raises(bt.ConfigError, match=r"connection_pools\.db: pool 'db' of"):
                instrument_infrastructure(b, provider, pool_histograms=True)
            with instrument_infrastructure(b, provider):  # without the histograms: fine
                pass
        with instrument_infrastructure(b, provider, pool_histograms=True):  # a's claim is gone
            pass


# -- packaging -----------------------------------------------------------------------------------


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_importing_buttress_imports_neither_metrics_library() -> None:
    done = run_python(
        "import sys, buttress, buttress.exporters\n"
        "print(sorted(m for m in sys.modules if m.startswith(('prometheus', 'opentelemetry'))))"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("module", "library", "package", "extra"),
    [
        ("prometheus", "prometheus_client", "prometheus-client", "prometheus"),
        ("otel", "opentelemetry", "opentelemetry-api", "otel"),
    ],
)
def test_a_missing_library_names_what_to_install(
    module: str, library: str, package: str, extra: str
) -> None:
    done = run_python(
        f"import sys; sys.modules[{library!r}] = None\nimport buttress.exporters.{module}"
    )
    assert done.returncode != 0
    assert "ImportError" in done.stderr
    assert f"pip install {package} (the '{extra}' extra)" in done.stderr


# -- docs/metrics.md -----------------------------------------------------------------------------

DOC = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"


def doc_block(marker: str) -> str:
    found = re.findall(r"^```python\n(.*?)^```", DOC.read_text(), flags=re.M | re.S)
    return next(b for b in found if marker in b)


# Where the application would run, the blocks scrape or collect once.
RUNS = "\n...  # the service runs\n"


def test_the_documented_wsgi_endpoint_serves_the_metrics() -> None:
    block = doc_block("make_wsgi_app")
    assert RUNS in block
    scrape = (
        "\nanswer = []\n"
        "environ = {'REQUEST_METHOD': 'GET', 'PATH_INFO': '/metrics', 'QUERY_STRING': ''}\n"
        "body = b''.join(metrics_app(environ, lambda status, headers: answer.append(status)))\n"
    )
    scope: dict[str, Any] = {"__name__": "metrics_doc"}
    exec(compile(block.replace(RUNS, scrape), str(DOC), "exec"), scope)
    assert scope["answer"] == ["200 OK"]
    families = {f.name for f in text_string_to_metric_families(scope["body"].decode())}
    assert {"buttress_circuit_breaker_state", "buttress_memory_level"} <= families


def test_the_documented_opentelemetry_setup_reports(tmp_path: Path) -> None:
    """In a process of its own (it sets the global meter provider); where the application
    would run, the reader exports at once."""
    block = doc_block("instrument_infrastructure(infra)")
    assert RUNS in block
    after = "assert handle.closed\nmetrics.get_meter_provider().shutdown()\n"
    done = run_python(block.replace(RUNS, "\nreader.force_flush()\n") + after)
    assert done.returncode == 0, done.stderr
    assert '"buttress.circuit_breaker.state"' in done.stdout
    assert '"buttress.name": "payments"' in done.stdout


def test_bulkheads_and_overload_monitors_are_exported() -> None:
    clock = bt.ManualClock()
    config = {
        "services": {
            "search": {"breaker": False, "limiter": False, "bulkhead": {"max_concurrent": 4}}
        },
        "overload": {"cpu": {"check_interval": 1.0}},
    }
    with bt.Infrastructure("shop", config, clock=clock, env={}, background=False) as infra:
        assert infra.cpu is not None
        readings = iter([0, 500_000])
        infra.cpu.probe = lambda: bt.CpuReading(usage_usec=next(readings), quota_cores=1.0)
        infra.cpu.sample()
        clock.advance(1.0)
        infra.cpu.sample()  # half of one core: normal
        infra.call("search", lambda: None)
        registry = CollectorRegistry()
        register_prometheus(infra, registry)
        with infra.protect("search"):
            _, v = scrape(registry)
    assert v[series("buttress_bulkhead_limit", name="search")] == 4
    assert v[series("buttress_bulkhead_in_use", name="search")] == 1
    assert v[series("buttress_bulkhead_calls_total", name="search", outcome="admitted")] == 2
    assert v[series("buttress_cpu_utilisation_ratio")] == pytest.approx(0.5)
    assert v[series("buttress_overload_level", monitor="shop.cpu", level="normal")] == 1
    assert v[series("buttress_overload_level", monitor="shop.cpu", level="critical")] == 0
