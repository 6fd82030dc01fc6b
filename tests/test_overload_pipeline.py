"""Overload and the bulkhead in protect(): who is shed by priority; what a refusal gives back."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import buttress as bt
from buttress._memory import MemoryReading

LIMITED: dict[str, Any] = {
    "rate_limiting": {
        "limiters": {
            "svc": {"scopes": [{"name": "user", "limit": 3, "window": 60.0}]},
        }
    },
}


class Pressure:
    """A memory probe a test turns up and down."""

    def __init__(self) -> None:
        self.ratio = 0.1

    def __call__(self) -> MemoryReading:
        limit = 1_000_000
        used = int(self.ratio * limit)
        return MemoryReading(source="process", limit=limit, used=used, rss=used)


def make(clock: bt.ManualClock, config: dict[str, Any], **kw: Any) -> bt.Infrastructure:
    return bt.Infrastructure("t", config, clock=clock, seed=1, env={}, background=False, **kw)


def test_memory_sheds_sheddable_calls_at_warning_and_normal_ones_at_critical() -> None:
    clock = bt.ManualClock()
    probe = Pressure()
    cfg = {**LIMITED, "memory_manager": {"check_interval": 1.0}}
    with make(clock, cfg, memory_probe=probe) as infra:

        def passes(priority: str) -> bool:
            try:
                infra.call("svc", lambda: None, rate_key=priority, priority=priority)  # type: ignore[arg-type]
            except bt.LoadShedError as exc:
                assert exc.reason == "memory_pressure"
                return False
            return True

        assert [passes(p) for p in ("sheddable", "normal", "critical")] == [True] * 3
        probe.ratio = 0.75  # warning
        clock.advance(1.0)
        assert [passes(p) for p in ("sheddable", "normal", "critical")] == [False, True, True]
        probe.ratio = 0.95  # critical
        clock.advance(1.0)
        assert [passes(p) for p in ("sheddable", "normal", "critical")] == [False, False, True]
        # critical=True is the shorthand; a shed call was charged nothing.
        infra.call("svc", lambda: None, rate_key="other", critical=True)
        assert infra.limiters["svc"].peek("sheddable").remaining == 1  # 1 admitted, 1 peeked


def test_a_service_sets_its_calls_default_priority() -> None:
    clock = bt.ManualClock()
    probe = Pressure()
    cfg = {
        **LIMITED,
        "memory_manager": {"check_interval": 1.0},
        "services": {"svc": {"priority": "sheddable"}},
    }
    with make(clock, cfg, memory_probe=probe) as infra:
        assert infra.layers("svc").priority == "sheddable"
        probe.ratio = 0.75
        clock.advance(1.0)
        with pytest.raises(bt.LoadShedError):
            infra.call("svc", lambda: None, rate_key="u")
        infra.call("svc", lambda: None, rate_key="u", priority="normal")  # the call's own wins


def test_cpu_pressure_sheds_by_priority(event_log: Any) -> None:
    clock = bt.ManualClock()
    readings = iter(range(0, 10**9, 1_000_000))  # 1 s of CPU per second: one core, fully used

    def probe() -> bt.CpuReading:
        return bt.CpuReading(usage_usec=next(readings), quota_cores=1.0)

    cfg = {**LIMITED, "overload": {"cpu": {"check_interval": 1.0, "psi_warning": None}}}
    with make(clock, cfg) as infra:
        assert infra.cpu is not None
        infra.cpu.probe = probe
        infra.cpu.sample()
        clock.advance(1.0)
        infra.cpu.sample()
        assert infra.cpu.level is bt.PressureLevel.CRITICAL
        for priority in ("sheddable", "normal"):
            with pytest.raises(bt.LoadShedError) as caught:
                infra.call("svc", lambda: None, rate_key="u", priority=priority)  # type: ignore[arg-type]
            assert (caught.value.reason, caught.value.level) == ("cpu_pressure", "critical")
        infra.call("svc", lambda: None, rate_key="u", priority="critical")
    changes = event_log.named("buttress", "overload", "level_change", monitor="t.cpu")
    assert [(md["from_level"], md["to_level"], md["kind"]) for _, md in changes] == [
        ("normal", "critical", "cpu")
    ]
    assert changes[0][0]["value"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"priority": "urgent"}, "priority"),
        ({"priority": "sheddable", "critical": True}, "critical"),
    ],
)
def test_a_wrong_priority_is_refused_by_name(kwargs: dict[str, Any], path: str) -> None:
    with make(bt.ManualClock(), LIMITED) as infra:
        with pytest.raises(bt.ConfigError) as caught:
            infra.call("svc", lambda: None, rate_key="u", **kwargs)
        assert caught.value.path == path
        with pytest.raises(bt.ConfigError):
            infra.protected("svc", **kwargs)


BULKHEAD: dict[str, Any] = {
    **LIMITED,
    "services": {"svc": {"bulkhead": {"max_concurrent": 1}}},
}


def test_a_full_bulkhead_refuses_and_the_rate_limit_charge_comes_back(event_log: Any) -> None:
    with make(bt.ManualClock(), BULKHEAD) as infra:
        bulkhead = infra.bulkheads["svc"]
        with infra.protect("svc", rate_key="u"):
            assert bulkhead.in_use == 1
            for _ in range(4):  # more than the user's 3: each refusal was refunded
                with pytest.raises(bt.BulkheadFullError) as caught:
                    infra.call("svc", lambda: None, rate_key="v")
                assert caught.value.bulkhead == "svc"
        assert bulkhead.in_use == 0
        assert infra.limiters["svc"].peek("v").remaining == 2  # after the peeked 1
        with pytest.raises(ZeroDivisionError):
            infra.call("svc", lambda: 1 / 0, rate_key="u")
        assert bulkhead.in_use == 0  # a failing call gave its place back
        rejected = infra.services["svc"].snapshot(now=0.0).rejected_by_reason
        assert rejected == {"BulkheadFullError": 4}
    refusals = event_log.named("buttress", "bulkhead", "rejected", bulkhead="svc")
    assert [md["reason"] for _, md in refusals] == ["full"] * 4


def test_a_rate_limit_refusal_never_takes_a_place() -> None:
    with make(bt.ManualClock(), BULKHEAD) as infra:
        for _ in range(3):
            infra.call("svc", lambda: None, rate_key="u")
        with pytest.raises(bt.RateLimitExceeded):
            infra.call("svc", lambda: None, rate_key="u")
        assert infra.bulkheads["svc"].snapshot().admitted == 3


async def test_async_calls_wait_for_a_place_in_order() -> None:
    cfg = {
        **LIMITED,
        "rate_limiting": {"limiters": {}},
        "services": {
            "svc": {
                "limiter": False,
                "bulkhead": {"max_concurrent": 1, "max_waiting": 5, "wait_timeout": None},
            }
        },
    }
    with make(bt.ManualClock(), cfg) as infra:
        order: list[int] = []
        gate = asyncio.Event()

        async def work(i: int) -> None:
            order.append(i)
            await gate.wait()

        tasks = [asyncio.create_task(infra.call_async("svc", work, i)) for i in range(4)]
        await asyncio.sleep(0)  # real-time: one loop turn, every task reaches its wait
        assert order == [0] and infra.bulkheads["svc"].waiting == 3
        gate.set()
        await asyncio.gather(*tasks)
        assert order == [0, 1, 2, 3]
        assert infra.bulkheads["svc"].in_use == 0


def test_a_service_with_an_adaptive_bulkhead_reports_its_limit() -> None:
    cfg = {
        **LIMITED,
        "services": {
            "svc": {"bulkhead": {"adaptive": {"algorithm": "vegas", "initial": 8, "max_limit": 50}}}
        },
    }
    with make(bt.ManualClock(), cfg) as infra:
        snapshot = infra.bulkheads["svc"].snapshot()
        assert snapshot.limit == 8
        assert snapshot.adaptive is not None and snapshot.adaptive["algorithm"] == "vegas"


@pytest.mark.parametrize(
    ("bulkhead", "path"),
    [
        ({}, "services.svc.bulkhead"),
        ({"max_concurrent": 2, "adaptive": {}}, "services.svc.bulkhead"),
        ({"adaptive": {"min_limit": 10, "max_limit": 5}}, "services.svc.bulkhead.adaptive"),
    ],
)
def test_a_wrong_bulkhead_table_names_its_path(bulkhead: dict[str, Any], path: str) -> None:
    cfg = {**LIMITED, "services": {"svc": {"bulkhead": bulkhead}}}
    with pytest.raises(bt.ConfigError) as caught:
        make(bt.ManualClock(), cfg)
    assert caught.value.path.startswith(path)


async def test_event_loop_lag_sheds_sheddable_calls_and_stops_when_it_falls() -> None:
    # real-time: the loop is really held up by a CPU-bound handler, and the monitor measures it.
    cfg = {
        **LIMITED,
        "overload": {
            "loop_lag": {
                "interval": 0.01,
                "warning": 0.05,
                "critical": 2.0,
                "exit_samples": 3,
                "window": 1.0,
            }
        },
    }
    with bt.Infrastructure("lag", cfg, env={}, background=False) as infra:
        loops = infra.loop_lag
        assert loops is not None

        async def handler() -> None:
            return None

        await infra.call_async("svc", handler, rate_key="a", priority="sheddable")  # starts it
        monitor = loops.for_loop()
        assert monitor is not None
        changes: list[str] = []
        moved = asyncio.Event()

        def heard(change: Any, snapshot: Any) -> None:
            changes.append(change.level.value)
            moved.set()

        monitor.on_change(heard)
        await asyncio.sleep(0.02)  # real-time: a tick is pending
        end = time.perf_counter() + 0.2
        while time.perf_counter() < end:  # a CPU-bound handler holds the loop for 200 ms
            pass
        await asyncio.wait_for(moved.wait(), 5)
        assert changes == ["warning"]
        with pytest.raises(bt.LoadShedError) as caught:
            await infra.call_async("svc", handler, rate_key="b", priority="sheddable")
        assert caught.value.reason == "loop_lag"
        await infra.call_async("svc", handler, rate_key="c", priority="critical")
        await infra.call_async("svc", handler, rate_key="d")  # normal: shed only at critical
        moved.clear()
        await asyncio.wait_for(moved.wait(), 5)  # the lag falls: back to normal
        assert changes == ["warning", "normal"]
        await infra.call_async("svc", handler, rate_key="b", priority="sheddable")


def test_health_reports_bulkheads_and_the_overload_monitors() -> None:
    clock = bt.ManualClock()
    cfg = {**BULKHEAD, "overload": {"cpu": {"check_interval": 1.0}}}
    with make(clock, cfg) as infra:
        assert infra.cpu is not None
        readings = iter([0, 950_000])
        infra.cpu.probe = lambda: bt.CpuReading(usage_usec=next(readings), quota_cores=1.0)
        infra.cpu.sample()
        clock.advance(1.0)
        infra.cpu.sample()  # 95% of one core: critical
        with infra.protect("svc", rate_key="u", critical=True):  # critical: never shed
            report = infra.health()
        checks = {(c.kind, c.name): c for c in report.checks}
        bulkhead = checks[("bulkhead", "svc")]
        assert (bulkhead.status, bulkhead.reason) == ("warn", "full: 1/1 in use, 0 waiting")
        cpu = checks[("cpu", "t.cpu")]
        assert cpu.status == "fail" and cpu.reason.startswith("critical: 95% of 1 cores")
        assert report.overall_status == "unhealthy"
        doc = report.to_dict()
        assert doc["bulkheads"]["svc"]["in_use"] == 1
        assert doc["overload"]["cpu"]["level"] == "critical"
        assert infra.health().bulkheads["svc"].in_use == 0
