"""The pool shell: reads the clock, waits, wakes, connects, checks and closes.

Every decision is the pure core's (``_state.py``). The asyncio pool, in ``_pool_async.py``, is
written by hand; the threaded one, in ``_pool.py``, is generated from it by
``tools/async_to_sync.py``.
"""

from __future__ import annotations

import functools
import os
import random
import sys
import traceback
import weakref
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final, Literal, NoReturn

from .. import events
from .._clock import Clock, SystemClock
from .._concurrency import (
    ACell,
    ALock,
    Stragglers,
    acall,
    acall_within,
    acurrent_owner,
    aspawn,
    owner_alive,
    stop_nowait,
    weak_job,
)
from .._deprecated import warn_renamed
from .._errors import ConfigError, PoolClosedError, PoolTimeoutError
from .._fork import call_in_forked_child, reseed_in_child
from .._redact import redact_text, redacted_logger
from .._scheduler import AsyncScheduler, Handle
from ._config import FIELDS, PoolConfig
from ._state import (
    CHECKED_IN,
    IN_USE,
    NEEDS_LOCK,
    NEEDS_SERVE,
    SHUT_OUT,
    Effects,
    Member,
    PoolSnapshot,
    PoolState,
    Waiter,
)

_log = redacted_logger("buttress.pool")

EV_CONNECT: Final = ("buttress", "pool", "connect")
EV_CHECKOUT: Final = ("buttress", "pool", "checkout")
EV_CHECKIN: Final = ("buttress", "pool", "checkin")
EV_CHECK: Final = ("buttress", "pool", "check")
EV_TIMEOUT: Final = ("buttress", "pool", "timeout")
EV_MEMBER_CLOSE: Final = ("buttress", "pool", "close")
EV_POOL_CLOSED: Final = ("buttress", "pool", "shutdown")

# Use the pool's checkout_timeout.
_CONFIGURED: Final[Any] = object()

# Connects given up at connect_timeout whose threads still hang: while this many do, no new
# connect starts (each would only add a thread and a socket to a server that does not answer).
MAX_STRAGGLERS: Final = 4


# Members a forked child let go of (its parent's connections): see _after_fork.
_INHERITED: list[Any] = []

_attached = events.attached  # empty while no handler listens: the leases test it first
_listening = events.enabled


def _default_close(resource: Any) -> Any:
    close = getattr(resource, "close", None)
    return close() if callable(close) else None


def _close_late(close: Callable[[Any], Any], name: str, resource: Any) -> None:
    # A connect that returned after its deadline, in its own (thread) worker: nobody wants it.
    try:
        close(resource)
    except Exception as exc:
        _log.warning("pool %r: closing a connection made too late failed: %r", name, exc)


_HERE = os.path.dirname(os.path.abspath(__file__))


def _capture_stack() -> traceback.StackSummary:
    # Only with leak_timeout set: the stack that took the member (the pool's own frames left
    # out), for the leak report.
    frames = (
        (f, line)
        for f, line in traceback.walk_stack(sys._getframe(1))
        if os.path.dirname(f.f_code.co_filename) != _HERE
    )
    stack = traceback.StackSummary.extract(frames, limit=32, lookup_lines=False)
    stack.reverse()
    return stack


class AsyncLease:
    """One checkout from an :class:`AsyncConnectionPool`.

    ``async with apool.connection() as conn:`` checks out on entry and returns on exit. Keep
    the lease to report a broken connection::

        lease = apool.connection()
        async with lease as conn:
            try:
                await conn.execute("...")
            except OSError:
                lease.invalidate()
                raise

    A lease from :meth:`AsyncConnectionPool.checkout` belongs to the task that took it: if it
    ends without returning it, the pool destroys the member. ``adopt()`` hands it to the
    current task.
    """

    __slots__ = ("_invalid", "_member", "_pool", "_timeout")

    def __init__(self, pool: AsyncConnectionPool, timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout
        self._member: Member | None = None
        # None, or what invalidate() said: whether to retire older members too.
        self._invalid: bool | None = None

    @property
    def connection(self) -> Any:
        """The pooled resource; only while the lease holds it."""
        m = self._member
        if m is None:
            raise RuntimeError("this lease holds no connection (not entered, or returned)")
        return m.resource

    @property
    def held(self) -> bool:
        return self._member is not None

    def invalidate(self, *, retire_older: bool = False) -> None:
        """The connection is broken: destroy it when returned instead of reusing it.

        ``retire_older`` also retires every member made before now (after a disconnect,
        the others are usually dead too), unless this member was made before the last such
        retirement: then it is only destroyed, and the members made since are kept.
        """
        self._invalid = bool(self._invalid) or retire_older

    def adopt(self) -> None:
        """Make the current task the holder (before the task that took it ends)."""
        m = self._member
        if m is not None:
            m.owner = acurrent_owner()

    async def release(self) -> None:
        """Return the connection to the pool (once; later calls do nothing)."""
        await self._pool._checkin(self, None)

    async def __aenter__(self) -> Any:
        if self._member is not None:
            raise RuntimeError("this lease already holds a connection")
        pool = self._pool
        now = pool._monotonic()
        m = pool._try_checkout(now)
        if m is None or pool._slow_checkout:
            m = await pool._checkout_slow(m, now, self._timeout)
        self._member = m
        if _attached and _listening(EV_CHECKOUT):
            pool._emit_checkout(m, now)
        return m.resource

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        m = self._member
        pool = self._pool
        if m is not None and exc_type is None and self._invalid is None and pool._reset is None:
            # The common case: nothing to run; put it back without the lock when possible.
            self._member = None
            now = pool._monotonic()
            code = pool._try_checkin(m, now)
            if _attached and _listening(EV_CHECKIN):
                pool._emit_checkin(m, now, None)
            if code != CHECKED_IN:
                await pool._checkin_locked(m, now, code)
            return False
        await pool._checkin(self, exc_type)
        return False

    def __del__(self) -> None:
        m = self._member
        if m is not None:
            self._pool._dropped(m)

    def __repr__(self) -> str:
        m = self._member
        return f"<AsyncLease {self._pool.name!r} {'member ' + str(m.id) if m else 'not held'}>"


class AsyncConnectionPool:
    """A pool of any resource for asyncio: database connections, clients, sockets.

    >>> pool = AsyncConnectionPool(create=connect, max_size=10)     # doctest: +SKIP
    >>> async with pool.connection() as conn:                        # doctest: +SKIP
    ...     await conn.execute("SELECT 1")

    ``create()`` makes a resource, ``close(resource)`` closes one (default: its ``close()``
    method), ``check(resource)`` tells whether it still works (raising or returning False
    means broken), ``reset(resource)`` runs on every return (raising means broken).
    Each may be a plain or a coroutine function.
    ``invalidate_on`` lists exception types that, leaving a ``connection()`` block, mean the
    connection broke: it is destroyed and every older member retired (unless it is itself older
    than the last such retirement: then only it goes). Settings are the fields of
    :class:`PoolConfig` (keywords, or ``config=``). Background work runs on ``scheduler=``
    (:class:`AsyncScheduler`); without one the pool owns one and stops it on :meth:`aclose`.
    """

    def __init__(
        self,
        *,
        create: Callable[[], Any],
        close: Callable[[Any], Any] | None = None,
        check: Callable[[Any], Any] | None = None,
        reset: Callable[[Any], Any] | None = None,
        name: str = "pool",
        invalidate_on: tuple[type[BaseException], ...] = (),
        config: PoolConfig | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        seed: int | None = None,
        scheduler: AsyncScheduler | None = None,
        **settings: Any,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError("name", f"must be a non-empty string, got {name!r}")
        for arg, fn in (("create", create), ("close", close), ("check", check), ("reset", reset)):
            if (fn is not None or arg == "create") and not callable(fn):
                raise ConfigError(arg, f"must be callable, got {fn!r}")
        if isinstance(invalidate_on, type):
            invalidate_on = (invalidate_on,)
        if not isinstance(invalidate_on, tuple) or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in invalidate_on
        ):
            raise ConfigError(
                "invalidate_on", f"must be a tuple of exception types, got {invalidate_on!r}"
            )
        unknown = sorted(set(settings) - FIELDS)
        if unknown:
            raise ConfigError(
                unknown[0], f"unknown pool setting (known: {', '.join(sorted(FIELDS))})"
            )
        if config is not None and not isinstance(config, PoolConfig):
            raise ConfigError("config", f"must be a PoolConfig, got {config!r}")
        if config is None:
            config = PoolConfig(**settings)
        elif settings:
            config = PoolConfig(**{**{f: getattr(config, f) for f in FIELDS}, **settings})
        if config.health_check_strategy != "passive" and check is None:
            raise ConfigError(
                "check",
                f"health_check_strategy={config.health_check_strategy!r} needs a check callable",
            )
        if scheduler is not None and not isinstance(scheduler, AsyncScheduler):
            raise ConfigError(
                "scheduler", f"must be an instance of AsyncScheduler, got {scheduler!r}"
            )

        self.name = name
        self.config = config
        self._checkout_timeout = config.checkout_timeout
        self._connect_timeout = config.connect_timeout
        self._check_timeout = config.check_timeout
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._monotonic = self.clock.monotonic
        # The system clock times a checkout's wait as the platform does; any other clock (a
        # ManualClock) ends it when it reaches the deadline, not after real seconds.
        self._real_time = type(self.clock) is SystemClock
        self._create = create
        self._close = close if close is not None else _default_close
        self._check = check
        self._reset = reset
        self._invalidate_on = invalidate_on
        self._state = PoolState(
            config, name=name, rng=rng if rng is not None else random.Random(seed)
        )
        self._lock = ALock()
        # The leases' fast paths, bound once.
        self._try_checkout = self._state.try_checkout
        self._try_checkin = self._state.try_checkin
        self._track_leaks = config.leak_timeout is not None
        # The lease's fast path hands over to _checkout_slow for anything beyond a pop.
        self._slow_checkout = self._track_leaks or self._state.checks_on_checkout
        self._closing: deque[tuple[Member, str]] = deque()
        self._closer_scheduled = False
        # Closers started after the pool closed, held until they end (asyncio tasks only).
        self._closers: set[Any] = set()
        self._dropped_leases: deque[Member] = deque()
        self._started = False
        self._shut_down = False
        self._next_maintenance: Handle | None = None
        self._connect_booked: Handle | None = None  # the one connect booked (Rule 5)
        self._handles: list[Handle] = []
        self._owns_scheduler = scheduler is None
        self._scheduler = (
            scheduler
            if scheduler is not None
            else AsyncScheduler(clock=self.clock, name=f"buttress-pool-{name}")
        )
        self._stragglers = Stragglers(functools.partial(_close_late, self._close, name))
        # When the pool is dropped unclosed: stop its jobs (and its own scheduler).
        weakref.finalize(self, _forget, self._scheduler, self._owns_scheduler, self._handles)
        call_in_forked_child(self._after_fork)

    # -- borrowing -------------------------------------------------------------------------------

    def connection(self, timeout: float | None = _CONFIGURED) -> AsyncLease:
        """A lease to use with ``async with``: checks out on entry, returns on exit.

        Waits up to ``timeout`` seconds (default: ``checkout_timeout``; None: for ever) and
        raises :class:`~buttress.PoolTimeoutError` when nothing came free.
        """
        if timeout is _CONFIGURED:
            return AsyncLease(self, self._checkout_timeout)
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout >= 0
        ):
            raise ConfigError("timeout", f"must be a number >= 0 or None, got {timeout!r}")
        return AsyncLease(self, timeout)

    async def checkout(self, timeout: float | None = _CONFIGURED) -> AsyncLease:
        """Check out now; give it back with ``await lease.release()``.

        Such a lease belongs to the current task: if it ends without releasing it,
        housekeeping destroys the member and makes another (``lease.adopt()`` moves it to
        another task). A ``connection()`` block needs no such watch: it always returns.
        """
        lease = self.connection(timeout)
        await lease.__aenter__()
        m = lease._member
        assert m is not None
        m.owner = acurrent_owner()
        return lease

    async def _checkout_slow(
        self, m: Member | None, started: float, timeout: float | None
    ) -> Member:
        state = self._state
        deadline = None if timeout is None else started + timeout
        now = started
        while True:
            if m is None:
                m = await self._wait_for_member(now, started, deadline)
                now = self._monotonic()
            if state.checks_on_checkout and state.due_for_check(m, now):
                # The check has what is left of the borrower's wait, at most check_timeout: a
                # check that hangs costs the borrower no more than checkout_timeout.
                budget = self._check_timeout
                if deadline is not None:
                    left = deadline - now
                    if left <= 0.0:  # no time left to check it: back, unchecked
                        await self._give_up(m, now, started)
                    budget = left if budget is None else min(budget, left)
                if not await self._run_check(m, "checkout", budget):
                    now = self._monotonic()
                    with self._lock:
                        state.checkout_check_failed(m, now)
                        fx = state.take_effects()
                    if fx is not None:
                        await self._finish(fx)
                    m = None
                    if deadline is not None and now >= deadline:
                        await self._give_up(None, now, started)
                    continue
                now = self._monotonic()
                state.checked_out_ok(m, now)
            m.acquired = now
            if self._track_leaks:
                m.stack = _capture_stack()
                m.leak_reported = False
            return m

    async def _give_up(self, m: Member | None, now: float, started: float) -> NoReturn:
        """The wait ran out while checking members before lending them: raise the timeout.
        ``m``, taken but not checked, goes back as it was."""
        with self._lock:
            self._state.gave_up(m, now)
            fx = self._state.take_effects()
        if fx is not None:
            await self._finish(fx)
        waited = now - started
        self._emit_timeout(waited, "timeout")
        raise self._timeout_error(waited, "; checking a member before lending it took the rest")

    def _timeout_error(self, waited: float, why: str = "") -> PoolTimeoutError:
        failing = self._state.last_connect_error
        if failing is not None:
            why += f"; connecting keeps failing: {failing!r}"
        error = PoolTimeoutError(
            self.name,
            waited=waited,
            message=f"pool {self.name!r}: no connection available after {waited:.3f}s{why}",
            connect_error=failing,
        )
        error.__cause__ = failing
        return error

    def _connecting(self) -> bool:
        """Whether a connect is under way, not waiting out its backoff: real work, timed by no
        clock, that a checkout's wait may end with."""
        state = self._state
        return state.connecting and self._monotonic() >= state.connect_not_before

    async def _wait_for_member(self, now: float, started: float, deadline: float | None) -> Member:
        state = self._state
        if not self._started:
            self._start()
        waiter = Waiter(ACell())
        fx: Effects | None = None
        try:
            with self._lock:
                try:
                    m = state.checkout(now, waiter)
                finally:
                    fx = state.take_effects()
        except (PoolTimeoutError, PoolClosedError) as exc:
            # Carried out even when refused: a refused checkout may have started a connect.
            if fx is not None:
                await self._finish(fx)
            if isinstance(exc, PoolTimeoutError):
                self._emit_timeout(0.0, "queue_full")
            raise
        if fx is not None:
            await self._finish(fx)
        if m is not None:
            return m
        try:
            if deadline is None or self._real_time:
                remaining = None if deadline is None else deadline - self._monotonic()
                woken = await waiter.cell.wait(remaining)
            else:
                woken = await waiter.cell.wait_on_clock(self.clock, deadline, self._connecting)
        except BaseException:
            # Cancelled (or interrupted) while waiting: a member handed over meanwhile is
            # passed on. No await here, so a second cancellation cannot lose it either.
            with self._lock:
                state.abandon(waiter, self._monotonic(), timed_out=False)
                fx = state.take_effects()
            if fx is not None:
                self._apply(fx)
            raise
        if not woken:
            now = self._monotonic()
            with self._lock:
                state.abandon(waiter, now, timed_out=True)
                fx = state.take_effects()
            if fx is not None:
                await self._finish(fx)
            if waiter.state != SHUT_OUT:
                waited = now - started
                self._emit_timeout(waited, "timeout")
                raise self._timeout_error(waited)
        if waiter.state == SHUT_OUT:
            raise PoolClosedError(f"pool {self.name!r} closed while waiting for a connection")
        m = waiter.member
        assert m is not None
        return m

    async def _checkin(self, lease: AsyncLease, exc_type: type[BaseException] | None) -> None:
        m = lease._member
        if m is None:
            return
        lease._member = None
        m.owner = None  # taken with checkout(): no longer watched
        invalid, lease._invalid = lease._invalid, None
        broken = None if invalid is None else "invalidated"
        retire_older = bool(invalid)
        if exc_type is not None and broken is None and issubclass(exc_type, self._invalidate_on):
            broken, retire_older = "error", True
        interrupted: BaseException | None = None
        if broken is None and self._reset is not None:
            try:
                await acall(self._reset, m.resource)
            except Exception as exc:
                broken = "reset_failed"
                _log.warning(
                    "pool %r: reset failed; member %d destroyed", self.name, m.id, exc_info=exc
                )
            except BaseException as exc:
                # Cancelled (or interrupted) during reset: no failure of the connection's, but
                # its state is unknown. Destroy the member, then re-raise.
                broken, interrupted = "reset_failed", exc
                _log.debug(
                    "pool %r: reset interrupted (%r); member %d destroyed", self.name, exc, m.id
                )
        now = self._monotonic()
        if _listening(EV_CHECKIN):
            self._emit_checkin(m, now, broken)
        code = NEEDS_LOCK
        if broken is None:
            code = self._state.try_checkin(m, now)
            if code == CHECKED_IN:
                return
        await self._checkin_locked(m, now, code, broken, retire_older, interrupted)

    async def _checkin_locked(
        self,
        m: Member,
        now: float,
        code: int,
        broken: str | None = None,
        retire_older: bool = False,
        interrupted: BaseException | None = None,
    ) -> None:
        state = self._state
        with self._lock:
            if code == NEEDS_SERVE:
                state.serve(now)
            else:
                state.checkin(m, now, broken=broken, retire_older=retire_older)
            fx = state.take_effects()
        if fx is not None:
            if interrupted is not None:
                self._apply(fx)  # no await while a cancellation is on its way out
            else:
                await self._finish(fx)
        if interrupted is not None:
            raise interrupted

    def _dropped(self, m: Member) -> None:
        # From a lease's finalizer, in any thread, perhaps inside our own lock: only atomic
        # appends and a lock-free scheduler request here.
        self._dropped_leases.append(m)
        if not self._shut_down:
            self._scheduler.call_later(0.0, weak_job(self.run_maintenance), blocking=True)

    # -- background work ---------------------------------------------------------------------------

    def _start(self) -> None:
        if self._started or self._shut_down:
            return
        self._started = True
        interval = self.config.housekeeping_interval
        self._handles.append(
            self._scheduler.call_every(
                interval, weak_job(self.run_maintenance), jitter=0.1, blocking=True
            )
        )
        with self._lock:
            self._state.open(self._monotonic())
            fx = self._state.take_effects()
        if fx is not None:
            self._apply(fx)

    async def open(self, *, wait: bool = False) -> None:
        """Start the pool: keep ``min_size`` members and housekeeping running.

        A pool also starts by itself at its first checkout. With ``wait``, the missing
        ``min_size`` members are connected first, here, and a connect error is raised.
        """
        if self._shut_down:
            raise PoolClosedError(f"pool {self.name!r} is closed")
        if wait:
            while True:
                with self._lock:
                    go = self._state.reserve_connect()
                if not go:
                    break
                await self._connect(raise_errors=True)
        self._start()

    async def _connect(self, *, raise_errors: bool = False) -> None:
        state = self._state
        if self._shut_down and not raise_errors:
            with self._lock:
                state.connecting = False  # booked before the close, on a shared scheduler
            return
        t0 = self._monotonic()
        try:
            if self._stragglers.count >= MAX_STRAGGLERS:
                raise TimeoutError(
                    f"pool {self.name!r}: {self._stragglers.count} connects given up at "
                    "connect_timeout still hang; none starts until one of them returns"
                )
            resource = await acall_within(
                self._connect_timeout,
                f"pool {self.name!r}: connect",
                self._create,
                stragglers=self._stragglers,
            )
        except BaseException as exc:
            now = self._monotonic()
            with self._lock:
                backoff = state.connect_failed(now, exc)
                fx = state.take_effects()
            # A connect that ends after close() (it ran in a worker, which close does not wait
            # for) is the closed pool's no more: nothing to report.
            reported = not self._shut_down or raise_errors
            if reported and isinstance(exc, Exception):
                _log.warning(
                    "pool %r: connect failed (%r); next attempt in %.3fs", self.name, exc, backoff
                )
            if reported and _listening(EV_CONNECT):
                events.emit(
                    EV_CONNECT,
                    {"duration": now - t0, "retry_in": backoff},
                    {
                        "pool": self.name,
                        "member": None,
                        "ok": False,
                        "error": redact_text(repr(exc)),
                    },
                )
            if fx is not None:
                self._apply(fx)
            if raise_errors or not isinstance(exc, Exception):
                raise
            return
        now = self._monotonic()
        with self._lock:
            m = state.connected(resource, now)
            fx = state.take_effects()
        if (m is not None or not self._shut_down) and _listening(EV_CONNECT):
            events.emit(
                EV_CONNECT,
                {"duration": now - t0, "retry_in": 0.0},
                {"pool": self.name, "member": m.id if m else None, "ok": True, "error": None},
            )
        if fx is not None:
            await self._finish(fx)

    async def run_maintenance(self) -> None:
        """Housekeeping, run by the scheduler; tests call it directly.

        Destroys and replaces members whose borrower died or whose lease was dropped, applies
        ``max_lifetime``, ``overflow_ttl`` and ``idle_timeout`` to idle members, runs the
        active health checks that are due, reports leaks, tops up to ``min_size``, closes
        retired members, and books itself for when something is next due.
        """
        if self._shut_down:
            return
        state = self._state
        now = self._monotonic()
        with self._lock:
            self._reap(now)
            due = state.maintain(now)
            fx = state.take_effects()
        if fx is not None:
            checks = self._apply(fx)
            done = 0
            try:
                for m in checks:
                    if self._shut_down:
                        break  # closed meanwhile: the rest are closed unchecked, below
                    ok = await self._run_check(m, "idle", self._check_timeout)
                    done += 1
                    with self._lock:
                        state.check_done(m, ok, self._monotonic())
                        fx = state.take_effects()
                    if fx is not None:
                        self._apply(fx)
            finally:
                if done < len(checks):
                    # Interrupted (cancelled: a closing pool cancels its scheduler's job), or
                    # closed meanwhile: the members reserved but not checked go back, their
                    # checks still due (or are closed). _run_check destroyed the one it was
                    # checking when interrupted.
                    with self._lock:
                        state.unreserve(checks[done:], self._monotonic())
                        fx = state.take_effects()
                    if fx is not None:
                        self._apply(fx)
        await self._close_retired()
        if due is not None:
            self._book_maintenance(due, now)

    def _reap(self, now: float) -> None:
        # Under the lock: members whose borrower is gone are destroyed (never reused: their
        # state is unknown) and replaced.
        state = self._state
        for m in state.in_use():
            if not owner_alive(m.owner):
                _log.warning(
                    "pool %r: member %d was held by %r, which ended without returning it; "
                    "destroyed",
                    self.name,
                    m.id,
                    m.owner,
                )
                state.discard(m, "dead_borrower", now)
        dropped = self._dropped_leases
        while dropped:
            m = dropped.popleft()
            if m.state == IN_USE:
                _log.warning(
                    "pool %r: a lease on member %d was dropped without being returned; destroyed",
                    self.name,
                    m.id,
                )
                state.discard(m, "dropped", now)

    def _book_maintenance(self, due: float, now: float) -> None:
        # The periodic run comes every housekeeping_interval; book an extra one when a limit
        # falls due before that, so no member outlives max_lifetime by a housekeeping period.
        if due >= now + self.config.housekeeping_interval:
            return
        booked = self._next_maintenance
        if booked is not None and not booked.cancelled and booked.deadline <= due:
            return
        if booked is not None:
            booked.cancel()
        self._next_maintenance = self._scheduler.call_later(
            max(0.0, due - now), weak_job(self.run_maintenance), blocking=True
        )

    async def _run_check(self, m: Member, when: str, timeout: float | None) -> bool:
        assert self._check is not None
        t0 = self._monotonic()
        error: BaseException | None = None
        try:
            what = f"pool {self.name!r}: the {when} check of member {m.id}"
            ok = (await acall_within(timeout, what, self._check, m.resource)) is not False
        except Exception as exc:
            ok, error = False, exc
        except BaseException:
            # Interrupted mid-check: the member's state is unknown, so it goes.
            with self._lock:
                self._state.discard(m, "check_failed", self._monotonic())
                fx = self._state.take_effects()
            if fx is not None:
                self._apply(fx)
            raise
        if not ok:
            _log.info("pool %r: member %d failed its %s check: %r", self.name, m.id, when, error)
        if _listening(EV_CHECK):
            events.emit(
                EV_CHECK,
                {"duration": self._monotonic() - t0},
                {**self._meta(m), "ok": ok, "when": when, "error": repr(error) if error else None},
            )
        return ok

    def _after_fork(self) -> None:
        """In a forked child: let go of the parent's members and start again with our own.

        Closing them here would close them for the parent too (psycopg sends PostgreSQL a
        ``Terminate`` on the socket the parent still uses), so they are let go unclosed, and
        kept from the garbage collector. So are the waiters (threads or tasks that did not
        come along) and the closes and connects the parent had under way. A thread pool
        connects ``min_size`` again at once; an asyncio pool at its first checkout, on the
        child's loop. Counters carry on.
        """
        self._closer_scheduled = False
        self._closers = set()
        self._dropped_leases = deque()
        self._stragglers.forget()
        for h in self._handles:
            h.cancel()
        self._handles.clear()  # the same list: the finalizer holds it
        for booked in (self._next_maintenance, self._connect_booked):
            if booked is not None:
                booked.cancel()  # the parent's: the child books its own
        self._next_maintenance = self._connect_booked = None
        closing, self._closing = self._closing, deque()
        with self._lock:
            dropped = self._state.forget_all()
        # Held for ever, never collected: a driver may say goodbye to the server when an open
        # connection is collected, on the socket the parent still uses (psycopg checks the
        # process id first; not every driver does).
        _INHERITED.extend(m.resource for m in dropped)
        _INHERITED.extend(m.resource for m, _ in closing)
        reseed_in_child(self._state.rng)
        if dropped:
            _log.info(
                "pool %r: forked (pid %d): %d members left to the parent",
                self.name,
                os.getpid(),
                len(dropped),
            )
        started, self._started = self._started, False
        if started and not self._shut_down:
            if True:  # ASYNC
                pass  # no loop runs here yet: the first checkout starts the pool again
            else:
                self._start()

    # -- carrying out the core's decisions ---------------------------------------------------------

    def _apply(self, fx: Effects, *, closing_here: bool = False) -> list[Member]:
        """Do what never waits: wake waiters, emit events, book connects and closes.

        ``closing_here``: the caller closes the retired members itself next. Returns the
        members reserved for a health check (only housekeeping gets any).
        """
        for w in fx.handoffs:
            if not w.cell.wake():
                # Its task gave up (timeout, cancellation) before it could take the member:
                # pass it on.
                with self._lock:
                    self._state.abandon(w, self._monotonic(), timed_out=w.cell.timed_out())
                    more = self._state.take_effects()
                if more is not None:
                    self._apply(more)
        if fx.notes:
            self._emit_notes(fx.notes)
        if fx.close:
            self._closing.extend(fx.close)
            if not closing_here:
                self._start_closer()
        if fx.connect_in is not None:
            if self._shut_down:
                with self._lock:
                    self._state.connecting = False
            else:
                self._connect_booked = self._scheduler.call_later(
                    fx.connect_in, weak_job(self._connect), blocking=True
                )
        return fx.check

    def _start_closer(self) -> None:
        if not self._state.closed:
            if not self._closer_scheduled:
                self._closer_scheduled = True
                self._scheduler.call_later(0.0, weak_job(self._close_retired_job), blocking=True)
            return
        # Closed: the pool's scheduler may be gone, and this may be a cancellation on its way
        # out, where nothing may be awaited. Close them now: the sync pool here, in this
        # thread; the asyncio pool in a task of the running loop.
        aspawn(self._close_retired, self._closers)

    async def _finish(self, fx: Effects) -> None:
        if self._state.closed:  # the closer job may be gone with the scheduler: close here
            self._apply(fx, closing_here=True)
            await self._close_retired()
        else:
            self._apply(fx)

    async def _close_retired_job(self) -> None:
        self._closer_scheduled = False
        await self._close_retired()

    async def _close_retired(self) -> None:
        closing = self._closing
        while closing:
            try:
                m, reason = closing.popleft()
            except IndexError:
                return
            t0 = self._monotonic()
            error: BaseException | None = None
            try:
                await acall(self._close, m.resource)
            except Exception as exc:
                error = exc
                _log.warning("pool %r: closing member %d failed: %r", self.name, m.id, exc)
            if _listening(EV_MEMBER_CLOSE):
                now = self._monotonic()
                events.emit(
                    EV_MEMBER_CLOSE,
                    {"duration": now - t0, "age": now - m.created, "uses": m.uses},
                    {**self._meta(m), "reason": reason, "error": repr(error) if error else None},
                )

    # -- telemetry ---------------------------------------------------------------------------------

    def _meta(self, m: Member) -> dict[str, Any]:
        return {"pool": self.name, "member": m.id}

    def _emit_checkout(self, m: Member, started: float) -> None:
        events.emit(EV_CHECKOUT, {"wait": m.acquired - started}, self._meta(m))

    def _emit_checkin(self, m: Member, now: float, broken: str | None) -> None:
        events.emit(EV_CHECKIN, {"held": now - m.acquired}, {**self._meta(m), "broken": broken})

    def _emit_timeout(self, waited: float, reason: str) -> None:
        _log.info("pool %r: checkout gave up after %.3fs (%s)", self.name, waited, reason)
        if _listening(EV_TIMEOUT):
            events.emit(
                EV_TIMEOUT,
                {"waited": waited, "waiting": self._state.n_waiting},
                {"pool": self.name, "reason": reason},
            )

    def _emit_notes(self, notes: list[tuple[str, Member | None, str]]) -> None:
        now = self._monotonic()
        for kind, m, reason in notes:
            if m is None:
                continue
            if reason == "leak_timeout":  # dead borrowers and dropped leases: see _reap
                stack = "".join(m.stack.format()) if m.stack is not None else None
                _log.warning(
                    "pool %r: member %d held for %.3fs by %r (%s)%s",
                    self.name,
                    m.id,
                    now - m.acquired,
                    m.owner,
                    reason,
                    f"; taken at:\n{stack}" if stack else "",
                )
            name = ("buttress", "pool", kind)
            if not _listening(name):
                continue
            if kind == "expire":
                meas = {"age": now - m.created, "idle": now - m.idle_since}
                md = {**self._meta(m), "reason": reason}
            elif kind == "invalidate":
                meas = {"age": now - m.created}
                md = {**self._meta(m), "reason": reason}
            elif kind == "leak":
                meas = {"held": now - m.acquired}
                md = {
                    **self._meta(m),
                    "reason": reason,
                    "owner": repr(m.owner),
                    "stack": "".join(m.stack.format()) if m.stack is not None else None,
                }
            else:  # overflow
                meas = {"size": float(len(self._state.members))}
                md = self._meta(m)
            events.emit(name, meas, md)

    def trim(self) -> int:
        """Close idle members down to ``min_size`` now (memory pressure); returns how many.

        Not a coroutine, so a memory-pressure callback can call it: the closes run as
        housekeeping. :class:`~buttress.Infrastructure` registers it for ``warning``.
        """
        with self._lock:
            retired = self._state.trim(self._monotonic())
            fx = self._state.take_effects()
        if fx is not None:
            self._apply(fx)
        return retired

    # -- reading -----------------------------------------------------------------------------------

    def snapshot(self) -> PoolSnapshot:
        """The pool's numbers now (see :class:`PoolSnapshot`)."""
        with self._lock:
            return self._state.stats()

    def stats(self) -> PoolSnapshot:
        """Deprecated: :meth:`snapshot`."""
        warn_renamed("AsyncConnectionPool.stats()")
        return self.snapshot()

    @property
    def closed(self) -> bool:
        return self._shut_down

    # -- closing -----------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close: waiters get :class:`~buttress.PoolClosedError`, idle members are closed now,
        members in use when they come back; housekeeping stops. Idempotent."""
        if self._shut_down:
            return
        self._shut_down = True
        for h in self._handles:
            h.cancel()
        if self._next_maintenance is not None:
            self._next_maintenance.cancel()
        with self._lock:
            self._state.close()
            fx = self._state.take_effects()
        if fx is not None:
            self._apply(fx, closing_here=True)
        await self._close_retired()
        if self._owns_scheduler:
            await self._scheduler.aclose()
        if _listening(EV_POOL_CLOSED):
            s = self.snapshot()
            events.emit(
                EV_POOL_CLOSED,
                {"in_use": float(s.in_use), "checkouts": float(s.checkouts)},
                {"pool": self.name},
            )

    async def __aenter__(self) -> AsyncConnectionPool:
        """Open and connect ``min_size`` members first (a connect error is raised here).

        When a connect fails (or the wait is interrupted), the block never runs and so never
        closes the pool: the pool is closed here, with the members already made, and the error
        re-raised.
        """
        try:
            await self.open(wait=True)
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        s = self._state
        state = "closed" if self._shut_down else f"size={len(s.members)} idle={len(s.idle)}"
        return f"<AsyncConnectionPool {self.name!r} {state} max_size={self.config.max_size}>"


def _forget(scheduler: AsyncScheduler, owned: bool, handles: list[Handle]) -> None:
    for h in handles:
        h.cancel()
    if owned:
        stop_nowait(scheduler)
