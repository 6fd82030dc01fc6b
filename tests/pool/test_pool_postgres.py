"""Pools of real PostgreSQL connections (psycopg); pooled backends killed with
``pg_terminate_backend`` from a separate admin connection."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from _pool_support import asettle, settle

from buttress import (
    AsyncConnectionPool,
    AsyncScheduler,
    ConnectionPool,
    Lease,
    ManualClock,
    Scheduler,
)

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.postgres


@pytest.fixture
def admin(pg_dsn: str) -> Iterator[Any]:
    conn = psycopg.connect(pg_dsn, autocommit=True)
    yield conn
    conn.close()


@pytest.fixture
def app_name() -> str:
    return f"buttress-test-{uuid.uuid4().hex[:12]}"


def backends(admin: Any, app_name: str) -> set[int]:
    rows = admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (app_name,)
    ).fetchall()
    return {r[0] for r in rows}


def kill_all(admin: Any, app_name: str) -> set[int]:
    """Terminate every backend of ours and return once they are gone."""
    pids = backends(admin, app_name)
    for pid in pids:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    for _ in range(10_000):  # each round is a query: bounded, no sleeping
        if not backends(admin, app_name) & pids:
            return pids
    raise AssertionError(f"backends {pids} did not go away")


def reset(conn: Any) -> None:
    """Return-time check: a connection the server dropped is not reused."""
    if conn.closed or conn.broken:
        raise psycopg.OperationalError("connection lost")
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.rollback()


def ping(conn: Any) -> None:
    conn.execute("SELECT 1")


def make(
    pg_dsn: str,
    app_name: str,
    clock: ManualClock,
    gate: threading.Event | None = None,
    **settings: Any,
) -> ConnectionPool:
    """A pool of 3; while ``gate`` is cleared, new connects wait for it (replacements cannot
    overtake the borrowers a test lines up)."""

    def connect() -> Any:
        if gate is not None:
            assert gate.wait(30.0), "the test never opened the gate"
        return psycopg.connect(pg_dsn, autocommit=True, application_name=app_name)

    settings.setdefault("housekeeping_interval", 1e6)
    return ConnectionPool(
        create=connect,
        reset=reset,
        clock=clock,
        scheduler=Scheduler(clock=clock),
        min_size=3,
        max_size=3,
        **settings,
    )


def query_pid(pool: ConnectionPool) -> int:
    with pool.connection() as conn:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    assert isinstance(pid, int)
    return pid


def test_passive_with_invalidate_on_one_borrower_sees_the_disconnect(
    pg_dsn: str, admin: Any, app_name: str, clock: ManualClock
) -> None:
    """Documented: the borrower that meets the dead connection gets the error; its
    invalidate_on exception retires every older member, so the next borrowers do not."""
    with make(pg_dsn, app_name, clock, invalidate_on=(psycopg.OperationalError,)) as pool:
        killed = kill_all(admin, app_name)
        with pytest.raises(psycopg.OperationalError):
            query_pid(pool)
        settle(pool)
        pids = {query_pid(pool) for _ in range(6)}
        assert not pids & killed
        alive = backends(admin, app_name)
        assert pids <= alive
        assert len(alive) == 3
        assert not alive & killed
        s = pool.snapshot()
        assert s.invalidations == 1
        assert s.evictions == {"error": 1, "generation": 2}


def test_passive_without_invalidate_on_each_dead_member_fails_one_borrower(
    pg_dsn: str, admin: Any, app_name: str, clock: ManualClock
) -> None:
    """Documented: without invalidate_on, the check on return (reset) finds each broken
    connection after its borrower failed on it; each is then destroyed and replaced."""
    gate = threading.Event()
    gate.set()
    with make(pg_dsn, app_name, clock, gate) as pool:
        killed = kill_all(admin, app_name)
        gate.clear()  # a replacement made now would be lent before the next dead member
        for _ in range(3):
            with pytest.raises(psycopg.OperationalError):
                query_pid(pool)
        gate.set()
        settle(pool)
        assert not {query_pid(pool) for _ in range(6)} & killed
        assert pool.snapshot().evictions == {"reset_failed": 3}


def test_active_no_broken_connection_reaches_a_borrower_after_the_check(
    pg_dsn: str, admin: Any, app_name: str, clock: ManualClock
) -> None:
    with make(
        pg_dsn, app_name, clock, check=ping, health_check_strategy="active", check_interval=30.0
    ) as pool:
        killed = kill_all(admin, app_name)
        clock.advance(30.0)
        pool.run_maintenance()  # the next active check
        settle(pool)
        assert pool.snapshot().check_failures == 3
        for _ in range(6):
            assert query_pid(pool) not in killed


def test_mixed_checks_at_checkout_so_borrowers_never_see_the_disconnect(
    pg_dsn: str, admin: Any, app_name: str, clock: ManualClock
) -> None:
    with make(
        pg_dsn,
        app_name,
        clock,
        check=ping,
        health_check_strategy="mixed",
        check_interval=3600.0,
        check_idle_after=1.0,
    ) as pool:
        killed = kill_all(admin, app_name)
        clock.advance(1.0)  # idle long enough to be checked at checkout
        for _ in range(6):
            assert query_pid(pool) not in killed
        # Lend all three at once: a dead member still idle at the bottom is checked too.
        leases = [pool.checkout() for _ in range(3)]
        for lease in leases:
            assert lease.connection.execute("SELECT 1").fetchone() == (1,)
            assert lease.connection.info.backend_pid not in killed
            lease.release()
        assert pool.snapshot().check_failures == 3  # each dead one checked once, none lent


def test_a_dead_borrower_thread_gets_its_connection_closed_and_replaced(
    pg_dsn: str, admin: Any, app_name: str, clock: ManualClock
) -> None:
    with make(pg_dsn, app_name, clock) as pool:
        kept: list[Lease] = []

        def borrower() -> None:
            lease = pool.checkout()
            lease.connection.execute("SELECT 1")
            kept.append(lease)  # and the thread ends holding it

        t = threading.Thread(target=borrower)
        t.start()
        t.join()
        lost_pid = kept[0].connection.info.backend_pid
        pool.run_maintenance()
        settle(pool)
        assert kept[0].connection.closed
        for _ in range(10_000):  # the server notices the closed socket (bounded, no sleep)
            if lost_pid not in backends(admin, app_name):
                break
        else:
            raise AssertionError(f"backend {lost_pid} is still there")
        assert len(backends(admin, app_name)) == 3
        assert pool.snapshot().evictions == {"dead_borrower": 1}


async def test_async_pool_task_cancelled_mid_query_leaks_nothing(
    pg_dsn: str, admin: Any, app_name: str, clock: ManualClock
) -> None:
    made: list[Any] = []

    async def connect() -> Any:
        conn = await psycopg.AsyncConnection.connect(
            pg_dsn, autocommit=True, application_name=app_name
        )
        made.append(conn)
        return conn

    async def areset(conn: Any) -> None:
        if conn.closed or conn.broken:
            raise psycopg.OperationalError("connection lost")
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            await conn.rollback()

    pool = AsyncConnectionPool(
        create=connect,
        reset=areset,
        clock=clock,
        scheduler=AsyncScheduler(clock=clock),
        min_size=2,
        max_size=2,
        housekeeping_interval=1e6,
    )
    async with pool:
        started = asyncio.Event()

        async def slow_query() -> None:
            async with pool.connection() as conn:
                started.set()
                await conn.execute("SELECT pg_sleep(30)")  # real-time: the test cancels it

        task = asyncio.create_task(slow_query())
        await started.wait()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for _ in range(4):
            async with pool.connection() as conn:
                cur = await conn.execute("SELECT 1")
                assert (await cur.fetchone()) == (1,)
        await asettle(pool)  # the cancelled query's connection may be being replaced
        s = pool.snapshot()
        assert (s.in_use, s.waiting) == (0, 0)
        assert s.size == 2
    # Every connection the pool made is closed. (The server may keep the cancelled
    # backend running its query a while: it notices a closed client only when it next
    # talks to it.)
    assert made
    assert all(conn.closed for conn in made)
