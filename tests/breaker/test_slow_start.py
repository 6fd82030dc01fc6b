"""Slow start: after recovering, a breaker lets calls back in along its ramp, not all at once."""

from __future__ import annotations

import pytest

import buttress as bt
from buttress._priority import CRITICAL, NORMAL, SHEDDABLE


def recovered_breaker(clock: bt.ManualClock, **settings: object) -> bt.CircuitBreaker:
    """A breaker that failed open and has just closed again after its probes, at clock time."""
    breaker = bt.CircuitBreaker(
        "upstream",
        failure_threshold=1,
        degradation_threshold=None,
        failure_rate_threshold=None,
        degradation_rate_threshold=None,
        reset_timeout=5.0,
        reset_timeout_jitter=0.0,  # half-open exactly 5 s later
        half_open_max_calls=1,
        half_open_success_ratio=1.0,
        clock=clock,
        **settings,  # type: ignore[arg-type]
    )
    with pytest.raises(ZeroDivisionError):
        breaker.call(lambda: 1 / 0)
    assert breaker.state is bt.BreakerState.OPEN
    clock.advance(5.0)
    breaker.call(lambda: None)  # the probe succeeds: closed
    assert breaker.state is bt.BreakerState.CLOSED
    return breaker


def offer(
    breaker: bt.CircuitBreaker,
    clock: bt.ManualClock,
    per_second: int,
    seconds: float,
    priority: int = NORMAL,
) -> list[int]:
    """Offer calls evenly; the number admitted in each second."""
    admitted: list[int] = []
    step = 1.0 / per_second
    for _ in range(round(seconds)):
        count = 0
        for _ in range(per_second):
            try:
                ticket = breaker.begin(priority)
            except bt.LoadShedError as exc:
                assert exc.reason == "slow_start" and exc.source == "upstream"
            else:
                breaker.end(ticket, None)
                count += 1
            clock.advance(step)
        admitted.append(count)
    return admitted


def ramp(initial: float, duration: float, start: float, end: float) -> float:
    """The ramp's integral from ``start`` to ``end`` (seconds after recovery): the admitted
    share of one call per second offered over that stretch."""

    def integral(t: float) -> float:
        warm = min(t, duration)
        return initial * warm + (1 - initial) * warm * warm / (2 * duration) + (t - warm)

    return integral(end) - integral(start)


def test_the_first_seconds_after_recovery_follow_the_ramp() -> None:
    clock = bt.ManualClock()
    breaker = recovered_breaker(clock, slow_start=10.0, slow_start_initial=0.1)
    admitted = offer(breaker, clock, per_second=1000, seconds=12)
    for second, count in enumerate(admitted):
        expected = 1000 * ramp(0.1, 10.0, second, second + 1)
        # The credit admits the offered calls times the ramp to within one call; offered in
        # steps of 1 ms, the ramp's sum and its integral differ by under one more.
        assert abs(count - expected) <= 2.0, (second, count, expected)
    assert admitted[0] == pytest.approx(145, abs=1)  # not 1000: a tenth, growing
    assert admitted[10:] == [1000, 1000]  # warmed up: every call, on the lock-free path again
    assert breaker.snapshot().total_shed == sum(1000 - c for c in admitted)


def test_critical_calls_pass_and_sheddable_ones_ramp_too() -> None:
    clock = bt.ManualClock()
    breaker = recovered_breaker(clock, slow_start=4.0, slow_start_initial=0.5)
    assert offer(breaker, clock, per_second=100, seconds=1, priority=CRITICAL) == [100]
    # One second in: the share grows from 0.625 to 0.75 over the next second.
    assert offer(breaker, clock, per_second=100, seconds=1, priority=SHEDDABLE) == [68]


def test_without_slow_start_every_call_runs_at_once_and_reset_skips_it() -> None:
    clock = bt.ManualClock()
    breaker = recovered_breaker(clock)
    assert offer(breaker, clock, per_second=500, seconds=1) == [500]
    warming = recovered_breaker(clock, slow_start=30.0)
    warming.reset()
    assert offer(warming, clock, per_second=500, seconds=1) == [500]


@pytest.mark.parametrize(
    ("settings", "name"),
    [
        ({"slow_start": -1.0}, "slow_start"),
        ({"slow_start_initial": 0.0}, "slow_start_initial"),
        ({"slow_start_initial": 1.5}, "slow_start_initial"),
    ],
)
def test_bad_slow_start_settings_name_the_field(settings: dict[str, float], name: str) -> None:
    with pytest.raises(bt.ConfigError) as caught:
        bt.CircuitBreaker("x", **settings)  # type: ignore[arg-type]
    assert caught.value.path == name
