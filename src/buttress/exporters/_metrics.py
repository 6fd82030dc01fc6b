"""What both exporters publish: one table of metrics, and the functions from snapshots to samples.

Each :class:`MetricDef` names a metric for Prometheus and for OpenTelemetry at once; the
``*_samples`` functions turn components' snapshots into ``(label values, value)`` pairs, the
namespace label first. Labels are component names and small fixed vocabularies (state,
outcome, scope, level, reason): a rate-limit key never becomes a label, so no user or org id
can reach an exporter. This module imports neither metrics library.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .._breaker import BreakerState
from .._breaker._states import level_rank
from .._errors import ConfigError
from .._fork import fork_safe_lock
from .._memory import MemoryLevel
from .._pressure import PressureLevel
from ..ratelimit._failure import FAILURE_POLICIES

if TYPE_CHECKING:
    from .._breaker import BreakerSnapshot
    from .._bulkhead import BulkheadSnapshot
    from .._chaos._chaos import ChaosSnapshot
    from .._infrastructure import Infrastructure
    from .._instrument import ServiceSnapshot
    from .._memory import MemorySnapshot
    from .._pool import PoolSnapshot
    from ..ratelimit._stats import RateLimiterSnapshot

__all__ = ["METRICS", "MetricDef", "Published", "Sample", "Summary", "gather", "gather_all"]

Kind = Literal["gauge", "counter", "updown", "summary"]
Source = Literal[
    "breaker", "limiter", "bulkhead", "pool", "memory", "overload", "service", "chaos", "health"
]
SOURCES: tuple[Source, ...] = (
    "breaker",
    "limiter",
    "bulkhead",
    "pool",
    "memory",
    "overload",
    "service",
    "chaos",
    "health",
)


@dataclass(frozen=True, slots=True)
class Summary:
    """Quantiles of a distribution since the component was made, with its count (and sum)."""

    count: float
    total: float | None  # None where the component keeps no sum (pool waits)
    quantiles: tuple[tuple[float, float], ...]


Value = float | Summary
Sample = tuple[tuple[str, ...], Value]  # label values (namespace first), value


@dataclass(frozen=True, slots=True)
class MetricDef:
    """One metric: its Prometheus name (after ``<prefix>_``; ``_total`` is added to counters),
    its OpenTelemetry name and UCUM unit, and its labels. ``None``: not published there.

    ``attrs`` maps a label to its OpenTelemetry attribute key where that is not
    ``buttress.<label>`` (the ``db.client.connection.*`` attributes, ``error.type``).
    """

    key: str
    source: Source
    kind: Kind
    labels: tuple[str, ...]
    prom: str | None
    otel: str | None
    unit: str
    help: str
    attrs: Mapping[str, str] = field(default_factory=dict)

    def attribute_keys(self) -> tuple[str, ...]:
        """The OpenTelemetry attribute key of each label, in order."""
        return tuple(self.attrs.get(label, f"buttress.{label}") for label in self.labels)


_POOL = {"name": "db.client.connection.pool.name", "state": "db.client.connection.state"}
_NS = ("namespace",)


def _def(
    key: str,
    kind: Kind,
    labels: tuple[str, ...],
    prom: str | None,
    otel: str | None,
    unit: str,
    help: str,
    attrs: Mapping[str, str] | None = None,
) -> MetricDef:
    source: Any = key.split(".", 1)[0]
    if source == "pool":
        attrs = {**_POOL, **(attrs or {})}
    return MetricDef(key, source, kind, _NS + labels, prom, otel, unit, help, dict(attrs or {}))


METRICS: tuple[MetricDef, ...] = (
    # -- circuit breakers ---------------------------------------------------------------------
    _def(
        "breaker.state",
        "gauge",
        ("name", "state"),
        "circuit_breaker_state",
        "buttress.circuit_breaker.state",
        "1",
        "1 for the breaker's current state, 0 for the others.",
    ),
    _def(
        "breaker.degradation_level",
        "gauge",
        ("name",),
        "circuit_breaker_degradation_level",
        "buttress.circuit_breaker.degradation_level",
        "1",
        "How hard a degraded breaker sheds: 0 none, 1 light, 2 medium, 3 heavy.",
    ),
    _def(
        "breaker.calls",
        "counter",
        ("name", "outcome"),
        "circuit_breaker_calls",
        "buttress.circuit_breaker.calls",
        "{call}",
        "Calls by outcome: success, failure, ignored, cancelled; rejected (refused while open) "
        "and shed (refused by degradation) never ran.",
    ),
    _def(
        "breaker.failure_ratio",
        "gauge",
        ("name",),
        "circuit_breaker_failure_ratio",
        "buttress.circuit_breaker.failure_ratio",
        "1",
        "Share of failed calls in the breaker's sliding window (0-1).",
    ),
    _def(
        "breaker.slow_call_ratio",
        "gauge",
        ("name",),
        "circuit_breaker_slow_call_ratio",
        "buttress.circuit_breaker.slow_call_ratio",
        "1",
        "Share of slow calls in the breaker's sliding window (0-1).",
    ),
    _def(
        "breaker.window_calls",
        "gauge",
        ("name",),
        "circuit_breaker_window_calls",
        "buttress.circuit_breaker.window_calls",
        "{call}",
        "Calls in the sliding window the ratios are computed over.",
    ),
    _def(
        "breaker.recovery_attempts",
        "gauge",
        ("name",),
        "circuit_breaker_recovery_attempts",
        "buttress.circuit_breaker.recovery_attempts",
        "{attempt}",
        "Recovery attempts (moves to half_open) since the breaker last closed; 0 once it has "
        "recovered.",
    ),
    _def(
        "breaker.opens",
        "counter",
        ("name",),
        "circuit_breaker_opens",
        "buttress.circuit_breaker.opens",
        "{open}",
        "Times the breaker opened.",
    ),
    # -- rate limiters ------------------------------------------------------------------------
    _def(
        "limiter.decisions",
        "counter",
        ("name", "result", "scope"),
        "rate_limiter_decisions",
        "buttress.rate_limiter.decisions",
        "{decision}",
        "Decisions: result admitted (scope empty), or denied, by the scope that refused.",
    ),
    _def(
        "limiter.limit",
        "gauge",
        ("name", "scope"),
        "rate_limiter_limit",
        "buttress.rate_limiter.limit",
        "{request}",
        "A scope's limit per window; for an adaptive scope, its current limit.",
    ),
    _def(
        "limiter.window",
        "gauge",
        ("name", "scope"),
        "rate_limiter_window_seconds",
        "buttress.rate_limiter.window",
        "s",
        "A scope's window.",
    ),
    _def(
        "limiter.performance_rating",
        "gauge",
        ("name",),
        "rate_limiter_performance_rating",
        "buttress.rate_limiter.performance_rating",
        "1",
        "Share of the last window's decisions made within the latency budget (0-1).",
    ),
    _def(
        "limiter.decision_latency",
        "summary",
        ("name",),
        "rate_limiter_decision_seconds",
        "buttress.rate_limiter.decision_duration",
        "s",
        "Time to decide, since the limiter was made (timed for one decision in 16 in memory, "
        "every one on SQLite and Redis; quantile 1 is the slowest timed).",
    ),
    _def(
        "limiter.waiting",
        "updown",
        ("name",),
        "rate_limiter_waiting_requests",
        "buttress.rate_limiter.waiting_requests",
        "{request}",
        "Callers waiting for capacity.",
    ),
    _def(
        "limiter.backend_up",
        "gauge",
        ("name",),
        "rate_limiter_backend_up",
        "buttress.rate_limiter.backend_up",
        "1",
        "1 while the limiter's backend answers, 0 during an outage (decisions then follow "
        "the failure policy). A memory backend is always up.",
    ),
    _def(
        "limiter.mode",
        "gauge",
        ("name", "mode"),
        "rate_limiter_mode",
        "buttress.rate_limiter.mode",
        "1",
        "1 for who decides now, 0 for the others: `backend`, or during an outage the failure "
        "policy (`local`: this process's memory at `local_share` of each limit; `fail_open`, "
        "`fail_closed`).",
    ),
    _def(
        "limiter.backend_errors",
        "counter",
        ("name",),
        "rate_limiter_backend_errors",
        "buttress.rate_limiter.backend_errors",
        "{error}",
        "Backend calls that failed (unreachable, timed out, refused), outages or not.",
    ),
    _def(
        "limiter.unreadable_states",
        "counter",
        ("name",),
        "rate_limiter_unreadable_states",
        "buttress.rate_limiter.unreadable_states",
        "{state}",
        "Stored states the backend could not read (the `state_unreadable` event): each decided "
        "as spent, never an outage.",
    ),
    # -- connection pools ---------------------------------------------------------------------
    _def(
        "pool.connections",
        "updown",
        ("name", "state"),
        "pool_connections",
        "db.client.connection.count",
        "{connection}",
        "Open connections: state used (lent out) or idle (the rest, health checks included).",
    ),
    _def(
        "pool.max",
        "updown",
        ("name",),
        None,
        "db.client.connection.max",
        "{connection}",
        "The most open connections allowed (max_size + max_overflow).",
    ),
    _def(
        "pool.min_size",
        "gauge",
        ("name",),
        "pool_min_size",
        "buttress.pool.min_size",
        "{connection}",
        "Configured min_size.",
    ),
    _def(
        "pool.max_size",
        "gauge",
        ("name",),
        "pool_max_size",
        "buttress.pool.max_size",
        "{connection}",
        "Configured max_size.",
    ),
    _def(
        "pool.max_overflow",
        "gauge",
        ("name",),
        "pool_max_overflow",
        "buttress.pool.max_overflow",
        "{connection}",
        "Configured max_overflow: connections allowed above max_size under load.",
    ),
    _def(
        "pool.overflow",
        "updown",
        ("name",),
        "pool_overflow_connections",
        "buttress.pool.overflow",
        "{connection}",
        "Open connections above max_size.",
    ),
    _def(
        "pool.pending",
        "updown",
        ("name",),
        "pool_pending_requests",
        "db.client.connection.pending_requests",
        "{request}",
        "Checkouts waiting for a connection.",
    ),
    _def(
        "pool.checkouts",
        "counter",
        ("name",),
        "pool_checkouts",
        "buttress.pool.checkouts",
        "{checkout}",
        "Connections lent out.",
    ),
    _def(
        "pool.queued",
        "counter",
        ("name",),
        "pool_queued_checkouts",
        "buttress.pool.queued_checkouts",
        "{checkout}",
        "Checkouts that had to wait for a connection.",
    ),
    _def(
        "pool.timeouts",
        "counter",
        ("name",),
        "pool_timeouts",
        "db.client.connection.timeouts",
        "{timeout}",
        "Checkouts that gave up after checkout_timeout.",
    ),
    _def(
        "pool.rejected",
        "counter",
        ("name",),
        "pool_rejected",
        "buttress.pool.rejected",
        "{checkout}",
        "Checkouts refused at once because max_waiting callers were already waiting.",
    ),
    _def(
        "pool.strategy_efficiency",
        "gauge",
        ("name",),
        "pool_strategy_efficiency_ratio",
        "buttress.pool.strategy_efficiency",
        "1",
        "Share of checkouts served at once by an idle member, with no wait for a return or a "
        "connect, since the pool opened (0-1; the guide's strategy_efficiency).",
    ),
    _def(
        "pool.wait",
        "summary",
        ("name",),
        "pool_wait_seconds",
        "buttress.pool.wait_time",
        "s",
        "Time a checkout waited for a connection, over every checkout since the pool opened "
        "(quantile 1 is the longest wait).",
    ),
    _def(
        "pool.errors",
        "counter",
        ("name", "kind"),
        "pool_errors",
        "buttress.pool.errors",
        "{error}",
        "Connect errors (kind connect), failed health checks (check) and connections found "
        "broken in use (invalidated).",
    ),
    _def(
        "pool.connects",
        "counter",
        ("name",),
        "pool_connects",
        "buttress.pool.connects",
        "{connection}",
        "Connections created.",
    ),
    _def(
        "pool.evictions",
        "counter",
        ("name", "reason"),
        "pool_evictions",
        "buttress.pool.evictions",
        "{connection}",
        "Connections retired, by reason: max_lifetime, idle_timeout, overflow_ttl, generation, "
        "memory_pressure, error, invalidated, reset_failed, check_failed, dead_borrower, dropped "
        "(a pool's own close is not counted).",
    ),
    _def(
        "pool.leaks",
        "counter",
        ("name",),
        "pool_leaks",
        "buttress.pool.leaks",
        "{connection}",
        "Leaks: members held past leak_timeout (reported, still lent), or reclaimed from "
        "borrowers that ended or dropped their lease.",
    ),
    # -- memory -------------------------------------------------------------------------------
    _def(
        "memory.level",
        "gauge",
        ("level",),
        "memory_level",
        "buttress.memory.level",
        "1",
        "1 for the current memory level (normal, warning, critical), 0 for the others.",
    ),
    _def(
        "memory.ratio",
        "gauge",
        (),
        "memory_pressure_ratio",
        "buttress.memory.utilization",
        "1",
        "Working set / limit at the last sample (0-1, above 1 past the limit).",
    ),
    _def(
        "memory.used",
        "updown",
        (),
        "memory_working_set_bytes",
        "buttress.memory.usage",
        "By",
        "Memory in use at the last sample: the cgroup working set, the host's used memory or "
        "the process RSS, by the probe's source.",
    ),
    _def(
        "memory.limit",
        "updown",
        (),
        "memory_limit_bytes",
        "buttress.memory.limit",
        "By",
        "The limit the working set is measured against.",
    ),
    _def(
        "memory.rss",
        "updown",
        (),
        "memory_rss_bytes",
        "buttress.memory.rss",
        "By",
        "The process's resident set size at the last sample, where the platform reports it.",
    ),
    _def(
        "memory.psi",
        "gauge",
        ("kind",),
        "memory_psi_avg10_ratio",
        "buttress.memory.psi.avg10",
        "1",
        "Share of the last 10 s some (kind some) or all (full) tasks stalled on memory (0-1); "
        "absent where the kernel has no PSI.",
    ),
    _def(
        "memory.threshold",
        "gauge",
        ("level",),
        "memory_threshold_ratio",
        "buttress.memory.threshold",
        "1",
        "The pressure ratio at which the warning and critical levels begin.",
    ),
    _def(
        "memory.shedding",
        "gauge",
        (),
        "memory_shedding",
        "buttress.memory.shedding",
        "1",
        "1 while non-critical calls are refused for memory, else 0.",
    ),
    _def(
        "memory.shed",
        "counter",
        (),
        "memory_shed_calls",
        "buttress.memory.shed_calls",
        "{call}",
        "Calls refused because memory was critical.",
    ),
    _def(
        "memory.relief_runs",
        "counter",
        (),
        "memory_relief_runs",
        "buttress.memory.relief_runs",
        "{run}",
        "Times the pressure-relief callbacks ran.",
    ),
    _def(
        "memory.gc_runs",
        "counter",
        (),
        "memory_gc_runs",
        "buttress.memory.gc_runs",
        "{run}",
        "Garbage collections the manager ran for relief.",
    ),
    _def(
        "memory.limit_events",
        "counter",
        ("event",),
        "memory_limit_events",
        "buttress.memory.limit_events",
        "{event}",
        "cgroup memory.events seen since the manager started: high, max, oom, oom_kill.",
    ),
    # -- bulkheads ----------------------------------------------------------------------------
    _def(
        "bulkhead.limit",
        "gauge",
        ("name",),
        "bulkhead_limit",
        "buttress.bulkhead.limit",
        "{call}",
        "The most calls in flight at once, now (it moves for an adaptive limit).",
    ),
    _def(
        "bulkhead.in_use",
        "updown",
        ("name",),
        "bulkhead_in_use",
        "buttress.bulkhead.in_use",
        "{call}",
        "Calls holding a place.",
    ),
    _def(
        "bulkhead.waiting",
        "updown",
        ("name",),
        "bulkhead_waiting",
        "buttress.bulkhead.waiting",
        "{call}",
        "Callers queued for a place.",
    ),
    _def(
        "bulkhead.calls",
        "counter",
        ("name", "outcome"),
        "bulkhead_calls",
        "buttress.bulkhead.calls",
        "{call}",
        "Callers by outcome: admitted (at once or after waiting), waited (of those, after "
        "waiting), rejected (refused at once), timed_out (waited in vain).",
    ),
    _def(
        "bulkhead.service_time",
        "gauge",
        ("name",),
        "bulkhead_service_time_seconds",
        "buttress.bulkhead.service_time",
        "s",
        "The recent mean time a call held a place (what retry_after is estimated from).",
    ),
    # -- overload -----------------------------------------------------------------------------
    _def(
        "overload.level",
        "gauge",
        ("monitor", "level"),
        "overload_level",
        "buttress.overload.level",
        "1",
        "1 for each overload monitor's current level (normal, warning, critical), 0 for the "
        "others; monitor: the CPU monitor's name or an event loop's.",
    ),
    _def(
        "overload.cpu_utilisation",
        "gauge",
        (),
        "cpu_utilisation_ratio",
        "buttress.cpu.utilization",
        "1",
        "The share of the cores the process may use that it used, between the last samples.",
    ),
    _def(
        "overload.cpu_throttle_ratio",
        "gauge",
        (),
        "cpu_throttled_ratio",
        "buttress.cpu.throttle_ratio",
        "1",
        "The share of CFS periods the cgroup was throttled in, between the last samples.",
    ),
    _def(
        "overload.loop_lag",
        "gauge",
        ("monitor",),
        "event_loop_lag_p99_seconds",
        "buttress.event_loop.lag_p99",
        "s",
        "An event loop's p99 lag over its window (a stall in progress counts at once).",
    ),
    # -- services -----------------------------------------------------------------------------
    _def(
        "service.calls",
        "counter",
        ("name",),
        "service_calls",
        "buttress.service.calls",
        "{call}",
        "Calls that ran (protected or instrumented), failed or not.",
    ),
    _def(
        "service.errors",
        "counter",
        ("name", "error_type"),
        "service_errors",
        "buttress.service.errors",
        "{call}",
        "Calls that raised, by exception class name.",
        {"error_type": "error.type"},
    ),
    _def(
        "service.rejections",
        "counter",
        ("name", "reason"),
        "service_rejections",
        "buttress.service.rejections",
        "{call}",
        "Calls refused before they ran, by error class (RateLimitExceeded, CircuitOpenError...).",
    ),
    _def(
        "service.timeouts",
        "counter",
        ("name",),
        "service_timeouts",
        "buttress.service.timeouts",
        "{call}",
        "Calls that ran past their timeout (CallTimeoutError), counted among the errors too.",
    ),
    _def(
        "service.fallbacks",
        "counter",
        ("name",),
        "service_fallbacks",
        "buttress.service.fallbacks",
        "{call}",
        "Refused or failed calls that their fallback answered.",
    ),
    _def(
        "service.retries",
        "counter",
        ("name", "outcome"),
        "service_retries",
        "buttress.service.retries",
        "{retry}",
        "Retries by outcome: retried (a failed attempt followed by another), recovered (a call "
        "that succeeded after retrying), and why retrying stopped: exhausted, deadline, budget "
        "(refused by the retry budget).",
    ),
    _def(
        "service.retry_budget",
        "gauge",
        ("name",),
        "service_retry_budget_available",
        "buttress.service.retry_budget.available",
        "{retry}",
        "Retries the service's retry budget would allow now ([services.NAME.retry.budget]).",
    ),
    _def(
        "service.duration",
        "summary",
        ("name",),
        "service_call_duration_seconds",
        "buttress.service.duration",
        "s",
        "Call duration since the service's first call (quantile 1 is the slowest call).",
    ),
    _def(
        "service.cache_hits",
        "counter",
        ("name",),
        "service_cache_hits",
        "buttress.service.cache.hits",
        "{lookup}",
        "Cache hits recorded with cache_hit().",
    ),
    _def(
        "service.cache_misses",
        "counter",
        ("name",),
        "service_cache_misses",
        "buttress.service.cache.misses",
        "{lookup}",
        "Cache misses recorded with cache_miss().",
    ),
    # -- chaos and health ---------------------------------------------------------------------
    _def(
        "chaos.enabled",
        "gauge",
        (),
        "chaos_enabled",
        "buttress.chaos.enabled",
        "1",
        "1 when fault injection is switched on for this infrastructure.",
    ),
    _def(
        "chaos.active_experiments",
        "updown",
        (),
        "chaos_active_experiments",
        "buttress.chaos.active_experiments",
        "{experiment}",
        "Chaos experiments running now.",
    ),
    _def(
        "chaos.injected",
        "counter",
        ("target", "kind"),
        "chaos_injected_faults",
        "buttress.chaos.injected_faults",
        "{fault}",
        "Faults injected into a target: kind failure or delay.",
    ),
    _def(
        "chaos.recovery_time",
        "gauge",
        ("target",),
        "chaos_recovery_time_seconds",
        "buttress.chaos.recovery_time",
        "s",
        "The last measured time from a chaos experiment's end to the target's first successful "
        "call with its breaker closed.",
    ),
    _def(
        "health.status",
        "gauge",
        ("status",),
        "health_status",
        "buttress.health.status",
        "1",
        "1 for the overall health status (healthy, degraded, unhealthy), 0 for the others.",
    ),
)

_OUTCOMES = (
    ("success", "total_successes"),
    ("failure", "total_failures"),
    ("ignored", "total_ignored"),
    ("cancelled", "total_cancelled"),
    ("rejected", "total_rejected"),
    ("shed", "total_shed"),
)
_QUANTILES = (0.5, 0.95, 0.99)
_HEALTH = ("healthy", "degraded", "unhealthy")
_LIMIT_EVENTS = ("high", "max", "oom", "oom_kill")

Out = dict[str, list[Sample]]


def _flag(on: bool) -> float:
    return 1.0 if on else 0.0


def breaker_samples(ns: str, snaps: Mapping[str, BreakerSnapshot], out: Out) -> None:
    for name, s in snaps.items():
        for st in BreakerState:
            out["breaker.state"].append(((ns, name, st.value), _flag(s.state is st)))
        level = float(level_rank(s.degradation_level))
        out["breaker.degradation_level"].append(((ns, name), level))
        for outcome, attr in _OUTCOMES:
            out["breaker.calls"].append(((ns, name, outcome), float(getattr(s, attr))))
        out["breaker.failure_ratio"].append(((ns, name), float(s.failure_rate)))
        out["breaker.slow_call_ratio"].append(((ns, name), float(s.slow_call_rate)))
        out["breaker.window_calls"].append(((ns, name), float(s.call_count)))
        out["breaker.opens"].append(((ns, name), float(s.times_opened)))
        out["breaker.recovery_attempts"].append(((ns, name), float(s.recovery_attempts)))


LIMITER_MODES = ("backend", *FAILURE_POLICIES)  # who decides: the backend, or a policy


def limiter_samples(ns: str, snaps: Mapping[str, RateLimiterSnapshot], out: Out) -> None:
    for name, s in snaps.items():
        out["limiter.decisions"].append(((ns, name, "admitted", ""), float(s.admitted)))
        for sc in s.scopes:
            out["limiter.decisions"].append(((ns, name, "denied", sc.name), float(sc.denied)))
            out["limiter.limit"].append(((ns, name, sc.name), float(sc.limit)))
            out["limiter.window"].append(((ns, name, sc.name), float(sc.window)))
        out["limiter.performance_rating"].append(((ns, name), float(s.performance_rating)))
        lat = s.decision_latency
        if lat is not None:
            quantiles = ((0.5, lat.p50), (0.95, lat.p95), (0.99, lat.p99), (1.0, lat.max))
            total = lat.mean * lat.count
            out["limiter.decision_latency"].append(
                ((ns, name), Summary(float(lat.count), total, quantiles))
            )
        out["limiter.waiting"].append(((ns, name), float(s.waiting)))
        out["limiter.backend_up"].append(((ns, name), _flag(s.backend_status == "ok")))
        for mode in LIMITER_MODES:
            out["limiter.mode"].append(((ns, name, mode), _flag(s.mode == mode)))
        out["limiter.backend_errors"].append(((ns, name), float(s.backend_errors)))
        out["limiter.unreadable_states"].append(((ns, name), float(s.unreadable_states)))


def pool_samples(ns: str, snaps: Mapping[str, PoolSnapshot], out: Out) -> None:
    for name, s in snaps.items():
        n = (ns, name)
        out["pool.connections"].append(((ns, name, "idle"), float(s.size - s.in_use)))
        out["pool.connections"].append(((ns, name, "used"), float(s.in_use)))
        out["pool.max"].append((n, float(s.max_size + s.max_overflow)))
        out["pool.min_size"].append((n, float(s.min_size)))
        out["pool.max_size"].append((n, float(s.max_size)))
        out["pool.max_overflow"].append((n, float(s.max_overflow)))
        out["pool.overflow"].append((n, float(s.overflow)))
        out["pool.pending"].append((n, float(s.waiting)))
        out["pool.checkouts"].append((n, float(s.checkouts)))
        out["pool.queued"].append((n, float(s.waited)))
        out["pool.strategy_efficiency"].append((n, float(s.strategy_efficiency)))
        out["pool.timeouts"].append((n, float(s.timeouts)))
        out["pool.rejected"].append((n, float(s.rejected)))
        waits = ((0.5, s.wait_p50), (0.95, s.wait_p95), (0.99, s.wait_p99), (1.0, s.wait_max))
        out["pool.wait"].append((n, Summary(float(s.checkouts), None, waits)))
        for kind, count in (
            ("connect", s.connect_errors),
            ("check", s.check_failures),
            ("invalidated", s.invalidations),
        ):
            out["pool.errors"].append(((ns, name, kind), float(count)))
        out["pool.connects"].append((n, float(s.connects)))
        for reason, count in sorted(s.evictions.items()):
            out["pool.evictions"].append(((ns, name, reason), float(count)))
        out["pool.leaks"].append((n, float(s.leaks)))


def memory_samples(ns: str, s: MemorySnapshot | None, out: Out) -> None:
    if s is None:
        return
    for lv in MemoryLevel:
        out["memory.level"].append(((ns, lv.value), _flag(s.level is lv)))
    for key, figure in (("memory.ratio", s.ratio), ("memory.used", s.used)):
        if figure is not None:
            out[key].append(((ns,), float(figure)))
    for key, figure in (("memory.limit", s.limit), ("memory.rss", s.rss)):
        if figure is not None:
            out[key].append(((ns,), float(figure)))
    for kind, pct in (("some", s.psi_some_avg10), ("full", s.psi_full_avg10)):
        if pct is not None:
            out["memory.psi"].append(((ns, kind), pct / 100.0))
    out["memory.threshold"].append(((ns, "warning"), float(s.warning_threshold)))
    out["memory.threshold"].append(((ns, "critical"), float(s.critical_threshold)))
    out["memory.shedding"].append(((ns,), _flag(s.shedding)))
    out["memory.shed"].append(((ns,), float(s.shed)))
    out["memory.relief_runs"].append(((ns,), float(s.relief_runs)))
    out["memory.gc_runs"].append(((ns,), float(s.gc_runs)))
    for event in _LIMIT_EVENTS:
        out["memory.limit_events"].append(((ns, event), float(s.limit_events.get(event, 0))))


def bulkhead_samples(ns: str, snaps: Mapping[str, BulkheadSnapshot], out: Out) -> None:
    for name, s in snaps.items():
        n = (ns, name)
        out["bulkhead.limit"].append((n, float(s.limit)))
        out["bulkhead.in_use"].append((n, float(s.in_use)))
        out["bulkhead.waiting"].append((n, float(s.waiting)))
        for outcome in ("admitted", "waited", "rejected", "timed_out"):
            out["bulkhead.calls"].append(((ns, name, outcome), float(getattr(s, outcome))))
        if s.service_time is not None:
            out["bulkhead.service_time"].append((n, float(s.service_time)))


def overload_samples(ns: str, overload: Mapping[str, Any], out: Out) -> None:
    cpu = overload.get("cpu")
    if cpu is not None:
        for lv in PressureLevel:
            out["overload.level"].append(((ns, cpu.name, lv.value), _flag(cpu.level is lv)))
        if cpu.utilisation is not None:
            out["overload.cpu_utilisation"].append(((ns,), float(cpu.utilisation)))
        if cpu.throttle_ratio is not None:
            out["overload.cpu_throttle_ratio"].append(((ns,), float(cpu.throttle_ratio)))
    for loop in overload.get("loops", ()):
        for lv in PressureLevel:
            out["overload.level"].append(((ns, loop.name, lv.value), _flag(loop.level is lv)))
        lag = max(loop.lag_p99 or 0.0, loop.stalled or 0.0)
        out["overload.loop_lag"].append(((ns, loop.name), float(lag)))


def service_samples(
    ns: str, snaps: Iterable[tuple[ServiceSnapshot, Iterable[str]]], out: Out
) -> None:
    """``snaps``: ``(snapshot, metrics the service records)`` pairs (see ``instrument()``)."""
    for s, wanted in snaps:
        n = (ns, s.name)
        out["service.calls"].append((n, float(s.calls)))
        if "errors" in wanted:
            for kind, count in sorted(s.errors_by_type.items()):
                out["service.errors"].append(((ns, s.name, kind), float(count)))
            for reason, count in sorted(s.rejected_by_reason.items()):
                out["service.rejections"].append(((ns, s.name, reason), float(count)))
            out["service.timeouts"].append((n, float(s.timeouts)))
            out["service.fallbacks"].append((n, float(s.fallbacks)))
            for outcome, count in sorted(s.retries.items()):
                out["service.retries"].append(((ns, s.name, outcome), float(count)))
            if s.retry_budget is not None:
                out["service.retry_budget"].append((n, float(s.retry_budget.available)))
        if "latency" in wanted:
            quantiles = (
                (0.5, s.latency_p50),
                (0.95, s.latency_p95),
                (0.99, s.latency_p99),
                (1.0, s.latency_max),
            )
            total = s.latency_mean * s.calls
            out["service.duration"].append((n, Summary(float(s.calls), total, quantiles)))
        if "cache_hits" in wanted:
            out["service.cache_hits"].append((n, float(s.cache_hits)))
            out["service.cache_misses"].append((n, float(s.cache_misses)))


def chaos_samples(ns: str, chaos: ChaosSnapshot, out: Out) -> None:
    out["chaos.enabled"].append(((ns,), _flag(chaos["enabled"])))
    out["chaos.active_experiments"].append(((ns,), float(len(chaos["active_experiments"]))))
    for target, inj in sorted(chaos["injectors"].items()):
        out["chaos.injected"].append(((ns, target, "failure"), float(inj["injected_failures"])))
        out["chaos.injected"].append(((ns, target, "delay"), float(inj["injected_delays"])))
        took = inj.get("recovery_time")
        if took is not None:
            out["chaos.recovery_time"].append(((ns, target), float(took)))


def health_samples(ns: str, overall: str, out: Out) -> None:
    for status in _HEALTH:
        out["health.status"].append(((ns, status), _flag(overall == status)))


def _empty() -> Out:
    return {m.key: [] for m in METRICS}


def _services(infra: Infrastructure) -> list[tuple[ServiceSnapshot, tuple[str, ...]]]:
    now = infra.clock.monotonic()
    return [(m.snapshot(now=now), m.metrics) for m in tuple(infra.services.values())]


def gather(infra: Infrastructure, source: Source) -> Out:
    """The samples of one kind of component (what an OpenTelemetry callback needs)."""
    out = _empty()
    ns = infra.namespace
    if source == "breaker":
        breaker_samples(ns, {n: b.snapshot() for n, b in tuple(infra.breakers.items())}, out)
    elif source == "limiter":
        limiter_samples(ns, {n: r.snapshot() for n, r in tuple(infra.limiters.items())}, out)
    elif source == "pool":
        pool_samples(ns, infra.pool_snapshots(), out)
    elif source == "memory":
        memory_samples(ns, infra.memory.snapshot() if infra.memory is not None else None, out)
    elif source == "bulkhead":
        bulkhead_samples(ns, {n: b.snapshot() for n, b in tuple(infra.bulkheads.items())}, out)
    elif source == "overload":
        overload_samples(ns, infra.health().overload, out)
    elif source == "service":
        service_samples(ns, _services(infra), out)
    elif source == "chaos":
        chaos_samples(ns, infra.chaos.snapshot(), out)
    else:
        health_samples(ns, infra.health().overall_status, out)
    return out


def gather_all(infra: Infrastructure) -> Out:
    """Every sample, from one health report (one snapshot of each component: a scrape)."""
    report = infra.health()
    ns = infra.namespace
    out = _empty()
    breaker_samples(ns, report.circuit_breakers, out)
    limiter_samples(ns, report.rate_limiters, out)
    pool_samples(ns, report.connection_pools, out)
    memory_samples(ns, report.memory, out)
    bulkhead_samples(ns, report.bulkheads, out)
    overload_samples(ns, report.overload, out)
    service_samples(ns, _services(infra), out)
    chaos_samples(ns, report.chaos_engineering, out)
    health_samples(ns, report.overall_status, out)
    return out


class Published:
    """The infrastructures one exporter reports, by namespace: the label that tells their
    series apart, so two infrastructures with one namespace cannot share an exporter."""

    def __init__(self, where: str) -> None:
        self._where = where  # "by this collector", for the error message
        self._lock = fork_safe_lock()
        self._infras: dict[str, Infrastructure] = {}

    def __call__(self) -> tuple[Infrastructure, ...]:
        with self._lock:
            return tuple(self._infras.values())

    def add(self, infra: Infrastructure) -> bool:
        """Add ``infra``; False if it is there already. Another with its namespace: an error."""
        with self._lock:
            present = self._infras.get(infra.namespace)
            if present is infra:
                return False
            if present is not None:
                raise ConfigError(
                    "namespace",
                    f"an infrastructure named {infra.namespace!r} is already {self._where}",
                )
            self._infras[infra.namespace] = infra
            return True

    def remove(self, infra: Infrastructure) -> bool:
        """Remove ``infra``; returns whether it was there."""
        with self._lock:
            if self._infras.get(infra.namespace) is not infra:
                return False
            del self._infras[infra.namespace]
            return True
