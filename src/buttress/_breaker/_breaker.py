"""``CircuitBreaker``: the facade over the pure :class:`BreakerMachine`.

One object serves threads and asyncio. What it is made of:

* ``_core.py``: the machine behind a lock, outcomes, transitions and events;
* ``_calls_async.py`` (and its generated twin ``_calls.py``): every path that waits;
* here: reading the state, manual control, the non-raising :meth:`CircuitBreaker.try_acquire`,
  the decorator, and :meth:`~CircuitBreaker.end` / :meth:`~CircuitBreaker.release` /
  :meth:`~CircuitBreaker.abort` for tickets from ``begin``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast, overload

from .._concurrency import is_async_callable
from .._deprecated import warn_renamed
from .._errors import ConfigError
from .._validate import is_finite
from ._calls import Calls, GuardCalls
from ._calls_async import AsyncCalls, AsyncGuardCalls
from ._core import FAILURE, MAX_PENDING, SUCCESS, Injector, Listener, Ticket
from ._machine import Admitted, BreakerMachine, MachineStats, Refused
from ._outcome import Outcome
from ._states import BreakerState, DegradationLevel

if TYPE_CHECKING:
    from .._fleet._fleet import FleetStatus, RedisFleet

P = ParamSpec("P")
T = TypeVar("T")

_STATS_FIELDS = tuple(f.name for f in fields(MachineStats))


@dataclass(frozen=True, slots=True)
class BreakerSnapshot(MachineStats):
    """What a breaker shows the health report: its state and its numbers at one instant.

    The machine's numbers (``state``, ``degradation_level``, the window's counts such as
    ``failure_count`` and ``call_count``, the ``total_*`` counts since the breaker was made),
    plus the breaker's ``name`` and its fault injection, and for a breaker in a fleet, the
    fleet's view (:class:`~buttress._fleet.FleetStatus`; ``None`` otherwise).
    """

    name: str
    fault_injection_active: bool
    injected_failures: int
    fleet: FleetStatus | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.fleet is None:
            del d["fleet"]  # a local breaker's dict is as it always was
        d["state"] = self.state.value
        d["degradation_level"] = self.degradation_level.value if self.degradation_level else None
        return d


class Permit:
    """A decision from :meth:`CircuitBreaker.try_acquire`; report the outcome when allowed.

    >>> permit = breaker.try_acquire()              # doctest: +SKIP
    >>> if permit:
    ...     try: do_work()
    ...     except Exception as exc: permit.record_exception(exc); raise
    ...     else: permit.record_success()
    """

    __slots__ = (
        "_breaker",
        "_done",
        "_started",
        "allowed",
        "generation",
        "level",
        "probe",
        "reason",
        "retry_after",
        "state",
    )

    def __init__(
        self,
        breaker: CircuitBreaker,
        decision: Admitted | Refused,
        started: float,
    ) -> None:
        self._breaker = breaker
        self._started = started
        if isinstance(decision, Admitted):
            self.allowed = True
            self.generation = decision.generation
            self.probe = decision.probe
            self.retry_after: float | None = None
            self.reason: str | None = None
            self.state: BreakerState | None = None
            self.level: DegradationLevel | None = None
            self._done = False
        else:
            self.allowed = False
            self.generation = 0
            self.probe = 0
            self.retry_after = decision.retry_after
            self.reason = decision.reason
            self.state = decision.state
            self.level = decision.level
            self._done = True

    def __bool__(self) -> bool:
        return self.allowed

    def record_success(self, duration: float | None = None) -> None:
        """The call worked (``duration`` defaults to the time since the permit was granted)."""
        self._finish(SUCCESS, duration)

    def record_failure(self, duration: float | None = None) -> None:
        """The call failed."""
        self._finish(FAILURE, duration)

    def record_exception(self, exc: BaseException, duration: float | None = None) -> None:
        """The call raised ``exc``; it is classified by the breaker's ``record`` / ``ignore``."""
        if not isinstance(exc, BaseException):
            # None is no outcome: classified, it would count as a success.
            raise TypeError(f"record_exception: exc must be an exception, got {exc!r}")
        self._finish(self._breaker._classify(exc), duration)

    def release(self) -> None:
        """The call was abandoned (cancelled): count nothing, free the permit."""
        self._finish(Outcome.CANCELLED, None)

    def _finish(self, kind: Outcome, duration: float | None) -> None:
        if duration is not None and not (is_finite(duration) and duration >= 0):
            raise ValueError(f"duration: must be a finite number >= 0 or None, got {duration!r}")
        if self._done:
            return
        self._done = True
        b = self._breaker
        now = b._now()
        t0 = self._started if duration is None else now - duration
        b._record(self.generation, self.probe, kind, now, t0)

    def __repr__(self) -> str:
        if self.allowed:
            return f"<Permit allowed generation={self.generation} probe={self.probe}>"
        return f"<Permit refused reason={self.reason} retry_after={self.retry_after}>"


class CircuitBreaker(Calls, AsyncCalls):
    """A circuit breaker with gradual degradation, for sync and async callers alike.

    >>> breaker = CircuitBreaker("payments", failure_threshold=5, degradation_threshold=3)
    >>> breaker.call(lambda: 42)
    42
    >>> breaker.state
    <BreakerState.CLOSED: 'closed'>

    Settings are the fields of :class:`BreakerConfig` (pass them as keywords, or ``config=``).
    ``clock`` and ``rng``/``seed`` are injected for tests; ``fault_injection`` takes a
    :class:`~buttress.FaultInjector`; ``health_check`` is a callable (sync or async) returning
    true when the dependency looks healthy, probed while open.

    Ways in: :meth:`call` / :meth:`call_async`, the decorator (``@breaker`` or
    ``@breaker(critical=True)``), ``with breaker:`` / ``async with breaker:``,
    :meth:`guard` (a block that passes ``critical``), :meth:`try_acquire` (non-raising, with a
    :class:`Permit`), and the ticket pair :meth:`begin` / :meth:`end` that ``protect()`` uses.
    """

    def _build_fast_paths(self) -> None:
        self._run = self._make_run()
        self._run_async = self._make_run_async()
        self._wrap = self._make_wrap()
        self._wrap_async = self._make_wrap_async()

    # -- reading -------------------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The current state (time-driven moves such as open → half_open applied first)."""
        self._poll()
        return self._machine.state

    @property
    def degradation_level(self) -> DegradationLevel | None:
        """The degradation level while degraded, else ``None`` (as in :meth:`snapshot`)."""
        self._poll()
        return self._machine.level

    @property
    def level(self) -> DegradationLevel | None:
        """Deprecated: :attr:`degradation_level`."""
        warn_renamed("CircuitBreaker.level")
        return self.degradation_level

    def _poll(self) -> None:
        with self._lock:
            self._drain()
            self._machine.poll(self._now())
        self._flush()

    @property
    def has_health_check(self) -> bool:
        return self._health_check is not None

    @property
    def health_check_is_async(self) -> bool:
        return self._health_is_async

    @property
    def fleet(self) -> RedisFleet | None:
        """The fleet this breaker shares its view with (``None``: a breaker of its own)."""
        return self._fleet

    @property
    def fault_injection(self) -> Injector | None:
        return self._injector

    @fault_injection.setter
    def fault_injection(self, injector: Injector | None) -> None:
        self._injector = injector
        with self._lock:
            self._drain()
            self._machine.set_plain(injector is None)

    def snapshot(self) -> BreakerSnapshot:
        """The state and counts as the health report shows them."""
        with self._lock:
            self._drain()
            stats = self._machine.stats(self._now())
        self._flush()
        inj = self._injector
        if inj is None and self._injected_by is not None:
            inj = self._injected_by()
        link = self._fleet_link
        return BreakerSnapshot(
            fleet=self._fleet.status(link) if self._fleet is not None and link else None,
            name=self.name,
            fault_injection_active=bool(inj is not None and inj.active),
            injected_failures=inj.injected_failures if inj is not None else 0,
            **{f: getattr(stats, f) for f in _STATS_FIELDS},  # one vocabulary: same names
        )

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(breaker, transition)`` after every transition; returns an unsubscribe."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    # -- manual control ----------------------------------------------------------------------

    def force_open(self, *, fleet: bool = False, reason: str = "", by: str = "") -> None:
        """Refuse every call, critical ones included, until :meth:`reset`.

        ``fleet=True`` (a breaker made with ``fleet=``): in every process of the fleet, each
        at its next sync, and in processes started later, until ``reset(fleet=True)``; the
        record (``reason``, ``by``, when) shows in every snapshot's ``fleet.override``.
        Raises :class:`~buttress.BackendError` when Redis cannot be reached."""
        self._fleet_override("force_open", fleet, reason, by)
        self._manual(BreakerMachine.force_open)

    def disable(self, *, fleet: bool = False, reason: str = "", by: str = "") -> None:
        """Let every call through (still counting outcomes) until :meth:`reset`
        (``fleet=True``: as for :meth:`force_open`; a forced open fleet-wide still wins)."""
        if self._fleet_override("disable", fleet, reason, by) != "force_open":
            self._manual(BreakerMachine.disable)

    def reset(self, *, fleet: bool = False, reason: str = "", by: str = "") -> None:
        """Back to closed with an empty window, from any state (``fleet=True``: clears the
        fleet's overrides and closes the fleet, in every process at its next sync)."""
        self._fleet_override("reset", fleet, reason, by)
        self._manual(BreakerMachine.reset)

    def _fleet_override(self, action: str, fleet: bool, reason: str, by: str) -> str | None:
        """Record a fleet-wide ``action`` (when ``fleet``); what the fleet's override is now."""
        if not fleet:
            return None
        f, link = self._fleet, self._fleet_link
        if f is None or link is None:
            raise ConfigError("fleet", f"breaker {self.name!r} has no fleet (make it with fleet=)")
        if not isinstance(reason, str) or not isinstance(by, str):
            raise TypeError("reason and by must be strings")
        link.override_gen = f.override(self, action, reason, by or f.process_id)
        ov = link.override
        if action == "reset" or ov is None:
            return None
        return "force_open" if action == "force_open" or ov.force_open else None

    def _manual(self, op: Callable[[BreakerMachine, float], None]) -> None:
        with self._lock:
            self._drain()
            op(self._machine, self._now())
        self._flush()

    # -- the non-raising form ----------------------------------------------------------------

    def try_acquire(self, *, critical: bool = False) -> Permit:
        """Ask for permission without raising; report the outcome on the returned permit."""
        now = self._now()
        decision = self._admit(now, critical)
        if isinstance(decision, Refused):
            self._refused(decision)
        self._flush()
        return Permit(self, decision, now)

    # -- the decorator ---------------------------------------------------------------------------

    @overload
    def __call__(self, fn: Callable[P, T], /) -> Callable[P, T]: ...
    @overload
    def __call__(
        self, fn: None = None, /, *, critical: bool = False
    ) -> Callable[[Callable[P, T]], Callable[P, T]]: ...
    def __call__(self, fn: Callable[P, Any] | None = None, /, *, critical: bool = False) -> Any:
        """Decorate a sync or coroutine function: ``@breaker`` or ``@breaker(critical=True)``."""
        if fn is None:
            return functools.partial(self._decorate, critical=critical)
        return self._decorate(fn, critical=critical)

    def _decorate(self, fn: Callable[P, Any], *, critical: bool) -> Callable[P, Any]:
        if is_async_callable(fn):
            wrapped = self._wrap_critical_async(fn) if critical else self._wrap_async(fn)
        else:
            wrapped = self._wrap_critical(fn) if critical else self._wrap(fn)
        return cast(Callable[P, Any], wrapped)

    # -- tickets: the low-level pair under Infrastructure.protect --------------------------------

    def end(self, ticket: Ticket, exc: BaseException | None = None) -> None:
        """Record how a call admitted by :meth:`begin` ended (``exc`` is classified)."""
        gen, probe, t0 = ticket
        m = self._machine
        if exc is None and not probe and m.fast_gen == gen:
            t = self._now()
            if t < m.bucket_end:
                pending = self._pending
                pending.append(gen)
                if len(pending) > MAX_PENDING:
                    with self._lock:
                        self._drain()
                return
            self._record(gen, 0, SUCCESS, t, t0)
            return
        self._record_exit(ticket, exc)

    def end_returned(self, ticket: Ticket, result: object) -> bool:
        """Record a call admitted by :meth:`begin` that returned ``result``: a failure when
        ``failure_result`` says so (then ``True``), else a success."""
        fr = self._failure_result
        if fr is None or not fr(result):
            self.end(ticket)
            return False
        gen, probe, t0 = ticket
        self._record(gen, probe, FAILURE, self._now(), t0)
        return True

    def release(self, ticket: Ticket) -> None:
        """Give back a call admitted by :meth:`begin` that never ran (counts for nothing).

        A later layer refused it (a pool timeout, say): it frees its half-open permit and is
        counted nowhere, not even as cancelled.
        """
        gen, probe, _ = ticket
        if probe:
            with self._lock:
                self._drain()
                self._machine.on_neutral(gen, probe, self._now(), cancelled=None)

    def abort(self, ticket: Ticket, exc: BaseException) -> None:
        """End a call admitted by :meth:`begin` that could not run because its dependency
        failed first with ``exc`` (a pool that cannot connect, say): a failure when ``record``
        / ``ignore`` classify ``exc`` as one, else nothing at all, as :meth:`release`."""
        if self._classify(exc) is FAILURE:
            gen, probe, t0 = ticket
            self._record(gen, probe, FAILURE, self._now(), t0)
        else:
            self.release(ticket)

    # -- context managers --------------------------------------------------------------------

    def guard(self, *, critical: bool = False) -> Guard:
        """A one-use context manager (``with`` or ``async with``) that passes ``critical``."""
        return Guard(self, critical)

    def __repr__(self) -> str:
        m = self._machine
        level = f"/{m.level.value}" if m.level else ""
        return f"<CircuitBreaker {self.name!r} {m.state.value}{level}>"


class Guard(GuardCalls, AsyncGuardCalls):
    """``with breaker.guard(critical=True):`` — one use, sync or async."""

    __slots__ = ("_breaker", "_critical", "_ticket")

    def __init__(self, breaker: CircuitBreaker, critical: bool) -> None:
        self._breaker = breaker
        self._critical = critical
        self._ticket: Ticket | None = None
