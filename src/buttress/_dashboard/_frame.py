"""What the dashboard page shows, one frame at a time (pure: no I/O, the times passed in).

:class:`Frames` turns a health report into a frame, the JSON object the page renders. It keeps
what a single report cannot give: the rates (calls and decisions per second, from the change in
each component's totals since the previous frame) and each breaker's recent history for its
sparklines. The frame's shape is written down in ``docs/dashboard.md`` ("The frame").
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .._fleet._fleet import NOT_SYNCED
from .._health import HealthReport

VERSION = 1
HISTORY_SERIES = ("failure_rate", "slow_call_rate", "calls_per_second")


@dataclass(frozen=True, slots=True)
class Thresholds:
    """A pressure monitor's warning and critical marks, in the unit of its value."""

    warning: float
    critical: float


@dataclass(slots=True)
class _Rate:
    """Per-second change of a running total between two frames."""

    total: float | None = None
    at: float | None = None
    per_second: float = 0.0

    def update(self, total: float, now: float) -> float:
        if self.total is not None and self.at is not None and now > self.at:
            # A total that went down was reset (a component rebuilt by a reload): no rate.
            self.per_second = max(0.0, total - self.total) / (now - self.at)
        self.total, self.at = total, now
        return self.per_second


@dataclass(slots=True)
class _BreakerTrack:
    calls: _Rate = field(default_factory=_Rate)
    history: dict[str, deque[float]] = field(default_factory=dict)


@dataclass(slots=True)
class _LimiterTrack:
    decisions: _Rate = field(default_factory=_Rate)
    refused: _Rate = field(default_factory=_Rate)


def group_of(name: str) -> str:
    """The group a component's tile sits in: its name up to the first ``.``, ``:`` or ``/``
    (``payments.charge`` and ``payments.refund`` sit together); a plain name is its own."""
    for i, ch in enumerate(name):
        if ch in ".:/" and i:
            return name[:i]
    return name


class Frames:
    """Builds frames from health reports, one after another (not thread-safe: one builder).

    ``history_length`` points of each breaker's failure rate, slow-call rate and calls per
    second are kept; a component that disappears (a reload removed it) is forgotten.
    """

    def __init__(self, *, interval: float, history_length: int = 60) -> None:
        self.interval = interval
        self.history_length = history_length
        self.seq = 0
        self._breakers: dict[str, _BreakerTrack] = {}
        self._limiters: dict[str, _LimiterTrack] = {}

    def build(
        self,
        report: HealthReport,
        *,
        now: float,
        wall: float,
        actions: Mapping[str, bool],
        cpu: Thresholds | None = None,
        operator_actions: list[dict[str, Any]] | tuple[dict[str, Any], ...] = (),
        windows: Mapping[str, float] | None = None,
    ) -> dict[str, Any]:
        """The next frame, with every breaker's history (the page's first frame); see
        :func:`without_history` for the frames after it. ``now`` is monotonic (the rates),
        ``wall`` the epoch time the page measures its lag against; ``windows``: each breaker's
        window in seconds, what its rates and counts cover."""
        self.seq += 1
        statuses = {(c.kind, c.name): c for c in report.checks}
        breakers = [
            self._breaker(name, snap, now, (windows or {}).get(name))
            for name, snap in sorted(report.circuit_breakers.items())
        ]
        self._breakers = {n: t for n, t in self._breakers.items() if n in report.circuit_breakers}
        limiters = [
            self._limiter(name, snap, now, statuses)
            for name, snap in sorted(report.rate_limiters.items())
        ]
        self._limiters = {n: t for n, t in self._limiters.items() if n in report.rate_limiters}
        return {
            "version": VERSION,
            "seq": self.seq,
            "full": True,
            "sent_at": wall,
            "interval": self.interval,
            "history_length": self.history_length,
            "namespace": report.namespace,
            "actions": dict(actions),
            "overall": {
                "status": str(report.overall_status),
                "problems": [
                    {"kind": c.kind, "name": c.name, "status": c.status, "reason": c.reason}
                    for c in report.checks
                    if c.status != "pass"
                ],
            },
            "breakers": breakers,
            "limiters": limiters,
            "pools": [_pool(n, s, statuses) for n, s in sorted(report.connection_pools.items())],
            "bulkheads": [_bulkhead(s) for _, s in sorted(report.bulkheads.items())],
            "pressure": _pressure(report, cpu),
            "chaos": _chaos(report),
            "fleet": _fleet(report),
            "operator_actions": list(operator_actions),
        }

    def _breaker(self, name: str, snap: Any, now: float, window: float | None) -> dict[str, Any]:
        track = self._breakers.get(name)
        if track is None:
            track = self._breakers[name] = _BreakerTrack()
        calls = snap.total_successes + snap.total_failures + snap.total_ignored
        values = {
            "failure_rate": float(snap.failure_rate),
            "slow_call_rate": float(snap.slow_call_rate),
            "calls_per_second": track.calls.update(calls, now),
        }
        for series, value in values.items():
            points = track.history.get(series)
            if points is None:
                points = track.history[series] = deque(maxlen=self.history_length)
            points.append(round(value, 4))
        state = snap.state.value
        level = snap.degradation_level
        fleet = snap.fleet
        return {
            "name": name,
            "group": group_of(name),
            "state": state,
            "level": level.value if level is not None and state == "degraded" else None,
            **{k: round(v, 4) for k, v in values.items()},
            "window": window,
            "window_calls": snap.call_count,
            "window_failures": snap.failure_count,
            "shed": snap.total_shed,
            "rejected": snap.total_rejected,
            "half_open_in": (
                round(snap.retry_after, 3)
                if state == "open" and snap.retry_after is not None
                else None
            ),
            "fleet": None if fleet is None else _breaker_fleet(fleet),
            "history": {k: list(v) for k, v in track.history.items()},
        }

    def _limiter(
        self, name: str, snap: Any, now: float, statuses: Mapping[tuple[str, str], Any]
    ) -> dict[str, Any]:
        track = self._limiters.get(name)
        if track is None:
            track = self._limiters[name] = _LimiterTrack()
        check = statuses.get(("rate_limiter", name))
        scopes = sorted(snap.scopes, key=lambda s: -s.denied)  # the tightest first
        return {
            "name": name,
            "group": group_of(name),
            "algorithm": snap.algorithm,
            "backend": snap.backend,
            "mode": snap.mode,
            "status": check.status if check is not None else "pass",
            "decisions_per_second": round(
                track.decisions.update(snap.admitted + snap.denied, now), 3
            ),
            "refused_per_second": round(track.refused.update(snap.denied, now), 3),
            "admitted": snap.admitted,
            "denied": snap.denied,
            "scopes": [
                {
                    "name": s.name,
                    "limit": s.limit,
                    "window": s.window,
                    "by": s.by,
                    "denied": s.denied,
                }
                for s in scopes
            ],
        }


def without_history(frame: Mapping[str, Any]) -> dict[str, Any]:
    """The same frame for a page that already holds the history: each breaker's current
    values only (the page appends them)."""
    out = dict(frame)
    out["full"] = False
    out["breakers"] = [{k: v for k, v in b.items() if k != "history"} for b in frame["breakers"]]
    return out


def _breaker_fleet(fleet: Any) -> dict[str, Any]:
    override = fleet.override
    return {
        "namespace": fleet.namespace,
        "state": fleet.state,
        "processes": fleet.live,
        "sick": fleet.sick,
        "calls": fleet.calls,  # summed over the fleet's window
        "failures": fleet.failures,
        "reachable": _reachable(fleet),
        "override": (
            None
            if override is None or override.effective is None
            else {
                "action": override.effective,
                "reason": override.reason,
                "by": override.by,
                "at": override.at,
            }
        ),
    }


def _reachable(fleet: Any) -> bool | None:
    """Whether the fleet's Redis answered its last sync (``None``: no sync yet)."""
    if fleet.error == NOT_SYNCED:
        return None
    return bool(fleet.connected)


def _pool(name: str, snap: Any, statuses: Mapping[tuple[str, str], Any]) -> dict[str, Any]:
    check = statuses.get(("connection_pool", name))
    return {
        "name": name,
        "in_use": snap.in_use,
        "idle": snap.idle,
        "waiting": snap.waiting,
        "overflow": snap.overflow,
        "size": snap.size,
        "max_size": snap.max_size,
        "wait_p95": snap.wait_p95,
        "status": check.status if check is not None else "pass",
    }


def _bulkhead(snap: Any) -> dict[str, Any]:
    return {
        "name": snap.name,
        "limit": snap.limit,
        "in_use": snap.in_use,
        "waiting": snap.waiting,
        "rejected": snap.rejected,
    }


def _pressure(report: HealthReport, cpu: Thresholds | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    mem = report.memory
    if mem is not None:
        out.append(
            {
                "kind": "memory",
                "name": mem.name,
                "level": mem.level.value,
                "value": mem.ratio,
                "warning": mem.warning_threshold,
                "critical": mem.critical_threshold,
                "unit": "ratio",
                "reason": mem.reason,
            }
        )
    snap = report.overload.get("cpu")
    if snap is not None and cpu is not None:
        out.append(
            {
                "kind": "cpu",
                "name": snap.name,
                "level": snap.level.value,
                "value": snap.utilisation,
                "warning": cpu.warning,
                "critical": cpu.critical,
                "unit": "ratio",
                "reason": snap.reason,
            }
        )
    out.extend(
        {
            "kind": "loop_lag",
            "name": loop.name,
            "level": loop.level.value,
            "value": loop.lag_p99,
            "warning": loop.warning,
            "critical": loop.critical,
            "unit": "seconds",
            "reason": loop.reason,
        }
        for loop in report.overload.get("loops", ())
    )
    return out


def _chaos(report: HealthReport) -> dict[str, Any]:
    chaos = report.chaos_engineering
    experiments = []
    for e in chaos["active_experiments"]:
        s = e["settings"]
        kinds = [
            k for k, on in (("failure", s["failure_rate"] > 0), ("latency", s["latency"])) if on
        ]
        experiments.append(
            {
                "name": e["name"],
                "target": e["target"],
                "kind": " and ".join(kinds) or "none",
                "ends_in": e["remaining"],
            }
        )
    return {"enabled": chaos["enabled"], "experiments": experiments}


def _fleet(report: HealthReport) -> dict[str, Any] | None:
    fleets = [s.fleet for s in report.circuit_breakers.values() if s.fleet is not None]
    if not fleets:
        return None
    return {
        "namespace": fleets[0].namespace,
        "reachable": (
            False
            if any(_reachable(f) is False for f in fleets)
            else None
            if any(_reachable(f) is None for f in fleets)
            else True
        ),
        "processes": max(f.live for f in fleets),
    }
