"""The fleet's Redis shell: keys, the two scripts, and nothing else.

Every key of one breaker shares a Redis Cluster hash tag, ``<namespace>:fleet:{<breaker>}:``,
so one script touches them all: ``procs`` (a hash of every process's last report, each with
its heartbeat expiry), ``state`` (the fleet's epoch and open-until time), ``probes`` (the
half-open budget's counter, with an expiry) and ``override`` (the operators' record, which
never expires, so it outlives every process). ``procs`` and ``state`` expire once nobody has
reported for a while. Time is Redis's own (``TIME``), in milliseconds.

The scripts run as Redis functions where the server has them (``ratelimit/_functions.py``),
else with ``EVALSHA``. A failure of Redis raises what redis-py raises; the caller
(``_fleet.py``) falls back to the local breaker.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from ..ratelimit._functions import Library, ScriptCall
from ._core import Override, Report, Thresholds, View

__all__ = ["FleetStore"]

SCRIPTS = ("fleet_sync", "fleet_override")
_FILES = {"fleet_sync": "sync.lua", "fleet_override": "override.lua"}


def _lua(name: str) -> str:
    return (resources.files("buttress._fleet") / "lua" / name).read_text()


def _num(x: Any) -> int:
    return int(x)


def _text(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


class FleetStore:
    """The two scripts on one sync ``redis.Redis`` client."""

    __slots__ = ("_override", "_sync", "namespace")

    def __init__(self, client: Any, namespace: str) -> None:
        self.namespace = namespace
        texts = {name: _lua(_FILES[name]) for name in SCRIPTS}
        library = Library("", texts)
        state = {"functions": type(client).__name__ != "RedisCluster"}
        self._sync = ScriptCall(
            client, library, "fleet_sync", client.register_script(texts["fleet_sync"]), state
        )
        self._override = ScriptCall(
            client,
            library,
            "fleet_override",
            client.register_script(texts["fleet_override"]),
            state,
        )

    def keys(self, breaker: str) -> list[bytes]:
        base = f"{self.namespace}:fleet:{{{breaker}}}:"
        return [
            (base + k).encode("utf-8", "surrogatepass")
            for k in ("procs", "state", "probes", "override")
        ]

    def sync(self, breaker: str, pid: str, report: Report, th: Thresholds) -> tuple[View, Override]:
        """One script call: store the report, read the fleet's view and the override."""
        args = (
            pid,
            report.calls,
            report.failures,
            report.epoch,
            1 if report.recovered else 0,
            report.probes_wanted,
            -1 if th.failure_threshold is None else th.failure_threshold,
            -1 if th.failure_rate_threshold is None else repr(th.failure_rate_threshold),
            th.minimum_calls,
            th.quorum,
            th.open_ms,
            th.probe_budget,
            th.probe_ttl_ms,
            th.heartbeat_ms,
        )
        reply = self._sync(keys=self.keys(breaker), args=tuple(str(a).encode() for a in args))
        n = [_num(x) for x in reply[:11]]
        view = View(*n[:8])
        ov = Override(
            generation=n[8],
            force_open=bool(n[9]),
            disabled=bool(n[10]),
            action=_text(reply[11]),
            reason=_text(reply[12]),
            by=_text(reply[13]),
            at_ms=_num(reply[14]),
        )
        return view, ov

    def override(self, breaker: str, action: str, reason: str, by: str) -> tuple[int, int]:
        """Record an operator's action: ``(generation, at_ms)``."""
        k = self.keys(breaker)
        reply = self._override(
            keys=[k[3], k[1], k[2]],
            args=(action.encode(), reason.encode(), by.encode()),
        )
        return _num(reply[0]), _num(reply[1])

    def read(self, client: Any, breaker: str) -> dict[str, Any]:
        """The fleet's record of ``breaker`` as it stands, for an operator (``buttress fleet
        status``): reads only, so the reader is never counted as a process of the fleet."""
        procs, state, probes, override = self.keys(breaker)
        pipe = client.pipeline(transaction=False)
        pipe.time()
        pipe.hgetall(procs)
        pipe.hmget(state, "epoch", "until")
        pipe.get(probes)
        pipe.hgetall(override)
        (secs, micros), reports, (epoch, until), probes_used, record = pipe.execute()
        now_ms = int(secs) * 1000 + int(micros) // 1000
        processes = []
        for pid, report in sorted(reports.items()):
            expires, calls, failures, seen_epoch = (int(x) for x in _text(report).split())
            if expires > now_ms:
                processes.append(
                    {
                        "process": _text(pid),
                        "calls": calls,
                        "failures": failures,
                        "epoch": seen_epoch,
                    }
                )
        until_ms = int(until or 0)
        ov = {_text(k): _text(v) for k, v in record.items()}
        effective = (
            "force_open"
            if ov.get("force_open") == "1"
            else "disable"
            if ov.get("disabled") == "1"
            else None
        )
        return {
            "breaker": breaker,
            "state": "open" if until_ms > now_ms else "closed",
            "epoch": int(epoch or 0),
            "open_for": max(0.0, (until_ms - now_ms) / 1000),
            "probes_used": int(probes_used or 0),
            "processes": processes,
            "override": None
            if not ov
            else {
                "effective": effective,
                "action": ov.get("action"),
                "reason": ov.get("reason"),
                "by": ov.get("by"),
                "at": int(ov.get("at", "0")) / 1000,
                "generation": int(ov.get("generation", "0")),
            },
        }
