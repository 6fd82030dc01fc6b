"""AsyncConnectionPool behaviour, written once: ``test_pool_sync.py`` is generated from
``test_pool_async.py``.

Background work runs on a real scheduler; time is a ManualClock, so every time limit is
reached by advancing the clock and calling ``run_maintenance()``, and background connects and
closes are awaited through a barrier job (``asettle``), never by sleeping.
"""

from __future__ import annotations

# ASYNC
import asyncio
import gc
import threading
import time
from typing import Any

import pytest
from _pool_support import Factory, Resource, asettle, unique_pool_name

from buttress import (
    AsyncConnectionPool,
    AsyncScheduler,
    ConfigError,
    ManualClock,
    PoolClosedError,
    PoolTimeoutError,
)


def make(factory: Factory, clock: ManualClock, **settings: Any) -> AsyncConnectionPool:
    # Housekeeping only when the test says so: it calls run_maintenance() itself.
    settings.setdefault("housekeeping_interval", 1e6)
    settings.setdefault("max_lifetime", None)
    settings.setdefault("idle_timeout", None)
    settings.setdefault("name", unique_pool_name())
    return AsyncConnectionPool(
        create=factory, clock=clock, scheduler=AsyncScheduler(clock=clock), **settings
    )


@pytest.fixture
def factory() -> Factory:
    return Factory()


async def numbers_in_order(pool: AsyncConnectionPool, n: int) -> list[int]:
    """Check out and return one member n times; the numbers handed out."""
    got = []
    for _ in range(n):
        async with pool.connection() as conn:
            got.append(conn.number)
    return got


async def raise_inside(pool: AsyncConnectionPool, exc: BaseException) -> None:
    async with pool.connection():
        raise exc


async def test_connection_checks_out_and_returns(factory: Factory, clock: ManualClock) -> None:
    async with make(factory, clock, min_size=2, max_size=3) as pool:
        assert [r.number for r in factory.made] == [1, 2]
        async with pool.connection() as conn:
            assert isinstance(conn, Resource)
            s = pool.snapshot()
            assert (s.size, s.idle, s.in_use) == (2, 1, 1)
        s = pool.snapshot()
        assert (s.size, s.idle, s.in_use, s.checkouts) == (2, 2, 0, 1)
    assert all(r.closed for r in factory.made)
    assert pool.closed


async def test_new_members_connect_in_the_background(factory: Factory, clock: ManualClock) -> None:
    async with make(factory, clock, min_size=0, max_size=2) as pool:
        assert factory.made == []
        async with pool.connection() as conn:
            assert conn.number == 1
        async with pool.connection() as a, pool.connection() as b:
            assert {a.number, b.number} == {1, 2}
        assert pool.snapshot().connects == 2


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        # Members 1, 2, 3 made in order. Hold one; check out and return three times; return
        # the held one; then hold three at once. The numbers handed out, in order:
        ("lifo", [3, 2, 2, 2, 3, 2, 1]),  # the most recently returned first
        ("fifo", [1, 2, 3, 2, 3, 2, 1]),  # the longest idle first
        ("round_robin", [1, 2, 3, 2, 3, 1, 2]),  # the next after the last one, in creation order
        ("least_used", [1, 2, 3, 2, 1, 3, 2]),  # the fewest checkouts, then the oldest
    ],
)
async def test_strategies_hand_out_in_their_documented_order(
    factory: Factory, clock: ManualClock, strategy: str, expected: list[int]
) -> None:
    async with make(factory, clock, min_size=3, max_size=3, strategy=strategy) as pool:
        held = await pool.checkout()
        got = [held.connection.number]
        got += await numbers_in_order(pool, 3)
        await held.release()
        leases = [await pool.checkout() for _ in range(3)]
        got += [lease.connection.number for lease in leases]
        for lease in leases:
            await lease.release()
        assert got == expected


async def test_overflow_members_retire_after_overflow_ttl(
    factory: Factory, clock: ManualClock, event_log: Any
) -> None:
    async with make(
        factory, clock, min_size=2, max_size=2, max_overflow=1, overflow_ttl=30.0
    ) as pool:
        a, b = await pool.checkout(), await pool.checkout()
        async with pool.connection() as c:  # no idle member: an overflow member is made
            assert c.number == 3
            assert pool.snapshot().overflow_in_use == 1
        await a.release()
        await b.release()
        assert event_log.named("buttress", "pool", "overflow", pool=pool.name)
        assert pool.snapshot().overflow == 1
        clock.advance(29.0)
        await pool.run_maintenance()
        assert pool.snapshot().size == 3
        clock.advance(2.0)
        await pool.run_maintenance()
        await asettle(pool)
        s = pool.snapshot()
        assert (s.size, s.overflow, s.evictions) == (2, 0, {"overflow_ttl": 1})
        assert len(factory.open) == 2
        [(_, md)] = event_log.named("buttress", "pool", "expire", pool=pool.name)
        assert md["reason"] == "overflow_ttl"


async def test_no_member_lives_past_max_lifetime(factory: Factory, clock: ManualClock) -> None:
    async with make(factory, clock, min_size=2, max_size=2, max_lifetime=100.0) as pool:
        held = await pool.checkout()
        clock.advance(100.0)
        # The idle one is past its lifetime: never handed out, retired and replaced.
        async with pool.connection() as conn:
            assert conn.number == 3
        # The one in use is retired when it comes back.
        await held.release()
        await pool.run_maintenance()
        await asettle(pool)
        assert [r.number for r in factory.open] == [3, 4]
        assert pool.snapshot().evictions == {"max_lifetime": 2}
        # Jitter only shortens lifetimes: nothing made at t=100 outlives t=200.
        clock.advance(100.0)
        await pool.run_maintenance()
        await asettle(pool)
        assert all(r.number > 4 for r in factory.open)


async def test_maintenance_books_itself_for_the_next_expiry(
    factory: Factory, clock: ManualClock
) -> None:
    async with make(factory, clock, min_size=1, max_lifetime=50.0, lifetime_jitter=0.0) as pool:
        await pool.run_maintenance()
        booked = pool._next_maintenance
        assert booked is not None
        assert booked.deadline == pytest.approx(50.0)


async def test_idle_timeout_never_goes_below_min_size(factory: Factory, clock: ManualClock) -> None:
    async with make(factory, clock, min_size=1, max_size=3, idle_timeout=60.0) as pool:
        leases = [await pool.checkout() for _ in range(3)]
        for lease in leases:
            await lease.release()
        assert pool.snapshot().size == 3
        clock.advance(61.0)
        await pool.run_maintenance()
        await asettle(pool)
        s = pool.snapshot()
        assert (s.size, s.evictions) == (1, {"idle_timeout": 2})


async def test_checkout_timeout_raises_pool_timeout_error(
    factory: Factory, clock: ManualClock, event_log: Any
) -> None:
    async with make(factory, clock, min_size=1, max_size=1) as pool:
        held = await pool.checkout()
        with pytest.raises(PoolTimeoutError) as info:
            await pool.checkout(timeout=0)
        await held.release()
        assert info.value.pool == pool.name
        s = pool.snapshot()
        assert (s.timeouts, s.waiting, s.idle) == (1, 0, 1)
        [(_, md)] = event_log.named("buttress", "pool", "timeout", pool=pool.name)
        assert md["reason"] == "timeout"


@pytest.mark.parametrize("timeout", ["5", True, float("nan"), -1.0])
async def test_a_bad_timeout_is_a_config_error_naming_it(
    factory: Factory, clock: ManualClock, timeout: Any
) -> None:
    async with make(factory, clock, max_size=1) as pool:
        with pytest.raises(ConfigError) as info:
            pool.connection(timeout=timeout)
        assert info.value.path == "timeout"
        with pytest.raises(ConfigError, match=r"^timeout: must be a number >= 0 or None"):
            await pool.checkout(timeout=timeout)
        s = pool.snapshot()
        assert (s.waiting, s.checkouts) == (0, 0)


@pytest.mark.parametrize(
    ("settings", "timeout"),
    [({}, float("inf")), ({}, 1e10), ({"checkout_timeout": 1e10}, None)],
)
async def test_a_timeout_longer_than_a_thread_can_wait_waits_for_ever(
    factory: Factory, clock: ManualClock, settings: dict[str, Any], timeout: float | None
) -> None:
    async with make(factory, clock, max_size=1, **settings) as pool:
        lease = pool.connection() if timeout is None else pool.connection(timeout=timeout)
        async with lease as conn:  # waits for the background connect
            assert conn.number == 1
        assert pool.snapshot().timeouts == 0


async def test_max_waiting_refuses_at_once(factory: Factory, clock: ManualClock) -> None:
    async with make(factory, clock, min_size=1, max_size=1, max_waiting=0) as pool:
        held = await pool.checkout()
        with pytest.raises(PoolTimeoutError, match="max_waiting=0"):
            await pool.checkout()
        await held.release()
        assert pool.snapshot().rejected == 1


async def test_max_waiting_zero_still_grows_the_pool(factory: Factory, clock: ManualClock) -> None:
    # Never waiting must not mean never growing: a refused checkout starts a connect.
    async with make(factory, clock, max_size=2, max_waiting=0) as pool:
        with pytest.raises(PoolTimeoutError, match="max_waiting=0"):
            await pool.checkout()
        await asettle(pool)
        s = pool.snapshot()
        assert (s.size, s.idle, s.rejected, s.connects) == (1, 1, 1, 1)
        async with pool.connection() as conn:
            assert conn.number == 1
            with pytest.raises(PoolTimeoutError):  # member 1 is lent: refused, and grows
                await pool.checkout()
            await asettle(pool)
            async with pool.connection() as other:
                assert other.number == 2


async def test_invalidated_member_is_destroyed(factory: Factory, clock: ManualClock) -> None:
    async with make(factory, clock, min_size=2, max_size=2) as pool:
        lease = pool.connection()
        async with lease as conn:
            lease.invalidate()
        await asettle(pool)
        assert conn.closed
        assert [r.number for r in factory.open] == [1, 3]
        assert pool.snapshot().invalidations == 1


async def test_retire_older_retires_every_older_member(
    factory: Factory, clock: ManualClock, event_log: Any
) -> None:
    async with make(factory, clock, min_size=3, max_size=3) as pool:
        held = await pool.checkout()
        lease = pool.connection()
        async with lease:
            lease.invalidate(retire_older=True)
        await asettle(pool)
        assert [r.number for r in factory.open] == [held.connection.number, 4, 5]
        await held.release()  # made before the disconnect: retired on return
        await asettle(pool)
        assert [r.number for r in factory.open] == [4, 5, 6]
        reasons = sorted(
            md["reason"] for _, md in event_log.named("buttress", "pool", "expire", pool=pool.name)
        )
        assert reasons == ["generation", "generation"]


async def test_invalidate_on_exception_destroys_and_retires_older(
    factory: Factory, clock: ManualClock
) -> None:
    async with make(factory, clock, min_size=2, max_size=2) as pool:
        pool._invalidate_on = (ConnectionError,)
        with pytest.raises(ConnectionError):
            await raise_inside(pool, ConnectionError("server closed the connection"))
        with pytest.raises(KeyError):  # other errors leave the member alone
            await raise_inside(pool, KeyError("not a connection problem"))
        await asettle(pool)
        assert [r.number for r in factory.open] == [3, 4]


async def test_a_stale_member_failing_later_keeps_the_members_made_since(
    factory: Factory, clock: ManualClock
) -> None:
    # A database restart: two borrowers hold connections made before it, and both fail.
    async with make(
        factory, clock, min_size=2, max_size=2, invalidate_on=(ConnectionError,)
    ) as pool:
        first, second = pool.connection(), pool.connection()
        await first.__aenter__()
        await second.__aenter__()
        await first.__aexit__(ConnectionError, ConnectionError("server restarted"), None)
        await asettle(pool)  # a fresh member replaces it
        assert [r.number for r in factory.open] == [1, 3]  # lifo: the first borrower had 2
        await second.__aexit__(ConnectionError, ConnectionError("server restarted"), None)
        await asettle(pool)
        # Member 1 is only destroyed: member 3, made after the restart, stays.
        assert [r.number for r in factory.open] == [3, 4]
        s = pool.snapshot()
        assert (s.generation, s.evictions) == (1, {"error": 2})


async def test_reset_runs_on_return_and_a_failed_reset_destroys(
    factory: Factory, clock: ManualClock
) -> None:
    resets: list[int] = []

    def reset(conn: Resource) -> None:
        resets.append(conn.number)
        conn.ping()

    pool = AsyncConnectionPool(
        create=factory, reset=reset, clock=clock, min_size=1, max_size=1, max_lifetime=None
    )
    async with pool:
        async with pool.connection() as conn:
            pass
        async with pool.connection() as conn:
            conn.broken = True
        async with pool.connection() as conn:
            assert conn.number == 2
        await asettle(pool)
    assert resets == [1, 1, 2]
    assert pool.snapshot().invalidations == 1


async def test_active_checks_replace_broken_idle_members(
    factory: Factory, clock: ManualClock, event_log: Any
) -> None:
    async with make(
        factory,
        clock,
        min_size=3,
        max_size=3,
        check=Resource.ping,
        health_check_strategy="active",
        check_interval=10.0,
    ) as pool:
        factory.made[0].broken = factory.made[2].broken = True
        clock.advance(10.0)
        await pool.run_maintenance()
        await asettle(pool)
        assert [r.number for r in factory.open] == [2, 4, 5]
        assert pool.snapshot().check_failures == 2
        for _ in range(3):
            async with pool.connection() as conn:
                assert not conn.broken
        checks = event_log.named("buttress", "pool", "check", pool=pool.name)
        assert sorted(md["ok"] for _, md in checks) == [False, False, True]


async def test_a_pool_closed_during_a_check_round_closes_the_rest_unchecked(
    factory: Factory, clock: ManualClock
) -> None:
    checked: list[int] = []

    async def check_then_close(conn: Resource) -> bool:
        checked.append(conn.number)
        await pool.aclose()  # the pool closes while housekeeping checks
        return True

    pool = make(
        factory,
        clock,
        min_size=3,
        max_size=3,
        check=check_then_close,
        health_check_strategy="active",
        check_interval=10.0,
        check_jitter=0.0,
    )
    await pool.open(wait=True)
    clock.advance(10.0)
    await pool.run_maintenance()
    assert len(checked) == 1
    assert [r.closed for r in factory.made] == [True, True, True]
    s = pool.snapshot()
    assert (s.size, s.checking) == (0, 0)


async def test_mixed_checks_at_checkout_after_idle_time(
    factory: Factory, clock: ManualClock
) -> None:
    async with make(
        factory,
        clock,
        min_size=2,
        max_size=2,
        check=Resource.ping,
        health_check_strategy="mixed",
        check_interval=1000.0,
        check_idle_after=5.0,
    ) as pool:
        for r in factory.made:
            r.broken = True
        async with pool.connection() as conn:  # idle for 0 s: not checked, handed out broken
            assert conn.broken
        clock.advance(5.0)
        async with pool.connection() as conn:  # both fail the check, a new one is made
            assert conn.number == 3
            assert not conn.broken
        s = pool.snapshot()
        assert (s.check_failures, s.checkouts) == (2, 2)  # failed checks lend nothing


async def test_connect_failures_back_off_and_recover(
    factory: Factory, clock: ManualClock, event_log: Any
) -> None:
    factory.fail = 2
    pool = make(factory, clock, min_size=1, max_size=1, connect_backoff=1.0)
    await pool.open()  # connects in the background, without waiting
    await asettle(pool)
    assert pool.snapshot().connect_errors == 1
    # While it backs off, a checkout that gives up says why.
    with pytest.raises(PoolTimeoutError) as info:
        await pool.checkout(timeout=0)
    assert isinstance(info.value.__cause__, ConnectionRefusedError)
    assert "connecting keeps failing: ConnectionRefusedError" in str(info.value)
    clock.advance(1.0)  # the first backoff is at most 1 s
    await asettle(pool)
    assert pool.snapshot().connect_errors == 2
    clock.advance(2.0)  # the second at most 2 s
    await asettle(pool)
    async with pool.connection() as conn:
        assert conn.number == 1
        with pytest.raises(PoolTimeoutError) as info:  # busy, not failing: no stale cause
            await pool.checkout(timeout=0)
        assert info.value.__cause__ is None and "failing" not in str(info.value)
    s = pool.snapshot()
    assert (s.connect_errors, s.connects) == (2, 1)
    oks = [md["ok"] for _, md in event_log.named("buttress", "pool", "connect", pool=pool.name)]
    assert oks == [False, False, True]
    await pool.aclose()


async def test_open_wait_raises_the_connect_error(factory: Factory, clock: ManualClock) -> None:
    factory.fail = 1
    pool = make(factory, clock, min_size=1)
    with pytest.raises(ConnectionRefusedError):
        await pool.open(wait=True)
    await pool.aclose()


async def test_with_pool_closes_the_pool_when_a_startup_connect_fails(
    factory: Factory, clock: ManualClock
) -> None:
    def third_fails() -> Resource:
        if len(factory.made) == 2:
            raise ConnectionRefusedError("server unavailable")
        return factory()

    pool = AsyncConnectionPool(
        create=third_fails,
        clock=clock,
        scheduler=AsyncScheduler(clock=clock),
        min_size=3,
        max_size=3,
        max_lifetime=None,
    )

    async def enter() -> None:
        async with pool:
            raise AssertionError("the block must not run")

    with pytest.raises(ConnectionRefusedError):
        await enter()
    assert pool.closed
    assert [r.closed for r in factory.made] == [True, True]
    assert pool.snapshot().size == 0


async def test_leak_timeout_reports_the_stack_that_took_it(
    factory: Factory, clock: ManualClock, event_log: Any, caplog: Any
) -> None:
    async with make(factory, clock, min_size=1, max_size=1, leak_timeout=30.0) as pool:
        lease = await pool.checkout()
        clock.advance(31.0)
        await pool.run_maintenance()
        [(meas, md)] = event_log.named("buttress", "pool", "leak", pool=pool.name)
        assert md["reason"] == "leak_timeout"
        assert meas["held"] == pytest.approx(31.0)
        assert "test_leak_timeout_reports_the_stack_that_took_it" in md["stack"]
        assert "taken at" in caplog.text
        assert pool.snapshot().leaks == 1
        await pool.run_maintenance()  # reported once
        assert len(event_log.named("buttress", "pool", "leak", pool=pool.name)) == 1
        await lease.release()


async def test_a_dropped_lease_is_destroyed_and_replaced(
    factory: Factory, clock: ManualClock, event_log: Any
) -> None:
    async with make(factory, clock, min_size=1, max_size=1) as pool:
        lease = await pool.checkout()
        conn = lease.connection
        del lease
        gc.collect()
        await pool.run_maintenance()
        await asettle(pool)
        assert conn.closed
        assert [r.number for r in factory.open] == [2]
        [(_, md)] = event_log.named("buttress", "pool", "leak", pool=pool.name)
        assert md["reason"] == "dropped"


async def test_closed_pool_refuses_and_closes_returned_members(
    factory: Factory, clock: ManualClock, event_log: Any
) -> None:
    pool = make(factory, clock, min_size=2, max_size=2)
    await pool.open(wait=True)
    held = await pool.checkout()
    await pool.aclose()
    assert [r.closed for r in factory.made] == [True, False]  # lifo lent member 2
    with pytest.raises(PoolClosedError):
        await pool.checkout()
    await held.release()
    assert all(r.closed for r in factory.made)
    await pool.aclose()  # idempotent
    assert len(event_log.named("buttress", "pool", "shutdown", pool=pool.name)) == 1


async def test_stats_count_what_happened(factory: Factory, clock: ManualClock) -> None:
    async with make(factory, clock, min_size=1, max_size=1) as pool:
        for _ in range(5):
            async with pool.connection():
                pass
        s = pool.snapshot()
        assert (s.checkouts, s.waited, s.wait_p99, s.errors) == (5, 0, 0.0, 0)
        d = s.to_dict()
        assert d["name"] == pool.name
        assert d["errors"] == 0
        assert d["evictions"] == {}


# -- deadlines (real time: a call that hangs is given up in real time) --------------------------


def hanging(release: threading.Event, result: Any) -> Any:
    """A callback that hangs until ``release`` is set (3 s at most, so no test hangs)."""
    if True:  # ASYNC

        async def hang(*args: Any) -> Any:
            await asyncio.to_thread(release.wait, 3.0)
            return result

    else:

        def hang(*args: Any) -> Any:
            release.wait(3.0)
            return result

    return hang


async def test_a_check_before_lending_that_hangs_ends_at_checkout_timeout(
    factory: Factory,
) -> None:
    release = threading.Event()
    pool = AsyncConnectionPool(
        create=factory,
        check=hanging(release, True),
        health_check_strategy="mixed",
        check_idle_after=0.0,
        min_size=1,
        max_size=1,
        checkout_timeout=0.3,
        housekeeping_interval=1e6,
    )
    try:
        await pool.open(wait=True)
        started = time.monotonic()
        with pytest.raises(PoolTimeoutError, match="checking a member before lending it"):
            lent = await pool.checkout()
            await lent.release()  # not reached: the member whose check hung is never lent
        waited = time.monotonic() - started  # real-time: checkout_timeout, 0.3 s
        assert 0.25 <= waited < 1.5, waited
        s = pool.snapshot()
        assert (s.check_failures, s.checkouts, s.timeouts) == (1, 0, 1)
        await asettle(pool)
        assert factory.made[0].closed  # discarded, never lent
    finally:
        release.set()
        await pool.aclose()


async def test_a_check_before_lending_gets_what_is_left_of_the_wait(factory: Factory) -> None:
    # check_timeout (0.2 s) ends the hung check first; the borrower then waits for another
    # member, and gets the new one, unchecked (it just proved alive by connecting).
    release = threading.Event()
    pool = AsyncConnectionPool(
        create=factory,
        check=hanging(release, True),
        health_check_strategy="mixed",
        check_idle_after=0.5,
        check_timeout=0.2,
        min_size=1,
        max_size=1,
        checkout_timeout=5.0,
        housekeeping_interval=1e6,
    )
    try:
        await pool.open(wait=True)
        pool._state.members[1].idle_since -= 1.0  # idle long enough to be checked
        pool._state.members[1].last_ok -= 1.0
        async with pool.connection() as conn:  # real-time: check_timeout, 0.2 s
            assert conn.number == 2
        assert pool.snapshot().check_failures == 1
    finally:
        release.set()
        await pool.aclose()


async def test_an_idle_check_that_hangs_fails_at_check_timeout(
    factory: Factory, clock: ManualClock
) -> None:
    release = threading.Event()
    async with make(
        factory,
        clock,
        min_size=1,
        max_size=1,
        check=hanging(release, True),
        health_check_strategy="active",
        check_interval=10.0,
        check_jitter=0.0,
        check_timeout=0.2,
    ) as pool:
        try:
            clock.advance(10.0)
            await pool.run_maintenance()  # real-time: check_timeout, 0.2 s
            await asettle(pool)
            s = pool.snapshot()
            assert (s.check_failures, s.size, s.connects) == (1, 1, 2)
            assert factory.made[0].closed
        finally:
            release.set()


async def test_a_connect_that_hangs_fails_at_connect_timeout(clock: ManualClock) -> None:
    release = threading.Event()
    late = Resource(1)
    pool = AsyncConnectionPool(
        create=hanging(release, late),
        clock=clock,
        scheduler=AsyncScheduler(clock=clock),
        min_size=1,
        connect_timeout=0.2,
        housekeeping_interval=1e6,
    )
    closed = threading.Event()
    late.close = closed.set  # type: ignore[method-assign]
    try:
        with pytest.raises(TimeoutError, match=r"pool 'pool': connect took longer than 0.2s"):
            await pool.open(wait=True)  # real-time: connect_timeout, 0.2 s
        s = pool.snapshot()
        assert (s.connect_errors, s.size) == (1, 0)
        assert "took longer than" in (s.last_connect_error or "")
    finally:
        release.set()
        await pool.aclose()
    if True:  # ASYNC
        assert not closed.is_set()  # cancelled at its deadline: never made
    else:
        assert closed.wait(5.0)  # made too late: closed, in its own thread
