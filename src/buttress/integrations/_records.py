"""A telemetry event as a log record, free of any logging library: its level, its message and
its fields. The ``logging`` and ``structlog`` bridges (``logging.py``, ``structlog.py``) only
hand these to their library.

Levels follow what an operator must see, event by event (``LEVELS``, one entry per event of
the catalog, which a test keeps in step):

* WARNING: something is wrong or about to be: a breaker opens, degrades or is forced open; a
  pool's connect fails, a member leaks; memory rises a level or its cgroup hits its limit; a
  retried call gives up; the memory backend evicts live keys.
* INFO: the state moves back, or something worth a line happens rarely: a breaker half-opens
  or closes, an adaptive limit changes, a pool member is invalidated or a checkout gives up,
  chaos starts and stops, a call times out or is answered by its fallback.
* DEBUG: the routine, once per call or per sample: admissions and refusals, checkouts, retries,
  samples, injected faults.
* not logged (``None``): what buttress already logs itself with the same fields (a rate-limit
  backend's outage and recovery, an unreadable state, a replaced SQLite file: WARNING records
  on ``buttress.rate_limiter``) and a failed telemetry handler (an ERROR on
  ``buttress.events``): a second record of each would only repeat the first.

An event outside the catalog (an application's own, a span's ``start``/``stop``) is DEBUG.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

EventName = tuple[str, ...]

DEBUG, INFO, WARNING = logging.DEBUG, logging.INFO, logging.WARNING
_RANK = {"normal": 0, "warning": 1, "critical": 2}


def _breaker_moved(md: Mapping[str, Any]) -> int:
    return WARNING if str(md.get("to_state")) in {"open", "forced_open", "degraded"} else INFO


def _level_moved(md: Mapping[str, Any]) -> int:
    up = _RANK.get(str(md.get("to_level")), 0) > _RANK.get(str(md.get("from_level")), 0)
    return WARNING if up else INFO


def _failed(when_ok: int, when_not: int, key: str = "ok") -> Callable[[Mapping[str, Any]], int]:
    """A level that depends on whether the event reports a failure: ``ok`` false, or an
    ``error`` that is set."""

    def level(md: Mapping[str, Any]) -> int:
        failed = md.get(key) is False if key == "ok" else md.get(key) is not None
        return when_not if failed else when_ok

    return level


Level = int | None | Callable[[Mapping[str, Any]], int]

LEVELS: dict[EventName, Level] = {
    ("buttress", "telemetry", "handler_failure"): None,  # an ERROR on buttress.events already
    ("buttress", "circuit_breaker", "state_change"): _breaker_moved,
    ("buttress", "circuit_breaker", "rejected"): DEBUG,
    ("buttress", "circuit_breaker", "fault_injected"): DEBUG,
    ("buttress", "circuit_breaker", "recovery_attempts"): INFO,
    ("buttress", "circuit_breaker", "health_check"): _failed(DEBUG, INFO),
    ("buttress", "rate_limiter", "allowed"): DEBUG,
    ("buttress", "rate_limiter", "denied"): DEBUG,
    ("buttress", "rate_limiter", "limit_changed"): INFO,
    ("buttress", "rate_limiter", "key_cap_reached"): WARNING,
    # WARNING records on buttress.rate_limiter already, with these fields (docs/deployment.md):
    ("buttress", "rate_limiter", "backend_down"): None,
    ("buttress", "rate_limiter", "backend_recovered"): None,
    ("buttress", "rate_limiter", "state_unreadable"): None,
    ("buttress", "rate_limiter", "backend_file_replaced"): None,
    ("buttress", "pool", "connect"): _failed(DEBUG, WARNING),
    ("buttress", "pool", "checkout"): DEBUG,
    ("buttress", "pool", "checkin"): DEBUG,
    ("buttress", "pool", "check"): _failed(DEBUG, INFO),
    ("buttress", "pool", "invalidate"): INFO,
    ("buttress", "pool", "expire"): DEBUG,
    ("buttress", "pool", "leak"): WARNING,
    ("buttress", "pool", "overflow"): INFO,
    ("buttress", "pool", "close"): DEBUG,
    ("buttress", "pool", "timeout"): INFO,
    ("buttress", "pool", "shutdown"): INFO,
    ("buttress", "memory", "sample"): DEBUG,
    ("buttress", "memory", "level_change"): _level_moved,
    ("buttress", "memory", "relief"): _failed(DEBUG, WARNING, key="error"),
    ("buttress", "memory", "gc"): DEBUG,
    ("buttress", "memory", "limit_events"): WARNING,
    ("buttress", "memory", "shed"): DEBUG,
    ("buttress", "memory", "probe_error"): WARNING,
    ("buttress", "overload", "level_change"): _level_moved,
    ("buttress", "bulkhead", "rejected"): DEBUG,
    ("buttress", "infrastructure", "reloaded"): None,  # an INFO on buttress.infrastructure
    ("buttress", "operator", "action"): None,  # a WARNING on buttress.dashboard
    # a WARNING (fleet) or an ERROR (file) on buttress.infrastructure already
    ("buttress", "infrastructure", "reload_refused"): None,
    ("buttress", "chaos", "injected"): DEBUG,
    ("buttress", "chaos", "experiment_start"): INFO,
    ("buttress", "chaos", "experiment_stop"): INFO,
    ("buttress", "chaos", "recovery_time"): INFO,
    ("buttress", "chaos", "schedule_start"): INFO,
    ("buttress", "chaos", "schedule_stop"): INFO,
    ("buttress", "chaos", "switch"): INFO,
    ("buttress", "service", "timeout"): INFO,
    ("buttress", "service", "fallback"): INFO,
    ("buttress", "retry", "retry"): DEBUG,
    ("buttress", "retry", "gave_up"): WARNING,
}


def level_of(
    name: EventName, metadata: Mapping[str, Any], overrides: Mapping[EventName, Level] | None = None
) -> int | None:
    """The level ``name``'s record is logged at, or ``None``: the bridges leave it out.
    ``overrides`` (from :func:`checked_levels`) comes first."""
    level = overrides[name] if overrides and name in overrides else LEVELS.get(name, DEBUG)
    if callable(level):
        return level(metadata)
    return level


def checked_levels(levels: Mapping[str, int | None] | None) -> dict[EventName, Level]:
    """An application's levels, by dotted event name (``{"buttress.rate_limiter.denied":
    logging.INFO}``; ``None``: leave the event out), as :func:`level_of` takes them."""
    if levels is None:
        return {}
    if not isinstance(levels, Mapping):
        raise TypeError(f"levels: a mapping of dotted event names to levels, got {levels!r}")
    out: dict[EventName, Level] = {}
    for key, level in levels.items():
        if not isinstance(key, str) or not key or "." not in key:
            raise TypeError(
                f"levels: keys are dotted event names (e.g. 'buttress.rate_limiter.denied'), "
                f"got {key!r}"
            )
        if level is not None and (isinstance(level, bool) or not isinstance(level, int)):
            raise TypeError(
                f"levels[{key!r}]: a logging level (e.g. logging.INFO) or None, got {level!r}"
            )
        out[tuple(key.split("."))] = level
    return out


def component(name: EventName) -> str:
    """What emitted ``name``: ``circuit_breaker`` for ``buttress.circuit_breaker.*``, and an
    application's own event's first part."""
    return name[1] if name[0] == "buttress" and len(name) > 2 else name[0]


def logger_name(prefix: str, name: EventName) -> str:
    """The logger of ``name``'s records: ``prefix`` and its :func:`component`
    (``buttress.telemetry.circuit_breaker``), so that levels can be set per component."""
    return f"{prefix}.{component(name)}"


def message(name: EventName, measurements: Mapping[str, Any], metadata: Mapping[str, Any]) -> str:
    """A one-line message: the event's dotted name, then its metadata and measurements as
    ``key=value`` (``buttress.circuit_breaker.state_change breaker=payments from_state=closed
    to_state=open ...``)."""
    pairs = [f"{k}={_shown(v)}" for k, v in (*metadata.items(), *measurements.items())]
    return " ".join([".".join(name), *pairs])


def values(measurements: Mapping[str, Any], metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The record's values, for ``_logging.log_fields`` to name ``buttress_<key>`` (as every
    buttress record's fields are named): the metadata and the measurements, an exception as
    ``"Type: message"``, so that every field is plain data a JSON formatter takes."""
    out = {
        k: f"{type(v).__name__}: {v}" if isinstance(v, BaseException) else v
        for k, v in (*metadata.items(), *measurements.items())
    }
    if "event" in out:  # a handler failure's: the event it was handling (log_fields sets its own)
        handled = out.pop("event")
        out["handled_event"] = ".".join(handled) if isinstance(handled, tuple) else handled
    return out


def _shown(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.6g}"
    if isinstance(value, BaseException):
        return f"{type(value).__name__}({value})"
    if isinstance(value, tuple) and all(isinstance(p, str) for p in value):
        return ".".join(value)  # an event name
    return str(value)
