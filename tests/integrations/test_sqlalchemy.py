"""buttress.integrations.sqlalchemy against the real PostgreSQL: sync (psycopg) and asyncio
(asyncpg, psycopg) engines; connection errors count, SQL errors do not."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import buttress as bt
from buttress.exporters._metrics import gather
from buttress.integrations.sqlalchemy import EngineGuard, protect_engine
from servers import free_port

pytestmark = pytest.mark.postgres


def url(dsn: str, driver: str = "psycopg") -> str:
    return dsn.replace("postgresql://", f"postgresql+{driver}://", 1)


def closed_port_url(dsn: str, driver: str = "psycopg") -> str:
    """The server's address with a port nothing listens on: every connect is refused."""
    host = "127.0.0.1"
    return f"postgresql+{driver}://postgres@{host}:{free_port()}/postgres"


def breaker(clock: bt.ManualClock, name: str = "db") -> bt.CircuitBreaker:
    return bt.CircuitBreaker(
        name,
        failure_threshold=2,
        degradation_threshold=None,
        half_open_max_calls=1,
        half_open_success_ratio=1.0,
        reset_timeout_jitter=0.0,  # half-open exactly 30 s later
        clock=clock,
    )


@pytest.fixture
def engine(pg_dsn: str) -> Iterator[Engine]:
    eng = create_engine(url(pg_dsn), pool_size=2)
    yield eng
    eng.dispose()


@pytest.fixture
def dead_engine(pg_dsn: str) -> Iterator[Engine]:
    eng = create_engine(closed_port_url(pg_dsn))
    yield eng
    eng.dispose()


def refused_connect(eng: Engine) -> BaseException:
    with pytest.raises(Exception) as info, eng.connect():
        pass
    return info.value


def test_connect_errors_open_the_breaker_and_an_open_breaker_refuses_the_connect(
    dead_engine: Engine, clock: bt.ManualClock
) -> None:
    b = breaker(clock)
    connects: list[int] = []
    event.listen(dead_engine, "do_connect", lambda *a: connects.append(1), insert=True)
    protect_engine(dead_engine, breaker=b)
    assert isinstance(refused_connect(dead_engine), OperationalError)
    assert isinstance(refused_connect(dead_engine), OperationalError)
    assert b.state is bt.BreakerState.OPEN
    refusal = refused_connect(dead_engine)
    assert isinstance(refusal, bt.CircuitOpenError) and refusal.retry_after == 30.0
    snap = b.snapshot()
    assert (snap.total_failures, snap.total_rejected) == (2, 1)
    assert len(connects) == 3  # the refused connect reached our listener, not the server


def test_sql_errors_are_the_statements_not_the_databases(
    engine: Engine, clock: bt.ManualClock
) -> None:
    b = breaker(clock)
    protect_engine(engine, breaker=b)
    with engine.begin() as conn:
        conn.execute(text("create temporary table t (id int primary key)"))
        conn.execute(text("insert into t values (1)"))
        for _ in range(3):
            with pytest.raises(IntegrityError), conn.begin_nested():
                conn.execute(text("insert into t values (1)"))
    for _ in range(3):
        with pytest.raises(ProgrammingError), engine.connect() as conn:
            conn.execute(text("selec 1"))
    snap = b.snapshot()
    assert b.state is bt.BreakerState.CLOSED
    assert snap.total_failures == 0
    assert snap.total_successes == 5  # one connect, four checkouts


def test_an_operational_error_of_the_statements_own_is_no_failure(
    engine: Engine, clock: bt.ManualClock, pg_dsn: str
) -> None:
    """A lock timeout is an OperationalError (SQLSTATE 55P03), but the server answered."""
    b = breaker(clock)
    protect_engine(engine, breaker=b)
    with psycopg.connect(pg_dsn) as holder:
        holder.execute("select pg_advisory_xact_lock(18004)")
        for _ in range(3):
            with pytest.raises(OperationalError) as info, engine.connect() as conn:
                conn.execute(text("set lock_timeout = '10ms'"))
                conn.execute(text("select pg_advisory_xact_lock(18004)"))
            assert getattr(info.value.orig, "sqlstate", None) == "55P03"
    assert (b.snapshot().total_failures, b.state) == (0, bt.BreakerState.CLOSED)


def test_a_terminated_backend_counts_as_a_failure(
    engine: Engine, clock: bt.ManualClock, pg_dsn: str
) -> None:
    b = breaker(clock)
    guard = protect_engine(engine, breaker=b)
    with engine.connect() as conn:
        pid = conn.execute(text("select pg_backend_pid()")).scalar_one()
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            admin.execute("select pg_terminate_backend(%s)", (pid,))
        with pytest.raises(OperationalError) as info:
            conn.execute(text("select 1"))
    assert info.value.connection_invalidated
    assert b.snapshot().total_failures == 1
    assert guard.snapshot().connect_failures == 1  # in a row
    with engine.connect() as conn:  # the pool reconnects; a success ends the streak
        assert conn.execute(text("select 1")).scalar_one() == 1
    assert guard.snapshot().connect_failures == 0
    assert b.snapshot().total_failures == 1


def test_a_stale_pooled_connection_found_by_pre_ping_is_no_failure(
    pg_dsn: str, clock: bt.ManualClock
) -> None:
    eng = create_engine(url(pg_dsn), pool_pre_ping=True)
    b = breaker(clock)
    protect_engine(eng, breaker=b)
    try:
        with eng.connect() as conn:
            pid = conn.execute(text("select pg_backend_pid()")).scalar_one()
        with psycopg.connect(pg_dsn, autocommit=True) as admin:  # it dies idle in the pool
            admin.execute("select pg_terminate_backend(%s)", (pid,))
        with eng.connect() as conn:  # the ping fails, the pool reconnects: the caller sees none
            assert conn.execute(text("select pg_backend_pid()")).scalar_one() != pid
        snap = b.snapshot()
        assert (snap.total_failures, snap.total_successes) == (0, 4)  # 2 connects, 2 checkouts
    finally:
        eng.dispose()


def test_an_open_breaker_refuses_a_pooled_connection_and_recovers_through_a_probe(
    engine: Engine, dead_engine: Engine, clock: bt.ManualClock
) -> None:
    b = breaker(clock)
    protect_engine(engine, breaker=b)
    protect_engine(dead_engine, breaker=b)  # one database, two engines: one breaker
    with engine.connect() as conn:
        conn.execute(text("select 1"))
    assert engine.pool.checkedin() == 1  # type: ignore[attr-defined]
    refused_connect(dead_engine)
    refused_connect(dead_engine)
    assert isinstance(refused_connect(engine), bt.CircuitOpenError)  # the pooled one too
    clock.advance(30.0)
    with engine.connect() as conn:  # the half-open probe
        assert conn.execute(text("select 1")).scalar_one() == 1
    assert b.state is bt.BreakerState.CLOSED


def test_a_detached_connection_ends_its_call(
    engine: Engine, dead_engine: Engine, clock: bt.ManualClock
) -> None:
    """A half-open probe taken by a connection that leaves the pool (no checkin) still ends."""
    b = breaker(clock)
    protect_engine(engine, breaker=b)
    protect_engine(dead_engine, breaker=b)
    with engine.connect() as conn:  # one pooled connection, before the database "goes"
        conn.execute(text("select 1"))
    refused_connect(dead_engine)
    refused_connect(dead_engine)
    clock.advance(30.0)
    with engine.connect() as conn:  # the pooled connection's checkout is the single probe
        conn.detach()
        conn.execute(text("select 1"))
    assert b.state is bt.BreakerState.CLOSED


def test_a_retry_tries_the_connect_again_but_never_waits_out_an_open_breaker(
    dead_engine: Engine, clock: bt.ManualClock
) -> None:
    b = bt.CircuitBreaker("db", failure_threshold=5, degradation_threshold=None, clock=clock)
    retry = bt.Retry(attempts=3, clock=clock, seed=1)
    protect_engine(dead_engine, breaker=b, retry=retry)
    start = clock.monotonic()
    assert isinstance(refused_connect(dead_engine), OperationalError)
    assert b.snapshot().total_failures == 3
    assert clock.monotonic() > start  # it waited its backoff between the attempts
    # The second run: two more failures open the breaker, and its third attempt is refused;
    # the refusal ends the run at once (not retried after its retry_after of 30 s).
    waited = clock.monotonic()
    assert isinstance(refused_connect(dead_engine), bt.CircuitOpenError)
    snap = b.snapshot()
    assert (snap.total_failures, snap.total_rejected) == (5, 1)
    assert clock.monotonic() - waited < 30.0


def test_a_do_connect_listener_registered_before_still_sets_the_parameters(
    engine: Engine, clock: bt.ManualClock
) -> None:
    @event.listens_for(engine, "do_connect")
    def name_it(dialect: object, record: object, cargs: object, cparams: dict[str, str]) -> None:
        cparams["application_name"] = "orders"

    protect_engine(engine, breaker=breaker(clock))
    with engine.connect() as conn:
        assert conn.execute(text("show application_name")).scalar_one() == "orders"


def test_remove_takes_the_breaker_off(dead_engine: Engine, clock: bt.ManualClock) -> None:
    b = breaker(clock)
    guard = protect_engine(dead_engine, breaker=b)
    guard.remove()
    guard.remove()  # again: nothing
    for _ in range(3):
        assert isinstance(refused_connect(dead_engine), OperationalError)
    assert b.snapshot().total_failures == 0


def test_the_engines_pool_in_the_health_report_and_the_metrics(
    engine: Engine, clock: bt.ManualClock
) -> None:
    guard = protect_engine(engine, breaker=breaker(clock), name="orders-db")
    with bt.Infrastructure("app", background=False, clock=clock) as infra:
        infra.watch_pool("orders-db", guard)
        with engine.connect() as conn:
            conn.execute(text("select 1"))
            report = infra.health()
            pool = report.connection_pools["orders-db"]
            assert (pool.size, pool.in_use, pool.max_size) == (1, 1, 2)
            check = next(c for c in report.checks if c.name == "orders-db")
            assert (check.kind, check.status) == ("connection_pool", "pass")
            samples = dict(gather(infra, "pool")["pool.connections"])
            assert samples[("app", "orders-db", "used")] == 1.0
        assert guard.check().reason == "0/1 in use"


def test_a_pool_of_its_own_cannot_be_watched_under_its_name(engine: Engine) -> None:
    guard = protect_engine(engine, breaker=bt.CircuitBreaker("db"))
    config = {"connection_pools": {"db": {"max_size": 1}}}
    with bt.Infrastructure("app", config, background=False, pools={"db": object}) as infra:
        with pytest.raises(bt.ConfigError, match="own"):
            infra.watch_pool("db", guard)
        with pytest.raises(TypeError, match="snapshot"):
            infra.watch_pool("other", object())  # type: ignore[arg-type]


def test_bad_arguments_are_named(engine: Engine) -> None:
    with pytest.raises(TypeError, match="Engine or an AsyncEngine"):
        protect_engine("postgresql://", breaker=bt.CircuitBreaker("db"))
    with pytest.raises(TypeError, match="breaker"):
        protect_engine(engine, breaker="db")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="retry"):
        protect_engine(engine, breaker=bt.CircuitBreaker("db"), retry=3)  # type: ignore[arg-type]
    assert isinstance(protect_engine(engine, breaker=bt.CircuitBreaker("db")), EngineGuard)


# -- asyncio engines ---------------------------------------------------------------------------


@pytest.fixture(params=["asyncpg", "psycopg_async"])
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def async_engine(pg_dsn: str, driver: str) -> AsyncIterator[AsyncEngine]:
    eng = create_async_engine(url(pg_dsn, driver))
    yield eng
    await eng.dispose()


async def test_an_async_engine_opens_on_connect_errors_and_not_on_sql_errors(
    async_engine: AsyncEngine, pg_dsn: str, driver: str, clock: bt.ManualClock
) -> None:
    b = breaker(clock)
    protect_engine(async_engine, breaker=b)
    for _ in range(3):
        with pytest.raises(ProgrammingError):
            async with async_engine.connect() as conn:
                await conn.execute(text("selec 1"))
    assert b.snapshot().total_failures == 0
    dead = create_async_engine(closed_port_url(pg_dsn, driver))
    protect_engine(dead, breaker=b, retry=bt.Retry(attempts=2, clock=clock, seed=1))
    try:
        with pytest.raises((OperationalError, OSError)):
            async with dead.connect():
                pass
        assert b.state is bt.BreakerState.OPEN
        with pytest.raises(bt.CircuitOpenError):
            async with async_engine.connect():
                pass
    finally:
        await dead.dispose()


async def test_an_async_engines_retry_waits_on_the_event_loop(
    pg_dsn: str, driver: str, clock: bt.ManualClock
) -> None:
    dead = create_async_engine(closed_port_url(pg_dsn, driver))
    b = bt.CircuitBreaker("db", failure_threshold=5, degradation_threshold=None, clock=clock)
    # No clock of its own: it waits on the loop (real time, a few ms of backoff).
    retry = bt.Retry(attempts=2, backoff=bt.Backoff(initial=0.001, max=0.002), seed=1)
    protect_engine(dead, breaker=b, retry=retry)
    try:
        with pytest.raises((OperationalError, OSError)):
            async with dead.connect():
                pass
        assert b.snapshot().total_failures == 2
    finally:
        await dead.dispose()


async def test_an_async_engines_lost_connection_counts_as_a_failure(
    async_engine: AsyncEngine, pg_dsn: str, clock: bt.ManualClock
) -> None:
    b = breaker(clock)
    protect_engine(async_engine, breaker=b)
    async with async_engine.connect() as conn:
        pid = (await conn.execute(text("select pg_backend_pid()"))).scalar_one()
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            admin.execute("select pg_terminate_backend(%s)", (pid,))
        # asyncpg's adapter raises a plain DBAPIError here; the dialect sees a disconnect.
        with pytest.raises(DBAPIError) as info:
            await conn.execute(text("select 1"))
    assert info.value.connection_invalidated
    assert b.snapshot().total_failures == 1
    async with async_engine.connect() as conn:  # the pool connects afresh
        assert (await conn.execute(text("select 1"))).scalar_one() == 1
