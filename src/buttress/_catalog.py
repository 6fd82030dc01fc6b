"""Every telemetry event buttress emits: name, measurements, metadata and meaning.

This table is the single source for ``docs/events.md`` (``tools/gen_events_doc.py`` writes the
page, ``--check`` verifies it) and for the test that validates every emitted event against it.
Each component keeps its events in its own section below.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EventSpec:
    """One event: its name, the keys of its measurements and metadata, and what it means."""

    name: tuple[str, ...]
    measurements: tuple[str, ...]
    metadata: tuple[str, ...]
    description: str


def _specs(*specs: EventSpec) -> dict[tuple[str, ...], EventSpec]:
    return {s.name: s for s in specs}


_TELEMETRY = _specs(
    EventSpec(
        ("buttress", "telemetry", "handler_failure"),
        (),
        ("handler_id", "event", "error"),
        "A handler raised; it has been detached. `event` is the event it was handling.",
    ),
)

_BREAKER = _specs(
    EventSpec(
        ("buttress", "circuit_breaker", "state_change"),
        ("failure_rate", "failures", "calls"),
        ("breaker", "from_state", "to_state", "from_level", "level", "reason", "generation"),
        "The breaker moved between states or degradation levels. `reason` says why "
        "(e.g. `failure_count`, `failure_rate`, `slow_call_rate`, `consecutive_failures`, "
        "`reset_timeout`, `health_check`, `probes_succeeded`, `probes_failed`, `recovered`, "
        "`forced_open`, `disabled`, `reset`). `level` and `from_level` are degradation "
        "levels or null.",
    ),
    EventSpec(
        ("buttress", "circuit_breaker", "rejected"),
        ("retry_after",),
        ("breaker", "state", "level", "reason"),
        "A call was refused: `reason` is `open`, `forced_open`, `half_open_full` (no probe "
        "permit left), `shed` (dropped while degraded) or `slow_start` (not yet in the share "
        "admitted after recovery).",
    ),
    EventSpec(
        ("buttress", "circuit_breaker", "fault_injected"),
        ("latency",),
        ("breaker", "kind", "injected"),
        "Fault injection acted on a call admitted by the breaker: `kind` is `failure` or "
        "`latency` (seconds in `latency`). `injected` is always true.",
    ),
    EventSpec(
        ("buttress", "circuit_breaker", "recovery_attempts"),
        ("attempt",),
        ("breaker", "outcome", "reason"),
        "A recovery attempt started or ended: `outcome` is `started` (the breaker moved to "
        "half_open), `succeeded` (probes passed: closed), `failed` (back to open) or "
        "`abandoned` (forced open, disabled or reset meanwhile). `attempt` counts the attempts "
        "since the breaker last closed (1 for the first); `reason` is the transition's.",
    ),
    EventSpec(
        ("buttress", "circuit_breaker", "health_check"),
        ("duration",),
        ("breaker", "ok", "error"),
        "The breaker's health check ran while open; success moves it to half_open early.",
    ),
)

_RATE_LIMIT = _specs(
    EventSpec(
        ("buttress", "rate_limiter", "allowed"),
        ("cost", "remaining", "retry_after"),
        ("limiter", "namespace", "scope", "key"),
        "A request was admitted and charged to every scope. `scope` is the scope with the "
        "least `remaining` afterwards, `key` the caller's id there (null for a shared scope); "
        "`retry_after` is 0.",
    ),
    EventSpec(
        ("buttress", "rate_limiter", "denied"),
        ("cost", "remaining", "retry_after"),
        ("limiter", "namespace", "scope", "key"),
        "A request was refused and nothing was charged. `scope` is the refusing scope with the "
        "longest `retry_after` (seconds; `inf` when the cost can never fit), `key` the "
        "caller's id there.",
    ),
    EventSpec(
        ("buttress", "rate_limiter", "limit_changed"),
        ("limit", "previous"),
        ("limiter", "scope", "reason"),
        "An adaptive scope's limit fell (`reason`: `error`, `slow_call`, `breaker_degraded`, "
        "`breaker_open`) or grew back to its maximum (`recovered`).",
    ),
    EventSpec(
        ("buttress", "rate_limiter", "key_cap_reached"),
        ("keys", "max_keys", "evicted"),
        ("backend",),
        "The memory backend hit `max_keys` and started evicting live keys (those closest to "
        "expiry first); once per episode (an episode ends when the keys fall below 90% of "
        "`max_keys`). `evicted` counts evictions so far.",
    ),
)

_RATE_LIMIT_BACKENDS = _specs(
    EventSpec(
        ("buttress", "rate_limiter", "backend_down"),
        (),
        ("limiter", "namespace", "backend", "policy", "error"),
        "A limiter's backend (e.g. `RedisBackend`, `SQLiteBackend`) failed a call: the start "
        "of an outage, once until it answers again. Meanwhile decisions follow `policy` "
        "(`fail_open` admits, `fail_closed` raises `BackendError`, `local` decides in each "
        "process's memory at `local_share` of each limit) and the backend is tried "
        "again at most once per `backend_retry_interval`. `error` is the failure. Also logged, "
        "once, as a WARNING on `buttress.rate_limiter` (deployment.md, Logs).",
    ),
    EventSpec(
        ("buttress", "rate_limiter", "backend_recovered"),
        ("downtime",),
        ("limiter", "namespace", "backend", "policy"),
        "The backend answered again after an outage of `downtime` seconds (from the first "
        "failure to the first answer, on the limiter's monotonic clock). Only a call that "
        "writes (a decision, a refund, `check_backend`'s proof of a write) ends an outage; "
        "a peek alone does not. Also logged, once, as a WARNING on `buttress.rate_limiter`.",
    ),
    EventSpec(
        ("buttress", "rate_limiter", "state_unreadable"),
        (),
        ("limiter", "namespace", "backend", "policy", "scope", "key", "action"),
        "The backend holds a value under one scope's key that is not a state of that scope's "
        "algorithm (wrong size, not finite, wrong type: nothing buttress writes). It is no "
        "outage and affects no other key. `action` `replaced`: the decision was made as if the "
        "scope's whole allowance had been spent at that moment, and a decision that writes "
        "stored that spent state (the key decides normally again after one window or refill); "
        "`policy`: no decision could be made, and `policy` decided this request alone. `key` "
        "is the caller's id (null for a shared scope). Counted in `unreadable_states`; also "
        "logged as a WARNING on `buttress.rate_limiter`.",
    ),
    EventSpec(
        ("buttress", "rate_limiter", "backend_file_replaced"),
        (),
        ("backend", "path"),
        "A `SQLiteBackend`'s file was deleted or replaced while in use (the file at `path` is "
        "no longer the one it had open). It has reopened the file now at `path` (creating it "
        "if missing), as every process using the path does at its next call, so the limit is "
        "one and exact again; the state kept in the old file is lost (its limits start "
        "afresh). Once per new file per process; also logged as a WARNING on "
        "`buttress.rate_limiter`.",
    ),
)

_POOL = _specs(
    EventSpec(
        ("buttress", "pool", "connect"),
        ("duration", "retry_in"),
        ("pool", "member", "ok", "error"),
        "A connect finished. On failure `ok` is false, `member` null, `error` the exception "
        "and `retry_in` the backoff before the next attempt (seconds).",
    ),
    EventSpec(
        ("buttress", "pool", "checkout"),
        ("wait",),
        ("pool", "member"),
        "A borrower got a member after waiting `wait` seconds.",
    ),
    EventSpec(
        ("buttress", "pool", "checkin"),
        ("held",),
        ("pool", "member", "broken"),
        "A borrower returned a member it held `held` seconds. `broken` names why it will not "
        "be reused (`invalidated`, `error`, `reset_failed`) or is null.",
    ),
    EventSpec(
        ("buttress", "pool", "check"),
        ("duration",),
        ("pool", "member", "ok", "when", "error"),
        "A health check ran: `when` is `idle` (active checks) or `checkout` (mixed).",
    ),
    EventSpec(
        ("buttress", "pool", "invalidate"),
        ("age",),
        ("pool", "member", "reason"),
        "A member was found broken and is destroyed: `reason` is `invalidated` (the borrower "
        "said so), `error` (an `invalidate_on` exception left its block), `reset_failed` or "
        "`check_failed`.",
    ),
    EventSpec(
        ("buttress", "pool", "expire"),
        ("age", "idle"),
        ("pool", "member", "reason"),
        "A member was retired by a limit: `reason` is `max_lifetime`, `idle_timeout`, "
        "`overflow_ttl`, `generation` (made before a disconnect) or `memory_pressure` "
        "(`trim()`, which the infrastructure calls when memory reaches `warning`).",
    ),
    EventSpec(
        ("buttress", "pool", "leak"),
        ("held",),
        ("pool", "member", "reason", "owner", "stack"),
        "A member was not returned: `reason` is `leak_timeout` (held too long; still lent), "
        "`dead_borrower` (its thread or task ended holding it) or `dropped` (its lease was "
        "garbage-collected); the last two destroy it. `stack` is where it was taken (with "
        "`leak_timeout` set), `owner` the thread or task.",
    ),
    EventSpec(
        ("buttress", "pool", "overflow"),
        ("size",),
        ("pool", "member"),
        "A member above `max_size` was made; `size` is the pool's size with it.",
    ),
    EventSpec(
        ("buttress", "pool", "close"),
        ("duration", "age", "uses"),
        ("pool", "member", "reason", "error"),
        "A member's resource was closed; `reason` says why it was retired (or `closed`).",
    ),
    EventSpec(
        ("buttress", "pool", "timeout"),
        ("waited", "waiting"),
        ("pool", "reason"),
        "A checkout gave up: `reason` is `timeout` (checkout_timeout passed) or `queue_full` "
        "(max_waiting reached); `waiting` is how many others still wait.",
    ),
    EventSpec(
        ("buttress", "pool", "shutdown"),
        ("in_use", "checkouts"),
        ("pool",),
        "The pool was closed; `in_use` members are closed when they come back.",
    ),
)


_MEMORY = _specs(
    EventSpec(
        ("buttress", "memory", "sample"),
        ("ratio", "used", "limit"),
        ("manager", "source", "level", "rss", "psi_some_avg10", "psi_full_avg10"),
        "The memory manager took a sample: `used` bytes (working set, host used memory or "
        "process RSS, as `source` says: `cgroup_v2`, `cgroup_v1`, `host`, `process`) against "
        "`limit` bytes. `rss` is process RSS; the PSI averages (percent) are null where the "
        "kernel has no PSI.",
    ),
    EventSpec(
        ("buttress", "memory", "level_change"),
        ("ratio",),
        ("manager", "from_level", "to_level", "reason", "source"),
        "The memory level moved (`normal`, `warning`, `critical`). `reason` is `ratio` or "
        "`psi` (what raised it) or `recovered` (it stayed below the exit line for "
        "`exit_samples` samples).",
    ),
    EventSpec(
        ("buttress", "overload", "level_change"),
        ("value",),
        ("monitor", "kind", "from_level", "to_level", "reason"),
        "An overload monitor's level moved (`normal`, `warning`, `critical`): `kind` is `cpu` or "
        "`event_loop`, `monitor` its name; `reason` names the signal that raised it "
        "(`throttle`, `utilisation`, `psi`; `lag`, `stalled`) or is `recovered`; `value` is "
        "the CPU utilisation or the loop's p99 lag (s) then.",
    ),
    EventSpec(
        ("buttress", "infrastructure", "reloaded"),
        ("added", "removed", "changed"),
        ("namespace", "summary", "source"),
        "`Infrastructure.reload` applied a new configuration: how many components were added, "
        "removed and changed; `summary` names them by configuration path. `source` is `call` "
        "(`reload()` called), `file` (`watch_config` saw the file change) or `fleet` (a "
        "configuration published through the fleet, `buttress config publish`).",
    ),
    EventSpec(
        ("buttress", "infrastructure", "reload_refused"),
        (),
        ("namespace", "source", "setting", "reason"),
        "A configuration that arrived by itself (`source`: `file` or `fleet`, as for "
        "`reloaded`) was not applied, and nothing changed: `setting` is the configuration path "
        "at fault (a section `reload` cannot change, or an invalid value), `reason` says why.",
    ),
    EventSpec(
        ("buttress", "operator", "action"),
        (),
        ("namespace", "action", "target", "fleet", "reason", "by"),
        "An operator acted from the dashboard: `action` is `force_open`, `disable` or `reset` "
        "(of the breaker `target`, in this process or, with `fleet`, in every process of its "
        "fleet), `stop_chaos` or `reload`; `reason` is what the operator wrote, `by` where the "
        "request came from.",
    ),
    EventSpec(
        ("buttress", "bulkhead", "rejected"),
        ("retry_after",),
        ("bulkhead", "reason"),
        "A bulkhead refused a caller: `reason` is `full` (no place and no room to wait) or "
        "`timeout` (waited `wait_timeout` in vain); `retry_after` is -1 before any call has "
        "completed.",
    ),
    EventSpec(
        ("buttress", "memory", "relief"),
        ("duration",),
        ("manager", "level", "callback", "error"),
        "A relief callback registered with `on_pressure` ran on entry into `level`; `error` "
        "is the exception it raised, or null.",
    ),
    EventSpec(
        ("buttress", "memory", "gc"),
        ("duration", "collected"),
        ("manager", "level"),
        "Pressure relief ran `gc.collect()` (at most once per `gc_interval`); `collected` "
        "objects were freed.",
    ),
    EventSpec(
        ("buttress", "memory", "limit_events"),
        ("high", "max", "oom", "oom_kill"),
        ("manager", "source"),
        "The cgroup's `memory.events` counters grew since the previous sample (cgroup v1: "
        "`max` is `memory.failcnt`, `oom_kill` from `memory.oom_control`).",
    ),
    EventSpec(
        ("buttress", "memory", "shed"),
        ("retry_after",),
        ("manager", "level"),
        "Work was refused because memory is critical (`LoadShedError`, reason "
        "`memory_pressure`); `retry_after` is the earliest the level could fall.",
    ),
    EventSpec(
        ("buttress", "memory", "probe_error"),
        (),
        ("manager", "error"),
        "A scheduled or lazy sample failed to read memory; the level stays as it was.",
    ),
)

_CHAOS = _specs(
    EventSpec(
        ("buttress", "chaos", "injected"),
        ("latency",),
        ("target", "experiment", "kind", "injected"),
        "Fault injection acted on a call to `target`: `kind` is `failure` or `latency` "
        "(seconds in `latency`). `experiment` names the experiment that drew it, or null for "
        "the standing settings. `injected` is always true, to tell it from a real fault.",
    ),
    EventSpec(
        ("buttress", "chaos", "experiment_start"),
        ("failure_rate", "latency_rate"),
        ("target", "experiment", "duration", "settings"),
        "A chaos experiment started on `target`; `duration` is its time box in seconds "
        "(null: until its block exits), `settings` its fault settings.",
    ),
    EventSpec(
        ("buttress", "chaos", "experiment_stop"),
        ("elapsed", "calls", "injected_failures", "injected_delays"),
        ("target", "experiment", "reason"),
        "A chaos experiment ended: `reason` is `exited` (its block ended or `stop()`) or "
        "`expired` (its duration passed; noticed lazily, timed at the expiry).",
    ),
    EventSpec(
        ("buttress", "chaos", "recovery_time"),
        ("recovery_time",),
        ("target", "experiment"),
        "`target` recovered from a chaos experiment: `recovery_time` is the seconds from the "
        "experiment's end to the target's first successful call with its breaker closed (a "
        "breaker the faults opened or degraded must close first). `experiment` names the "
        "experiment it recovered from.",
    ),
    EventSpec(
        ("buttress", "chaos", "schedule_start"),
        ("experiments", "span"),
        ("schedule", "targets", "seed"),
        "Scheduled chaos started: `experiments` planned over `span` seconds on `targets`, "
        "drawn from `seed`. Each experiment reports its own start and stop as it runs.",
    ),
    EventSpec(
        ("buttress", "chaos", "schedule_stop"),
        ("ran", "cancelled"),
        ("schedule",),
        "A schedule was stopped: `ran` experiments had begun (the one running is ended), "
        "`cancelled` never will.",
    ),
    EventSpec(
        ("buttress", "chaos", "switch"),
        (),
        ("enabled",),
        "The chaos master switch was turned on or off.",
    ),
)


_SERVICE = _specs(
    EventSpec(
        ("buttress", "service", "timeout"),
        ("timeout",),
        ("service",),
        "A protected call ran past its timeout (seconds in `timeout`) and failed with "
        "`CallTimeoutError`, which the breaker records as a failure.",
    ),
    EventSpec(
        ("buttress", "service", "fallback"),
        (),
        ("service", "error"),
        "A refused or failed call was answered by its fallback; `error` is the class name of "
        "what it raised.",
    ),
)

_RETRY = _specs(
    EventSpec(
        ("buttress", "retry", "retry"),
        ("attempt", "wait"),
        ("name", "error"),
        "Attempt `attempt` failed (`error`: the exception's class name, or `result` for a "
        "value `on_result` turned down) and the next starts after `wait` seconds. `name`: the "
        "retry's name, else the service's, else the function's.",
    ),
    EventSpec(
        ("buttress", "retry", "gave_up"),
        ("attempts",),
        ("name", "reason", "error"),
        "A retried call stopped after `attempts` attempts: `reason` is `exhausted` (attempts "
        "ran out), `deadline` (the next wait would pass the deadline, or a wait asked for by "
        "the failure is longer than the backoff's `max` without a deadline) or `budget` (the "
        "retry budget refused).",
    ),
)

CATALOG: dict[tuple[str, ...], EventSpec] = {
    **_TELEMETRY,
    **_BREAKER,
    **_RATE_LIMIT,
    **_RATE_LIMIT_BACKENDS,
    **_POOL,
    **_RETRY,
    **_MEMORY,
    **_CHAOS,
    **_SERVICE,
}
