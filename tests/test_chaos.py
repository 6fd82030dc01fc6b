"""Fault injection and experiments: rates within binomial bounds, latency on a manual clock,
expiry and unregistration, sync and async paths, telemetry tags, the breaker contract."""

from __future__ import annotations

import asyncio
import doctest
import math

import pytest

from buttress import (
    BreakerState,
    Chaos,
    CircuitBreaker,
    ConfigError,
    Experiment,
    FaultInjector,
    InjectedFault,
    ManualClock,
)
from buttress._chaos import _chaos, _faults
from conftest import EventLog

CALLS = 10_000


def binomial_bounds(n: int, p: float, sigmas: float = 4.5) -> tuple[float, float]:
    """Where a Binomial(n, p) count falls but for about one run in 150,000."""
    sd = math.sqrt(n * p * (1 - p))
    return n * p - sigmas * sd, n * p + sigmas * sd


def ok() -> str:
    return "ok"


async def aok() -> str:
    await asyncio.sleep(0)  # real-time: one event-loop turn, no time passes
    return "ok"


def test_doctests() -> None:
    assert doctest.testmod(_faults).failed == 0
    assert doctest.testmod(_chaos).failed == 0


# -- rates ------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.01, 0.1, 0.5, 0.9])
def test_failure_counts_fall_within_binomial_bounds(rate: float) -> None:
    inj = FaultInjector(failure_rate=rate, seed=2024)
    failures = 0
    for _ in range(CALLS):
        try:
            inj.call(ok)
        except InjectedFault:
            failures += 1
    low, high = binomial_bounds(CALLS, rate)
    assert low <= failures <= high
    assert inj.injected_failures == failures
    assert inj.calls == CALLS


def test_latency_and_failure_draws_are_independent(clock: ManualClock) -> None:
    inj = FaultInjector(failure_rate=0.2, latency=0.01, latency_rate=0.3, seed=11, clock=clock)
    both = delayed = failed = 0
    for _ in range(CALLS):
        fault = inj.decide()
        delayed += bool(fault.delay)
        failed += fault.fail
        both += bool(fault.delay) and fault.fail
    for count, p in ((delayed, 0.3), (failed, 0.2), (both, 0.06)):
        low, high = binomial_bounds(CALLS, p)
        assert low <= count <= high, (count, p)


def test_the_same_seed_replays_the_same_faults() -> None:
    def run(seed: int) -> list[tuple[bool, float]]:
        inj = FaultInjector(failure_rate=0.3, latency=(0.1, 0.5), latency_rate=0.5, seed=seed)
        return [(f.fail, f.delay) for f in (inj.decide() for _ in range(200))]

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_zero_rates_and_disabled_injectors_do_nothing() -> None:
    assert not FaultInjector().active
    inj = FaultInjector(failure_rate=1.0, enabled=False)
    assert not inj.active
    assert inj.call(ok) == "ok"
    assert inj.calls == 0


# -- latency ----------------------------------------------------------------------------------


def test_fixed_latency_is_applied_exactly(clock: ManualClock) -> None:
    inj = FaultInjector(latency=0.25, clock=clock, seed=1)
    assert inj.call(ok) == "ok"
    assert clock.monotonic() == pytest.approx(0.25)
    for _ in range(3):
        inj.call(ok)
    assert clock.monotonic() == pytest.approx(1.0)
    assert inj.injected_delays == 4


def test_latency_range_and_rate(clock: ManualClock, event_log: EventLog) -> None:
    inj = FaultInjector(latency=(0.1, 0.3), latency_rate=0.5, clock=clock, seed=3)
    for _ in range(1000):
        inj.call(ok)
    delays = [m["latency"] for m, md in event_log.named("buttress", "chaos", "injected")]
    assert all(0.1 <= d <= 0.3 for d in delays)
    assert len(delays) == inj.injected_delays
    low, high = binomial_bounds(1000, 0.5)
    assert low <= len(delays) <= high
    assert clock.monotonic() == pytest.approx(sum(delays))  # the clock moved by exactly that


async def test_async_latency_and_failure(clock: ManualClock) -> None:
    inj = FaultInjector(latency=0.5, failure_rate=1.0, clock=clock, seed=1)
    with pytest.raises(InjectedFault) as info:
        await inj.call_async(aok)
    assert clock.monotonic() == pytest.approx(0.5)  # delayed first, then failed
    assert info.value.injected is True


async def test_decorator_wraps_sync_and_async(clock: ManualClock) -> None:
    inj = FaultInjector(latency=0.1, clock=clock)

    @inj
    def add(a: int, b: int) -> int:
        return a + b

    @inj
    async def aadd(a: int, b: int) -> int:
        return a + b

    assert add(1, 2) == 3
    assert await aadd(3, 4) == 7
    assert clock.monotonic() == pytest.approx(0.2)
    assert add.__name__ == "add"
    assert aadd.__name__ == "aadd"


def test_custom_exception_types_are_tagged_injected() -> None:
    inj = FaultInjector(failure_rate=1.0, exception=TimeoutError)
    with pytest.raises(TimeoutError) as info:
        inj.call(ok)
    assert info.value.injected is True  # type: ignore[attr-defined]
    factory = FaultInjector(failure_rate=1.0, exception=lambda: ConnectionError("reset"))
    with pytest.raises(ConnectionError, match="reset"):
        factory.call(ok)


def test_configure_changes_standing_settings_with_validation() -> None:
    inj = FaultInjector(latency=0.2)
    inj.configure(failure_rate=0.5)
    assert (inj.failure_rate, inj.latency_range, inj.latency_rate) == (0.5, (0.2, 0.2), 1.0)
    inj.configure(latency=None, enabled=False)
    assert inj.latency_rate == 0.0
    assert not inj.enabled
    with pytest.raises(ConfigError) as info:
        inj.configure(failure_rate=2.0)
    assert info.value.path == "failure_rate"
    assert inj.failure_rate == 0.5  # a rejected change leaves the settings as they were


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"failure_rate": -0.1}, "failure_rate"),
        ({"failure_rate": True}, "failure_rate"),
        ({"latency": -1.0}, "latency"),
        ({"latency": (0.5, 0.1)}, "latency"),
        ({"latency": "slow"}, "latency"),
        ({"latency": ("a", 1)}, "latency"),
        ({"latency": (None, 1)}, "latency"),
        ({"latency": float("inf")}, "latency"),
        ({"latency": (0.1, float("inf"))}, "latency"),
        ({"latency": 0.1, "latency_rate": 1.5}, "latency_rate"),
        ({"exception": 42}, "exception"),
    ],
)
def test_bad_settings_name_the_setting(kwargs: dict[str, object], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        FaultInjector(**kwargs)  # type: ignore[arg-type]
    assert info.value.path == path


# -- the registry and experiments -------------------------------------------------------------


def test_chaos_is_off_by_default(clock: ManualClock) -> None:
    chaos = Chaos(clock=clock)
    inj = chaos.injector("payments", failure_rate=1.0)
    assert not chaos.enabled
    assert not inj.active
    assert chaos.call("payments", ok) == "ok"
    exp = chaos.experiment("payments", failure_rate=1.0)
    with pytest.raises(ConfigError, match="chaos is disabled") as info, exp:
        pass
    assert info.value.path == "chaos.enabled"
    assert chaos.active_experiments() == []
    chaos.enable()
    with pytest.raises(InjectedFault):
        chaos.call("payments", ok)


def test_experiment_registers_lists_and_unregisters_on_exit(
    clock: ManualClock, event_log: EventLog
) -> None:
    chaos = Chaos(enabled=True, clock=clock, seed=1)
    with chaos.experiment(
        "payments", failure_rate=1.0, latency=(0.1, 0.2), duration=60.0, name="outage"
    ) as exp:
        assert isinstance(exp, Experiment)
        clock.advance(15.0)
        (listed,) = chaos.snapshot()["active_experiments"]
        assert listed["name"] == "outage"
        assert listed["target"] == "payments"
        assert listed["settings"] == {
            "failure_rate": 1.0,
            "latency": [0.1, 0.2],
            "latency_rate": 1.0,
            "exception": "InjectedFault",
        }
        assert listed["started"] == clock.time() - 15.0
        assert listed["remaining"] == pytest.approx(45.0)
        with pytest.raises(InjectedFault):
            chaos.call("payments", ok)
        assert chaos.call("search", ok) == "ok"  # other targets are untouched
    assert chaos.active_experiments() == []
    assert chaos.call("payments", ok) == "ok"
    assert exp.end_reason == "exited"
    assert not exp.running
    (stop,) = event_log.named("buttress", "chaos", "experiment_stop")
    assert stop[1] == {"target": "payments", "experiment": "outage", "reason": "exited"}
    assert stop[0]["calls"] == 1
    assert stop[0]["injected_failures"] == 1
    assert stop[0]["elapsed"] >= 15.0
    assert len(event_log.named("buttress", "chaos", "experiment_start")) == 1


def test_experiment_expires_lazily_and_unregisters(clock: ManualClock, event_log: EventLog) -> None:
    chaos = Chaos(enabled=True, clock=clock)
    with chaos.experiment("db", failure_rate=1.0, duration=30.0) as exp:
        with pytest.raises(InjectedFault):
            chaos.call("db", ok)
        clock.advance(29.9)
        assert exp.running
        assert exp.remaining == pytest.approx(0.1)
        clock.advance(0.1)
        assert not exp.running
        assert exp.remaining == 0.0
        assert chaos.call("db", ok) == "ok"  # the expired experiment no longer injects
        assert chaos.active_experiments() == []
        assert not chaos.injector("db").active
    stops = event_log.named("buttress", "chaos", "experiment_stop")
    assert [md["reason"] for _, md in stops] == ["expired"]  # reported once, not again at exit
    assert stops[0][0]["elapsed"] == pytest.approx(30.0)
    assert exp.end_reason == "expired"


def test_expiry_is_noticed_by_the_listing_alone(clock: ManualClock) -> None:
    chaos = Chaos(enabled=True, clock=clock)
    exp = chaos.experiment("db", latency=1.0, duration=5.0).start()
    assert chaos.active_experiments() == [exp]
    clock.advance(5.0)
    assert chaos.active_experiments() == []
    assert exp.end_reason == "expired"
    exp.stop()  # stopping an ended experiment is harmless


async def test_async_experiment(clock: ManualClock) -> None:
    chaos = Chaos(enabled=True, clock=clock, seed=9)
    async with chaos.experiment("api", latency=2.0, duration=10.0) as exp:
        assert chaos.active_experiments() == [exp]
        assert await chaos.call_async("api", aok) == "ok"
        assert clock.monotonic() == pytest.approx(2.0)
    assert chaos.active_experiments() == []
    assert await chaos.call_async("api", aok) == "ok"
    assert clock.monotonic() == pytest.approx(2.0)


def test_experiments_override_standing_settings_and_stack(clock: ManualClock) -> None:
    chaos = Chaos(enabled=True, clock=clock, seed=3)
    inj = chaos.injector("svc", latency=1.0)
    with chaos.experiment("svc", failure_rate=1.0, exception=TimeoutError, name="outer"):
        with pytest.raises(TimeoutError):
            inj.call(ok)
        assert clock.monotonic() == 0.0  # the experiment's settings replace the standing ones
        with chaos.experiment("svc", latency=5.0, name="inner"):
            inj.call(ok)
            assert clock.monotonic() == pytest.approx(5.0)
        with pytest.raises(TimeoutError):
            inj.call(ok)
    inj.call(ok)
    assert clock.monotonic() == pytest.approx(6.0)


def test_experiments_run_on_a_target_whose_standing_settings_are_disabled(
    clock: ManualClock,
) -> None:
    chaos = Chaos(enabled=True, clock=clock)
    inj = chaos.injector("svc", failure_rate=1.0, enabled=False)
    assert inj.call(ok) == "ok"
    with chaos.experiment("svc", failure_rate=1.0), pytest.raises(InjectedFault):
        inj.call(ok)


def test_the_master_switch_stops_running_experiments(
    clock: ManualClock, event_log: EventLog
) -> None:
    chaos = Chaos(enabled=True, clock=clock)
    with chaos.experiment("svc", failure_rate=1.0) as exp:
        chaos.disable()
        assert chaos.call("svc", ok) == "ok"
        assert exp.running  # still listed; it just does nothing
        chaos.enable()
        with pytest.raises(InjectedFault):
            chaos.call("svc", ok)
    switches = event_log.named("buttress", "chaos", "switch")
    assert [md["enabled"] for _, md in switches] == [False, True]


def test_experiments_started_on_one_tick_are_listed_in_start_order(clock: ManualClock) -> None:
    chaos = Chaos(enabled=True, clock=clock)
    chaos.injector("b-target")  # made first: must not decide the order
    with (
        chaos.experiment("z-target", name="first"),
        chaos.experiment("b-target", name="second"),
    ):
        assert [e.name for e in chaos.active_experiments()] == ["first", "second"]


def test_a_bad_value_is_not_called_an_unknown_setting(clock: ManualClock) -> None:
    chaos = Chaos(enabled=True, clock=clock)
    with pytest.raises(ConfigError) as info:
        chaos.injector("svc", latency=(None, 1))
    assert info.value.path == "latency"
    with pytest.raises(ConfigError, match="unknown fault setting 'colour'") as info:
        chaos.injector("svc", colour=1)
    assert info.value.path == "chaos.svc"


def test_an_experiment_is_entered_once(clock: ManualClock) -> None:
    chaos = Chaos(enabled=True, clock=clock)
    exp = chaos.experiment("svc", failure_rate=0.5)
    with exp:
        pass
    with pytest.raises(RuntimeError, match="already started"):
        exp.start()


def test_a_refused_experiment_is_not_left_running(clock: ManualClock) -> None:
    chaos = Chaos(clock=clock)
    exp = chaos.experiment("svc", failure_rate=0.5)
    with pytest.raises(ConfigError):
        exp.start()
    assert not exp.running


def test_injected_faults_are_tagged_with_target_and_experiment(
    clock: ManualClock, event_log: EventLog
) -> None:
    chaos = Chaos(enabled=True, clock=clock, seed=1)
    chaos.injector("svc", latency=0.1)
    chaos.call("svc", ok)
    with chaos.experiment("svc", failure_rate=1.0, name="drill"), pytest.raises(InjectedFault):
        chaos.call("svc", ok)
    tags = [
        (md["target"], md["experiment"], md["kind"], md["injected"])
        for _, md in event_log.named("buttress", "chaos", "injected")
    ]
    assert tags == [("svc", None, "latency", True), ("svc", "drill", "failure", True)]


def test_seeded_targets_replay_independently_of_each_other(clock: ManualClock) -> None:
    def draws(make_other_first: bool) -> list[bool]:
        chaos = Chaos(enabled=True, seed=42, clock=clock)
        if make_other_first:
            chaos.injector("other", failure_rate=0.5).decide()
        inj = chaos.injector("svc", failure_rate=0.5)
        return [inj.decide().fail for _ in range(100)]

    assert draws(False) == draws(True)


def test_bad_experiment_and_target_settings(clock: ManualClock) -> None:
    chaos = Chaos(enabled=True, clock=clock)
    with pytest.raises(ConfigError) as info:
        chaos.experiment("svc", duration=0)
    assert info.value.path == "duration"
    with pytest.raises(ConfigError) as info:
        chaos.experiment("svc", failure_rate=3.0)
    assert info.value.path == "failure_rate"
    with pytest.raises(ConfigError) as info:
        chaos.injector("svc", failure=0.5)
    assert info.value.path == "chaos.svc"
    with pytest.raises(ConfigError) as info:
        chaos.injector("")
    assert info.value.path == "target"


def test_snapshot_lists_injectors_and_experiments(clock: ManualClock) -> None:
    chaos = Chaos(enabled=True, clock=clock)
    chaos.injector("a", failure_rate=0.25)
    with chaos.experiment("b", latency=(0.1, 0.2), duration=9.0, name="slow-b"):
        snap = chaos.snapshot()
    assert snap["enabled"] is True
    assert [e["name"] for e in snap["active_experiments"]] == ["slow-b"]
    assert snap["injectors"]["a"]["failure_rate"] == 0.25
    assert snap["injectors"]["a"]["active"] is True
    assert snap["injectors"]["b"]["experiments"][0]["remaining"] == pytest.approx(9.0)
    assert chaos.snapshot()["active_experiments"] == []


# -- the breaker contract -----------------------------------------------------------------------


def test_a_breaker_sees_faults_from_a_chaos_experiment(clock: ManualClock) -> None:
    chaos = Chaos(enabled=True, clock=clock, seed=5)
    breaker = CircuitBreaker(
        "payments",
        failure_threshold=3,
        degradation_threshold=None,  # no degraded band: no random shedding in this test
        clock=clock,
        fault_injection=chaos.injector("payments"),
    )
    assert breaker.call(ok) == "ok"
    assert not breaker.snapshot().fault_injection_active
    with chaos.experiment("payments", failure_rate=1.0, duration=60.0):
        assert breaker.snapshot().fault_injection_active
        for _ in range(3):
            with pytest.raises(InjectedFault):
                breaker.call(ok)
    snap = breaker.snapshot()
    assert snap.state is BreakerState.OPEN
    assert snap.injected_failures == 3
    assert snap.total_failures == 3
    assert not snap.fault_injection_active
