"""asyncpg, kept: a team's own ``asyncpg.Pool`` with a circuit breaker, a cap on concurrent
use, a health check and metrics. See docs/integrations/postgres-pools.md.

>>> pool = await asyncpg.create_pool("postgresql://app@db/app", max_size=10)  # doctest: +SKIP
>>> db = ProtectedPool(pool, breaker=bt.CircuitBreaker("db"))                 # doctest: +SKIP
>>> async with db.acquire() as conn:                                           # doctest: +SKIP
...     await conn.fetchval("select 1")
>>> infra.watch_pool("db", db)   # in infra.health() and the exporters         # doctest: +SKIP

Each ``acquire()`` is one use (``buttress.integrations._pools`` says how a use is admitted
and counted). What counts as the database failing: an ``OSError`` (could not connect), a
``PostgresError`` whose SQLSTATE is of class 08 (the connection was lost, ...), 53, 57 or 58,
any error once the connection was closed under the caller,
and a timeout while running a statement (``timeout=`` of a query: the server did not answer
in time) or while connecting (waiting for a connection with room to make one). A wait that
timed out while every connection was lent means the pool is busy, and counts for nothing;
other errors (syntax, constraints) mean the database answered.

The wrapper owns nothing: create and close the pool as before. asyncpg counts no waiting
callers: ``waiting`` is the wrapper's own count of callers in ``acquire()``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

try:
    import asyncpg  # type: ignore[import-untyped]
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ImportError(
        "buttress.integrations.asyncpg needs asyncpg: pip install asyncpg (the 'asyncpg' extra)"
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

__all__ = ["ProtectedPool", "verdict"]


def verdict(exc: BaseException | None, lent: bool, full: bool, lost: bool = False) -> Verdict:
    """How a use that ended on ``exc`` counts: ``lent`` whether it had its connection,
    ``full`` whether the pool's every connection was lent, ``lost`` whether its connection
    was closed under it (see the module docstring); pure."""
    if exc is None:
        return "success"
    if lost:
        # What asyncpg raises then varies with the moment the loss is noticed:
        # ConnectionDoesNotExistError, an InternalClientError about the protocol's state, or
        # an InterfaceError once the pool has taken the dead connection back.
        return "failure"
    if isinstance(exc, TimeoutError):
        return "failure" if lent else wait_failed(full)
    if isinstance(exc, OSError):
        return "failure"
    if isinstance(exc, asyncpg.PostgresError):
        return "failure" if server_failed(exc.sqlstate) else "success"
    return "neutral"


def figures(pool: Any) -> DriverFigures:
    """What the pool says of itself."""
    return DriverFigures(
        size=pool.get_size(),
        idle=pool.get_idle_size(),
        min_size=pool.get_min_size(),
        max_size=pool.get_max_size(),
        waiting=0,
        closed=pool.is_closing(),
    )


def _lost(conn: Any) -> bool:
    """Whether a lent connection was closed under its caller: closed, or already taken back
    by the pool (which asyncpg does on its own when the server ends the connection)."""
    try:
        return bool(conn.is_closed())
    except asyncpg.InterfaceError:  # "connection has been released back to the pool"
        return True


class ProtectedPool(GuardedPool):
    """An ``asyncpg.Pool`` whose ``acquire()`` passes a breaker and a cap.

    ``breaker``: a :class:`~buttress.CircuitBreaker` (``None``: the cap and the figures
    only). ``max_concurrent``: the most callers using or waiting for a connection at once;
    more are refused at once with :class:`~buttress.LoadShedError` (default twice the pool's
    ``max_size``). ``name``: the pool's name in reports.
    """

    def __init__(
        self,
        pool: Any,
        *,
        breaker: CircuitBreaker | None = None,
        max_concurrent: int | None = None,
        name: str = "asyncpg",
    ) -> None:
        if not isinstance(pool, asyncpg.Pool):
            raise TypeError(f"expected an asyncpg.Pool, got {pool!r}")
        self.pool = pool
        cap = default_cap(pool.get_max_size()) if max_concurrent is None else max_concurrent
        self._guard = Guard(name, breaker, cap)

    def _figures(self) -> DriverFigures:
        return figures(self.pool)

    @asynccontextmanager
    async def acquire(self, *, timeout: float | None = None) -> AsyncIterator[Any]:
        """``pool.acquire(timeout=timeout)`` under the cap and the breaker."""
        guard = self._guard
        ticket = guard.enter()
        lent = lost = False
        try:
            async with self.pool.acquire(timeout=timeout) as conn:
                guard.lent()
                lent = True
                try:
                    yield conn
                except BaseException:
                    lost = _lost(conn)
                    raise
        except BaseException as exc:
            pool = self.pool
            full = pool.get_size() >= pool.get_max_size() and not pool.get_idle_size()
            judged = verdict(exc, lent, full, lost)
            guard.exit(ticket, lent, exc, judged, isinstance(exc, TimeoutError) and not lent)
            raise
        guard.exit(ticket, lent, None, "success")
