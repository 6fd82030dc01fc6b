"""The fleet's pure core: exact figures, ``now`` passed in."""

from __future__ import annotations

from buttress._breaker import BreakerConfig
from buttress._fleet._core import (
    FleetState,
    Override,
    Record,
    Report,
    effective,
    override,
    signal,
    step,
    thresholds_for,
)

TH = thresholds_for(
    BreakerConfig(failure_threshold=20, minimum_calls=10, failure_rate_threshold=0.5),
    quorum=2,
    sync_interval=0.5,
)


def test_thresholds_come_from_the_breaker() -> None:
    assert (TH.failure_threshold, TH.minimum_calls, TH.failure_rate_threshold) == (20, 10, 0.5)
    assert (TH.quorum, TH.heartbeat_ms, TH.open_ms, TH.probe_budget) == (2, 1500, 30_000, 5)


def test_signal_counts_live_records_of_the_epoch() -> None:
    recs = {
        "a": Record(2000, 10, 3, 1),
        "b": Record(2000, 10, 0, 1),
        "c": Record(2000, 50, 50, 0),  # an older epoch: live, not counted
        "d": Record(1000, 9, 9, 1),  # expired
    }
    assert signal(recs, 1, 1000) == (3, 1, 20, 3)


def test_one_sick_process_never_opens_the_fleet() -> None:
    recs = {"b": Record(2000, 100, 0, 0)}
    state, _, _, view = step(FleetState(), recs, 0, "a", Report(40, 40, 0), TH, 1000)
    assert state == FleetState(0, 0)
    assert (view.live, view.sick, view.calls, view.failures, view.open_ms_left) == (
        2,
        1,
        140,
        40,
        -1,
    )


def test_the_fleet_opens_on_the_summed_count_with_a_quorum() -> None:
    # 8 processes with 3 failures each: 24 >= 20, though none alone is near it.
    recs = {f"p{i}": Record(2000, 30, 3, 0) for i in range(7)}
    state, _, _, view = step(FleetState(), recs, 0, "p7", Report(30, 3, 0), TH, 1000)
    assert state == FleetState(1, 31_000)
    assert (view.epoch, view.open_ms_left) == (1, 30_000)
    assert (view.sick, view.failures) == (0, 0)  # the windows before the opening count no more


def test_the_fleet_opens_on_the_summed_rate() -> None:
    th = thresholds_for(
        BreakerConfig(failure_threshold=None, degradation_threshold=None),
        quorum=2,
        sync_interval=0.5,
    )
    recs = {"b": Record(2000, 5, 3, 0)}
    state, *_ = step(FleetState(), recs, 0, "a", Report(5, 2, 0), th, 1000)
    assert state.epoch == 1  # 5 of 10 calls failed: 0.5
    state, *_ = step(FleetState(), recs, 0, "a", Report(6, 2, 0), th, 1000)
    assert state.epoch == 0  # 5 of 11


def test_an_open_fleet_does_not_open_again_and_grants_no_probes() -> None:
    recs = {"b": Record(2000, 30, 30, 1)}
    state, _, used, view = step(
        FleetState(1, 5000), recs, 0, "a", Report(30, 30, 1, False, 5), TH, 1000
    )
    assert state == FleetState(1, 5000) and (used, view.granted, view.open_ms_left) == (0, 0, 4000)


def test_half_open_probes_are_budgeted_for_the_whole_fleet() -> None:
    state, used = FleetState(1, 1000), 0
    granted = []
    for pid in ("a", "b", "c"):
        state, _, used, view = step(state, {}, used, pid, Report(0, 0, 1, False, 2), TH, 2000)
        granted.append(view.granted)
    assert granted == [2, 2, 1] and used == 5
    state, _, used, view = step(state, {}, used, "d", Report(0, 0, 1, False, 5), TH, 2001)
    assert view.granted == 0 and view.open_ms_left == 0


def test_a_recovery_closes_the_fleet() -> None:
    state, _, _, view = step(FleetState(1, 1000), {}, 3, "a", Report(0, 0, 1, True), TH, 2000)
    assert state == FleetState(1, 0) and view.open_ms_left == -1
    # a recovery reported for an older epoch, or while still open, does nothing
    state, *_ = step(FleetState(2, 1000), {}, 3, "a", Report(0, 0, 1, True), TH, 2000)
    assert state == FleetState(2, 1000)
    state, *_ = step(FleetState(1, 5000), {}, 3, "a", Report(0, 0, 1, True), TH, 2000)
    assert state == FleetState(1, 5000)


def test_override_precedence_force_open_over_disable_over_automatic() -> None:
    ov = override(Override(), "disable", "deploy", "ann", 5)
    assert (ov.generation, effective(ov)) == (1, "disable")
    ov = override(ov, "force_open", "outage", "bob", 6)
    assert (ov.generation, effective(ov), ov.by, ov.reason) == (2, "force_open", "bob", "outage")
    ov = override(ov, "disable", "again", "ann", 7)
    assert (ov.generation, effective(ov)) == (3, "force_open")  # still forced open
    ov = override(ov, "reset", "over", "bob", 8)
    assert (ov.generation, effective(ov), ov.at_ms) == (4, None, 8)
