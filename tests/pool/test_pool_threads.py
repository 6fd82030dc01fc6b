"""ConnectionPool with real threads: borrower death, closing on waiters, single issue under load."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest
from _pool_support import Factory, Resource, settle, unique_pool_name

from buttress import (
    ConfigError,
    ConnectionPool,
    Lease,
    ManualClock,
    PoolClosedError,
    PoolConfig,
    PoolTimeoutError,
    Scheduler,
)


def make(factory: Factory, clock: ManualClock | None = None, **settings: Any) -> ConnectionPool:
    settings.setdefault("housekeeping_interval", 1e6)
    settings.setdefault("name", unique_pool_name())
    return ConnectionPool(create=factory, clock=clock, **settings)


def test_a_thread_that_dies_holding_a_member_gets_it_destroyed_and_replaced(
    clock: ManualClock, event_log: Any
) -> None:
    factory = Factory()
    with make(factory, clock, min_size=2, max_size=2) as pool:
        kept: list[Lease] = []  # keeps the lease alive: only the thread's death is news

        def borrower() -> None:
            kept.append(pool.checkout())  # ... and the thread ends without releasing it

        t = threading.Thread(target=borrower)
        t.start()
        t.join()
        lost = kept[0].connection
        assert pool.snapshot().in_use == 1
        pool.run_maintenance()
        settle(pool)
        assert lost.closed
        assert sorted(r.number for r in factory.open) == [1, 3]
        s = pool.snapshot()
        assert (s.in_use, s.idle, s.leaks, s.evictions) == (0, 2, 1, {"dead_borrower": 1})
        [(_, md)] = event_log.named("buttress", "pool", "leak", pool=pool.name)
        assert md["reason"] == "dead_borrower"
        # The dead thread's lease can no longer return what it held.
        kept[0].release()
        assert pool.snapshot().idle == 2
        for _ in range(4):  # never handed out again
            with pool.connection() as conn:
                assert conn is not lost


def test_adopt_hands_a_lease_to_another_thread(clock: ManualClock) -> None:
    factory = Factory()
    with make(factory, clock, min_size=1, max_size=1) as pool:
        handed: list[Lease] = []
        t = threading.Thread(target=lambda: handed.append(pool.checkout()))
        t.start()
        t.join()
        handed[0].adopt()  # the main thread holds it now
        pool.run_maintenance()
        assert pool.snapshot().in_use == 1
        handed[0].release()
        assert not factory.made[0].closed


def test_close_releases_waiting_threads_with_pool_closed_error() -> None:
    factory = Factory()
    pool = make(factory, min_size=1, max_size=1, checkout_timeout=None)
    pool.open(wait=True)
    held = pool.checkout()
    errors: list[BaseException] = []
    queued = threading.Event()

    def waiter() -> None:
        queued.set()
        try:
            pool.checkout()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=waiter) for _ in range(3)]
    for t in threads:
        t.start()
    queued.wait()
    # Close only once all three wait; they get in line in well under 10 s.
    assert _wait_for(lambda: pool.snapshot().waiting == 3)
    pool.close()
    for t in threads:
        t.join(10.0)
    assert [type(e) for e in errors] == [PoolClosedError] * 3
    held.release()
    assert factory.made[0].closed


def _wait_for(predicate: Any, rounds: int = 1_000_000) -> bool:
    # Yields the GIL to the other threads until they have got in line (bounded).
    for _ in range(rounds):
        if predicate():
            return True
        time.sleep(0)  # real-time: a yield, not a wait for time to pass
    return False


def test_a_waiter_gets_the_member_returned_before_its_timeout() -> None:
    factory = Factory()
    with make(factory, min_size=1, max_size=1) as pool:
        held = pool.checkout()
        got: list[int] = []
        t = threading.Thread(
            target=lambda: got.append(pool.checkout(timeout=30.0).connection.number)
        )
        t.start()
        assert _wait_for(lambda: pool.snapshot().waiting == 1)
        held.release()
        t.join(10.0)
        assert got == [1]
        s = pool.snapshot()
        assert (s.waited, s.timeouts) == (1, 0)


def test_threads_never_share_a_member() -> None:
    """16 threads, 3 members, random invalidations: a member is never lent twice at once."""
    factory = Factory()
    failures: list[str] = []
    with make(factory, min_size=3, max_size=3, checkout_timeout=30.0) as pool:

        def work(seed: int) -> None:
            rng = random.Random(seed)
            for _ in range(300):
                lease = pool.connection()
                with lease as conn:
                    if conn.in_use:
                        failures.append(f"{conn} lent twice")
                    conn.in_use = True
                    if rng.random() < 0.02:
                        lease.invalidate()
                    conn.in_use = False

        threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        settle(pool)
        s = pool.snapshot()
        assert failures == []
        assert s.checkouts == 16 * 300
        assert (s.in_use, s.waiting, s.timeouts) == (0, 0, 0)
        assert s.size == 3
        assert len(factory.open) == 3


def test_a_busy_scheduler_is_not_needed_for_a_plain_checkout() -> None:
    """Background work runs on the scheduler given; a pool made without one owns one."""
    factory = Factory()
    sched = Scheduler(background=False)
    pool = ConnectionPool(create=factory, scheduler=sched, min_size=1)
    pool.open(wait=True)
    with pool.connection() as conn:
        assert conn.number == 1
    pool.close()
    assert factory.made[0].closed
    assert not sched.closed  # not the pool's to close
    sched.close()


@pytest.mark.parametrize(
    ("settings", "path"),
    [
        ({"max_size": 0}, "max_size"),
        ({"min_size": 5, "max_size": 2}, "min_size"),
        ({"max_overflow": -1}, "max_overflow"),
        ({"strategy": "random"}, "strategy"),
        ({"health_check_strategy": "active"}, "check"),
        ({"lifetime_jitter": 1.5}, "lifetime_jitter"),
        ({"checkout_timeout": 0}, "checkout_timeout"),
        ({"max_waiting": -2}, "max_waiting"),
        ({"connect_backoff": 2.0, "connect_backoff_max": 1.0}, "connect_backoff_max"),
        ({"max_sise": 3}, "max_sise"),
        ({"create": 42}, "create"),
        ({"invalidate_on": (ValueError, "x")}, "invalidate_on"),
        ({"name": ""}, "name"),
        ({"scheduler": object()}, "scheduler"),
    ],
)
def test_bad_settings_name_the_parameter(settings: dict[str, Any], path: str) -> None:
    kwargs: dict[str, Any] = {"create": Factory(), **settings}
    with pytest.raises(ConfigError) as info:
        ConnectionPool(**kwargs)
    assert info.value.path == path


def test_config_and_keywords_combine() -> None:
    pool = ConnectionPool(create=Factory(), config=PoolConfig(max_size=4), min_size=2)
    assert (pool.config.min_size, pool.config.max_size) == (2, 4)
    with pytest.raises(ConfigError, match="timeout"):
        pool.connection(timeout=-1)
    pool.close()


def test_resource_default_close_and_repr() -> None:
    factory = Factory()
    pool = make(factory, min_size=1)
    pool.open(wait=True)
    assert "size=1 idle=1" in repr(pool)
    lease = pool.connection()
    assert "not held" in repr(lease)
    with lease as conn:
        assert isinstance(conn, Resource)
        assert lease.held
    with pytest.raises(RuntimeError):
        _ = lease.connection
    pool.close()
    assert "closed" in repr(pool)
    assert factory.made[0].closed


def test_timeout_is_counted_and_nothing_leaks() -> None:
    factory = Factory()
    with make(factory, min_size=1, max_size=1) as pool:
        held = pool.checkout()
        with pytest.raises(PoolTimeoutError):
            pool.checkout(timeout=0.01)  # real time: the only way to time out a thread
        held.release()
        s = pool.snapshot()
        assert (s.timeouts, s.waiting, s.idle, s.in_use) == (1, 0, 1, 0)


def test_timeouts_racing_handoffs_lose_nothing() -> None:
    """Waits so short that many end as a member is handed over: none is lost or shared."""
    factory = Factory()
    failures: list[str] = []
    timed_out = [0]
    with make(factory, min_size=2, max_size=2) as pool:

        def work() -> None:
            for _ in range(300):
                try:
                    with pool.connection(timeout=0.0002) as conn:
                        if conn.in_use:
                            failures.append(f"{conn} lent twice")
                        conn.in_use = True
                        time.sleep(0)  # real-time: a yield while holding it
                        conn.in_use = False
                except PoolTimeoutError:
                    timed_out[0] += 1

        threads = [threading.Thread(target=work) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        s = pool.snapshot()
        assert failures == []
        assert (s.size, s.idle, s.in_use, s.waiting) == (2, 2, 0, 0)
        assert s.checkouts + s.timeouts == 12 * 300
        assert s.timeouts == timed_out[0]


def test_connects_that_hang_past_their_deadline_are_capped() -> None:
    # A server that accepts and never answers: each connect is given up at connect_timeout,
    # its thread left to hang; after MAX_STRAGGLERS of them, no new connect starts (no new
    # thread, no new socket) until one returns.
    from buttress._pool._pool import MAX_STRAGGLERS

    release = threading.Event()
    made: list[Resource] = []
    closed = threading.Semaphore(0)

    def create() -> Resource:
        release.wait(5.0)
        r = Resource(len(made) + 1)
        r.close = closed.release  # type: ignore[method-assign]
        made.append(r)
        return r

    pool = ConnectionPool(
        create=create, min_size=1, connect_timeout=0.05, housekeeping_interval=1e6
    )
    try:
        for _ in range(MAX_STRAGGLERS):
            with pytest.raises(TimeoutError, match="took longer than"):
                pool.open(wait=True)  # real-time: 0.05 s each
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=f"{MAX_STRAGGLERS} connects given up"):
            pool.open(wait=True)
        assert time.monotonic() - started < 0.05  # refused at once
        assert pool.snapshot().connect_errors == MAX_STRAGGLERS + 1
    finally:
        release.set()
        pool.close()
    for _ in range(MAX_STRAGGLERS):  # each made too late, and closed
        assert closed.acquire(timeout=5.0)
    assert pool._stragglers.count == 0


def test_close_does_not_wait_for_a_connect_that_hangs() -> None:
    release, connecting = threading.Event(), threading.Event()

    def create() -> Resource:
        connecting.set()
        release.wait(10.0)
        return Resource(1)

    pool = ConnectionPool(create=create, min_size=1, housekeeping_interval=1e6)
    try:
        pool.open()  # connects in the background
        assert connecting.wait(10.0)
        started = time.monotonic()
        pool.close()
        assert time.monotonic() - started < 1.0  # the hung connect is left behind
        assert pool.closed
    finally:
        release.set()


def test_a_manual_clock_moved_past_a_checkout_deadline_ends_its_wait(clock: ManualClock) -> None:
    # The clock ends the wait and measures it: an hour of it, not an hour of real time.
    with make(Factory(), clock, min_size=1, max_size=1) as pool:
        held = pool.checkout()
        outcome: list[PoolTimeoutError] = []

        def waiter() -> None:
            try:
                pool.checkout(timeout=3600.0)
            except PoolTimeoutError as exc:
                outcome.append(exc)

        t = threading.Thread(target=waiter, daemon=True)
        t.start()
        assert _wait_for(lambda: pool.snapshot().waiting == 1)
        clock.advance(3600.0)
        t.join(timeout=60.0)
        assert not t.is_alive(), "the wait went on after the clock passed its deadline"
        [exc] = outcome
        assert exc.waited == 3600.0
        held.release()
        assert pool.snapshot().timeouts == 1
