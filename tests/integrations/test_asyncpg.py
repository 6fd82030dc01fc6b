"""buttress.integrations.asyncpg against the real PostgreSQL: a team's own asyncpg pool with a
breaker, a cap on concurrent use, a health check and metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

import buttress as bt
from buttress.exporters._metrics import gather
from buttress.integrations.asyncpg import ProtectedPool, verdict
from servers import free_port

pytestmark = pytest.mark.postgres

# real-time: asyncpg waits on the loop's clock; a wait that must time out takes this long.
SHORT = 0.05


def breaker(clock: bt.ManualClock) -> bt.CircuitBreaker:
    return bt.CircuitBreaker(
        "db",
        failure_threshold=2,
        degradation_threshold=None,
        half_open_max_calls=1,
        half_open_success_ratio=1.0,
        clock=clock,
    )


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[Any]:
    p = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2)
    yield p
    await p.close()


@pytest.fixture
async def dead_pool() -> AsyncIterator[Any]:
    dsn = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    p = await asyncpg.create_pool(dsn, min_size=0, max_size=2)
    yield p
    await p.close()


async def test_sql_errors_are_the_statements_not_the_databases(
    pool: Any, clock: bt.ManualClock
) -> None:
    b = breaker(clock)
    db = ProtectedPool(pool, breaker=b)
    for statement in ("selec 1", "select 1/0", "select * from no_such_table"):
        with pytest.raises(asyncpg.PostgresError):
            async with db.acquire() as conn:
                await conn.execute(statement)
    async with db.acquire() as conn:
        assert await conn.fetchval("select 1") == 1
    snap = b.snapshot()
    assert (snap.total_failures, snap.total_successes) == (0, 4)


async def test_a_terminated_backend_counts_as_a_failure(
    pool: Any, clock: bt.ManualClock, pg_dsn: str
) -> None:
    b = breaker(clock)
    db = ProtectedPool(pool, breaker=b)
    for n in (1, 2):
        # What asyncpg raises varies with the moment it notices; each is a failure.
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, Exception)):
            async with db.acquire() as conn:
                pid = await conn.fetchval("select pg_backend_pid()")
                admin = await asyncpg.connect(pg_dsn)
                try:
                    await admin.execute("select pg_terminate_backend($1)", pid)
                finally:
                    await admin.close()
                await conn.fetchval("select 1")
        assert b.snapshot().total_failures == n
    assert b.state is bt.BreakerState.OPEN
    with pytest.raises(bt.CircuitOpenError):
        async with db.acquire():
            pass
    assert db.snapshot().connect_failures == 2


async def test_a_database_that_cannot_be_reached_opens_the_breaker(
    dead_pool: Any, clock: bt.ManualClock
) -> None:
    b = breaker(clock)
    db = ProtectedPool(dead_pool, breaker=b, name="orders")
    for _ in range(2):
        with pytest.raises(OSError):
            async with db.acquire():
                pass
    assert b.state is bt.BreakerState.OPEN
    with pytest.raises(bt.CircuitOpenError):
        async with db.acquire():
            pass
    check = db.check()
    assert (check.name, check.status, check.observed) == ("orders", "warn", 2)


async def test_a_busy_pool_says_nothing_about_the_database(
    pool: Any, clock: bt.ManualClock
) -> None:
    b = breaker(clock)
    db = ProtectedPool(pool, breaker=b)
    async with db.acquire(), db.acquire():  # max_size 2: both lent
        for _ in range(3):
            with pytest.raises(TimeoutError):
                async with db.acquire(timeout=SHORT):
                    pass
    assert (b.snapshot().total_failures, b.state) == (0, bt.BreakerState.CLOSED)
    assert db.snapshot().timeouts == 3


async def test_the_cap_refuses_at_once_and_counts_who_waits(pool: Any) -> None:
    db = ProtectedPool(pool, max_concurrent=3, name="orders")
    assert ProtectedPool(pool).max_concurrent == 4  # twice max_size
    async with db.acquire(), db.acquire():
        waiter = asyncio.create_task(_hold(db))
        await asyncio.sleep(SHORT)  # real-time: let the third caller queue in asyncpg
        snap = db.snapshot()
        assert (snap.in_use, snap.waiting) == (2, 1)
        with pytest.raises(bt.LoadShedError) as info:
            async with db.acquire():
                pass
        assert info.value.source == "orders"
    await waiter
    assert db.snapshot().rejected == 1


async def _hold(db: ProtectedPool) -> None:
    async with db.acquire() as conn:
        await conn.fetchval("select 1")


async def test_the_pool_in_the_health_report_and_the_metrics(
    pool: Any, clock: bt.ManualClock
) -> None:
    db = ProtectedPool(pool, breaker=breaker(clock), name="orders")
    async with bt.Infrastructure("app", background=False, clock=clock) as infra:
        infra.watch_pool("orders", db)
        async with db.acquire():
            snap = infra.health().connection_pools["orders"]
            assert (snap.size, snap.in_use, snap.max_size, snap.min_size) == (1, 1, 2, 1)
            samples = dict(gather(infra, "pool")["pool.connections"])
            assert samples[("app", "orders", "used")] == 1.0
        check = next(c for c in infra.health().checks if c.name == "orders")
        assert (check.status, check.reason) == ("pass", "0/1 in use")


def test_the_verdicts() -> None:
    assert verdict(None, False, False) == "success"
    assert verdict(TimeoutError(), False, False) == "failure"  # room to connect, did not
    assert verdict(TimeoutError(), False, True) == "neutral"  # merely busy
    assert verdict(TimeoutError(), True, True) == "failure"  # a statement got no answer
    assert verdict(ConnectionRefusedError(), False, False) == "failure"
    assert verdict(asyncpg.exceptions.AdminShutdownError(), True, False) == "failure"
    assert verdict(asyncpg.exceptions.ConnectionDoesNotExistError(), True, False) == "failure"
    assert verdict(asyncpg.exceptions.TooManyConnectionsError(), False, False) == "failure"
    assert verdict(asyncpg.exceptions.UniqueViolationError(), True, False) == "success"
    assert verdict(ValueError(), True, False) == "neutral"
    # Anything at all, once the connection was closed under the caller:
    assert verdict(asyncpg.InterfaceError("released back to the pool"), True, False, True) == (
        "failure"
    )


async def test_bad_arguments_are_named(pool: Any) -> None:
    with pytest.raises(TypeError, match=r"asyncpg\.Pool"):
        ProtectedPool("postgresql://")
    with pytest.raises(TypeError, match="max_concurrent"):
        ProtectedPool(pool, max_concurrent=1.5)  # type: ignore[arg-type]
