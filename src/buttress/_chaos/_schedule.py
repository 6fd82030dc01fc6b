"""Scheduled chaos (the guide's ``chaos_mode``): a seeded, bounded series of experiments.

:func:`plan` is pure: from a seeded RNG it draws when each experiment starts, how long it lasts
and which target it hits. :class:`ChaosSchedule` starts every planned experiment at once, each
with its delay (:meth:`Experiment.start`), so no timer or thread is involved: as for any
experiment, the clock decides when each one begins and ends, lazily, on the next call to its
target or the next look at the registry.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict

from .. import events
from .._errors import ConfigError, InjectedFault
from .._validate import fraction, int_at_least, positive
from ._faults import ExceptionFactory, FaultSettings

if TYPE_CHECKING:
    from ._chaos import Chaos
    from ._experiment import Experiment

__all__ = ["MAX_EXPERIMENTS", "ChaosSchedule", "Planned", "ScheduleSnapshot", "plan"]

MAX_EXPERIMENTS = 1_000
"""The most experiments one schedule may hold: a schedule is always bounded."""

EV_SCHEDULE_START = ("buttress", "chaos", "schedule_start")
EV_SCHEDULE_STOP = ("buttress", "chaos", "schedule_stop")


@dataclass(frozen=True, slots=True)
class Planned:
    """One experiment of a schedule: ``offset`` seconds after the schedule's start, for
    ``duration`` seconds, on ``target``."""

    offset: float
    duration: float
    target: str


def plan(
    rng: random.Random,
    *,
    targets: Sequence[str],
    experiments: int,
    every: float,
    duration: tuple[float, float],
    max_duration: float | None,
) -> list[Planned]:
    """The schedule's experiments, one after another: before each a pause of ``every``
    seconds on average (uniform in half to one and a half times it), then an experiment of
    a duration drawn in ``duration`` on a target drawn from ``targets``; at most
    ``experiments`` of them, all ended by ``max_duration`` seconds when it is given."""
    out: list[Planned] = []
    t = 0.0
    low, high = duration
    for _ in range(experiments):
        t += rng.uniform(0.5 * every, 1.5 * every)
        length = rng.uniform(low, high) if high > low else low
        target = targets[rng.randrange(len(targets))]
        if max_duration is not None:
            if t >= max_duration:
                break
            length = min(length, max_duration - t)
        out.append(Planned(t, length, target))
        t += length
    return out


class ExperimentEntry(TypedDict):
    name: str
    target: str
    starts_in: float


class ScheduleSnapshot(TypedDict):
    """A schedule as the health report lists it under ``chaos_engineering.schedules``."""

    name: str
    seed: int | str | None
    targets: list[str]
    planned: int
    finished: int
    running: list[str]
    next: ExperimentEntry | None
    active: bool
    stopped: bool
    started: float | None
    remaining: float


class ChaosSchedule:
    """A series of experiments laid over the targets of a :class:`~buttress.Chaos` registry.

    Made (and started) by :meth:`Chaos.schedule <buttress.Chaos.schedule>`. Seeded: with the
    same seed, the same experiments at the same offsets on the same targets. Bounded: at most
    ``experiments`` of them (``MAX_EXPERIMENTS`` at most), ended by ``max_duration`` seconds.
    Listed in the health report (``chaos_engineering.schedules``; its running experiments among
    the active ones). :meth:`stop` ends the running experiment and cancels the rest; so does
    switching chaos off (nothing is injected while it is off).
    """

    def __init__(
        self,
        chaos: Chaos,
        *,
        targets: Sequence[str],
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
    ) -> None:
        if isinstance(targets, str) or not isinstance(targets, Sequence):
            raise ConfigError("targets", f"must be a list of target names, got {targets!r}")
        if not targets or not all(isinstance(t, str) and t for t in targets):
            raise ConfigError("targets", f"must name one target or more, got {list(targets)!r}")
        int_at_least("experiments", experiments, 1)
        if experiments > MAX_EXPERIMENTS:
            raise ConfigError(
                "experiments", f"must be at most {MAX_EXPERIMENTS:,} (got {experiments:,})"
            )
        every = positive("every", every)
        low, high = _duration_range(duration)
        if max_duration is not None:
            max_duration = positive("max_duration", max_duration)
        if name is not None and (not isinstance(name, str) or not name):
            raise ConfigError("name", f"must be a non-empty string, got {name!r}")
        self.settings = FaultSettings.make(
            failure_rate=fraction("failure_rate", failure_rate),
            latency=latency,
            latency_rate=latency_rate,
            exception=exception,
        )
        self.chaos = chaos
        # Named by its place in the registry, so a seeded registry's schedules replay.
        self.name = name if name is not None else f"schedule#{len(chaos.schedules) + 1}"
        if seed is None and chaos.seed is not None:
            seed = f"{chaos.seed}/{self.name}"
        self.seed = seed
        self.targets = list(dict.fromkeys(targets))
        self.plan = plan(
            random.Random(seed),
            targets=self.targets,
            experiments=experiments,
            every=every,
            duration=(low, high),
            max_duration=max_duration,
        )
        self.max_duration = max_duration
        self.experiments: list[Experiment] = []
        self.started_at: float | None = None  # monotonic
        self.started: float | None = None  # wall clock
        self.stopped = False

    def start(self) -> ChaosSchedule:
        """Start every planned experiment, each with its delay. Chaos must be enabled."""
        if self.started_at is not None:
            raise RuntimeError(f"schedule {self.name!r} was already started; make a new one")
        if not self.chaos.enabled:
            raise ConfigError(
                "chaos.enabled", f"chaos is disabled: enable it before starting {self.name!r}"
            )
        clock = self.chaos.clock
        self.started_at, self.started = clock.monotonic(), clock.time()
        s = self.settings
        for i, p in enumerate(self.plan, 1):
            exp = self.chaos.injector(p.target).experiment(
                failure_rate=s.failure_rate,
                latency=s.latency,
                latency_rate=s.latency_rate if s.latency is not None else None,
                exception=s.exception,
                duration=p.duration,
                name=f"{self.name}/{i}",
            )
            self.experiments.append(exp.start(delay=p.offset))
        if events.enabled(EV_SCHEDULE_START):
            events.emit(
                EV_SCHEDULE_START,
                {"experiments": len(self.plan), "span": self.span},
                {"schedule": self.name, "targets": list(self.targets), "seed": self.seed},
            )
        return self

    def stop(self) -> None:
        """End the running experiment now and cancel those that have not begun."""
        if self.stopped or self.started_at is None:
            self.stopped = True
            return
        self.stopped = True
        now = self.chaos.clock.monotonic()
        ran = sum(1 for e in self.experiments if e.started_at is not None and e.started_at <= now)
        for exp in self.experiments:
            exp.stop()
        if events.enabled(EV_SCHEDULE_STOP):
            events.emit(
                EV_SCHEDULE_STOP,
                {"ran": ran, "cancelled": len(self.plan) - ran},
                {"schedule": self.name},
            )

    @property
    def span(self) -> float:
        """Seconds from the start to the end of the last planned experiment."""
        return self.plan[-1].offset + self.plan[-1].duration if self.plan else 0.0

    @property
    def finished(self) -> int:
        """Experiments that ran to their end (or were stopped while running)."""
        now = self.chaos.clock.monotonic()
        return sum(
            1
            for exp in self.experiments
            if exp.end_reason in ("expired", "exited")
            or (exp.ends_at is not None and exp.ended_at is None and now >= exp.ends_at)
        )

    @property
    def active(self) -> bool:
        """Started, not stopped, and some experiment still to run or running."""
        if self.started_at is None or self.stopped:
            return False
        return self.chaos.clock.monotonic() < self.started_at + self.span

    def snapshot(self) -> ScheduleSnapshot:
        now = self.chaos.clock.monotonic()
        running = [e.name for e in self.experiments if e.running]
        upcoming = [e for e in self.experiments if e.pending]
        nxt: ExperimentEntry | None = None
        if upcoming:
            first = min(upcoming, key=lambda e: e.started_at or 0.0)
            nxt = {
                "name": first.name,
                "target": first.target,
                "starts_in": (first.started_at or now) - now,
            }
        end = (self.started_at or now) + self.span
        return {
            "name": self.name,
            "seed": self.seed,
            "targets": list(self.targets),
            "planned": len(self.plan),
            "finished": self.finished,
            "running": running,
            "next": nxt,
            "active": self.active,
            "stopped": self.stopped,
            "started": self.started,
            "remaining": max(0.0, end - now) if self.active else 0.0,
        }

    def __repr__(self) -> str:
        state = "stopped" if self.stopped else ("active" if self.active else "done")
        return (
            f"<ChaosSchedule {self.name!r} {len(self.plan)} experiments on {self.targets} {state}>"
        )


def _duration_range(duration: float | tuple[float, float]) -> tuple[float, float]:
    if isinstance(duration, tuple | list):
        if len(duration) != 2:
            raise ConfigError(
                "duration", f"must be seconds or a (low, high) pair, got {duration!r}"
            )
        low, high = positive("duration", duration[0]), positive("duration", duration[1])
        if high < low:
            raise ConfigError("duration", f"must be a (low, high) pair, low <= high: {duration!r}")
        return low, high
    d = positive("duration", duration)
    return d, d
