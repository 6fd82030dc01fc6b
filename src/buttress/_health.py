"""The health report: every component's snapshot, a status for each, and one overall status.

Each component gets ``pass``, ``warn`` or ``fail`` (the vocabulary of the IETF
``application/health+json`` draft); the report is ``unhealthy`` if anything fails, ``degraded``
if anything warns, else ``healthy``. An infrastructure with no components is healthy.

=====================  =====================================================================
component              status
=====================  =====================================================================
circuit breaker        pass when closed or disabled; warn when degraded, half-open, open or
                       forced open (an open breaker is the system protecting itself: the
                       report is degraded, never unhealthy, on its account)
rate limiter           pass; warn when fewer than half its recent decisions met the latency
                       budget, or when its backend is down and it fails open; fail when its
                       backend is down and it fails closed
connection pool        pass; warn while callers wait or overflow members are in use, or
                       while the pool is below min_size (or empty) and its last connects
                       failed; fail when closed, or when it has no member, connecting fails
                       and callers wait or min_size asks for members
memory                 pass at normal, warn at warning, fail at critical
chaos                  warn while chaos is on and an experiment runs (faults injected on purpose)
=====================  =====================================================================

A check's ``reason`` is short and safe to publish (a count, a state, an exception's type);
what a driver said (``PoolSnapshot.last_connect_error``, ``RateLimiterSnapshot.backend_error``:
hosts, ports, role names) is its ``detail``, shown only by the verbose renderings
(``to_dict(verbose=True)``, ``to_health_json(verbose=True)``) and the logs. The endpoints
(:class:`HealthASGIApp`, :class:`HealthWSGIApp`, :func:`health_response`) answer with the
short form unless made ``verbose``. Passwords are masked in either form.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ._breaker._states import PASSING, BreakerState
from ._fleet._fleet import NOT_SYNCED

if TYPE_CHECKING:
    from ._breaker import BreakerSnapshot
    from ._bulkhead import BulkheadSnapshot
    from ._chaos._chaos import ChaosSnapshot
    from ._memory import MemorySnapshot
    from ._overload import CpuSnapshot, LoopLagSnapshot
    from ._pool import PoolSnapshot
    from .ratelimit._stats import RateLimiterSnapshot

__all__ = [
    "PROBES",
    "ComponentCheck",
    "HealthASGIApp",
    "HealthReport",
    "HealthWSGIApp",
    "build_report",
    "health_asgi_app",
    "health_response",
    "health_wsgi_app",
]

Status = Literal["pass", "warn", "fail"]
Overall = Literal["healthy", "degraded", "unhealthy"]
Probe = Literal["health", "livez", "readyz"]
PROBES: tuple[Probe, ...] = ("health", "livez", "readyz")

CONTENT_TYPE = "application/health+json"

_OVERALL: dict[Status, Overall] = {"pass": "healthy", "warn": "degraded", "fail": "unhealthy"}
_RANK: dict[Status, int] = {"pass": 0, "warn": 1, "fail": 2}


@dataclass(frozen=True, slots=True)
class ComponentCheck:
    """One component's verdict: ``status``, what it is judged by, and why.

    ``reason`` is short and safe to publish; ``detail`` is what a driver said (an error
    message naming hosts, ports, roles), for operators: ``None`` when there is nothing more.
    """

    kind: str  # circuit_breaker | rate_limiter | connection_pool | memory | chaos
    name: str
    status: Status
    observed: Any
    reason: str
    detail: str | None = None

    def to_dict(self, *, verbose: bool = False) -> dict[str, Any]:
        out = {
            "kind": self.kind,
            "name": self.name,
            "status": self.status,
            "observed": self.observed,
            "reason": self.reason,
        }
        if verbose:
            out["detail"] = self.detail
        return out

    def output(self, *, verbose: bool = False) -> str:
        """The reason, followed by the detail when ``verbose`` (and there is one)."""
        if verbose and self.detail:
            return f"{self.reason}; {self.detail}"
        return self.reason


@dataclass(frozen=True, slots=True)
class HealthReport:
    """The infrastructure's health at one instant.

    ``circuit_breakers``, ``rate_limiters`` and ``connection_pools`` map names to the
    components' snapshots (``report.circuit_breakers["db"].degradation_level``); ``memory`` is
    the memory manager's snapshot (``None`` without one); ``chaos_engineering`` holds
    ``active_experiments``. ``checks`` is the verdict per component.
    """

    namespace: str
    overall_status: Overall
    circuit_breakers: Mapping[str, BreakerSnapshot]
    rate_limiters: Mapping[str, RateLimiterSnapshot]
    connection_pools: Mapping[str, PoolSnapshot]
    memory: MemorySnapshot | None
    chaos_engineering: ChaosSnapshot
    checks: tuple[ComponentCheck, ...]
    time: float
    extra: Mapping[str, Any] = field(default_factory=dict)
    # Each service's bulkhead by service name; the CPU monitor's snapshot and each watched
    # event loop's ({"cpu": ..., "loops": [...]}, empty without an [overload] monitor).
    bulkheads: Mapping[str, BulkheadSnapshot] = field(default_factory=dict)
    overload: Mapping[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> Status:
        """The overall status in ``health+json`` words: pass, warn or fail."""
        return {"healthy": "pass", "degraded": "warn", "unhealthy": "fail"}[  # type: ignore[return-value]
            self.overall_status
        ]

    @property
    def http_status(self) -> int:
        """What a health endpoint should answer: 200 for pass and warn, 503 for fail."""
        return 503 if self.overall_status == "unhealthy" else 200

    def to_dict(self, *, verbose: bool = False) -> dict[str, Any]:
        """Plain data (JSON-ready). Without ``verbose`` the drivers' messages are left out
        (the snapshots' ``*_error`` text fields, the checks' ``detail``); passwords are
        masked either way."""
        snap = _plain if verbose else _plain_short
        return {
            "namespace": self.namespace,
            "overall_status": self.overall_status,
            "time": _iso(self.time),
            "circuit_breakers": {k: snap(v) for k, v in self.circuit_breakers.items()},
            "rate_limiters": {k: snap(v) for k, v in self.rate_limiters.items()},
            "connection_pools": {k: snap(v) for k, v in self.connection_pools.items()},
            "memory": snap(self.memory) if self.memory is not None else None,
            "bulkheads": {k: snap(v) for k, v in self.bulkheads.items()},
            "overload": snap(dict(self.overload)),
            "chaos_engineering": snap(self.chaos_engineering),
            "checks": [c.to_dict(verbose=verbose) for c in self.checks],
            **{k: snap(v) for k, v in self.extra.items()},
        }

    def to_health_json(self, *, verbose: bool = False) -> dict[str, Any]:
        """The ``application/health+json`` rendering (draft-inadarei-api-health-check).

        Each check's ``output`` is its short reason; with ``verbose``, followed by what the
        driver said (for operators, not for a public endpoint)."""
        when = _iso(self.time)
        checks: dict[str, list[dict[str, Any]]] = {}
        for c in self.checks:
            entry: dict[str, Any] = {
                "componentId": c.name,
                "componentType": _COMPONENT_TYPE.get(c.kind, "component"),
                "status": c.status,
                "observedValue": c.observed,
                "output": c.output(verbose=verbose),
                "time": when,
            }
            checks.setdefault(f"{c.kind}:{c.name}", []).append(entry)
        return {
            "status": self.status,
            "serviceId": self.namespace,
            "description": self.description,
            "checks": checks,
        }

    @property
    def description(self) -> str:
        return f"buttress infrastructure {self.namespace!r}: {self.overall_status}"

    def render(self, *, verbose: bool = False) -> tuple[int, dict[str, str], bytes]:
        """``(http_status, headers, body)`` for a health endpoint (the short form unless
        ``verbose``)."""
        return self.http_status, dict(_HEADERS), _json(self.to_health_json(verbose=verbose))

    def with_checks(self, checks: Iterable[ComponentCheck]) -> HealthReport:
        """This report with ``checks`` in place of its own verdicts on the same components
        (kind and name; others are added), e.g. a tool's own attempt to connect, and its
        overall status judged again."""
        new = tuple(checks)
        judged = {(c.kind, c.name) for c in new}
        every = (*(c for c in self.checks if (c.kind, c.name) not in judged), *new)
        return replace(self, checks=every, overall_status=overall(c.status for c in every))


_COMPONENT_TYPE = {
    "circuit_breaker": "component",
    "rate_limiter": "component",
    "connection_pool": "datastore",
    "memory": "system",
    "cpu": "system",
    "event_loop": "system",
    "bulkhead": "component",
    "chaos": "component",
}


# -- verdicts per component (pure) -------------------------------------------------------------


def breaker_check(name: str, snap: BreakerSnapshot) -> ComponentCheck:
    state = snap.state
    fleet = snap.fleet
    override = fleet.override if fleet is not None else None
    why = ""
    if override is not None and override.effective:
        # Who forced it, and why: what an operator looks for first in an incident.
        who = f" by {override.by}" if override.by else ""
        because = f": {override.reason}" if override.reason else ""
        why = f"; fleet-wide {override.effective}{who}{because}"
    if state in PASSING:
        if fleet is not None and not fleet.connected and fleet.error != NOT_SYNCED:
            return ComponentCheck(
                "circuit_breaker",
                name,
                "warn",
                state.value,
                f"breaker is {state.value}; fleet unreachable: deciding in this process alone",
                fleet.error,
            )
        return ComponentCheck(
            "circuit_breaker", name, "pass", state.value, f"breaker is {state.value}{why}"
        )
    level = snap.degradation_level
    shown = (
        f"degraded ({level.value})"
        if state is BreakerState.DEGRADED and level is not None
        else state.value
    )
    return ComponentCheck(
        "circuit_breaker",
        name,
        "warn",
        shown,
        f"breaker is {shown}; failure rate {snap.failure_rate:.0%}{why}",
    )


def limiter_check(name: str, snap: RateLimiterSnapshot) -> ComponentCheck:
    backend = snap.backend_status
    policy = snap.failure_policy
    if backend != "ok":
        status: Status = "fail" if policy == "fail_closed" else "warn"
        which = snap.backend or "backend"
        since = "" if snap.backend_down_for is None else f" for {snap.backend_down_for:.0f}s"
        meanwhile = {
            "fail_open": "admitting unchecked",
            "local": f"deciding in this process at {snap.local_share or 1.0:.3g} of each limit",
        }.get(policy, "refusing")
        return ComponentCheck(
            "rate_limiter",
            name,
            status,
            backend,
            f"{which} is {backend}{since} ({policy}: {meanwhile})",
            snap.backend_error,
        )
    rating = snap.performance_rating
    if snap.decisions_in_window >= 10 and rating < 0.5:
        return ComponentCheck(
            "rate_limiter",
            name,
            "warn",
            rating,
            f"only {rating:.0%} of recent decisions met the latency budget",
        )
    return ComponentCheck("rate_limiter", name, "pass", rating, "deciding within budget")


def pool_check(name: str, snap: PoolSnapshot) -> ComponentCheck:
    if snap.closed:
        return ComponentCheck("connection_pool", name, "fail", "closed", "pool is closed")
    failing = snap.connect_failures  # in a row: the last connect failed
    if failing and snap.size < max(snap.min_size, 1):
        error = snap.last_connect_error
        # The reason names the error's type only: its message may name hosts and roles.
        why = f"{failing} connect(s) failed in a row, last: {error_type(error)}"
        if error is not None and len(error) > 500:
            error = error[:497] + "..."
        if snap.size == 0 and (snap.waiting or snap.min_size):
            # Nothing to lend, and callers wait or the pool keeps retrying for min_size.
            return ComponentCheck(
                "connection_pool",
                name,
                "fail",
                failing,
                f"no connection ({snap.waiting} waiting); {why}",
                error,
            )
        # Some members left (below min_size), or none needed until a caller comes (min_size
        # 0: nothing retries before then, so no failure that would keep the callers away).
        return ComponentCheck(
            "connection_pool",
            name,
            "warn",
            failing,
            f"{snap.size} of min_size {snap.min_size} connected; {why}",
            error,
        )
    # Overflow members in use, not overflow members: an idle one waiting out overflow_ttl
    # is no sign of strain.
    if snap.waiting or snap.overflow_in_use:
        return ComponentCheck(
            "connection_pool",
            name,
            "warn",
            snap.waiting,
            f"{snap.waiting} waiting, {snap.overflow_in_use} overflow in use",
        )
    return ComponentCheck(
        "connection_pool", name, "pass", snap.in_use, f"{snap.in_use}/{snap.size} in use"
    )


def error_type(error: str | None) -> str:
    """The exception type a repr names (``"OperationalError('...')"`` -> ``OperationalError``);
    ``"error"`` when it names none."""
    kind = (error or "").partition("(")[0]
    return kind if kind and all(part.isidentifier() for part in kind.split(".")) else "error"


def memory_check(snap: MemorySnapshot) -> ComponentCheck:
    level = snap.level.value
    status: Status = {"normal": "pass", "warning": "warn", "critical": "fail"}.get(level, "warn")  # type: ignore[assignment]
    ratio = snap.ratio
    shown = f"{ratio:.0%} of the {snap.source} limit" if ratio is not None else "not sampled yet"
    return ComponentCheck("memory", snap.name, status, ratio, f"{level}: {shown}")


def bulkhead_check(name: str, snap: BulkheadSnapshot) -> ComponentCheck:
    """Full now (every place taken, and callers queued or a queue that takes none) is a
    warning: calls are being refused or kept waiting."""
    shown = f"{snap.in_use}/{snap.limit} in use, {snap.waiting} waiting"
    if snap.in_use >= snap.limit and (snap.waiting or not snap.max_waiting):
        return ComponentCheck("bulkhead", name, "warn", snap.in_use, f"full: {shown}")
    return ComponentCheck("bulkhead", name, "pass", snap.in_use, shown)


def _level_status(level: str) -> Status:
    return {"normal": "pass", "warning": "warn", "critical": "fail"}.get(level, "warn")  # type: ignore[return-value]


def cpu_check(snap: CpuSnapshot) -> ComponentCheck:
    level = snap.level.value
    used = snap.utilisation
    shown = (
        f"{used:.0%} of {snap.effective_cores:g} cores"
        if used is not None and snap.effective_cores
        else "not sampled yet"
    )
    if snap.throttle_ratio:
        shown += f", throttled in {snap.throttle_ratio:.0%} of periods"
    return ComponentCheck(
        "cpu", snap.name, _level_status(level), used, f"{level}: {shown} ({snap.reason})"
    )


def loop_check(snap: LoopLagSnapshot) -> ComponentCheck:
    level = snap.level.value
    if snap.stalled:
        shown = f"stalled for {snap.stalled * 1000:.0f} ms"
    else:
        p99, peak = (snap.lag_p99 or 0.0) * 1000, (snap.lag_max or 0.0) * 1000
        shown = f"lag p99 {p99:.0f} ms, max {peak:.0f} ms"
    return ComponentCheck(
        "event_loop", snap.name, _level_status(level), snap.lag_p99, f"{level}: {shown}"
    )


def chaos_check(chaos: ChaosSnapshot) -> ComponentCheck | None:
    active = chaos["active_experiments"]
    if not active or not chaos["enabled"]:
        return None  # switched off, a listed experiment injects nothing
    names = ", ".join(e["name"] for e in active)
    return ComponentCheck("chaos", "experiments", "warn", len(active), f"running: {names}")


def build_report(
    namespace: str,
    *,
    breakers: Mapping[str, BreakerSnapshot] | None = None,
    limiters: Mapping[str, RateLimiterSnapshot] | None = None,
    pools: Mapping[str, PoolSnapshot] | None = None,
    memory: MemorySnapshot | None = None,
    chaos: ChaosSnapshot | None = None,
    time: float,
    extra: Mapping[str, Any] | None = None,
    bulkheads: Mapping[str, BulkheadSnapshot] | None = None,
    cpu: CpuSnapshot | None = None,
    loops: Iterable[LoopLagSnapshot] = (),
) -> HealthReport:
    """Judge each component's snapshot and fold the verdicts into one report (pure)."""
    breakers = dict(breakers or {})
    limiters = dict(limiters or {})
    pools = dict(pools or {})
    if chaos is None:
        chaos = {"enabled": False, "active_experiments": [], "injectors": {}, "schedules": []}
    checks: list[ComponentCheck] = []
    checks += [breaker_check(n, s) for n, s in breakers.items()]
    checks += [limiter_check(n, s) for n, s in limiters.items()]
    checks += [pool_check(n, s) for n, s in pools.items()]
    if memory is not None:
        checks.append(memory_check(memory))
    bulkheads = dict(bulkheads or {})
    checks += [bulkhead_check(n, s) for n, s in bulkheads.items()]
    overload: dict[str, Any] = {}
    if cpu is not None:
        checks.append(cpu_check(cpu))
        overload["cpu"] = cpu
    loops = list(loops)
    if loops:
        checks += [loop_check(s) for s in loops]
        overload["loops"] = loops
    chaos_verdict = chaos_check(chaos)
    if chaos_verdict is not None:
        checks.append(chaos_verdict)
    return HealthReport(
        namespace=namespace,
        overall_status=overall(c.status for c in checks),
        circuit_breakers=breakers,
        rate_limiters=limiters,
        connection_pools=pools,
        memory=memory,
        chaos_engineering=chaos,
        checks=tuple(checks),
        time=time,
        extra=dict(extra or {}),
        bulkheads=bulkheads,
        overload=overload,
    )


def overall(statuses: Iterable[Status]) -> Overall:
    """The worst status wins; nothing at all is healthy."""
    worst: Status = "pass"
    for s in statuses:
        if _RANK[s] > _RANK[worst]:
            worst = s
    return _OVERALL[worst]


# -- endpoints -------------------------------------------------------------------------------------


class _HasHealth(Protocol):
    def health(self) -> HealthReport: ...


Source = _HasHealth | Callable[[], HealthReport]

_HEADERS = (("content-type", CONTENT_TYPE), ("cache-control", "no-store"))
_ALIVE = b'{"status":"pass"}'


def health_response(
    source: Source, probe: Probe = "health", *, verbose: bool = False
) -> tuple[int, dict[str, str], bytes]:
    """``(http_status, headers, body)`` for one of the three health endpoints, for a view
    function of any framework (Django, Flask, ...):

    * ``"health"``: the ``health+json`` report, 200, or 503 when unhealthy;
    * ``"livez"`` (liveness): 200 whenever the process can answer; asks no component;
    * ``"readyz"`` (readiness): 200, or 503 when the report is unhealthy (a degraded report,
      e.g. an open breaker, is still ready: the infrastructure is protecting itself).

    ``source`` is an :class:`~buttress.Infrastructure` (or anything with ``health()``), or a
    function returning a :class:`HealthReport`. Each check's output is its short reason
    unless ``verbose``.
    """
    if probe not in PROBES:
        raise ValueError(f"probe must be one of {', '.join(PROBES)}, got {probe!r}")
    if probe == "livez":
        return 200, dict(_HEADERS), _ALIVE
    report = _getter(source)()
    if probe == "readyz":
        body = {
            "status": report.status,
            "serviceId": report.namespace,
            "description": report.description,
        }
        return report.http_status, dict(_HEADERS), _json(body)
    return report.render(verbose=verbose)


def probe_for(path: str) -> Probe:
    """Which endpoint a request path asks for: its last part, when ``livez`` or ``readyz``;
    else the report (so the app answers at its mount path, with or without a slash, under
    any prefix)."""
    return _BY_LAST_PART.get(path.rstrip("/").rpartition("/")[2], "health")


_BY_LAST_PART: dict[str, Probe] = {"livez": "livez", "readyz": "readyz"}


class _Endpoints:
    __slots__ = ("_get", "verbose")

    def __init__(self, source: Source, verbose: bool) -> None:
        self._get = _getter(source)
        self.verbose = verbose

    def answer(self, method: str, path: str) -> tuple[int, list[tuple[str, str]], bytes]:
        """``(status, headers, body)`` for a request: GET and HEAD only (405 otherwise)."""
        if method not in ("GET", "HEAD"):
            return 405, [("allow", "GET, HEAD"), ("content-length", "0")], b""
        status, headers, body = health_response(self._get, probe_for(path), verbose=self.verbose)
        out = [*headers.items(), ("content-length", str(len(body)))]
        return status, out, b"" if method == "HEAD" else body


_REASONS = {200: "OK", 405: "Method Not Allowed", 503: "Service Unavailable"}


class HealthWSGIApp(_Endpoints):
    """A WSGI app: ``.../livez``, ``.../readyz``, and the report at any other path.

    Mount it (``DispatcherMiddleware`` for Flask, any WSGI server or router) or call
    :func:`health_response` from a view function.
    """

    __slots__ = ()

    def __call__(
        self, environ: Mapping[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        status, headers, body = self.answer(method, environ.get("PATH_INFO", ""))
        start_response(f"{status} {_REASONS[status]}", headers)
        return [body]


class HealthASGIApp(_Endpoints):
    """An ASGI (HTTP) app: ``.../livez``, ``.../readyz``, and the report at any other path.

    An object, not a function: Starlette's ``Route("/health", app)`` and ``add_route`` treat
    it as an ASGI app and answer at that exact path; ``Mount("/health", app)`` answers below
    it (``/health/livez``, ``/health/readyz``, ``/health/``).
    """

    __slots__ = ()

    async def __call__(
        self,
        scope: Mapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        status, headers, body = self.answer(scope.get("method", "GET"), scope.get("path", ""))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in headers],
            }
        )
        await send({"type": "http.response.body", "body": body})


def health_wsgi_app(source: Source, *, verbose: bool = False) -> HealthWSGIApp:
    """A WSGI app serving the health endpoints (see :class:`HealthWSGIApp`).

    ``source`` is an :class:`~buttress.Infrastructure` (or anything with ``health()``), or a
    function returning a :class:`HealthReport`; ``verbose`` adds the drivers' messages to
    the checks' output (keep it off where the endpoint is reachable from outside).
    """
    return HealthWSGIApp(source, verbose)


def health_asgi_app(source: Source, *, verbose: bool = False) -> HealthASGIApp:
    """An ASGI (HTTP) app serving the health endpoints (see :class:`HealthASGIApp`);
    ``source`` and ``verbose`` as for :func:`health_wsgi_app`."""
    return HealthASGIApp(source, verbose)


def _getter(source: Source) -> Callable[[], HealthReport]:
    health = getattr(source, "health", None)
    if callable(health):
        return health  # type: ignore[no-any-return]
    if callable(source):
        return source
    raise TypeError(f"expected an object with health() or a function, got {source!r}")


def _json(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), default=str).encode()


def _value(x: Any) -> Any:
    return getattr(x, "value", x)


def _plain(x: Any) -> Any:
    if hasattr(x, "to_dict"):
        return x.to_dict()
    if isinstance(x, Mapping):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    return _value(x)


def _plain_short(x: Any) -> Any:
    """:func:`_plain` without the drivers' messages: text fields named ``*_error``."""
    return _drop_errors(_plain(x))


def _drop_errors(x: Any) -> Any:
    if isinstance(x, dict):
        return {
            k: _drop_errors(v)
            for k, v in x.items()
            if not (isinstance(k, str) and k.endswith("_error") and isinstance(v, str))
        }
    if isinstance(x, list):
        return [_drop_errors(v) for v in x]
    return x


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")
