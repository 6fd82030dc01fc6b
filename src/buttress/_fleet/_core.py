"""The fleet's decisions, given ``now``: pure, no I/O, no clock, no lock.

Theory of operation
-------------------
Every process keeps its own breaker and decides on its own hot path. Every ``sync_interval``
it sends, per breaker, one *report*: its window's call and failure counts, the fleet *epoch*
it last saw, whether it recovered from a fleet opening since its last report, and how many
half-open probe permits it wants. Redis keeps one *record* per process (the report and an
expiry: the heartbeat) and the fleet's *state*: an epoch and the time the fleet is open until.

The fleet view (:func:`signal`) sums the records of live processes (expiry in the future) that
were made in the current epoch; a process that has failures in its window is *sick*. The
fleet opens (:func:`step`) when it is not open already, the summed signal crosses the
breaker's own thresholds (failure count, or failure rate once ``minimum_calls`` were made) and
at least ``quorum`` processes are sick: one sick process opens its own breaker only. Opening
starts a new epoch, so the windows counted before it (which every process clears when it
learns of the opening) count no more.

While the fleet's open time has passed (the fleet is *half open*), probes are budgeted for the
whole fleet: a counter that expires after ``probe_ttl_ms`` is raised only while it is below
``probe_budget``; a process gets the permits it asked for that still fit. The first process
whose probes succeed reports it, and the fleet closes: every other process closes too.

Overrides (:class:`Override`) are the operators': ``force_open`` and ``disable`` set flags,
``reset`` clears both, and each bumps a generation. Precedence: forced open over disabled over
the automatic state (:func:`effective`).

``lua/sync.lua`` and ``lua/override.lua`` transcribe :func:`step` and :func:`override`; the
conformance test holds them to the same answers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

from .._breaker._config import BreakerConfig

__all__ = [
    "ACTIONS",
    "FleetState",
    "Override",
    "Record",
    "Report",
    "Thresholds",
    "View",
    "effective",
    "override",
    "signal",
    "step",
    "thresholds_for",
]

ACTIONS = ("force_open", "disable", "reset")


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The breaker's settings as the fleet applies them (milliseconds on Redis's clock)."""

    failure_threshold: int | None
    failure_rate_threshold: float | None
    minimum_calls: int
    quorum: int
    open_ms: int
    probe_budget: int
    probe_ttl_ms: int
    heartbeat_ms: int


def thresholds_for(config: BreakerConfig, quorum: int, sync_interval: float) -> Thresholds:
    """The fleet's thresholds for a breaker: its own, summed over the fleet. A process is
    live for three sync intervals after its last report; the fleet stays open for the
    breaker's ``reset_timeout``; ``half_open_max_calls`` probes per ``reset_timeout`` for the
    whole fleet."""
    return Thresholds(
        failure_threshold=config.failure_threshold,
        failure_rate_threshold=config.failure_rate_threshold,
        minimum_calls=config.minimum_calls,
        quorum=quorum,
        open_ms=max(1, round(config.reset_timeout * 1000)),
        probe_budget=config.half_open_max_calls,
        probe_ttl_ms=max(1, round(config.reset_timeout * 1000)),
        heartbeat_ms=max(1, math.ceil(3 * sync_interval * 1000)),
    )


@dataclass(frozen=True, slots=True)
class Report:
    """What one process sends about one breaker at one sync."""

    calls: int
    failures: int
    epoch: int
    recovered: bool = False
    probes_wanted: int = 0


@dataclass(frozen=True, slots=True)
class Record:
    """One process's last report as Redis keeps it: live until ``expires_ms``."""

    expires_ms: int
    calls: int
    failures: int
    epoch: int


@dataclass(frozen=True, slots=True)
class FleetState:
    """``open_until_ms``: 0 closed; in the future open; in the past half open."""

    epoch: int = 0
    open_until_ms: int = 0


@dataclass(frozen=True, slots=True)
class View:
    """What a sync answers: the fleet's state and signal as of ``now_ms``."""

    now_ms: int
    epoch: int
    open_ms_left: int  # > 0 open for that long; 0 half open; -1 closed
    live: int
    sick: int
    calls: int
    failures: int
    granted: int


@dataclass(frozen=True, slots=True)
class Override:
    """The operators' record for one breaker (kept without expiry: it outlives restarts)."""

    generation: int = 0
    force_open: bool = False
    disabled: bool = False
    action: str = ""
    reason: str = ""
    by: str = ""
    at_ms: int = 0


def signal(records: Mapping[str, Record], epoch: int, now_ms: int) -> tuple[int, int, int, int]:
    """``(live, sick, calls, failures)``: live processes; and, of their records made in
    ``epoch``, how many have failures and the summed counts."""
    live = sick = calls = failures = 0
    for r in records.values():
        if r.expires_ms <= now_ms:
            continue
        live += 1
        if r.epoch == epoch:
            calls += r.calls
            failures += r.failures
            if r.failures > 0:
                sick += 1
    return live, sick, calls, failures


def crosses(th: Thresholds, calls: int, failures: int, sick: int) -> bool:
    """Whether the fleet's summed window opens it (the quorum of sick processes included)."""
    if sick < th.quorum:
        return False
    if th.failure_threshold is not None and failures >= th.failure_threshold:
        return True
    rt = th.failure_rate_threshold
    return rt is not None and calls >= th.minimum_calls and failures >= rt * calls


def step(
    state: FleetState,
    records: Mapping[str, Record],
    probes_used: int,
    pid: str,
    report: Report,
    th: Thresholds,
    now_ms: int,
) -> tuple[FleetState, dict[str, Record], int, View]:
    """One process's sync: store its record, drop expired ones, close on a recovery, open on
    a crossing, grant probes. Returns the new state, records, probe counter and the view."""
    recs = {p: r for p, r in records.items() if r.expires_ms > now_ms}
    recs[pid] = Record(now_ms + th.heartbeat_ms, report.calls, report.failures, report.epoch)
    epoch, until = state.epoch, state.open_until_ms
    if report.recovered and report.epoch == epoch and 0 < until <= now_ms:
        until = 0
    live, sick, calls, failures = signal(recs, epoch, now_ms)
    if until <= now_ms and crosses(th, calls, failures, sick):
        epoch += 1
        until = now_ms + th.open_ms
        probes_used = 0
        live, sick, calls, failures = signal(recs, epoch, now_ms)
    granted = 0
    if report.probes_wanted > 0 and 0 < until <= now_ms:
        granted = max(0, min(report.probes_wanted, th.probe_budget - probes_used))
        probes_used += granted
    left = -1 if until == 0 else max(0, until - now_ms)
    view = View(now_ms, epoch, left, live, sick, calls, failures, granted)
    return FleetState(epoch, until), recs, probes_used, view


def override(current: Override, action: str, reason: str, by: str, now_ms: int) -> Override:
    """The record after an operator's ``action`` (one of :data:`ACTIONS`)."""
    if action == "force_open":
        flags = {"force_open": True}
    elif action == "disable":
        flags = {"disabled": True}
    elif action == "reset":
        flags = {"force_open": False, "disabled": False}
    else:
        raise ValueError(f"unknown action {action!r}")
    return replace(
        current,
        generation=current.generation + 1,
        action=action,
        reason=reason,
        by=by,
        at_ms=now_ms,
        **flags,
    )


def effective(ov: Override) -> str | None:
    """What the override makes of the breaker: ``force_open`` over ``disable`` over ``None``
    (the automatic state)."""
    if ov.force_open:
        return "force_open"
    if ov.disabled:
        return "disable"
    return None
