"""SQLAlchemy 2.x, sync and asyncio engines: a circuit breaker, and optionally a retry, around
an engine's connections, through the engine's own events. See docs/integrations/sqlalchemy.md.

>>> engine = create_engine("postgresql+psycopg://app@db/app", pool_pre_ping=True)  # doctest: +SKIP
>>> guard = protect_engine(engine, breaker=bt.CircuitBreaker("db"))  # doctest: +SKIP

What the breaker counts, event by event:

* ``do_connect``: each new DBAPI connection is one call. The breaker admits it (while open,
  ``engine.connect()`` raises the breaker's refusal and nothing connects), a failed connect is
  a failure, and ``retry`` (a :class:`~buttress.Retry`) tries the connect again. A refusal
  is never retried: waiting out an open breaker inside ``engine.connect()`` would hold the
  caller for the breaker's whole recovery time.
* ``checkout``: lending a pooled connection is one call, admitted by the breaker; it ends at
  ``checkin`` (or ``detach``), a success unless a connection-level error ended it first.
* ``handle_error``: an error on a lent connection is a failure when :func:`connection_error`
  says so (the connection was lost, the server shut down or ran out of connections); any
  other error (syntax, a unique violation) means the database answered.

A refused checkout is SQLAlchemy's checkout failing: it gives the pooled connection back
invalidated (closed), so while the breaker is open the pool empties, and it fills again as
calls succeed.

Why the engine keeps SQLAlchemy's pool rather than buttress's :class:`~buttress.ConnectionPool`:
a ``poolclass`` must be a ``sqlalchemy.pool.Pool`` that hands out SQLAlchemy's connection
records, and a record owns its DBAPI connection: it connects through the creator, reconnects
in place after an invalidation, recycles, resets on return and fires the pool events. Backed
by our pool, every connection would have two owners deciding its lifetime. ``NullPool`` with a
``creator`` that lends from our pool is no better: ``NullPool`` closes the connection at every
checkin, so the creator would have to hand out a proxy whose ``close()`` returns the lease,
and then an invalidation (a lost connection) and a plain checkin look alike to it; the
dialect would also run its on-connect set-up at every checkout, and the asyncio dialects wrap
the driver's connection in their own adapter. So the engine keeps its pool, which already
does what ours does (a size, an overflow, a checkout timeout, pre-ping, recycle), and the
breaker, the retry and the figures join it through its events.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

try:
    from sqlalchemy import event
    from sqlalchemy import exc as sa_exc
    from sqlalchemy.engine import Dialect, Engine, ExceptionContext
    from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection, QueuePool
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ImportError(
        "buttress.integrations.sqlalchemy needs SQLAlchemy 2: "
        "pip install 'sqlalchemy[asyncio]>=2' (the 'sqlalchemy' extra)"
    ) from exc

from .._breaker import CircuitBreaker
from .._clock import SystemClock
from .._errors import RejectedError
from .._fork import fork_safe_lock
from .._health import ComponentCheck, pool_check
from .._pool import PoolSnapshot
from .._redact import redact_text
from .._retry import Retry
from .._retry._core import ServiceCalls
from ._pools import DriverFigures, Ticket, server_failed, snapshot

try:
    from sqlalchemy.util import await_ as _await
except ImportError:  # SQLAlchemy 2.0 (await_only goes in 2.2)
    from sqlalchemy.util import await_only as _await

__all__ = ["EngineGuard", "connection_error", "protect_engine"]

_TICKET = "buttress.ticket"  # the checkout's ticket, in the connection record's info


def connection_error(context: ExceptionContext) -> bool:
    """Whether an error on a connection says the database or the connection failed: a
    disconnect as the dialect sees it, or an ``OperationalError`` raised by the driver itself
    or with a SQLSTATE of class 08, 53, 57 or 58 (on databases whose errors carry no SQLSTATE,
    every ``OperationalError``). Integrity and programming errors never are."""
    if context.is_disconnect:
        return True
    if not isinstance(context.sqlalchemy_exception, sa_exc.OperationalError):
        return False
    original = context.original_exception
    sqlstate = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    return server_failed(sqlstate if isinstance(sqlstate, str) else None)


class _LoopClock(SystemClock):
    """The system clock whose ``sleep`` waits on the event loop: a retried connect of an
    asyncio engine runs in SQLAlchemy's greenlet, where ``time.sleep`` would stop the loop."""

    __slots__ = ()

    def sleep(self, seconds: float) -> None:  # type: ignore[override]
        _await(asyncio.sleep(seconds))


class _Refused(BaseException):
    """Carries a refusal out of ``Retry.run_retried`` untouched (it retries ``Exception``)."""

    def __init__(self, refusal: RejectedError) -> None:
        super().__init__(refusal)
        self.refusal = refusal


class EngineGuard:
    """A breaker (and a retry of connects) on one engine; made by :func:`protect_engine`.

    ``snapshot()`` / ``check()`` report the engine's pool as buttress reports its own
    (``infra.watch_pool("db", guard)``); ``remove()`` takes the listeners off again.
    """

    def __init__(
        self,
        engine: Engine,
        breaker: CircuitBreaker,
        retry: Retry | None,
        is_failure: Callable[[ExceptionContext], bool],
        name: str,
    ) -> None:
        self.engine = engine
        self.breaker = breaker
        self.retry = retry
        self.is_failure = is_failure
        self.name = name
        clock = _LoopClock() if engine.dialect.is_async else SystemClock()
        self._calls = ServiceCalls(name, None, clock, None)
        self._lock = fork_safe_lock()
        self.connects = 0
        self.checkouts = 0
        self.failures = 0
        self.failing = 0  # connection errors in a row (0 after any success)
        self.last_error: str | None = None
        self._listeners: list[tuple[Any, str, Callable[..., Any]]] = [
            (engine, "do_connect", self._do_connect),
            (engine, "checkout", self._checkout),
            (engine, "checkin", self._checkin),
            (engine, "detach", self._checkin),  # the pool's part ends, with no checkin
            (engine, "handle_error", self._handle_error),
        ]
        for target, name_, fn in self._listeners:
            event.listen(target, name_, fn)

    def remove(self) -> None:
        """Take the listeners off the engine: it runs unprotected from now on."""
        for target, name_, fn in self._listeners:
            if event.contains(target, name_, fn):
                event.remove(target, name_, fn)

    # -- the events ----------------------------------------------------------------------------

    def _do_connect(
        self,
        dialect: Dialect,
        record: ConnectionPoolEntry | None,
        cargs: list[Any],
        cparams: dict[str, Any],
    ) -> Any:
        connect = functools.partial(self._connect_once, dialect, cargs, cparams)
        try:
            if self.retry is None:
                return connect()
            return self.retry.run_retried(connect, (), {}, self._calls)
        except _Refused as refused:
            raise refused.refusal from None

    def _connect_once(self, dialect: Dialect, cargs: list[Any], cparams: dict[str, Any]) -> Any:
        try:
            ticket = self.breaker.begin()
        except RejectedError as refusal:
            raise _Refused(refusal) from None
        try:
            connection = dialect.connect(*cargs, **cparams)
        except BaseException as exc:
            self._failed(exc)
            self.breaker.end(ticket, exc)
            raise
        self.breaker.end(ticket)
        with self._lock:
            self.connects += 1
            self.failing = 0
            self.last_error = None
        return connection

    def _checkout(
        self, dbapi_connection: Any, record: ConnectionPoolEntry, proxy: PoolProxiedConnection
    ) -> None:
        # A refusal raised here fails the checkout: SQLAlchemy invalidates the connection.
        record.info[_TICKET] = self.breaker.begin()
        with self._lock:
            self.checkouts += 1

    def _checkin(self, dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        # Also on detach: the record goes back to the pool without a checkin, ticket and all.
        ticket: Ticket | None = record.info.pop(_TICKET, None)
        if ticket is not None:
            self.breaker.end(ticket)
            with self._lock:
                self.failing = 0
                self.last_error = None

    def _handle_error(self, context: ExceptionContext) -> None:
        if context.is_pre_ping or context.connection is None:
            return  # a connect's own error is counted by _connect_once; a ping's by its reconnect
        info = _record_info(context.connection)
        if info is None or _TICKET not in info or not self.is_failure(context):
            return
        ticket: Ticket = info.pop(_TICKET)
        error = context.original_exception
        self._failed(error)
        self.breaker.end(ticket, error)

    def _failed(self, error: BaseException) -> None:
        with self._lock:
            self.failures += 1
            self.failing += 1
            self.last_error = redact_text(repr(error))

    # -- reporting -------------------------------------------------------------------------------

    def snapshot(self) -> PoolSnapshot:
        """The engine's pool in buttress's pool vocabulary (size, idle and in use as its
        ``QueuePool`` counts them; for other pool classes, only what this guard counted)."""
        pool = self.engine.pool
        if isinstance(pool, QueuePool):
            idle, lent = pool.checkedin(), pool.checkedout()
            figures = DriverFigures(lent + idle, idle, 0, pool.size(), 0, self.connects)
        else:
            figures = DriverFigures(0, 0, 0, 0, 0, self.connects)
        with self._lock:
            return snapshot(
                self.name,
                figures,
                checkouts=self.checkouts,
                failing=self.failing,
                failures=self.failures,
                last_error=self.last_error,
            )

    def check(self) -> ComponentCheck:
        """The health report's verdict on the engine's pool: ``report.with_checks([g.check()])``."""
        return pool_check(self.name, self.snapshot())

    def __repr__(self) -> str:
        return f"<EngineGuard {self.name!r} breaker={self.breaker.name!r}>"


def _record_info(connection: Any) -> dict[Any, Any] | None:
    """The connection record's ``info`` of a ``Connection`` (``None`` once it has none)."""
    try:
        return connection.info  # type: ignore[no-any-return]
    except sa_exc.SQLAlchemyError:  # closed or invalidated meanwhile
        return None


def protect_engine(
    engine: Any,
    *,
    breaker: CircuitBreaker,
    retry: Retry | None = None,
    is_failure: Callable[[ExceptionContext], bool] = connection_error,
    name: str | None = None,
) -> EngineGuard:
    """Put ``breaker`` (and ``retry``, for connects) on ``engine``'s connections.

    ``engine``: an ``Engine`` or an ``AsyncEngine``. ``breaker``: a
    :class:`~buttress.CircuitBreaker` (``infra.breakers["db"]`` to see it in the
    infrastructure's health report). ``retry``: a :class:`~buttress.Retry` for connects (a
    statement is never retried: after a lost connection, only the application knows whether
    its transaction can run again). ``is_failure``: which errors on a lent connection count
    as failures (default :func:`connection_error`). ``name``: the pool's name in reports
    (default the breaker's). Returns the :class:`EngineGuard`.

    The guard makes each connection itself, in its ``do_connect`` listener, and SQLAlchemy runs
    no ``do_connect`` listener after one that returned a connection: register yours (a token
    as the password, say) before calling this. For an asyncio engine, give ``retry`` no clock
    of its own: without one it waits on the event loop.
    """
    sync_engine = getattr(engine, "sync_engine", engine)  # an AsyncEngine's events are its own
    if not isinstance(sync_engine, Engine):
        raise TypeError(f"protect_engine: expected an Engine or an AsyncEngine, got {engine!r}")
    if not isinstance(breaker, CircuitBreaker):
        raise TypeError(
            f"protect_engine: breaker must be a buttress.CircuitBreaker, got {breaker!r}"
        )
    if retry is not None and not isinstance(retry, Retry):
        raise TypeError(f"protect_engine: retry must be a buttress.Retry or None, got {retry!r}")
    if not callable(is_failure):
        raise TypeError(f"protect_engine: is_failure must be a callable, got {is_failure!r}")
    return EngineGuard(sync_engine, breaker, retry, is_failure, name or breaker.name)
