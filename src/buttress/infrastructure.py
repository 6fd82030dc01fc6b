"""``Infrastructure``: every component built from one config, ``protect()``, and ``health()``.

>>> with Infrastructure("app", {"circuit_breakers": {"payments": {}}}) as infra:  # doctest: +SKIP
...     infra.call("payments", charge, order, context={"user_id": "u1", "org_id": "o1"})

``protect`` runs, in order: memory check → rate limit → circuit breaker → pool checkout →
chaos → the operation → outcome recorded (breaker, adaptive limiter, instrumentation). A layer
that refuses raises its :class:`~buttress.RejectedError` and nothing after it runs; what an
earlier layer took is given back (the rate-limit charge is refunded, the breaker permit
released), so a refused call costs the caller nothing.

One scheduler per infrastructure runs the background work: memory sampling, pool
housekeeping and health checks, breaker health probes, limiter key sweeps. ``close()`` stops
it all.
"""

from __future__ import annotations

import functools
import inspect
import logging
import random
import threading
import types
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, ParamSpec, TypeVar

from ._clock import Clock, SystemClock
from ._concurrency import is_async_callable
from ._scheduler import AsyncScheduler, Handle, Scheduler
from .breaker import CircuitBreaker
from .breaker._outcome import CANCELLATION, classify
from .chaos import Chaos
from .config import Config, LimiterSettings, PoolSettings, import_callable, load_config
from .errors import (
    ConfigError,
    InfrastructureClosedError,
    PoolTimeoutError,
    RateLimitExceeded,
    RejectedError,
)
from .health import HealthReport, build_report
from .instrument import METRICS, ServiceMetrics, instrument_callable
from .memory import MemoryManager, MemorySample
from .pool import AsyncConnectionPool, ConnectionPool, PoolConfig
from .ratelimit import Decision, RateLimiter, backend_from_url
from .ratelimit._scope import check_name

__all__ = ["Infrastructure", "Protection", "ResourceSpec"]

_log = logging.getLogger("buttress.infrastructure")

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ResourceSpec:
    """How to make, close and check a pool's members, given in code (``pools=`` argument)."""

    create: Callable[[], Any]
    close: Callable[[Any], Any] | None = None
    check: Callable[[Any], Any] | None = None
    reset: Callable[[Any], Any] | None = None
    invalidate_on: tuple[type[BaseException], ...] = ()


@dataclass(slots=True)
class _Route:
    """What guards one service, resolved once."""

    name: str
    breaker: CircuitBreaker | None
    limiter: RateLimiter | None
    pool: ConnectionPool | None
    apool: AsyncConnectionPool | None
    injector_name: str  # the chaos target: its breaker's name, else the service's
    metrics: ServiceMetrics
    adaptive: bool
    critical: bool
    pool_name: str | None = None
    steps: tuple[Any, Any, Any] = (None, None, None)  # (enter, exit, abandon): see _compile
    # Beside a context, rate_key fills the "key" entry: whether a scope of the limiter reads it.
    reads_key: bool = False


class Infrastructure:
    """Breakers, limiters, pools, memory manager and chaos for one namespace.

    ``config`` is a :class:`~buttress.config.Config`, a dict, a TOML path or ``None``;
    ``BUTTRESS_...`` environment variables override it (pass ``env={}`` to ignore them).
    ``pools`` supplies pool members from code: ``{"db": ResourceSpec(create=connect)}`` or
    just ``{"db": connect}``. ``health_checks`` maps breaker names to health-check callables.
    ``memory_probe`` replaces the memory manager's probe (tests, scenarios). ``background=False``
    runs no scheduler thread: tests call :meth:`run_maintenance` instead.
    """

    def __init__(
        self,
        namespace: str = "default",
        config: Config | Mapping[str, Any] | str | None = None,
        *,
        clock: Clock | None = None,
        seed: int | None = None,
        pools: Mapping[str, ResourceSpec | Callable[[], Any]] | None = None,
        health_checks: Mapping[str, Callable[[], Any]] | None = None,
        memory_probe: Callable[[], Any] | None = None,
        background: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> None:
        check_name("namespace", namespace)  # it is in every storage key and metric
        cfg = load_config(config, env=env)
        self.namespace = namespace
        self.config = cfg
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._now = self.clock.monotonic
        self._seed = seed
        self._background = background
        self._lock = threading.Lock()
        self._closed = False
        self._started = False
        self._jobs: list[Handle] = []
        self.scheduler = Scheduler(
            clock=self.clock,
            rng=self._rng("scheduler"),
            name=f"buttress-{namespace}",
            background=background,
        )
        self.async_scheduler: AsyncScheduler | None = None
        self._health_checks = dict(health_checks or {})
        unknown = sorted(set(self._health_checks) - set(cfg.circuit_breakers))
        if unknown:
            raise ConfigError(f"health_checks.{unknown[0]}", "names no breaker in circuit_breakers")

        self.chaos = Chaos(
            enabled=cfg.chaos.enabled,
            seed=cfg.chaos.seed if cfg.chaos.seed is not None else seed,
            clock=self.clock,
        )
        self.breakers: dict[str, CircuitBreaker] = {}
        for name in cfg.circuit_breakers:
            if name != "default":
                self.breakers[name] = self._make_breaker(name, name)

        self._backends: dict[str, Any] = {}
        self.limiters: dict[str, RateLimiter] = {
            name: self._make_limiter(name, s) for name, s in cfg.rate_limiting.limiters.items()
        }

        specs = {n: _spec(n, v) for n, v in (pools or {}).items()}
        unknown = sorted(set(specs) - set(cfg.connection_pools))
        if unknown:
            raise ConfigError(f"pools.{unknown[0]}", "names no pool in connection_pools")
        self._pool_specs = specs
        self.pools: dict[str, ConnectionPool] = {}
        self.async_pools: dict[str, AsyncConnectionPool] = {}
        for name, s in cfg.connection_pools.items():
            if not s.is_async:
                self.pools[name] = self._make_pool(name, s)
            else:
                self._resource(name, s)  # fail now, not at astart(), on a bad factory

        self.memory: MemoryManager | None = None
        if cfg.memory_manager.enabled:
            try:
                self.memory = MemoryManager(
                    clock=self.clock,
                    probe=memory_probe,
                    name=f"{namespace}.memory",
                    **cfg.memory_manager.manager_kwargs(),
                )
            except ConfigError as exc:  # `probe` is ours (memory_probe), the rest the file's
                where = "memory_probe" if exc.path == "probe" else f"memory_manager.{exc.path}"
                raise ConfigError(where, exc.message) from None
            self.memory.on_pressure("warning", self._trim_pools)

        self.services: dict[str, ServiceMetrics] = {}
        self._routes: dict[str, _Route] = {}
        for service in cfg.services:
            self._route(service)  # resolve now: a bad reference is a config error
        self._schedule_jobs()

    # -- building ------------------------------------------------------------------------------

    def _rng(self, name: str) -> random.Random | None:
        return (
            random.Random(f"{self._seed}/{self.namespace}/{name}")
            if self._seed is not None
            else None
        )

    def _make_breaker(self, name: str, table: str) -> CircuitBreaker:
        settings = self.config.circuit_breakers[table]
        path = f"circuit_breakers.{table}"
        kwargs = settings.breaker_kwargs(path)  # an import error names its own full path
        try:
            breaker = CircuitBreaker(
                name,
                clock=self.clock,
                rng=self._rng(f"breaker/{name}"),
                health_check=self._health_checks.get(name),
                **kwargs,
            )
        except ConfigError as exc:
            raise ConfigError(f"{path}.{exc.path}", exc.message) from None
        fi = settings.fault_injection
        if fi.enabled or fi.failure_rate or fi.latency is not None:
            self.chaos.injector(
                name,
                enabled=fi.enabled,
                failure_rate=fi.failure_rate,
                latency=fi.latency,
                latency_rate=fi.latency_rate,
            )
        return breaker

    def _backend(self, url: str, path: str) -> Any:
        backend = self._backends.get(url)
        if backend is None:
            try:
                backend = backend_from_url(url, max_keys=self.config.rate_limiting.max_keys)
            except ConfigError as exc:
                raise ConfigError(path, exc.message) from None
            self._backends[url] = backend
        return backend

    def _make_limiter(self, name: str, s: LimiterSettings) -> RateLimiter:
        path = f"rate_limiting.limiters.{name}"
        rl = self.config.rate_limiting
        backend = self._backend(
            s.backend or rl.backend, f"{path}.backend" if s.backend else "rate_limiting.backend"
        )
        scopes = s.build_scopes(path, rl.default_algorithm)
        extra: dict[str, Any] = {}
        if "failure_policy" in inspect.signature(RateLimiter).parameters:
            extra["failure_policy"] = s.failure_policy or rl.failure_policy
        try:
            return RateLimiter(
                scopes,
                backend=backend,
                namespace=self.namespace,
                name=name,
                clock=self.clock,
                latency_budget=s.latency_budget,
                **extra,
            )
        except ConfigError as exc:
            if exc.path == "backend.max_keys":  # the cap is set once for every limiter
                raise ConfigError("rate_limiting.max_keys", exc.message) from None
            raise ConfigError(f"{path}.{exc.path}", exc.message) from None

    def _resource(self, name: str, s: PoolSettings) -> ResourceSpec:
        spec = self._pool_specs.get(name)
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
            check = functools.partial(_acheck_sql if s.is_async else _check_sql, s.check_sql)
        invalidate_on = spec.invalidate_on  # code's, then the configuration's
        invalidate_on += tuple(t for t in s.invalidate_on_types(path) if t not in invalidate_on)
        return ResourceSpec(
            create=spec.create,
            close=spec.close,  # None: the pool's own, member.close() (awaited when async)
            check=check,
            reset=spec.reset,
            invalidate_on=invalidate_on,
        )

    def _make_pool(self, name: str, s: PoolSettings) -> ConnectionPool:
        r = self._resource(name, s)
        try:
            return ConnectionPool(
                create=r.create,
                close=r.close,
                check=r.check,
                reset=r.reset,
                invalidate_on=r.invalidate_on,
                name=name,
                config=PoolConfig(**s.pool_kwargs(has_check=r.check is not None)),
                clock=self.clock,
                rng=self._rng(f"pool/{name}"),
                scheduler=self.scheduler,
            )
        except ConfigError as exc:
            raise ConfigError(f"connection_pools.{name}.{exc.path}", exc.message) from None

    def _trim_pools(self, sample: MemorySample) -> None:
        """Memory runs short: close idle pool members down to each pool's ``min_size``."""
        for pool in self.pools.values():
            pool.trim()
        scheduler = self.async_scheduler
        if scheduler is not None:  # an asyncio pool is only touched from its own loop
            for apool in self.async_pools.values():
                scheduler.call_later(0.0, apool.trim)

    def _schedule_jobs(self) -> None:
        every = self.scheduler.call_every
        if self.memory is not None:
            self._jobs.append(every(self.memory.check_interval, self.memory.maybe_sample))
        for breaker in self.breakers.values():
            if breaker.has_health_check and not breaker.health_check_is_async:
                self._jobs.append(every(breaker.config.health_check_interval, breaker.check_health))
        for limiter in self.limiters.values():
            self._jobs.append(every(60.0, limiter.maintain))

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._closed

    def _route(self, service: str) -> _Route:
        route = self._routes.get(service)
        if route is not None:
            return route
        if self._closed:  # close() empties the routes, so every call comes here
            raise InfrastructureClosedError(
                f"infrastructure {self.namespace!r} is closed: it protects no more calls"
            )
        with self._lock:
            route = self._routes.get(service)
            if route is None:
                route = self._routes[service] = self._build_route(service)
        return route

    def _build_route(self, service: str) -> _Route:
        cfg = self.config
        s = cfg.services.get(service)
        path = f"services.{service}"

        def pick(kind: str, choice: str | bool, table: Mapping[str, Any]) -> str | None:
            if choice is False:
                return None
            if choice is True:
                return service if service in table else None
            if choice not in table:
                raise ConfigError(f"{path}.{kind}", f"names no {kind} {choice!r}")
            return choice

        breaker_name = pick("breaker", s.breaker if s else True, cfg.circuit_breakers)
        breaker = None
        if breaker_name is not None:
            breaker = self.breakers.get(breaker_name)
        elif "default" in cfg.circuit_breakers and (s is None or s.breaker is True):
            breaker = self.breakers[service] = self._make_breaker(service, "default")
        limiter_name = pick("limiter", s.limiter if s else True, cfg.rate_limiting.limiters)
        limiter = self.limiters.get(limiter_name) if limiter_name else None
        pool_name = pick("pool", s.pool if s else True, cfg.connection_pools)
        pool = self.pools.get(pool_name) if pool_name else None
        adaptive = limiter is not None and any(sc.algorithm == "adaptive" for sc in limiter.scopes)
        if adaptive and breaker is not None and limiter is not None:
            limiter.attach_breaker(breaker)
        metrics = self.services.get(service)
        if metrics is None:
            metrics = self.services[service] = ServiceMetrics(service)
        route = _Route(
            name=service,
            breaker=breaker,
            limiter=limiter,
            pool=pool,
            apool=self.async_pools.get(pool_name) if pool_name else None,
            injector_name=breaker.name if breaker is not None else service,
            metrics=metrics,
            adaptive=adaptive,
            critical=bool(s and s.critical),
            pool_name=pool_name,
            reads_key=limiter is not None and any(sc.by == "key" for sc in limiter.scopes),
        )
        route.steps = _compile(self, route)
        if s is None and breaker is None and limiter is None and pool_name is None:
            # Most likely a misspelt name: say so once (a route is built once per service).
            _log.warning(
                "buttress %s: service %r has no breaker, limiter or pool (no table names it, and "
                "there is no circuit_breakers.default): it gets only the memory check and metrics",
                self.namespace,
                service,
            )
        return route

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Infrastructure:
        """Open the pools (filling ``min_size`` in the background). Idempotent."""
        if self._closed:
            raise InfrastructureClosedError(f"infrastructure {self.namespace!r} is closed")
        if not self._started:
            self._started = True
            for pool in self.pools.values():
                pool.open(wait=False)
        return self

    async def astart(self) -> Infrastructure:
        """:meth:`start`, plus the asyncio side: the async scheduler and the async pools."""
        self.start()
        if self.async_scheduler is None:
            self.async_scheduler = AsyncScheduler(
                clock=self.clock,
                name=f"buttress-{self.namespace}-async",
                background=self._background,
            )
            for name, s in self.config.connection_pools.items():
                if s.is_async:
                    r = self._resource(name, s)
                    pool = AsyncConnectionPool(
                        create=r.create,
                        close=r.close,
                        check=r.check,
                        reset=r.reset,
                        invalidate_on=r.invalidate_on,
                        name=name,
                        config=PoolConfig(**s.pool_kwargs(has_check=r.check is not None)),
                        clock=self.clock,
                        rng=self._rng(f"pool/{name}"),
                        scheduler=self.async_scheduler,
                    )
                    self.async_pools[name] = pool
                    await pool.open(wait=False)
            for route in self._routes.values():
                if route.pool_name in self.async_pools:
                    route.apool = self.async_pools[route.pool_name]
            for breaker in self.breakers.values():
                if breaker.has_health_check and breaker.health_check_is_async:
                    self._jobs.append(
                        self.async_scheduler.call_every(
                            breaker.config.health_check_interval, breaker.check_health_async
                        )
                    )
        return self

    def close(self) -> None:
        """Stop the scheduler, close every pool and backend. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            self._routes.clear()
        for job in self._jobs:
            job.cancel()
        for pool in self.pools.values():
            pool.close()
        self.scheduler.close()
        for backend in self._backends.values():
            closer = getattr(backend, "close", None)
            if callable(closer):
                closer()

    async def aclose(self) -> None:
        """Close the async pools, scheduler and backend clients too."""
        if not self._closed:
            for pool in self.async_pools.values():
                await pool.aclose()
            if self.async_scheduler is not None:
                self.async_scheduler.close()
            for backend in self._backends.values():
                closer = getattr(backend, "aclose", None)
                if callable(closer):
                    await closer()  # this loop's asyncio client, when it made one
        self.close()

    def __enter__(self) -> Infrastructure:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Infrastructure:
        return await self.astart()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def run_maintenance(self) -> None:
        """Run what the scheduler would run now (tests with ``background=False``)."""
        self.scheduler.run_due()
        for pool in self.pools.values():
            pool.run_maintenance()

    # -- protecting operations -------------------------------------------------------------

    def protect(
        self,
        service: str,
        *,
        rate_key: Any = None,
        context: Mapping[str, Any] | None = None,
        critical: bool | None = None,
        cost: float = 1,
    ) -> Protection:
        """A context manager (``with`` or ``async with``) guarding one operation.

        ``context`` fills the limiter's scopes (``{"user_id": "u1", "org_id": "o1"}``);
        ``rate_key`` is the id for a limiter whose scopes take one kind of id (or the ``key``
        entry beside a context; a limiter of shared scopes only takes none). ``critical``
        calls are never shed (by memory or a degraded breaker). ``guard.connection`` is the
        pooled member when the service has a pool.
        """
        route = self._route(service)
        return Protection(
            self,
            route,
            context if rate_key is None else _keyed(route, rate_key, context),
            route.critical if critical is None else critical,
            cost,
        )

    def call(
        self,
        service: str,
        fn: Callable[..., T],
        /,
        *args: Any,
        rate_key: Any = None,
        context: Mapping[str, Any] | None = None,
        critical: bool | None = None,
        cost: float = 1,
        **kwargs: Any,
    ) -> T:
        """Run ``fn(*args, **kwargs)`` under :meth:`protect`.

        When the service has a pool, the connection is passed first: ``fn(conn, *args)``.
        """
        if rate_key is not None:
            context = _keyed(self._route(service), rate_key, context)
        return self._run(service, fn, args, kwargs, context, critical, cost)

    def _run(
        self,
        service: str,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        key: Any,
        critical: bool | None,
        cost: float,
    ) -> T:
        """:meth:`call` with ``fn``'s own arguments apart: none of them is taken for an option
        (``protected`` functions may have a ``cost`` or a ``context`` of their own)."""
        route = self._routes.get(service) or self._route(service)
        enter, leave, abandon = route.steps
        token = enter(key, route.critical if critical is None else critical, cost)
        try:
            lease = token[1]
            if lease is not None:
                result = fn(lease.connection, *args, **kwargs)
            else:
                result = fn(*args, **kwargs)
        except BaseException as exc:
            leave(token, exc)
            raise
        if result.__class__ in _LAZY:
            abandon(token, key, cost)
            raise _lazy_result(service, fn, result)
        leave(token, None)
        return result

    async def call_async(
        self,
        service: str,
        fn: Callable[..., Awaitable[T]],
        /,
        *args: Any,
        rate_key: Any = None,
        context: Mapping[str, Any] | None = None,
        critical: bool | None = None,
        cost: float = 1,
        **kwargs: Any,
    ) -> T:
        """The async twin of :meth:`call` (awaits ``fn``; an async pool's connection first)."""
        if rate_key is not None:
            context = _keyed(self._route(service), rate_key, context)
        return await self._run_async(service, fn, args, kwargs, context, critical, cost)

    async def _run_async(
        self,
        service: str,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        key: Any,
        critical: bool | None,
        cost: float,
    ) -> T:
        """:meth:`call_async` with ``fn``'s own arguments apart (see :meth:`_run`)."""
        route = self._route(service)
        guard = Protection(self, route, key, route.critical if critical is None else critical, cost)
        await guard.__aenter__()
        aw: Any = _UNCALLED
        try:
            if guard._alease is not None:
                aw = fn(guard.connection, *args, **kwargs)
            else:
                aw = fn(*args, **kwargs)
            result: T = await aw
        except BaseException as exc:
            if aw is not _UNCALLED and _not_awaitable(aw, exc):
                raise await _misused(guard, service, fn, aw) from None
            await guard.__aexit__(type(exc), exc, None)
            raise
        await guard.__aexit__(None, None, None)
        return result

    def protected(
        self,
        service: str,
        *,
        rate_key: Any = None,
        context: Mapping[str, Any] | Callable[..., Mapping[str, Any]] | None = None,
        critical: bool | None = None,
        cost: float = 1,
    ) -> Callable[[Callable[P, T]], Callable[P, T]]:
        """Decorate a sync or async function so every call runs under :meth:`protect`.

        ``rate_key`` and ``context`` may be callables taking the function's arguments. The
        function's own arguments pass through untouched, even ones named like these options.
        Generator functions are refused (``TypeError``): their body runs after the call returns.
        """

        def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
            if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
                name = getattr(fn, "__qualname__", None) or repr(fn)
                kind = "an async generator" if inspect.isasyncgenfunction(fn) else "a generator"
                with_ = "async with" if inspect.isasyncgenfunction(fn) else "with"
                raise TypeError(
                    f"protected({service!r}) cannot guard {name}: it is {kind} function, whose "
                    "body runs as it is iterated, after the protected call has returned. "
                    "Decorate a function that returns the items (e.g. a list), or open "
                    f"`{with_} infra.protect({service!r}) as guard:` inside the generator"
                )

            # The function's own arguments go through untouched (it may have a `cost` or a
            # `context` of its own): the options travel apart, to _run / _run_async.
            def key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
                rk = rate_key(*args, **kwargs) if callable(rate_key) else rate_key
                ctx = context(*args, **kwargs) if callable(context) else context
                return ctx if rk is None else _keyed(self._route(service), rk, ctx)

            if is_async_callable(fn):

                @functools.wraps(fn)
                async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                    return await self._run_async(
                        service, fn, args, kwargs, key(args, kwargs), critical, cost
                    )

                return async_wrapper

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                return self._run(service, fn, args, kwargs, key(args, kwargs), critical, cost)

            return wrapper

        return decorate

    # -- instrumentation -----------------------------------------------------------------------

    def instrument(
        self, service: str, metrics: list[str] | tuple[str, ...] = METRICS
    ) -> Callable[[T], T]:
        """Decorate a function or class (its public methods) to record latency, throughput,
        errors (and cache hits, via :meth:`cache_hit` / :meth:`cache_miss`) for ``service``."""
        m = self._metrics(service, metrics)
        now = self._now

        def decorate(target: T) -> T:
            return instrument_callable(target, m, now)  # type: ignore[no-any-return]

        return decorate

    def cache_hit(self, service: str) -> None:
        """Count a cache hit for ``service``."""
        self._metrics(service).cache_hit()

    def cache_miss(self, service: str) -> None:
        """Count a cache miss for ``service``."""
        self._metrics(service).cache_miss()

    def _metrics(
        self, service: str, metrics: list[str] | tuple[str, ...] = METRICS
    ) -> ServiceMetrics:
        m = self.services.get(service)
        if m is None:
            with self._lock:
                m = self.services.get(service)
                if m is None:
                    m = self.services[service] = ServiceMetrics(service, metrics)
                    return m
        if metrics is not METRICS:
            m.want(metrics)
        return m

    # -- health ----------------------------------------------------------------------------------

    def health(self) -> HealthReport:
        """Every component's state and one overall status (see :mod:`buttress.health`)."""
        mono = self._now()
        # Copies: another thread may add a default breaker or a service meanwhile.
        pools: dict[str, Any] = {n: p.stats() for n, p in tuple(self.pools.items())}
        pools.update({n: p.stats() for n, p in tuple(self.async_pools.items())})
        services = tuple(self.services.items())
        return build_report(
            self.namespace,
            breakers={n: b.snapshot() for n, b in tuple(self.breakers.items())},
            limiters={n: lim.snapshot() for n, lim in tuple(self.limiters.items())},
            pools=pools,
            memory=self.memory.snapshot() if self.memory is not None else None,
            chaos=self.chaos.snapshot(),
            time=self.clock.time(),
            extra={"services": {n: m.snapshot(now=mono) for n, m in services}},
        )

    def __repr__(self) -> str:
        return (
            f"<Infrastructure {self.namespace!r}: {len(self.breakers)} breakers, "
            f"{len(self.limiters)} limiters, {len(self.pools) + len(self.async_pools)} pools>"
        )


# A protected call in flight: (breaker ticket, pool lease, start time, the rate limiter's
# admitting Decision: None when nothing was charged).
_Token = tuple[Any, Any, float, Any]


def _compile(infra: Infrastructure, route: _Route) -> tuple[Any, Any, Any]:
    """The sync steps of ``protect`` for one service, as closures: ``enter``, ``exit``, and
    ``abandon`` (give back all ``enter`` took, for a call that never ran).

    Built once per service with only the layers it has, so a call pays for no lookup and no
    absent layer (the protected path is measured in microseconds; each attribute read shows).
    """
    mm = infra.memory
    chaos = infra.chaos
    clock = infra.clock
    now = infra._now
    limiter = route.limiter
    try_acquire = limiter.try_acquire if limiter is not None else None
    refund = limiter.refund if limiter is not None else None
    adaptive_record = limiter.record if limiter is not None and route.adaptive else None
    breaker = route.breaker
    begin = breaker.begin if breaker is not None else None
    end = breaker.end if breaker is not None else None
    release = breaker.release if breaker is not None else None
    abort = breaker.abort if breaker is not None else None
    pool = route.pool
    pool_name = route.pool_name
    # The injector is looked up on each call while chaos is on, not once here: a target made
    # after the route (an experiment started later) must apply. With chaos off (the usual
    # case) a call reads one attribute for it.
    find_injector = chaos._injectors.get
    target = route.injector_name
    metrics = route.metrics
    record = metrics.record
    rejected = metrics.record_rejection

    def undo(ticket: Any, limited: Any, key: Any, cost: float) -> None:
        if ticket is not None and release is not None:
            release(ticket)
        if limited is not None and refund is not None:
            refund(key, cost)

    def enter(key: Any, critical: bool, cost: float) -> _Token:
        if mm is not None and mm.should_shed(critical):
            try:
                mm.raise_if_shedding(critical)
            except RejectedError as exc:
                rejected(exc)
                raise
        limited = None  # the admitting decision, when the service has a limiter
        if try_acquire is not None:
            d = try_acquire(key, cost)
            if not d.allowed:
                err = _refused(d)
                rejected(err)
                raise err
            limited = d
        ticket = None
        if begin is not None:
            try:
                ticket = begin(critical)
            except BaseException as exc:  # refused, or interrupted: the charge goes back
                undo(None, limited, key, cost)
                if isinstance(exc, RejectedError):
                    rejected(exc)
                raise
        lease = None
        if pool is not None:
            lease = pool.connection()
            try:
                lease.__enter__()
            except BaseException as exc:
                down = _connect_error(exc)
                if down is not None and ticket is not None and abort is not None:
                    abort(ticket, down)  # the pool cannot connect: a failure, not a refusal
                    ticket = None
                undo(ticket, limited, key, cost)
                if isinstance(exc, RejectedError):
                    rejected(exc)
                raise
        elif pool_name is not None:
            undo(ticket, limited, key, cost)
            raise RuntimeError(
                f"service {route.name!r} uses the async pool {pool_name!r}: "
                "use call_async() / async with under `async with Infrastructure(...)`"
            )
        if chaos._enabled and (injector := find_injector(target)) is not None:
            fault = injector.decide()
            if fault.delay:
                try:
                    clock.sleep(fault.delay)
                except BaseException:  # interrupted before the operation ran: give all back
                    abandon((ticket, lease, 0.0, limited), key, cost)
                    raise
            if fault.fail:
                injected = injector.make_exception(fault)
                leave((ticket, lease, now(), limited), injected)
                raise injected
        return ticket, lease, now(), limited

    def leave(token: _Token, exc: BaseException | None) -> None:
        ticket, lease, t0, _ = token
        try:
            if lease is not None:
                lease.__exit__(type(exc) if exc is not None else None, exc, None)
        finally:  # interrupted while the pool resets the member: the call still happened
            t = now()
            if end is not None:
                end(ticket, exc)
            if adaptive_record is not None:
                ok = True if exc is None else _adaptive_ok(breaker, exc)
                if ok is not None:
                    adaptive_record(ok=ok, latency=t - t0)
            record(t - t0, exc, now=t)

    def abandon(token: _Token, key: Any, cost: float) -> None:
        ticket, lease, _, limited = token
        try:
            if lease is not None:
                lease.__exit__(None, None, None)
        finally:
            undo(ticket, limited, key, cost)

    return enter, leave, abandon


class Protection:
    """One protected operation: ``with infra.protect(...) as guard:`` (or ``async with``).

    ``guard.connection`` is the pooled member when the service has a pool, else ``None``;
    ``guard.decision`` is the rate limiter's admitting :class:`~buttress.Decision` (for
    ``buttress.http.rate_limit_headers``) when the service has a limiter, else ``None``.
    """

    __slots__ = (
        "_alease",
        "_args",
        "_infra",
        "_route",
        "_t0",
        "_ticket",
        "_token",
        "connection",
        "decision",
    )

    def __init__(
        self, infra: Infrastructure, route: _Route, key: Any, critical: bool, cost: float
    ) -> None:
        self._infra = infra
        self._route = route
        self._args = (key, critical, cost)
        self._token: _Token | None = None
        self._ticket: tuple[int, int, float] | None = None
        self._alease: Any = None
        self._t0 = 0.0
        self.connection: Any = None
        self.decision: Decision | None = None

    def __enter__(self) -> Protection:
        token = self._token = self._route.steps[0](*self._args)
        lease = token[1]
        if lease is not None:
            self.connection = lease.connection
        self.decision = token[3]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        token, self._token = self._token, None
        if token is not None:
            self._route.steps[1](token, exc)
        return False

    # -- asyncio: the same steps, with the waits awaited ------------------------------------

    async def __aenter__(self) -> Protection:
        infra, route = self._infra, self._route
        key, critical, cost = self._args
        mm = infra.memory
        if mm is not None and mm.should_shed(critical):
            try:
                mm.raise_if_shedding(critical)
            except RejectedError as exc:
                route.metrics.record_rejection(exc)
                raise
        limiter = route.limiter
        limited = False
        if limiter is not None:
            d = await limiter.try_acquire_async(key, cost)
            if not d.allowed:
                err = _refused(d)
                route.metrics.record_rejection(err)
                raise err
            limited = True
            self.decision = d
        breaker = route.breaker
        if breaker is not None:
            try:
                self._ticket = await breaker.begin_async(critical)
            except BaseException as exc:  # refused, or cancelled: the charge goes back
                await self._undo(limited, exc if isinstance(exc, RejectedError) else None)
                raise
        if route.apool is not None:
            lease = route.apool.connection()
            try:
                self.connection = await lease.__aenter__()
            except BaseException as exc:
                down = _connect_error(exc)
                if down is not None and self._ticket is not None and breaker is not None:
                    breaker.abort(self._ticket, down)  # the pool cannot connect: a failure
                    self._ticket = None
                await self._undo(limited, exc if isinstance(exc, RejectedError) else None)
                raise
            self._alease = lease
        elif route.pool is not None:
            await self._undo(limited, None)
            raise RuntimeError(
                f"service {route.name!r} uses the thread pool {route.pool_name!r}: use call() or "
                "`with`, or set `async = true` on the pool for asyncio callers"
            )
        elif route.pool_name is not None:  # an async pool, not made yet: astart() makes them
            await self._undo(limited, None)
            raise RuntimeError(
                f"service {route.name!r} uses the async pool {route.pool_name!r}, which is not "
                "open: enter the infrastructure with `async with Infrastructure(...)` (or "
                "`await infra.astart()`) before call_async() / `async with infra.protect(...)`"
            )
        chaos = infra.chaos
        if chaos._enabled and (inj := chaos._injectors.get(route.injector_name)) is not None:
            fault = inj.decide()
            if fault.delay:
                try:
                    await infra.clock.asleep(fault.delay)
                except BaseException:  # cancelled before the operation ran: give all back
                    await self._abandon(limited)
                    raise
            if fault.fail:
                injected = inj.make_exception(fault)
                self._t0 = infra._now()
                await self.__aexit__(type(injected), injected, None)
                raise injected
        self._t0 = infra._now()
        return self

    async def _abandon(self, limited: bool) -> None:
        """Give back the lease, the breaker permit and the charge of a call that never ran."""
        lease, self._alease = self._alease, None
        self.connection = None
        try:
            if lease is not None:
                await lease.__aexit__(None, None, None)
        finally:
            await self._undo(limited, None)

    async def _undo(self, limited: bool, exc: RejectedError | None) -> None:
        route = self._route
        if self._ticket is not None and route.breaker is not None:
            route.breaker.release(self._ticket)
            self._ticket = None
        if limited and route.limiter is not None:
            key, _, cost = self._args
            await route.limiter.refund_async(key, cost)
        if exc is not None:
            route.metrics.record_rejection(exc)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        route = self._route
        lease, self._alease = self._alease, None
        try:
            if lease is not None:
                await lease.__aexit__(exc_type, exc, tb)
        finally:  # cancelled while the pool resets the member: the call still happened
            t = self._infra._now()
            duration = t - self._t0
            ticket, self._ticket = self._ticket, None
            if ticket is not None and route.breaker is not None:
                route.breaker.end(ticket, exc)
            if route.adaptive and route.limiter is not None:
                ok = True if exc is None else _adaptive_ok(route.breaker, exc)
                if ok is not None:
                    route.limiter.record(ok=ok, latency=duration)
            route.metrics.record(duration, exc, now=t)
        return False


def _adaptive_ok(breaker: CircuitBreaker | None, exc: BaseException) -> bool | None:
    """How an adaptive limit takes a call that raised ``exc``: as the service's breaker
    classifies it (``ignore``d and cancelled calls are neither; an error the breaker does not
    record is no sign of overload), else as an error unless cancelled. ``None``: not at all."""
    if breaker is not None:
        return classify(breaker.config, exc).health
    return None if isinstance(exc, CANCELLATION) else False


# Results whose work happens after the call returns, when the protection has ended: a call
# that returns one is refused (everything taken is given back, nothing is counted).
_GENERATORS = frozenset({types.GeneratorType, types.AsyncGeneratorType})
_LAZY = _GENERATORS | {types.CoroutineType}


def _connect_error(exc: BaseException) -> BaseException | None:
    """Why a checkout failed when the pool cannot connect (not merely busy): the breaker counts
    that error as a failure of the service's dependency. ``None`` for any other failure."""
    return exc.connect_error if isinstance(exc, PoolTimeoutError) else None


# What call_async's function returned, before it has returned anything.
_UNCALLED: Any = object()


def _not_awaitable(aw: Any, exc: BaseException) -> bool:
    """Whether ``exc`` is Python refusing ``await aw``: the function returned something that
    is not awaitable. (Checked only once the await failed, so a protected async call pays
    nothing for it.)"""
    return isinstance(exc, TypeError) and not inspect.isawaitable(aw)  # @types.coroutine is


async def _misused(guard: Protection, service: str, fn: Any, aw: Any) -> TypeError:
    """End the protection of a ``call_async`` whose function returned ``aw``, which cannot be
    awaited, and say why."""
    name = getattr(fn, "__qualname__", None) or repr(fn)
    if aw.__class__ in _GENERATORS:  # its body has not run: give everything back
        await guard._abandon(guard._route.limiter is not None)  # it charged, if it has a limiter
        return _lazy_result(service, fn, aw)
    # A plain function: it ran and returned, with what the layers gave it; count it so.
    await guard.__aexit__(None, None, None)
    route = guard._route
    if route.pool is None and route.pool_name is not None:  # an async pool's connection
        fix = "make it `async def` (its connection comes from an async pool)"
    else:
        fix = (
            "make it `async def`, or protect a plain function with call() (or `with "
            f"infra.protect({service!r})`)"
        )
    return TypeError(
        f"{name} returned {type(aw).__name__!r}, which call_async() cannot await: it is not a "
        f"coroutine function; {fix}. (It ran, and was counted as a call.)"
    )


def _lazy_result(service: str, fn: Any, result: Any) -> TypeError:
    """The refusal of a call that returned a generator or a coroutine (``result`` is closed)."""
    name = getattr(fn, "__qualname__", None) or repr(fn)
    if isinstance(result, types.CoroutineType):
        result.close()  # never awaited: no warning for it
        return TypeError(
            f"{name} returned a coroutine to call(): protect it with call_async() instead"
        )
    if isinstance(result, types.GeneratorType):
        result.close()
    kind = "an async generator" if isinstance(result, types.AsyncGeneratorType) else "a generator"
    return TypeError(
        f"{name} returned {kind}: its body runs as it is iterated, after the protected call has "
        "returned, so no breaker, pool or limit would guard it. Return the items instead (e.g. "
        f"a list), or iterate inside `with infra.protect({service!r}) as guard:`"
    )


def _refused(d: Any) -> RateLimitExceeded:
    return RateLimitExceeded(
        d.scope, key=d.key, limit=d.limit, retry_after=d.retry_after, decision=d
    )


def _keyed(route: _Route, rate_key: Any, context: Mapping[str, Any] | None) -> Any:
    """The limiter's key for ``rate_key`` (not None) and ``context``; beside a context, a
    ``rate_key`` that no scope of the limiter reads is an error, not silently ignored."""
    limiter = route.limiter
    if context is not None and limiter is not None and not route.reads_key:
        ids = sorted({sc.by for sc in limiter.scopes if sc.by is not None})
        reads = f"reads {', '.join(map(repr, ids))} from the context" if ids else "takes no id"
        raise ConfigError(
            "rate_key",
            f"service {route.name!r}: no scope of limiter {limiter.name!r} reads rate_key (it "
            f'{reads}); beside a context, rate_key fills only a scope with by = "key". Drop '
            'rate_key, or give the limiter such a scope (e.g. {name = "per_key", limit = ..., '
            'by = "key"}) to limit per key as well',
        )
    return _rate_key(rate_key, context)


def _rate_key(rate_key: Any, context: Mapping[str, Any] | None) -> Any:
    if isinstance(rate_key, tuple):
        rate_key = ":".join(str(p) for p in rate_key)
    if context is None:
        return rate_key
    if rate_key is None:
        return context
    return {**context, "key": rate_key}


def _spec(name: str, value: ResourceSpec | Callable[[], Any]) -> ResourceSpec:
    if isinstance(value, ResourceSpec):
        return value
    if callable(value):
        return ResourceSpec(create=value)
    raise ConfigError(f"pools.{name}", f"must be a ResourceSpec or a callable, got {value!r}")


def _check_sql(sql: str, conn: Any) -> None:
    execute = getattr(conn, "execute", None)
    if callable(execute):
        execute(sql)
        return
    cur = conn.cursor()
    try:
        cur.execute(sql)
        cur.fetchall()
    finally:
        cur.close()


async def _acheck_sql(sql: str, conn: Any) -> None:
    """:func:`_check_sql` for an async pool: what an asyncio driver returns is awaited
    (psycopg's ``AsyncConnection``, asyncpg, aiosqlite); a sync connection works too."""
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


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value
