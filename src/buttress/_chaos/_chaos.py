"""``Chaos``: the registry of fault injectors of one infrastructure, behind one master switch."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ParamSpec, TypedDict, TypeVar

from .. import events
from .._clock import Clock, SystemClock
from .._errors import ConfigError, InjectedFault
from .._fork import fork_safe_lock
from ._experiment import Experiment, ExperimentSnapshot
from ._faults import ExceptionFactory, FaultInjector, InjectorSnapshot
from ._schedule import ChaosSchedule, ScheduleSnapshot

__all__ = ["Chaos", "ChaosSnapshot"]


class ChaosSnapshot(TypedDict):
    """What the health report shows under ``chaos_engineering``."""

    enabled: bool
    active_experiments: list[ExperimentSnapshot]
    injectors: dict[str, InjectorSnapshot]
    schedules: list[ScheduleSnapshot]


P = ParamSpec("P")
T = TypeVar("T")

EV_SWITCH = ("buttress", "chaos", "switch")
_ENDED_SCHEDULES_KEPT = 16


class Chaos:
    """Fault injectors per target (a service or a breaker), off until switched on.

    >>> chaos = Chaos(seed=7)
    >>> payments = chaos.injector("payments")    # hand it to a breaker, or call through it
    >>> chaos.enable()
    >>> with chaos.experiment("payments", failure_rate=1.0, duration=30.0) as exp:
    ...     [e.name for e in chaos.active_experiments()] == [exp.name]
    True

    ``enabled`` is the master switch: while it is off nothing is injected anywhere and
    experiments refuse to start. Each target's injector has its own standing settings and
    ``enabled`` flag (``injector(target, failure_rate=..., enabled=...)``); experiments lay
    other settings over a target for a while. ``seed`` makes every target's draws replay: each
    target gets its own RNG seeded from ``seed`` and its name, so adding a target does not
    shift another's sequence.
    """

    def __init__(
        self, *, enabled: bool = False, seed: int | None = None, clock: Clock | None = None
    ) -> None:
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise ConfigError("seed", f"must be an integer or None, got {seed!r}")
        self._enabled = bool(enabled)
        self.seed = seed
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._injectors: dict[str, FaultInjector] = {}
        # The injectors that apply now: every one while chaos is on, none while it is off.
        # Never replaced, only filled and emptied, so the protect pipeline binds its ``get``
        # once and pays one dict lookup a call (a target made later, by an experiment, applies).
        self._injecting: dict[str, FaultInjector] = {}
        self._lock = fork_safe_lock()
        self.schedules: list[ChaosSchedule] = []

    # -- the switch ------------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self._enabled

    def enable(self) -> None:
        """Turn fault injection on (each target's own settings still apply)."""
        self._set(True)

    def disable(self) -> None:
        """Turn every injection off at once; running experiments stay listed but do nothing."""
        self._set(False)

    def _set(self, on: bool) -> None:
        with self._lock:
            if self._enabled == on:
                return
            self._enabled = on
            if on:
                self._injecting.update(self._injectors)
            else:
                self._injecting.clear()
        events.emit(EV_SWITCH, {}, {"enabled": on})

    # -- targets -----------------------------------------------------------------------------

    @property
    def injecting(self) -> Mapping[str, FaultInjector]:
        """The injectors that apply to calls now, by target: all of them while chaos is on,
        none while it is off. The same mapping for the registry's life (read it, bind its
        ``get``; it changes as chaos is switched and targets are made)."""
        return self._injecting

    def injector(self, target: str, **settings: Any) -> FaultInjector:
        """The injector for ``target``, made (inert) on first use.

        Keyword settings (``failure_rate``, ``latency``, ``latency_rate``, ``exception``,
        ``enabled``) change its standing settings, as :meth:`FaultInjector.configure` does.
        """
        if not isinstance(target, str) or not target:
            raise ConfigError("target", f"must be a non-empty string, got {target!r}")
        with self._lock:
            inj = self._injectors.get(target)
            if inj is None:
                rng = random.Random(f"{self.seed}/{target}") if self.seed is not None else None
                inj = FaultInjector(name=target, rng=rng, clock=self.clock, switch=self)
                self._injectors[target] = inj
                if self._enabled:
                    self._injecting[target] = inj
        if settings:
            known = ("failure_rate", "latency", "latency_rate", "exception", "enabled")
            unknown = sorted(set(settings) - set(known))
            if unknown:
                raise ConfigError(
                    f"chaos.{target}",
                    f"unknown fault setting {unknown[0]!r} (known: {', '.join(known)})",
                )
            inj.configure(**settings)
        return inj

    def find(self, target: str) -> FaultInjector | None:
        """The injector of ``target`` if one was made (unlike :meth:`injector`, makes none)."""
        return self._injectors.get(target)

    @property
    def targets(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._injectors)

    def call(self, target: str, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn`` through ``target``'s injector."""
        return self.injector(target).call(fn, *args, **kwargs)

    async def call_async(
        self, target: str, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """The async twin of :meth:`call`."""
        return await self.injector(target).call_async(fn, *args, **kwargs)

    # -- experiments ---------------------------------------------------------------------------

    def experiment(
        self,
        target: str,
        *,
        failure_rate: float = 0.0,
        latency: float | tuple[float, float] | None = None,
        latency_rate: float | None = None,
        exception: ExceptionFactory = InjectedFault,
        duration: float | None = None,
        name: str | None = None,
    ) -> Experiment:
        """An experiment on ``target``: use as ``with`` or ``async with``.

        While it runs, ``target``'s calls fail with ``failure_rate`` and are delayed by
        ``latency`` (seconds, or a ``(low, high)`` range) at ``latency_rate``, whatever the
        target's standing settings. It ends on exit, or after ``duration`` seconds. Starting
        one while chaos is disabled raises :class:`~buttress.ConfigError`.
        """
        return self.injector(target).experiment(
            failure_rate=failure_rate,
            latency=latency,
            latency_rate=latency_rate,
            exception=exception,
            duration=duration,
            name=name,
        )

    def schedule(
        self,
        targets: list[str] | tuple[str, ...],
        *,
        experiments: int = 10,
        every: float = 60.0,
        duration: float | tuple[float, float] = (5.0, 30.0),
        failure_rate: float = 0.5,
        latency: float | tuple[float, float] | None = None,
        latency_rate: float | None = None,
        exception: ExceptionFactory = InjectedFault,
        max_duration: float | None = None,
        seed: int | str | None = None,
        name: str | None = None,
    ) -> ChaosSchedule:
        """Scheduled chaos (the guide's ``chaos_mode``): start a series of experiments.

        ``experiments`` of them (at most ``MAX_EXPERIMENTS``), one after another: before each
        a pause of ``every`` seconds on average, then ``duration`` seconds (or a ``(low, high)``
        range) of faults (``failure_rate``, ``latency``...) on a target drawn from ``targets``;
        all over by ``max_duration`` seconds when given. Drawn from ``seed`` (by default from
        the registry's seed and the schedule's name), so a run replays. Returns the running
        :class:`ChaosSchedule`; ``stop()`` ends it. Chaos must be enabled.
        """
        sched = ChaosSchedule(
            self,
            targets=targets,
            experiments=experiments,
            every=every,
            duration=duration,
            failure_rate=failure_rate,
            latency=latency,
            latency_rate=latency_rate,
            exception=exception,
            max_duration=max_duration,
            seed=seed,
            name=name,
        ).start()
        with self._lock:
            # Listed while they run, and the last few that ended: the list stays short.
            ended = [s for s in self.schedules if not s.active][-_ENDED_SCHEDULES_KEPT:]
            self.schedules = [s for s in self.schedules if s.active or s in ended] + [sched]
        return sched

    def active_experiments(self) -> list[Experiment]:
        """Every running experiment (expired ones are retired first), in start order."""
        with self._lock:
            injectors = list(self._injectors.values())
        running = [exp for inj in injectors for exp in inj.experiments]
        running.sort(key=lambda e: (e.started_at or 0.0, e.start_seq))
        return running

    def snapshot(self) -> ChaosSnapshot:
        """What the health report shows under ``chaos_engineering``."""
        with self._lock:
            injectors = list(self._injectors.values())
        return {
            "enabled": self.enabled,
            "active_experiments": [e.to_dict() for e in self.active_experiments()],
            "injectors": {inj.name: inj.snapshot() for inj in injectors},
            "schedules": [s.snapshot() for s in tuple(self.schedules)],
        }

    def __repr__(self) -> str:
        return f"Chaos(enabled={self.enabled}, targets={list(self.targets)})"
