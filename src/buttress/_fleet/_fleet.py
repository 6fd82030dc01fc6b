"""``RedisFleet``: breakers of many processes sharing one view on Redis.

The shell around ``_core.py``: a driver thread (one per fleet, for all its breakers) that
every ``sync_interval`` takes each breaker's report from its machine (under the breaker's lock,
for microseconds), makes one script call per breaker (``_redis.py``), and tells the machine
what the fleet decided: opened (until when), recovered, probes granted, an operator's
override. The call path of a breaker never waits for Redis: it reads only its own machine.

When Redis cannot be reached, each breaker goes on as a local one (it probes on its own
again) and its snapshot says so; the next sync that succeeds rejoins. Socket operations are
bounded (``timeout``) and reconnect once at most, so a round never hangs.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import socket
import threading
import time
import uuid
import weakref
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from .._clock import Clock
from .._errors import BackendError, ConfigError
from .._fork import call_in_forked_child, fork_safe_lock
from .._redact import redacted_logger
from .._validate import is_finite
from ._core import ACTIONS, Override, Report, Thresholds, View, effective, thresholds_for
from ._publication import Following, Publication
from ._publication_store import PublicationStore
from ._redis import FleetStore

if TYPE_CHECKING:
    from .._breaker._breaker import CircuitBreaker
    from .._breaker._config import BreakerConfig
    from .._breaker._machine import BreakerMachine

__all__ = ["FleetLink", "FleetStatus", "RedisFleet"]

_log = redacted_logger("buttress.fleet")
_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class OverrideStatus:
    """The operators' fleet-wide override of a breaker, as Redis holds it."""

    generation: int
    effective: str | None  # force_open, disable, or None (automatic)
    action: str
    reason: str
    by: str
    at: float  # seconds since the epoch (Redis's clock)


@dataclass(frozen=True, slots=True)
class FleetStatus:
    """A breaker's fleet, as its snapshot shows it.

    ``connected`` is false while Redis cannot be reached (the breaker is local meanwhile,
    ``error`` says why); ``state`` is the fleet's: ``closed``, ``open`` or ``half_open``
    (``unknown`` before the first sync); ``live`` processes report, ``sick`` of them saw
    failures; ``calls`` and ``failures`` are summed over the fleet's window."""

    namespace: str
    process_id: str
    connected: bool
    state: str
    epoch: int
    live: int
    sick: int
    calls: int
    failures: int
    quorum: int
    syncs: int
    error: str | None
    override: OverrideStatus | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


NOT_SYNCED = "not synced yet"
"""A fleet breaker's ``error`` before its first sync: not connected, but not unreachable."""


class FleetLink:
    """One breaker's membership of a fleet: what it last saw and applied."""

    __slots__ = (
        "breaker",
        "epoch",
        "error",
        "override",
        "override_gen",
        "recovered",
        "syncs",
        "thresholds",
        "view",
    )

    def __init__(self, breaker: CircuitBreaker, thresholds: Thresholds) -> None:
        self.breaker: weakref.ref[CircuitBreaker] = weakref.ref(breaker)
        self.thresholds = thresholds
        self.epoch = -1  # none seen yet
        self.override_gen = -1  # none applied yet
        self.override: Override | None = None
        self.view: View | None = None
        self.error: str | None = NOT_SYNCED
        self.recovered = False  # a recovery not reported yet (a sync failed meanwhile)
        self.syncs = 0


class RedisFleet:
    """Breakers that share their view of a dependency across processes, on Redis.

    ``CircuitBreaker("payments", ..., fleet=RedisFleet("redis://..."))`` (see
    ``docs/fleet.md``):

    * ``url_or_client``: a ``redis://`` URL (the fleet makes a client whose socket operations
      are bounded), or your own ``redis.Redis`` with a ``socket_timeout``;
    * ``namespace``: the start of every key (no braces);
    * ``quorum``: how many processes must have seen failures for the fleet to open;
    * ``sync_interval``: seconds between two syncs of a breaker (one script call each);
    * ``clock``: for tests: with one given, no thread runs; call :meth:`sync` for a round;
    * ``process_id``: this process's name in the fleet (default: host, pid and a random
      part, made anew in a forked child).
    """

    def __init__(
        self,
        url_or_client: Any,
        *,
        namespace: str = "buttress",
        quorum: int = 2,
        sync_interval: float = 0.5,
        clock: Clock | None = None,
        process_id: str | None = None,
    ) -> None:
        if not isinstance(namespace, str) or not namespace or "{" in namespace or "}" in namespace:
            raise ConfigError(
                "namespace", f"must be a non-empty string without braces, got {namespace!r}"
            )
        if isinstance(quorum, bool) or not isinstance(quorum, int) or quorum < 1:
            raise ConfigError("quorum", f"must be an integer >= 1, got {quorum!r}")
        if (
            isinstance(sync_interval, bool)
            or not isinstance(sync_interval, (int, float))
            or not is_finite(sync_interval)
            or sync_interval <= 0
        ):
            raise ConfigError(
                "sync_interval", f"must be a finite number of seconds > 0, got {sync_interval!r}"
            )
        if clock is not None and not callable(getattr(clock, "monotonic", None)):
            raise ConfigError("clock", f"must be a buttress Clock, got {clock!r}")
        if process_id is not None and (not isinstance(process_id, str) or not process_id):
            raise ConfigError("process_id", f"must be a non-empty string, got {process_id!r}")
        try:
            import redis
        except ImportError as exc:  # pragma: no cover - the extra is not installed
            raise ConfigError(
                "fleet", "RedisFleet needs redis-py: pip install redis (the 'redis' extra)"
            ) from exc
        self.namespace = namespace
        self.quorum = quorum
        self.sync_interval = float(sync_interval)
        self.timeout = min(0.25, self.sync_interval)
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError, TimeoutError)
        self._url: str | None = None
        if isinstance(url_or_client, str):
            from ..ratelimit._from_url import redis_url_problem

            problem = redis_url_problem(url_or_client)
            if problem is not None:
                raise ConfigError("url_or_client", problem)
            self._url = url_or_client
            try:
                self._client = self._make_client()
            except ValueError as exc:
                raise ConfigError("url_or_client", f"not a Redis URL: {exc}") from exc
        elif isinstance(url_or_client, redis.Redis):
            if url_or_client.get_connection_kwargs().get("socket_timeout") is None:
                raise ConfigError(
                    "url_or_client",
                    "needs a socket_timeout (e.g. redis.Redis(..., socket_timeout=0.25)): "
                    "a sync must never hang",
                )
            self._client = url_or_client
        else:
            raise ConfigError(
                "url_or_client", f"must be a redis:// URL or a redis.Redis, got {url_or_client!r}"
            )
        self._store = FleetStore(self._client, namespace)
        self._publications = PublicationStore(self._client, namespace)
        self._given_pid = process_id
        self.process_id = process_id or _default_pid()
        self._clock = clock
        self._links: list[FleetLink] = []
        self._lock = fork_safe_lock()
        self._round = fork_safe_lock()  # one round at a time (the thread, or sync())
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.closed = False
        call_in_forked_child(self._after_fork)

    def _make_client(self) -> Any:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        assert self._url is not None
        return redis.Redis.from_url(
            self._url,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            retry=Retry(NoBackoff(), 1),
        )

    def _after_fork(self) -> None:
        """In a forked child: a client, an id and a thread of its own."""
        if self._url is not None:
            self._client = self._make_client()
            self._store = FleetStore(self._client, self.namespace)
            self._publications = PublicationStore(self._client, self.namespace)
        if self._given_pid is None:
            self.process_id = _default_pid()
        self._stop = threading.Event()
        self._thread = None
        if self._links and not self.closed:
            self._start()

    # -- membership ----------------------------------------------------------------------------

    def attach(self, breaker: CircuitBreaker) -> FleetLink:
        """Make ``breaker`` a member (its constructor does, with ``fleet=``)."""
        link = FleetLink(breaker, thresholds_for(breaker.config, self.quorum, self.sync_interval))
        with self._lock:
            self._links.append(link)
            if self._clock is None and not self.closed:
                self._start()
        return link

    def reconfigured(self, link: FleetLink, config: BreakerConfig) -> None:
        """A member's settings changed (``CircuitBreaker.reconfigure``): the fleet applies its
        new thresholds from its next sync on."""
        link.thresholds = thresholds_for(config, self.quorum, self.sync_interval)

    def _start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._run, args=(self._stop,), name="buttress-fleet", daemon=True
        )
        self._thread.start()

    def forget(self) -> None:
        """Delete what this fleet keeps in Redis (its breakers' reports, views, probe budgets
        and overrides; a publication): for a test's throwaway fleet, never a live one. Redis out of
        reach: nothing is deleted (the keys but the overrides expire by themselves)."""
        with self._lock:
            links = list(self._links)
        keys = [
            k
            for link in links
            if (breaker := link.breaker()) is not None
            for k in self._store.keys(breaker.name)
        ]
        keys += self._publications.keys()  # a publication, and the processes' reports
        if keys:
            with contextlib.suppress(*self._errors):
                self._client.delete(*keys)

    def close(self) -> None:
        """Stop syncing (the breakers go on as local ones)."""
        self.closed = True
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5 * self.sync_interval + 1)
        self._thread = None

    def _run(self, stop: threading.Event) -> None:
        interval = self.sync_interval
        next_at = time.monotonic()
        while not stop.is_set():
            try:
                self.sync()
            except Exception:  # the driver must outlive any one round's trouble
                _log.exception("fleet %r: a sync round failed", self.namespace)
            next_at += interval
            now = time.monotonic()
            if next_at < now:  # a round took longer than the interval: skip, don't burst
                next_at = now + interval
            stop.wait(next_at - now)

    # -- a round --------------------------------------------------------------------------------

    def sync(self) -> None:
        """One round: each member breaker reports and learns the fleet's view (one script call
        per breaker). The thread calls this every ``sync_interval``; tests call it directly."""
        with self._round:
            with self._lock:
                links = list(self._links)
            gone = []
            for link in links:
                breaker = link.breaker()
                if breaker is None:
                    gone.append(link)
                    continue
                self._sync_one(breaker, link)
            if gone:
                with self._lock:
                    self._links = [x for x in self._links if x not in gone]

    def _sync_one(self, breaker: CircuitBreaker, link: FleetLink) -> None:
        calls, failures, recovered, wanted = breaker._fleet_report()
        link.recovered = link.recovered or recovered
        report = Report(calls, failures, max(0, link.epoch), link.recovered, wanted)
        try:
            view, ov = self._store.sync(breaker.name, self.process_id, report, link.thresholds)
        except self._errors as exc:
            if link.error is None:
                _log.warning(
                    "fleet %r: breaker %r goes on alone, Redis is unreachable: %s",
                    self.namespace,
                    breaker.name,
                    exc,
                )
            link.error = f"{type(exc).__name__}: {exc}"
            breaker._fleet_apply(_lost)
            return
        link.recovered = False
        link.error = None
        link.syncs += 1

        def apply(m: BreakerMachine, now: float) -> None:
            if ov.generation != link.override_gen:
                action = effective(ov)
                if action == "force_open":
                    m.force_open(now)
                elif action == "disable":
                    m.disable(now)
                elif link.override_gen >= 0:  # a reset since the last sync (not at joining)
                    m.reset(now)
                link.override_gen = ov.generation
            if view.epoch != link.epoch:
                if view.open_ms_left > 0:
                    m.fleet_open(now, now + view.open_ms_left / 1000.0)
                link.epoch = view.epoch
            elif view.open_ms_left < 0 and m.fleet_opened:
                m.fleet_closed(now)
            if view.granted:
                m.fleet_grant(view.granted)
            link.view = view
            link.override = ov

        breaker._fleet_apply(apply)

    # -- operators ------------------------------------------------------------------------------

    def override(self, breaker: CircuitBreaker, action: str, reason: str, by: str) -> int:
        """Record ``action`` for ``breaker`` in Redis for every process; its generation.
        Raises :class:`~buttress.BackendError` when Redis cannot be reached."""
        if action not in ACTIONS:
            raise ValueError(f"action: must be one of {ACTIONS}, got {action!r}")
        try:
            generation, _ = self._store.override(breaker.name, action, reason, by)
        except self._errors as exc:
            raise BackendError(
                f"fleet {self.namespace!r}: could not record {action} of breaker "
                f"{breaker.name!r}: {type(exc).__name__}: {exc}"
            ) from exc
        return generation

    def follow(self, following: Following) -> Publication | None:
        """One look at the configuration published for the fleet (``buttress config
        publish``; one script call): reports what this process runs, and returns the fleet's
        record when its generation differs from the one ``following`` saw (else ``None``).
        Raises :class:`~buttress.BackendError` when Redis cannot be reached."""
        heartbeat_ms = max(1, math.ceil(3 * self.sync_interval * 1000))
        try:
            return self._publications.follow(self.process_id, following, heartbeat_ms)
        except self._errors as exc:
            raise BackendError(
                f"fleet {self.namespace!r}: could not read the published configuration: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def status(self, link: FleetLink) -> FleetStatus:
        v, ov = link.view, link.override
        if v is None:
            state = "unknown"
        elif v.open_ms_left > 0:
            state = "open"
        elif v.open_ms_left == 0:
            state = "half_open"
        else:
            state = "closed"
        override = None
        if ov is not None and ov.generation > 0:
            override = OverrideStatus(
                ov.generation, effective(ov), ov.action, ov.reason, ov.by, ov.at_ms / 1000.0
            )
        return FleetStatus(
            namespace=self.namespace,
            process_id=self.process_id,
            connected=link.error is None,
            state=state,
            epoch=v.epoch if v else 0,
            live=v.live if v else 0,
            sick=v.sick if v else 0,
            calls=v.calls if v else 0,
            failures=v.failures if v else 0,
            quorum=self.quorum,
            syncs=link.syncs,
            error=link.error,
            override=override,
        )

    def __repr__(self) -> str:
        return (
            f"<RedisFleet {self.namespace!r} quorum={self.quorum} "
            f"sync_interval={self.sync_interval}>"
        )


def _lost(m: BreakerMachine, now: float) -> None:
    m.fleet_lost()


def _default_pid() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}:{next(_ids)}"
