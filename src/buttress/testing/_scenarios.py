"""``simulate_failures``: the guide's failure scenarios, run for real against an infrastructure.

Each scenario acts on a real component and reports what happened:

* ``circuit_breaker_chaos``: a chaos experiment fails every call to a service until its
  breaker opens (the breaker is left open, as a real outage would leave it);
* ``memory_pressure``: the memory probe reports pressure past the warning, then the critical
  threshold; non-critical work must be shed at critical, critical work let through; the real
  probe is put back and the level allowed to fall again;
* ``rate_limit_burst``: a burst one scope cannot hold, from a fresh synthetic caller; some
  requests must be refused, naming the scope; the burst's charges are refunded afterwards;
* ``connection_pool_exhaustion``: every member of a pool is held, and one more checkout must
  fail with :class:`~buttress.PoolTimeoutError`; all are returned afterwards;
* ``gradual_degradation``: a breaker is reset, then fed a rising share of failures until it
  opens; the levels it passes through are recorded (a band wide enough, e.g. 3 and 9
  failures, shows light, medium and heavy in turn);
* ``scheduled_chaos``: a short seeded schedule of experiments (the guide's ``chaos_mode``)
  on a breaker's target, calls made through its injector meanwhile; what each injected, and
  the recovery time after each (from the fault's end to the first successful call).

A scenario's ``ok`` says whether it did what it names; a scenario whose component is missing
(no pool to exhaust) is reported with ``ok=False`` and the reason, never raised.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from .. import events
from .._breaker import BreakerState, CircuitBreaker, Transition
from .._errors import (
    ConfigError,
    InfrastructureClosedError,
    InjectedFault,
    PoolTimeoutError,
    RejectedError,
)
from .._infrastructure import Infrastructure
from .._memory import MemoryReading

__all__ = ["SCENARIOS", "ScenarioFault", "ScenarioResult", "simulate_failures"]

SCENARIOS = (
    "circuit_breaker_chaos",
    "memory_pressure",
    "rate_limit_burst",
    "connection_pool_exhaustion",
    "gradual_degradation",
    "scheduled_chaos",
)


class ScenarioFault(InjectedFault):
    """The failure a scenario makes a dependency raise (tagged ``injected``, like chaos)."""


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    """What one scenario did: ``ok`` when it did what it names, a one-line ``summary``."""

    name: str
    ok: bool
    summary: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "summary": self.summary, "details": self.details}


def simulate_failures(
    infra: Infrastructure,
    scenarios: Iterable[str] | str = SCENARIOS,
    *,
    service: str | None = None,
) -> list[ScenarioResult]:
    """Run each named scenario, in order, against ``infra``; returns what each did.

    ``service`` picks the service whose components the scenarios act on (one the
    configuration does not know is a :class:`~buttress.ConfigError`, as in a call); by default
    each scenario takes the first suitable component by name.
    """
    if infra.closed:
        raise InfrastructureClosedError(
            f"infrastructure {infra.namespace!r} is closed: run scenarios before closing it"
        )
    names = [scenarios] if isinstance(scenarios, str) else list(scenarios)
    for name in names:
        if name not in _RUNNERS:
            raise ConfigError(
                "scenarios", f"unknown scenario {name!r} (known: {', '.join(SCENARIOS)})"
            )
    if service is not None:
        infra.layers(service)  # an unknown service is the caller's error, as a call's would be
    results = []
    for name in names:
        try:
            results.append(_RUNNERS[name](infra, service))
        except Exception as exc:  # a scenario reports, it never breaks the caller's test
            results.append(ScenarioResult(name, False, f"raised {exc!r}", {"error": repr(exc)}))
    return results


# -- picking targets ---------------------------------------------------------------------------


def _breaker(infra: Infrastructure, service: str | None) -> CircuitBreaker | None:
    if service is not None:
        return infra.layers(service).breaker
    return infra.breakers[min(infra.breakers)] if infra.breakers else None


def _missing(name: str, what: str) -> ScenarioResult:
    return ScenarioResult(name, False, f"no {what} to act on", {})


class _Transitions:
    """Collects a breaker's transitions while a scenario runs."""

    def __init__(self, breaker: CircuitBreaker) -> None:
        self.seen: list[Transition] = []
        self._stop = breaker.subscribe(lambda _b, t: self.seen.append(t))

    def close(self) -> None:
        self._stop()

    def states(self) -> list[str]:
        return [t.to_state.value + (f":{t.level.value}" if t.level else "") for t in self.seen]


# -- the scenarios -------------------------------------------------------------------------------


def circuit_breaker_chaos(infra: Infrastructure, service: str | None) -> ScenarioResult:
    name = "circuit_breaker_chaos"
    breaker = _breaker(infra, service)
    if breaker is None:
        return _missing(name, "circuit breaker")
    chaos = infra.chaos
    was_enabled = chaos.enabled
    injector = chaos.injector(breaker.name)
    breaker.reset()  # from closed: an already open breaker would prove nothing
    watch = _Transitions(breaker)
    calls = injected = refused = 0
    chaos.enable()
    try:
        with chaos.experiment(breaker.name, failure_rate=1.0, name=name):
            limit = 10 * max(breaker.config.failure_threshold or 0, breaker.config.minimum_calls, 5)
            while breaker.state is not BreakerState.OPEN and calls < limit:
                calls += 1
                try:
                    with breaker.guard(critical=True):
                        injector.call(lambda: None)
                except InjectedFault:
                    injected += 1
                except RejectedError:
                    refused += 1
    finally:
        if not was_enabled:
            chaos.disable()
        watch.close()
    opened = breaker.state is BreakerState.OPEN and any(
        t.to_state is BreakerState.OPEN for t in watch.seen
    )
    return ScenarioResult(
        name,
        opened,
        f"{breaker.name}: {injected} injected failures "
        + ("opened the breaker" if opened else "did not open the breaker"),
        {
            "breaker": breaker.name,
            "calls": calls,
            "injected": injected,
            "refused": refused,
            "transitions": watch.states(),
            "state": breaker.state.value,
        },
    )


def memory_pressure(infra: Infrastructure, service: str | None) -> ScenarioResult:
    name = "memory_pressure"
    mm = infra.memory
    if mm is None:
        return _missing(name, "memory manager")
    real = mm.probe
    limit = 1 << 30
    levels: list[str] = []
    shed_at_critical = critical_passes = False
    try:
        for ratio in (mm.config.warning_threshold + 0.02, mm.config.critical_threshold + 0.05):
            reading = MemoryReading(source="scenario", used=int(ratio * limit), limit=limit)
            mm.probe = lambda reading=reading: reading  # type: ignore[misc]
            levels.append(mm.sample().level.value)
        shed_at_critical = mm.should_shed(critical=False)
        critical_passes = not mm.should_shed(critical=True)
    finally:
        mm.probe = real
        # leave the scenario's level behind: enough real samples for the hysteresis
        for _ in range(mm.config.exit_samples + 1):
            with contextlib.suppress(Exception):
                mm.sample()
    ok = levels == ["warning", "critical"] and shed_at_critical and critical_passes
    return ScenarioResult(
        name,
        ok,
        f"levels {' -> '.join(levels)}; non-critical shed at critical: {shed_at_critical}; "
        f"level now {mm.level.value}",
        {
            "levels": levels,
            "shed_at_critical": shed_at_critical,
            "critical_passes": critical_passes,
            "level_after": mm.level.value,
        },
    )


def rate_limit_burst(infra: Infrastructure, service: str | None) -> ScenarioResult:
    name = "rate_limit_burst"
    limiter = (
        infra.layers(service).limiter
        if service is not None
        else (infra.limiters[min(infra.limiters)] if infra.limiters else None)
    )
    if limiter is None:
        return _missing(name, "rate limiter")
    who = f"scenario-{uuid.uuid4().hex[:8]}"
    context = {s.by: f"{who}-{s.by}" for s in limiter.scopes if s.by is not None}
    tightest = min(s.burst if s.burst is not None else s.limit for s in limiter.scopes)
    burst = int(tightest) + 10
    admitted = 0
    denied: dict[str, int] = {}
    for _ in range(burst):
        d = limiter.try_acquire(context)
        if d.allowed:
            admitted += 1
        else:
            denied[d.scope] = denied.get(d.scope, 0) + 1
    if admitted:
        limiter.refund(context, admitted)  # give the shared scopes back what the burst took
    limiter.reset(context)
    refused = sum(denied.values())
    return ScenarioResult(
        name,
        refused > 0 and admitted > 0,
        f"{limiter.name}: burst of {burst}: {admitted} admitted, {refused} refused "
        f"({', '.join(f'{k}: {v}' for k, v in denied.items()) or 'none'})",
        {"limiter": limiter.name, "burst": burst, "admitted": admitted, "denied_by_scope": denied},
    )


def connection_pool_exhaustion(infra: Infrastructure, service: str | None) -> ScenarioResult:
    name = "connection_pool_exhaustion"
    pool = (
        infra.layers(service).pool
        if service is not None
        else (infra.pools[min(infra.pools)] if infra.pools else None)
    )
    if pool is None:
        return _missing(name, "thread connection pool")
    cfg = pool.config
    capacity = cfg.max_size + cfg.max_overflow
    held: list[Any] = []
    refused_with = None
    waited = 0.0
    try:
        for _ in range(capacity):
            held.append(pool.checkout(timeout=10.0))  # noqa: PERF401 (release what was taken)
        try:
            extra = pool.checkout(timeout=0.05)
        except PoolTimeoutError as exc:
            refused_with, waited = type(exc).__name__, exc.waited
        else:
            extra.release()
        stats = pool.snapshot()
    finally:
        for lease in held:
            lease.release()
    ok = refused_with == "PoolTimeoutError" and len(held) == capacity
    return ScenarioResult(
        name,
        ok,
        f"{pool.name}: held {len(held)} of {capacity}; one more "
        + (f"refused with {refused_with} after {waited:.3f}s" if refused_with else "was served"),
        {
            "pool": pool.name,
            "held": len(held),
            "capacity": capacity,
            "refused_with": refused_with,
            "waited": waited,
            "overflow_in_use": stats.overflow_in_use,
        },
    )


def gradual_degradation(infra: Infrastructure, service: str | None) -> ScenarioResult:
    name = "gradual_degradation"
    breaker = _breaker(infra, service)
    if breaker is None:
        return _missing(name, "circuit breaker")
    breaker.reset()
    watch = _Transitions(breaker)
    calls = failures = 0
    ramp = 200  # outcomes over which the failure share climbs from 0 to 1
    try:
        while breaker.state is not BreakerState.OPEN and calls < 4 * ramp:
            share = min(1.0, (calls + 1) / ramp)
            fail = failures < share * (calls + 1)
            calls += 1
            failures += fail
            with contextlib.suppress(ScenarioFault), breaker.guard(critical=True):
                if fail:
                    raise ScenarioFault("scenario: dependency failing")
    finally:
        watch.close()
    levels = [t.level.value for t in watch.seen if t.level is not None]
    order = ["light", "medium", "heavy"]
    # Degraded first, never easing while failures rise, then open. A level may be skipped when
    # the thresholds leave it no room (failure counts 3 to 5 give light, medium, then open).
    rising = all(order.index(a) <= order.index(b) for a, b in pairwise(levels))
    opened = breaker.state is BreakerState.OPEN
    skipped = [lv for lv in order if lv not in levels]
    summary = f"{breaker.name}: {' -> '.join(['closed', *watch.states()])} after {calls} calls"
    if levels and skipped:
        summary += f" ({', '.join(skipped)} skipped: these thresholds leave no room for it)"
    return ScenarioResult(
        name,
        bool(levels) and rising and opened,
        summary,
        {
            "skipped": skipped,
            "breaker": breaker.name,
            "calls": calls,
            "failures": failures,
            "levels": levels,
            "transitions": watch.states(),
            "state": breaker.state.value,
        },
    )


def scheduled_chaos(infra: Infrastructure, service: str | None) -> ScenarioResult:
    name = "scheduled_chaos"
    breaker = _breaker(infra, service)
    if breaker is None:
        return _missing(name, "circuit breaker")
    chaos, clock, target = infra.chaos, infra.clock, breaker.name
    was_enabled = chaos.enabled
    injector = chaos.injector(target)
    tag = f"{name}#{len(chaos.schedules) + 1}"  # its name: a seeded registry's replays
    recovered: list[float] = []

    def note(_name: tuple[str, ...], m: Any, md: Any) -> None:
        if md.get("target") == target and str(md.get("experiment", "")).startswith(tag + "/"):
            recovered.append(m["recovery_time"])

    handler = f"buttress.scenario.{uuid.uuid4().hex}"
    events.attach(handler, ("buttress", "chaos", "recovery_time"), note)
    chaos.enable()
    step = 0.01  # a call every 10 ms (the clock's sleep: a ManualClock just moves on)
    calls = injected = 0
    try:
        schedule = chaos.schedule(
            [target], experiments=3, every=0.1, duration=0.1, failure_rate=0.5, name=tag
        )
        end = clock.monotonic() + schedule.span + 10 * step
        while clock.monotonic() < end:
            clock.sleep(step)
            calls += 1
            try:
                injector.call(lambda: None)
            except InjectedFault:
                injected += 1
        schedule.stop()
        snap = schedule.snapshot()
    finally:
        events.detach(handler)
        if not was_enabled:
            chaos.disable()
    times = ", ".join(f"{t * 1e3:.0f} ms" for t in recovered) or "never"
    ok = snap["finished"] == snap["planned"] and injected > 0 and bool(recovered)
    return ScenarioResult(
        name,
        ok,
        f"{target}: {snap['finished']} of {snap['planned']} scheduled experiments ran, "
        f"{injected} of {calls} calls failed; recovered in {times}",
        {
            "target": target,
            "schedule": tag,
            "seed": schedule.seed,
            "plan": [(p.offset, p.duration, p.target) for p in schedule.plan],
            "finished": snap["finished"],
            "calls": calls,
            "injected": injected,
            "recovery_times": recovered,
        },
    )


_RUNNERS: dict[str, Callable[[Infrastructure, str | None], ScenarioResult]] = {
    "circuit_breaker_chaos": circuit_breaker_chaos,
    "memory_pressure": memory_pressure,
    "rate_limit_burst": rate_limit_burst,
    "connection_pool_exhaustion": connection_pool_exhaustion,
    "gradual_degradation": gradual_degradation,
    "scheduled_chaos": scheduled_chaos,
}
