"""Fault injection: decide, with a seeded RNG, whether a call fails or is delayed.

:meth:`FaultInjector.decide` draws the fault for one call from the injector's RNG (and reports
it on the telemetry bus); :meth:`FaultInjector.call` / :meth:`FaultInjector.call_async` apply it
around a callable. An injector has standing settings (off unless ``enabled`` and some rate is
above zero) and, on top, any running :class:`~buttress.Experiment`, whose settings win while it
lasts. Expiry is lazy: an experiment past its end is retired the next time anyone looks.
"""

from __future__ import annotations

import contextlib
import functools
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypedDict, TypeVar, overload

from .. import events
from .._clock import Clock, SystemClock
from .._concurrency import is_async_callable
from .._errors import ConfigError, InjectedFault
from .._fork import fork_safe_lock
from .._validate import fraction, in_interval, is_finite
from ._experiment import Experiment, ExperimentSnapshot

if TYPE_CHECKING:
    pass

__all__ = ["NO_FAULT", "ExceptionFactory", "Fault", "FaultInjector", "FaultSettings", "Switch"]

P = ParamSpec("P")
T = TypeVar("T")

ExceptionFactory = type[BaseException] | Callable[[], BaseException]

EV_INJECTED = ("buttress", "chaos", "injected")
EV_EXPERIMENT_START = ("buttress", "chaos", "experiment_start")
EV_EXPERIMENT_STOP = ("buttress", "chaos", "experiment_stop")
EV_RECOVERY = ("buttress", "chaos", "recovery_time")

_UNSET: Any = object()


class Switch(Protocol):
    """Anything with an ``enabled`` flag: the :class:`~buttress.Chaos` registry's master switch."""

    @property
    def enabled(self) -> bool: ...


class SettingsSnapshot(TypedDict):
    """Fault settings as reports show them (``latency`` as ``[low, high]``)."""

    failure_rate: float
    latency: list[float] | None
    latency_rate: float
    exception: str


@dataclass(frozen=True, slots=True)
class FaultSettings:
    """What an injector (or an experiment) does to calls. Build with :meth:`make` to validate.

    ``latency`` is a ``(low, high)`` range in seconds (equal ends for a fixed delay), applied
    to a ``latency_rate`` share of calls; a ``failure_rate`` share raise ``exception`` (a type
    or a factory).
    """

    failure_rate: float = 0.0
    latency: tuple[float, float] | None = None
    latency_rate: float = 0.0
    exception: ExceptionFactory = InjectedFault

    @classmethod
    def make(
        cls,
        *,
        failure_rate: float = 0.0,
        latency: float | tuple[float, float] | None = None,
        latency_rate: float | None = None,
        exception: ExceptionFactory = InjectedFault,
    ) -> FaultSettings:
        """Validate and normalise; ``latency_rate`` defaults to 1 when a latency is given."""
        failure_rate = fraction("failure_rate", failure_rate)
        latency_range = _latency_range(latency)
        if latency_rate is None:
            latency_rate = 1.0 if latency_range is not None else 0.0
        latency_rate = fraction("latency_rate", latency_rate)
        if not (
            isinstance(exception, type) and issubclass(exception, BaseException)
        ) and not callable(exception):
            raise ConfigError(
                "exception", f"must be an exception type or factory, got {exception!r}"
            )
        return cls(
            failure_rate=failure_rate,
            latency=latency_range,
            latency_rate=latency_rate if latency_range is not None else 0.0,
            exception=exception,
        )

    @property
    def inert(self) -> bool:
        """True when these settings can do nothing to a call."""
        return self.failure_rate == 0.0 and self.latency_rate == 0.0

    def to_dict(self) -> SettingsSnapshot:
        exc = self.exception
        return {
            "failure_rate": self.failure_rate,
            "latency": list(self.latency) if self.latency is not None else None,
            "latency_rate": self.latency_rate,
            "exception": getattr(exc, "__qualname__", None) or repr(exc),
        }


@dataclass(frozen=True, slots=True)
class Fault:
    """What to do to one call: wait ``delay`` seconds first, then raise if ``fail``.

    ``exception`` is the factory to raise with and ``experiment`` the name of the experiment
    that drew the fault (``None`` for the injector's standing settings).
    """

    fail: bool
    delay: float
    exception: ExceptionFactory | None = None
    experiment: str | None = None


NO_FAULT = Fault(False, 0.0)


class InjectorSnapshot(TypedDict):
    """An injector as the health report shows it: its standing settings (``failure_rate``,
    ``latency``, ``latency_rate``, ``exception``), its counts and its experiments."""

    target: str
    enabled: bool
    active: bool
    failure_rate: float
    latency: list[float] | None
    latency_rate: float
    exception: str
    calls: int
    injected_failures: int
    injected_delays: int
    experiments: list[ExperimentSnapshot]
    recovering: bool
    recovery_time: float | None


class FaultInjector:
    """Injects failures and latency into calls, reproducibly.

    >>> inj = FaultInjector(failure_rate=0.5, seed=7)
    >>> [inj.decide().fail for _ in range(6)]
    [True, True, False, True, False, True]

    ``latency`` is a fixed delay or a ``(low, high)`` range, applied to a ``latency_rate``
    share of calls (all of them when ``latency_rate`` is not given). ``exception`` is the type
    (or a factory) raised for an injected failure; it defaults to :class:`~buttress.InjectedFault`.
    ``enabled`` switches the standing settings; :meth:`experiment` overlays others for a while.
    Injectors made by a :class:`~buttress.Chaos` registry also obey its master switch.
    """

    def __init__(
        self,
        *,
        failure_rate: float = 0.0,
        latency: float | tuple[float, float] | None = None,
        latency_rate: float | None = None,
        exception: ExceptionFactory = InjectedFault,
        seed: int | str | None = None,
        rng: random.Random | None = None,
        enabled: bool = True,
        clock: Clock | None = None,
        name: str = "fault_injector",
        switch: Switch | None = None,
    ) -> None:
        self.settings = FaultSettings.make(
            failure_rate=failure_rate,
            latency=latency,
            latency_rate=latency_rate,
            exception=exception,
        )
        self.enabled = enabled
        self.clock: Clock = clock or SystemClock()
        self.name = name
        self._switch = switch
        self._rng = rng if rng is not None else random.Random(seed)
        self._lock = fork_safe_lock()
        # Copy-on-write: decide() reads it without the lock; newest experiment last.
        self._experiments: tuple[Experiment, ...] = ()
        # (until when, the current experiment): nothing begins or ends before that time, so
        # _current() answers from here without a look at each experiment (a schedule may hold
        # hundreds). One tuple, replaced whole: read without the lock.
        self._settled: tuple[float, Experiment | None] = (-math.inf, None)
        self.injected_failures = 0
        self.injected_delays = 0
        self.calls = 0
        # The last experiment's end (monotonic) and name, until the target's first healthy
        # success after it: then recovery_time is how long that took.
        self._ended: tuple[float, str] | None = None
        self.recovery_time: float | None = None

    # -- settings ------------------------------------------------------------------------------

    @property
    def failure_rate(self) -> float:
        return self.settings.failure_rate

    @property
    def latency_range(self) -> tuple[float, float] | None:
        return self.settings.latency

    @property
    def latency_rate(self) -> float:
        return self.settings.latency_rate

    @property
    def exception(self) -> ExceptionFactory:
        return self.settings.exception

    def configure(
        self,
        *,
        failure_rate: float = _UNSET,
        latency: float | tuple[float, float] | None = _UNSET,
        latency_rate: float | None = _UNSET,
        exception: ExceptionFactory = _UNSET,
        enabled: bool = _UNSET,
    ) -> None:
        """Change some standing settings (validated; the others stay as they are)."""
        s = self.settings
        new = FaultSettings.make(
            failure_rate=s.failure_rate if failure_rate is _UNSET else failure_rate,
            latency=s.latency if latency is _UNSET else latency,
            latency_rate=(
                (s.latency_rate if s.latency is not None else None)
                if latency_rate is _UNSET
                else latency_rate
            ),
            exception=s.exception if exception is _UNSET else exception,
        )
        self.settings = new
        if enabled is not _UNSET:
            self.enabled = bool(enabled)

    @property
    def active(self) -> bool:
        """Whether this injector can do anything to a call right now."""
        if self._switch is not None and not self._switch.enabled:
            return False
        if self._experiments and self._current() is not None:
            return True
        return self.enabled and not self.settings.inert

    # -- experiments ---------------------------------------------------------------------------

    def experiment(
        self,
        *,
        failure_rate: float = 0.0,
        latency: float | tuple[float, float] | None = None,
        latency_rate: float | None = None,
        exception: ExceptionFactory = InjectedFault,
        duration: float | None = None,
        name: str | None = None,
    ) -> Experiment:
        """A time-boxed overlay of other settings, run as ``with`` or ``async with``.

        >>> inj = FaultInjector(seed=1)
        >>> with inj.experiment(failure_rate=1.0, duration=60.0, name="outage"):
        ...     inj.decide().fail
        True
        >>> inj.decide().fail
        False

        It starts on entry and ends on exit, or when ``duration`` seconds have passed on the
        injector's clock, whichever comes first. Experiments run whatever ``enabled`` says (they
        are explicit and bounded); only a registry's master switch stops them.
        """
        settings = FaultSettings.make(
            failure_rate=failure_rate,
            latency=latency,
            latency_rate=latency_rate,
            exception=exception,
        )
        return Experiment(self, settings, duration=duration, name=name)

    @property
    def experiments(self) -> tuple[Experiment, ...]:
        """The experiments running on this injector, oldest first (expired ones retired; a
        schedule's that have not begun are not listed)."""
        self._current()
        now = self.clock.monotonic()
        return tuple(
            e for e in self._experiments if e.started_at is not None and e.started_at <= now
        )

    def _begin(self, exp: Experiment) -> None:
        if self._switch is not None and not self._switch.enabled:
            raise ConfigError(
                "chaos.enabled",
                f"chaos is disabled: enable it before running experiment {exp.name!r}",
            )
        with self._lock:
            self._experiments = (*self._experiments, exp)
            self._settled = (-math.inf, None)
            begins = exp.started_at is not None and exp.started_at <= self.clock.monotonic()
            if begins:
                self._announce(exp)
        if begins:
            self._report_start(exp)

    def _announce(self, exp: Experiment) -> None:
        """An experiment begins (lock held): at its start, or a delayed one once it is due;
        the caller then reports it (:meth:`_report_start`), out of the lock."""
        exp.announced = True
        self._ended = None  # a new fault: recovery from the last one is moot

    def _report_start(self, exp: Experiment) -> None:
        if events.enabled(EV_EXPERIMENT_START):
            events.emit(
                EV_EXPERIMENT_START,
                {
                    "failure_rate": exp.settings.failure_rate,
                    "latency_rate": exp.settings.latency_rate,
                },
                {
                    "target": self.name,
                    "experiment": exp.name,
                    "duration": exp.duration,
                    "settings": exp.settings.to_dict(),
                },
            )

    def _end(self, exp: Experiment, now: float) -> None:
        """Retire ``exp`` (at exit, or lazily once expired); reports its end once."""
        with self._lock:
            if exp not in self._experiments:
                return
            self._experiments = tuple(e for e in self._experiments if e is not exp)
            self._settled = (-math.inf, None)
            unseen = not exp.announced and exp.started_at is not None and now >= exp.started_at
            if unseen:
                self._announce(exp)  # it began and ended unseen (no call came meanwhile)
            reason = exp._finish(now)
            if not exp.announced:
                return  # cancelled before it began: it never ran, nothing to report
            if not any(e.announced for e in self._experiments) and exp.ended_at is not None:
                self._ended = (exp.ended_at, exp.name)
        if unseen:
            self._report_start(exp)
        if events.enabled(EV_EXPERIMENT_STOP):
            events.emit(
                EV_EXPERIMENT_STOP,
                {
                    "elapsed": exp.elapsed,
                    "calls": exp.calls,
                    "injected_failures": exp.injected_failures,
                    "injected_delays": exp.injected_delays,
                },
                {"target": self.name, "experiment": exp.name, "reason": reason},
            )

    def _current(self) -> Experiment | None:
        """The newest running experiment, after retiring expired ones (and announcing the
        delayed ones that began)."""
        running = self._experiments
        if not running:
            return None
        now = self.clock.monotonic()
        until, current = self._settled
        if now < until:
            return current
        for exp in running:
            if exp.ends_at is not None and now >= exp.ends_at:
                self._end(exp, now)
        running = self._experiments
        current = None
        for exp in reversed(running):
            if exp.started_at is not None and exp.started_at <= now:
                if not exp.announced:
                    with self._lock:
                        begins = not exp.announced and exp in self._experiments
                        if begins:
                            self._announce(exp)
                    if begins:
                        self._report_start(exp)
                current = exp
                break
        # The next time something may change: an experiment's start or end.
        until = min(
            (t for e in running for t in _changes(e, now) if t is not None), default=math.inf
        )
        with self._lock:
            if self._experiments is running:  # else one began or ended meanwhile: look again
                self._settled = (until, current)
        return current

    # -- deciding and applying -----------------------------------------------------------------

    def decide(self) -> Fault:
        """Draw the fault for one call (counted in ``calls`` / ``injected_*``, and reported)."""
        if self._switch is not None and not self._switch.enabled:
            return NO_FAULT
        exp = self._current() if self._experiments else None
        if exp is not None:
            s = exp.settings
        elif self.enabled:
            s = self.settings
        else:
            return NO_FAULT
        if s.inert:
            return NO_FAULT
        with self._lock:
            self.calls += 1
            rng = self._rng
            delay = 0.0
            delayed = bool(s.latency_rate) and rng.random() < s.latency_rate
            if delayed:
                assert s.latency is not None
                low, high = s.latency
                delay = low if low == high else rng.uniform(low, high)
                self.injected_delays += 1
            fail = bool(s.failure_rate) and rng.random() < s.failure_rate
            if fail:
                self.injected_failures += 1
            if exp is not None:
                exp._count(fail, delayed)
        if not (fail or delay):
            return NO_FAULT
        fault = Fault(fail, delay, s.exception, exp.name if exp is not None else None)
        if events.enabled(EV_INJECTED):
            if delay:
                self._report(fault, "latency")
            if fail:
                self._report(fault, "failure")
        return fault

    @property
    def recovering(self) -> bool:
        """An experiment ended and the target has not yet answered healthily since (an
        experiment past its end is retired first: no call may have come since it ended)."""
        if self._experiments:
            self._current()
        return self._ended is not None

    def recovered(self, now: float, healthy: bool = True) -> float | None:
        """A call to the target succeeded at ``now`` (monotonic); ``healthy``: its breaker, if
        any, is closed. The first such call after an experiment ends measures
        ``recovery_time`` (from the fault's end) and reports it; returns it, else None."""
        ended = self._ended
        if ended is None or not healthy:
            return None
        with self._lock:
            if self._ended is not ended:
                return None
            self._ended = None
            took = self.recovery_time = max(0.0, now - ended[0])
        if events.enabled(EV_RECOVERY):
            events.emit(
                EV_RECOVERY,
                {"recovery_time": took},
                {"target": self.name, "experiment": ended[1]},
            )
        return took

    def _report(self, fault: Fault, kind: str) -> None:
        events.emit(
            EV_INJECTED,
            {"latency": fault.delay if kind == "latency" else 0.0},
            {"target": self.name, "experiment": fault.experiment, "kind": kind, "injected": True},
        )

    def make_exception(self, fault: Fault | None = None) -> BaseException:
        """The exception for an injected failure, marked ``injected = True``.

        Pass the :class:`Fault` from :meth:`decide` so an experiment's exception type is used
        even if the experiment ended in between; without it, the current settings decide.
        """
        factory = fault.exception if fault is not None else None
        if factory is None:
            exp = self._current() if self._experiments else None
            factory = exp.settings.exception if exp is not None else self.settings.exception
        exc = factory()
        if isinstance(exc, BaseException):
            with contextlib.suppress(AttributeError):  # exceptions with __slots__
                exc.injected = True  # type: ignore[attr-defined]
            return exc
        raise TypeError(f"{self.name}: exception factory returned {exc!r}, not an exception")

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn`` with the fault drawn for this call applied first."""
        fault = self.decide()
        if fault.delay:
            self.clock.sleep(fault.delay)
        if fault.fail:
            raise self.make_exception(fault)
        result = fn(*args, **kwargs)
        if self._ended is not None:
            self.recovered(self.clock.monotonic())
        return result

    async def call_async(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """The async twin of :meth:`call`; the delay never blocks the event loop."""
        fault = self.decide()
        if fault.delay:
            await self.clock.asleep(fault.delay)
        if fault.fail:
            raise self.make_exception(fault)
        result = await fn(*args, **kwargs)
        if self._ended is not None:
            self.recovered(self.clock.monotonic())
        return result

    @overload
    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]: ...
    @overload
    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]: ...
    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Decorate a sync or async function."""
        if is_async_callable(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                return await self.call_async(fn, *args, **kwargs)

            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            return self.call(fn, *args, **kwargs)

        return wrapper

    def snapshot(self) -> InjectorSnapshot:
        """The standing settings, counts and running experiments, for the health report."""
        settings = self.settings.to_dict()
        return {
            "target": self.name,
            "enabled": self.enabled,
            "active": self.active,
            "failure_rate": settings["failure_rate"],
            "latency": settings["latency"],
            "latency_rate": settings["latency_rate"],
            "exception": settings["exception"],
            "calls": self.calls,
            "injected_failures": self.injected_failures,
            "injected_delays": self.injected_delays,
            "experiments": [e.to_dict() for e in self.experiments],
            "recovering": self.recovering,
            "recovery_time": self.recovery_time,
        }

    def __repr__(self) -> str:
        return (
            f"FaultInjector(name={self.name!r}, failure_rate={self.failure_rate}, "
            f"latency={self.latency_range}, latency_rate={self.latency_rate}, "
            f"enabled={self.enabled})"
        )


def _changes(exp: Experiment, now: float) -> tuple[float | None, ...]:
    """When ``exp`` may next change what an injector does: its start (if ahead) and its end."""
    if exp.started_at is not None and exp.started_at > now:
        return (exp.started_at, exp.ends_at)
    return (exp.ends_at,)


def _latency_range(latency: float | tuple[float, float] | None) -> tuple[float, float] | None:
    if latency is None:
        return None
    if isinstance(latency, int | float):  # a bool too, for in_interval to refuse
        seconds = in_interval("latency", latency, "[0, inf)")
        return (seconds, seconds)
    if isinstance(latency, tuple | list) and len(latency) == 2:
        low, high = latency
        if not (is_finite(low) and is_finite(high) and 0 <= low <= high):
            raise ConfigError(
                "latency",
                f"must be a (low, high) pair of finite seconds, 0 <= low <= high, got {latency!r}",
            )
        return (float(low), float(high))
    raise ConfigError("latency", f"must be seconds or a (low, high) pair, got {latency!r}")
