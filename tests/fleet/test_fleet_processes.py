"""Eight processes, one breaker, a Redis of the test's own: the fleet opens together, one sick
process opens alone, probes stay within the fleet's budget, a force-open reaches everyone (and
a process started later), Redis may die and come back, and each process makes at most one
Redis call per sync interval.

Workers are fresh interpreters (``spawn``) sharing nothing but the Redis server. These tests
run in real time (the processes are real): few, bounded, with generous margins."""

from __future__ import annotations

import multiprocessing
import time
import uuid
from typing import Any

import pytest
import redis
from fleet_workers import worker

import buttress as bt
from buttress._fleet import RedisFleet
from servers import RedisServer

pytestmark = pytest.mark.slow

WORKERS = 8
INTERVAL = 0.2
SPAWN = multiprocessing.get_context("spawn")
SETTINGS: dict[str, Any] = {
    "failure_threshold": 400,  # alone, a process makes 400 failed calls before it opens
    "degradation_threshold": None,
    "failure_rate_threshold": None,
    "degradation_rate_threshold": None,
    "reset_timeout": 1.5,
    "half_open_max_calls": 5,
}


@pytest.fixture
def server(private_redis: RedisServer) -> RedisServer:
    return private_redis


class Run:
    def __init__(self, url: str, plan: str, n: int = WORKERS, **kw: Any) -> None:
        self.url = url
        self.namespace = "fleet-" + uuid.uuid4().hex[:8]
        self.start = SPAWN.Barrier(n + 1)
        self.stop = SPAWN.Event()
        self.results = SPAWN.Queue()
        self.recover_at = SPAWN.Value("d", 0.0)
        self.plan = plan
        self.settings = {**SETTINGS, **kw}
        self.processes = [self.spawn(i, self.start) for i in range(n)]
        self.start.wait(timeout=120)
        self.t0 = time.time()

    def spawn(self, idx: int, start: Any) -> Any:
        p = SPAWN.Process(
            target=worker,
            args=(
                self.url,
                self.namespace,
                idx,
                self.plan,
                self.settings,
                INTERVAL,
                start,
                self.stop,
                self.results,
                self.recover_at,
            ),
        )
        p.start()
        return p

    def finish(self) -> list[dict[str, Any]]:
        self.stop.set()
        out = [self.results.get(timeout=60) for _ in self.processes]
        for p in self.processes:
            p.join(timeout=30)
            assert p.exitcode == 0
        assert [r["error"] for r in out if r["error"]] == []
        return sorted(out, key=lambda r: r["idx"])

    def fleet_state(self) -> tuple[int, int]:
        c = redis.Redis.from_url(self.url)
        epoch, until = c.hmget(f"{self.namespace}:fleet:{{dep}}:state", "epoch", "until")
        return int(epoch or 0), int(until or 0)


def wait_for(condition: Any, limit: float) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.01)  # real-time: other processes are working


def first(log: list[tuple[float, str, str]], state: str, after: float = 0.0) -> float | None:
    return next((t for t, s, _ in log if s == state and t >= after), None)


def script_calls(url: str) -> int:
    stats = redis.Redis.from_url(url).info("commandstats")
    return sum(
        int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("fcall", "evalsha", "eval")
    )


def test_a_failure_everywhere_opens_every_process_probes_stay_in_budget_and_all_recover(
    server: RedisServer,
) -> None:
    run = Run(server.url, "fail")
    opened: list[int] = []
    wait_for(lambda: opened.append(run.fleet_state()[1]) or opened[-1] > 0, 20)  # real-time
    opened_at = (opened[-1] - 1500) / 1000.0  # Redis's clock: until - reset_timeout
    run.recover_at.value = time.time()  # the dependency recovers before the fleet half-opens
    time.sleep(1.5 + 2.0)  # real-time: open, half open, probes, everyone closes
    reports = run.finish()
    elapsed = time.time() - run.t0

    lags = [first(r["log"], "open") for r in reports]
    assert all(t is not None for t in lags)
    lag = max(t for t in lags if t is not None) - opened_at
    failed = [r["failed"] for r in reports]
    probes = sorted(t for r in reports for t in r["probes"])
    print(f"\nfleet opened; last process open {lag:.3f}s later (sync interval {INTERVAL}s)")
    print(f"failed calls per process: {failed} (alone: {SETTINGS['failure_threshold']} each)")
    print(f"probes in the fleet's half open: {len(probes)} (budget 5; unbudgeted: up to 40)")
    assert lag <= 2 * INTERVAL + 0.1
    assert max(failed) < SETTINGS["failure_threshold"] / 2
    assert 1 <= len(probes) <= 5
    assert [r["final_state"] for r in reports] == ["closed"] * WORKERS
    calls = script_calls(server.url)
    rounds = elapsed / INTERVAL
    print(
        f"script calls: {calls} for {WORKERS} processes over {rounds:.1f} intervals "
        f"({calls / WORKERS / rounds:.2f} per process per interval)"
    )
    assert calls <= WORKERS * (rounds + 2)


def test_one_sick_process_opens_alone(server: RedisServer) -> None:
    run = Run(server.url, "sick0", failure_threshold=50)
    time.sleep(2.0)  # real-time: the sick one opens, the fleet does not
    reports = run.finish()
    assert first(reports[0]["log"], "open") is not None
    assert all(first(r["log"], "open") is None for r in reports[1:])
    assert run.fleet_state() == (0, 0)


def test_force_open_reaches_everyone_within_an_interval_and_survives_a_restart(
    server: RedisServer,
) -> None:
    run = Run(server.url, "ok")
    time.sleep(0.5)  # real-time: every process has synced
    operator = bt.CircuitBreaker(
        "dep", fleet=RedisFleet(server.url, namespace=run.namespace, clock=bt.ManualClock())
    )
    t_force = time.time()
    operator.force_open(fleet=True, reason="upstream maintenance", by="ops@example")
    time.sleep(1.0)  # real-time
    late = run.spawn(WORKERS, None)  # a process started (or restarted) after the force-open
    run.processes.append(late)
    time.sleep(2.0)  # real-time: it starts (spawn) and syncs
    t_reset = time.time()
    operator.reset(fleet=True, reason="over", by="ops@example")
    time.sleep(1.0)  # real-time
    reports = run.finish()
    lags = [first(r["log"], "forced_open") for r in reports[:WORKERS]]
    assert all(t is not None for t in lags)
    lag = max(t for t in lags if t is not None) - t_force
    print(f"\nforce-open reached all {WORKERS} processes within {lag:.3f}s")
    assert lag <= INTERVAL + 0.25
    late_log = reports[WORKERS]["log"]
    assert first(late_log, "forced_open") is not None
    assert all(first(r["log"], "closed", after=t_reset) for r in reports)
    assert [r["final_state"] for r in reports] == ["closed"] * (WORKERS + 1)
    assert all(r["override"] == "ops@example" for r in reports)


def test_redis_killed_mid_run_falls_back_and_rejoins(server: RedisServer) -> None:
    run = Run(server.url, "ok")
    time.sleep(1.0)  # real-time
    server.kill()
    t_kill = time.time()
    time.sleep(1.5)  # real-time: every process notices and goes on alone
    t_back = time.time()  # before the start: a process may rejoin as soon as it answers
    server.start()
    time.sleep(1.5)  # real-time: they rejoin
    reports = run.finish()
    gaps = [r["max_gap"] for r in reports]
    print(f"\nlongest pause between two calls in any process: {max(gaps) * 1000:.0f} ms")
    assert max(gaps) < 0.5  # nothing hung
    assert all(r["disconnected_at"] and r["disconnected_at"] >= t_kill for r in reports)
    assert all(r["reconnected_at"] and r["reconnected_at"] >= t_back for r in reports)
    assert all(r["refused"] == 0 for r in reports)
