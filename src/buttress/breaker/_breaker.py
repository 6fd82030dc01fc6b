"""``CircuitBreaker``: the thin shell around the pure :class:`BreakerMachine`.

One object serves threads and asyncio. The shell reads the clock, takes a lock for the few
microseconds a decision needs (never while the wrapped call runs), classifies outcomes, applies
fault injection, and emits the transitions the machine queued.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import asdict, dataclass, fields
from types import TracebackType
from typing import Any, Literal, ParamSpec, TypeVar, cast, overload

from .. import events
from .._clock import Clock, SystemClock
from .._concurrency import is_async_callable
from ..chaos._faults import NO_FAULT, Fault, FaultInjector
from ..errors import CircuitOpenError, ConfigError, LoadShedError
from ._config import BreakerConfig
from ._machine import Admitted, BreakerMachine, Refused
from ._states import BreakerState, DegradationLevel, Transition

P = ParamSpec("P")
T = TypeVar("T")

_log = logging.getLogger("buttress.circuit_breaker")

EV_STATE = ("buttress", "circuit_breaker", "state_change")
EV_REJECTED = ("buttress", "circuit_breaker", "rejected")
EV_FAULT = ("buttress", "circuit_breaker", "fault_injected")
EV_HEALTH = ("buttress", "circuit_breaker", "health_check")

# Outcome kinds of a finished call.
_SUCCESS, _FAILURE, _IGNORED, _CANCELLED = 0, 1, 2, 3

# Ways a call can end that say nothing about the dependency's health.
_CANCELLATION = (asyncio.CancelledError, KeyboardInterrupt, SystemExit, GeneratorExit)

_CONFIG_FIELDS = frozenset(f.name for f in fields(BreakerConfig))

Listener = Callable[["CircuitBreaker", Transition], None]
_Runner = Callable[[Callable[..., Any], tuple[Any, ...], dict[str, Any]], Any]
_AsyncRunner = Callable[
    [Callable[..., Awaitable[Any]], tuple[Any, ...], dict[str, Any]], Awaitable[Any]
]
HealthCheck = Callable[[], bool] | Callable[[], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """What a breaker shows the health report: its state and its numbers at one instant."""

    name: str
    state: BreakerState
    degradation_level: DegradationLevel | None
    failure_count: int
    success_count: int
    call_count: int
    slow_call_count: int
    failure_rate: float
    slow_call_rate: float
    consecutive_failures: int
    recovery_attempts: int
    retry_after: float | None
    probes_in_flight: int
    generation: int
    times_opened: int
    total_successes: int
    total_failures: int
    total_ignored: int
    total_cancelled: int
    total_rejected: int
    total_shed: int
    total_stale: int
    fault_injection_active: bool
    injected_failures: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
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
        self._finish(_SUCCESS, duration)

    def record_failure(self, duration: float | None = None) -> None:
        """The call failed."""
        self._finish(_FAILURE, duration)

    def record_exception(self, exc: BaseException, duration: float | None = None) -> None:
        """The call raised ``exc``; it is classified by the breaker's ``record`` / ``ignore``."""
        self._finish(self._breaker._classify(exc), duration)

    def release(self) -> None:
        """The call was abandoned (cancelled): count nothing, free the permit."""
        self._finish(_CANCELLED, None)

    def _finish(self, kind: int, duration: float | None) -> None:
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


class CircuitBreaker:
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
    """

    def __init__(
        self,
        name: str,
        *,
        config: BreakerConfig | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        seed: int | None = None,
        fault_injection: FaultInjector | None = None,
        health_check: HealthCheck | None = None,
        **settings: Any,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError("name", f"must be a non-empty string, got {name!r}")
        unknown = sorted(set(settings) - _CONFIG_FIELDS)
        if unknown:
            raise ConfigError(
                unknown[0],
                f"unknown circuit breaker setting (known: {', '.join(sorted(_CONFIG_FIELDS))})",
            )
        if config is not None and settings:
            config = BreakerConfig(**{**_config_dict(config), **settings})
        elif config is None:
            config = BreakerConfig(**settings)
        if health_check is not None and not callable(health_check):
            raise ConfigError("health_check", f"must be callable, got {health_check!r}")
        self.name = name
        self.config = config
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._now = self.clock.monotonic
        rng = rng if rng is not None else random.Random(seed)
        self._m = BreakerMachine(config, rng, self._now())
        self._lock = threading.Lock()
        self._timed = config.slow_call_duration is not None
        self._failure_result = config.failure_result
        self._injector = fault_injection
        self._m.set_plain(fault_injection is None)  # the lock-free path needs no injection
        self._pending: deque[int] = deque()
        self._run, self._run_async, self._wrap = self._make_runners()
        self._health_check = health_check
        self._health_is_async = health_check is not None and is_async_callable(health_check)
        self._listeners: list[Listener] = []
        self._stack: ContextVar[tuple[tuple[int, int, float], ...]] = ContextVar(
            f"buttress_breaker_{name}", default=()
        )

    # -- reading -------------------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The current state (time-driven moves such as open → half_open applied first)."""
        with self._lock:
            self._drain()
            self._m.poll(self._now())
        self._flush()
        return self._m.state

    @property
    def level(self) -> DegradationLevel | None:
        """The degradation level while degraded, else ``None``."""
        with self._lock:
            self._drain()
            self._m.poll(self._now())
        self._flush()
        return self._m.level

    @property
    def has_health_check(self) -> bool:
        return self._health_check is not None

    @property
    def health_check_is_async(self) -> bool:
        return self._health_is_async

    @property
    def fault_injection(self) -> FaultInjector | None:
        return self._injector

    @fault_injection.setter
    def fault_injection(self, injector: FaultInjector | None) -> None:
        self._injector = injector
        with self._lock:
            self._drain()
            self._m.set_plain(injector is None)

    def snapshot(self) -> BreakerSnapshot:
        """The state and counts as the health report shows them."""
        with self._lock:
            self._drain()
            s = self._m.stats(self._now())
        self._flush()
        inj = self._injector
        return BreakerSnapshot(
            name=self.name,
            state=s.state,
            degradation_level=s.level,
            failure_count=s.window_failures,
            success_count=s.window_calls - s.window_failures,
            call_count=s.window_calls,
            slow_call_count=s.window_slow,
            failure_rate=s.failure_rate,
            slow_call_rate=s.slow_call_rate,
            consecutive_failures=s.consecutive_failures,
            recovery_attempts=s.recovery_attempts,
            retry_after=s.retry_after,
            probes_in_flight=s.probes_in_flight,
            generation=s.generation,
            times_opened=s.times_opened,
            total_successes=s.successes,
            total_failures=s.failures,
            total_ignored=s.ignored,
            total_cancelled=s.cancelled,
            total_rejected=s.rejected,
            total_shed=s.shed,
            total_stale=s.stale,
            fault_injection_active=bool(inj is not None and inj.active),
            injected_failures=inj.injected_failures if inj is not None else 0,
        )

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(breaker, transition)`` after every transition; returns an unsubscribe."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    # -- manual control ----------------------------------------------------------------------

    def force_open(self) -> None:
        """Refuse every call, critical ones included, until :meth:`reset`."""
        self._manual(BreakerMachine.force_open)

    def disable(self) -> None:
        """Let every call through (still counting outcomes) until :meth:`reset`."""
        self._manual(BreakerMachine.disable)

    def reset(self) -> None:
        """Back to closed with an empty window, from any state."""
        self._manual(BreakerMachine.reset)

    def _manual(self, op: Callable[[BreakerMachine, float], None]) -> None:
        with self._lock:
            self._drain()
            op(self._m, self._now())
        self._flush()

    # -- the non-raising form ----------------------------------------------------------------

    def try_acquire(self, *, critical: bool = False) -> Permit:
        """Ask for permission without raising; report the outcome on the returned permit."""
        now = self._now()
        with self._lock:
            self._drain()
            decision = self._m.admit(now, critical)
        if isinstance(decision, Refused):
            self._refused(decision)
        self._flush()
        return Permit(self, decision, now)

    # -- calling -------------------------------------------------------------------------------

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` under the breaker.

        Raises :class:`~buttress.CircuitOpenError` when open and :class:`~buttress.LoadShedError`
        when the call is shed while degraded; otherwise returns or raises what ``fn`` does.
        """
        return self._run(fn, args, kwargs)  # type: ignore[no-any-return]

    def _make_runners(self) -> tuple[_Runner, _AsyncRunner, Callable[[Callable[..., Any]], Any]]:
        """Build the closed-state fast paths as closures: for ``call``, ``call_async``, and
        a factory of per-function wrappers for the ``@breaker`` decorator.

        The three bodies are the same few lines, differing only in where ``fn`` comes from and
        by ``await``. They are written out three times on purpose: here every frame counts
        (a shared helper costs a frame per call, a quarter of the whole overhead), and cell
        reads beat attribute reads. The model-based test drives all three.

        Closed, a plain config (no slow-call timing, no result predicate, nothing injected):
        no lock is taken. A success within the current time bucket is queued (``deque.append``
        is atomic) and counted at the next locked step; anything else takes the general path.
        """
        m = self._m
        pending = self._pending
        append = pending.append
        now = self._now
        general = self._call
        general_async = self._call_async
        record = self._record
        classify = self._classify
        lock = self._lock
        drain = self._drain

        def run(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            gen = m.fast_gen
            if gen < 0:
                return general(fn, args, kwargs, False)
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                record(gen, 0, classify(exc), now(), 0.0)
                raise
            t = now()
            if t < m.bucket_end:
                append(gen)
                if len(pending) > 255:  # bound the batch (and the work of whoever drains it)
                    with lock:
                        drain()
                return result
            record(gen, 0, _SUCCESS, t, 0.0)
            return result

        async def run_async(
            fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            gen = m.fast_gen
            if gen < 0:
                return await general_async(fn, args, kwargs, False)
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                record(gen, 0, classify(exc), now(), 0.0)
                raise
            t = now()
            if t < m.bucket_end:
                append(gen)
                if len(pending) > 255:
                    with lock:
                        drain()
                return result
            record(gen, 0, _SUCCESS, t, 0.0)
            return result

        def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                gen = m.fast_gen
                if gen < 0:
                    return general(fn, args, kwargs, False)
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    record(gen, 0, classify(exc), now(), 0.0)
                    raise
                t = now()
                if t < m.bucket_end:
                    append(gen)
                    if len(pending) > 255:
                        with lock:
                            drain()
                    return result
                record(gen, 0, _SUCCESS, t, 0.0)
                return result

            return functools.wraps(fn)(wrapper)

        return run, run_async, wrap

    def _call(
        self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any], critical: bool
    ) -> T:
        gen, probe, t0, fault = self._enter(critical)
        if fault.delay:
            self._delay(gen, probe, t0, fault.delay)
        if fault.fail:
            raise self._inject_failure(gen, probe, t0)
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self._record(gen, probe, self._classify(exc), self._now(), t0)
            raise
        self._on_result(gen, probe, t0, result)
        return result

    async def call_async(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """The async twin of :meth:`call`: awaits ``fn(*args, **kwargs)`` under the breaker."""
        return await self._run_async(fn, args, kwargs)  # type: ignore[no-any-return]

    async def _call_async(
        self,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        critical: bool,
    ) -> T:
        gen, probe, t0, fault = await self._enter_async(critical)
        if fault.delay:
            await self._delay_async(gen, probe, t0, fault.delay)
        if fault.fail:
            raise self._inject_failure(gen, probe, t0)
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            self._record(gen, probe, self._classify(exc), self._now(), t0)
            raise
        self._on_result(gen, probe, t0, result)
        return result

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
            if critical:
                general_async = self._call_async

                @functools.wraps(fn)
                async def critical_async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                    return await general_async(fn, args, kwargs, True)

                return critical_async_wrapper
            run_async = self._run_async

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                return await run_async(fn, args, kwargs)

            return async_wrapper
        if critical:
            general = self._call

            @functools.wraps(fn)
            def critical_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                return general(fn, args, kwargs, True)

            return critical_wrapper
        return cast(Callable[P, Any], self._wrap(fn))

    # -- the integrated layer's entry points ---------------------------------------------------

    def begin(self, critical: bool = False) -> tuple[int, int, float]:
        """Admit one call (raising when refused); pass the result to :meth:`end` afterwards.

        The low-level pair under ``Infrastructure.protect``: no object per call, and the
        lock-free path when closed. Fault injection on the breaker itself is applied.
        """
        m = self._m
        gen = m.fast_gen
        if gen >= 0 and not critical:
            return gen, 0, 0.0
        return self._enter_sync_cm(critical)

    async def begin_async(self, critical: bool = False) -> tuple[int, int, float]:
        """:meth:`begin` for asyncio callers (injected latency is awaited)."""
        gen = self._m.fast_gen
        if gen >= 0 and not critical:
            return gen, 0, 0.0
        return await self._enter_async_cm(critical)

    def end(self, ticket: tuple[int, int, float], exc: BaseException | None = None) -> None:
        """Record how a call admitted by :meth:`begin` ended (``exc`` is classified)."""
        gen, probe, t0 = ticket
        if exc is None and not probe and self._m.fast_gen == gen:
            t = self._now()
            m = self._m
            if t < m.bucket_end:
                pending = self._pending
                pending.append(gen)
                if len(pending) > 255:
                    with self._lock:
                        self._drain()
                return
            self._record(gen, 0, _SUCCESS, t, t0)
            return
        self._record(gen, probe, _SUCCESS if exc is None else self._classify(exc), self._now(), t0)

    def release(self, ticket: tuple[int, int, float]) -> None:
        """Give back a call admitted by :meth:`begin` that never ran (counts for nothing).

        A later layer refused it (a pool timeout, say): it frees its half-open permit and is
        counted nowhere, not even as cancelled.
        """
        gen, probe, _ = ticket
        if probe:
            with self._lock:
                self._drain()
                self._m.on_neutral(gen, probe, self._now(), cancelled=None)

    def abort(self, ticket: tuple[int, int, float], exc: BaseException) -> None:
        """End a call admitted by :meth:`begin` that could not run because its dependency
        failed first with ``exc`` (a pool that cannot connect, say): a failure when ``record``
        / ``ignore`` classify ``exc`` as one, else nothing at all, as :meth:`release`."""
        if self._classify(exc) == _FAILURE:
            gen, probe, t0 = ticket
            self._record(gen, probe, _FAILURE, self._now(), t0)
        else:
            self.release(ticket)

    # -- context managers --------------------------------------------------------------------

    def guard(self, *, critical: bool = False) -> Guard:
        """A one-use context manager (``with`` or ``async with``) that passes ``critical``."""
        return Guard(self, critical)

    def __enter__(self) -> CircuitBreaker:
        entry = self._enter_sync_cm(False)
        self._stack.set((*self._stack.get(), entry))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        stack = self._stack.get()
        self._stack.set(stack[:-1])
        self._exit_cm(stack[-1], exc)
        return False

    async def __aenter__(self) -> CircuitBreaker:
        entry = await self._enter_async_cm(False)
        self._stack.set((*self._stack.get(), entry))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        return self.__exit__(exc_type, exc, tb)

    def _enter_sync_cm(self, critical: bool) -> tuple[int, int, float]:
        gen, probe, t0, fault = self._enter(critical)
        if fault.delay:
            self._delay(gen, probe, t0, fault.delay)
        if fault.fail:
            raise self._inject_failure(gen, probe, t0)
        return gen, probe, t0

    async def _enter_async_cm(self, critical: bool) -> tuple[int, int, float]:
        gen, probe, t0, fault = await self._enter_async(critical)
        if fault.delay:
            await self._delay_async(gen, probe, t0, fault.delay)
        if fault.fail:
            raise self._inject_failure(gen, probe, t0)
        return gen, probe, t0

    def _exit_cm(self, entry: tuple[int, int, float], exc: BaseException | None) -> None:
        gen, probe, t0 = entry
        kind = _SUCCESS if exc is None else self._classify(exc)
        self._record(gen, probe, kind, self._now(), t0)

    # -- health check ----------------------------------------------------------------------

    def check_health(self) -> bool | None:
        """Run the sync health check if one is due (open, interval elapsed).

        Returns its result, or ``None`` when no check was due. Success moves the breaker to
        half_open early. The infrastructure's scheduler calls this; so does a refused call.
        """
        if self._health_check is None or self._health_is_async:
            return None
        with self._lock:
            self._drain()
            gen = self._m.health_check_begin(self._now(), self.config.health_check_interval)
        if gen is None:
            self._flush()  # the look at the clock may have moved it (open -> half_open)
            return None
        t0 = time.monotonic()
        ok, err = False, None
        try:
            ok = bool(self._health_check())
        except Exception as exc:
            err = repr(exc)
        self._health_checked(gen, ok, err, time.monotonic() - t0)
        return ok

    async def check_health_async(self) -> bool | None:
        """The async twin of :meth:`check_health`; a sync check runs in a worker thread."""
        hc = self._health_check
        if hc is None:
            return None
        with self._lock:
            self._drain()
            gen = self._m.health_check_begin(self._now(), self.config.health_check_interval)
        if gen is None:
            self._flush()  # the look at the clock may have moved it (open -> half_open)
            return None
        t0 = time.monotonic()
        ok, err = False, None
        try:
            if self._health_is_async:
                ok = bool(await cast(Callable[[], Awaitable[bool]], hc)())
            else:
                ok = bool(await asyncio.to_thread(cast(Callable[[], bool], hc)))
        except Exception as exc:
            err = repr(exc)
        except asyncio.CancelledError:
            with self._lock:
                self._drain()
                self._m.health_check_end(gen, self._now(), False)
            raise
        self._health_checked(gen, ok, err, time.monotonic() - t0)
        return ok

    def _health_checked(self, gen: int, ok: bool, err: str | None, duration: float) -> None:
        with self._lock:
            self._drain()
            self._m.health_check_end(gen, self._now(), ok)
        if events.enabled(EV_HEALTH):
            events.emit(
                EV_HEALTH, {"duration": duration}, {"breaker": self.name, "ok": ok, "error": err}
            )
        self._flush()

    # -- internals -----------------------------------------------------------------------------

    def _enter(self, critical: bool) -> tuple[int, int, float, Fault]:
        now = self._now()
        with self._lock:
            self._drain()
            d = self._m.admit(now, critical)
        if isinstance(d, Refused):
            if (
                d.state is BreakerState.OPEN
                and self._health_check is not None
                and self.check_health()
            ):
                with self._lock:
                    self._drain()
                    d = self._m.admit_again(self._now(), critical)
            if isinstance(d, Refused):
                self._flush()
                raise self._refused(d)
        if self._m.pending:
            self._flush()
        inj = self._injector
        fault = inj.decide() if inj is not None else NO_FAULT
        if fault.delay:
            self._fault_event("latency", fault.delay)
        return d.generation, d.probe, now, fault

    async def _enter_async(self, critical: bool) -> tuple[int, int, float, Fault]:
        now = self._now()
        with self._lock:
            self._drain()
            d = self._m.admit(now, critical)
        if isinstance(d, Refused):
            if (
                d.state is BreakerState.OPEN
                and self._health_check is not None
                and await self.check_health_async()
            ):
                with self._lock:
                    self._drain()
                    d = self._m.admit_again(self._now(), critical)
            if isinstance(d, Refused):
                self._flush()
                raise self._refused(d)
        if self._m.pending:
            self._flush()
        inj = self._injector
        fault = inj.decide() if inj is not None else NO_FAULT
        if fault.delay:
            self._fault_event("latency", fault.delay)
        return d.generation, d.probe, now, fault

    def _delay(self, gen: int, probe: int, t0: float, delay: float) -> None:
        try:
            self.clock.sleep(delay)
        except BaseException as exc:  # interrupted in the injected latency: as if in the call
            self._record(gen, probe, self._classify(exc), self._now(), t0)
            raise

    async def _delay_async(self, gen: int, probe: int, t0: float, delay: float) -> None:
        try:
            await self.clock.asleep(delay)
        except BaseException as exc:  # cancelled in the injected latency: neutral, as in the call
            self._record(gen, probe, self._classify(exc), self._now(), t0)
            raise

    def _inject_failure(self, gen: int, probe: int, t0: float) -> BaseException:
        inj = self._injector
        assert inj is not None
        self._fault_event("failure", 0.0)
        self._record(gen, probe, _FAILURE, self._now(), t0)
        return inj.make_exception()

    def _fault_event(self, kind: str, latency: float) -> None:
        if events.enabled(EV_FAULT):
            events.emit(
                EV_FAULT,
                {"latency": latency},
                {"breaker": self.name, "kind": kind, "injected": True},
            )

    def _on_result(
        self, gen: int, probe: int, t0: float, result: object, now: float | None = None
    ) -> None:
        fr = self._failure_result
        kind = _FAILURE if fr is not None and fr(result) else _SUCCESS
        self._record(gen, probe, kind, self._now() if now is None else now, t0)

    def _drain(self) -> None:
        """Hand the batched fast-path successes to the machine. Caller holds the lock."""
        pending = self._pending
        n = len(pending)
        if not n:
            return
        current = self._m.generation
        pop = pending.popleft
        k = 0
        for _ in range(n):
            if pop() == current:
                k += 1
        self._m.add_successes(k, n - k, self._now())

    def _record(self, gen: int, probe: int, kind: int, now: float, t0: float) -> None:
        m = self._m
        duration = now - t0 if self._timed or probe else None
        with self._lock:
            self._drain()
            if kind == _SUCCESS:
                m.on_success(gen, probe, now, duration)
            elif kind == _FAILURE:
                m.on_failure(gen, probe, now, duration)
            else:
                m.on_neutral(gen, probe, now, cancelled=kind == _CANCELLED)
        if m.pending:
            self._flush()

    def _classify(self, exc: BaseException) -> int:
        if isinstance(exc, _CANCELLATION):
            return _CANCELLED
        if getattr(exc, "injected", False) is True:
            return _FAILURE  # a simulated failure (chaos): whatever record/ignore say
        cfg = self.config
        for matcher in cfg.ignore:
            if _matches(matcher, exc):
                return _IGNORED
        for matcher in cfg.record:
            if _matches(matcher, exc):
                return _FAILURE
        return _SUCCESS

    def _refused(self, d: Refused) -> CircuitOpenError | LoadShedError:
        if events.enabled(EV_REJECTED):
            events.emit(
                EV_REJECTED,
                {"retry_after": d.retry_after if d.retry_after is not None else -1.0},
                {
                    "breaker": self.name,
                    "state": d.state.value,
                    "level": d.level.value if d.level else None,
                    "reason": d.reason,
                },
            )
        if d.reason == "shed":
            return LoadShedError(
                "degraded",
                level=d.level.value if d.level else None,
                source=self.name,
                retry_after=d.retry_after,
            )
        return CircuitOpenError(self.name, d.state.value, retry_after=d.retry_after)

    def _flush(self) -> None:
        if not self._m.pending:
            return
        with self._lock:
            self._drain()
            pending = self._m.take_pending()
        for t in pending:
            if events.enabled(EV_STATE):
                events.emit(
                    EV_STATE,
                    {"failure_rate": t.failure_rate, "failures": t.failures, "calls": t.calls},
                    {
                        "breaker": self.name,
                        "from_state": t.from_state.value,
                        "to_state": t.to_state.value,
                        "from_level": t.from_level.value if t.from_level else None,
                        "level": t.level.value if t.level else None,
                        "reason": t.reason,
                        "generation": t.generation,
                    },
                )
            for listener in list(self._listeners):
                try:
                    listener(self, t)
                except Exception:
                    _log.exception("breaker %r: listener %r raised", self.name, listener)

    def __repr__(self) -> str:
        m = self._m
        level = f"/{m.level.value}" if m.level else ""
        return f"<CircuitBreaker {self.name!r} {m.state.value}{level}>"


class Guard:
    """``with breaker.guard(critical=True):`` — one use, sync or async."""

    __slots__ = ("_breaker", "_critical", "_entry")

    def __init__(self, breaker: CircuitBreaker, critical: bool) -> None:
        self._breaker = breaker
        self._critical = critical
        self._entry: tuple[int, int, float] | None = None

    def __enter__(self) -> Guard:
        self._entry = self._breaker._enter_sync_cm(self._critical)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        entry, self._entry = self._entry, None
        if entry is not None:
            self._breaker._exit_cm(entry, exc)
        return False

    async def __aenter__(self) -> Guard:
        self._entry = await self._breaker._enter_async_cm(self._critical)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        return self.__exit__(exc_type, exc, tb)


def _matches(matcher: Any, exc: BaseException) -> bool:
    if isinstance(matcher, type):
        return isinstance(exc, matcher)
    return bool(matcher(exc))


def _config_dict(config: BreakerConfig) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in fields(BreakerConfig)}
