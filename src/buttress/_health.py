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
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ._breaker._states import PASSING, BreakerState

if TYPE_CHECKING:
    from ._breaker import BreakerSnapshot
    from ._chaos._chaos import ChaosSnapshot
    from ._memory import MemorySnapshot
    from ._pool import PoolSnapshot
    from .ratelimit._stats import RateLimiterSnapshot

__all__ = [
    "ComponentCheck",
    "HealthReport",
    "build_report",
    "health_asgi_app",
    "health_wsgi_app",
]

Status = Literal["pass", "warn", "fail"]
Overall = Literal["healthy", "degraded", "unhealthy"]

CONTENT_TYPE = "application/health+json"

_OVERALL: dict[Status, Overall] = {"pass": "healthy", "warn": "degraded", "fail": "unhealthy"}
_RANK: dict[Status, int] = {"pass": 0, "warn": 1, "fail": 2}


@dataclass(frozen=True, slots=True)
class ComponentCheck:
    """One component's verdict: ``status``, what it is judged by, and why."""

    kind: str  # circuit_breaker | rate_limiter | connection_pool | memory | chaos
    name: str
    status: Status
    observed: Any
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "status": self.status,
            "observed": self.observed,
            "reason": self.reason,
        }


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

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready)."""
        return {
            "namespace": self.namespace,
            "overall_status": self.overall_status,
            "time": _iso(self.time),
            "circuit_breakers": {k: _plain(v) for k, v in self.circuit_breakers.items()},
            "rate_limiters": {k: _plain(v) for k, v in self.rate_limiters.items()},
            "connection_pools": {k: _plain(v) for k, v in self.connection_pools.items()},
            "memory": _plain(self.memory) if self.memory is not None else None,
            "chaos_engineering": _plain(self.chaos_engineering),
            "checks": [c.to_dict() for c in self.checks],
            **{k: _plain(v) for k, v in self.extra.items()},
        }

    def to_health_json(self) -> dict[str, Any]:
        """The ``application/health+json`` rendering (draft-inadarei-api-health-check)."""
        when = _iso(self.time)
        checks: dict[str, list[dict[str, Any]]] = {}
        for c in self.checks:
            entry: dict[str, Any] = {
                "componentId": c.name,
                "componentType": _COMPONENT_TYPE.get(c.kind, "component"),
                "status": c.status,
                "observedValue": c.observed,
                "output": c.reason,
                "time": when,
            }
            checks.setdefault(f"{c.kind}:{c.name}", []).append(entry)
        return {
            "status": self.status,
            "serviceId": self.namespace,
            "description": f"buttress infrastructure {self.namespace!r}: {self.overall_status}",
            "checks": checks,
        }

    def render(self) -> tuple[int, dict[str, str], bytes]:
        """``(http_status, headers, body)`` for a health endpoint."""
        body = json.dumps(self.to_health_json(), separators=(",", ":"), default=str).encode()
        headers = {"content-type": CONTENT_TYPE, "cache-control": "no-store"}
        return self.http_status, headers, body


_COMPONENT_TYPE = {
    "circuit_breaker": "component",
    "rate_limiter": "component",
    "connection_pool": "datastore",
    "memory": "system",
    "chaos": "component",
}


# -- verdicts per component (pure) -------------------------------------------------------------


def breaker_check(name: str, snap: BreakerSnapshot) -> ComponentCheck:
    state = snap.state
    if state in PASSING:
        return ComponentCheck(
            "circuit_breaker", name, "pass", state.value, f"breaker is {state.value}"
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
        f"breaker is {shown}; failure rate {snap.failure_rate:.0%}",
    )


def limiter_check(name: str, snap: RateLimiterSnapshot) -> ComponentCheck:
    backend = snap.backend_status
    policy = snap.failure_policy
    if backend != "ok":
        status: Status = "fail" if policy == "fail_closed" else "warn"
        return ComponentCheck(
            "rate_limiter", name, status, backend, f"backend is {backend} ({policy})"
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
        error = snap.last_connect_error or "?"
        if len(error) > 200:
            error = error[:197] + "..."
        why = f"{failing} connect(s) failed in a row, last: {error}"
        if snap.size == 0 and (snap.waiting or snap.min_size):
            # Nothing to lend, and callers wait or the pool keeps retrying for min_size.
            return ComponentCheck(
                "connection_pool",
                name,
                "fail",
                failing,
                f"no connection ({snap.waiting} waiting); {why}",
            )
        # Some members left (below min_size), or none needed until a caller comes (min_size
        # 0: nothing retries before then, so no failure that would keep the callers away).
        return ComponentCheck(
            "connection_pool",
            name,
            "warn",
            failing,
            f"{snap.size} of min_size {snap.min_size} connected; {why}",
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


def memory_check(snap: MemorySnapshot) -> ComponentCheck:
    level = snap.level.value
    status: Status = {"normal": "pass", "warning": "warn", "critical": "fail"}.get(level, "warn")  # type: ignore[assignment]
    ratio = snap.ratio
    shown = f"{ratio:.0%} of the {snap.source} limit" if ratio is not None else "not sampled yet"
    return ComponentCheck("memory", snap.name, status, ratio, f"{level}: {shown}")


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
) -> HealthReport:
    """Judge each component's snapshot and fold the verdicts into one report (pure)."""
    breakers = dict(breakers or {})
    limiters = dict(limiters or {})
    pools = dict(pools or {})
    if chaos is None:
        chaos = {"enabled": False, "active_experiments": [], "injectors": {}}
    checks: list[ComponentCheck] = []
    checks += [breaker_check(n, s) for n, s in breakers.items()]
    checks += [limiter_check(n, s) for n, s in limiters.items()]
    checks += [pool_check(n, s) for n, s in pools.items()]
    if memory is not None:
        checks.append(memory_check(memory))
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


def health_wsgi_app(
    source: _HasHealth | Callable[[], HealthReport],
) -> Callable[..., Iterable[bytes]]:
    """A WSGI app answering every request with the ``health+json`` report (200 or 503).

    ``source`` is an :class:`~buttress.Infrastructure` (or anything with ``health()``), or a
    function returning a :class:`HealthReport`.
    """
    get = _getter(source)

    def app(environ: Mapping[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        status, headers, body = get().render()
        reason = "OK" if status == 200 else "Service Unavailable"
        start_response(
            f"{status} {reason}",
            [*headers.items(), ("content-length", str(len(body)))],
        )
        return [body] if environ.get("REQUEST_METHOD", "GET") != "HEAD" else [b""]

    return app


def health_asgi_app(
    source: _HasHealth | Callable[[], HealthReport],
) -> Callable[
    [Mapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]:
    """An ASGI (HTTP) app answering every request with the ``health+json`` report."""
    get = _getter(source)

    async def app(
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
        status, headers, body = get().render()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (k.encode(), v.encode())
                    for k, v in [*headers.items(), ("content-length", str(len(body)))]
                ],
            }
        )
        await send(
            {"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else body}
        )

    return app


def _getter(source: _HasHealth | Callable[[], HealthReport]) -> Callable[[], HealthReport]:
    health = getattr(source, "health", None)
    if callable(health):
        return health  # type: ignore[no-any-return]
    if callable(source):
        return source
    raise TypeError(f"expected an object with health() or a function, got {source!r}")


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


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")
