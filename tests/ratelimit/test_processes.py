"""Several processes, one limit: exact under contention, and kept across a restart.

Workers are fresh interpreters (``spawn``): nothing is shared with them but the SQLite file or
the Redis server, as between the workers of a real service.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import ratelimit_backends as rb
from test_sqlite import remove

pytestmark = pytest.mark.slow

WORKERS = 8
USERS = 4
HAMMER_SECONDS = 2.0
SPAWN = multiprocessing.get_context("spawn")


def target(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """``(target, prefix)``: the SQLite file, or the Redis URL and a prefix of this test's own."""
    if kind == "sqlite":
        return str(tmp_path / "limits.db"), ""
    return request.getfixturevalue("redis_url"), rb.unique_prefix(request.node.name)


def collect(results: Any, n: int, processes: list[Any]) -> list[Any]:
    out = [results.get(timeout=120) for _ in range(n)]
    for p in processes:
        p.join(timeout=60)
        assert p.exitcode == 0
    return out


def test_eight_processes_taking_slices_never_admit_past_the_limit(
    redis_url: str, request: pytest.FixtureRequest
) -> None:
    """Each process decides locally from slices of 7 (``lease=``): together they never admit
    more than the tightest allowance, and once each has given back what it held, Redis holds
    exactly what was admitted (no unit lost, none counted twice)."""
    prefix = rb.unique_prefix(request.node.name)
    start = SPAWN.Barrier(WORKERS)
    results = SPAWN.Queue()
    users = [f"u{i % USERS}" for i in range(WORKERS)]
    processes = [
        SPAWN.Process(
            target=rb.hammer,
            args=("redis", redis_url, prefix, u, start, HAMMER_SECONDS, results, 7),
        )
        for u in users
    ]
    for p in processes:
        p.start()
    reports = collect(results, WORKERS, processes)
    assert [error for *_, error in reports if error] == []
    admitted = sum(a for _, a, _, _ in reports)
    limits = {name: limit for name, limit, _ in rb.HAMMER_SCOPES}
    tightest = min(limits["user"] * USERS, limits["org"], limits["global"])
    assert sum(n for _, _, n, _ in reports) > 2 * tightest  # saturated
    assert admitted <= tightest
    backend = rb.make_backend("redis", redis_url, prefix)
    try:
        org = rb.hammer_limiter(backend).peek({"user": "nobody", "org": "o1"}).scopes[1]
        assert org.remaining == max(0, limits["org"] - admitted - 1)  # the peek's own unit
        if admitted < tightest:
            assert org.allowed
    finally:
        rb.close_backend(backend)


@pytest.mark.parametrize("mode", ["tasks", "threads"])
def test_eight_processes_of_concurrent_callers_admit_exactly_the_tightest_allowance(
    mode: str, redis_url: str, request: pytest.FixtureRequest
) -> None:
    """Each process's concurrent decisions go to Redis batched; across 8 processes the three
    scopes still admit exactly the tightest allowance, each user at most its own."""
    prefix = rb.unique_prefix(request.node.name)
    start = SPAWN.Barrier(WORKERS)
    results = SPAWN.Queue()
    users = [f"u{i}" for i in range(USERS)]  # every process has a caller for every user
    processes = [
        SPAWN.Process(
            target=rb.hammer_concurrently,
            args=(mode, redis_url, prefix, users, start, HAMMER_SECONDS, results),
        )
        for _ in range(WORKERS)
    ]
    for p in processes:
        p.start()
    reports = collect(results, WORKERS, processes)
    assert [error for *_, error in reports if error] == []
    limits = {name: limit for name, limit, _ in rb.HAMMER_SCOPES}
    tightest = min(limits["user"] * USERS, limits["org"], limits["global"])
    per_user = Counter[str]()
    for admitted, _, _ in reports:
        per_user.update(admitted)
    assert sum(n for _, n, _ in reports) > 2 * tightest  # saturated
    assert sum(per_user.values()) == tightest
    assert all(a <= limits["user"] for a in per_user.values())


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_eight_processes_admit_exactly_the_tightest_allowance(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    where, prefix = target(kind, request, tmp_path)
    start = SPAWN.Barrier(WORKERS)
    results = SPAWN.Queue()
    users = [f"u{i % USERS}" for i in range(WORKERS)]  # two processes per user
    processes = [
        SPAWN.Process(
            target=rb.hammer, args=(kind, where, prefix, u, start, HAMMER_SECONDS, results)
        )
        for u in users
    ]
    for p in processes:
        p.start()
    reports = collect(results, WORKERS, processes)
    assert [error for *_, error in reports if error] == []

    admitted = sum(a for _, a, _, _ in reports)
    attempts = sum(n for _, _, n, _ in reports)
    limits = {name: limit for name, limit, _ in rb.HAMMER_SCOPES}
    tightest = min(limits["user"] * USERS, limits["org"], limits["global"])
    assert attempts > 2 * tightest  # saturated: far more asked than could be admitted
    assert admitted == tightest  # never more, and not fewer
    per_user: dict[str, int] = {}
    for user, a, _, _ in reports:
        per_user[user] = per_user.get(user, 0) + a
    assert all(a <= limits["user"] for a in per_user.values())

    # Refusals consumed nothing: global holds exactly what was admitted.
    backend = rb.make_backend(kind, where, prefix)
    try:
        rl = rb.hammer_limiter(backend)
        d = rl.peek({"user": "nobody", "org": "o1"})
        assert (d.allowed, d.scope, d.remaining) == (False, "org", 0)
        # A refused decision reports the other scopes' room as it stands.
        assert d.scopes[2].remaining == limits["global"] - admitted
        rl.clear()
    finally:
        rb.close_backend(backend)


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_a_half_used_limit_is_still_half_used_after_a_restart(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    where, prefix = target(kind, request, tmp_path)
    results = SPAWN.Queue()

    first = SPAWN.Process(target=rb.spend, args=(kind, where, prefix, 5, results))
    first.start()
    ((admitted, remaining),) = collect(results, 1, [first])
    assert (admitted, remaining) == (5, 4)  # 10 per window; the peek counts its own 1

    second = SPAWN.Process(target=rb.spend, args=(kind, where, prefix, 8, results))
    second.start()
    ((admitted, remaining),) = collect(results, 1, [second])
    assert (admitted, remaining) == (5, 0)  # only the half left by the first process

    backend = rb.make_backend(kind, where, prefix)
    try:
        rb.restart_limiter(backend).clear()
    finally:
        rb.close_backend(backend)


@pytest.mark.parametrize("how", ["deleted", "deleted_with_wal", "replaced"])
def test_processes_on_a_deleted_file_converge_on_the_new_one(tmp_path: Path, how: str) -> None:
    """Three processes running on the file when it goes, and one started after: each that had
    the old file open reports it once, and together they admit exactly one limit.

    A file renamed over one in use cannot be opened by SQLite (``disk I/O error``) while other
    processes hold the old one's ``-shm`` file: a process started then waits here until the
    running ones have noticed (at their next call; the first to notice clears the way)."""
    path = tmp_path / "limits.db"
    go, results = SPAWN.Event(), SPAWN.Queue()

    def worker(before: int) -> Any:
        p = SPAWN.Process(target=rb.across_deletion, args=(str(path), before, 60, go, results))
        p.start()
        return p

    running = [worker(10) for _ in range(3)]
    assert [results.get(timeout=120) for _ in running] == [10, 10, 10]
    remove(path, how)
    if how == "replaced":
        go.set()
        reports = collect(results, 3, running)
        started_after = worker(0)
        assert results.get(timeout=120) == 0
        reports += collect(results, 1, [started_after])
    else:
        started_after = worker(0)
        assert results.get(timeout=120) == 0
        go.set()
        reports = collect(results, 4, [*running, started_after])
    assert [errors for _, _, errors in reports] == [[]] * 4
    assert sum(admitted for admitted, _, _ in reports) == 100  # the old file's 30 are lost
    assert sorted(replaced for _, replaced, _ in reports) == [0, 1, 1, 1]


KILL_PROCESSES = 6
KILL_SECONDS = float(os.environ.get("BUTTRESS_KILL_SECONDS", "20"))


def test_six_processes_killed_at_random_never_exceed_a_windows_limit(tmp_path: Path) -> None:
    """Six processes decide as fast as they can over one-second fixed windows, one of them
    killed with SIGKILL (and replaced) every fraction of a second, mid-transaction or not: no
    window ever admits more than its limit. Real processes, so real time; the assertion is
    exact, counted per window from every admission's own record."""
    path, log = str(tmp_path / "limits.db"), str(tmp_path / "admitted.log")
    rb.make_backend("sqlite", path).close()  # the file and its table, before the workers

    def worker() -> Any:
        p = SPAWN.Process(target=rb.admit_until_killed, args=(path, log), daemon=True)
        p.start()
        return p

    rng = random.Random(16)
    workers = [worker() for _ in range(KILL_PROCESSES)]
    kills = 0
    deadline = time.monotonic() + KILL_SECONDS
    try:
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.05, 0.5))  # real-time: the pace of the kills, not a wait
            i = rng.randrange(KILL_PROCESSES)
            os.kill(workers[i].pid, signal.SIGKILL)
            workers[i].join()
            kills += 1
            workers[i] = worker()
    finally:
        for p in workers:
            p.kill()
        for p in workers:
            p.join()

    with open(log, "rb") as f:
        per_window = Counter(int(line) for line in f.read().split())
    print(
        f"\n{KILL_SECONDS:g}s, {KILL_PROCESSES} processes, {kills} kills: {len(per_window)} "
        f"windows, {sum(per_window.values())} admitted, at most {max(per_window.values())} "
        f"in one window (limit {rb.KILL_LIMIT}); per window: {sorted(per_window.values())}"
    )
    over = {w: n for w, n in per_window.items() if n > rb.KILL_LIMIT}
    assert over == {}
    assert kills > 0 and max(per_window.values()) == rb.KILL_LIMIT  # saturated, and killed
