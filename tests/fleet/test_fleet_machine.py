"""What the fleet tells the breaker's machine, driven directly with explicit times."""

from __future__ import annotations

import os
import random
import time
import uuid

import pytest

import buttress as bt
from buttress import BreakerConfig, BreakerState
from buttress._breaker import BreakerMachine
from buttress._breaker._machine import Admitted, Refused
from buttress._fleet import RedisFleet

S = BreakerState


def machine(**settings: object) -> BreakerMachine:
    defaults: dict[str, object] = {
        "failure_threshold": 10,
        "degradation_threshold": None,
        "failure_rate_threshold": None,
        "degradation_rate_threshold": None,
        "half_open_max_calls": 4,
        "half_open_success_ratio": 0.5,
        "reset_timeout": 5.0,
    }
    cfg = BreakerConfig(**{**defaults, **settings})  # type: ignore[arg-type]
    return BreakerMachine(cfg, random.Random(0), now=0.0)


def fail(m: BreakerMachine, now: float, n: int) -> None:
    for _ in range(n):
        d = m.admit(now)
        assert isinstance(d, Admitted)
        m.on_failure(d.generation, d.probe, now, None)


def test_the_report_is_the_window() -> None:
    m = machine()
    fail(m, 1.0, 3)
    d = m.admit(1.0)
    assert isinstance(d, Admitted)
    m.on_success(d.generation, 0, 1.0, None)
    assert m.fleet_report(1.0) == (4, 3, False, 0)
    assert m.fleet_report(100.0) == (0, 0, False, 0)  # the window moved on


def test_fleet_open_clears_the_window_and_opens_until_the_fleet_says() -> None:
    m = machine()
    fail(m, 1.0, 3)
    m.take_pending()
    m.fleet_open(2.0, until=4.5)
    assert m.state is S.OPEN and m.open_until == 4.5 and m.w_failures == 0
    [t] = m.take_pending()
    assert (t.reason, t.to_state) == ("fleet_open", S.OPEN)
    refused = m.admit(3.0)
    assert isinstance(refused, Refused) and refused.retry_after == 1.5


def test_manual_states_ignore_the_fleet() -> None:
    for op in (BreakerMachine.force_open, BreakerMachine.disable):
        m = machine()
        op(m, 1.0)
        state = m.state
        m.fleet_open(2.0, until=10.0)
        assert m.state is state and not m.fleet_opened


def test_half_open_probes_are_the_permits_granted() -> None:
    m = machine()
    m.fleet_open(0.0, until=1.0)
    m.poll(1.0)
    assert m.state is S.HALF_OPEN
    assert m.fleet_report(1.0) == (0, 0, False, 4)  # wants the whole half_open_max_calls
    assert isinstance(m.admit(1.0), Refused)  # nothing granted yet
    m.fleet_grant(1)
    assert m.fleet_report(1.0)[3] == 3
    p = m.admit(1.0)
    assert isinstance(p, Admitted) and p.probe
    assert isinstance(m.admit(1.0), Refused)  # one permit, one probe
    m.fleet_grant(1)
    q = m.admit(1.0)
    assert isinstance(q, Admitted)
    m.on_success(p.generation, p.probe, 1.1, 0.1)
    m.on_success(q.generation, q.probe, 1.1, 0.1)  # 2 of 4 needed (ratio 0.5): closed
    assert m.state is S.CLOSED
    assert m.fleet_report(1.2)[2] is True  # the recovery is reported once
    assert m.fleet_report(1.3)[2] is False


def test_a_recovery_elsewhere_closes_what_the_fleet_opened_only() -> None:
    m = machine()
    m.fleet_open(0.0, until=1.0)
    m.poll(1.0)
    m.fleet_closed(1.5)
    assert m.state is S.CLOSED and m.take_pending()[-1].reason == "fleet_recovered"
    alone = machine()
    fail(alone, 0.0, 10)  # opened by itself
    alone.fleet_closed(1.0)
    assert alone.state is S.OPEN


def test_without_the_fleet_the_breaker_probes_on_its_own() -> None:
    m = machine()
    m.fleet_open(0.0, until=1.0)
    m.poll(1.0)
    m.fleet_lost()
    assert all(isinstance(m.admit(1.0), Admitted) for _ in range(4))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_syncs_with_an_id_and_a_thread_of_its_own(redis_url: str) -> None:
    fleet = RedisFleet(redis_url, namespace="fork-" + uuid.uuid4().hex[:8], sync_interval=0.05)
    b = bt.CircuitBreaker("dep", fleet=fleet)
    parent_id = fleet.process_id
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            before = b.snapshot().fleet
            assert before is not None
            for _ in range(200):
                now = b.snapshot().fleet
                assert now is not None
                if now.syncs > before.syncs + 2 and now.connected:
                    code = 0 if fleet.process_id != parent_id and now.live >= 1 else 2
                    break
                time.sleep(0.01)  # real-time: the child's own driver thread syncs
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    fleet.close()
    assert os.waitstatus_to_exitcode(status) == 0
