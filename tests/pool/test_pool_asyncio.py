"""AsyncConnectionPool with real tasks: cancellation never loses or double-issues a member."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from _pool_support import Factory, asettle

from buttress import AsyncConnectionPool, AsyncLease, ManualClock, PoolClosedError, PoolTimeoutError


async def run_ready_tasks() -> None:
    # One turn of the loop: every task made ready runs up to its next wait. Deterministic in
    # asyncio; not a wait for time.
    await asyncio.sleep(0)  # real-time: one event-loop turn, no time passes


def make(factory: Factory, **settings: Any) -> AsyncConnectionPool:
    settings.setdefault("housekeeping_interval", 1e6)
    return AsyncConnectionPool(create=factory, **settings)


async def closers_done(pool: AsyncConnectionPool) -> None:
    """Wait for the closes a closed pool started in tasks of their own (never for time)."""
    while pool._closers:
        await asyncio.gather(*pool._closers)


def assert_all_back(pool: AsyncConnectionPool, size: int) -> None:
    s = pool.snapshot()
    assert (s.size, s.idle, s.in_use, s.waiting) == (size, size, 0, 0), s


async def test_a_task_cancelled_while_waiting_leaks_nothing() -> None:
    factory = Factory()
    async with make(factory, min_size=1, max_size=1) as pool:
        held = await pool.checkout()
        waiter = asyncio.create_task(pool.checkout(timeout=None))
        await run_ready_tasks()
        assert pool.snapshot().waiting == 1
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        assert waiter.cancelled()
        await held.release()
        assert_all_back(pool, 1)
        assert pool.snapshot().cancelled == 1


async def test_a_task_cancelled_at_the_moment_of_handoff_passes_the_member_on() -> None:
    factory = Factory()
    async with make(factory, min_size=1, max_size=1) as pool:
        held = await pool.checkout()
        first = asyncio.create_task(pool.checkout(timeout=None))
        second = asyncio.create_task(pool.checkout(timeout=None))
        await run_ready_tasks()
        assert pool.snapshot().waiting == 2
        await held.release()  # handed to `first`, which has not run yet ...
        first.cancel()  # ... and is cancelled before it can take it
        lease: AsyncLease = await second
        assert lease.connection.number == 1
        assert first.cancelled()
        await lease.release()
        assert_all_back(pool, 1)
        s = pool.snapshot()
        assert (s.checkouts, s.cancelled) == (2, 1)


async def test_a_task_cancelled_while_holding_returns_the_member() -> None:
    factory = Factory()
    async with make(factory, min_size=1, max_size=1) as pool:
        entered = asyncio.Event()

        async def borrower() -> None:
            async with pool.connection():
                entered.set()
                await asyncio.Event().wait()  # until cancelled

        task = asyncio.create_task(borrower())
        await entered.wait()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert_all_back(pool, 1)
        async with pool.connection() as conn:
            assert conn.number == 1


async def test_a_task_cancelled_during_reset_leaks_nothing() -> None:
    factory = Factory()
    resetting = asyncio.Event()

    async def slow_reset(conn: Any) -> None:
        resetting.set()
        await asyncio.Event().wait()

    async with make(factory, min_size=1, max_size=1, reset=slow_reset) as pool:

        async def borrower() -> None:
            async with pool.connection():
                pass

        task = asyncio.create_task(borrower())
        await resetting.wait()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asettle(pool)
        # Its state unknown, the member was destroyed and replaced.
        assert factory.made[0].closed
        assert_all_back(pool, 1)


async def test_a_task_cancelled_during_reset_after_aclose_leaks_nothing(caplog: Any) -> None:
    caplog.set_level(logging.DEBUG, logger="buttress.pool")
    factory = Factory()
    resetting = asyncio.Event()

    async def slow_reset(conn: Any) -> None:
        resetting.set()
        await asyncio.Event().wait()

    pool = make(factory, min_size=1, max_size=1, reset=slow_reset)
    await pool.open(wait=True)
    entered = asyncio.Event()

    async def borrower() -> None:
        async with pool.connection():
            entered.set()
            await asyncio.Event().wait()  # until cancelled

    task = asyncio.create_task(borrower())
    await entered.wait()
    await pool.aclose()  # the member is lent: it is closed when it comes back
    task.cancel()  # leaves the block: reset runs ...
    await resetting.wait()
    task.cancel()  # ... and is cancelled too
    await asyncio.gather(task, return_exceptions=True)
    await closers_done(pool)
    assert factory.made[0].closed
    assert pool.snapshot().size == 0
    # An interrupted reset is no failed one: no warning, no traceback.
    assert [(r.levelname, r.exc_info) for r in caplog.records] == [("DEBUG", None)]
    assert "reset interrupted" in caplog.text


async def test_a_waiter_served_then_cancelled_as_the_pool_closes_leaks_nothing() -> None:
    # A typical shutdown: cancel the request tasks, close the pool.
    factory = Factory()
    pool = make(factory, min_size=1, max_size=1)
    await pool.open(wait=True)
    held = await pool.checkout()
    waiter = asyncio.create_task(pool.checkout(timeout=None))
    await run_ready_tasks()
    await held.release()  # handed to the waiter, which has not run yet ...
    waiter.cancel()  # ... and is cancelled before it can take it
    await pool.aclose()
    await asyncio.gather(waiter, return_exceptions=True)
    assert waiter.cancelled()
    await closers_done(pool)
    assert factory.made[0].closed
    assert pool.snapshot().size == 0


async def test_aclose_during_an_active_check_closes_every_member() -> None:
    factory = Factory()
    clock = ManualClock()
    checking = asyncio.Event()

    async def hung_check(conn: Any) -> bool:
        checking.set()
        await asyncio.Event().wait()  # a server that never answers
        return True

    pool = make(
        factory,
        clock=clock,
        min_size=3,
        max_size=3,
        check=hung_check,
        health_check_strategy="active",
        check_interval=10.0,
        check_jitter=0.0,
    )
    await pool.open(wait=True)
    clock.advance(10.0)
    pool._scheduler.call_later(0.0, pool.run_maintenance)  # housekeeping, on its scheduler
    await checking.wait()
    assert pool.snapshot().checking == 3  # one checked, two waiting their turn
    await pool.aclose()  # cancels the scheduler's job mid-check
    await closers_done(pool)
    assert [r.closed for r in factory.made] == [True, True, True]
    s = pool.snapshot()
    assert (s.size, s.checking) == (0, 0)


async def test_cancelled_housekeeping_hands_back_the_members_it_did_not_check() -> None:
    factory = Factory()
    clock = ManualClock()
    checking = asyncio.Event()
    checked: list[int] = []

    async def check(conn: Any) -> bool:
        checked.append(conn.number)
        if len(checked) == 1:
            checking.set()
            await asyncio.Event().wait()  # the first check hangs
        return True

    async with make(
        factory,
        clock=clock,
        min_size=3,
        max_size=3,
        check=check,
        health_check_strategy="active",
        check_interval=10.0,
        check_jitter=0.0,
    ) as pool:
        clock.advance(10.0)
        housekeeping = asyncio.create_task(pool.run_maintenance())
        await checking.wait()
        housekeeping.cancel()
        await asyncio.gather(housekeeping, return_exceptions=True)
        await asettle(pool)
        # The one being checked is destroyed (its state unknown) and replaced; the two not
        # checked are idle again, their checks still due.
        s = pool.snapshot()
        assert (s.size, s.idle, s.checking, s.check_failures) == (3, 3, 0, 1)
        assert factory.made[checked[0] - 1].closed
        await pool.run_maintenance()
        assert sorted(checked[1:]) == sorted(
            r.number for r in factory.made[:3] if r.number != checked[0]
        )


async def test_a_task_that_finished_holding_a_lease_gets_it_destroyed() -> None:
    factory = Factory()
    async with make(factory, min_size=1, max_size=1) as pool:
        kept: list[AsyncLease] = []

        async def borrower() -> None:
            kept.append(await pool.checkout())

        await asyncio.create_task(borrower())
        await pool.run_maintenance()
        await asettle(pool)
        assert factory.made[0].closed
        assert_all_back(pool, 1)
        assert pool.snapshot().evictions == {"dead_borrower": 1}
        await kept[0].release()  # too late: a no-op
        assert_all_back(pool, 1)


async def test_mixed_never_checks_a_member_handed_straight_to_a_waiter() -> None:
    factory = Factory()
    clock = ManualClock()
    checked: list[float] = []

    def check(conn: Any) -> bool:
        checked.append(clock.monotonic())
        return True

    async with make(
        factory,
        clock=clock,
        min_size=1,
        max_size=1,
        check=check,
        health_check_strategy="mixed",
        check_idle_after=0.5,
        check_interval=1000.0,
    ) as pool:
        lease = await pool.checkout()
        for _ in range(3):
            waiter = asyncio.create_task(pool.checkout(timeout=None))
            await run_ready_tasks()
            assert pool.snapshot().waiting == 1
            clock.advance(1.0)  # held for 1 s: busy all along
            await lease.release()  # handed straight to the waiter
            lease = await waiter
        await lease.release()
        assert checked == []  # busy members are not checked
        clock.advance(1.0)
        async with pool.connection():  # idle for 1 s: checked
            assert checked == [4.0]


async def test_aclose_releases_waiting_tasks() -> None:
    factory = Factory()
    pool = make(factory, min_size=1, max_size=1)
    await pool.open(wait=True)
    held = await pool.checkout()
    waiters = [asyncio.create_task(pool.checkout(timeout=None)) for _ in range(3)]
    await run_ready_tasks()
    await pool.aclose()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert [type(r) for r in results] == [PoolClosedError] * 3
    await held.release()
    assert factory.made[0].closed
    assert pool._scheduler.closed


async def test_many_tasks_share_few_members_fairly() -> None:
    """100 tasks on 10 members: everyone is served, in order, nobody twice at once."""
    factory = Factory()
    order: list[int] = []
    async with make(factory, min_size=10, max_size=10, checkout_timeout=None) as pool:

        async def borrower(i: int) -> None:
            async with pool.connection() as conn:
                assert not conn.in_use
                conn.in_use = True
                order.append(i)
                await asyncio.sleep(0)  # real-time: one event-loop turn, no time passes
                conn.in_use = False

        await asyncio.gather(*(borrower(i) for i in range(100)))
        assert order == list(range(100))  # FIFO: served in the order they asked
        assert_all_back(pool, 10)


async def test_a_manual_clock_times_a_checkout_wait() -> None:
    # Nothing can serve the checkout: it sleeps on the clock, which jumps to its deadline; no
    # real seconds pass, and the wait is reported in the clock's seconds.
    clock = ManualClock()
    async with make(Factory(), min_size=1, max_size=1, clock=clock) as pool:
        held = await pool.checkout()
        with pytest.raises(PoolTimeoutError) as info:
            await pool.checkout(timeout=5.0)
        assert info.value.waited == 5.0
        assert clock.monotonic() == 5.0
        await held.release()


async def test_a_checkout_waiting_on_a_manual_clock_is_served_by_a_task_that_returns() -> None:
    clock = ManualClock()
    async with make(Factory(), min_size=1, max_size=1, clock=clock) as pool:
        held = await pool.checkout()

        async def give_back_later() -> None:
            await clock.asleep(2.0)
            await held.release()

        giver = asyncio.create_task(give_back_later())
        lease = await pool.checkout(timeout=5.0)  # served at clock time 2, before its deadline
        assert clock.monotonic() == 2.0
        await lease.release()
        await giver
