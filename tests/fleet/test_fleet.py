"""Fleet breakers in one process, on a real Redis: each ``RedisFleet`` stands for a process
(its own ``process_id``), time is a ``ManualClock`` and rounds are run by hand (``sync()``),
so nothing here waits for the clock. The fleet's time is Redis's own, in milliseconds."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import buttress as bt
from buttress._fleet import RedisFleet
from servers import RedisServer


@pytest.fixture
def namespace() -> str:
    return "fleet-test-" + uuid.uuid4().hex[:10]


BREAKER = {"failure_threshold": 20, "degradation_threshold": None, "reset_timeout": 0.3}


class Fleet:
    def __init__(
        self, url: str, namespace: str, n: int, clock: bt.ManualClock, settings: dict[str, Any]
    ) -> None:
        self.fleets = [
            RedisFleet(url, namespace=namespace, clock=clock, process_id=f"p{i}") for i in range(n)
        ]
        self.breakers = [
            bt.CircuitBreaker("dep", clock=clock, fleet=f, **{**BREAKER, **settings})
            for f in self.fleets
        ]

    def sync(self) -> None:
        for f in self.fleets:
            f.sync()

    def states(self) -> list[str]:
        return [b.state.value for b in self.breakers]


def fail(b: bt.CircuitBreaker, n: int) -> int:
    ran = 0
    for _ in range(n):
        p = b.try_acquire()
        if p:
            ran += 1
            p.record_failure()
    return ran


@pytest.fixture
def make(redis_url: str, namespace: str, clock: bt.ManualClock) -> Iterator[object]:
    made: list[Fleet] = []

    def build(n: int, **settings: Any) -> Fleet:
        f = Fleet(redis_url, namespace, n, clock, settings)
        made.append(f)
        return f

    yield build
    for f in made:
        for x in f.fleets:
            x.close()


def test_config_errors_name_the_field(redis_url: str) -> None:
    for kw, field in (
        ({"quorum": 0}, "quorum"),
        ({"quorum": True}, "quorum"),
        ({"sync_interval": 0}, "sync_interval"),
        ({"sync_interval": float("nan")}, "sync_interval"),
        ({"namespace": "a{b}"}, "namespace"),
        ({"process_id": ""}, "process_id"),
    ):
        with pytest.raises(bt.ConfigError) as err:
            RedisFleet(redis_url, **kw)  # type: ignore[arg-type]
        assert err.value.args[0] == field or field in str(err.value)
    with pytest.raises(bt.ConfigError, match="url_or_client"):
        RedisFleet(42)
    with pytest.raises(bt.ConfigError, match="fleet"):
        bt.CircuitBreaker("x", fleet=object())  # type: ignore[arg-type]
    with pytest.raises(bt.ConfigError, match="fleet"):
        bt.CircuitBreaker("x").force_open(fleet=True)


def test_a_failure_everywhere_opens_every_breaker_after_few_calls_each(make) -> None:  # type: ignore[no-untyped-def]
    f = make(8)
    for b in f.breakers:
        assert fail(b, 3) == 3  # 24 failures in all, 3 each: alone, each needs 20
    assert f.states() == ["closed"] * 8
    # The 4th report brings the fleet to 12 calls, all failed: past minimum_calls (10) at a
    # failure rate of 1.0 >= 0.5, with 4 sick processes >= quorum 2: the fleet opens.
    f.sync()
    assert f.states() == ["closed"] * 3 + ["open"] * 5  # the 4th and later learned at once
    f.sync()  # the others at their next sync
    assert f.states() == ["open"] * 8
    snap = f.breakers[0].snapshot()
    assert snap.fleet is not None
    assert (snap.fleet.state, snap.fleet.epoch, snap.fleet.live) == ("open", 1, 8)
    assert snap.failure_count == 0  # cleared at the opening: never reported twice


def test_one_sick_process_opens_alone_under_a_quorum_of_two(make) -> None:  # type: ignore[no-untyped-def]
    f = make(3)
    ran = fail(f.breakers[0], 20)  # opens alone (failure rate 1.0 after minimum_calls)
    assert ran == 10
    f.sync()
    f.sync()
    assert f.states() == ["open", "closed", "closed"]
    snap = f.breakers[1].snapshot().fleet
    assert snap is not None and (snap.state, snap.sick, snap.failures) == ("closed", 1, 10)


def test_half_open_probes_stay_within_the_fleet_budget_and_a_recovery_closes_all(
    make, clock: bt.ManualClock
) -> None:  # type: ignore[no-untyped-def]
    f = make(4, half_open_max_calls=3, half_open_success_ratio=1.0)
    for b in f.breakers:
        fail(b, 5)
    f.sync()
    f.sync()
    assert f.states() == ["open"] * 4
    time.sleep(0.35)  # real-time: the fleet's open time is on Redis's clock
    clock.advance(0.35)
    f.sync()  # half open everywhere; the first asks for 3 permits and gets them all
    probes = []
    for b in f.breakers:
        got = [b.try_acquire() for _ in range(5)]
        probes.append(sum(1 for p in got if p))
        for p in got:
            if p:
                p.record_success()
    assert sum(probes) <= 3 and probes[0] == 3
    assert f.breakers[0].state.value == "closed"
    f.sync()  # p0 reports its recovery: the fleet closes, and so does everyone
    f.sync()
    assert f.states() == ["closed"] * 4


def test_force_open_reaches_every_process_survives_a_restart_and_reset_undoes_it(
    make, redis_url: str, namespace: str, clock: bt.ManualClock
) -> None:  # type: ignore[no-untyped-def]
    f = make(3)
    f.sync()
    f.breakers[0].force_open(fleet=True, reason="upstream maintenance", by="ops@example")
    assert f.breakers[0].state.value == "forced_open"  # at once here
    f.sync()  # everywhere else at the next sync
    assert f.states() == ["forced_open"] * 3
    ov = f.breakers[2].snapshot().fleet.override
    assert (ov.effective, ov.reason, ov.by, ov.generation) == (
        "force_open",
        "upstream maintenance",
        "ops@example",
        1,
    )
    assert abs(ov.at - time.time()) < 60
    # a process started later (a restart) is forced open at its first sync
    later = make(1)
    later.fleets[0].sync()
    assert later.states() == ["forced_open"]
    # disable does not beat a forced open
    f.breakers[1].disable(fleet=True, reason="try", by="dev")
    f.sync()
    assert f.states() == ["forced_open"] * 3
    f.breakers[1].reset(fleet=True, reason="over", by="ops@example")
    f.sync()
    later.sync()
    assert f.states() + later.states() == ["closed"] * 4


def test_redis_lost_and_back(namespace: str, clock: bt.ManualClock) -> None:
    server = RedisServer().start()
    try:
        fleets = [
            RedisFleet(server.url, namespace=namespace, clock=clock, process_id=f"p{i}")
            for i in range(2)
        ]
        breakers = [bt.CircuitBreaker("dep", clock=clock, fleet=x, **BREAKER) for x in fleets]
        for x in fleets:
            x.sync()
        assert breakers[0].snapshot().fleet.connected
        server.kill()
        t0 = time.monotonic()
        for x in fleets:
            x.sync()
        assert time.monotonic() - t0 < 2.0  # bounded: no hang
        snap = breakers[0].snapshot().fleet
        assert snap is not None and not snap.connected and snap.error
        fail(breakers[0], 20)  # the local breaker still works on its own
        assert breakers[0].state.value == "open"
        server.start()
        for x in fleets:
            x.sync()
        assert breakers[0].snapshot().fleet.connected and breakers[1].snapshot().fleet.connected
    finally:
        server.kill()


def test_a_local_breaker_snapshot_is_unchanged() -> None:
    d = bt.CircuitBreaker("plain").snapshot().to_dict()
    assert "fleet" not in d
