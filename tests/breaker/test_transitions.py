"""Every transition of the breaker, driven by a ManualClock (no sleeps)."""

from __future__ import annotations

import pytest

import buttress as bt
from buttress import BreakerState as S
from buttress import DegradationLevel as L


class Boom(Exception):
    pass


def fail() -> None:
    raise Boom("down")


def ok() -> str:
    return "ok"


def make(clock: bt.ManualClock, **kw: object) -> bt.CircuitBreaker:
    settings: dict[str, object] = {
        "failure_threshold": 5,
        "degradation_threshold": 3,
        "failure_rate_threshold": None,
        "degradation_rate_threshold": None,
        "shed_probability": {"light": 0.0, "medium": 0.0, "heavy": 0.0},
        "reset_timeout_jitter": 0.0,  # exact open times: these tests advance by reset_timeout
        "seed": 1,
    }
    settings.update(kw)
    return bt.CircuitBreaker("svc", clock=clock, **settings)  # type: ignore[arg-type]


def fail_n(b: bt.CircuitBreaker, n: int) -> None:
    for _ in range(n):
        with pytest.raises(Boom):
            b.call(fail)


def test_closed_to_degraded_to_open_by_failure_count(clock: bt.ManualClock) -> None:
    b = make(clock, failure_threshold=6, degradation_threshold=3)
    seen = []
    for _ in range(5):
        with pytest.raises(Boom):
            b.call(fail)
        seen.append((b.state, b.degradation_level))
    assert seen == [
        (S.CLOSED, None),
        (S.CLOSED, None),
        (S.DEGRADED, L.LIGHT),  # 3 failures: bottom third of the band 3..6
        (S.DEGRADED, L.MEDIUM),  # 4
        (S.DEGRADED, L.HEAVY),  # 5
    ]
    with pytest.raises(Boom):
        b.call(fail)
    assert b.state is S.OPEN


def test_every_level_reachable_with_the_default_settings(clock: bt.ManualClock) -> None:
    """Defaults: count band 3..5 failures, rate band 20%..50% once 10 calls are in the window."""
    no_shedding = {"light": 0.0, "medium": 0.0, "heavy": 0.0}
    b = bt.CircuitBreaker("svc", clock=clock, shed_probability=no_shedding)
    for _ in range(9):
        b.call(ok)
    fail_n(b, 2)  # 2 of 11 failed: below both bands
    assert b.state is S.CLOSED
    fail_n(b, 1)  # 3 failures: bottom of the count band; rate 3/12 = 0.25, low in its band
    assert (b.state, b.degradation_level) == (S.DEGRADED, L.LIGHT)
    fail_n(b, 1)  # 4 failures: half-way up the count band
    assert (b.state, b.degradation_level) == (S.DEGRADED, L.MEDIUM)
    fail_n(b, 1)  # 5 failures
    assert b.state is S.OPEN

    b2 = bt.CircuitBreaker("svc2", clock=clock, shed_probability=no_shedding)
    for _ in range(6):
        b2.call(ok)
    fail_n(b2, 4)  # 4 of 10 failed: rate 0.4 is two thirds up the 0.2..0.5 band
    assert (b2.state, b2.degradation_level) == (S.DEGRADED, L.HEAVY)


@pytest.mark.parametrize(
    ("hysteresis", "levels"), [(0.05, ["medium", "light"]), (0.0, ["light", "light"])]
)
def test_levels_do_not_flap_on_a_boundary(
    clock: bt.ManualClock, hysteresis: float, levels: list[str]
) -> None:
    b = make(
        clock,
        failure_threshold=None,
        degradation_threshold=None,
        degradation_rate_threshold=0.2,
        failure_rate_threshold=0.5,
        minimum_calls=10,
        level_hysteresis=hysteresis,
        window=3600.0,
    )
    for _ in range(21):
        b.call(ok)
    fail_n(b, 9)  # 9 of 30: a rate of 0.3 is exactly a third up the band
    assert b.degradation_level is L.MEDIUM
    seen = []
    for _ in range(2):
        b.call(ok)  # 9/31 = 0.290, then 9/32 = 0.281
        seen.append(b.degradation_level.value if b.degradation_level else None)
    assert seen == levels  # held at medium just below its floor, only with hysteresis


def test_failure_rate_opens_with_minimum_calls(clock: bt.ManualClock) -> None:
    b = make(
        clock,
        failure_threshold=None,
        degradation_threshold=None,
        failure_rate_threshold=0.5,
        degradation_rate_threshold=None,
        minimum_calls=10,
    )
    fail_n(b, 9)  # 9 of 9 failed, but fewer than minimum_calls outcomes
    assert b.state is S.CLOSED
    fail_n(b, 1)
    assert b.state is S.OPEN


def test_slow_calls_degrade_then_open(clock: bt.ManualClock) -> None:
    b = make(
        clock,
        failure_threshold=None,
        degradation_threshold=None,
        slow_call_duration=1.0,
        slow_call_rate_threshold=0.5,
        slow_degradation_rate_threshold=0.2,
        minimum_calls=10,
    )

    def slow() -> str:
        clock.advance(1.5)
        return "late"

    for _ in range(8):
        b.call(ok)
    b.call(slow)
    b.call(slow)  # 2 of 10 slow: 0.2 -> bottom of the band
    assert (b.state, b.degradation_level) == (S.DEGRADED, L.LIGHT)
    for _ in range(4):
        b.call(slow)  # 6 of 14 slow = 0.43 -> 0.76: heavy
    assert (b.state, b.degradation_level) == (S.DEGRADED, L.HEAVY)
    b.call(slow)  # 7 of 15 = 0.47
    b.call(slow)  # 8 of 16 = 0.5: open
    assert b.state is S.OPEN


def test_consecutive_failures_open_a_quiet_service(clock: bt.ManualClock) -> None:
    b = make(
        clock,
        failure_threshold=None,
        degradation_threshold=None,
        consecutive_failure_threshold=3,
        window=1.0,
    )
    for _ in range(3):
        with pytest.raises(Boom):
            b.call(fail)
        clock.advance(5.0)  # far apart: no window holds two of them
    assert b.state is S.OPEN


def test_success_resets_consecutive_failures(clock: bt.ManualClock) -> None:
    b = make(
        clock, failure_threshold=None, degradation_threshold=None, consecutive_failure_threshold=3
    )
    fail_n(b, 2)
    b.call(ok)
    fail_n(b, 2)
    assert b.state is S.CLOSED
    assert b.snapshot().consecutive_failures == 2


def test_degraded_recovers_when_failures_leave_the_window(clock: bt.ManualClock) -> None:
    b = make(clock, window=10.0, buckets=10)
    fail_n(b, 3)
    assert b.state is S.DEGRADED
    clock.advance(9.0)
    assert b.state is S.DEGRADED  # still inside the 10 s window
    clock.advance(1.0)
    assert b.state is S.CLOSED
    assert b.snapshot().failure_count == 0


def test_open_refuses_with_retry_after_then_half_opens(clock: bt.ManualClock) -> None:
    b = make(clock, reset_timeout=30.0)
    fail_n(b, 5)
    assert b.state is S.OPEN
    clock.advance(10.0)
    with pytest.raises(bt.CircuitOpenError) as info:
        b.call(ok)
    assert info.value.retry_after == pytest.approx(20.0)
    assert info.value.state == "open"
    assert info.value.breaker == "svc"
    clock.advance(20.0)
    assert b.state is S.HALF_OPEN
    assert b.snapshot().recovery_attempts == 1


def test_half_open_closes_when_enough_probes_succeed(clock: bt.ManualClock) -> None:
    b = make(clock, half_open_max_calls=5, half_open_success_ratio=0.6)
    fail_n(b, 5)
    clock.advance(30.0)
    b.call(ok)
    with pytest.raises(Boom):
        b.call(fail)
    b.call(ok)
    assert b.state is S.HALF_OPEN
    b.call(ok)  # 3 of 5 needed
    assert b.state is S.CLOSED
    snap = b.snapshot()
    assert snap.failure_count == 0 and snap.recovery_attempts == 0


def test_half_open_reopens_when_success_has_become_impossible(clock: bt.ManualClock) -> None:
    b = make(clock, half_open_max_calls=5, half_open_success_ratio=0.6)
    fail_n(b, 5)
    clock.advance(30.0)
    fail_n(b, 2)
    assert b.state is S.HALF_OPEN  # 3 of the 3 left could still succeed
    fail_n(b, 1)
    assert b.state is S.OPEN


def test_half_open_probe_budget_is_never_exceeded(clock: bt.ManualClock) -> None:
    b = make(clock, half_open_max_calls=2)
    fail_n(b, 5)
    clock.advance(30.0)
    p1, p2 = b.try_acquire(), b.try_acquire()
    assert p1 and p2
    p3 = b.try_acquire()
    assert not p3 and p3.reason == "half_open_full"
    with pytest.raises(bt.CircuitOpenError) as info:
        b.call(ok)
    assert info.value.state == "half_open"
    p1.release()  # a cancelled probe frees its permit
    assert b.try_acquire()


def test_probe_that_never_finishes_counts_as_failed(clock: bt.ManualClock) -> None:
    b = make(clock, half_open_max_calls=1, probe_timeout=5.0)
    fail_n(b, 5)
    clock.advance(30.0)
    hung = b.try_acquire()
    assert hung
    clock.advance(5.0)
    assert b.state is S.OPEN  # the lost probe failed the attempt
    hung.record_success()  # arrives late: stale, moves nothing
    assert b.state is S.OPEN


def test_reset_timeout_grows_with_failed_recoveries_and_is_capped(clock: bt.ManualClock) -> None:
    b = make(
        clock,
        reset_timeout=10.0,
        reset_timeout_multiplier=2.0,
        reset_timeout_max=25.0,
        half_open_max_calls=1,
        half_open_success_ratio=1.0,
    )
    fail_n(b, 5)
    waits = []
    for _ in range(3):
        waits.append(b.snapshot().retry_after)
        clock.advance(waits[-1] or 0.0)
        fail_n(b, 1)  # the probe fails: open again, for longer
    assert waits == [10.0, 20.0, 25.0]


def test_jitter_stays_within_its_fraction(clock: bt.ManualClock) -> None:
    for seed in range(20):
        b = make(clock, reset_timeout=10.0, reset_timeout_jitter=0.2, seed=seed)
        fail_n(b, 5)
        retry = b.snapshot().retry_after
        assert retry is not None and 8.0 <= retry <= 12.0


def test_stale_outcome_never_moves_the_state(clock: bt.ManualClock) -> None:
    b = make(clock)
    slow_call = b.try_acquire()  # admitted while closed (generation 1)
    fail_n(b, 5)
    clock.advance(30.0)
    assert b.state is S.HALF_OPEN
    slow_call.record_failure()  # from an older generation
    assert b.state is S.HALF_OPEN
    assert b.snapshot().total_stale == 1


def test_critical_calls_are_never_shed_but_are_refused_when_open(clock: bt.ManualClock) -> None:
    b = make(clock, shed_probability={"light": 1.0, "medium": 1.0, "heavy": 1.0})
    fail_n(b, 3)
    assert b.state is S.DEGRADED
    with pytest.raises(bt.LoadShedError) as info:
        b.call(ok)
    assert info.value.reason == "degraded" and info.value.level == "light"
    assert info.value.retry_after is not None and info.value.retry_after > 0
    with b.guard(critical=True):
        pass
    permit = b.try_acquire(critical=True)
    assert permit
    permit.release()
    for _ in range(2):
        with pytest.raises(Boom), b.guard(critical=True):
            fail()
    assert b.state is S.OPEN
    with pytest.raises(bt.CircuitOpenError), b.guard(critical=True):
        pass


def test_shedding_rate_follows_the_level(clock: bt.ManualClock) -> None:
    b = make(clock, shed_probability={"light": 0.25, "medium": 0.5, "heavy": 0.75}, seed=3)
    fail_n(b, 3)
    assert b.degradation_level is L.LIGHT
    n = 4000
    shed = sum(1 for _ in range(n) if not b.try_acquire())
    # binomial(4000, 0.25): sd ~ 27; six sd either side
    assert abs(shed - 1000) < 165


def test_manual_controls_win(clock: bt.ManualClock) -> None:
    b = make(clock)
    b.force_open()
    assert b.state is S.FORCED_OPEN
    clock.advance(1000.0)
    assert b.state is S.FORCED_OPEN
    assert not b.try_acquire(critical=True)
    with pytest.raises(bt.CircuitOpenError) as info:
        b.call(ok)
    assert info.value.state == "forced_open" and info.value.retry_after is None
    b.disable()
    assert b.state is S.DISABLED
    fail_n(b, 20)
    assert b.state is S.DISABLED  # counts recorded, state held
    assert b.snapshot().failure_count == 20
    b.reset()
    assert b.state is S.CLOSED
    assert b.snapshot().failure_count == 0


def test_classification_record_ignore_and_failure_result(clock: bt.ManualClock) -> None:
    class NotFound(Exception):
        pass

    b = make(
        clock,
        record=(Boom, lambda e: isinstance(e, ValueError) and "fatal" in str(e)),
        ignore=(NotFound,),
        failure_result=lambda r: r == 503,
    )
    with pytest.raises(NotFound):
        b.call(lambda: (_ for _ in ()).throw(NotFound()))
    with pytest.raises(ValueError):
        b.call(lambda: (_ for _ in ()).throw(ValueError("benign")))
    with pytest.raises(ValueError):
        b.call(lambda: (_ for _ in ()).throw(ValueError("fatal error")))
    assert b.call(lambda: 503) == 503  # returned to the caller, counted as a failure
    fail_n(b, 1)
    snap = b.snapshot()
    assert snap.total_ignored == 1  # NotFound: neutral
    assert snap.failure_count == 3  # fatal ValueError, the 503, Boom
    assert snap.success_count == 1  # the benign ValueError: neither recorded nor ignored


def test_health_check_moves_open_to_half_open_early(clock: bt.ManualClock) -> None:
    healthy = {"now": False}
    calls = []

    def check() -> bool:
        calls.append(clock.monotonic())
        return healthy["now"]

    b = make(clock, reset_timeout=60.0, health_check_interval=10.0, health_check=check)
    fail_n(b, 5)
    assert b.check_health() is None  # not due yet
    clock.advance(10.0)
    assert b.check_health() is False
    assert b.state is S.OPEN
    clock.advance(5.0)
    with pytest.raises(bt.CircuitOpenError):
        b.call(ok)  # refused; the check is not due again until t=20
    assert len(calls) == 1
    healthy["now"] = True
    clock.advance(5.0)
    assert b.call(ok) == "ok"  # the refused caller ran the check, which half-opened: a probe
    assert b.state is S.HALF_OPEN
    assert len(calls) == 2
    # One call refused (t=15), one that ran: the check's caller is not counted as refused.
    assert b.snapshot().total_rejected == 1


def test_transitions_are_emitted_with_reasons(clock: bt.ManualClock, event_log: object) -> None:
    b = make(clock)
    fail_n(b, 5)
    clock.advance(30.0)
    for _ in range(4):
        b.call(ok)
    changes = [
        (md["from_state"], md["to_state"], md["level"], md["reason"])
        for _, md in event_log.named("buttress", "circuit_breaker", "state_change")  # type: ignore[attr-defined]
    ]
    assert changes == [
        ("closed", "degraded", "light", "failure_count"),
        ("degraded", "degraded", "medium", "failure_count"),
        ("degraded", "open", None, "failure_count"),
        ("open", "half_open", None, "reset_timeout"),
        ("half_open", "closed", None, "probes_succeeded"),
    ]


def test_listeners_see_every_transition_and_cannot_break_calls(clock: bt.ManualClock) -> None:
    b = make(clock)
    seen: list[bt.Transition] = []
    b.subscribe(lambda br, t: seen.append(t))

    def broken(br: bt.CircuitBreaker, t: bt.Transition) -> None:
        raise RuntimeError("listener bug")

    b.subscribe(broken)
    fail_n(b, 5)
    assert [t.to_state for t in seen] == [S.DEGRADED, S.DEGRADED, S.OPEN]
    assert seen[-1].reason == "failure_count" and seen[-1].failures == 5


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"failure_threshold": 0}, "failure_threshold"),
        ({"degradation_threshold": 5, "failure_threshold": 5}, "degradation_threshold"),
        ({"window": -1}, "window"),
        ({"failure_rate_threshold": 1.5}, "failure_rate_threshold"),
        ({"degradation_rate_threshold": 0.6}, "degradation_rate_threshold"),
        ({"shed_probability": {"light": 2}}, "shed_probability.light"),
        ({"shed_probability": {"extreme": 0.5}}, "shed_probability"),
        ({"reset_timeout_max": 1.0}, "reset_timeout_max"),
        ({"half_open_success_ratio": 0}, "half_open_success_ratio"),
        ({"record": ("not an exception",)}, "record"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_settings_name_the_parameter(kwargs: dict[str, object], path: str) -> None:
    with pytest.raises(bt.ConfigError) as info:
        bt.CircuitBreaker("svc", **kwargs)  # type: ignore[arg-type]
    assert info.value.path == path
    assert str(info.value).startswith(f"{path}: ")


@pytest.mark.parametrize(("early", "level"), [(1, "light"), (5, "light"), (8, "light")])
def test_a_fall_of_several_levels_keeps_the_hysteresis_of_the_levels_between(
    clock: bt.ManualClock, early: int, level: str
) -> None:
    # 10 failures are the floor of the band (light), 20 open; hysteresis 0.2 of the band.
    b = bt.CircuitBreaker(
        "x",
        clock=clock,
        seed=1,
        window=10.0,
        buckets=10,
        failure_threshold=20,
        degradation_threshold=10,
        failure_rate_threshold=None,
        degradation_rate_threshold=None,
        level_hysteresis=0.2,
    )
    for _ in range(early):  # the bucket that will leave the window
        b.try_acquire(critical=True).record_failure()  # type: ignore[union-attr]
    clock.advance(1.0)
    for _ in range(9):
        b.try_acquire(critical=True).record_failure()  # type: ignore[union-attr]
    clock.advance(9.0)  # down to 9 failures: severity -0.1, within light's hysteresis
    snap = b.snapshot()
    assert (snap.state, snap.degradation_level) == (S.DEGRADED, L(level))


def open_times(reset_timeout: float, cap: float, jitter: float | None) -> list[float]:
    """How long a breaker stays open after its first failure, for 50 seeds (``jitter`` None:
    the default)."""
    given = {} if jitter is None else {"reset_timeout_jitter": jitter}
    times = []
    for seed in range(50):
        b = bt.CircuitBreaker(
            "x",
            clock=bt.ManualClock(),
            seed=seed,
            failure_threshold=1,
            degradation_threshold=None,
            failure_rate_threshold=None,
            degradation_rate_threshold=None,
            reset_timeout=reset_timeout,
            reset_timeout_max=cap,
            **given,  # type: ignore[arg-type]
        )
        b.try_acquire().record_failure()  # type: ignore[union-attr]
        retry = b.snapshot().retry_after
        assert retry is not None
        times.append(retry)
    return times


def test_jitter_spreads_open_times_at_the_cap_too() -> None:
    times = open_times(100.0, 100.0, 0.2)
    assert all(80.0 <= t <= 100.0 for t in times)  # never past the cap
    assert len({round(t, 6) for t in times}) > 40  # spread, not all at exactly the cap


def test_open_times_spread_by_a_tenth_by_default() -> None:
    # Breakers that open together (one in each worker process) must not all probe together.
    times = open_times(30.0, 300.0, None)
    assert all(27.0 <= t <= 33.0 for t in times)
    assert min(times) < 28.5 and max(times) > 31.5  # both ways, not a hair either side of 30
    assert len({round(t, 6) for t in times}) > 40


def test_a_long_reset_timeout_needs_no_cap_of_its_own(clock: bt.ManualClock) -> None:
    b = make(clock, failure_threshold=1, degradation_threshold=None, reset_timeout=600.0)
    fail_n(b, 1)
    assert b.snapshot().retry_after == 600.0  # not cut to the default cap of 300


def test_a_closed_breaker_judges_its_window_when_old_buckets_leave_it(
    clock: bt.ManualClock,
) -> None:
    # Old successes leaving the window raise the failure rate: closed must notice, as degraded
    # does (rate signals only: 40 early successes, then 5 failures and 5 successes).
    b = bt.CircuitBreaker(
        "x",
        clock=clock,
        seed=0,
        window=10.0,
        buckets=10,
        failure_threshold=None,
        degradation_threshold=None,
    )
    for _ in range(40):
        b.call(ok)
    clock.set(5.0)
    for _ in range(5):
        b.try_acquire(critical=True).record_failure()  # type: ignore[union-attr]
    for _ in range(5):
        b.try_acquire(critical=True).record_success()  # type: ignore[union-attr]
    assert b.state is S.CLOSED  # 5 of 50 failed
    clock.set(10.5)  # the 40 successes leave: 5 of 10 failed
    assert b.state is S.OPEN


@pytest.mark.parametrize(
    "bad",
    [
        {"failure_rate_threshold": True},
        {"reset_timeout_multiplier": "2"},
        {"reset_timeout_jitter": "0.1"},
        {"half_open_success_ratio": True},
        {"level_hysteresis": False},
        {"shed_probability": 0.5},
        {"shed_probability": {"light": True}},
        {"reset_timeout_max": "300"},
    ],
)
def test_bad_settings_name_the_setting(bad: dict[str, object]) -> None:
    with pytest.raises(bt.ConfigError) as info:
        bt.CircuitBreaker("x", **bad)  # type: ignore[arg-type]
    assert info.value.path.split(".")[0] == next(iter(bad))


def test_a_health_check_that_is_not_due_still_reports_a_move_in_time(
    clock: bt.ManualClock,
) -> None:
    seen: list[str] = []
    b = make(clock, failure_threshold=1, degradation_threshold=None, health_check=lambda: True)
    b.subscribe(lambda _b, t: seen.append(t.to_state.value))
    fail_n(b, 1)
    clock.advance(30.0)  # reset_timeout: due to half-open
    assert b.check_health() is None  # not open any more: no check
    assert seen == ["open", "half_open"]  # listeners heard of it now, not at some later call


def test_a_shed_call_is_told_to_retry_when_the_window_next_moves(clock: bt.ManualClock) -> None:
    b = make(
        clock,
        window=1.0,
        buckets=10,
        failure_threshold=10,
        degradation_threshold=1,
        shed_probability={"light": 1.0, "medium": 1.0, "heavy": 1.0},
    )
    clock.set(0.3)
    fail_n(b, 1)
    with pytest.raises(bt.LoadShedError) as info:
        b.call(ok)
    assert info.value.retry_after == pytest.approx(0.1)  # the bucket [0.3, 0.4) ends


def test_jitter_below_the_cap_never_passes_it() -> None:
    assert all(t <= 300.0 for t in open_times(285.0, 300.0, 0.5))


def test_the_default_cap_follows_reset_timeout_however_it_is_given() -> None:
    import dataclasses

    base = bt.BreakerConfig()
    for config in (
        dataclasses.replace(base, reset_timeout=600.0),
        bt.CircuitBreaker("x", config=base, reset_timeout=600.0).config,
    ):
        assert config.open_time_cap == 600.0
    assert bt.BreakerConfig(reset_timeout_max=float("inf")).open_time_cap == float("inf")
    with pytest.raises(bt.ConfigError, match="reset_timeout_max"):
        bt.BreakerConfig(reset_timeout=60.0, reset_timeout_max=30.0)  # an explicit cap below
