"""What a dashboard frame shows: rates from the change in totals, each breaker's history, the
tightest scopes first, pressure against its thresholds; built from real components on a
ManualClock, the frame times passed in."""

from __future__ import annotations

import json

import pytest

import buttress as bt
from buttress._dashboard._frame import Frames, Thresholds, group_of, without_history
from buttress._memory import MemoryReading

ACTIONS = {"enabled": False, "fleet": False, "reload": False}


def make_infra(clock: bt.ManualClock, **extra: object) -> bt.Infrastructure:
    config = {
        "memory_manager": {"enabled": False},
        "circuit_breakers": {
            "payments": {
                "failure_threshold": 4,
                "degradation_threshold": 2,
                "minimum_calls": 1000,  # counts, not rates, move it here
                "reset_timeout": 30,
                "reset_timeout_jitter": 0.0,
            },
            "payments.refunds": {},
        },
        "rate_limiting": {
            "limiters": {
                "api": {
                    "scopes": [
                        {"name": "per_user", "limit": 2, "window": "1s", "by": "user"},
                        {"name": "global", "limit": 1000, "window": "1s"},
                    ]
                }
            }
        },
        **extra,
    }
    return bt.Infrastructure(config=config, clock=clock, background=False)


def frame(frames: Frames, infra: bt.Infrastructure, now: float) -> dict[str, object]:
    doc = frames.build(infra.health(), now=now, wall=1_000_000.0 + now, actions=ACTIONS)
    json.dumps(doc, allow_nan=False)  # what the page receives must be plain JSON
    return doc


def by_name(items: object, name: str) -> dict[str, object]:
    assert isinstance(items, list)
    return next(i for i in items if i["name"] == name)


def test_calls_per_second_is_the_change_in_totals_over_the_time_between_frames(
    clock: bt.ManualClock,
) -> None:
    infra = make_infra(clock)
    frames = Frames(interval=1.0)
    breaker = infra.breakers["payments"]
    first = by_name(frame(frames, infra, 10.0)["breakers"], "payments")
    assert first["calls_per_second"] == 0.0  # nothing to compare with yet
    for _ in range(10):
        breaker.call(lambda: None)
    second = by_name(frame(frames, infra, 12.0)["breakers"], "payments")
    assert second["calls_per_second"] == 5.0  # 10 calls over 2 s
    third = by_name(frame(frames, infra, 13.0)["breakers"], "payments")
    assert third["calls_per_second"] == 0.0
    assert third["history"]["calls_per_second"] == [0.0, 5.0, 0.0]


def test_history_keeps_the_last_points_and_later_frames_carry_none(clock: bt.ManualClock) -> None:
    infra = make_infra(clock)
    frames = Frames(interval=1.0, history_length=3)
    breaker = infra.breakers["payments"]
    for i in range(5):
        if i == 4:
            for _ in range(2):
                with pytest.raises(ZeroDivisionError):
                    breaker.call(lambda: 1 / 0)
        doc = frame(frames, infra, float(i))
    payments = by_name(doc["breakers"], "payments")
    assert len(payments["history"]["failure_rate"]) == 3
    assert payments["history"]["failure_rate"][-1] == 1.0
    assert payments["failure_rate"] == 1.0
    light = without_history(doc)
    assert light["full"] is False and doc["full"] is True
    assert all("history" not in b for b in light["breakers"])
    assert light["seq"] == doc["seq"] == 5


def test_a_degraded_breaker_shows_its_level_and_an_open_one_the_time_to_half_open(
    clock: bt.ManualClock,
) -> None:
    infra = make_infra(clock)
    frames = Frames(interval=1.0)
    breaker = infra.breakers["payments"]
    for _ in range(2):
        with pytest.raises(ZeroDivisionError):
            breaker.call(lambda: 1 / 0)
    tile = by_name(frame(frames, infra, 1.0)["breakers"], "payments")
    assert tile["state"] == "degraded" and tile["level"] in ("light", "medium", "heavy")
    assert tile["half_open_in"] is None
    for _ in range(2):  # critical: a degraded breaker sheds some of the others
        breaker.try_acquire(critical=True).record_exception(ZeroDivisionError())
    clock.advance(10)
    tile = by_name(frame(frames, infra, 2.0)["breakers"], "payments")
    assert tile["state"] == "open" and tile["level"] is None
    assert tile["half_open_in"] == pytest.approx(20.0)
    assert tile["window_failures"] == 4


def test_the_overall_status_lists_why(clock: bt.ManualClock) -> None:
    infra = make_infra(clock)
    infra.breakers["payments"].force_open()
    doc = frame(Frames(interval=1.0), infra, 0.0)
    assert doc["overall"]["status"] in ("degraded", "unhealthy")
    problems = doc["overall"]["problems"]
    assert {p["name"] for p in problems} == {"payments"}
    assert problems[0]["status"] in ("warn", "fail") and problems[0]["reason"]


def test_limiters_show_rates_and_their_tightest_scope_first(clock: bt.ManualClock) -> None:
    infra = make_infra(clock)
    frames = Frames(interval=1.0)
    limiter = infra.limiters["api"]
    frame(frames, infra, 0.0)
    admitted = sum(bool(limiter.try_acquire({"user": "ann"})) for _ in range(6))
    assert admitted == 2
    doc = frame(frames, infra, 2.0)
    api = by_name(doc["limiters"], "api")
    assert api["decisions_per_second"] == 3.0 and api["refused_per_second"] == 2.0
    assert [s["name"] for s in api["scopes"]] == ["per_user", "global"]
    assert api["scopes"][0]["denied"] == 4
    assert "ann" not in json.dumps(doc)  # no id in a frame, ever


def test_pressure_shows_memory_against_its_thresholds(clock: bt.ManualClock) -> None:
    def probe() -> MemoryReading:
        return MemoryReading(source="cgroup_v2", limit=1000, used=760, rss=None)

    infra = bt.Infrastructure(
        config={"memory_manager": {"warning_threshold": 0.7, "critical_threshold": 0.9}},
        clock=clock,
        background=False,
        env={},
        memory_probe=probe,
    )
    assert infra.memory is not None
    infra.memory.sample()
    doc = Frames(interval=1.0).build(
        infra.health(), now=0.0, wall=0.0, actions=ACTIONS, cpu=Thresholds(0.8, 0.95)
    )
    [memory] = doc["pressure"]
    assert memory["kind"] == "memory" and memory["level"] == "warning"
    assert (memory["value"], memory["warning"], memory["critical"]) == (0.76, 0.7, 0.9)
    assert memory["unit"] == "ratio"


def test_groups_put_names_with_one_prefix_together() -> None:
    assert group_of("payments.refunds") == "payments"
    assert group_of("payments") == "payments"
    assert group_of("db:orders") == "db"
    assert group_of(".odd") == ".odd"


def test_a_component_removed_by_a_reload_is_forgotten(clock: bt.ManualClock) -> None:
    infra = make_infra(clock)
    frames = Frames(interval=1.0)
    frame(frames, infra, 0.0)
    config = infra.config.to_toml_dict()
    del config["circuit_breakers"]["payments.refunds"]
    infra.reload(config)
    doc = frame(frames, infra, 1.0)
    assert [b["name"] for b in doc["breakers"]] == ["payments"]
