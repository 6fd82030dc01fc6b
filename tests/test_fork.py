"""A forked child (gunicorn --preload, Celery prefork) never uses its parent's connections,
clients, locks or scheduler threads; and the parent keeps its own.

Each test forks for real (``os.fork``): the child does its part, reports through a pipe as
JSON, and leaves with ``os._exit`` (never through pytest's teardown).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import select
import signal
import threading
import traceback
import weakref
from collections.abc import Callable
from typing import Any, ClassVar

import pytest

import buttress as bt
from buttress import MemoryReading
from buttress._fork import fork_safe_lock
from buttress.testing import isolated_infrastructure

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")

LIMIT = 20


def in_child(work: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Run ``work()`` in a forked child; what it returns (JSON), or its error raised here."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave, whatever happens
        try:
            os.close(read_fd)
            try:
                report = {"ok": work()}
            except BaseException as exc:
                report = {"error": "".join(traceback.format_exception(exc))}
            with os.fdopen(write_fd, "w") as out:
                json.dump(report, out)
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        ready, _, _ = select.select([pipe], [], [], timeout)
        data = pipe.read() if ready else ""
    if not data:
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    report = json.loads(data) if data else {"error": f"the child sent nothing in {timeout}s"}
    if "error" in report:
        pytest.fail(f"in the forked child:\n{report['error']}")
    return report["ok"]


def backend_pid(conn: Any) -> int:
    return int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])


def admitted(infra: bt.Infrastructure, n: int) -> int:
    ok = 0
    for _ in range(n):
        try:
            infra.call("api", lambda: None, context={"user_id": "shared"})
        except bt.RateLimitExceeded:
            continue
        ok += 1
    return ok


def fork_config(redis_url: str) -> dict[str, Any]:
    return {
        "rate_limiting": {
            "backend": redis_url,
            "limiters": {"api": {"scopes": [{"name": "user", "limit": LIMIT, "window": 600.0}]}},
        },
        "connection_pools": {"db": {"min_size": 1, "max_size": 2, "checkout_timeout": 10.0}},
        "memory_manager": {"check_interval": 0.05},
    }


class CountingProbe:
    """A memory probe that counts its calls (per process: a child counts its own)."""

    def __init__(self) -> None:
        self.calls = 0
        self.called = threading.Event()

    def __call__(self) -> MemoryReading:
        self.calls += 1
        self.called.set()
        return MemoryReading(source="process", limit=1000, used=100, rss=100)


def test_a_forked_child_has_its_own_connection_scheduler_and_exact_limits(
    pg_dsn: str, redis_url: str
) -> None:
    psycopg = pytest.importorskip("psycopg")
    probe = CountingProbe()
    with isolated_infrastructure(
        fork_config(redis_url),
        pools={"db": lambda: psycopg.connect(pg_dsn, autocommit=True)},
        memory_probe=probe,
    ) as infra:
        parent_backend = infra.call("db", backend_pid)
        before = admitted(infra, 5)
        assert before == 5
        assert probe.called.wait(10.0)  # the scheduler runs in the parent
        parent_thread = infra.scheduler._thread
        assert parent_thread is not None

        def child() -> dict[str, Any]:
            thread = infra.scheduler._thread
            probe.called.clear()
            sampling = probe.called.wait(5.0)  # the memory job runs again, on a new thread
            ran = threading.Event()
            infra.scheduler.call_later(0.0, ran.set)
            return {
                "backend": infra.call("db", backend_pid),
                "pool_size": infra.pools["db"].snapshot().size,
                "new_thread": thread is not None and thread is not parent_thread,
                "thread_alive": thread is not None and thread.is_alive(),
                "sampling": sampling,
                "runs_jobs": ran.wait(5.0),
                "admitted": admitted(infra, LIMIT),
            }

        # Parent and child take from the one Redis limit at the same time.
        during: list[int] = []
        racer = threading.Thread(target=lambda: during.append(admitted(infra, LIMIT)))
        got: dict[str, Any] = {}
        racer.start()
        try:
            got = in_child(child)
        finally:
            racer.join()
        assert got["backend"] != parent_backend, "the child used the parent's connection"
        assert got["pool_size"] == 1
        assert got["new_thread"] and got["thread_alive"] and got["runs_jobs"], got
        assert got["sampling"], "no memory sample in the child"
        assert before + during[0] + got["admitted"] == LIMIT, (before, during, got)
        assert admitted(infra, 3) == 0
        assert infra.call("db", backend_pid) == parent_backend  # the parent's, still alive


def test_the_parent_keeps_its_connections_when_a_child_closes_everything(pg_dsn: str) -> None:
    # A worker that closes its infrastructure at shutdown (as a gunicorn worker_exit hook
    # would) closes its own connections only.
    psycopg = pytest.importorskip("psycopg")
    cfg = {"connection_pools": {"db": {"min_size": 2, "max_size": 2}}}
    with isolated_infrastructure(
        cfg, pools={"db": lambda: psycopg.connect(pg_dsn, autocommit=True)}
    ) as infra:
        pool = infra.pools["db"]
        with pool.connection() as a, pool.connection() as b:
            parents = {backend_pid(a), backend_pid(b)}

        def child() -> list[int]:
            with pool.connection() as conn:
                mine = backend_pid(conn)
            infra.close()
            return [mine]

        [mine] = in_child(child)
        assert mine not in parents
        with pool.connection() as a, pool.connection() as b:
            assert {backend_pid(a), backend_pid(b)} == parents  # the same ones, still alive
        assert pool.snapshot().connect_errors == 0


def test_a_lock_held_by_another_thread_at_the_fork_is_free_in_the_child() -> None:
    lock = fork_safe_lock()
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with lock:
            held.set()
            release.wait(30.0)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(10.0)
        assert in_child(lambda: lock.acquire(timeout=2.0)) is True  # real-time: 2 s at worst
    finally:
        release.set()
        thread.join()


def test_a_scheduler_busy_with_a_job_at_the_fork_runs_jobs_in_the_child() -> None:
    # The parent's thread is inside a job (holding the scheduler's run lock) at the fork.
    sched = bt.Scheduler(name="forked")
    inside, release = threading.Event(), threading.Event()

    def long_job() -> None:
        inside.set()
        release.wait(30.0)

    sched.call_later(0.0, long_job)
    try:
        assert inside.wait(10.0)

        def child() -> bool:
            ran = threading.Event()
            sched.call_later(0.0, ran.set)
            return ran.wait(5.0)  # real-time: 5 s at worst

        assert in_child(child) is True
    finally:
        release.set()
        sched.close()


def test_an_asyncio_pool_connects_again_on_the_childs_loop() -> None:
    made_in: list[int] = []

    def create() -> object:
        made_in.append(os.getpid())
        return object()

    pool = bt.AsyncConnectionPool(create=create, min_size=1, max_size=2, close=lambda r: None)

    async def open_it() -> None:
        await pool.open(wait=True)

    asyncio.run(open_it())  # a pool opened before the fork, its loop gone
    assert pool.snapshot().size == 1

    def child() -> dict[str, Any]:
        async def use() -> dict[str, Any]:
            async with pool.connection():
                pass
            return {"size": pool.snapshot().size, "made_in": made_in}

        return asyncio.run(use())

    got = in_child(child)
    assert got["size"] == 1  # the parent's member dropped, one of the child's own
    assert got["made_in"][0] == os.getpid()
    assert got["made_in"][1:] and os.getpid() not in got["made_in"][1:]
    assert pool.snapshot().size == 1  # the parent's pool is untouched
    pool._scheduler.close()


class Finalized:
    """A resource that notes (in this process) when it is garbage-collected unclosed."""

    collected: ClassVar[list[int]] = []

    def __init__(self, number: int) -> None:
        self.number = number
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def __del__(self) -> None:
        if not self.closed:
            Finalized.collected.append(self.number)


def test_the_parents_members_are_neither_closed_nor_collected_in_the_child() -> None:
    # Some drivers say goodbye to the server when an open connection is collected, on the
    # socket the parent still uses: the child keeps the parent's members, untouched.
    numbers = iter(range(1, 100))
    with bt.ConnectionPool(create=lambda: Finalized(next(numbers)), min_size=2, max_size=2) as pool:
        parents = [weakref.ref(m.resource) for m in pool._state.members.values()]

        def child() -> dict[str, Any]:
            with pool.connection() as conn:
                mine = conn.number
            gc.collect()
            return {
                "mine": mine,
                "closed": [r.number for ref in parents if (r := ref()) is not None and r.closed],
                "collected": Finalized.collected,
            }

        got = in_child(child)
    assert got["mine"] > 2
    assert got["closed"] == [] and got["collected"] == []


def test_sibling_workers_draw_their_own_breaker_jitter() -> None:
    """Two children forked from one parent must not probe a recovering upstream in lockstep."""
    clock = bt.ManualClock()
    breaker = bt.CircuitBreaker(
        "jittered",
        failure_threshold=1,
        degradation_threshold=None,
        minimum_calls=1,
        half_open_max_calls=1,
        reset_timeout=10.0,
        reset_timeout_jitter=0.5,
        clock=clock,
        seed=7,
    )

    def waits() -> list[float]:
        drawn = []
        for _ in range(8):  # fail (it opens), read the jittered wait, let it pass, again
            with pytest.raises(ZeroDivisionError):
                breaker.call(lambda: 1 / 0)
            with pytest.raises(bt.CircuitOpenError) as info:
                breaker.call(lambda: None)
            drawn.append(info.value.retry_after)
            clock.advance(20.0)
        return drawn

    first, second = in_child(waits), in_child(waits)
    assert len(set(first)) > 1 and first != second
