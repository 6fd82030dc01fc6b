"""The guide's remaining settings and figures (issue 16, item 6): each gap closed, tested here."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

import buttress as bt


def _limited(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    rl: dict[str, Any] = {
        "limiters": {"api": {"scopes": [{"name": "user", "limit": 5, "window": 1.0}]}}
    }
    rl.update(extra or {})
    return {"rate_limiting": rl}


# -- cleanup_interval ------------------------------------------------------------------------


@pytest.mark.parametrize(("setting", "swept_after"), [(None, 60.0), (5.0, 5.0), ("5m", 300.0)])
def test_cleanup_interval_sets_how_often_expired_keys_are_swept(
    setting: Any, swept_after: float
) -> None:
    clock = bt.ManualClock()
    config = _limited({} if setting is None else {"cleanup_interval": setting})
    with bt.Infrastructure("sweep", config, clock=clock, background=False, env={}) as infra:
        backend = infra.limiters["api"].backend
        for i in range(10):
            infra.limiters["api"].try_acquire({"user": f"u{i}"})
        assert backend.key_count() == 10
        clock.advance(swept_after - 0.5)  # every key long expired, but no sweep is due yet
        infra.run_maintenance()
        assert backend.key_count() == 10
        clock.advance(1.0)
        infra.run_maintenance()
        assert backend.key_count() == 0


def test_cleanup_interval_in_milliseconds_is_refused_with_the_unit_hint() -> None:
    with pytest.raises(bt.ConfigError, match=r"rate_limiting\.cleanup_interval.*ms"):
        bt.load_config(_limited({"cleanup_interval": 300_000}), env={})


# -- bt.health(namespace) --------------------------------------------------------------------


def test_health_by_namespace_finds_an_open_infrastructure_and_forgets_a_closed_one() -> None:
    infra = bt.Infrastructure("lookup-a", {"circuit_breakers": {"db": {}}}, env={})
    other = bt.Infrastructure("lookup-b", env={})
    report = bt.health("lookup-a")
    assert report.namespace == "lookup-a"
    assert set(report.circuit_breakers) == {"db"}
    infra.close()
    with pytest.raises(LookupError, match=r"no open infrastructure is named 'lookup-a'.*lookup-b"):
        bt.health("lookup-a")
    other.close()


def test_health_by_namespace_holds_infrastructures_weakly() -> None:
    import gc

    bt.Infrastructure("lookup-dropped", background=False, env={})  # never closed, dropped
    gc.collect()
    with pytest.raises(LookupError):
        bt.health("lookup-dropped")


def test_health_by_namespace_refuses_to_guess_between_two_of_one_name() -> None:
    with (
        bt.Infrastructure("lookup-twice", env={}),
        bt.Infrastructure("lookup-twice", env={}),
        pytest.raises(LookupError, match="2 open infrastructures"),
    ):
        bt.health("lookup-twice")


# -- load_test with the guide's call: no operation, a namespace ------------------------------


@pytest.mark.parametrize("mode", ["threads", "asyncio"])
def test_load_test_runs_a_no_op_operation_by_default_as_the_guide_calls_it(mode: Any) -> None:
    from buttress.testing import load_test

    with bt.Infrastructure("load-noop", {"circuit_breakers": {"svc": {}}}, env={}) as infra:
        result = load_test(
            "load-noop",  # the guide passes the namespace
            service="svc",
            concurrent_users=3,
            duration=30.0,
            operations_per_user=4,
            mode=mode,
            progress=False,
        )
        assert result.operations == 12
        assert result.success_rate == 1.0
        assert infra.services["svc"].calls == 12


# -- [connection_pools.default] ----------------------------------------------------------------


def test_pool_defaults_apply_to_every_pool_that_leaves_a_setting_unset() -> None:
    cfg = bt.load_config(
        {
            "connection_pools": {
                "default": {"strategy": "fifo", "max_overflow": 10, "check_sql": "SELECT 1"},
                "db": {"factory": "sqlite3:connect", "args": [":memory:"], "max_size": 20},
                "cache": {
                    "factory": "sqlite3:connect",
                    "check_sql": "SELECT 1",
                    "strategy": "lifo",
                },
            }
        },
        env={},
    )
    assert set(cfg.connection_pools) == {"db", "cache"}  # a template, not a pool
    db, cache = cfg.connection_pools["db"], cfg.connection_pools["cache"]
    assert (db.strategy, db.max_overflow, db.max_size) == ("fifo", 10, 20)
    assert (cache.strategy, cache.max_overflow) == ("lifo", 10)  # its own setting wins
    assert db.check_sql == cache.check_sql == "SELECT 1"
    with bt.Infrastructure("pool-defaults", cfg, background=False) as infra:
        assert infra.pools["db"].config.strategy == "fifo"
        assert infra.pools["db"].config.max_overflow == 10
        assert set(infra.pools) == {"db", "cache"}


def test_pool_defaults_are_checked_with_each_pool() -> None:
    with pytest.raises(bt.ConfigError, match=r"connection_pools\.default\.strategy"):
        bt.load_config({"connection_pools": {"default": {"strategy": "random"}}}, env={})
    with pytest.raises(bt.ConfigError, match=r"connection_pools\.db\.min_size.*default"):
        bt.load_config(
            {"connection_pools": {"default": {"min_size": 5}, "db": {"max_size": 2}}}, env={}
        )


# -- service throughput and nested calls -------------------------------------------------------


def test_throughput_of_a_young_service_is_over_the_time_it_was_observed() -> None:
    clock = bt.ManualClock()
    with bt.Infrastructure("young", clock=clock, background=False, env={}) as infra:

        @infra.instrument("search")
        def search() -> None:
            clock.advance(0.01)

        for _ in range(20):  # 20 calls in one second
            search()
            clock.advance(0.04)
        assert infra.services["search"].snapshot(now=clock.monotonic()).throughput == (
            pytest.approx(20.0)
        )
        for _ in range(120 * 10):  # then two minutes at 10 a second: the last minute's rate
            search()
            clock.advance(0.09)
        assert infra.services["search"].snapshot(now=clock.monotonic()).throughput == (
            pytest.approx(10.0, rel=0.05)
        )


def test_nested_calls_of_one_service_are_counted_once() -> None:
    clock = bt.ManualClock()
    with bt.Infrastructure(
        "nested", {"circuit_breakers": {"catalog": {}}}, clock=clock, env={}
    ) as infra:

        @infra.instrument("catalog")
        class Catalog:
            def get(self, key: str) -> str:
                return self.load(key)  # a public method calling another: one call

            def load(self, key: str) -> str:
                return key.upper()

        catalog = Catalog()
        assert catalog.get("a") == "A"
        assert infra.services["catalog"].calls == 1
        assert infra.call("catalog", catalog.get, "b") == "B"  # protected, instrumented inside
        assert infra.services["catalog"].calls == 2
        with infra.protect("catalog"):
            catalog.load("c")
        assert infra.services["catalog"].calls == 3

        @infra.instrument("catalog")
        def outer() -> str:
            return infra.call("catalog", catalog.load, "d")  # protected inside instrumented

        outer()
        assert infra.services["catalog"].calls == 4
        assert infra.health().circuit_breakers["catalog"].total_successes == 3  # breaker: its own


async def test_nested_async_calls_of_one_service_are_counted_once() -> None:
    with bt.Infrastructure("nested-async", {"services": {"feed": {}}}, env={}) as infra:

        @infra.instrument("feed")
        async def page() -> int:
            return await item()

        @infra.instrument("feed")
        async def item() -> int:
            return 1

        @infra.instrument("other")
        async def elsewhere() -> int:
            return await item()

        assert await page() == 1
        assert await infra.call_async("feed", page) == 1
        assert infra.services["feed"].calls == 2
        assert await elsewhere() == 1  # another service's call: counted for each service
        assert (infra.services["feed"].calls, infra.services["other"].calls) == (3, 1)


# -- the breaker's fault-injection fields inside an Infrastructure -----------------------------


def _fail() -> None:
    raise AssertionError("never runs: the fault is injected first")


def test_breaker_reports_the_faults_its_infrastructures_chaos_injected() -> None:
    config = {
        "circuit_breakers": {"payments": {"failure_threshold": 50, "degradation_threshold": 40}},
        "chaos": {"enabled": True, "seed": 3},
    }
    with bt.Infrastructure("fi", config, clock=bt.ManualClock(), env={}) as infra:
        breaker = infra.breakers["payments"]
        assert (
            breaker.snapshot().fault_injection_active,
            breaker.snapshot().injected_failures,
        ) == (
            False,
            0,
        )
        with infra.chaos.experiment("payments", failure_rate=1.0):
            for _ in range(4):
                with pytest.raises(bt.InjectedFault):
                    infra.call("payments", _fail)
            snap = breaker.snapshot()
            assert (snap.fault_injection_active, snap.injected_failures) == (True, 4)
            assert infra.health().circuit_breakers["payments"].fault_injection_active
        snap = breaker.snapshot()
        assert (snap.fault_injection_active, snap.injected_failures) == (False, 4)


def test_breaker_reports_configured_fault_injection_inside_an_infrastructure() -> None:
    config = {
        "circuit_breakers": {
            "db": {"fault_injection": {"enabled": True, "failure_rate": 1.0}},
            "default": {},
        },
        "services": {"default": {}},
        "chaos": {"enabled": True},
    }
    with bt.Infrastructure("fi-config", config, env={}) as infra:
        with pytest.raises(bt.InjectedFault):
            infra.call("db", _fail)
        snap = infra.health().circuit_breakers["db"]
        assert (snap.fault_injection_active, snap.injected_failures) == (True, 1)
        infra.call("dynamic-service", lambda: None)  # a breaker from the default template
        assert not infra.health().circuit_breakers["dynamic-service"].fault_injection_active


# -- the decision-latency histogram ------------------------------------------------------------


class _SlowClock(bt.ManualClock):
    """Each monotonic read moves time on 1 ms: every decision takes 1 ms to make."""

    def monotonic(self) -> float:
        self.advance(0.001)
        return super().monotonic()


def test_each_limiter_keeps_a_histogram_of_its_decision_latency() -> None:
    clock = _SlowClock()
    limiter = bt.RateLimiter([bt.Scope("user", limit=10_000, window=1.0)], clock=clock)
    for i in range(160):
        limiter.try_acquire({"user": f"u{i % 7}"})
    lat = limiter.snapshot().decision_latency
    assert lat is not None
    assert lat.count == 160  # one in 16 timed, each standing for 16
    assert lat.p50 == pytest.approx(0.001, rel=0.01)
    assert lat.max == pytest.approx(0.001, rel=0.01)


def test_the_decision_latency_histogram_is_exported() -> None:
    from buttress.exporters._metrics import Summary, gather

    config = _limited()
    with bt.Infrastructure("latency", config, env={}) as infra:
        for _ in range(64):
            infra.limiters["api"].try_acquire({"user": "u1"})
        ((labels, summary),) = gather(infra, "limiter")["limiter.decision_latency"]
        assert labels == ("latency", "api")
        assert isinstance(summary, Summary) and summary.count == 64


# -- recovery telemetry: a breaker's recovery attempts, chaos recovery time --------------------


def test_breaker_reports_each_recovery_attempt_and_its_outcome(event_log: Any) -> None:
    from buttress.exporters._metrics import gather

    clock = bt.ManualClock()
    breaker = bt.CircuitBreaker(
        "recovering",
        failure_threshold=2,
        degradation_threshold=None,
        failure_rate_threshold=None,
        degradation_rate_threshold=None,
        reset_timeout=10.0,
        reset_timeout_jitter=0.0,  # half-open exactly 10 s later
        half_open_max_calls=1,
        clock=clock,
    )

    def boom() -> None:
        raise ConnectionError

    for _ in range(2):
        with pytest.raises(ConnectionError):
            breaker.call(boom)
    assert breaker.state is bt.BreakerState.OPEN
    clock.advance(10.0)
    with pytest.raises(ConnectionError):
        breaker.call(boom)  # the first attempt's probe fails
    clock.advance(10.0)
    breaker.call(lambda: None)  # the second's succeeds
    seen = [
        (m["attempt"], md["outcome"])
        for m, md in event_log.named(
            "buttress", "circuit_breaker", "recovery_attempts", breaker="recovering"
        )
    ]
    assert seen == [(1, "started"), (1, "failed"), (2, "started"), (2, "succeeded")]
    assert breaker.snapshot().recovery_attempts == 0

    with bt.Infrastructure(
        "attempts", {"circuit_breakers": {"db": {}}}, clock=clock, env={}
    ) as infra:
        samples = gather(infra, "breaker")["breaker.recovery_attempts"]
        assert samples == [(("attempts", "db"), 0.0)]


def _chaos_infra(clock: bt.ManualClock, **breaker: Any) -> bt.Infrastructure:
    settings = {
        "failure_threshold": None,
        "degradation_threshold": None,
        "failure_rate_threshold": None,
        "degradation_rate_threshold": None,
        "reset_timeout_jitter": 0.0,  # the recovery times below count from exact half-opens
    }
    config = {
        "circuit_breakers": {"payments": {**settings, **breaker}},
        "chaos": {"enabled": True, "seed": 1},
    }
    return bt.Infrastructure("recovery", config, clock=clock, background=False, env={})


def test_chaos_measures_the_time_from_a_faults_end_to_the_services_health(event_log: Any) -> None:
    from buttress.exporters._metrics import gather

    clock = bt.ManualClock()
    with _chaos_infra(clock) as infra:
        with infra.chaos.experiment("payments", failure_rate=1.0, duration=10.0, name="outage"):
            for _ in range(3):
                with pytest.raises(bt.InjectedFault):
                    infra.call("payments", _fail)
                clock.advance(1.0)
            clock.advance(9.5)  # past its end (t=10); nothing called since
            clock.advance(2.0)  # the service answers at t=14.5: 4.5 s after the fault ended
            assert infra.call("payments", lambda: "ok") == "ok"
        assert [
            (m["recovery_time"], md["experiment"])
            for m, md in event_log.named("buttress", "chaos", "recovery_time", target="payments")
        ] == [(pytest.approx(4.5), "outage")]
        injector = infra.health().chaos_engineering["injectors"]["payments"]
        assert injector["recovery_time"] == pytest.approx(4.5)
        assert not injector["recovering"]
        infra.call("payments", lambda: "ok")  # measured once per fault
        assert len(event_log.named("buttress", "chaos", "recovery_time")) == 1
        assert gather(infra, "chaos")["chaos.recovery_time"] == [
            (("recovery", "payments"), pytest.approx(4.5))
        ]


def test_chaos_recovery_waits_for_the_breaker_the_fault_opened_to_close(event_log: Any) -> None:
    clock = bt.ManualClock()
    with _chaos_infra(
        clock, failure_threshold=3, reset_timeout=30.0, half_open_max_calls=1
    ) as infra:
        with infra.chaos.experiment("payments", failure_rate=1.0, duration=5.0):
            for _ in range(3):
                with pytest.raises(bt.InjectedFault):
                    infra.call("payments", _fail)
        assert infra.breakers["payments"].state is bt.BreakerState.OPEN
        assert infra.health().chaos_engineering["injectors"]["payments"]["recovering"]
        clock.advance(30.0)  # the fault ended at t=0 (its block exited); the breaker probes
        infra.call("payments", lambda: "ok")
        assert infra.breakers["payments"].state is bt.BreakerState.CLOSED
        ((m, _),) = event_log.named("buttress", "chaos", "recovery_time", target="payments")
        assert m["recovery_time"] == pytest.approx(30.0)


def test_pool_reports_its_strategy_efficiency() -> None:
    from buttress.exporters._metrics import gather

    with bt.Infrastructure(
        "efficiency",
        {"connection_pools": {"db": {"min_size": 1, "max_size": 2}}},
        pools={"db": object},
        env={},
    ) as infra:
        pool = infra.pools["db"]
        assert pool.snapshot().strategy_efficiency == 1.0  # no checkout yet
        pool.open(wait=True)
        for _ in range(3):
            with pool.connection():
                pass  # the warm member, at once
        with pool.connection(), pool.connection():  # the second waits for a connect
            pass
        snap = pool.snapshot()
        assert snap.checkouts == 5 and 1 <= snap.waited < 5  # the first may wait for the warm-up
        expected = (5 - snap.waited) / 5
        assert snap.strategy_efficiency == snap.to_dict()["strategy_efficiency"] == expected
        assert gather(infra, "pool")["pool.strategy_efficiency"] == [
            (("efficiency", "db"), expected)
        ]


# -- scheduled chaos (the guide's chaos_mode) ----------------------------------------------------


def _fails(chaos: bt.Chaos, target: str) -> bool:
    try:
        chaos.call(target, lambda: None)
    except bt.InjectedFault:
        return True
    return False


def test_a_schedule_is_seeded_and_replays() -> None:
    def planned(seed: int) -> list[Any]:
        chaos = bt.Chaos(enabled=True, seed=seed, clock=bt.ManualClock())
        sched = chaos.schedule(["a", "b", "c"], experiments=6, every=30.0, duration=(1.0, 9.0))
        return [(round(p.offset, 9), round(p.duration, 9), p.target) for p in sched.plan]

    assert planned(7) == planned(7)
    assert planned(7) != planned(8)
    assert len(planned(7)) == 6 and {t for _, _, t in planned(7)} <= {"a", "b", "c"}


def test_a_schedule_runs_its_experiments_on_the_clock_one_after_another(event_log: Any) -> None:
    clock = bt.ManualClock()
    chaos = bt.Chaos(enabled=True, seed=1, clock=clock)
    sched = chaos.schedule(["db"], experiments=3, every=20.0, duration=5.0, failure_rate=1.0)
    offsets = [p.offset for p in sched.plan]
    assert all(b >= a + 5.0 + 10.0 for a, b in itertools.pairwise(offsets))
    t = 0.0
    for offset in offsets:
        clock.advance(offset - 0.5 - t)  # just before it: nothing injected, nothing listed
        assert not _fails(chaos, "db") and chaos.active_experiments() == []
        clock.advance(1.0)  # inside it
        assert _fails(chaos, "db")
        number = offsets.index(offset) + 1
        assert [e.name for e in chaos.active_experiments()] == [f"schedule#1/{number}"]
        clock.advance(5.0)  # past its end
        assert not _fails(chaos, "db")
        t = offset + 5.5
    assert not sched.active and sched.finished == 3
    assert len(event_log.named("buttress", "chaos", "experiment_start", target="db")) == 3
    assert [md["reason"] for _, md in event_log.named("buttress", "chaos", "experiment_stop")] == [
        "expired"
    ] * 3


def test_a_schedule_is_bounded() -> None:
    chaos = bt.Chaos(enabled=True, seed=2, clock=bt.ManualClock())
    sched = chaos.schedule(["x"], experiments=1000, every=10.0, duration=5.0, max_duration=120.0)
    assert 1 <= len(sched.plan) < 1000 and sched.span <= 120.0
    with pytest.raises(bt.ConfigError, match="experiments"):
        chaos.schedule(["x"], experiments=10**6)
    with pytest.raises(bt.ConfigError, match="targets"):
        chaos.schedule([])
    with pytest.raises(bt.ConfigError, match=r"chaos\.enabled"):
        bt.Chaos(seed=1).schedule(["x"])


def test_a_schedule_shows_in_health_and_stops(event_log: Any) -> None:
    clock = bt.ManualClock()
    config = {"circuit_breakers": {"db": {}}, "chaos": {"enabled": True, "seed": 5}}
    with bt.Infrastructure("scheduled", config, clock=clock, background=False, env={}) as infra:
        sched = infra.chaos.schedule(
            ["db"], experiments=4, every=10.0, duration=30.0, failure_rate=1.0, name="gameday"
        )
        first = sched.plan[0].offset
        listed = infra.health().chaos_engineering["schedules"]
        assert [(s["name"], s["planned"], s["active"]) for s in listed] == [("gameday", 4, True)]
        assert listed[0]["next"]["starts_in"] == pytest.approx(first)
        clock.advance(first + 1.0)
        report = infra.health()
        assert [e["name"] for e in report.chaos_engineering["active_experiments"]] == ["gameday/1"]
        assert report.chaos_engineering["schedules"][0]["running"] == ["gameday/1"]
        assert report.overall_status == "degraded"  # faults injected on purpose
        sched.stop()
        with infra.protect("db"):
            pass  # nothing injected any more
        clock.advance(10_000.0)
        infra.call("db", lambda: None)
        listed = infra.health().chaos_engineering["schedules"]
        assert (listed[0]["active"], listed[0]["stopped"], listed[0]["running"]) == (
            False,
            True,
            [],
        )
        ((m, _),) = event_log.named("buttress", "chaos", "schedule_stop", schedule="gameday")
        assert (m["ran"], m["cancelled"]) == (1, 3)


def test_scheduled_chaos_from_toml_with_the_guides_chaos_mode(tmp_path: Any) -> None:
    path = tmp_path / "buttress.toml"
    path.write_text(
        """
[circuit_breakers.config_server]
fault_injection = { chaos_mode = true }

[circuit_breakers.search]

[chaos]
enabled = true
seed = 11

[chaos.schedule]
experiments = 5
every = "2m"
duration = ["10s", "30s"]
failure_rate = 0.25
max_duration = "30m"
"""
    )
    clock = bt.ManualClock()
    with bt.Infrastructure("toml-chaos", str(path), clock=clock, env={}) as infra:
        (sched,) = infra.chaos.schedules
        assert sched.targets == ["config_server"]  # the chaos_mode breakers
        assert len(sched.plan) == 5 and sched.span <= 1800.0
        assert sched.settings.failure_rate == 0.25
        again = bt.Infrastructure("toml-chaos-2", str(path), clock=bt.ManualClock(), env={})
        assert [(p.offset, p.target) for p in again.chaos.schedules[0].plan] == [
            (p.offset, p.target) for p in sched.plan
        ]
        again.close()
    off = bt.load_config(str(path), env={"BUTTRESS_CHAOS__ENABLED": "false"})
    with bt.Infrastructure("toml-chaos-off", off, env={}) as infra:
        assert infra.chaos.schedules == []  # chaos off: the schedule does not start


def test_scheduled_chaos_settings_are_checked() -> None:
    with pytest.raises(bt.ConfigError, match=r"chaos\.schedule\.targets"):
        bt.load_config({"chaos": {"schedule": {}}}, env={})
    with pytest.raises(bt.ConfigError, match=r"chaos\.schedule\.experiments"):
        bt.load_config({"chaos": {"schedule": {"targets": ["a"], "experiments": 10**6}}}, env={})
    with pytest.raises(bt.ConfigError, match=r"chaos\.schedule\.duration"):
        bt.load_config({"chaos": {"schedule": {"targets": ["a"], "duration": [30, 10]}}}, env={})


# -- a per-call limit (the guide's rate_config) ----------------------------------------------------


def _two_limiters() -> dict[str, Any]:
    return {
        "rate_limiting": {
            "limiters": {
                "search": {"scopes": [{"name": "user", "limit": 100, "window": 60.0}]},
                "export": {"scopes": [{"name": "user", "limit": 2, "window": 60.0}]},
            }
        }
    }


def test_a_call_can_be_limited_by_another_configured_limiter() -> None:
    ctx = {"user_id": "u1"}
    with bt.Infrastructure("override", _two_limiters(), clock=bt.ManualClock(), env={}) as infra:
        for _ in range(2):
            infra.call("search", lambda: None, context=ctx, limiter="export")
        with pytest.raises(bt.RateLimitExceeded) as caught:
            infra.call("search", lambda: None, context=ctx, limiter="export")
        assert caught.value.limit == 2
        infra.call("search", lambda: None, context=ctx)  # the service's own limit still has room
        with (
            pytest.raises(bt.RateLimitExceeded),
            infra.protect("search", context=ctx, limiter="export"),
        ):
            pass

        @infra.protected("search", context=ctx, limiter="export")
        def exported() -> None:
            pass

        with pytest.raises(bt.RateLimitExceeded):
            exported()
        snap = infra.health().rate_limiters
        assert (snap["export"].admitted, snap["search"].admitted) == (2, 1)
        assert infra.services["search"].calls == 3  # counted for the service, whatever limit


async def test_a_call_can_bring_its_own_limiter_or_none() -> None:
    clock = bt.ManualClock()
    own = bt.RateLimiter([bt.Scope("user", limit=1, window=60.0)], clock=clock, name="own")
    ctx = {"user_id": "u1"}
    config = _two_limiters()
    config["rate_limiting"]["limiters"]["search"]["scopes"][0]["limit"] = 1

    async def op() -> str:
        return "ok"

    with bt.Infrastructure("override-own", config, clock=clock, env={}) as infra:
        assert await infra.call_async("search", op, context=ctx, limiter=own) == "ok"
        with pytest.raises(bt.RateLimitExceeded):
            await infra.call_async("search", op, context=ctx, limiter=own)
        assert infra.call("search", lambda: "ok", context=ctx) == "ok"  # its own: 1 left
        with pytest.raises(bt.RateLimitExceeded):
            infra.call("search", lambda: "ok", context=ctx)
        assert infra.call("search", lambda: "ok", context=ctx, limiter=False) == "ok"  # none
        with pytest.raises(bt.ConfigError, match=r"limiter.*'nope'.*'search', 'export'"):
            infra.call("search", lambda: None, limiter="nope")
        with pytest.raises(TypeError, match="limiter"):
            infra.call("search", lambda: None, limiter=3)  # type: ignore[arg-type]


def test_chaos_recovery_is_awaited_once_an_experiment_expires_unseen(event_log: Any) -> None:
    clock = bt.ManualClock()
    with _chaos_infra(
        clock, failure_threshold=3, reset_timeout=30.0, half_open_max_calls=1
    ) as infra:
        infra.chaos.experiment("payments", failure_rate=1.0, duration=5.0).start()
        for _ in range(3):
            with pytest.raises(bt.InjectedFault):
                infra.call("payments", _fail)
        injector = infra.chaos.find("payments")
        assert injector is not None and not injector.recovering  # the fault is on
        clock.advance(10.0)  # it expired at t=5, while the open breaker let no call reach it
        assert injector.recovering
        clock.advance(20.0)
        infra.call("payments", lambda: "ok")  # the probe closes the breaker at t=30
        ((m, _),) = event_log.named("buttress", "chaos", "recovery_time", target="payments")
        assert m["recovery_time"] == pytest.approx(25.0)
        assert not injector.recovering
