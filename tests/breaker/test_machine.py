"""The breaker's state machine driven directly, with plain calls and explicit times.

No shell, no lock, no clock: each test feeds ``admit`` / ``on_success`` / ``on_failure`` /
``poll`` a ``now`` and reads the state, the transitions queued in ``pending`` and ``stats``.
The rules the module docstring of ``_machine.py`` states are checked here one by one.
"""

from __future__ import annotations

import random

import pytest

from buttress import BreakerConfig, BreakerState, DegradationLevel
from buttress._breaker import BreakerMachine
from buttress._breaker._machine import Admitted, Refused
from buttress._priority import CRITICAL

S = BreakerState
L = DegradationLevel


def machine(**settings: object) -> BreakerMachine:
    # Rate signals, shedding and jitter off unless a test turns them on: each test isolates one
    # thing.
    defaults = {
        "failure_rate_threshold": None,
        "degradation_rate_threshold": None,
        "shed_probability": {"light": 0.0, "medium": 0.0, "heavy": 0.0},
        "reset_timeout_jitter": 0.0,
    }
    cfg = BreakerConfig(**{**defaults, **settings})  # type: ignore[arg-type]
    return BreakerMachine(cfg, random.Random(0), now=0.0)


def admitted(m: BreakerMachine, now: float, critical: bool = False) -> Admitted:
    d = m.admit(now, critical)
    assert isinstance(d, Admitted), d
    return d


def fail(m: BreakerMachine, now: float, n: int = 1) -> None:
    for _ in range(n):
        d = admitted(m, now)
        m.on_failure(d.generation, d.probe, now, None)


def succeed(m: BreakerMachine, now: float, n: int = 1, duration: float | None = None) -> None:
    for _ in range(n):
        d = admitted(m, now)
        m.on_success(d.generation, d.probe, now, duration)


def moves(m: BreakerMachine) -> list[tuple[str, str | None, str]]:
    """The transitions queued since the last look: (to_state, level, reason)."""
    return [
        (t.to_state.value, t.level.value if t.level else None, t.reason) for t in m.take_pending()
    ]


def test_failures_climb_the_degraded_band_then_open() -> None:
    m = machine(degradation_threshold=2, failure_threshold=5)
    fail(m, 1.0)
    assert m.state is S.CLOSED and moves(m) == []
    fail(m, 1.0)  # 2 of the band [2, 5): severity 0, light
    assert (m.state, m.level) == (S.DEGRADED, L.LIGHT)
    fail(m, 1.0)  # 3: a third of the band, medium
    fail(m, 1.0)  # 4: two thirds, heavy
    fail(m, 1.0)  # 5: open
    assert moves(m) == [
        ("degraded", "light", "failure_count"),
        ("degraded", "medium", "failure_count"),
        ("degraded", "heavy", "failure_count"),
        ("open", None, "failure_count"),
    ]
    assert m.state is S.OPEN and m.open_until == pytest.approx(1.0 + 30.0)


def test_closed_and_degraded_share_a_generation_opening_starts_a_new_one() -> None:
    m = machine(degradation_threshold=1, failure_threshold=3)
    fail(m, 0.0)
    assert (m.state, m.generation) == (S.DEGRADED, 1)  # Rule 2: one window, one generation
    fail(m, 0.0, 2)
    assert (m.state, m.generation) == (S.OPEN, 2)


def test_open_half_opens_only_when_polled_after_the_reset_timeout() -> None:
    m = machine(failure_threshold=1, degradation_threshold=None, reset_timeout=10.0)
    fail(m, 0.0)
    moves(m)
    m.poll(9.999)
    assert m.state is S.OPEN  # Rule 1: nothing moves by itself, and not early
    d = m.admit(5.0)
    assert isinstance(d, Refused) and d.reason == "open" and d.retry_after == pytest.approx(5.0)
    m.poll(10.0)
    assert m.state is S.HALF_OPEN and moves(m) == [("half_open", None, "reset_timeout")]


def test_half_open_admits_its_probe_budget_and_closes_when_enough_succeed() -> None:
    m = machine(
        failure_threshold=1,
        degradation_threshold=None,
        reset_timeout=1.0,
        half_open_max_calls=3,
        half_open_success_ratio=0.6,  # 2 of 3
    )
    fail(m, 0.0)
    m.poll(1.0)
    probes = [admitted(m, 1.0) for _ in range(3)]
    assert [p.probe for p in probes] == [1, 2, 3]
    full = m.admit(1.0)
    assert isinstance(full, Refused) and full.reason == "half_open_full"
    m.on_success(probes[0].generation, probes[0].probe, 1.5, 0.5)
    assert m.state is S.HALF_OPEN
    m.on_success(probes[1].generation, probes[1].probe, 1.5, 0.5)
    assert m.state is S.CLOSED
    assert moves(m)[-1] == ("closed", None, "probes_succeeded")
    assert m.stats(1.5).call_count == 0  # closing starts an empty window


def test_probes_that_can_no_longer_succeed_reopen_with_a_longer_timeout() -> None:
    m = machine(
        failure_threshold=1,
        degradation_threshold=None,
        reset_timeout=2.0,
        reset_timeout_multiplier=3.0,
        half_open_max_calls=2,
        half_open_success_ratio=1.0,
    )
    fail(m, 0.0)
    m.poll(2.0)
    probe = admitted(m, 2.0)
    m.on_failure(probe.generation, probe.probe, 2.0, None)
    assert m.state is S.OPEN and moves(m)[-1] == ("open", None, "probes_failed")
    assert m.open_until == pytest.approx(2.0 + 2.0 * 3.0)  # one failed recovery: x3


def test_an_outcome_from_an_older_generation_never_moves_the_state() -> None:
    m = machine(failure_threshold=2, degradation_threshold=None, reset_timeout=1.0)
    early = admitted(m, 0.0)
    fail(m, 0.0, 2)
    assert m.state is S.OPEN
    m.on_failure(early.generation, early.probe, 0.5, None)  # admitted while closed
    assert m.state is S.OPEN and m.stale == 1 and m.failures == 3
    m.poll(1.0)
    m.on_success(early.generation, 0, 1.0, None)
    assert m.state is S.HALF_OPEN and m.stale == 2


def test_manual_states_are_left_only_by_reset() -> None:
    m = machine(failure_threshold=1, degradation_threshold=None, reset_timeout=1.0)
    m.force_open(0.0)
    refused = m.admit(0.0, CRITICAL)
    assert isinstance(refused, Refused) and refused.reason == "forced_open"
    m.poll(1000.0)
    assert m.state is S.FORCED_OPEN  # Rule 3
    m.disable(1000.0)
    fail(m, 1000.0, 5)  # disabled: counted, never judged
    assert m.state is S.DISABLED and m.stats(1000.0).failure_count == 5
    m.reset(1000.0)
    assert m.state is S.CLOSED and m.stats(1000.0).call_count == 0
    assert [t[0] for t in moves(m)] == ["forced_open", "disabled", "closed"]


def test_degraded_sheds_non_critical_calls_by_its_level_probability() -> None:
    m = machine(
        degradation_threshold=1,
        failure_threshold=10,
        shed_probability={"light": 1.0, "medium": 1.0, "heavy": 1.0},
        window=10.0,
        buckets=10,
    )
    fail(m, 0.5)
    shed = m.admit(0.5)
    assert isinstance(shed, Refused) and shed.reason == "shed"
    assert shed.retry_after == pytest.approx(0.5)  # until the bucket ends: the window moves
    assert isinstance(m.admit(0.5, CRITICAL), Admitted)  # critical calls are never shed
    assert (m.rejected, m.shed) == (1, 1)


def test_a_level_is_left_downwards_only_past_its_hysteresis() -> None:
    m = machine(
        degradation_threshold=None,
        failure_threshold=None,
        degradation_rate_threshold=0.2,
        failure_rate_threshold=0.8,
        minimum_calls=10,
        level_hysteresis=0.1,
    )
    fail(m, 0.0, 4)
    succeed(m, 0.0, 6)  # 40 %: a third of the way up [20 %, 80 %): medium
    assert (m.state, m.level) == (S.DEGRADED, L.MEDIUM)
    succeed(m, 0.0)  # 4/11 = 36 %: below medium's floor, within its hysteresis
    assert m.level is L.MEDIUM
    succeed(m, 0.0, 2)  # 4/13 = 31 %: 0.18 of the band, past medium's floor less 0.1
    assert m.level is L.LIGHT


def test_the_window_forgets_old_buckets_and_recovers() -> None:
    m = machine(degradation_threshold=1, failure_threshold=5, window=10.0, buckets=5)
    fail(m, 0.0, 2)
    assert m.state is S.DEGRADED
    m.poll(11.0)  # every bucket has rolled out
    assert m.state is S.CLOSED and moves(m)[-1] == ("closed", None, "recovered")


def test_consecutive_failures_open_whatever_the_window_says() -> None:
    m = machine(failure_threshold=None, degradation_threshold=None, consecutive_failure_threshold=3)
    fail(m, 0.0, 2)
    succeed(m, 0.0)  # a success breaks the run
    fail(m, 0.0, 2)
    assert m.state is S.CLOSED
    fail(m, 0.0)
    assert m.state is S.OPEN and moves(m)[-1] == ("open", None, "consecutive_failures")


def test_slow_successes_degrade_and_open_on_the_slow_call_rate() -> None:
    m = machine(
        failure_threshold=None,
        degradation_threshold=None,
        slow_call_duration=1.0,
        slow_degradation_rate_threshold=0.2,
        slow_call_rate_threshold=0.5,
        minimum_calls=4,
    )
    succeed(m, 0.0, 3, duration=0.1)
    succeed(m, 0.0, 1, duration=1.0)  # 1 in 4 slow: in the band
    assert m.state is S.DEGRADED
    succeed(m, 0.0, 2, duration=2.0)  # 3 in 6: open
    assert m.state is S.OPEN and moves(m)[-1] == ("open", None, "slow_call_rate")


def test_fast_gen_is_the_generation_only_while_a_success_needs_no_decision() -> None:
    m = machine(degradation_threshold=1, failure_threshold=3)
    assert m.fast_gen == m.generation  # closed, plain: the shell may skip the lock
    fail(m, 0.0)
    assert m.state is S.DEGRADED and m.fast_gen == -1
    timed = machine(slow_call_duration=1.0)
    assert timed.fast_gen == -1  # every success must be timed
    m2 = machine()
    m2.set_plain(False)  # fault injection on
    assert m2.fast_gen == -1


def test_batched_successes_land_in_the_current_bucket() -> None:
    m = machine(failure_threshold=5, degradation_threshold=1, minimum_calls=3)
    m.add_successes(current=3, stale=2, now=0.0)
    s = m.stats(0.0)
    assert (s.call_count, s.total_successes, s.total_stale) == (3, 5, 2)


def test_a_passing_health_check_half_opens_early_once_per_interval() -> None:
    m = machine(failure_threshold=1, degradation_threshold=None, reset_timeout=60.0)
    fail(m, 0.0)
    gen = m.health_check_begin(1.0, interval=5.0)
    assert gen is None  # opening counts as the last check: not due before the interval
    gen = m.health_check_begin(5.0, interval=5.0)
    assert gen is not None
    assert m.health_check_begin(5.0, interval=0.0) is None  # one at a time
    m.health_check_end(gen, 6.0, ok=True)
    assert m.state is S.HALF_OPEN and moves(m)[-1] == ("half_open", None, "health_check")


def test_a_failed_health_check_leaves_it_open_and_frees_the_next_check() -> None:
    m = machine(failure_threshold=1, degradation_threshold=None, reset_timeout=60.0)
    fail(m, 0.0)
    gen = m.health_check_begin(10.0, interval=5.0)
    assert gen is not None
    m.health_check_end(gen, 10.0, ok=False)
    assert m.state is S.OPEN
    assert m.health_check_begin(15.0, interval=5.0) == gen


def test_stats_are_named_as_the_snapshot_names_them() -> None:
    m = machine(degradation_threshold=1, failure_threshold=4)
    fail(m, 0.0)
    succeed(m, 0.0, 3)
    s = m.stats(0.0)
    assert (s.state, s.degradation_level) == (S.DEGRADED, L.LIGHT)
    assert (s.call_count, s.failure_count, s.success_count) == (4, 1, 3)
    assert s.failure_rate == pytest.approx(0.25)
    assert (s.total_successes, s.total_failures) == (3, 1)


def test_degraded_sheds_sheddable_calls_first_at_every_level() -> None:
    from buttress._priority import NORMAL, SHEDDABLE

    m = machine(
        degradation_threshold=1,
        failure_threshold=10,
        shed_probability={"light": 0.0, "medium": 0.0, "heavy": 0.0},
        window=10.0,
        buckets=10,
    )
    fail(m, 0.5)
    assert m.state is S.DEGRADED
    for _ in range(20):  # the level sheds no normal call, yet every sheddable one
        assert isinstance(m.admit(0.5, NORMAL), Admitted)
        shed = m.admit(0.5, SHEDDABLE)
        assert isinstance(shed, Refused) and shed.reason == "shed"
        assert isinstance(m.admit(0.5, CRITICAL), Admitted)
    assert m.shed == 20
