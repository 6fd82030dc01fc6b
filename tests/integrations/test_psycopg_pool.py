"""buttress.integrations.psycopg_pool against the real PostgreSQL: a team's own psycopg_pool
pools with a breaker, a cap on concurrent use, a health check and metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

import buttress as bt
from buttress.exporters._metrics import gather
from buttress.integrations.psycopg_pool import AsyncProtectedPool, ProtectedPool, verdict
from servers import free_port, wait_until

pytestmark = pytest.mark.postgres

# real-time: psycopg_pool waits on the real clock; a wait that must time out takes this long.
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
def pool(pg_dsn: str) -> Iterator[ConnectionPool[psycopg.Connection[tuple[object, ...]]]]:
    with ConnectionPool(pg_dsn, min_size=1, max_size=2, name="orders", open=True) as p:
        p.wait()
        yield p


@pytest.fixture
def dead_pool() -> Iterator[ConnectionPool[psycopg.Connection[tuple[object, ...]]]]:
    dsn = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    p: ConnectionPool[psycopg.Connection[tuple[object, ...]]] = ConnectionPool(
        dsn, min_size=0, max_size=2, open=True, reconnect_timeout=60
    )
    yield p
    p.close()


def test_sql_errors_are_the_statements_not_the_databases(
    pool: ConnectionPool[psycopg.Connection[tuple[object, ...]]], clock: bt.ManualClock
) -> None:
    db = ProtectedPool(pool, breaker=breaker(clock))
    for statement in ("selec 1", "select 1/0", "select * from no_such_table"):
        with pytest.raises(psycopg.Error), db.connection() as conn:
            conn.execute(statement)
    with db.connection() as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    snap = db.breaker.snapshot()  # type: ignore[union-attr]
    assert (snap.total_failures, snap.total_successes) == (0, 4)


def test_an_operational_error_of_the_statements_own_is_no_failure(
    pool: ConnectionPool[psycopg.Connection[tuple[object, ...]]],
    clock: bt.ManualClock,
    pg_dsn: str,
) -> None:
    """A lock timeout is an OperationalError (SQLSTATE 55P03), but the server answered."""
    b = breaker(clock)
    db = ProtectedPool(pool, breaker=b)
    with psycopg.connect(pg_dsn) as holder:
        holder.execute("select pg_advisory_xact_lock(18005)")
        for _ in range(3):
            with pytest.raises(psycopg.errors.LockNotAvailable), db.connection() as conn:
                conn.execute("set lock_timeout = '10ms'")
                conn.execute("select pg_advisory_xact_lock(18005)")
    assert (b.snapshot().total_failures, b.state) == (0, bt.BreakerState.CLOSED)


def test_a_terminated_backend_counts_as_a_failure(
    pool: ConnectionPool[psycopg.Connection[tuple[object, ...]]],
    clock: bt.ManualClock,
    pg_dsn: str,
) -> None:
    b = breaker(clock)
    db = ProtectedPool(pool, breaker=b)
    with pytest.raises(psycopg.OperationalError), db.connection() as conn:
        pid = conn.execute("select pg_backend_pid()").fetchone()
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            admin.execute("select pg_terminate_backend(%s)", pid)
        conn.execute("select 1")
    assert b.snapshot().total_failures == 1
    assert db.snapshot().connect_failures == 1


def test_a_database_that_cannot_be_reached_opens_the_breaker(
    dead_pool: ConnectionPool[psycopg.Connection[tuple[object, ...]]], clock: bt.ManualClock
) -> None:
    b = breaker(clock)
    db = ProtectedPool(dead_pool, breaker=b)
    for _ in range(2):
        with pytest.raises(PoolTimeout), db.connection(timeout=SHORT):
            pass
    assert b.state is bt.BreakerState.OPEN
    with pytest.raises(bt.CircuitOpenError), db.connection(timeout=SHORT):
        pass
    snap = db.snapshot()
    assert (snap.timeouts, snap.connect_failures, snap.in_use) == (2, 2, 0)
    assert "PoolTimeout" in (snap.last_connect_error or "")
    check = db.check()
    assert (check.status, check.observed) == ("warn", 2), check
    assert check.reason.endswith("2 connect(s) failed in a row, last: PoolTimeout")


def test_a_pool_that_cannot_connect_fails_its_health_check_with_no_traffic() -> None:
    dsn = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    with ConnectionPool(dsn, min_size=1, max_size=2, open=True, name="orders") as pool:
        db = ProtectedPool(pool)
        wait_until(lambda: pool.get_stats().get("connections_errors", 0) > 0, what="a connect")
        check = db.check()
        assert (check.status, check.observed) == ("fail", 1), check
        assert check.reason.startswith("no connection (0 waiting)")


def test_a_busy_pool_says_nothing_about_the_database(
    pool: ConnectionPool[psycopg.Connection[tuple[object, ...]]], clock: bt.ManualClock
) -> None:
    b = breaker(clock)
    db = ProtectedPool(pool, breaker=b)
    with db.connection(), db.connection():  # max_size 2: both lent
        for _ in range(3):
            with pytest.raises(PoolTimeout), db.connection(timeout=SHORT):
                pass
    snap = b.snapshot()
    assert (snap.total_failures, b.state) == (0, bt.BreakerState.CLOSED)
    assert db.snapshot().timeouts == 3


def test_the_cap_refuses_at_once_beyond_max_concurrent(
    pool: ConnectionPool[psycopg.Connection[tuple[object, ...]]],
) -> None:
    db = ProtectedPool(pool, max_concurrent=1)
    assert ProtectedPool(pool).max_concurrent == 4  # twice max_size
    with db.connection():
        with pytest.raises(bt.LoadShedError) as info, db.connection():
            pass
        assert info.value.source == "orders"
    with db.connection() as conn:  # the slot is back
        conn.execute("select 1")
    assert db.snapshot().rejected == 1


def test_the_pool_in_the_health_report_and_the_metrics(
    pool: ConnectionPool[psycopg.Connection[tuple[object, ...]]], clock: bt.ManualClock
) -> None:
    db = ProtectedPool(pool, breaker=breaker(clock))
    with bt.Infrastructure("app", background=False, clock=clock) as infra:
        infra.watch_pool(db.name, db)
        with db.connection():
            report = infra.health()
            snap = report.connection_pools["orders"]
            assert (snap.in_use, snap.max_size, snap.min_size) == (1, 2, 1)
            samples = dict(gather(infra, "pool")["pool.connections"])
            assert samples[("app", "orders", "used")] == 1.0
        check = next(c for c in infra.health().checks if c.name == "orders")
        assert (check.status, check.reason) == ("pass", "0/1 in use")


def test_the_verdicts() -> None:
    room, full = False, True
    assert verdict(None, full) == "success"
    assert verdict(PoolTimeout("t"), room) == "failure"  # could connect, did not
    assert verdict(PoolTimeout("t"), full) == "neutral"  # merely busy
    assert verdict(psycopg.errors.AdminShutdown(), full) == "failure"
    assert verdict(psycopg.errors.TooManyConnections(), full) == "failure"
    assert verdict(psycopg.OperationalError("connection lost"), full) == "failure"
    assert verdict(psycopg.errors.SerializationFailure(), full) == "success"
    assert verdict(psycopg.errors.UniqueViolation(), full) == "success"
    assert verdict(ValueError(), full) == "neutral"


def test_bad_arguments_are_named(
    pool: ConnectionPool[psycopg.Connection[tuple[object, ...]]],
) -> None:
    with pytest.raises(TypeError, match=r"psycopg_pool\.ConnectionPool"):
        ProtectedPool("postgresql://")  # type: ignore[type-var]
    with pytest.raises(TypeError, match="breaker"):
        ProtectedPool(pool, breaker="db")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_concurrent"):
        ProtectedPool(pool, max_concurrent=0)


# -- AsyncConnectionPool -----------------------------------------------------------------------


@pytest.fixture
async def apool(
    pg_dsn: str,
) -> AsyncIterator[AsyncConnectionPool[psycopg.AsyncConnection[tuple[object, ...]]]]:
    async with AsyncConnectionPool(pg_dsn, min_size=1, max_size=2, name="a", open=False) as p:
        await p.wait()
        yield p


async def test_an_async_pool_counts_connection_errors_and_not_sql_errors(
    apool: AsyncConnectionPool[psycopg.AsyncConnection[tuple[object, ...]]],
    clock: bt.ManualClock,
    pg_dsn: str,
) -> None:
    b = breaker(clock)
    db = AsyncProtectedPool(apool, breaker=b)
    with pytest.raises(psycopg.errors.SyntaxError):
        async with db.connection() as conn:
            await conn.execute("selec 1")
    assert b.snapshot().total_failures == 0
    for _ in range(2):
        with pytest.raises(psycopg.OperationalError):
            async with db.connection() as conn:
                pid = await (await conn.execute("select pg_backend_pid()")).fetchone()
                async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as a:
                    await a.execute("select pg_terminate_backend(%s)", pid)
                await conn.execute("select 1")
    assert b.state is bt.BreakerState.OPEN
    with pytest.raises(bt.CircuitOpenError):
        async with db.connection():
            pass
    assert db.snapshot().connect_failures == 2
