"""The SQLite backend on real files: transactions, locking, persistence, purging, asyncio."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from ratelimit_backends import hammer_threads

import buttress as bt
from buttress.ratelimit import FixedWindow, TokenBucket
from buttress.ratelimit._sqlite import _INHERITED, PURGE_BATCH, PURGE_EVERY


def three_scopes(backend: bt.SQLiteBackend, clock: bt.ManualClock, **kw: object) -> bt.RateLimiter:
    return bt.RateLimiter(
        [
            bt.Scope("user", 5, 60.0),
            bt.Scope("org", 8, 60.0, algorithm="fixed_window"),
            bt.Scope("global", 100, 60.0, algorithm="sliding_window"),
        ],
        backend=backend,
        clock=clock,
        namespace="app",
        **kw,  # type: ignore[arg-type]
    )


def test_one_row_per_key_in_a_wal_file(tmp_path: Path, clock: bt.ManualClock) -> None:
    path = tmp_path / "limits.db"
    backend = bt.SQLiteBackend(path)
    rl = three_scopes(backend, clock)
    for _ in range(3):
        assert rl.try_acquire({"user": "u1", "org": "o1"})
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        keys = [k for (k,) in conn.execute("SELECT key FROM buttress_ratelimit ORDER BY key")]
    # Each key names its scope's algorithm and state format (t1 token bucket, f1 fixed
    # window, s1 sliding window; see ratelimit/_format.py).
    assert keys == ["app:default:global@s1", "app:default:org@f1:o1", "app:default:user@t1:u1"]
    assert backend.key_count() == 3
    assert rl.snapshot().keys == 3
    backend.close()


def test_state_survives_a_new_backend_on_the_same_file(
    tmp_path: Path, clock: bt.ManualClock
) -> None:
    path = tmp_path / "limits.db"
    first = bt.SQLiteBackend(path)
    rl = three_scopes(first, clock)
    assert all(rl.try_acquire({"user": "u1", "org": "o1"}) for _ in range(3))
    first.close()
    second = bt.SQLiteBackend(path)  # a restart: nothing but the file is shared
    rl = three_scopes(second, clock)
    d = rl.peek({"user": "u1", "org": "o1"})
    assert (d.scope, d.remaining) == ("user", 1)  # 5 - 3 used - 1 peeked
    assert sum(rl.try_acquire({"user": "u1", "org": "o1"}).allowed for _ in range(5)) == 2
    second.close()


def test_refusals_write_nothing_and_refunds_and_resets_persist(
    tmp_path: Path, clock: bt.ManualClock
) -> None:
    backend = bt.SQLiteBackend(tmp_path / "limits.db")
    rl = three_scopes(backend, clock)
    ctx = {"user": "u1", "org": "o1"}
    assert all(rl.try_acquire(ctx) for _ in range(5))
    before = {k: backend.get(k) for k in ("app:default:org@f1:o1", "app:default:global@s1")}
    assert not rl.try_acquire(ctx)  # the user refuses: org and global are not charged
    assert {k: backend.get(k) for k in before} == before
    rl.refund(ctx, 2)
    assert sum(rl.try_acquire(ctx).allowed for _ in range(5)) == 2
    rl.reset(ctx)
    assert backend.get("app:default:user@t1:u1") is None
    assert backend.get("app:default:global@s1") is not None  # shared scopes reset only by name
    backend.close()


def test_a_write_lock_held_too_long_becomes_a_backend_failure(
    tmp_path: Path, clock: bt.ManualClock
) -> None:
    path = tmp_path / "limits.db"
    backend = bt.SQLiteBackend(path, timeout=0.05)
    closed = three_scopes(backend, clock, failure_policy="fail_closed", backend_retry_interval=0)
    opened = three_scopes(backend, clock, name="open", backend_retry_interval=0)
    ctx = {"user": "u1", "org": "o1"}
    assert closed.try_acquire(ctx)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    try:
        with pytest.raises(bt.BackendError, match="database is locked"):
            closed.try_acquire(ctx)
        assert opened.try_acquire(ctx).allowed
        assert closed.snapshot().backend_status == opened.snapshot().backend_status == "down"
        assert closed.peek(ctx).allowed  # a peek only reads: WAL readers never wait
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert closed.try_acquire(ctx)
    assert closed.snapshot().backend_status == "ok"
    backend.close()


async def test_the_async_path_never_blocks_the_event_loop(tmp_path: Path) -> None:
    path = tmp_path / "limits.db"
    backend = bt.SQLiteBackend(path, timeout=5.0)
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    decision = asyncio.create_task(
        backend.decide_async(["k"], [TokenBucket(10, 1.0)], 1, 100.0, True)
    )
    # The decision waits for the lock in a worker thread; the loop keeps running meanwhile.
    # (Were it blocking the loop, the lock could never be released: it would fail instead.)
    for _ in range(20):
        await asyncio.sleep(0)  # real-time: one event-loop turn, no time passes
    blocker.execute("ROLLBACK")
    blocker.close()
    allowed, states, now = await decision
    assert (allowed, list(states), now) == (True, [None], 100.0)
    stored = backend.get("k")
    assert stored is not None and stored[0] == pytest.approx(100.1)
    backend.close()


async def test_a_decision_cancelled_while_its_thread_decides_is_given_back(
    tmp_path: Path, clock: bt.ManualClock
) -> None:
    refunded = threading.Event()

    class Telling(bt.SQLiteBackend):
        def refund(self, *args: Any) -> None:
            super().refund(*args)
            refunded.set()

    path = tmp_path / "limits.db"
    backend = Telling(path, timeout=5.0)
    limiter = three_scopes(backend, clock)
    untouched = limiter.peek({"user": "u1", "org": "o1"}).remaining
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")  # the decision's thread waits for the write lock
    task = asyncio.create_task(limiter.try_acquire_async({"user": "u1", "org": "o1"}))
    for _ in range(5):
        await asyncio.sleep(0)  # real-time: loop turns, for the thread to start waiting
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task  # at once: the caller does not wait for the thread
    blocker.execute("ROLLBACK")  # the thread decides (and charges) now...
    blocker.close()
    assert await asyncio.to_thread(refunded.wait, 10.0)  # ...and the charge is given back
    assert limiter.peek({"user": "u1", "org": "o1"}).remaining == untouched
    backend.close()


CTX = {"user": "u1", "org": "o1"}


def give_up_while_the_thread_decides(path: Path, limiter: bt.RateLimiter) -> None:
    """A request times out while its decision waits for the write lock (another connection
    holds it), and its handler returns, ending the event loop; then the lock is released."""
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")  # the decision's thread waits for the write lock
    gave_up = threading.Event()

    def release_after_the_caller_gave_up() -> None:
        gave_up.wait(10.0)
        blocker.execute("ROLLBACK")
        blocker.close()

    releaser = threading.Thread(target=release_after_the_caller_gave_up)
    releaser.start()

    async def handler() -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):  # real-time: the request's own deadline
                await limiter.try_acquire_async(CTX)
        gave_up.set()  # ...and the handler returns: asyncio.run ends its loop at once

    asyncio.run(handler())  # (waits for the executor's threads as it ends)
    releaser.join()


def test_a_cancelled_decision_is_given_back_even_when_its_event_loop_ends(
    tmp_path: Path, clock: bt.ManualClock
) -> None:
    path = tmp_path / "limits.db"
    backend = bt.SQLiteBackend(path, timeout=10.0)
    limiter = three_scopes(backend, clock)
    untouched = limiter.peek(CTX).remaining
    give_up_while_the_thread_decides(path, limiter)
    assert limiter.peek(CTX).remaining == untouched  # the thread decided, then gave it back
    backend.close()


def test_a_refund_after_a_cancellation_that_fails_is_logged(
    tmp_path: Path, clock: bt.ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    class CannotRefund(bt.SQLiteBackend):
        def refund(self, *args: Any) -> None:
            raise bt.BackendError("database is locked")

    path = tmp_path / "limits.db"
    backend = CannotRefund(path, timeout=10.0)
    give_up_while_the_thread_decides(path, three_scopes(backend, clock))
    assert "stays charged" in caplog.text
    backend.close()


def test_expired_rows_are_purged_by_maintain(tmp_path: Path) -> None:
    backend = bt.SQLiteBackend(tmp_path / "limits.db")
    window = FixedWindow(10, 1.0)
    for i in range(30):
        backend.decide([f"k{i}"], [window], 1, 0.5 if i < 20 else 5.5)
    assert backend.key_count() == 30
    assert backend.maintain(now=2.0) == 20  # windows ending at 1.0 are over
    assert backend.key_count() == 10
    assert backend.maintain(now=2.0) == 0
    backend.close()


def test_expired_rows_are_purged_as_decisions_write(tmp_path: Path) -> None:
    backend = bt.SQLiteBackend(tmp_path / "limits.db")
    window = FixedWindow(10, 1.0)
    assert PURGE_BATCH % PURGE_EVERY == 0  # so the old rows end on a whole purge cycle
    for i in range(PURGE_BATCH):
        backend.decide([f"old{i}"], [window], 1, 0.5)  # their window ends at 1.0
    assert backend.key_count() == PURGE_BATCH
    # Later writing decisions purge expired rows a batch at a time, no maintain() needed.
    for i in range(PURGE_EVERY):
        backend.decide([f"new{i}"], [window], 1, 10.5)
    assert backend.key_count() == PURGE_EVERY
    assert backend.get("old0") is None
    backend.close()


def test_clear_forgets_keys_by_prefix(tmp_path: Path) -> None:
    backend = bt.SQLiteBackend(tmp_path / "limits.db")
    bucket = TokenBucket(10, 1.0)
    for key in ("a:x:user:1", "a:x:user:2", "a:xy:user:1", "a:x\U0010ffff", "b:x:global"):
        backend.decide([key], [bucket], 1, 0.0)
    assert backend.clear("a:x:") == 2
    assert backend.clear("a:x\U0010ffff") == 1  # no successor character: matched another way
    assert backend.key_count() == 2
    assert backend.clear() == 2
    assert backend.key_count() == 0
    backend.close()


def test_threads_sharing_one_backend_admit_exactly_the_allowance(tmp_path: Path) -> None:
    backend = bt.SQLiteBackend(tmp_path / "limits.db", timeout=10.0)
    clock = bt.ManualClock()
    rl = three_scopes(backend, clock, failure_policy="fail_closed")
    contexts = [{"user": f"u{i}", "org": f"o{i % 2}"} for i in range(8)]
    admitted = hammer_threads(rl, contexts, attempts=12)
    assert sum(admitted) == 16  # two orgs of 8: tighter than 8 users of 5
    backend.close()


def test_bad_settings_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(bt.ConfigError) as info:
        bt.SQLiteBackend(tmp_path / "missing" / "dir" / "limits.db")
    assert info.value.path == "path"
    with pytest.raises(bt.ConfigError) as info:
        bt.SQLiteBackend(tmp_path / "limits.db", timeout=0)
    assert info.value.path == "timeout"
    # SQLite's in-memory database is one per connection, so one per thread: nothing shared.
    with pytest.raises(bt.ConfigError, match="its own empty database") as info:
        bt.SQLiteBackend(":memory:")
    assert info.value.path == "path"
    with pytest.raises(bt.ConfigError) as info:
        bt.SQLiteBackend(tmp_path / "limits.db", table="x; DROP TABLE y")
    assert info.value.path == "table"
    with pytest.raises(bt.ConfigError) as info:
        bt.SQLiteBackend(tmp_path / "limits.db", table="sqlite_limits")  # SQLite's own names
    assert info.value.path == "table"


@pytest.mark.parametrize("table", ["order", "select", "Group"])
def test_a_table_named_like_an_sql_keyword_works(
    tmp_path: Path, clock: bt.ManualClock, table: str
) -> None:
    backend = bt.SQLiteBackend(tmp_path / "limits.db", table=table)
    rl = three_scopes(backend, clock)
    assert rl.try_acquire({"user": "u1", "org": "o1"}, 5)
    assert not rl.try_acquire({"user": "u1", "org": "o1"})
    assert rl.peek({"user": "u2", "org": "o1"}, 3)
    rl.refund({"user": "u1", "org": "o1"}, 2)
    assert rl.try_acquire({"user": "u1", "org": "o1"}, 2)
    rl.reset({"user": "u1"})
    assert backend.key_count() == 2
    assert backend.maintain(clock.time() + 3600.0) == 2
    with sqlite3.connect(tmp_path / "limits.db") as conn:
        assert conn.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone() == (0,)
    backend.close()


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files in /proc")
def test_a_threads_connection_is_closed_when_the_thread_ends(tmp_path: Path) -> None:
    # A thread per request (socketserver.ThreadingMixIn and the like): each thread opened a
    # connection that stayed open for good, until the process ran out of file descriptors
    # (and, failing open, stopped limiting).
    backend = bt.SQLiteBackend(tmp_path / "limits.db")
    rl = bt.RateLimiter(bt.Scope("user", 5, 3600.0), backend=backend, failure_policy="fail_closed")
    before = open_files()
    admitted: list[bool] = []
    for _ in range(50):
        t = threading.Thread(target=lambda: admitted.append(rl.try_acquire("u").allowed))
        t.start()
        t.join()
    assert sum(admitted) == 5
    assert len(backend._files.connections) == 1  # the one __init__ opened in this thread
    assert open_files() <= before + 2  # was + 100: a database and a WAL file per thread
    backend.close()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files in /proc")
def test_each_asyncio_run_leaves_no_connection_behind(tmp_path: Path) -> None:
    backend = bt.SQLiteBackend(tmp_path / "limits.db")
    rl = bt.RateLimiter(bt.Scope("user", 5, 3600.0), backend=backend, failure_policy="fail_closed")

    async def one() -> bool:
        return (await rl.try_acquire_async("u")).allowed

    before = open_files()
    assert sum(asyncio.run(one()) for _ in range(10)) == 5  # each run: new worker threads
    assert len(backend._files.connections) == 1
    assert open_files() <= before + 2
    backend.close()


def test_close_closes_every_live_threads_connection(tmp_path: Path) -> None:
    backend = bt.SQLiteBackend(tmp_path / "limits.db")
    opened: list[sqlite3.Connection] = []
    ready, go_on = threading.Event(), threading.Event()

    def worker() -> None:
        backend.decide(["k"], [TokenBucket(10, 1.0)], 1, 0.0)
        opened.append(backend._files.local.conn)
        ready.set()
        go_on.wait()  # alive while the backend is closed

    t = threading.Thread(target=worker)
    t.start()
    ready.wait()
    backend.close()
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        opened[0].execute("SELECT 1")
    go_on.set()
    t.join()
    assert backend.get("k") is not None  # the backend opens a new connection when used again
    backend.close()


def test_a_forked_child_never_closes_the_parents_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = bt.SQLiteBackend(tmp_path / "limits.db")
    parents = backend._files.local.conn
    # As in a child after fork: another pid, the parent's connection still in this thread.
    monkeypatch.setattr(os, "getpid", lambda: -1)
    backend.decide(["k"], [TokenBucket(10, 1.0)], 1, 0.0)
    assert backend._files.local.conn is not parents  # a connection of the child's own
    assert parents in _INHERITED  # the parent's is kept as it is: neither used nor closed
    assert parents.execute("SELECT 1").fetchone() == (1,)
    backend.close()
    assert parents.execute("SELECT 1").fetchone() == (1,)
    monkeypatch.undo()
    _INHERITED.remove(parents)
    parents.close()


def read_only_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on, the backend opens its file read-only, as it would a file it may not write
    (tests run as root, which may write any file whatever its mode): SQLite answers reads and
    refuses writes with SQLITE_READONLY, as for a file whose permissions forbid writing."""
    connect = sqlite3.connect

    def read_only(path: str, **kwargs: Any) -> sqlite3.Connection:
        return connect(f"file:{path}?mode=ro", uri=True, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", read_only)


def test_a_peek_never_ends_an_outage_of_a_locked_file(
    tmp_path: Path, clock: bt.ManualClock, event_log: Any
) -> None:
    path = tmp_path / "limits.db"
    backend = bt.SQLiteBackend(path, timeout=0.05)
    rl = three_scopes(backend, clock, failure_policy="fail_closed", backend_retry_interval=0)
    ctx = {"user": "u1", "org": "o1"}
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        with pytest.raises(bt.BackendError, match="database is locked"):
            rl.try_acquire(ctx)
        assert rl.peek(ctx).allowed  # WAL: the read answers while writes cannot
        assert rl.snapshot().backend_status == "down"
        assert rl.check_backend() == "down"  # it takes the write lock: it cannot
        assert event_log.named("buttress", "rate_limiter", "backend_recovered") == []
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert rl.check_backend() == "ok"  # the lock is free: the outage is over
    assert len(event_log.named("buttress", "rate_limiter", "backend_recovered")) == 1
    assert backend.key_count() == 0  # nothing was written by the checks
    backend.close()


def test_a_file_that_became_read_only_stays_down_until_writable(
    tmp_path: Path, clock: bt.ManualClock, monkeypatch: pytest.MonkeyPatch, event_log: Any
) -> None:
    backend = bt.SQLiteBackend(tmp_path / "limits.db")
    rl = three_scopes(backend, clock, failure_policy="fail_closed", backend_retry_interval=0)
    ctx = {"user": "u1", "org": "o1"}
    assert rl.try_acquire(ctx)
    read_only_connections(monkeypatch)
    backend.close()  # connections opened from now on are read-only
    for _ in range(3):
        with pytest.raises(bt.BackendError, match="readonly database"):
            rl.try_acquire(ctx)
        assert rl.peek(ctx).remaining == 3  # reads answer, with the state written before
        assert rl.check_backend() == "down"
    assert len(event_log.named("buttress", "rate_limiter", "backend_down")) == 1
    assert event_log.named("buttress", "rate_limiter", "backend_recovered") == []
    monkeypatch.undo()
    backend.close()
    assert rl.check_backend() == "ok"
    assert rl.try_acquire(ctx).remaining == 3
    backend.close()


def test_a_file_it_cannot_write_is_refused_at_construction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "limits.db"
    bt.SQLiteBackend(path).close()  # the file exists, with its table
    read_only_connections(monkeypatch)
    with pytest.raises(bt.ConfigError, match=r"is read-only here .*must be writable") as info:
        bt.SQLiteBackend(path)
    assert info.value.path == "path"
    with pytest.raises(bt.ConfigError, match="unable to open") as info:
        bt.SQLiteBackend(tmp_path / "missing.db")  # read-only: cannot even be created
    assert info.value.path == "path"


def test_a_file_locked_by_another_process_is_no_bad_path(
    tmp_path: Path, clock: bt.ManualClock
) -> None:
    # A lock held while the backend is made is a wait, not a configuration error: the backend
    # is made, and the failure policy covers the decisions until the lock is released.
    path = tmp_path / "limits.db"
    bt.SQLiteBackend(path).close()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        backend = bt.SQLiteBackend(path, timeout=0.05)
        rl = three_scopes(backend, clock, failure_policy="fail_closed", backend_retry_interval=0)
        with pytest.raises(bt.BackendError, match="locked"):
            rl.try_acquire({"user": "u1", "org": "o1"})
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert rl.try_acquire({"user": "u1", "org": "o1"})
    backend.close()


class WatchedClock(bt.ManualClock):
    """A ManualClock that knows which threads have read its wall time (a test waits on that,
    never on a sleep, to know a decision has taken its time and gone on to the lock)."""

    def __init__(self) -> None:
        super().__init__()
        self.readers: set[int] = set()
        self.read = threading.Condition()

    def time(self) -> float:
        now = super().time()
        with self.read:
            self.readers.add(threading.get_ident())
            self.read.notify_all()
        return now


def test_a_decision_that_waited_for_the_lock_is_made_at_the_time_it_got_it(
    tmp_path: Path,
) -> None:
    """The edge of a fixed window: five decisions take their time late in window 1, then wait
    for the write lock held by another process, which, in window 2, deletes window 1's row as
    expired. Decided at the time read before the wait, the five found no row and counted
    afresh in window 1 (which had admitted its 5 already): window 1 admitted 10, and window 2
    then admitted 5 more on top. Decided at the time read under the lock, they are window 2's."""
    path = tmp_path / "limits.db"
    clock = WatchedClock()
    assert clock.time() % 1.0 == 0.0  # a whole second: window 1 starts now
    backend = bt.SQLiteBackend(path, timeout=60.0)
    rl = bt.RateLimiter(
        [bt.Scope("user", 5, 1.0, algorithm="fixed_window")], backend=backend, clock=clock
    )
    clock.advance(0.5)
    assert sum(rl.try_acquire("u").allowed for _ in range(6)) == 5  # window 1: full

    other = sqlite3.connect(path, isolation_level=None)  # another process
    other.execute("BEGIN IMMEDIATE")
    clock.advance(0.49)  # start + 0.99: the last moment of window 1
    admitted: list[bool] = []
    waiters = [
        threading.Thread(target=lambda: admitted.append(rl.try_acquire("u").allowed))
        for _ in range(5)
    ]
    for t in waiters:
        t.start()
    with clock.read:  # each has read the time (then waits for the lock: it is held)
        assert clock.read.wait_for(lambda: {t.ident for t in waiters} <= clock.readers, timeout=60)
    clock.advance(0.21)  # start + 1.2: window 2
    # The other process's cleanup, at its time: window 1's row has expired.
    other.execute("DELETE FROM buttress_ratelimit WHERE expires <= ?", (clock.time(),))
    other.execute("COMMIT")
    other.close()
    for t in waiters:
        t.join()

    in_window_2 = sum(admitted) + sum(rl.try_acquire("u").allowed for _ in range(6))
    assert in_window_2 == 5  # exactly the limit (it was 10)
    d = rl.peek("u")  # all charged to window 2, which ends at start + 2
    assert (d.allowed, d.remaining, d.reset_after) == (False, 0, pytest.approx(0.8))
    backend.close()


def remove(path: Path, how: str) -> None:
    """Delete the file (and its -wal and -shm files, as ``rm limits.db*`` does), or replace it
    by renaming a new database over it."""
    if how == "replaced":
        fresh = path.with_name("fresh.db")
        sqlite3.connect(fresh).close()
        os.replace(fresh, path)
        return
    path.unlink()
    if how == "deleted_with_wal":
        for suffix in ("-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)


@pytest.mark.parametrize("how", ["deleted", "deleted_with_wal", "replaced"])
def test_a_file_deleted_under_running_limiters_is_reopened_and_the_limit_stays_exact(
    tmp_path: Path,
    clock: bt.ManualClock,
    how: str,
    caplog: pytest.LogCaptureFixture,
    event_log: Any,
) -> None:
    """Workers running on the old file, and one started after it went: one limit, exact."""
    path = tmp_path / "limits.db"
    scopes = [bt.Scope("user", 100, 60.0, algorithm="fixed_window")]
    workers = [bt.RateLimiter(scopes, backend=bt.SQLiteBackend(path), clock=clock) for _ in "ab"]
    assert sum(w.try_acquire("u").allowed for w in workers for _ in range(25)) == 50
    remove(path, how)
    workers.append(bt.RateLimiter(scopes, backend=bt.SQLiteBackend(path), clock=clock))

    admitted = sum(w.try_acquire("u").allowed for _ in range(100) for w in workers)
    assert admitted == 100  # the old file's count is lost; then one limit for all (it was 150)
    assert [w.check_backend() for w in workers] == ["ok"] * 3
    # Reported once by each worker that had the old file open (as each process would).
    replaced = event_log.named("buttress", "rate_limiter", "backend_file_replaced", path=str(path))
    assert len(replaced) == 2
    warnings = [r for r in caplog.records if "deleted or replaced" in r.getMessage()]
    assert [(r.name, r.levelname) for r in warnings] == [("buttress.rate_limiter", "WARNING")] * 2
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA quick_check").fetchall() == [("ok",)]
    for w in workers:
        w.backend.close()  # type: ignore[attr-defined]


def test_a_file_that_cannot_be_reopened_is_a_backend_outage_until_it_can(
    tmp_path: Path, clock: bt.ManualClock, event_log: Any
) -> None:
    """``check_backend`` says what a decision would meet: not the old file, which is gone."""
    where = tmp_path / "state"
    where.mkdir()
    path = where / "limits.db"
    rl = bt.RateLimiter(
        [bt.Scope("user", 5, 60.0)],
        backend=bt.SQLiteBackend(path),
        clock=clock,
        failure_policy="fail_closed",
        backend_retry_interval=0,
    )
    assert all(rl.try_acquire("u") for _ in range(3))
    for file in where.iterdir():
        file.unlink()
    where.rmdir()  # the file cannot be made again at its path
    assert rl.check_backend() == "down"
    with pytest.raises(bt.BackendError):
        rl.try_acquire("u")
    where.mkdir()
    assert rl.check_backend() == "ok"
    assert sum(rl.try_acquire("u").allowed for _ in range(6)) == 5  # a new file, a fresh limit
    assert len(event_log.named("buttress", "rate_limiter", "backend_file_replaced")) == 1
    rl.backend.close()  # type: ignore[attr-defined]


def test_a_corrupt_file_is_refused_at_construction_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "limits.db"
    backend = bt.SQLiteBackend(path)
    rl = bt.RateLimiter([bt.Scope("user", 5, 60.0)], backend=backend)
    for i in range(2000):
        rl.try_acquire(f"user-{i}")
    backend.close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    assert pages > 8
    with path.open("r+b") as f:  # damage the rows' pages, not the schema's (page 1)
        f.seek(3 * page)
        f.write(b"\xa5" * (4 * page))
    corrupt = r"path: .*limits\.db' is corrupt \(PRAGMA quick_check"
    with pytest.raises(bt.ConfigError, match=corrupt):
        bt.SQLiteBackend(path)


def test_get_names_a_value_that_is_no_state(tmp_path: Path) -> None:
    backend = bt.SQLiteBackend(tmp_path / "limits.db")
    try:
        conn = sqlite3.connect(tmp_path / "limits.db")
        with conn:
            conn.execute("INSERT INTO buttress_ratelimit VALUES ('k', 1e18, x'0102030405')")
        conn.close()
        with pytest.raises(bt.BackendError, match=r"unreadable rate-limit state under k .*5 bytes"):
            backend.get("k")
        assert backend.get("absent") is None
    finally:
        backend.close()
