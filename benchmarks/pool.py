"""Connection pool overhead and fairness: buttress against psycopg_pool, SQLAlchemy's QueuePool
and generic-connection-pool, in one run.

    make bench BENCH=pool              # or: python benchmarks/pool.py [--quick]

1. checkout + checkin of a trivial resource, 1 thread (ns/op, best of interleaved rounds);
2. 8 threads on 4 members (checkouts/s, median of rounds);
3. asyncio: 100 tasks on 10 members (checkouts/s), yielding to the loop between checkouts
   (nobody waits) and holding the member across one loop turn (most checkouts wait);
4. real PostgreSQL (psycopg): checkout + ``SELECT 1`` + checkin, 1 thread (µs/op), when a
   server answers at BUTTRESS_PG_DSN;
5. fairness: 32 threads on 4 members, each holding 1 ms: the fewest checkouts any one thread
   got (against the mean) and the worst wait.

Every pool is used the way its documentation recommends (``with pool.connection()`` or its
equivalent); psycopg's ``getconn``/``putconn`` is shown too. The machine is shared and noisy:
ratios within one run are what to read.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any
from urllib.parse import urlparse

import psycopg
import psycopg_pool
from generic_connection_pool.asyncio import BaseConnectionManager as GAsyncManager
from generic_connection_pool.asyncio import ConnectionPool as GAsyncPool
from generic_connection_pool.threading import BaseConnectionManager as GManager
from generic_connection_pool.threading import ConnectionPool as GPool
from psycopg.pq import TransactionStatus
from sqlalchemy.pool import QueuePool

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from buttress import AsyncConnectionPool, ConnectionPool

QUICK = "--quick" in sys.argv
PG_DSN = os.environ.get("BUTTRESS_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")

Acquire = Callable[[], AbstractContextManager[Any]]


# -- trivial resources for each pool -----------------------------------------------------------


class Trivial:
    """A resource that costs nothing: what is left is the pool's own overhead."""

    closed = False

    def close(self) -> None:
        self.closed = True

    def rollback(self) -> None:  # SQLAlchemy resets on return
        pass


class _IdleStatus:
    transaction_status = TransactionStatus.IDLE


class FakePsycopg(Trivial):
    """What psycopg_pool needs of a connection, and nothing more."""

    pgconn = _IdleStatus()
    broken = False
    _pool: Any = None
    _expire_at = float("inf")
    _created_at = 0.0

    @classmethod
    def connect(cls, conninfo: str = "", **kwargs: Any) -> FakePsycopg:
        return cls()

    def __enter__(self) -> FakePsycopg:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class TrivialManager(GManager[str, Trivial]):
    def create(self, endpoint: str, timeout: float | None = None) -> Trivial:
        return Trivial()

    def dispose(self, endpoint: str, conn: Trivial, timeout: float | None = None) -> None:
        conn.close()


class AsyncTrivialManager(GAsyncManager[str, Trivial]):
    async def create(self, endpoint: str, timeout: float | None = None) -> Trivial:
        return Trivial()

    async def dispose(self, endpoint: str, conn: Trivial, timeout: float | None = None) -> None:
        conn.close()


class Pools:
    """Each pool of ``size`` trivial members, warmed up, with a ``with``-style acquire."""

    def __init__(self, size: int) -> None:
        self.ours = ConnectionPool(create=Trivial, min_size=size, max_size=size)
        self.ours.open(wait=True)
        self.psycopg = psycopg_pool.ConnectionPool(
            "", connection_class=FakePsycopg, min_size=size, max_size=size, open=True
        )
        self.psycopg.wait()
        self.sqlalchemy = QueuePool(Trivial, pool_size=size, max_overflow=0)
        self.generic = GPool[str, Trivial](TrivialManager(), min_idle=size, max_size=size)

    def acquirers(self) -> dict[str, Acquire]:
        sa, gp = self.sqlalchemy, self.generic

        @contextmanager
        def sqlalchemy_connection() -> Iterator[Any]:
            conn = sa.connect()
            try:
                yield conn
            finally:
                conn.close()

        return {
            "buttress": self.ours.connection,
            "psycopg_pool": self.psycopg.connection,
            "sqlalchemy QueuePool": sqlalchemy_connection,
            "generic-connection-pool": lambda: gp.connection("ep"),
        }

    def close(self) -> None:
        self.ours.close()
        self.psycopg.close()
        self.sqlalchemy.dispose()
        self.generic.close()


# -- measurements ------------------------------------------------------------------------------


def single_thread(
    acquirers: dict[str, Acquire], extra: dict[str, Callable[[], None]]
) -> dict[str, float]:
    """ns per checkout+checkin; rounds interleave the pools so drift hits all alike."""
    cycles: dict[str, Callable[[], None]] = {}
    for name, acquire in acquirers.items():

        def cycle(acquire: Acquire = acquire) -> None:
            with acquire():
                pass

        cycles[name] = cycle
    cycles.update(extra)
    n, rounds = (2_000, 5) if QUICK else (5_000, 25)
    best = dict.fromkeys(cycles, float("inf"))
    for fn in cycles.values():
        for _ in range(500):
            fn()
    for _ in range(rounds):
        for name, fn in cycles.items():
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t0) / n * 1e9)
    return best


def threaded(acquire: Acquire, threads: int, seconds: float, hold: float = 0.0) -> list[int]:
    """Each thread checks out and in as fast as it can; checkouts per thread."""
    stop = threading.Event()
    counts = [0] * threads

    def run(i: int) -> None:
        n = 0
        while not stop.is_set():
            with acquire():
                if hold:
                    time.sleep(hold)
            n += 1
        counts[i] = n

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    stop.wait(seconds)
    stop.set()
    for w in workers:
        w.join()
    return counts


def eight_on_four(acquirers: dict[str, Acquire]) -> dict[str, float]:
    rounds, seconds = (1, 0.5) if QUICK else (3, 1.0)
    results: dict[str, list[float]] = {name: [] for name in acquirers}
    for _ in range(rounds):
        for name, acquire in acquirers.items():
            results[name].append(sum(threaded(acquire, 8, seconds)) / seconds)
    return {name: statistics.median(v) for name, v in results.items()}


def fairness(acquirers: dict[str, Acquire]) -> dict[str, tuple[int, float, float]]:
    """32 threads on 4 members holding 1 ms: (fewest checkouts, mean, worst wait in s)."""
    seconds = 1.0 if QUICK else 2.5
    out = {}
    lock = threading.Lock()
    for name, acquire in acquirers.items():
        worst = [0.0]

        @contextmanager
        def timed(acquire: Acquire = acquire, worst: list[float] = worst) -> Iterator[Any]:
            t0 = time.perf_counter()
            with acquire() as conn:
                waited = time.perf_counter() - t0
                if waited > worst[0]:
                    with lock:
                        worst[0] = max(worst[0], waited)
                yield conn

        counts = threaded(timed, 32, seconds, hold=0.001)
        out[name] = (min(counts), statistics.mean(counts), worst[0])
    return out


# -- asyncio -----------------------------------------------------------------------------------


async def asyncio_run(hold: bool) -> dict[str, float]:
    size, tasks = 10, 100
    seconds = 0.5 if QUICK else 1.0
    ours = AsyncConnectionPool(create=Trivial, min_size=size, max_size=size)
    await ours.open(wait=True)
    theirs = psycopg_pool.AsyncConnectionPool(
        "", connection_class=AsyncFakePsycopg, min_size=size, max_size=size, open=False
    )
    await theirs.open(wait=True)
    generic = GAsyncPool[str, Trivial](AsyncTrivialManager(), min_idle=size, max_size=size)
    acquirers: dict[str, Callable[[], Any]] = {
        "buttress": ours.connection,
        "psycopg_pool": theirs.connection,
        "generic-connection-pool": lambda: generic.connection("ep"),
    }
    rounds = 1 if QUICK else 3
    results: dict[str, list[float]] = {name: [] for name in acquirers}
    for _ in range(rounds):
        for name, acquire in acquirers.items():
            stop = asyncio.Event()
            count = [0]

            async def worker(
                acquire: Callable[[], Any] = acquire,
                count: list[int] = count,
                stop: asyncio.Event = stop,
            ) -> None:
                while not stop.is_set():
                    async with acquire():
                        if hold:
                            await asyncio.sleep(0)  # hold across one turn of the loop
                    if not hold:
                        await asyncio.sleep(0)  # let the other tasks run between checkouts
                    count[0] += 1

            running = [asyncio.create_task(worker()) for _ in range(tasks)]
            await asyncio.sleep(seconds)
            stop.set()
            await asyncio.gather(*running)
            results[name].append(count[0] / seconds)
    await ours.aclose()
    await theirs.close()
    await generic.close()
    return {name: statistics.median(v) for name, v in results.items()}


class AsyncFakePsycopg(FakePsycopg):
    @classmethod
    async def connect(cls, conninfo: str = "", **kwargs: Any) -> AsyncFakePsycopg:  # type: ignore[override]
        return cls()

    async def __aenter__(self) -> AsyncFakePsycopg:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    async def close(self) -> None:  # type: ignore[override]
        self.closed = True


# -- real PostgreSQL ---------------------------------------------------------------------------


def postgres_reachable() -> bool:
    url = urlparse(PG_DSN)
    try:
        with socket.create_connection((url.hostname or "127.0.0.1", url.port or 5432), 1.0):
            return True
    except OSError:
        return False


class PgManager(GManager[str, Any]):
    def create(self, endpoint: str, timeout: float | None = None) -> Any:
        return psycopg.connect(PG_DSN, autocommit=True)

    def dispose(self, endpoint: str, conn: Any, timeout: float | None = None) -> None:
        conn.close()


def postgres_run() -> dict[str, float]:
    """µs per checkout + SELECT 1 + checkin on one thread."""
    size = 2

    def connect() -> Any:
        return psycopg.connect(PG_DSN, autocommit=True)

    ours = ConnectionPool(create=connect, min_size=size, max_size=size)
    ours.open(wait=True)
    theirs = psycopg_pool.ConnectionPool(
        PG_DSN, kwargs={"autocommit": True}, min_size=size, max_size=size, open=True
    )
    theirs.wait()
    sa = QueuePool(connect, pool_size=size, max_overflow=0)
    generic = GPool[str, Any](PgManager(), min_idle=size, max_size=size)

    @contextmanager
    def sqlalchemy_connection() -> Iterator[Any]:
        conn = sa.connect()
        try:
            yield conn.dbapi_connection
        finally:
            conn.close()

    acquirers: dict[str, Acquire] = {
        "buttress": ours.connection,
        "psycopg_pool": theirs.connection,
        "sqlalchemy QueuePool": sqlalchemy_connection,
        "generic-connection-pool": lambda: generic.connection("ep"),
    }
    n, rounds = (200, 2) if QUICK else (500, 5)
    best = dict.fromkeys(acquirers, float("inf"))
    for _ in range(rounds):
        for name, acquire in acquirers.items():
            t0 = time.perf_counter()
            for _ in range(n):
                with acquire() as conn:
                    conn.execute("SELECT 1").fetchone()
            best[name] = min(best[name], (time.perf_counter() - t0) / n * 1e6)
    ours.close()
    theirs.close()
    sa.dispose()
    generic.close()
    return best


# -- report ------------------------------------------------------------------------------------


def table(title: str, unit: str, figures: dict[str, float], *, lower_is_better: bool) -> None:
    print(f"\n{title}")
    ours = figures["buttress"]
    print(f"  {'pool':32s} {unit:>14s}   buttress vs it")
    for name, value in figures.items():
        ratio = value / ours if lower_is_better else ours / value
        shown = f"{ratio:.1f}x" if name != "buttress" else "–"
        print(f"  {name:32s} {value:14,.0f}   {shown}")


def main() -> int:
    t_start = time.perf_counter()
    print(f"buttress pool benchmark (python {sys.version.split()[0]}, {os.cpu_count()} cpus)")

    pools = Pools(4)
    acquirers = pools.acquirers()
    ours, theirs = pools.ours, pools.psycopg

    def ours_checkout_release() -> None:
        lease = ours.checkout()
        lease.release()

    def psycopg_getconn_putconn() -> None:
        theirs.putconn(theirs.getconn())

    one = single_thread(
        acquirers,
        {
            "buttress checkout()/release()": ours_checkout_release,
            "psycopg_pool getconn()/putconn()": psycopg_getconn_putconn,
        },
    )
    table("1 thread, checkout + checkin", "ns/op", one, lower_is_better=True)
    table("8 threads on 4 members", "checkouts/s", eight_on_four(acquirers), lower_is_better=False)
    for hold, how in ((False, "yielding between checkouts"), (True, "holding one loop turn")):
        table(
            f"asyncio: 100 tasks on 10 members, {how}",
            "checkouts/s",
            asyncio.run(asyncio_run(hold)),
            lower_is_better=False,
        )
    if postgres_reachable():
        table(
            "real PostgreSQL: checkout + SELECT 1 + checkin, 1 thread",
            "µs/op",
            postgres_run(),
            lower_is_better=True,
        )
    else:
        print(f"\nreal PostgreSQL: skipped, nothing answers at {PG_DSN}")

    print("\nfairness: 32 threads on 4 members, each holding 1 ms")
    print(f"  {'pool':32s} {'fewest':>8s} {'mean':>8s} {'fewest/mean':>12s} {'worst wait':>11s}")
    for name, (fewest, mean, worst) in fairness(acquirers).items():
        print(f"  {name:32s} {fewest:8d} {mean:8.0f} {fewest / mean:12.2f} {worst * 1e3:9.1f}ms")
    pools.close()
    print(f"\n({time.perf_counter() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
