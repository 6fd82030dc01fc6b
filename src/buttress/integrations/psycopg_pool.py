"""psycopg_pool, kept: a team's own ``ConnectionPool`` / ``AsyncConnectionPool`` with a circuit
breaker, a cap on concurrent use, a health check and metrics. See
docs/integrations/postgres-pools.md.

>>> pool = ConnectionPool("postgresql://app@db/app", max_size=10)     # doctest: +SKIP
>>> db = ProtectedPool(pool, breaker=bt.CircuitBreaker("db"))          # doctest: +SKIP
>>> with db.connection() as conn:                                       # doctest: +SKIP
...     conn.execute("select 1")
>>> infra.watch_pool("db", db)   # in infra.health() and the exporters  # doctest: +SKIP

Each ``connection()`` is one use (``buttress.integrations._pools`` says how a use is admitted
and counted). What counts as the database failing: a ``psycopg.OperationalError`` raised by
the client (could not connect, connection lost) or with a SQLSTATE of class 08, 53, 57 or 58;
a ``PoolTimeout`` while the pool had room to connect. A ``PoolTimeout`` while every
connection was lent through the wrapper means the pool is busy, and counts for nothing (so
take the pool's connections through the wrapper only: one taken around it looks like one the
pool could not make); other errors (syntax, constraints, serialization failures) mean the
database answered.

The wrapper owns nothing: open and close the pool as before.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Generic, TypeVar

try:
    import psycopg
    from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ImportError(
        "buttress.integrations.psycopg_pool needs psycopg_pool: "
        "pip install psycopg-pool (the 'psycopg-pool' extra)"
    ) from exc

from .._breaker import CircuitBreaker
from ._pools import (
    DriverFigures,
    Guard,
    GuardedPool,
    Verdict,
    default_cap,
    server_failed,
    wait_failed,
)

__all__ = ["AsyncProtectedPool", "ProtectedPool", "verdict"]

CT = TypeVar("CT", bound="psycopg.Connection[Any]")
ACT = TypeVar("ACT", bound="psycopg.AsyncConnection[Any]")

AnyPool = ConnectionPool[Any] | AsyncConnectionPool[Any]


def verdict(exc: BaseException | None, full: bool) -> Verdict:
    """How a use that ended on ``exc`` counts, ``full`` whether every connection was lent
    (see the module docstring); pure."""
    if exc is None:
        return "success"
    if isinstance(exc, PoolTimeout):
        return wait_failed(full)
    if isinstance(exc, psycopg.OperationalError):
        return "failure" if server_failed(exc.sqlstate) else "success"
    if isinstance(exc, psycopg.Error):
        return "success"  # the database answered: the statement was wrong
    return "neutral"


def figures(pool: AnyPool, lent: int) -> DriverFigures:
    """What the pool says of itself (``get_stats()``, which resets nothing), and ``lent``:
    the connections lent through the wrapper. Its ``pool_size`` also counts the connections
    the pool is still trying to make (a dead database's pool is never empty by it), so the
    size is what is idle and what is lent; who waits is the wrapper's count."""
    stats = pool.get_stats()
    idle = stats.get("pool_available", 0)
    return DriverFigures(
        size=idle + lent,
        idle=idle,
        min_size=pool.min_size,
        max_size=pool.max_size,
        # Not requests_waiting: it keeps the waiters that gave up until a connection comes
        # (a dead database's pool "has" every caller that timed out waiting); the wrapper
        # counts its own.
        waiting=0,
        connects=stats.get("connections_num", 0),
        connect_errors=stats.get("connections_errors", 0),
        closed=pool.closed,
        in_use=lent,
    )


class _Protected(GuardedPool):
    def __init__(
        self,
        pool: AnyPool,
        breaker: CircuitBreaker | None,
        max_concurrent: int | None,
        name: str | None,
    ) -> None:
        if not isinstance(pool, ConnectionPool | AsyncConnectionPool):
            raise TypeError(f"expected a psycopg_pool pool, got {pool!r}")
        self.pool = pool
        cap = default_cap(pool.max_size) if max_concurrent is None else max_concurrent
        self._guard = Guard(name or pool.name, breaker, cap)

    def _figures(self) -> DriverFigures:
        return figures(self.pool, self._guard.in_use)

    def _exit(self, ticket: Any, lent: bool, exc: BaseException | None) -> None:
        # Full: lent through this wrapper, since psycopg_pool's own pool_size also counts
        # the connections it is still trying to make (a dead database's pool is never full).
        guard = self._guard
        full = guard.in_use >= self.pool.max_size
        guard.exit(ticket, lent, exc, verdict(exc, full), isinstance(exc, PoolTimeout))


class ProtectedPool(_Protected, Generic[CT]):
    """A ``psycopg_pool.ConnectionPool`` whose ``connection()`` passes a breaker and a cap.

    ``breaker``: a :class:`~buttress.CircuitBreaker` (``None``: the cap and the figures
    only). ``max_concurrent``: the most callers using or waiting for a connection at once;
    more are refused at once with :class:`~buttress.LoadShedError` (default twice the pool's
    ``max_size``). ``name``: the pool's name in reports (default the pool's own).
    """

    pool: ConnectionPool[CT]

    def __init__(
        self,
        pool: ConnectionPool[CT],
        *,
        breaker: CircuitBreaker | None = None,
        max_concurrent: int | None = None,
        name: str | None = None,
    ) -> None:
        if not isinstance(pool, ConnectionPool):
            raise TypeError(f"expected a psycopg_pool.ConnectionPool, got {pool!r}")
        super().__init__(pool, breaker, max_concurrent, name)

    @contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[CT]:
        """``pool.connection(timeout)`` under the cap and the breaker."""
        ticket = self._guard.enter()
        lent = False
        try:
            with self.pool.connection(timeout=timeout) as conn:
                self._guard.lent()
                lent = True
                yield conn
        except BaseException as exc:
            self._exit(ticket, lent, exc)
            raise
        self._exit(ticket, lent, None)


class AsyncProtectedPool(_Protected, Generic[ACT]):
    """A ``psycopg_pool.AsyncConnectionPool`` whose ``connection()`` passes a breaker and a
    cap; the settings are :class:`ProtectedPool`'s."""

    pool: AsyncConnectionPool[ACT]

    def __init__(
        self,
        pool: AsyncConnectionPool[ACT],
        *,
        breaker: CircuitBreaker | None = None,
        max_concurrent: int | None = None,
        name: str | None = None,
    ) -> None:
        if not isinstance(pool, AsyncConnectionPool):
            raise TypeError(f"expected a psycopg_pool.AsyncConnectionPool, got {pool!r}")
        super().__init__(pool, breaker, max_concurrent, name)

    @asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[ACT]:
        """``pool.connection(timeout)`` under the cap and the breaker."""
        ticket = self._guard.enter()
        lent = False
        try:
            async with self.pool.connection(timeout=timeout) as conn:
                self._guard.lent()
                lent = True
                yield conn
        except BaseException as exc:
            self._exit(ticket, lent, exc)
            raise
        self._exit(ticket, lent, None)
