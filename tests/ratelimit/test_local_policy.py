"""``failure_policy="local"``: while the shared backend is down, each process decides in its own
memory at ``local_share`` of every limit, and goes back to the backend when it answers.

The unit tests drive a backend that fails on demand with a ``ManualClock``; the last test
kills a redis-server of its own under four processes.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import time
from collections import defaultdict
from typing import Any

import pytest
from ratelimit_backends import RedisServer
from test_failure import Switchable

import buttress as bt
from buttress._health import build_report
from buttress.exporters._metrics import limiter_samples
from buttress.ratelimit._local import scaled

EV_DOWN = ("buttress", "rate_limiter", "backend_down")
EV_RECOVERED = ("buttress", "rate_limiter", "backend_recovered")
HOUR = 3600.0


def limiter(
    backend: Any, clock: bt.ManualClock, share: float = 0.25, **options: Any
) -> bt.RateLimiter:
    """Per user 8 an hour (token bucket), 40 an hour for everyone (fixed window): locally, at
    a quarter, 2 per user and 10 in all."""
    options.setdefault(
        "scopes",
        [bt.Scope("user", 8, HOUR), bt.Scope("global", 40, HOUR, algorithm="fixed_window")],
    )
    return bt.RateLimiter(
        backend=backend,
        clock=clock,
        name="local",
        failure_policy="local",
        local_share=share,
        backend_retry_interval=1.0,
        **options,
    )


def admitted(rl: bt.RateLimiter, user: str, n: int) -> int:
    return sum(rl.try_acquire({"user": user}).allowed for _ in range(n))


# -- settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize("share", [0, -0.5, 1.5, math.nan, math.inf, "1/8"])
def test_a_bad_local_share_is_a_config_error_naming_it(share: Any) -> None:
    with pytest.raises(bt.ConfigError) as info:
        bt.RateLimiter("10/second", failure_policy="local", local_share=share)
    assert info.value.path == "local_share"


def test_an_unknown_policy_is_a_config_error_listing_the_three() -> None:
    with pytest.raises(bt.ConfigError, match="'fail_open', 'fail_closed' or 'local'") as info:
        bt.RateLimiter("10/second", failure_policy="locally")  # type: ignore[arg-type]
    assert info.value.path == "failure_policy"


def test_the_policies_are_listed() -> None:
    assert bt.ratelimit.FAILURE_POLICIES == ("fail_open", "fail_closed", "local")


def test_scaling_limits_and_bursts_with_a_floor_of_one_unit() -> None:
    tb = bt.Scope("s", 100, 10.0, burst=20).build()
    local = scaled(tb, 0.125)
    assert (local.limit, local.burst, local.window) == (12.5, 2.5, 10.0)  # type: ignore[attr-defined]
    assert scaled(tb, 1.0) is tb
    fw = bt.Scope("s", 5, 60.0, algorithm="fixed_window").build()
    assert scaled(fw, 1 / 8).limit == 1.0  # 0.625 would refuse everyone: one unit instead
    tiny = bt.Scope("s", 0.5, 60.0, algorithm="sliding_window").build()
    assert scaled(tiny, 1 / 8).limit == 0.5  # never above the limit itself


# -- an outage -----------------------------------------------------------------------------------


def test_exact_admissions_while_down_then_the_backend_again(
    clock: bt.ManualClock, event_log: Any, caplog: pytest.LogCaptureFixture
) -> None:
    backend = Switchable()
    rl = limiter(backend, clock)
    assert admitted(rl, "u1", 10) == 8  # u1's 8 an hour, on the backend
    assert rl.snapshot().mode == "backend"

    backend.down = True
    caplog.set_level(logging.INFO, logger="buttress.rate_limiter")
    # A quarter of each limit, from nothing: 2 per user, 10 in all (u1 included: the
    # backend's states cannot be read while it is down).
    counts = [admitted(rl, f"u{i}", 3) for i in range(1, 8)]
    assert counts == [2, 2, 2, 2, 2, 0, 0]
    calls = backend.calls
    refused = rl.try_acquire({"user": "u9"})
    assert backend.calls == calls  # spared until the retry interval has passed
    assert not refused and refused.scope == "global" and refused.limit == 10
    assert refused.retry_after == pytest.approx(HOUR - clock.time() % HOUR)
    d = rl.peek({"user": "u1"})
    assert (d.scopes[0].limit, d.scopes[0].remaining) == (2, 0)  # the local share's numbers

    snap = rl.snapshot()
    assert (snap.backend_status, snap.mode, snap.failure_policy) == ("down", "local", "local")
    out: Any = defaultdict(list)
    limiter_samples("app", {"local": snap}, out)
    assert {labels[2]: v for labels, v in out["limiter.mode"]} == {
        "backend": 0.0,
        "local": 1.0,
        "fail_open": 0.0,
        "fail_closed": 0.0,
    }
    check = build_report("app", limiters={"local": snap}, time=0.0).checks[0]
    assert check.status == "warn"
    assert check.reason == (
        "Switchable is down for 0s (local: deciding in this process at 0.25 of each limit)"
    )
    assert snap.local_share == 0.25
    [(_, meta)] = event_log.named(*EV_DOWN)
    assert meta["policy"] == "local"
    [entering] = [r for r in caplog.records if "is down" in r.getMessage()]
    assert entering.levelno == logging.WARNING
    assert "deciding in this process's memory at 0.25 of each limit" in entering.getMessage()

    backend.down = False
    clock.advance(1.0)  # the retry is due: the next decision asks the backend, which answers
    assert not rl.try_acquire({"user": "u1"})  # the backend kept u1's spent hour
    assert admitted(rl, "u2", 10) == 8  # and its own count: u2 has 8 there, not 2
    assert rl.snapshot().mode == "backend" and rl.snapshot().backend_status == "ok"
    assert len(event_log.named(*EV_RECOVERED)) == 1
    [leaving] = [r for r in caplog.records if "answers again" in r.getMessage()]
    assert leaving.levelno == logging.WARNING  # seen at the level its start was seen
    assert leaving.getMessage().endswith("it decides again (the local states are dropped)")
    local = rl._store.local  # type: ignore[attr-defined]
    assert local.key_count() == 0  # the local states were dropped


def test_refunds_while_down_go_to_the_local_states(clock: bt.ManualClock) -> None:
    backend = Switchable()
    rl = limiter(backend, clock)
    backend.down = True
    assert admitted(rl, "u1", 3) == 2
    calls = backend.calls
    rl.refund({"user": "u1"})
    assert backend.calls == calls  # spared: the refund went to the local states
    assert admitted(rl, "u1", 3) == 1
    rl.refund({"user": "u1"}, cost=5)  # never beyond the share
    assert admitted(rl, "u1", 3) == 2

    backend.down = False
    clock.advance(1.0)
    rl.refund({"user": "u1"})  # the backend's again (and it ends the outage)
    assert backend.calls == calls + 1 and rl.snapshot().mode == "backend"


def test_a_refund_that_fails_starts_the_outage_and_gives_to_the_local_states(
    clock: bt.ManualClock,
) -> None:
    backend = Switchable()
    rl = limiter(backend, clock)
    backend.down = True
    rl.refund({"user": "u1"})  # nothing charged locally: the share stays whole
    assert rl.snapshot().mode == "local"
    assert admitted(rl, "u1", 3) == 2


def test_each_outage_starts_from_a_fresh_share(clock: bt.ManualClock) -> None:
    backend = Switchable()
    rl = limiter(backend, clock)
    for _ in range(2):
        backend.down = True
        clock.advance(1.0)
        assert admitted(rl, "u1", 3) == 2
        backend.down = False
        clock.advance(1.0)
        assert rl.try_acquire({"user": "u2"}).allowed  # ends the outage
        assert rl.snapshot().mode == "backend"


def test_waiting_while_down_waits_on_the_local_share(clock: bt.ManualClock) -> None:
    backend = Switchable()
    rl = limiter(backend, clock, scopes=[bt.Scope("user", 8, 8.0)])  # locally 2 per 8s
    backend.down = True
    assert admitted(rl, "u1", 3) == 2
    started = clock.monotonic()
    assert rl.acquire({"user": "u1"}, timeout=10.0)
    assert clock.monotonic() - started == pytest.approx(4.0)  # 8s / 2, not 8s / 8
    with pytest.raises(bt.RateLimitExceeded):
        rl.acquire({"user": "u1"}, timeout=1.0)


def test_per_id_and_shared_scopes_with_a_sliding_window(clock: bt.ManualClock) -> None:
    backend = Switchable()
    scopes = [
        bt.Scope("user", 12, HOUR, algorithm="sliding_window"),
        bt.Scope("global", 48, HOUR, burst=24),
    ]
    rl = limiter(backend, clock, share=1 / 3, scopes=scopes)
    backend.down = True
    # user: 4 each locally; global: a third of its burst of 24, 8.
    assert [admitted(rl, f"u{i}", 5) for i in range(3)] == [4, 4, 0]
    backend.down = False
    clock.advance(1.0)
    assert [admitted(rl, f"u{i}", 13) for i in range(3)] == [12, 12, 0]  # the whole limits


def test_with_leases_local_decisions_charge_only_their_cost(clock: bt.ManualClock) -> None:
    backend = Switchable()
    rl = limiter(backend, clock, lease=bt.Leasing(size=3, ttl=1.0))
    backend.down = True
    assert admitted(rl, "u1", 3) == 2  # a slice of 3 would not fit in the share of 2
    assert [admitted(rl, f"u{i}", 3) for i in range(2, 7)] == [2, 2, 2, 2, 0]


def test_a_memory_backend_takes_the_policy_and_never_needs_it(clock: bt.ManualClock) -> None:
    rl = limiter(bt.MemoryBackend(), clock)
    assert admitted(rl, "u1", 10) == 8
    assert rl.snapshot().mode == "backend"


async def test_the_asyncio_twins(clock: bt.ManualClock) -> None:
    backend = Switchable()
    rl = limiter(backend, clock, scopes=[bt.Scope("user", 8, 8.0)])
    backend.down = True
    assert [(await rl.try_acquire_async({"user": "u1"})).allowed for _ in range(3)] == [
        True,
        True,
        False,
    ]
    assert not (await rl.peek_async({"user": "u1"})).allowed
    await rl.refund_async({"user": "u1"})
    assert (await rl.peek_async({"user": "u1"})).allowed
    assert await rl.try_acquire_async({"user": "u1"})
    assert await rl.acquire_async({"user": "u1"}, timeout=5.0)  # waits 4s on the share
    backend.down = False
    clock.advance(1.0)
    assert (await rl.try_acquire_async({"user": "u1"})).allowed  # the backend: 8 per 8s
    assert rl.snapshot().mode == "backend"


# -- four processes, a real redis-server killed under them ---------------------------------------

WORKERS = 4
GLOBAL, PER_USER, USERS = 120, 40, 4
SPAWN = multiprocessing.get_context("spawn")


@pytest.fixture
def server(private_redis: RedisServer) -> RedisServer:
    return private_redis


def fleet_limiters(url: str) -> tuple[bt.RateLimiter, bt.RateLimiter, bt.RedisBackend]:
    """One limiter on a shared scope, one on a per-user scope; windows far longer than the
    test, so nothing refills and the allowance is exactly the limit."""
    backend = bt.RedisBackend(url, timeout=0.2)
    common: dict[str, Any] = {
        "backend": backend,
        "namespace": "fleet",
        "failure_policy": "local",
        "local_share": 1 / WORKERS,
        "backend_retry_interval": 0.1,
    }
    shared = bt.RateLimiter([bt.Scope("global", GLOBAL, 1e6)], name="shared", **common)
    per_user = bt.RateLimiter(
        [bt.Scope("user", PER_USER, 1e6, algorithm="sliding_window")], name="per_user", **common
    )
    return shared, per_user, backend


def fleet_worker(url: str, phase: Any, results: Any) -> None:
    """Phase 1 on Redis; phase 2 with Redis killed (as fast as it can, for a while); phase 3
    once it is back. Reports the admissions of each phase and the slowest decision."""
    try:
        shared, per_user, backend = fleet_limiters(url)
        users = [{"user": f"u{i}"} for i in range(USERS)]
        report: dict[str, Any] = {"slowest": 0.0}

        def both(n: int) -> tuple[int, list[int]]:
            a = b = 0
            by_user = [0] * USERS
            for i in range(n):
                started = time.monotonic()
                a += shared.try_acquire().allowed
                b = per_user.try_acquire(users[i % USERS]).allowed
                by_user[i % USERS] += b
                report["slowest"] = max(report["slowest"], time.monotonic() - started)
            return a, by_user

        report["before"] = both(20)  # 5 each on the shared scope, then 20 per user...
        phase.wait()  # ...the parent kills Redis
        phase.wait()
        deadline = time.monotonic() + 1.5
        admitted_shared, admitted_users = 0, [0] * USERS
        decisions = 0
        while time.monotonic() < deadline:
            a, by_user = both(USERS)
            admitted_shared += a
            admitted_users = [x + y for x, y in zip(admitted_users, by_user, strict=True)]
            decisions += USERS
        report["down"] = (admitted_shared, admitted_users, decisions)
        report["modes_down"] = (shared.snapshot().mode, per_user.snapshot().mode)
        phase.wait()  # the parent restarts Redis on the same port
        phase.wait()
        deadline = time.monotonic() + 10.0
        while shared.snapshot().mode != "backend" or per_user.snapshot().mode != "backend":
            assert time.monotonic() < deadline, "never went back to Redis"
            time.sleep(0.02)  # real-time: the backend is retried once per retry interval
            shared.try_acquire()  # (each admitted on Redis once back, counted below)
            per_user.try_acquire({"user": "after"})
        report["after"] = both(8)
        report["modes_after"] = (shared.snapshot().mode, per_user.snapshot().mode)
        backend.close()
        results.put(report)
    except BaseException as exc:
        results.put({"error": repr(exc)})
        raise


@pytest.mark.slow
def test_four_processes_share_the_limit_while_redis_is_down(server: RedisServer) -> None:
    phase = SPAWN.Barrier(WORKERS + 1)
    results = SPAWN.Queue()
    processes = [
        SPAWN.Process(target=fleet_worker, args=(server.url, phase, results))
        for _ in range(WORKERS)
    ]
    for p in processes:
        p.start()
    phase.wait(timeout=60)  # phase 1 done
    server.kill()
    phase.wait(timeout=60)
    phase.wait(timeout=60)  # phase 2 done
    server.start()  # the same port, empty (no persistence)
    phase.wait(timeout=60)
    reports = [results.get(timeout=60) for _ in range(WORKERS)]
    for p in processes:
        p.join(timeout=30)
    assert [r["error"] for r in reports if "error" in r] == []
    assert all(p.exitcode == 0 for p in processes)

    assert sum(r["before"][0] for r in reports) == 4 * 20  # Redis: 80 of 120
    down_shared = sum(r["down"][0] for r in reports)
    down_users = [sum(r["down"][1][u] for r in reports) for u in range(USERS)]
    slowest = max(r["slowest"] for r in reports)
    print(  # the figures (pytest -s)
        f"while down: shared scope {down_shared} of {GLOBAL} "
        f"({[r['down'][0] for r in reports]} by process), per user {down_users} of "
        f"{PER_USER} each, {sum(r['down'][2] for r in reports)} decisions; "
        f"slowest decision {slowest:.3f}s"
    )
    assert sum(r["down"][2] for r in reports) > 2 * GLOBAL  # they kept asking
    # Each process admits exactly its quarter: the fleet, exactly the limit of each scope.
    assert down_shared == GLOBAL
    assert down_users == [PER_USER] * USERS
    assert all(r["modes_down"] == ("local", "local") for r in reports)
    # Nothing waited for more than a socket timeout or two (0.2s each).
    assert slowest < 1.0
    assert all(r["modes_after"] == ("backend", "backend") for r in reports)
    # Back on Redis (empty since the restart), counting for the fleet again.
    shared, per_user, backend = fleet_limiters(server.url)
    try:
        used = GLOBAL - shared.peek(cost=1).remaining - 1
        after = sum(r["after"][0] for r in reports)
        assert after == 4 * 8 and used >= after  # (plus the probes that ended each outage)
        assert per_user.peek({"user": "u0"}).remaining == PER_USER - 4 * 2 - 1
    finally:
        backend.close()
