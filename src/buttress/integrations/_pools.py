"""What the wrappers of a driver's own pool share (``psycopg_pool``, ``asyncpg``), free of any
driver: a breaker around each use, a cap on concurrent use, and the pool's numbers as a
:class:`~buttress.PoolSnapshot`, which the health report judges and the exporters publish as
they do buttress's own pools (``infra.watch_pool(name, wrapped)``).

A *use* is one borrowed connection, from asking for it to giving it back. It is

* refused at once with :class:`~buttress.LoadShedError` when ``max_concurrent`` callers are
  already inside (using a connection or waiting for one): the cap keeps a slow database from
  gathering every worker of the service in the pool's queue;
* refused with the breaker's refusal while the breaker is open;
* counted by the breaker as the driver's classifier says (:data:`Verdict`): ``failure`` when a
  connection-level error ended it (see :func:`server_failed`), ``success`` when the database
  answered (an SQL error included: the statement's fault, not the server's), ``neutral``
  (counted nowhere) when it ended on something that says nothing about the database: the
  application's own exception, a cancellation, a wait for a connection that timed out while
  the pool was merely full.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .._breaker import CircuitBreaker
from .._errors import LoadShedError
from .._fork import fork_safe_lock
from .._health import ComponentCheck, pool_check
from .._pool import PoolSnapshot
from .._redact import redact_text

Verdict = Literal["failure", "success", "neutral"]
Ticket = tuple[int, int, float]

# SQLSTATE classes in which the server or the connection failed, not the statement:
# 08 connection exception, 53 insufficient resources (too many connections, disk full),
# 57 operator intervention (admin or crash shutdown, cannot connect now, query cancelled),
# 58 system error (I/O). An error with no SQLSTATE was raised by the client: it could not
# connect, or lost the connection.
SERVER_CLASSES = frozenset({"08", "53", "57", "58"})


def server_failed(sqlstate: str | None) -> bool:
    """Whether an error with this SQLSTATE (``None``: raised by the client library, not the
    server) says the database or the connection failed, rather than the statement."""
    return sqlstate is None or sqlstate[:2] in SERVER_CLASSES


def wait_failed(full: bool) -> Verdict:
    """A wait for a connection timed out: neutral when every connection was lent (``full``:
    merely busy, which, as for buttress's own pool, says nothing about the database), else a
    failure (the pool had room to connect, so connecting is what failed)."""
    return "neutral" if full else "failure"


@dataclass(frozen=True, slots=True)
class DriverFigures:
    """What a driver's pool says of itself (the wrapper adds its own counts)."""

    size: int  # open connections
    idle: int
    min_size: int
    max_size: int
    waiting: int  # callers waiting for a connection, where the driver counts them (else 0)
    connects: int = 0
    connect_errors: int = 0
    closed: bool = False
    in_use: int | None = None  # lent out, where size - idle is not that (None: it is)


class Guard:
    """The breaker and the cap around one driver pool's uses, and their counts."""

    def __init__(
        self,
        name: str,
        breaker: CircuitBreaker | None,
        max_concurrent: int,
    ) -> None:
        if breaker is not None and not isinstance(breaker, CircuitBreaker):
            raise TypeError(f"breaker must be a buttress.CircuitBreaker or None, got {breaker!r}")
        if isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int):
            raise TypeError(f"max_concurrent must be an int, got {max_concurrent!r}")
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be at least 1, got {max_concurrent}")
        self.name = name
        self.breaker = breaker
        self.max_concurrent = max_concurrent
        self._lock = fork_safe_lock()
        self.waiting = 0  # inside, no connection yet
        self.in_use = 0  # inside, holding a connection
        self.checkouts = 0
        self.shed = 0  # refused by the cap
        self.timeouts = 0  # waits for a connection that timed out
        self.failing = 0  # uses ended by a connection error in a row (0 after any success)
        self.failures = 0
        self.last_error: str | None = None

    def enter(self) -> Ticket | None:
        """Admit one use (the cap, then the breaker) or raise the refusal."""
        with self._lock:
            inside = self.waiting + self.in_use
            if inside >= self.max_concurrent:
                self.shed += 1
                raise LoadShedError(
                    f"{inside} callers already use or wait for a connection "
                    f"(max_concurrent={self.max_concurrent})",
                    source=self.name,
                )
            self.waiting += 1
        if self.breaker is None:
            return None
        try:
            return self.breaker.begin()
        except BaseException:
            with self._lock:
                self.waiting -= 1
            raise

    def lent(self) -> None:
        """The use got its connection."""
        with self._lock:
            self.waiting -= 1
            self.in_use += 1
            self.checkouts += 1

    def exit(
        self,
        ticket: Ticket | None,
        lent: bool,
        exc: BaseException | None,
        verdict: Verdict,
        timed_out: bool = False,
    ) -> None:
        """The use ended (``exc``: how, ``None`` for normally), judged ``verdict``."""
        with self._lock:
            if lent:
                self.in_use -= 1
            else:
                self.waiting -= 1
            if timed_out:
                self.timeouts += 1
            if verdict == "failure":
                self.failing += 1
                self.failures += 1
                self.last_error = redact_text(repr(exc))
            elif verdict == "success":
                self.failing = 0
                self.last_error = None
        breaker = self.breaker
        if breaker is None or ticket is None:
            return
        if verdict == "failure" and exc is not None:
            breaker.end(ticket, exc)  # classified by the breaker's record / ignore
        elif verdict == "success":
            breaker.end(ticket)
        else:
            breaker.release(ticket)

    def snapshot(self, figures: DriverFigures) -> PoolSnapshot:
        """The driver's figures and this guard's counts, in buttress's pool vocabulary."""
        with self._lock:
            return snapshot(
                self.name,
                figures,
                waiting=self.waiting,
                checkouts=self.checkouts,
                timeouts=self.timeouts,
                rejected=self.shed,
                failing=self.failing,
                failures=self.failures,
                last_error=self.last_error,
            )

    def check(self, figures: DriverFigures) -> ComponentCheck:
        """The health report's verdict on the pool (as on buttress's own pools)."""
        return pool_check(self.name, self.snapshot(figures))


def snapshot(
    name: str,
    figures: DriverFigures,
    *,
    waiting: int = 0,
    checkouts: int = 0,
    timeouts: int = 0,
    rejected: int = 0,
    failing: int = 0,
    failures: int = 0,
    last_error: str | None = None,
) -> PoolSnapshot:
    """A driver pool's :class:`~buttress.PoolSnapshot`: its own figures, and what the wrapper
    counted (``failing``: connection errors in a row, reported as ``connect_failures`` so the
    health check fails a pool that has nothing to lend while they go on); what a driver does
    not tell (wait times, overflow) is 0."""
    if not failing and figures.connect_errors and figures.size < figures.min_size:
        # No use failed (no traffic, say), but the driver's own connects have, and it is
        # short of min_size: the database may be gone while nobody asks.
        failing = 1
    return PoolSnapshot(
        name=name,
        size=figures.size,
        idle=figures.idle,
        in_use=max(0, figures.size - figures.idle) if figures.in_use is None else figures.in_use,
        checking=0,
        overflow=0,
        overflow_in_use=0,
        waiting=max(figures.waiting, waiting),
        connecting=0,
        generation=0,
        min_size=figures.min_size,
        max_size=figures.max_size,
        max_overflow=0,
        checkouts=checkouts,
        waited=0,
        timeouts=timeouts,
        rejected=rejected,
        cancelled=0,
        wait_p50=0.0,
        wait_p95=0.0,
        wait_p99=0.0,
        wait_max=0.0,
        connects=figures.connects,
        connect_errors=max(figures.connect_errors, failures),
        connect_failures=failing,
        last_connect_error=last_error,
        check_failures=0,
        invalidations=0,
        leaks=0,
        evictions={},
        closed=figures.closed,
    )


class GuardedPool:
    """What every wrapper of a driver's pool shows of its :class:`Guard`: its name, breaker
    and cap, and the pool's numbers (``_figures``: what the driver says of itself) as a
    snapshot and a health check."""

    _guard: Guard

    def _figures(self) -> DriverFigures:
        raise NotImplementedError

    @property
    def name(self) -> str:
        return self._guard.name

    @property
    def breaker(self) -> CircuitBreaker | None:
        return self._guard.breaker

    @property
    def max_concurrent(self) -> int:
        return self._guard.max_concurrent

    def snapshot(self) -> PoolSnapshot:
        """The pool's numbers as buttress's pools report theirs (size, idle, in use, waiting;
        uses refused by the cap as ``rejected``)."""
        return self._guard.snapshot(self._figures())

    def check(self) -> ComponentCheck:
        """The health report's verdict on the pool: ``report.with_checks([db.check()])``."""
        return self._guard.check(self._figures())

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} max_concurrent={self.max_concurrent}>"


def default_cap(max_size: int) -> int:
    """``max_concurrent`` when none is given: twice the pool's ``max_size`` (as many callers
    waiting as using), so a database that slows down holds at most that many workers."""
    return 2 * max(1, max_size)
