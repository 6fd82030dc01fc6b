"""From configuration to components: breakers, limiters, pools, the memory manager, routes.

:class:`Builder` makes each component from its table in the config (and what the caller passed
in code: pool factories, health checks, a memory probe), and re-raises a component's own
:class:`~buttress.ConfigError` under the config path it came from. :func:`build_route`
resolves which of them guard one service. The facade (``_infrastructure.py``) holds what they
make; the pipeline (``_protect_async.py``) runs them.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from .._breaker import CircuitBreaker
from .._bulkhead import Bulkhead
from .._chaos import Chaos
from .._errors import BackendError, ConfigError
from .._fleet import RedisFleet
from .._imports import import_callable
from .._instrument import ServiceMetrics
from .._memory import MemoryManager
from .._overload import CpuMonitor, LoopLagMonitors
from .._pool import AsyncConnectionPool, ConnectionPool, PoolConfig
from .._priority import CRITICAL, NORMAL, name_of
from .._redact import redacted_logger
from ..ratelimit._from_url import backend_from_url
from ..ratelimit._leasing import Leasing
from ..ratelimit._limiter import RateLimiter
from ..ratelimit._memory import MemoryBackend

if TYPE_CHECKING:
    from .._clock import Clock
    from .._config import Config, LimiterSettings, PoolSettings, ServiceSettings
    from .._retry import Retry
    from .._retry._core import ServiceCalls
    from .._scheduler import AsyncScheduler, Scheduler
    from ._protect import Steps
    from ._protect_async import AsyncSteps

_log = redacted_logger("buttress.infrastructure")

PoolT = TypeVar("PoolT", ConnectionPool, AsyncConnectionPool)


@dataclass(frozen=True, slots=True)
class ResourceSpec:
    """How to make, close and check a pool's members, given in code (``pools=`` argument)."""

    create: Callable[[], Any]
    close: Callable[[Any], Any] | None = None
    check: Callable[[Any], Any] | None = None
    reset: Callable[[Any], Any] | None = None
    invalidate_on: tuple[type[BaseException], ...] = ()


@dataclass(frozen=True, slots=True)
class ServiceLayers:
    """What guards one service (``infra.layers("payments")``): its breaker, rate limiter,
    bulkhead and pool (``pool`` for threads, ``async_pool`` for asyncio), each ``None`` when it
    has none; ``priority`` is its calls' default (``critical`` whether that is "critical")."""

    service: str
    breaker: CircuitBreaker | None
    limiter: RateLimiter | None
    pool: ConnectionPool | None
    async_pool: AsyncConnectionPool | None
    critical: bool
    bulkhead: Bulkhead | None = None
    priority: str = "normal"


@dataclass(slots=True)
class Route:
    """What guards one service, resolved once, with its compiled protect steps."""

    name: str
    breaker: CircuitBreaker | None
    limiter: RateLimiter | None
    pool: ConnectionPool | None
    apool: AsyncConnectionPool | None  # made by astart(): set then
    pool_name: str | None
    injector_name: str  # the chaos target: its breaker's name, else the service's
    metrics: ServiceMetrics
    adaptive: bool  # the limiter has an adaptive scope, fed each call's outcome
    priority: int  # its calls' default (_priority.py)
    # Beside a context, rate_key fills the "key" entry: whether a scope of the limiter reads it.
    reads_key: bool
    # The limiter's state is shared (SQLite, Redis): a charge costs a round trip, so a breaker
    # that refuses is asked first.
    shared_limit: bool
    bulkhead: Bulkhead | None = None
    steps: Steps | None = None
    async_steps: AsyncSteps | None = None
    # The service's call policies from [services.NAME] (docs/timeouts-and-fallbacks.md).
    timeout: float | None = None
    late_result: str = "raise"
    fallback: Callable[[BaseException], Any] | None = None
    retry: Retry | None = None
    # What a Retry is given for this service's calls (made on first use, see _retried).
    retry_calls: ServiceCalls | None = None
    # Whether its calls take the policies' path even when the call sets none: read on every
    # call, so worked out once.
    policed: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.policed = (
            self.timeout is not None or self.fallback is not None or self.retry is not None
        )

    def layers(self) -> ServiceLayers:
        return ServiceLayers(
            self.name,
            self.breaker,
            self.limiter,
            self.pool,
            self.apool,
            self.priority == CRITICAL,
            self.bulkhead,
            name_of(self.priority),
        )


class Builder:
    """Makes one namespace's components from its config (see the module docstring)."""

    def __init__(
        self,
        namespace: str,
        config: Config,
        *,
        clock: Clock,
        seed: int | None,
        pools: Mapping[str, ResourceSpec | Callable[[], Any]] | None,
        health_checks: Mapping[str, Callable[[], Any]] | None,
    ) -> None:
        self.namespace = namespace
        self.config = config
        self.clock = clock
        self.seed = seed
        self.health_checks = dict(health_checks or {})
        unknown = sorted(set(self.health_checks) - set(config.circuit_breakers))
        if unknown:
            raise ConfigError(f"health_checks.{unknown[0]}", "names no breaker in circuit_breakers")
        specs = {n: _spec(n, v) for n, v in (pools or {}).items()}
        unknown = sorted(set(specs) - set(config.connection_pools))
        if unknown:
            raise ConfigError(f"pools.{unknown[0]}", "names no pool in connection_pools")
        self.pool_specs = specs
        self.backends: dict[str, Any] = {}  # one per URL, shared by the limiters naming it
        self.unreachable: set[str] = set()  # URLs whose server did not answer when made
        self.made_fleet: RedisFleet | None = None  # [fleet], made for its first breaker

    def rng(self, name: str) -> random.Random | None:
        """A generator seeded from the seed, the namespace and ``name`` (None: unseeded)."""
        if self.seed is None:
            return None
        return random.Random(f"{self.seed}/{self.namespace}/{name}")

    def chaos(self) -> Chaos:
        cfg = self.config.chaos
        return Chaos(
            enabled=cfg.enabled,
            seed=cfg.seed if cfg.seed is not None else self.seed,
            clock=self.clock,
        )

    def breaker(
        self, name: str, table: str, chaos: Chaos, *, join_fleet: bool = True
    ) -> CircuitBreaker:
        """The breaker ``name`` from ``circuit_breakers.<table>`` (its fault injection set up
        on ``chaos``, which the pipeline applies). ``join_fleet=False``: a breaker made only
        for its config (a reload's) does not join the fleet, where it would report for the
        breaker of that name under this process's id until it is collected."""
        settings = self.config.circuit_breakers[table]
        path = f"circuit_breakers.{table}"
        kwargs = settings.breaker_kwargs(path)  # an import error names its own full path
        fleet = self.fleet(f"{path}.fleet") if settings.fleet and join_fleet else None
        try:
            breaker = CircuitBreaker(
                name,
                clock=self.clock,
                rng=self.rng(f"breaker/{name}"),
                health_check=self.health_checks.get(name),
                fleet=fleet,
                **kwargs,
            )
        except ConfigError as exc:
            raise ConfigError(f"{path}.{exc.path}", exc.message) from None
        # The pipeline applies chaos; the breaker's snapshot reports what it injected here.
        breaker._injected_by = functools.partial(chaos.find, name)
        fi = settings.fault_injection
        if fi.enabled or fi.failure_rate or fi.latency is not None:
            chaos.injector(
                name,
                enabled=fi.enabled,
                failure_rate=fi.failure_rate,
                latency=fi.latency,
                latency_rate=fi.latency_rate,
            )
        return breaker

    def fleet(self, path: str) -> RedisFleet:
        """The one :class:`~buttress.RedisFleet` of ``[fleet]``, made for the first breaker
        that joins it. Like a rate limiter's Redis, a server that does not answer as the
        application starts stops nothing: the breakers decide locally until it answers."""
        if self.made_fleet is None:
            f = self.config.fleet
            if f.url is None:
                raise ConfigError(path, "fleet = true needs [fleet] url (a redis:// URL)")
            try:
                self.made_fleet = RedisFleet(
                    f.url,
                    namespace=f.namespace or self.namespace,
                    quorum=f.quorum,
                    sync_interval=f.sync_interval,
                )
            except ConfigError as exc:
                raise ConfigError(f"fleet.{exc.path}", exc.message) from None
        return self.made_fleet

    def limiter(self, name: str, s: LimiterSettings) -> RateLimiter:
        path = f"rate_limiting.limiters.{name}"
        rl = self.config.rate_limiting
        url = s.backend or rl.backend
        backend = self._backend(url, f"{path}.backend" if s.backend else "rate_limiting.backend")
        scopes = s.build_scopes(path, rl.default_algorithm)
        try:
            limiter = RateLimiter(
                scopes,
                backend=backend,
                namespace=self.namespace,
                name=name,
                clock=self.clock,
                latency_budget=s.latency_budget,
                failure_policy=s.failure_policy or rl.failure_policy,
                local_share=s.local_share if s.local_share is not None else rl.local_share,
                lease=None if s.lease is None else Leasing(**s.lease.model_dump()),
            )
        except ConfigError as exc:
            if exc.path == "backend.max_keys":  # the cap is set once for every limiter
                raise ConfigError("rate_limiting.max_keys", exc.message) from None
            raise ConfigError(f"{path}.{exc.path}", exc.message) from None
        if url in self.unreachable:
            # The limiter starts in an outage: logged, shown in health, its policy applied.
            limiter.check_backend()
        return limiter

    def _backend(self, url: str, path: str) -> Any:
        """The backend of ``url``, made once. A server that does not answer as the application
        starts stops nothing: the backend is made without it (``lazy``), and its limiters
        follow their failure policy until it answers, as in any outage. A wrong URL or wrong
        credentials stop the start (``ConfigError``)."""
        backend = self.backends.get(url)
        if backend is None:
            max_keys = self.config.rate_limiting.max_keys
            try:
                try:
                    backend = backend_from_url(url, max_keys=max_keys)
                except BackendError:
                    self.unreachable.add(url)
                    backend = backend_from_url(url, max_keys=max_keys, lazy=True)
            except ConfigError as exc:
                raise ConfigError(path, exc.message) from None
            self.backends[url] = backend
        return backend

    def resource(self, name: str, s: PoolSettings) -> ResourceSpec:
        """How pool ``name`` makes, closes and checks members: from code, else its factory."""
        spec = self.pool_specs.get(name)
        path = f"connection_pools.{name}"
        if spec is None:
            if s.factory is None:
                raise ConfigError(
                    f"{path}.factory",
                    "is required (an import path such as 'sqlite3:connect'), "
                    f"or pass pools={{{name!r}: create}} to Infrastructure",
                )
            factory = import_callable(f"{path}.factory", s.factory)
            spec = ResourceSpec(create=functools.partial(factory, *s.args, **s.kwargs))
        check = spec.check
        if check is None and s.check_sql is not None:
            check = functools.partial(_check_sql_async if s.is_async else _check_sql, s.check_sql)
        invalidate_on = spec.invalidate_on  # code's, then the configuration's
        invalidate_on += tuple(t for t in s.invalidate_on_types(path) if t not in invalidate_on)
        return ResourceSpec(
            create=spec.create,
            close=spec.close,  # None: the pool's own, member.close() (awaited when async)
            check=check,
            reset=spec.reset,
            invalidate_on=invalidate_on,
        )

    def pool(
        self,
        kind: type[PoolT],
        name: str,
        s: PoolSettings,
        scheduler: Scheduler | AsyncScheduler,
    ) -> PoolT:
        """Pool ``name`` of ``kind`` (:class:`ConnectionPool` or :class:`AsyncConnectionPool`),
        its background work on ``scheduler`` (the matching kind)."""
        r = self.resource(name, s)
        try:
            return kind(
                create=r.create,
                close=r.close,
                check=r.check,
                reset=r.reset,
                invalidate_on=r.invalidate_on,
                name=name,
                config=PoolConfig(**s.pool_kwargs(has_check=r.check is not None)),
                clock=self.clock,
                rng=self.rng(f"pool/{name}"),
                scheduler=scheduler,  # type: ignore[arg-type]
            )
        except ConfigError as exc:
            raise ConfigError(f"connection_pools.{name}.{exc.path}", exc.message) from None

    def overload(self) -> tuple[CpuMonitor | None, LoopLagMonitors | None]:
        """The CPU and loop-lag monitors of ``[overload]``: each made when its table is there."""
        o = self.config.overload
        cpu = loops = None
        if o.cpu is not None:
            cpu = CpuMonitor(**o.cpu.model_dump(), clock=self.clock, name=f"{self.namespace}.cpu")
        if o.loop_lag is not None:
            loops = LoopLagMonitors(
                **o.loop_lag.model_dump(), clock=self.clock, name=f"{self.namespace}.loop"
            )
        return cpu, loops

    def memory(self, probe: Callable[[], Any] | None) -> MemoryManager | None:
        cfg = self.config.memory_manager
        if not cfg.enabled:
            return None
        try:
            return MemoryManager(
                clock=self.clock,
                probe=probe,
                name=f"{self.namespace}.memory",
                **cfg.manager_kwargs(),
            )
        except ConfigError as exc:  # `probe` is ours (memory_probe), the rest the file's
            where = "memory_probe" if exc.path == "probe" else f"memory_manager.{exc.path}"
            raise ConfigError(where, exc.message) from None


DYNAMIC = "default"
"""The ``services`` table that admits every other service name: a service that no table
names and no component is named like gets its choices (without it, such a name is an error:
usually a typo)."""


def build_route(
    service: str,
    config: Config,
    *,
    breakers: dict[str, CircuitBreaker],
    make_default_breaker: Callable[[str], CircuitBreaker],
    limiters: Mapping[str, RateLimiter],
    pools: Mapping[str, ConnectionPool],
    async_pools: Mapping[str, AsyncConnectionPool],
    metrics: ServiceMetrics,
    namespace: str,
    clock: Clock,
) -> Route:
    """Which breaker, limiter and pool guard ``service``: its ``services`` table's choices,
    else the components named like the service (and ``circuit_breakers.default``, made for it
    and added to ``breakers``). A table that names a missing component is a config error, and
    so is a service known by nothing (:func:`unknown_service`) unless ``services.default``
    admits it."""
    s = config.services.get(service)
    table = service
    if s is None and service not in known_services(config):
        s = config.services.get(DYNAMIC)
        if s is None:
            raise unknown_service(service, config)
        table = DYNAMIC
    breaker_name, limiter_name, pool_name = choices(service, table, s, config)
    breaker = None
    if breaker_name is not None:
        breaker = breakers.get(breaker_name)
    elif "default" in config.circuit_breakers and (s is None or s.breaker is True):
        breaker = breakers[service] = make_default_breaker(service)
    limiter = limiters.get(limiter_name) if limiter_name else None
    adaptive = limiter is not None and any(sc.adaptive for sc in limiter.scopes)
    if adaptive and breaker is not None and limiter is not None:
        limiter.attach_breaker(breaker)
    if table == DYNAMIC and breaker is None and limiter is None and pool_name is None:
        # Admitted by services.default, and nothing guards it: say so once (a route is built
        # once per service).
        _log.warning(
            "buttress %s: service %r has no breaker, limiter or pool (services.default admits "
            "it, and neither it nor circuit_breakers.default gives it one): it gets only the "
            "memory check and metrics",
            namespace,
            service,
        )
    retry = (
        s.retry.policy(f"services.{table}.retry", clock)
        if s is not None and s.retry is not None
        else None
    )
    if retry is not None:
        metrics.retry_budget = retry.budget  # reported in health and the metrics
    return Route(
        name=service,
        breaker=breaker,
        limiter=limiter,
        pool=pools.get(pool_name) if pool_name else None,
        apool=async_pools.get(pool_name) if pool_name else None,
        pool_name=pool_name,
        injector_name=breaker.name if breaker is not None else service,
        metrics=metrics,
        adaptive=adaptive,
        priority=s.call_priority() if s is not None else NORMAL,
        bulkhead=(
            s.bulkhead.make(service, f"services.{table}.bulkhead", clock)
            if s is not None and s.bulkhead is not None
            else None
        ),
        reads_key=limiter is not None and any(sc.by == "key" for sc in limiter.scopes),
        shared_limit=limiter is not None and not isinstance(limiter.backend, MemoryBackend),
        timeout=s.timeout if s is not None else None,
        late_result=s.late_result if s is not None else "raise",
        fallback=(
            import_callable(f"services.{table}.fallback", s.fallback)
            if s is not None and s.fallback is not None
            else None
        ),
        retry=retry,
    )


def choices(
    service: str, table: str, s: ServiceSettings | None, config: Config
) -> tuple[str | None, str | None, str | None]:
    """The names of the breaker, limiter and pool that ``services.<table>`` (``s``; ``None``:
    no table) gives ``service``: a name of its own, the one named like the service, or none."""
    path = f"services.{table}"

    def pick(kind: str, choice: str | bool, components: Mapping[str, Any]) -> str | None:
        if choice is False:
            return None
        if choice is True:
            return service if service in components and service != DYNAMIC else None
        if choice not in components:
            raise ConfigError(f"{path}.{kind}", f"names no {kind} {choice!r}")
        return choice

    return (
        pick("breaker", s.breaker if s else True, config.circuit_breakers),
        pick("limiter", s.limiter if s else True, config.rate_limiting.limiters),
        pick("pool", s.pool if s else True, config.connection_pools),
    )


def known_services(config: Config) -> set[str]:
    """The service names the configuration knows: its ``services`` tables and the names of its
    breakers, limiters and pools (``default``, a template, is none of them)."""
    names = {
        *config.services,
        *config.circuit_breakers,
        *config.rate_limiting.limiters,
        *config.connection_pools,
    }
    names.discard(DYNAMIC)
    return names


def unknown_service(service: str, config: Config) -> ConfigError:
    """The error for a service the configuration does not know, with the closest names."""
    known = sorted(known_services(config))
    close = difflib.get_close_matches(service, known, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
    have = f"known: {', '.join(known)}" if known else "the configuration names none"
    return ConfigError(
        "service",
        f"unknown service {service!r} ({have}): no [services.{service}] table, and no breaker, "
        f"limiter or pool named like it. {hint}A service whose name is made at run time needs "
        "a [services.default] table, which admits every name",
    )


def _spec(name: str, value: ResourceSpec | Callable[[], Any]) -> ResourceSpec:
    if isinstance(value, ResourceSpec):
        return value
    if callable(value):
        return ResourceSpec(create=value)
    raise ConfigError(f"pools.{name}", f"must be a ResourceSpec or a callable, got {value!r}")


async def _check_sql_async(sql: str, conn: Any) -> None:
    """Run ``sql`` on ``conn`` and read its rows: the check of a pool with ``check_sql``.

    Whatever the driver returns that can be awaited is (psycopg's ``AsyncConnection``,
    asyncpg, aiosqlite); with a plain DB-API connection nothing is, so a thread pool runs this
    same coroutine to its end in one step (:func:`_check_sql`).
    """
    execute = getattr(conn, "execute", None)
    if callable(execute):
        await _maybe_await(execute(sql))
        return
    cur = await _maybe_await(conn.cursor())
    try:
        await _maybe_await(cur.execute(sql))
        await _maybe_await(cur.fetchall())
    finally:
        await _maybe_await(cur.close())


def _check_sql(sql: str, conn: Any) -> None:
    """:func:`_check_sql_async` for a thread pool's plain connection, with no event loop."""
    steps = _check_sql_async(sql, conn)
    try:
        steps.send(None)
    except StopIteration:
        return
    steps.close()
    raise ConfigError(
        "check_sql",
        f"the connection {conn!r} answered with something to await: a pool of asyncio "
        "connections needs `async = true`",
    )


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value
