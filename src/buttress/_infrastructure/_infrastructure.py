"""``Infrastructure``: every component of one namespace, ``protect()``, and ``health()``.

>>> with Infrastructure("app", {"circuit_breakers": {"payments": {}}}) as infra:  # doctest: +SKIP
...     infra.call("payments", charge, order, context={"user_id": "u1", "org_id": "o1"})

The facade: it builds the components (``_build.py``), owns their lifecycle, and hands each
protected call to the pipeline (``_protect_async.py`` and its generated twin ``_protect.py``,
where the order of the layers is decided).

One scheduler per infrastructure runs the background work: memory sampling, pool
housekeeping and health checks, breaker health probes, limiter key sweeps. ``close()`` stops
it all.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import inspect
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, Protocol, Self, TypeVar

from .. import events
from .._breaker import BreakerConfig, CircuitBreaker
from .._bulkhead import Bulkhead
from .._clock import Clock, SystemClock
from .._concurrency import is_async_callable
from .._errors import CallTimeoutError, ConfigError, InfrastructureClosedError
from .._fork import fork_safe_lock
from .._health import HealthReport, build_report
from .._instrument import METRICS, ServiceMetrics, instrument_callable
from .._memory import MemorySample
from .._overload._gate import OverloadGate
from .._policies import (
    DEADLINE,
    RetryPolicy,
    canceller,
    checked_fallback,
    checked_retry,
    checked_timeout,
    timed_out,
    window,
)
from .._pool import AsyncConnectionPool, ConnectionPool, PoolSnapshot
from .._pressure import LevelChange
from .._priority import NORMAL, PriorityName, priority_of
from .._redact import redacted_logger
from .._retry._core import ServiceCalls
from .._scheduler import AsyncScheduler, Handle, Scheduler
from ..ratelimit._decision import Decision
from ..ratelimit._limiter import RateLimiter
from ..ratelimit._memory import MemoryBackend
from ..ratelimit._scope import check_name
from ._build import (
    DYNAMIC,
    Builder,
    ResourceSpec,
    Route,
    ServiceLayers,
    build_route,
    choices,
    known_services,
)
from ._follow import EV_REFUSED, FleetFollower
from ._policed import policed
from ._policed_async import policed_async
from ._protect import ProtectionSteps, compile_steps, run
from ._protect_async import AsyncProtectionSteps, compile_steps_async, run_async
from ._registry import register, unregister

if TYPE_CHECKING:
    from .._config import Config

P = ParamSpec("P")
T = TypeVar("T")

# What a call's `limiter=` may be: a configured limiter's name, a RateLimiter, or False (none).
LimiterChoice = str | RateLimiter | bool

_MAX_VARIANTS = 1024  # routes kept for calls' own limiters

EV_OVERLOAD = ("buttress", "overload", "level_change")
EV_RELOADED = ("buttress", "infrastructure", "reloaded")
_log = redacted_logger("buttress.infrastructure")


class PoolView(Protocol):
    """A pool the infrastructure reports but does not own (:meth:`Infrastructure.watch_pool`)."""

    def snapshot(self) -> PoolSnapshot: ...


class Infrastructure:
    """Breakers, limiters, pools, memory manager and chaos for one namespace.

    ``config`` is a :class:`~buttress.Config`, a dict, a TOML path or ``None``;
    ``BUTTRESS_...`` environment variables override a dict or a file (pass ``env={}`` to ignore
    them), never a ``Config`` (see :func:`~buttress.load_config`).
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
        # Configuration is the one user of pydantic: imported here, `import buttress` stays light.
        from .._config import load_config

        check_name("namespace", namespace)  # it is in every storage key and metric
        cfg = load_config(config, env=env)
        self._env = env  # a reload reads the environment as the constructor did
        self.reloads: list[Reloaded] = []  # the last few, newest last (health shows them)
        # What operators did from the dashboard, newest last (health shows them): dicts of
        # at, action, target, fleet, reason, by.
        self.operator_actions: collections.deque[dict[str, Any]] = collections.deque(maxlen=20)
        self.namespace = namespace
        self.config = cfg
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._now = self.clock.monotonic
        self._background = background
        self._lock = fork_safe_lock()
        self._reloading = fork_safe_lock()  # one reload at a time (a call, the file, the fleet)
        self._follower: FleetFollower | None = None  # with a fleet: _follow_fleet()
        self._closed = False
        self._started = False
        self._jobs: list[Handle] = []
        build = self._build = Builder(
            namespace,
            cfg,
            clock=self.clock,
            seed=seed,
            pools=pools,
            health_checks=health_checks,
        )
        self.scheduler = Scheduler(
            clock=self.clock,
            rng=build.rng("scheduler"),
            name=f"buttress-{namespace}",
            background=background,
        )
        self.async_scheduler: AsyncScheduler | None = None
        self.chaos = build.chaos()
        self.breakers: dict[str, CircuitBreaker] = {
            name: build.breaker(name, name, self.chaos)
            for name in cfg.circuit_breakers
            if name != "default"  # a template: made per service that has no breaker of its own
        }
        self.limiters: dict[str, RateLimiter] = {
            name: build.limiter(name, s) for name, s in cfg.rate_limiting.limiters.items()
        }
        self.pools: dict[str, ConnectionPool] = {}
        self.async_pools: dict[str, AsyncConnectionPool] = {}  # made by astart()
        self.watched_pools: dict[str, PoolView] = {}  # pools it reports but does not own
        for name, s in cfg.connection_pools.items():
            if not s.is_async:
                self.pools[name] = build.pool(ConnectionPool, name, s, self.scheduler)
            else:
                build.resource(name, s)  # fail now, not at astart(), on a bad factory
        self.memory = build.memory(memory_probe)
        if self.memory is not None:
            self.memory.on_pressure("warning", self._trim_pools)
        self.cpu, self.loop_lag = build.overload()
        if self.cpu is not None:
            self.cpu.on_change(_overload_changed("cpu"))
        if self.loop_lag is not None:
            self.loop_lag.on_change(_overload_changed("event_loop"))
        self._gate = (
            OverloadGate(self.memory, self.cpu, self.loop_lag)
            if self.memory is not None or self.cpu is not None or self.loop_lag is not None
            else None
        )
        self.bulkheads: dict[str, Bulkhead] = {}  # each service's, as its route is made
        self.services: dict[str, ServiceMetrics] = {}
        self._routes: dict[str, Route] = {}
        # A service's route with another limiter, for calls' `limiter=` (at most _MAX_VARIANTS).
        self._variants: dict[tuple[str, int], Route] = {}
        for service, table in cfg.services.items():  # resolve now: a bad reference is an error
            if service == DYNAMIC:
                choices(service, service, table, cfg)  # a template: no route of its own
            else:
                self._route(service)
        self._schedule_jobs()
        schedule = cfg.chaos_schedule()
        if schedule is not None and self.chaos.enabled:  # scheduled chaos runs on the clock
            self.chaos.schedule(**schedule)
        register(self)  # bt.health(namespace) finds it until close()
        self._follow_fleet()  # last: its first look (and a reload) may run at once

    # -- building ------------------------------------------------------------------------------

    def _trim_pools(self, sample: MemorySample) -> None:
        """Memory runs short: close idle pool members down to each pool's ``min_size``."""
        for pool in self.pools.values():
            pool.trim()
        scheduler = self.async_scheduler
        if scheduler is not None:  # an asyncio pool is only touched from its own loop
            for apool in self.async_pools.values():
                scheduler.call_later(0.0, apool.trim)

    def _schedule_jobs(self) -> None:
        # Each may block (a probe reading files, a user's health check, a sweep of a backend):
        # each runs off the scheduler's thread, so none holds up the others or the pools.
        every = functools.partial(self.scheduler.call_every, blocking=True)
        if self.memory is not None:
            self._jobs.append(every(self.memory.check_interval, self.memory.maybe_sample))
        if self.cpu is not None:  # sampled off the calls' path (a call samples only if late)
            self._jobs.append(every(self.cpu.config.check_interval, self.cpu.maybe_sample))
        for breaker in self.breakers.values():
            if breaker.has_health_check and not breaker.health_check_is_async:
                self._jobs.append(every(breaker.config.health_check_interval, breaker.check_health))
        sweep = self.config.rate_limiting.cleanup_interval
        for limiter in self.limiters.values():
            self._jobs.append(every(sweep, limiter.maintain))

    def _follow_fleet(self) -> None:
        """With a fleet, follow the configuration published for it (``_follow.py``): a job of
        the scheduler every sync interval, the first at once, each off the scheduler's thread
        (a reload builds components)."""
        fleet = self._build.made_fleet
        with self._lock:
            if fleet is None or self._follower is not None:
                return
            follower = self._follower = FleetFollower(
                self.namespace, fleet, lambda config: self._reload(config, "fleet")
            )
        every = self.scheduler.call_every
        self._jobs.append(every(fleet.sync_interval, follower.sync, delay=0.0, blocking=True))

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._closed

    def _route(self, service: str) -> Route:
        route = self._routes.get(service)
        if route is not None:
            return route
        if self._closed:  # close() empties the routes, so every call comes here
            raise InfrastructureClosedError(
                f"infrastructure {self.namespace!r} is closed: it protects no more calls"
            )
        if not isinstance(service, str) or not service:
            # [services.default] admits every name: None would be protected by nothing chosen.
            raise ConfigError("service", f"must be a service name (a string), got {service!r}")
        with self._lock:
            route = self._routes.get(service)
            if route is None:
                route = self._routes[service] = self._build_route(service)
        return route

    def _build_route(self, service: str) -> Route:
        route = self._make_route(service, self.config, self._build, self.breakers, self.limiters)
        self.services[service] = route.metrics  # only a service that resolved is reported
        self._compile(route)
        return route

    def _make_route(
        self,
        service: str,
        config: Config,
        build: Builder,
        breakers: dict[str, CircuitBreaker],
        limiters: Mapping[str, RateLimiter],
    ) -> Route:
        metrics = self.services.get(service)  # instrument() may have made it
        if metrics is None:
            metrics = ServiceMetrics(service, since=self._now())
        return build_route(
            service,
            config,
            breakers=breakers,
            make_default_breaker=lambda name: build.breaker(name, "default", self.chaos),
            limiters=limiters,
            pools=self.pools,
            async_pools=self.async_pools,
            metrics=metrics,
            namespace=self.namespace,
            clock=self.clock,
        )

    # -- reconfiguring -------------------------------------------------------------------------

    def watch_config(self, path: str | os.PathLike[str], *, interval: float = 1.0) -> Handle:
        """Reload from ``path`` whenever the file changes (its modification time or size, looked
        at every ``interval`` seconds by the scheduler, off its thread). A change that does not
        load or apply is logged as an ERROR, emitted as ``infrastructure.reload_refused`` and
        changes nothing; the file is looked at again at its next change. While a configuration
        is published through the fleet (``buttress config publish``), it wins: a change of the
        file is logged and not applied. Returns the job's handle: ``handle.cancel()`` stops
        watching (``close()`` does too)."""
        from .._validate import positive

        interval = positive("interval", interval)
        target = Path(path)
        if not target.is_file():
            raise ConfigError("path", f"{str(target)!r} is not a file")
        seen = _stamp(target)

        def look() -> None:
            nonlocal seen
            stamp = _stamp(target)
            if stamp == seen or self._closed:
                return
            seen = stamp
            follower = self._follower
            if follower is not None and not follower.file_applies():
                _log.warning(
                    "buttress %s: %s changed but was not applied: a configuration published "
                    "through the fleet (generation %d) is in force until it is withdrawn",
                    self.namespace,
                    target,
                    follower.following.seen,
                )
                return
            try:
                done = self._reload(str(target), "file")
            except (ConfigError, OSError) as exc:
                _log.error(
                    "buttress %s: %s changed but was not applied (nothing changed): %s",
                    self.namespace,
                    target,
                    exc,
                )
                if events.enabled(EV_REFUSED):
                    events.emit(
                        EV_REFUSED,
                        {},
                        {
                            "namespace": self.namespace,
                            "source": "file",
                            "setting": exc.path if isinstance(exc, ConfigError) else str(target),
                            "reason": str(exc),
                        },
                    )
                return
            _log.info("buttress %s: %s reloaded: %s", self.namespace, target, done.summary())

        handle = self.scheduler.call_every(interval, look, blocking=True)
        self._jobs.append(handle)
        return handle

    def reload(self, config: Config | Mapping[str, Any] | str) -> Reloaded:
        """Apply a new configuration to the running infrastructure, all or nothing.

        The whole new configuration is validated and every component it changes is made
        before anything is swapped in; any error (``ConfigError``) leaves everything as it was.
        What survives keeps its state: a breaker whose settings changed keeps its state, its
        window's counts (unless its window's length or buckets changed) and its open time; a
        limiter whose scopes changed is made again over the same backend, so each id's
        remaining allowance carries over where its algorithm did not change; a bulkhead whose
        settings did not change keeps its calls in flight; services keep their metrics. Calls
        in flight finish under what they started with; the next call of each service is
        decided under the new configuration.

        Connection pools, the memory manager, the overload monitors and chaos are not
        reconfigured by a reload: a change to any of them is refused (restart to change them).
        Returns what changed (:class:`~buttress.Reloaded`), also shown in the health report
        and emitted as an event. One reload runs at a time: another waits for it.
        """
        return self._reload(config, "call")

    def _reload(self, config: Config | Mapping[str, Any] | str, source: str) -> Reloaded:
        """:meth:`reload`, saying where the configuration came from (``call``, ``file``,
        ``fleet``: in the :class:`Reloaded`, the event and the log line)."""
        with self._reloading:
            done = self._reload_locked(config, source)
        self._follow_fleet()  # it may have made the first fleet breaker
        return done

    def _reload_locked(self, config: Config | Mapping[str, Any] | str, source: str) -> Reloaded:
        from .._config import load_config

        if self._closed:
            raise InfrastructureClosedError(f"infrastructure {self.namespace!r} is closed")
        new = load_config(config, env=self._env)
        old = self.config
        for section in ("connection_pools", "memory_manager", "overload", "chaos", "fleet"):
            if getattr(new, section) != getattr(old, section):
                raise ConfigError(
                    section,
                    "cannot change by reload (the components it makes hold resources and "
                    "threads): restart to change it; nothing was changed",
                )
        build = Builder(
            self.namespace,
            new,
            clock=self.clock,
            seed=None,
            pools=self._build.pool_specs,
            health_checks=self._build.health_checks,
        )
        build.backends = self._build.backends  # the same stores: limiters keep their states
        build.unreachable = self._build.unreachable
        build.made_fleet = self._build.made_fleet
        changes: dict[str, list[str]] = {"added": [], "removed": [], "changed": []}

        # Breakers: made anew only when added; a changed one is reconfigured in place below.
        breakers: dict[str, CircuitBreaker] = {}
        reconfigured: list[tuple[CircuitBreaker, BreakerConfig]] = []
        template_changed = new.circuit_breakers.get("default") != old.circuit_breakers.get(
            "default"
        )
        for name, breaker in self.breakers.items():
            table = name if name in new.circuit_breakers else None
            if (
                table is None
                and name not in old.circuit_breakers
                and "default" in new.circuit_breakers
            ):
                table = "default"  # made from the template for a service
            if table is None:
                changes["removed"].append(f"circuit_breakers.{name}")
                continue
            breakers[name] = breaker
            was = old.circuit_breakers.get(table)
            if was is not None and new.circuit_breakers[table].fleet != was.fleet:
                raise ConfigError(
                    f"circuit_breakers.{table}.fleet",
                    "cannot change by reload (a breaker joins or leaves a fleet as it is made): "
                    "restart to change it; nothing was changed",
                )
            if new.circuit_breakers[table] != was or (table == "default" and template_changed):
                # Validates; only its config is used (the breaker kept is reconfigured).
                made = build.breaker(name, table, self.chaos, join_fleet=False)
                reconfigured.append((breaker, made.config))
                changes["changed"].append(f"circuit_breakers.{name}")
        for name in new.circuit_breakers:
            if name != "default" and name not in breakers:
                breakers[name] = build.breaker(name, name, self.chaos)
                changes["added"].append(f"circuit_breakers.{name}")

        # Limiters: a changed one is made again over the same backend.
        limiters: dict[str, RateLimiter] = {}
        shared_changed = new.rate_limiting.model_dump(exclude={"limiters"}) != (
            old.rate_limiting.model_dump(exclude={"limiters"})
        )
        for name, s in new.rate_limiting.limiters.items():
            before = old.rate_limiting.limiters.get(name)
            if before is None:
                limiters[name] = build.limiter(name, s)
                changes["added"].append(f"rate_limiting.limiters.{name}")
            elif s != before or shared_changed:
                limiters[name] = build.limiter(name, s)
                changes["changed"].append(f"rate_limiting.limiters.{name}")
            else:
                limiters[name] = self.limiters[name]
        changes["removed"] += [
            f"rate_limiting.limiters.{name}" for name in self.limiters if name not in limiters
        ]

        # Routes: every service's, made now (an unknown reference fails here, before the swap).
        services = set(self._routes) | {n for n in new.services if n != DYNAMIC}
        routes: dict[str, Route] = {}
        for service in sorted(services):
            before_route = self._routes.get(service)
            if service not in known_services(new) and DYNAMIC not in new.services:
                changes["removed"].append(f"services.{service}")  # its calls now fail as unknown
                continue
            route = self._make_route(service, new, build, breakers, limiters)
            kept = before_route.bulkhead if before_route is not None else None
            if (
                kept is not None
                and route.bulkhead is not None
                and _bulkhead_table(new, service) == _bulkhead_table(old, service)
            ):
                route.bulkhead = kept  # unchanged: its calls in flight stay counted
            routes[service] = route
            if before_route is None and service in new.services:
                changes["added"].append(f"services.{service}")
            elif new.services.get(service) != old.services.get(service):
                changes["changed"].append(f"services.{service}")

        # Everything is made: swap it in (nothing below raises).
        for breaker, made_config in reconfigured:
            breaker.reconfigure(made_config)
        with self._lock:
            self.config = new
            self._build = build
            self.breakers = breakers
            self.limiters = limiters
            self.bulkheads = {}
            for service, route in routes.items():
                self.services[service] = route.metrics
                self._compile(route)
            self._routes = routes
            self._variants = {}
        for name in changes["added"]:
            if name.startswith("rate_limiting.limiters."):
                limiter = limiters[name.rsplit(".", 1)[1]]
                every = functools.partial(self.scheduler.call_every, blocking=True)
                self._jobs.append(every(new.rate_limiting.cleanup_interval, limiter.maintain))
        done = Reloaded(
            at=self.clock.time(),
            added=tuple(changes["added"]),
            removed=tuple(changes["removed"]),
            changed=tuple(changes["changed"]),
            source=source,
        )
        self.reloads = [*self.reloads[-9:], done]
        _log.info(
            "buttress %s: configuration reloaded (%s): %s", self.namespace, source, done.summary()
        )
        if events.enabled(EV_RELOADED):
            events.emit(
                EV_RELOADED,
                {
                    "added": len(done.added),
                    "removed": len(done.removed),
                    "changed": len(done.changed),
                },
                {"namespace": self.namespace, "summary": done.summary(), "source": source},
            )
        return done

    def _compile(self, route: Route) -> None:
        """Bind the route's layers into its protect steps, for threads and for asyncio."""
        if route.bulkhead is not None:
            self.bulkheads[route.name] = route.bulkhead
        route.steps = compile_steps(route, self._gate, self.chaos, self.clock)
        route.async_steps = compile_steps_async(route, self._gate, self.chaos, self.clock)

    def _limited(self, route: Route, limiter: LimiterChoice) -> Route:
        """``route`` with the limiter a call chose (``limiter=``): a configured limiter's name,
        a :class:`~buttress.RateLimiter`, or ``False`` for none; compiled once and kept."""
        chosen: RateLimiter | None
        if limiter is True:  # the service's own
            return route
        if limiter is False:
            chosen = None
        elif isinstance(limiter, str):
            chosen = self.limiters.get(limiter)
            if chosen is None:
                known = ", ".join(map(repr, self.limiters)) or "none is configured"
                raise ConfigError("limiter", f"names no limiter {limiter!r} (known: {known})")
        elif isinstance(limiter, RateLimiter):
            chosen = limiter
        else:
            raise TypeError(
                f"limiter must be a limiter's name, a RateLimiter or False, got {limiter!r}"
            )
        if chosen is route.limiter:
            return route
        key = (route.name, id(chosen))
        variant = self._variants.get(key)
        if variant is not None and variant.limiter is chosen:
            return variant
        adaptive = chosen is not None and any(sc.adaptive for sc in chosen.scopes)
        if adaptive and chosen is not None and route.breaker is not None:
            chosen.attach_breaker(route.breaker)
        variant = dataclasses.replace(
            route,
            limiter=chosen,
            adaptive=adaptive,
            reads_key=chosen is not None and any(sc.by == "key" for sc in chosen.scopes),
            shared_limit=chosen is not None and not isinstance(chosen.backend, MemoryBackend),
            steps=None,
            async_steps=None,
        )
        self._compile(variant)
        with self._lock:
            if len(self._variants) >= _MAX_VARIANTS:  # a new RateLimiter per call: drop the oldest
                del self._variants[next(iter(self._variants))]
            self._variants[key] = variant
        return variant

    def layers(self, service: str) -> ServiceLayers:
        """What guards ``service``: its breaker, rate limiter and pool, resolved as a call
        would resolve them (an unknown service is a :class:`~buttress.ConfigError`, unless
        ``services.default`` admits it)."""
        return self._route(service).layers()

    def watch_pool(self, name: str, pool: PoolView) -> None:
        """Report a pool that buttress does not own (a driver's pool wrapped by
        ``buttress.integrations``, anything with ``snapshot() -> PoolSnapshot``) in
        :meth:`health` and the exporters, beside the pools it owns, under ``name``. The
        infrastructure neither opens nor closes it."""
        check_name("name", name)
        snapshot = getattr(pool, "snapshot", None)
        if not callable(snapshot):
            raise TypeError(f"watch_pool: {pool!r} has no snapshot() method")
        with self._lock:
            if name in self.config.connection_pools:  # async ones too, before astart()
                raise ConfigError("name", f"{name!r} names a pool of the infrastructure's own")
            self.watched_pools[name] = pool

    def pool_snapshots(self) -> dict[str, PoolSnapshot]:
        """Every pool's snapshot by name: its own, thread and asyncio, and the watched ones."""
        pools: dict[str, PoolSnapshot] = {n: p.snapshot() for n, p in tuple(self.pools.items())}
        pools.update({n: p.snapshot() for n, p in tuple(self.async_pools.items())})
        pools.update({n: p.snapshot() for n, p in tuple(self.watched_pools.items())})
        return pools

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
        if self.async_scheduler is not None:
            return self
        scheduler = self.async_scheduler = AsyncScheduler(
            clock=self.clock,
            name=f"buttress-{self.namespace}-async",
            background=self._background,
        )
        for name, s in self.config.connection_pools.items():
            if s.is_async:
                pool = self._build.pool(AsyncConnectionPool, name, s, scheduler)
                self.async_pools[name] = pool
                await pool.open(wait=False)
        with self._lock:
            for route in (*self._routes.values(), *self._variants.values()):
                if route.pool_name in self.async_pools:
                    route.apool = self.async_pools[route.pool_name]
                    self._compile(route)
        for breaker in self.breakers.values():
            if breaker.has_health_check and breaker.health_check_is_async:
                interval = breaker.config.health_check_interval
                job = scheduler.call_every(interval, breaker.check_health_async, blocking=True)
                self._jobs.append(job)
        return self

    def close(self) -> None:
        """Stop the scheduler, close every pool and backend. Idempotent."""
        if self._closed:
            return
        self._closed = True
        unregister(self)
        with self._lock:
            self._routes.clear()
            self._variants.clear()
        for job in self._jobs:
            job.cancel()
        for pool in self.pools.values():
            pool.close()
        if self.loop_lag is not None:
            self.loop_lag.close()  # each loop's pending tick is cancelled
        if self._build.made_fleet is not None:
            self._build.made_fleet.close()  # its breakers go on as local ones
        self.scheduler.close()
        for backend in self._build.backends.values():
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
            for backend in self._build.backends.values():
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
        priority: PriorityName | None = None,
        critical: bool | None = None,
        cost: float = 1,
        limiter: LimiterChoice | None = None,
        timeout: float | None = None,
    ) -> Protection:
        """A context manager (``with`` or ``async with``) guarding one operation.

        ``context`` fills the limiter's scopes (``{"user_id": "u1", "org_id": "o1"}``);
        ``rate_key`` is the id for a limiter whose scopes take one kind of id (or the ``key``
        entry beside a context; a limiter of shared scopes only takes none). ``priority``
        (``"critical"``, ``"normal"``, ``"sheddable"``; default: the service's) says which
        calls overload and a degraded breaker shed first: sheddable ones, then normal ones,
        never critical ones; ``critical=True`` is shorthand for ``priority="critical"``.
        ``guard.connection`` is the pooled member when the service has a pool. ``limiter``
        limits this call by another limiter than the service's (the guide's
        ``rate_config``): a configured limiter's name, a :class:`~buttress.RateLimiter`, or
        ``False`` for no rate limit. ``timeout`` (also read from ``[services.NAME]``):
        seconds the block may take, as for :meth:`call` (``async with`` cancels the block;
        ``with`` sets the deadline ``bt.remaining()`` reads and raises when the block ends
        late). A block cannot be run again: for retries and fallbacks use :meth:`call` or
        :meth:`protected`, or ``for attempt in retry:`` around it.
        """
        route = self._route(service)
        if limiter is not None:
            route = self._limited(route, limiter)
        key = context if rate_key is None else _keyed(route, rate_key, context)
        rank = priority_of(priority, critical, route.priority)
        seconds = route.timeout if timeout is None else checked_timeout(timeout)
        if seconds is None:
            return Protection(route, key, rank, cost)
        return TimedProtection(route, key, rank, cost, seconds, self.clock)

    def call(
        self,
        service: str,
        fn: Callable[..., T],
        /,
        *args: Any,
        rate_key: Any = None,
        context: Mapping[str, Any] | None = None,
        priority: PriorityName | None = None,
        critical: bool | None = None,
        cost: float = 1,
        limiter: LimiterChoice | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        fallback: Callable[[BaseException], Any] | None = None,
        **kwargs: Any,
    ) -> T:
        """Run ``fn(*args, **kwargs)`` under :meth:`protect` (``limiter`` as there).

        When the service has a pool, the connection is passed first: ``fn(conn, *args)``.
        ``timeout``, ``retry`` and ``fallback`` (each also read from ``[services.NAME]``) are
        the call's policies: docs/timeouts-and-fallbacks.md.
        """
        route = self._routes.get(service) or self._route(service)
        if limiter is not None:
            route = self._limited(route, limiter)
        if rate_key is not None:
            context = _keyed(route, rate_key, context)
        rank = priority_of(priority, critical, route.priority)
        if timeout is None and retry is None and fallback is None and not route.policed:
            return run(route, fn, args, kwargs, context, rank, cost)
        return policed(  # type: ignore[no-any-return]
            self, route, fn, args, kwargs, context, rank, cost, timeout, retry, fallback
        )

    def _retried(self, route: Route) -> ServiceCalls:
        """What a :class:`~buttress.Retry` is given for ``route``'s calls: the service's name,
        breaker classification, clock and retry counters (made once per route)."""
        calls = route.retry_calls
        if calls is None:
            calls = route.retry_calls = ServiceCalls(
                route.name, _config_of(route), self.clock, route.metrics.record_retry
            )
        return calls

    async def call_async(
        self,
        service: str,
        fn: Callable[..., Awaitable[T]],
        /,
        *args: Any,
        rate_key: Any = None,
        context: Mapping[str, Any] | None = None,
        priority: PriorityName | None = None,
        critical: bool | None = None,
        cost: float = 1,
        limiter: LimiterChoice | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        fallback: Callable[[BaseException], Any] | None = None,
        **kwargs: Any,
    ) -> T:
        """The async twin of :meth:`call` (awaits ``fn``; an async pool's connection first;
        a fallback may be a coroutine function)."""
        route = self._routes.get(service) or self._route(service)
        if limiter is not None:
            route = self._limited(route, limiter)
        if rate_key is not None:
            context = _keyed(route, rate_key, context)
        rank = priority_of(priority, critical, route.priority)
        if timeout is None and retry is None and fallback is None and not route.policed:
            return await run_async(route, fn, args, kwargs, context, rank, cost)
        return await policed_async(  # type: ignore[no-any-return]
            self, route, fn, args, kwargs, context, rank, cost, timeout, retry, fallback
        )

    def protected(
        self,
        service: str,
        *,
        rate_key: Any = None,
        context: Mapping[str, Any] | Callable[..., Mapping[str, Any]] | None = None,
        priority: PriorityName | None = None,
        critical: bool | None = None,
        cost: float = 1,
        limiter: LimiterChoice | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        fallback: Callable[[BaseException], Any] | None = None,
    ) -> Callable[[Callable[P, T]], Callable[P, T]]:
        """Decorate a sync or async function so every call runs under :meth:`protect`
        (``timeout``, ``retry`` and ``fallback`` as in :meth:`call`).

        ``rate_key`` and ``context`` may be callables taking the function's arguments. The
        function's own arguments pass through untouched, even ones named like these options.
        Generator functions are refused (``TypeError``): their body runs after the call returns.
        """

        if timeout is not None:
            checked_timeout(timeout)
        if fallback is not None:
            checked_fallback(fallback)
        if retry is not None:
            checked_retry(retry)
        with_policies = timeout is not None or retry is not None or fallback is not None
        # Checked here, not per call; None: each call takes its service's default.
        chosen = (
            None
            if priority is None and critical is None
            else priority_of(priority, critical, NORMAL)
        )

        def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
            if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
                raise _generator_function(service, fn)

            # The function's own arguments go through untouched (it may have a `cost` or a
            # `context` of its own): the options travel apart, to run / run_async.
            def key(route: Route, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
                rk = rate_key(*args, **kwargs) if callable(rate_key) else rate_key
                ctx = context(*args, **kwargs) if callable(context) else context
                return ctx if rk is None else _keyed(route, rk, ctx)

            if is_async_callable(fn):

                @functools.wraps(fn)
                async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                    route = self._route(service)
                    if limiter is not None:
                        route = self._limited(route, limiter)
                    k = key(route, args, kwargs)
                    if with_policies or route.policed:
                        return await policed_async(
                            self,
                            route,
                            fn,
                            args,
                            kwargs,
                            k,
                            route.priority if chosen is None else chosen,
                            cost,
                            timeout,
                            retry,
                            fallback,
                        )
                    return await run_async(
                        route,
                        fn,
                        args,
                        kwargs,
                        k,
                        route.priority if chosen is None else chosen,
                        cost,
                    )

                return async_wrapper

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                route = self._route(service)
                if limiter is not None:
                    route = self._limited(route, limiter)
                k = key(route, args, kwargs)
                if with_policies or route.policed:
                    return policed(
                        self,
                        route,
                        fn,
                        args,
                        kwargs,
                        k,
                        route.priority if chosen is None else chosen,
                        cost,
                        timeout,
                        retry,
                        fallback,
                    )
                return run(
                    route,
                    fn,
                    args,
                    kwargs,
                    k,
                    route.priority if chosen is None else chosen,
                    cost,
                )

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
                    m = self.services[service] = ServiceMetrics(service, metrics, since=self._now())
                    return m
        if metrics is not METRICS:
            m.want(metrics)
        return m

    # -- health ----------------------------------------------------------------------------------

    def health(self) -> HealthReport:
        """Every component's state and one overall status (docs/infrastructure.md, Health)."""
        mono = self._now()
        # Copies: another thread may add a default breaker or a service meanwhile.
        pools = self.pool_snapshots()
        services = tuple(self.services.items())
        return build_report(
            self.namespace,
            breakers={n: b.snapshot() for n, b in tuple(self.breakers.items())},
            limiters={n: lim.snapshot() for n, lim in tuple(self.limiters.items())},
            pools=pools,
            memory=self.memory.snapshot() if self.memory is not None else None,
            chaos=self.chaos.snapshot(),
            time=self.clock.time(),
            extra={
                "services": {n: m.snapshot(now=mono) for n, m in services},
                "reloads": [r.to_dict() for r in self.reloads],
                "operator_actions": list(self.operator_actions),
                **({"published": self._follower.status()} if self._follower is not None else {}),
            },
            bulkheads={n: b.snapshot() for n, b in tuple(self.bulkheads.items())},
            cpu=self.cpu.snapshot() if self.cpu is not None else None,
            loops=self.loop_lag.snapshots() if self.loop_lag is not None else (),
        )

    def __repr__(self) -> str:
        return (
            f"<Infrastructure {self.namespace!r}: {len(self.breakers)} breakers, "
            f"{len(self.limiters)} limiters, {len(self.pools) + len(self.async_pools)} pools>"
        )


def _overload_changed(kind: str) -> Callable[[LevelChange, Any], None]:
    """A listener for an overload monitor's level changes: an event and a log line each."""

    def changed(change: LevelChange, snapshot: Any) -> None:
        value = snapshot.utilisation if kind == "cpu" else snapshot.lag_p99
        rising = change.level.rank > change.previous.rank
        (_log.warning if rising else _log.info)(
            "overload %s %s: %s -> %s (%s)",
            kind,
            snapshot.name,
            change.previous.value,
            change.level.value,
            change.reason,
        )
        if events.enabled(EV_OVERLOAD):
            events.emit(
                EV_OVERLOAD,
                {"value": -1.0 if value is None else float(value)},
                {
                    "monitor": snapshot.name,
                    "kind": kind,
                    "from_level": change.previous.value,
                    "to_level": change.level.value,
                    "reason": change.reason,
                },
            )

    return changed


@dataclasses.dataclass(frozen=True, slots=True)
class Reloaded:
    """What :meth:`Infrastructure.reload` changed, by configuration path
    (``circuit_breakers.payments``, ``rate_limiting.limiters.search``, ``services.reports``);
    ``at`` is the wall-clock time it was applied; ``source`` where the configuration came
    from: ``call`` (``reload()``), ``file`` (``watch_config``) or ``fleet`` (published through
    the fleet: ``buttress config publish``)."""

    at: float
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]
    source: str = "call"

    def summary(self) -> str:
        parts = [
            f"{what} {', '.join(names)}"
            for what, names in (
                ("added", self.added),
                ("removed", self.removed),
                ("changed", self.changed),
            )
            if names
        ]
        return "; ".join(parts) or "nothing changed"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _bulkhead_table(config: Config, service: str) -> Any:
    s = config.services.get(service) or config.services.get(DYNAMIC)
    return None if s is None else s.bulkhead


def _stamp(path: Path) -> tuple[int, int] | None:
    """What tells a file's versions apart: its modification time and size (None: gone)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


class Protection(ProtectionSteps, AsyncProtectionSteps):
    """One protected operation: ``with infra.protect(...) as guard:`` (or ``async with``).

    ``guard.connection`` is the pooled member when the service has a pool, else ``None``;
    ``guard.decision`` is the rate limiter's admitting :class:`~buttress.Decision` (for
    ``buttress.http.rate_limit_headers``) when the service has a limiter, else ``None``.
    """

    __slots__ = ("_args", "_recording", "_route", "_token", "connection", "decision")

    def __init__(self, route: Route, key: Any, priority: int, cost: float) -> None:
        self._route = route
        self._args = (key, priority, cost)
        self._token = None
        self._recording = None
        self.connection: Any = None
        self.decision: Decision | None = None


class TimedProtection(Protection):
    """A :class:`Protection` with a timeout (``infra.protect(..., timeout=)``): a block that
    runs past it fails with :class:`~buttress.CallTimeoutError`, which the breaker records."""

    __slots__ = ("_alarm", "_clock", "_cm", "_deadline", "_mark", "_seconds")

    def __init__(
        self, route: Route, key: Any, priority: int, cost: float, seconds: float, clock: Clock
    ) -> None:
        super().__init__(route, key, priority, cost)
        self._seconds = seconds
        self._clock = clock
        self._deadline = 0.0
        self._mark: Any = None
        self._cm: Any = None
        self._alarm: Any = None

    def _arm(self) -> float:
        seconds = window(self._seconds)
        self._deadline = self._clock.monotonic() + seconds
        self._mark = DEADLINE.set((self._deadline, self._clock))
        return seconds

    def __enter__(self) -> Self:
        super().__enter__()
        self._seconds = self._arm()
        return self

    def __exit__(self, *exc_info: Any) -> Literal[False]:
        DEADLINE.reset(self._mark)
        if exc_info[1] is None and self._clock.monotonic() > self._deadline:
            # The block ran late: a failure of the dependency, whatever the block returned.
            late_error = timed_out(self._route.name, self._seconds)
            super().__exit__(CallTimeoutError, late_error, None)
            if self._route.late_result == "keep":
                return False
            raise late_error
        return super().__exit__(*exc_info)

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        try:
            self._seconds = self._arm()
            self._cm, self._alarm = canceller(
                self._seconds, self._clock, type(self._clock) is SystemClock
            )
            await self._cm.__aenter__()
        except BaseException as exc:
            await self._disarm()
            await super().__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def _disarm(self) -> None:
        if self._alarm is not None:
            self._alarm.cancel()
        DEADLINE.reset(self._mark)

    async def __aexit__(self, *exc_info: Any) -> Literal[False]:
        try:
            await self._cm.__aexit__(*exc_info)
        except TimeoutError:
            if not self._cm.expired():
                raise
            error = timed_out(self._route.name, self._seconds)
            await super().__aexit__(CallTimeoutError, error, None)
            raise error from None
        finally:
            await self._disarm()
        return await super().__aexit__(*exc_info)


def _config_of(route: Route) -> Any:
    return route.breaker.config if route.breaker is not None else None


def _keyed(route: Route, rate_key: Any, context: Mapping[str, Any] | None) -> Any:
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
    if isinstance(rate_key, tuple):
        rate_key = ":".join(str(p) for p in rate_key)
    if context is None:
        return rate_key
    return {**context, "key": rate_key}


def _generator_function(service: str, fn: Callable[..., Any]) -> TypeError:
    name = getattr(fn, "__qualname__", None) or repr(fn)
    kind = "an async generator" if inspect.isasyncgenfunction(fn) else "a generator"
    with_ = "async with" if inspect.isasyncgenfunction(fn) else "with"
    return TypeError(
        f"protected({service!r}) cannot guard {name}: it is {kind} function, whose "
        "body runs as it is iterated, after the protected call has returned. "
        "Decorate a function that returns the items (e.g. a list), or open "
        f"`{with_} infra.protect({service!r}) as guard:` inside the generator"
    )
