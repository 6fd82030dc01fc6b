"""What every way into a breaker shares: the machine behind a lock, outcomes, events.

:class:`BreakerCore` holds the pure :class:`~._machine.BreakerMachine` and does the few things
a call path needs around it: read the clock, take the lock for the microseconds a decision
takes (never while the wrapped call runs), hand over the successes batched by the lock-free
path, record outcomes, and emit the transitions the machine queued. The call paths themselves
live in ``_calls_async.py`` (and its generated twin ``_calls.py``); the facade is
``_breaker.py``.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import fields
from typing import TYPE_CHECKING, Any, Protocol

from .. import events
from .._clock import Clock, SystemClock
from .._concurrency import is_async_callable
from .._errors import CircuitOpenError, ConfigError, LoadShedError
from .._fork import call_in_forked_child, fork_safe_lock, reseed_in_child
from .._redact import redacted_logger
from ._config import BreakerConfig
from ._machine import Admitted, BreakerMachine, Refused
from ._outcome import Outcome, classify
from ._states import BreakerState, Transition

HALF_OPEN = BreakerState.HALF_OPEN

if TYPE_CHECKING:
    from .._fleet._fleet import FleetLink, RedisFleet
    from ._breaker import CircuitBreaker

_log = redacted_logger("buttress.circuit_breaker")

EV_STATE = ("buttress", "circuit_breaker", "state_change")
EV_REJECTED = ("buttress", "circuit_breaker", "rejected")
EV_FAULT = ("buttress", "circuit_breaker", "fault_injected")
EV_HEALTH = ("buttress", "circuit_breaker", "health_check")
EV_RECOVERY = ("buttress", "circuit_breaker", "recovery_attempts")

SUCCESS, FAILURE, CANCELLED = Outcome.SUCCESS, Outcome.FAILURE, Outcome.CANCELLED

# Successes the lock-free path may queue before it hands them over itself: bounds the batch,
# and the work of whoever drains it.
MAX_PENDING = 255

_CONFIG_FIELDS = frozenset(f.name for f in fields(BreakerConfig))

Listener = Callable[["CircuitBreaker", Transition], None]
HealthCheck = Callable[[], bool] | Callable[[], Awaitable[bool]]
# An admitted call: (generation, probe id or 0, when it started on the monotonic clock).
Ticket = tuple[int, int, float]


class Fault(Protocol):
    """What an injector decided for one call: wait ``delay`` seconds, then fail if ``fail``."""

    @property
    def fail(self) -> bool: ...

    @property
    def delay(self) -> float: ...


class Injector(Protocol):
    """What the breaker needs of a fault injector (:class:`~buttress.FaultInjector` is one):
    chaos is handed to a breaker, never imported by it."""

    @property
    def active(self) -> bool: ...

    @property
    def injected_failures(self) -> int: ...

    def decide(self) -> Fault: ...

    def make_exception(self, fault: Any = None) -> BaseException: ...


class BreakerCore:
    """The state shared by the sync and async call paths (see the module docstring)."""

    def __init__(
        self,
        name: str,
        *,
        config: BreakerConfig | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        seed: int | None = None,
        fault_injection: Injector | None = None,
        health_check: HealthCheck | None = None,
        fleet: RedisFleet | None = None,
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
        if fleet is not None and not callable(getattr(fleet, "attach", None)):
            raise ConfigError("fleet", f"must be a RedisFleet, got {fleet!r}")
        if health_check is not None and not callable(health_check):
            raise ConfigError("health_check", f"must be callable, got {health_check!r}")
        self.name = name
        self.config = config
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._now = self.clock.monotonic
        self._rng = rng if rng is not None else random.Random(seed)
        self._machine = BreakerMachine(config, self._rng, self._now())
        self._lock = fork_safe_lock()
        self._timed = config.slow_call_duration is not None
        self._failure_result = config.failure_result
        self._injector = fault_injection
        # Where faults are injected for this breaker by others (an Infrastructure's chaos,
        # applied in its pipeline): read by snapshot() only, never applied here.
        self._injected_by: Callable[[], Injector | None] | None = None
        self._machine.set_plain(fault_injection is None)  # the lock-free path injects nothing
        # Generations of successes the lock-free path counted but has not handed over yet.
        self._pending: deque[int] = deque()
        self._health_check = health_check
        self._health_is_async = health_check is not None and is_async_callable(health_check)
        self._listeners: list[Listener] = []
        # The tickets of `with breaker:` blocks open in this context, innermost last.
        self._open_blocks: ContextVar[tuple[Ticket, ...]] = ContextVar(
            f"buttress_breaker_{name}", default=()
        )
        self._build_fast_paths()
        call_in_forked_child(self._after_fork)
        # The fleet's driver tells the machine what the fleet decided, at each sync (never on
        # the call path): see ``buttress._fleet``.
        self._fleet = fleet
        self._fleet_link: FleetLink | None = None
        if fleet is not None:
            self._fleet_link = fleet.attach(self)  # type: ignore[arg-type]

    def _after_fork(self) -> None:
        # Workers forked from one parent would otherwise draw the same reset-timeout jitter
        # and shed the same calls: they would probe a recovering upstream all at once.
        reseed_in_child(self._rng)

    def reconfigure(self, config: BreakerConfig) -> None:
        """Decide by ``config`` from now on, keeping the state, its counts and its open time
        (see ``BreakerMachine.reconfigure``); ``Infrastructure.reload`` calls this for a
        breaker whose settings changed."""
        if not isinstance(config, BreakerConfig):
            raise ConfigError("config", f"must be a BreakerConfig, got {config!r}")
        with self._lock:
            self._drain()
            self._machine.reconfigure(config, self._now(), self._injector is None)
            self.config = config
            self._timed = config.slow_call_duration is not None
            self._failure_result = config.failure_result
        if self._fleet is not None and self._fleet_link is not None:
            self._fleet.reconfigured(self._fleet_link, config)  # the fleet's thresholds too
        self._build_fast_paths()
        self._flush()

    def _build_fast_paths(self) -> None:
        """Make the lock-free call paths (the facade does, once the call paths are mixed in)."""

    # -- deciding --------------------------------------------------------------------------------

    def _admit(self, now: float, priority: int) -> Admitted | Refused:
        with self._lock:
            self._drain()
            return self._machine.admit(now, priority)

    def _admit_again(self, priority: int) -> Admitted | Refused:
        """Decide once more for a call refused while open, after a passing health check."""
        with self._lock:
            self._drain()
            return self._machine.admit_again(self._now(), priority)

    def _admitted(self, d: Admitted, now: float) -> tuple[Ticket, Fault | None]:
        """The ticket of an admitted call, and the fault to inject into it (if any)."""
        if self._machine.pending:
            self._flush()
        inj = self._injector
        fault = inj.decide() if inj is not None else None
        if fault is not None and fault.delay:
            self._fault_event("latency", fault.delay)
        return (d.generation, d.probe, now), fault

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
        if d.reason == "shed" or d.reason == "slow_start":
            return LoadShedError(
                "degraded" if d.reason == "shed" else "slow_start",
                level=d.level.value if d.level else None,
                source=self.name,
                retry_after=d.retry_after,
            )
        return CircuitOpenError(self.name, d.state.value, retry_after=d.retry_after)

    def _refusal(self, d: Refused) -> CircuitOpenError | LoadShedError:
        """The error for a refusal that stands (transitions flushed first)."""
        self._flush()
        return self._refused(d)

    def _may_probe_health(self, d: Refused) -> bool:
        """Whether a refused call should run the health check first (it may half-open)."""
        return d.state is BreakerState.OPEN and self._health_check is not None

    # -- outcomes --------------------------------------------------------------------------------

    def _classify(self, exc: BaseException) -> Outcome:
        return classify(self.config, exc)

    def _drain(self) -> None:
        """Hand the batched fast-path successes to the machine. Caller holds the lock."""
        pending = self._pending
        n = len(pending)
        if not n:
            return
        current = self._machine.generation
        pop = pending.popleft
        k = 0
        for _ in range(n):
            if pop() == current:
                k += 1
        self._machine.add_successes(k, n - k, self._now())

    def _record(self, gen: int, probe: int, kind: Outcome, now: float, t0: float) -> None:
        m = self._machine
        duration = now - t0 if self._timed or probe else None
        with self._lock:
            self._drain()
            if kind is SUCCESS:
                m.on_success(gen, probe, now, duration)
            elif kind is FAILURE:
                m.on_failure(gen, probe, now, duration)
            else:
                m.on_neutral(gen, probe, now, cancelled=kind is CANCELLED)
        if m.pending:
            self._flush()

    def _record_exit(self, ticket: Ticket, exc: BaseException | None) -> None:
        """Record how a call admitted with ``ticket`` ended (``exc`` classified)."""
        gen, probe, t0 = ticket
        self._record(gen, probe, SUCCESS if exc is None else self._classify(exc), self._now(), t0)

    def _on_result(self, ticket: Ticket, result: object) -> None:
        fr = self._failure_result
        gen, probe, t0 = ticket
        self._record(
            gen, probe, FAILURE if fr is not None and fr(result) else SUCCESS, self._now(), t0
        )

    def _inject_failure(self, ticket: Ticket, fault: Fault) -> BaseException:
        inj = self._injector
        assert inj is not None
        self._fault_event("failure", 0.0)
        gen, probe, t0 = ticket
        self._record(gen, probe, FAILURE, self._now(), t0)
        return inj.make_exception(fault)

    def _fault_event(self, kind: str, latency: float) -> None:
        if events.enabled(EV_FAULT):
            events.emit(
                EV_FAULT,
                {"latency": latency},
                {"breaker": self.name, "kind": kind, "injected": True},
            )

    # -- health checks -------------------------------------------------------------------------

    def _health_check_due(self) -> int | None:
        """Claim the health check if one is due (open, interval elapsed): its generation."""
        with self._lock:
            self._drain()
            gen = self._machine.health_check_begin(self._now(), self.config.health_check_interval)
        if gen is None:
            self._flush()  # the look at the clock may have moved it (open -> half_open)
        return gen

    def _health_checked(self, gen: int, ok: bool, err: str | None, duration: float) -> None:
        with self._lock:
            self._drain()
            self._machine.health_check_end(gen, self._now(), ok)
        if events.enabled(EV_HEALTH):
            events.emit(
                EV_HEALTH, {"duration": duration}, {"breaker": self.name, "ok": ok, "error": err}
            )
        self._flush()

    def _health_check_abandoned(self, gen: int) -> None:
        """The check was interrupted: it ends as failed, so the next one can run."""
        with self._lock:
            self._drain()
            self._machine.health_check_end(gen, self._now(), False)

    # -- the fleet: its driver's two ways in (``buttress._fleet``), never on the call path -----

    def _fleet_report(self) -> tuple[int, int, bool, int]:
        """The machine's report for the fleet (see ``BreakerMachine.fleet_report``)."""
        with self._lock:
            self._drain()
            return self._machine.fleet_report(self._now())

    def _fleet_apply(self, apply: Callable[[BreakerMachine, float], None]) -> None:
        """Run ``apply(machine, now)`` under the lock, then emit what it moved."""
        with self._lock:
            self._drain()
            apply(self._machine, self._now())
        self._flush()

    # -- transitions -----------------------------------------------------------------------------

    def _report_recovery(self, t: Transition) -> None:
        events.emit(
            EV_RECOVERY,
            {"attempt": t.recovery_attempts},
            {"breaker": self.name, "outcome": _recovery_outcome(t), "reason": t.reason},
        )

    def _flush(self) -> None:
        if not self._machine.pending:
            return
        with self._lock:
            self._drain()
            pending = self._machine.take_pending()
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
            if (t.to_state is HALF_OPEN or t.from_state is HALF_OPEN) and events.enabled(
                EV_RECOVERY
            ):
                self._report_recovery(t)
            for listener in list(self._listeners):
                try:
                    listener(self, t)  # type: ignore[arg-type]
                except Exception:
                    _log.exception("breaker %r: listener %r raised", self.name, listener)


def _recovery_outcome(t: Transition) -> str:
    if t.to_state is HALF_OPEN:
        return "started"
    if t.to_state is BreakerState.CLOSED:
        return "succeeded"
    if t.to_state is BreakerState.OPEN:
        return "failed"
    return "abandoned"  # forced open, disabled or reset by hand


def _config_dict(config: BreakerConfig) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in fields(BreakerConfig)}
