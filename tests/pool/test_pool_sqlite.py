"""Pools of real sqlite3 connections on a file in tmp_path."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from _pool_support import settle

from buttress import ConnectionPool, ManualClock, Scheduler


def make(path: Path, clock: ManualClock, **settings: Any) -> ConnectionPool:
    def connect() -> sqlite3.Connection:
        return sqlite3.connect(path, check_same_thread=False, timeout=30.0)

    settings.setdefault("housekeeping_interval", 1e6)
    settings.setdefault("min_size", 2)
    settings.setdefault("max_size", 2)
    return ConnectionPool(
        create=connect,
        reset=lambda conn: conn.rollback(),
        check=lambda conn: conn.execute("SELECT 1"),
        clock=clock,
        scheduler=Scheduler(clock=clock),
        **settings,
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "pool.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
    return path


def count(pool: ConnectionPool) -> int:
    with pool.connection() as conn:
        n = conn.execute("SELECT count(*) FROM t").fetchone()[0]
    assert isinstance(n, int)
    return n


def test_reset_rolls_back_what_a_borrower_left_open(db: Path, clock: ManualClock) -> None:
    with make(db, clock) as pool:
        with pool.connection() as conn:
            conn.execute("INSERT INTO t VALUES (1)")  # never committed
        assert count(pool) == 0
        with pool.connection() as conn:
            conn.execute("INSERT INTO t VALUES (2)")
            conn.commit()
        assert count(pool) == 1


def test_a_connection_closed_behind_the_pools_back_fails_its_active_check(
    db: Path, clock: ManualClock
) -> None:
    with make(db, clock, health_check_strategy="active", check_interval=5.0) as pool:
        with pool.connection() as conn:
            conn.close()  # the reset (rollback) on return raises: destroyed at once
        settle(pool)
        assert pool.snapshot().evictions == {"reset_failed": 1}
        first = pool._state.members[min(pool._state.members)].resource
        first.close()  # an idle one dies quietly
        clock.advance(5.0)
        pool.run_maintenance()
        settle(pool)
        assert pool.snapshot().check_failures == 1
        for _ in range(4):
            assert count(pool) == 0


def test_threads_write_through_the_pool(db: Path, clock: ManualClock) -> None:
    with make(db, clock, max_size=3, min_size=3) as pool:

        def writer(k: int) -> None:
            for i in range(50):
                with pool.connection() as conn:
                    conn.execute("INSERT INTO t VALUES (?)", (k * 100 + i,))
                    conn.commit()

        threads = [threading.Thread(target=writer, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert count(pool) == 300
        assert pool.snapshot().checkouts == 301
