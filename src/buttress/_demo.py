"""``buttress demo``: the guide's scenario, end to end, on the embedded default.

One infrastructure, in this process: the API's rate limits kept in SQLite (they survive a
restart), the hot catalog limiter in memory, a pool of real SQLite connections, simulated
upstream services with injected faults. Six acts, each printed as it happens, then a report
and the final health:

1. users in three orgs hit hierarchical limits (user → org → global): each scope refuses;
2. a flaky upstream walks its breaker through degraded (light, medium, heavy), open,
   half-open and closed again;
3. a burst of work grows the connection pool into its overflow, then waits;
4. simulated memory pressure raises the level to warning, then critical (shedding), then
   it falls back;
5. a load test: 50 concurrent users through the whole protected path;
6. scheduled chaos: a seeded schedule of experiments on the inventory service, and the time
   it took to recover from each.
"""

from __future__ import annotations

import json
import logging
import random
import sqlite3
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from . import events
from ._breaker import BreakerState, CircuitBreaker, Transition
from ._errors import (
    CircuitOpenError,
    InjectedFault,
    LoadShedError,
    PoolTimeoutError,
    RateLimitExceeded,
)
from ._infrastructure import Infrastructure
from ._memory import MemoryReading
from .testing import load_test

OPS_PER_USER = 1_000  # in the load test
ACTS = 6

ORGS = {
    "acme": ["ann", "bob", "cyd", "dan"],
    "globex": ["eve", "fay", "gus", "hal"],
    "initech": ["ivy", "jon", "kim", "lou"],
}


def demo_config(state_dir: Path) -> dict[str, Any]:
    """The demo's configuration: what `buttress config check` would print for it."""
    return {
        "circuit_breakers": {
            "inventory": {
                "window": 2.0,
                "buckets": 10,
                "failure_threshold": None,
                "degradation_threshold": None,
                "degradation_rate_threshold": 0.1,
                "failure_rate_threshold": 0.5,
                "minimum_calls": 20,
                "reset_timeout": 1.0,
                "half_open_max_calls": 5,
            },
            "catalog": {"failure_threshold": 9, "degradation_threshold": 3},
        },
        "rate_limiting": {
            "backend": "memory",
            "limiters": {
                "api": {
                    "backend": f"sqlite://{state_dir / 'limits.db'}",
                    "scopes": [
                        {"name": "user", "limit": 10, "window": 60.0},
                        {"name": "org", "limit": 25, "window": 60.0},
                        {"name": "global", "limit": 60, "window": 60.0},
                    ],
                },
                "catalog": {"limit": 100_000, "window": 60.0, "hierarchical": True},
            },
        },
        "connection_pools": {
            "orders_db": {
                "factory": "sqlite3:connect",
                "args": [str(state_dir / "orders.db")],
                "kwargs": {"check_same_thread": False, "timeout": 5.0},
                "min_size": 2,
                "max_size": 4,
                "max_overflow": 2,
                "overflow_ttl": 0.5,
                "checkout_timeout": 0.3,
                "check_sql": "SELECT 1",
            }
        },
        "memory_manager": {"check_interval": 0.2, "exit_samples": 2},
        "chaos": {"enabled": True, "seed": 7},
        "services": {"orders": {"pool": "orders_db", "breaker": False, "limiter": False}},
    }


@dataclass
class Report:
    """What the demo saw; written as JSON with ``--json``."""

    backend: str = ""
    denials_by_scope: dict[str, int] = field(default_factory=dict)
    admitted_by_org: dict[str, int] = field(default_factory=dict)
    breaker_transitions: list[str] = field(default_factory=list)
    breaker_states: list[str] = field(default_factory=list)
    pool: dict[str, Any] = field(default_factory=dict)
    memory_levels: list[str] = field(default_factory=list)
    memory_shed: int = 0
    load_test: dict[str, Any] = field(default_factory=dict)
    scheduled_chaos: dict[str, Any] = field(default_factory=dict)
    health: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


class Out:
    """Timestamped lines on the terminal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.start = time.monotonic()

    def __call__(self, text: str = "") -> None:
        print(text, file=self.stream, flush=True)

    def at(self, text: str) -> None:
        self(f"  {time.monotonic() - self.start:6.2f}s  {text}")

    def act(self, number: int, title: str) -> None:
        self()
        self(f"[{number}/{ACTS}] {title}")


def run_demo(
    stream: TextIO = sys.stdout,
    *,
    seed: int = 7,
    json_path: str | None = None,
    users: int = 50,
    progress: bool | None = None,
) -> Report:
    """Run the whole demo; returns (and optionally writes) the report."""
    out = Out(stream)
    report = Report()
    # The demo prints what happens itself; the library's own warnings would repeat it.
    logger = logging.getLogger("buttress")
    level, logger.level = logger.level, logging.ERROR
    try:
        with tempfile.TemporaryDirectory(prefix="buttress-demo-") as tmp:
            state_dir = Path(tmp)
            with sqlite3.connect(state_dir / "orders.db") as db:
                db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT)")
            report.backend = "api: sqlite, catalog: memory"
            pressure = _Pressure()
            cfg = demo_config(state_dir)
            out("buttress demo: the guide's scenario on the embedded default")
            out(
                f"  rate-limit state: {report.backend}; pool: SQLite connections; "
                "upstreams: simulated, with injected faults"
            )
            with Infrastructure("demo", cfg, seed=seed, env={}, memory_probe=pressure) as infra:
                _act_limits(infra, out, report)
                _act_breaker(infra, out, report, seed)
                _act_pool(infra, out, report)
                _act_memory(infra, out, report, pressure)
                _act_load(infra, out, report, users, progress)
                _act_scheduled_chaos(infra, out, report, seed)
                health = infra.health()
                report.health = health.to_dict()
                _final(
                    out,
                    report,
                    health.overall_status,
                    [(c.kind, c.name, c.status, c.reason) for c in health.checks],
                )
    finally:
        logger.setLevel(level)
    if json_path:
        Path(json_path).write_text(json.dumps(report.to_dict(), indent=2, default=str))
        out(f"\nreport written to {json_path}")
    return report


# -- act 1: hierarchical limits ---------------------------------------------------------------


def _act_limits(infra: Infrastructure, out: Out, report: Report) -> None:
    out.act(
        1, "users in three orgs under hierarchical limits (user 10, org 25, global 60 a minute)"
    )
    for org, names in ORGS.items():
        admitted = 0
        for name in names:
            denied: dict[str, int] = {}
            ok = 0
            for _ in range(12):
                try:
                    infra.call("api", lambda: None, context={"user_id": name, "org_id": org})
                    ok += 1
                except RateLimitExceeded as exc:
                    denied[exc.scope] = denied.get(exc.scope, 0) + 1
                    report.denials_by_scope[exc.scope] = (
                        report.denials_by_scope.get(exc.scope, 0) + 1
                    )
            admitted += ok
            refused = ", ".join(f"{n} by {s}" for s, n in denied.items()) or "none refused"
            out.at(f"{org:>8}/{name}: 12 requests, {ok:2d} admitted, {refused}")
        report.admitted_by_org[org] = admitted
    report.checks["denials in every scope"] = all(
        report.denials_by_scope.get(s, 0) > 0 for s in ("user", "org", "global")
    )


# -- act 2: a flaky upstream and its breaker ------------------------------------------------------


class _Upstream:
    """A dependency whose failure rate follows a script: climbs, stays bad, recovers."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.start = time.monotonic()
        self.recover_at = 4.0

    def failure_rate(self) -> float:
        t = time.monotonic() - self.start
        return 0.0 if t >= self.recover_at else min(0.8, 0.8 * t / 2.5)

    def fetch(self) -> str:
        if self.rng.random() < self.failure_rate():
            raise ConnectionError("inventory service: 503")
        return "in stock"


def _act_breaker(infra: Infrastructure, out: Out, report: Report, seed: int) -> None:
    out.act(2, "a flaky inventory service and its circuit breaker (2 s window)")
    breaker: CircuitBreaker = infra.breakers["inventory"]
    upstream = _Upstream(random.Random(seed))

    def show(_b: CircuitBreaker, t: Transition) -> None:
        to = t.to_state.value + (f" ({t.level.value})" if t.level else "")
        frm = t.from_state.value + (f" ({t.from_level.value})" if t.from_level else "")
        report.breaker_transitions.append(f"{frm} -> {to}: {t.reason}")
        if not report.breaker_states or report.breaker_states[-1] != to:
            report.breaker_states.append(to)
        rate = (
            f" (failure rate {t.failure_rate:.0%})"
            if t.calls and t.to_state is not BreakerState.HALF_OPEN
            else ""
        )
        out.at(f"inventory breaker {frm} -> {to}, {t.reason}{rate}")

    stop = breaker.subscribe(show)
    tally = {"ok": 0, "failed": 0, "shed": 0, "refused": 0}
    seen_open = False
    try:
        deadline = time.monotonic() + 15.0
        next_note = time.monotonic()
        while time.monotonic() < deadline:
            now = time.monotonic()
            if now >= next_note:
                out.at(
                    f"upstream failing {upstream.failure_rate():4.0%}: ok {tally['ok']}, "
                    f"failed {tally['failed']}, shed {tally['shed']}, refused {tally['refused']}"
                )
                next_note += 1.0
            try:
                infra.call("inventory", upstream.fetch)
                tally["ok"] += 1
            except ConnectionError:
                tally["failed"] += 1
            except LoadShedError:
                tally["shed"] += 1
            except CircuitOpenError:
                tally["refused"] += 1
            seen_open = seen_open or breaker.state is BreakerState.OPEN
            if seen_open and breaker.state is BreakerState.CLOSED and upstream.failure_rate() == 0:
                break
            time.sleep(0.004)
    finally:
        stop()
    states = {s.split(" ")[0] for s in report.breaker_states}
    levels = {s for s in report.breaker_states if s.startswith("degraded")}
    report.checks["breaker: every state reached"] = {
        "degraded",
        "open",
        "half_open",
        "closed",
    } <= states
    report.checks["breaker: every degraded level"] = len(levels) == 3


# -- act 3: the pool under a burst -----------------------------------------------------------


def _act_pool(infra: Infrastructure, out: Out, report: Report) -> None:
    out.act(3, "a burst of 8 workers on a pool of 4 SQLite connections (+2 overflow)")
    pool = infra.pools["orders_db"]
    peak = {"size": 0, "overflow": 0, "waiting": 0}
    timeouts = []
    barrier = threading.Barrier(8)

    def worker(i: int) -> None:
        barrier.wait()
        for j in range(5):
            try:

                def order(conn: sqlite3.Connection, item: str = f"w{i}-{j}") -> None:
                    conn.execute("INSERT INTO orders (item) VALUES (?)", (item,))
                    conn.commit()
                    s = pool.snapshot()
                    peak["size"] = max(peak["size"], s.size)
                    peak["overflow"] = max(peak["overflow"], s.overflow)
                    peak["waiting"] = max(peak["waiting"], s.waiting)
                    time.sleep(0.05)  # hold the connection: the work takes time

                infra.call("orders", order)
            except PoolTimeoutError:
                timeouts.append(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = pool.snapshot()
    out.at(
        f"peak size {peak['size']} (max_size 4 + overflow {peak['overflow']}), "
        f"up to {peak['waiting']} waiting; {stats.checkouts} checkouts, "
        f"{len(timeouts)} timed out, wait p95 {stats.wait_p95 * 1000:.1f} ms"
    )
    time.sleep(0.7)  # overflow_ttl is 0.5 s: let housekeeping retire the extra members
    infra.run_maintenance()
    after = pool.snapshot()
    out.at(f"after the burst: size {after.size}, overflow {after.overflow} (overflow_ttl passed)")
    report.pool = {
        "peak_size": peak["size"],
        "peak_overflow": peak["overflow"],
        "peak_waiting": peak["waiting"],
        "checkouts": stats.checkouts,
        "timeouts": len(timeouts),
        "wait_p95": stats.wait_p95,
        "size_after": after.size,
    }
    report.checks["pool: overflow used"] = peak["overflow"] > 0


# -- act 4: memory pressure -------------------------------------------------------------------


class _Pressure:
    """A memory probe the demo turns up and down (the real one would read the cgroup)."""

    def __init__(self) -> None:
        self.ratio = 0.35

    def __call__(self) -> MemoryReading:
        limit = 512 * 1024 * 1024
        return MemoryReading(source="simulated", used=int(self.ratio * limit), limit=limit)


def _act_memory(infra: Infrastructure, out: Out, report: Report, pressure: _Pressure) -> None:
    out.act(4, "simulated memory pressure (warning at 70%, critical at 85%)")
    mm = infra.memory
    assert mm is not None
    for ratio in (0.35, 0.75, 0.9, 0.6, 0.6, 0.6):
        pressure.ratio = ratio
        sample = mm.sample()
        shed = 0
        for _ in range(20):
            try:
                infra.call("catalog", lambda: None, context={"user_id": "mem", "org_id": "mem"})
            except LoadShedError as exc:
                if exc.reason == "memory_pressure":
                    shed += 1
        report.memory_shed += shed
        if not report.memory_levels or report.memory_levels[-1] != sample.level.value:
            report.memory_levels.append(sample.level.value)
        out.at(
            f"memory at {ratio:.0%}: level {sample.level.value}; {shed}/20 non-critical calls shed"
        )
    report.checks["memory: warning reached"] = "warning" in report.memory_levels
    report.checks["memory: shed at critical"] = report.memory_shed > 0


# -- act 5: load test -------------------------------------------------------------------------


def _act_load(
    infra: Infrastructure, out: Out, report: Report, users: int, progress: bool | None
) -> None:
    # The guide's test runs 100 operations per user; 1,000 make a steadier throughput figure.
    out.act(
        5, f"load test: {users} concurrent users x {OPS_PER_USER:,} operations through protect()"
    )
    result = load_test(
        infra,
        lambda: None,
        service="catalog",
        concurrent_users=users,
        duration=10.0,
        operations_per_user=OPS_PER_USER,
        mode="asyncio",
        progress=progress,
    )
    for line in result.lines():
        out.at(line)
    report.load_test = result.to_dict()
    report.checks["load test: success rate > 95%"] = result.success_rate > 0.95


# -- act 6: scheduled chaos -----------------------------------------------------------------------


def _act_scheduled_chaos(infra: Infrastructure, out: Out, report: Report, seed: int) -> None:
    out.act(
        6, "scheduled chaos: 3 seeded experiments on the inventory service (the guide's chaos_mode)"
    )
    upstream = _Upstream(random.Random(seed))
    upstream.recover_at = 0.0  # healthy: every failure now is injected
    recoveries: list[tuple[str, float]] = []

    def note(name: tuple[str, ...], m: Any, md: Any) -> None:
        if md.get("target") != "inventory":
            return
        if name[-1] == "experiment_start":
            out.at(
                f"experiment {md['experiment']} starts: failing {m['failure_rate']:.0%} of calls"
            )
        elif name[-1] == "experiment_stop":
            out.at(
                f"experiment {md['experiment']} ends: {m['injected_failures']} failures injected"
            )
        else:
            recoveries.append((md["experiment"], m["recovery_time"]))
            out.at(
                f"inventory recovered from {md['experiment']} in {m['recovery_time'] * 1e3:.0f} ms "
                "(first success with its breaker closed)"
            )

    watched = [
        ("buttress", "chaos", "experiment_start"),
        ("buttress", "chaos", "experiment_stop"),
        ("buttress", "chaos", "recovery_time"),
    ]
    events.attach("buttress.demo.chaos", watched, note)
    schedule = infra.chaos.schedule(
        ["inventory"],
        experiments=3,
        every=3.0,
        duration=0.4,
        failure_rate=0.5,
        seed=seed,
        name="gameday",
    )
    plan = ", ".join(f"+{p.offset:.2f}s for {p.duration:.1f}s" for p in schedule.plan)
    out.at(f"schedule gameday planned: {plan}")
    tally = {"ok": 0, "injected": 0, "refused": 0}
    try:
        deadline = time.monotonic() + schedule.span + 10.0
        while time.monotonic() < deadline:
            try:
                infra.call("inventory", upstream.fetch)
                tally["ok"] += 1
            except InjectedFault:
                tally["injected"] += 1
            except (CircuitOpenError, LoadShedError):
                tally["refused"] += 1
            injector = infra.chaos.find("inventory")
            if not schedule.active and injector is not None and not injector.recovering:
                break  # the last fault is over and the service has recovered
            time.sleep(0.004)
    finally:
        # Stopped before the listener goes: an experiment that expired with no call since is
        # retired (and its end reported) here.
        schedule.stop()
        events.detach("buttress.demo.chaos")
    snap = schedule.snapshot()
    out.at(
        f"schedule done: {snap['finished']}/{snap['planned']} experiments ran; calls ok "
        f"{tally['ok']}, injected failures {tally['injected']}, refused {tally['refused']}"
    )
    report.scheduled_chaos = {
        "planned": snap["planned"],
        "finished": snap["finished"],
        "calls": tally,
        "recovery_times": [round(t, 4) for _, t in recoveries],
    }
    report.checks["scheduled chaos: every experiment ran"] = snap["finished"] == snap["planned"]
    # One per experiment, unless the next began before the service had recovered from the last.
    report.checks["chaos: recovery time measured"] = len(recoveries) >= 1


def _final(out: Out, report: Report, status: str, checks: list[tuple[str, str, str, str]]) -> None:
    out()
    out("report")
    out(f"  denials by scope: {report.denials_by_scope}")
    out(f"  breaker states: {' -> '.join(['closed', *report.breaker_states])}")
    out(f"  pool: {report.pool}")
    out(f"  memory levels: {' -> '.join(report.memory_levels)}")
    lt = report.load_test
    out(
        f"  load test: success {lt['success_rate']:.2%}, {lt['throughput']:,.0f} ops/s, "
        f"latency avg {lt['average_latency'] * 1e3:.3f} ms, p50 {lt['p50'] * 1e3:.3f}, "
        f"p95 {lt['p95'] * 1e3:.3f}, p99 {lt['p99'] * 1e3:.3f}, "
        f"max {lt['max_latency'] * 1e3:.3f} ms"
    )
    sc = report.scheduled_chaos
    if sc:
        times = ", ".join(f"{t * 1e3:.0f} ms" for t in sc["recovery_times"]) or "none"
        ran = f"{sc['finished']}/{sc['planned']} experiments"
        out(f"  scheduled chaos: {ran}; recovery times {times}")
    out()
    out(f"health: {status}")
    for kind, name, st, reason in checks:
        out(f"  {st:4}  {kind}:{name}  {reason}")
    out()
    for name, ok in report.checks.items():
        out(f"  [{'x' if ok else ' '}] {name}")
