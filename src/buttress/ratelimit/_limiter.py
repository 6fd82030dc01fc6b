"""``RateLimiter``: the shell around the pure cores and a backend.

The shell resolves a request's ids into one storage key per scope (``_keys.py``), reads the
clock, makes one backend call (all scopes, atomically), and hands the outcome to its recorder,
which builds, counts and announces the :class:`Decision` (``_stats.py``). With the memory
backend it decides in the backend's dict itself (``_inmemory.py``). It also owns what a
backend cannot know: the adaptive limits, whose current values it passes with every call
(``_adaptive.py``), and the FIFO queues of callers waiting for room (``_waiting.py``), whose
plan its two ``acquire`` drivers carry out.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import threading
from collections.abc import Callable, Generator, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from .._clock import Clock, SystemClock
from .._concurrency import is_async_callable
from .._errors import BackendError, ConfigError
from .._redact import redacted_logger
from .._validate import in_interval, positive, timeout_or_none
from ._adaptive import AdaptiveScopes
from ._algorithms import Algorithm, State
from ._backend import Backend, Outcome
from ._decision import Decision, Frame, ScopeMeta, details, exceeded, lazy_decision
from ._failure import BackendHealth, FailurePolicy, GuardedBackend, Unanswered
from ._inmemory import InMemory
from ._keys import MAX_ID_LENGTH, Key, KeyResolver
from ._leasing import DECIDE as LEASE_DECIDE
from ._leasing import REFUND, Leases, LeaseStep, Leasing, Slice
from ._local import LocalStates
from ._memory import MemoryBackend
from ._overrides import OverrideTable
from ._scope import Overrides, Scope, check_name, check_scopes
from ._stats import (
    Counters,
    LatencySummary,
    RateLimiterSnapshot,
    Recorder,
    ScopeSnapshot,
    count_of,
)
from ._waiting import DECIDE, SLEEP, WaitQueues

if TYPE_CHECKING:
    from .._breaker import CircuitBreaker

__all__ = ["RateLimiter"]

P = ParamSpec("P")
T = TypeVar("T")

_log = redacted_logger("buttress.rate_limiter")


class RateLimiter:
    """Admits a request only if every scope has room, then charges every scope.

    >>> limiter = RateLimiter(scopes=[Scope("user", limit=100, window=60.0),
    ...                               Scope("org", limit=1000, window=60.0),
    ...                               Scope("global", limit=10_000, window=60.0)])
    >>> limiter.try_acquire({"user": "u1", "org": "o1"}).allowed
    True

    ``scopes`` may be a rate string: ``RateLimiter("100/minute")`` is one scope every caller
    shares (``global``), ``RateLimiter("10/second; 1000/hour")`` two (``per_second``,
    ``per_hour``); for a limit per caller, name the scope (``Scope.parse("100/minute",
    "user")``).

    * ``backend``: where states live (default: a new :class:`MemoryBackend`), or its URL
      (``"memory"``, ``"sqlite:///path"``, ``"redis://host:port/db"``; see ``backend_from_url``;
      a bad URL is a :class:`~buttress.ConfigError` on ``backend``);
    * ``namespace`` and ``name`` prefix every storage key (limiters sharing a backend need
      distinct names);
    * ``clock``: a :class:`~buttress.Clock` (``ManualClock`` in tests);
    * ``latency_budget``: a decision taking longer counts against ``performance_rating``,
      computed over the last ``stats_window`` seconds;
    * ``failure_policy``: what a decision does when the backend fails (Redis unreachable,
      SQLite locked too long): ``"fail_open"`` admits, ``"fail_closed"`` raises
      :class:`~buttress.BackendError`, ``"local"`` decides in this process's memory with
      ``local_share`` of each scope's limit and burst (``1/8`` for 8 processes sharing the
      backend; the default 1.0 lets each process admit the whole limit); while it is down the
      backend is tried again at most once per ``backend_retry_interval`` seconds, and the
      first answer ends the outage (see ``_failure.py`` and ``_local.py``).
    """

    def __init__(
        self,
        scopes: Sequence[Scope] | Scope | str,
        *,
        backend: Backend | str | None = None,
        namespace: str = "buttress",
        name: str = "default",
        clock: Clock | None = None,
        latency_budget: float = 0.005,
        stats_window: float = 60.0,
        failure_policy: FailurePolicy = "fail_open",
        backend_retry_interval: float = 1.0,
        lease: Leasing | None = None,
        local_share: float | None = 1.0,
    ) -> None:
        self.scopes: tuple[Scope, ...] = check_scopes(scopes)
        self.namespace = check_name("namespace", namespace)
        self.name = check_name("name", name)
        self.latency_budget = positive("latency_budget", latency_budget)
        stats_window = positive("stats_window", stats_window)
        self.backend: Backend = _backend_of(backend, len(self.scopes))
        self.clock: Clock = SystemClock() if clock is None else clock
        self._use_backend(
            failure_policy,
            backend_retry_interval,
            1.0 if local_share is None else in_interval("local_share", local_share, "(0, 1]"),
        )
        self._resolver = KeyResolver(namespace, name, self.scopes)
        self._keys = self._resolver.keys
        self._single_scope_prefix = self._resolver.single_scope_prefix
        self._frame = _first_frame(self.scopes, self._resolver)
        self._adaptive = AdaptiveScopes(
            name, self.scopes, self._frame, self._use_frame, self._monotonic
        )
        self._waiting = WaitQueues(self._monotonic, self._frame_for)
        self._queues = self._waiting.queues  # read unlocked: empty while nobody waits
        self._giving_back: set[asyncio.Future[Any]] = set()  # refunds after cancellations
        self._stats = Counters(len(self.scopes), window=stats_window, budget=self.latency_budget)
        self._recorder = Recorder(
            self._stats,
            self._monotonic,
            limiter=name,
            namespace=namespace,
            # In memory a clock read is a tenth of a decision: measure one in 16. A shared
            # backend's decisions, batched under load, cost a client a few µs of CPU each:
            # one in 4 (still thousands of samples a second where latency matters).
            measure_every=16 if self._in_memory else 4,
        )
        # Per-id limits (Scope(overrides=...)): the table in force, swapped whole by
        # set_overrides; _routed holds its mappings' storage keys for the fast paths.
        self._overrides_lock = threading.Lock()
        self._routed: dict[str, None] = {}
        self._fast: Callable[..., Decision] | None = None
        self._overrides: OverrideTable | None = None
        self._memory = self._decide_in_place()
        self._use_overrides(
            OverrideTable(self.scopes, self._resolver.prefixes, self._resolver.id_offsets)
        )
        self._leases = self._leasing(lease)

    def _leasing(self, lease: Leasing | None) -> Leases | None:
        if lease is None:
            return None
        if not isinstance(lease, Leasing):
            raise ConfigError("lease", f"must be a buttress.Leasing, got {lease!r}")
        if self._in_memory:
            raise ConfigError(
                "lease",
                "leases are for a shared backend (Redis, SQLite): in memory every decision is "
                "already local",
            )
        return Leases(lease)

    def _use_backend(
        self, failure_policy: FailurePolicy, retry_interval: float, local_share: float
    ) -> None:
        """How the limiter calls its backend: through the failure policy, on which clock."""
        self._monotonic = self.clock.monotonic
        # Backend time: one process uses the monotonic clock; shared state uses wall time.
        self._wall = self.backend.time_base != "monotonic"
        self._now = self.clock.time if self._wall else self._monotonic
        self._health = BackendHealth(failure_policy, retry_interval)
        # Calls go through the failure policy, except to memory, which cannot fail.
        self._in_memory = isinstance(self.backend, MemoryBackend)
        # A backend that waits for a lock reads the time once it holds it (SQLite: timed).
        timed = getattr(self.backend, "timed", None)
        backend: Backend = self.backend if timed is None else timed(self._now)
        self._store: Backend = (
            self.backend
            if self._in_memory
            else GuardedBackend(
                backend,
                self._health,
                self._monotonic,
                limiter=self.name,
                namespace=self.namespace,
                local_share=local_share,
            )
        )
        self._decide_backend = self._store.decide
        self._local = self._store.local if isinstance(self._store, GuardedBackend) else None

    def _decide_in_place(self) -> InMemory | None:
        """Decide in the memory backend's own dict, when the backend is a MemoryBackend itself
        (a subclass may decide otherwise); with fixed scopes, a fast path stands in for
        :meth:`try_acquire` too."""
        backend = self.backend
        if type(backend) is not MemoryBackend:
            return None
        memory = InMemory(backend.lane(), self._monotonic, self._recorder)
        if not self._adaptive:  # (a fast path binds the frame once; an adaptive one changes)
            general: Callable[[Key, float], Decision] = RateLimiter.try_acquire.__get__(self)
            fast = memory.fast_path(
                general, self._frame, self._resolver, self._queues, self._routed
            )
            if fast is not None:
                self._fast = fast
                self.try_acquire = fast  # type: ignore[method-assign]
        return memory

    # -- per-id limits ---------------------------------------------------------------------------

    def set_overrides(self, scope: str, overrides: Overrides | None) -> None:
        """Give the ids of ``scope`` limits of their own from the next decision on: a mapping
        of id to limit, a callable ``(id) -> limit | None``, or ``None`` (every id at the
        scope's limit). Replaces the scope's overrides whole; checked as ``Scope(overrides=)``
        is (:class:`~buttress.ConfigError`). Thread-safe.

        An id's state is kept: a token bucket keeps the share of the allowance used (its
        depth in seconds is the same under any limit), a window keeps its count
        (``_overrides.py``).
        """
        index = self._resolver.index(scope)
        with self._overrides_lock:
            scopes = list(self.scopes)
            scopes[index] = dataclasses.replace(scopes[index], overrides=overrides)
            table = OverrideTable(scopes, self._resolver.prefixes, self._resolver.id_offsets)
            self.scopes = tuple(scopes)
            self._use_overrides(table)

    def overrides(self, scope: str) -> Overrides | None:
        """The overrides of ``scope`` in force (a dict of id text to limit, a callable, or
        ``None``)."""
        return self.scopes[self._resolver.index(scope)].overrides

    def _use_overrides(self, table: OverrideTable) -> None:
        """Put ``table`` in force (under ``_overrides_lock``, or while constructing)."""
        routed = self._routed
        # The fast paths read ``routed`` at every call, without a lock: add the new keys
        # before the table is swapped and drop the old ones after, so that a key with an
        # override in either table is routed to the general path throughout.
        routed.update(dict.fromkeys(table.routed))
        self._overrides = table if table else None
        for gone in [k for k in routed if k not in table.routed]:
            del routed[gone]
        if self._fast is not None:  # a callable's ids cannot be listed: no fast path then
            if table.called:
                self.__dict__.pop("try_acquire", None)
            else:
                self.try_acquire = self._fast  # type: ignore[method-assign]

    def _frame_for(self, keys: Sequence[str]) -> Frame:
        """The frame deciding ``keys``: the limiter's, or one with some ids' own limits."""
        overrides = self._overrides
        if overrides is None:
            return self._frame
        return overrides.frame(self._frame, keys)

    def _use_frame(self, frame: Frame) -> None:
        """Adaptive limits moved: decide with ``frame``'s algorithms from now on."""
        self._frame = frame

    @property
    def algorithms(self) -> tuple[Algorithm, ...]:
        """The algorithm objects in force, one per scope (adaptive ones at their current limit)."""
        return self._frame.algorithms

    # -- deciding ----------------------------------------------------------------------------

    def try_acquire(self, key: Key = None, cost: float = 1) -> Decision:
        """Admit ``cost`` now if every scope has room (and charge them all), or refuse.

        Never waits. While callers wait in :meth:`acquire` for one of this request's scopes,
        it is refused so as not to jump their queue.
        """
        prefix = self._single_scope_prefix  # one identified scope: a str id completes its key
        keys = (
            [prefix + key]
            if prefix is not None and key.__class__ is str and len(key) <= MAX_ID_LENGTH
            else self._keys(key)
        )
        if cost.__class__ is not int or cost != 1:  # 1 is the default: one cheap check
            positive("cost", cost)
        if self._queues:
            return self._behind_waiters(keys, cost)
        memory = self._memory
        if memory is not None:
            return memory.decide(self._frame_for(keys), keys, cost)
        return self._decide(keys, cost)

    async def try_acquire_async(self, key: Key = None, cost: float = 1) -> Decision:
        """:meth:`try_acquire` for asyncio callers (the backend call is awaited)."""
        if self._in_memory:  # no I/O to await: the sync path, without a coroutine per call
            return self.try_acquire(key, cost)
        keys = self._keys(key)
        if cost.__class__ is not int or cost != 1:
            positive("cost", cost)
        if self._queues:
            return await self._behind_waiters_async(keys, cost)
        return await self._decide_async(keys, cost)

    def _decide(self, keys: Sequence[str], cost: float) -> Decision:
        leases = self._leases
        if leases is not None and cost <= leases.lease.size:
            return self._decide_leased(leases, keys, cost)
        frame = self._frame_for(keys)
        started = self._monotonic()
        now = self.clock.time() if self._wall else started
        allowed, states, now = self._decide_backend(keys, frame.algorithms, cost, now, True)
        return self._conclude(allowed, frame, keys, states, now, cost, started)

    # -- leases (see _leasing.py): one plan of steps, driven by a sync and an asyncio shell ----

    def _leased_steps(
        self, leases: Leases, keys: Sequence[str], cost: float
    ) -> Generator[LeaseStep, Outcome | None, Decision]:
        """A request under ``lease=``: from its slice, else a new slice, else alone. Yields
        what to do with the backend (``(REFUND, keys, units, now)``, ``(DECIDE, cost, now)``)
        and is sent each decision's outcome."""
        frame = self._frame_for(keys)
        started = self._monotonic()
        k = tuple(keys)
        spent = leases.spend(k, cost, started)
        if spent is not None:
            return self._from_slice(frame, keys, spent, started, cost)
        now = self.clock.time() if self._wall else started
        for gone, units in leases.take_back(k, started):
            yield (REFUND, gone, units, now)
        size = leases.lease.size
        outcome = yield (LEASE_DECIDE, size, now)
        assert outcome is not None
        allowed, states, now = outcome
        if type(states) is LocalStates:  # decided locally: no slice, this request's cost only
            if allowed:  # give back the rest of the slice at once, to the local states
                assert self._local is not None
                self._local.refund(keys, frame.algorithms, size - cost, now)
            else:
                outcome = yield (LEASE_DECIDE, cost, now)
                assert outcome is not None
                allowed, states, now = outcome
            return self._conclude(allowed, frame, keys, states, now, cost, started)
        if not allowed or type(states) is Unanswered:  # no slice: decide this request alone
            if not allowed:
                outcome = yield (LEASE_DECIDE, cost, now)
                assert outcome is not None
                allowed, states, now = outcome
            # (an admission of the failure policy counts as this request's, never a slice)
            return self._conclude(allowed, frame, keys, states, now, cost, started)
        held = Slice(size - cost, started + leases.lease.ttl, states, now, cost)
        for gone, units in leases.keep(k, held):
            yield (REFUND, gone, units, now)
        return self._conclude(True, frame, keys, states, now, cost, started)

    def _decide_leased(self, leases: Leases, keys: Sequence[str], cost: float) -> Decision:
        steps = self._leased_steps(leases, keys, cost)
        algorithms = self._frame_for(keys).algorithms
        answer: Outcome | None = None
        try:
            while True:
                step = steps.send(answer)
                answer = None
                if step[0] == REFUND:
                    self._store.refund(step[1], algorithms, step[2], step[3])
                else:
                    answer = self._decide_backend(keys, algorithms, step[1], step[2], True)
        except StopIteration as done:
            decision: Decision = done.value
            return decision

    async def _decide_leased_async(
        self, leases: Leases, keys: Sequence[str], cost: float
    ) -> Decision:
        steps = self._leased_steps(leases, keys, cost)
        algorithms = self._frame_for(keys).algorithms
        store = self._store
        answer: Outcome | None = None
        try:
            while True:
                step = steps.send(answer)
                answer = None
                if step[0] == REFUND:
                    await store.refund_async(step[1], algorithms, step[2], step[3])
                else:
                    answer = await store.decide_async(keys, algorithms, step[1], step[2], True)
        except StopIteration as done:
            decision: Decision = done.value
            return decision

    def _from_slice(
        self,
        frame: Frame,
        keys: Sequence[str],
        spent: tuple[Slice, float],
        started: float,
        cost: float,
    ) -> Decision:
        """A request decided from its slice: its numbers are the slice's grant with all that
        was spent from it (this request's included) charged."""
        held, total = spent
        decided = details(frame, keys, held.states, held.at, total)
        return self._recorder.conclude(True, decided, started, cost)

    def release_leases(self) -> None:
        """Give back the unused part of every slice this process holds (``lease=``): at
        shutdown, or to hand a busy caller's allowance to other processes at once."""
        leases = self._leases
        if leases is None:
            return
        now = self._now()
        for keys, units in leases.drain():
            self._store.refund(keys, self._frame_for(keys).algorithms, units, now)

    async def release_leases_async(self) -> None:
        """:meth:`release_leases` for asyncio callers."""
        leases = self._leases
        if leases is None:
            return
        now = self._now()
        for keys, units in leases.drain():
            await self._store.refund_async(keys, self._frame_for(keys).algorithms, units, now)

    async def _decide_async(self, keys: Sequence[str], cost: float) -> Decision:
        leases = self._leases
        if leases is not None and cost <= leases.lease.size:
            return await self._decide_leased_async(leases, keys, cost)
        frame = self._frame_for(keys)
        started = self._monotonic()
        now = self.clock.time() if self._wall else started
        task = asyncio.current_task()
        asked = task.cancelling() if task is not None else 0
        allowed, states, now = await self._store.decide_async(
            keys, frame.algorithms, cost, now, True
        )
        if task is not None and task.cancelling() > asked:
            # Cancelled while deciding, and the client answered anyway (redis-py can lose a
            # cancellation that arrives with the reply): honour it, and give back the charge.
            if allowed:
                self._give_back(keys, cost)
            raise asyncio.CancelledError
        return self._conclude(allowed, frame, keys, states, now, cost, started)

    def _give_back(self, keys: Sequence[str], cost: float) -> None:
        """Refund a decision its caller was cancelled out of, without making anyone wait."""
        refund = self._store.refund_async(keys, self._frame_for(keys).algorithms, cost, self._now())
        task = asyncio.ensure_future(refund)
        self._giving_back.add(task)  # referenced until done
        task.add_done_callback(self._gave_back)

    def _gave_back(self, task: asyncio.Future[Any]) -> None:
        self._giving_back.discard(task)
        if task.cancelled():
            _log.warning(
                "rate limiter %r: a refund after a cancellation was itself cancelled (the event "
                "loop ended?); that request stays charged",
                self.name,
            )
        elif task.exception() is not None:
            _log.warning(
                "rate limiter %r: refund after a cancellation failed: %r",
                self.name,
                task.exception(),
            )

    def _conclude(
        self,
        allowed: bool,
        frame: Frame,
        keys: Sequence[str],
        states: Sequence[State | None],
        now: float,
        cost: float,
        started: float,
        forced: tuple[tuple[int, float], ...] | None = None,
    ) -> Decision:
        """The decision on a backend's answer; ``started`` is when deciding began (monotonic
        clock), ``forced`` the waits of the queues that refused it (see ``WaitQueues.ahead``)."""
        if type(states) is LocalStates:  # decided locally: on this process's share
            frame = self._local_frame(frame)
        decided = details(frame, keys, states, now, cost)
        if forced is not None:
            decided = (*decided, forced)
        return self._recorder.conclude(allowed, decided, started, cost)

    def _local_frame(self, frame: Frame) -> Frame:
        local = self._local
        assert local is not None  # local states come from nowhere else
        return local.frame(frame)

    def _behind_waiters(self, keys: Sequence[str], cost: float) -> Decision:
        """Refuse a request whose keys have waiters queued (decide it if none has)."""
        forced = self._waiting.ahead(keys, cost)
        if forced is None:
            return self._decide(keys, cost)
        frame = self._frame_for(keys)
        started = self._monotonic()
        now = self.clock.time() if self._wall else started
        _, states, now = self._decide_backend(keys, frame.algorithms, cost, now, False)
        return self._conclude(False, frame, keys, states, now, cost, started, forced)

    async def _behind_waiters_async(self, keys: Sequence[str], cost: float) -> Decision:
        """:meth:`_behind_waiters` with the backend call awaited."""
        forced = self._waiting.ahead(keys, cost)
        if forced is None:
            return await self._decide_async(keys, cost)
        frame = self._frame_for(keys)
        started = self._monotonic()
        now = self.clock.time() if self._wall else started
        _, states, now = await self._store.decide_async(keys, frame.algorithms, cost, now, False)
        return self._conclude(False, frame, keys, states, now, cost, started, forced)

    def peek(self, key: Key = None, cost: float = 1) -> Decision:
        """What :meth:`try_acquire` would answer now, consuming nothing and counting nothing.

        Like :meth:`try_acquire`, it refuses while callers wait in :meth:`acquire` for one of
        this request's scopes.
        """
        keys = self._keys(key)
        positive("cost", cost)
        frame = self._frame_for(keys)
        allowed, states, now = self._decide_backend(
            keys, frame.algorithms, cost, self._now(), False
        )
        return self._peeked(allowed, frame, keys, states, now, cost)

    async def peek_async(self, key: Key = None, cost: float = 1) -> Decision:
        """:meth:`peek` for asyncio callers."""
        keys = self._keys(key)
        positive("cost", cost)
        frame = self._frame_for(keys)
        allowed, states, now = await self._store.decide_async(
            keys, frame.algorithms, cost, self._now(), False
        )
        return self._peeked(allowed, frame, keys, states, now, cost)

    def _peeked(
        self,
        allowed: bool,
        frame: Frame,
        keys: Sequence[str],
        states: Sequence[State | None],
        now: float,
        cost: float,
    ) -> Decision:
        if type(states) is LocalStates:
            frame = self._local_frame(frame)
        decided = details(frame, keys, states, now, cost)
        if self._queues:  # as try_acquire: refused behind waiters queued on these keys
            forced = self._waiting.ahead(keys, cost)
            if forced is not None:
                return lazy_decision(False, (*decided, forced))
        return lazy_decision(allowed, decided)

    def refund(self, key: Key = None, cost: float = 1) -> None:
        """Give back ``cost`` to every scope of the request (e.g. the work was not done)."""
        keys = self._keys(key)
        positive("cost", cost)
        self._store.refund(keys, self._frame_for(keys).algorithms, cost, self._now())

    async def refund_async(self, key: Key = None, cost: float = 1) -> None:
        """:meth:`refund` for asyncio callers."""
        keys = self._keys(key)
        positive("cost", cost)
        # Shielded: a refund the caller stops waiting for is still made (it is often made on
        # the way out of a cancellation).
        await asyncio.shield(
            self._store.refund_async(keys, self._frame_for(keys).algorithms, cost, self._now())
        )

    def reset(self, key: Key = None, *, scope: str | None = None) -> None:
        """Restore the full allowance of the scopes ``key`` identifies (shared ones untouched).

        ``scope=`` resets only that scope (a shared one needs no key): ``reset(scope="global")``.
        """
        self.backend.reset(self._resolver.reset_keys(key, scope))

    async def reset_async(self, key: Key = None, *, scope: str | None = None) -> None:
        """:meth:`reset` for asyncio callers."""
        await self.backend.reset_async(self._resolver.reset_keys(key, scope))

    def clear(self) -> None:
        """Forget every key of this limiter (all scopes, all ids)."""
        self.backend.clear(self._resolver.prefix)

    # -- waiting -----------------------------------------------------------------------------

    def acquire(
        self, key: Key = None, cost: float = 1, *, timeout: float | None = None
    ) -> Decision:
        """Wait until ``cost`` is admitted (FIFO with other waiters), then return the decision.

        ``timeout`` (seconds on the limiter's clock; ``None`` waits as long as it takes)
        bounds the wait: when the wait cannot end in time, :class:`~buttress.RateLimitExceeded`
        is raised at once, carrying the refusing scope and its ``retry_after``.
        """
        if timeout is not None:
            timeout_or_none("timeout", timeout)
        started = self._monotonic()
        first = self.try_acquire(key, cost)  # one decision is the common case
        if first.allowed:
            return first
        keys = self._keys(key)
        plan = self._waiting.plan(keys, _deadline(started, timeout), None, first)
        try:
            step = next(plan)
            while True:
                kind, waiter, seconds = step
                if kind == DECIDE:
                    step = plan.send(self._decide(keys, cost))
                    continue
                if kind == SLEEP:
                    self.clock.sleep(seconds or 0.0)
                else:
                    assert waiter is not None
                    waiter.wait(seconds)
                step = next(plan)
        except StopIteration as done:
            result: Decision = done.value
            return result
        finally:
            plan.close()

    async def acquire_async(
        self, key: Key = None, cost: float = 1, *, timeout: float | None = None
    ) -> Decision:
        """:meth:`acquire` for asyncio callers: awaits instead of blocking."""
        if timeout is not None:
            timeout_or_none("timeout", timeout)
        started = self._monotonic()
        in_memory = self._in_memory  # no I/O: decide without a coroutine per decision
        first = (
            self.try_acquire(key, cost) if in_memory else await self.try_acquire_async(key, cost)
        )
        if first.allowed:
            return first
        keys = self._keys(key)
        plan = self._waiting.plan(
            keys, _deadline(started, timeout), asyncio.get_running_loop(), first
        )
        try:
            step = next(plan)
            while True:
                kind, waiter, seconds = step
                if kind == DECIDE:
                    decision = (
                        self._decide(keys, cost)
                        if in_memory
                        else await self._decide_async(keys, cost)
                    )
                    step = plan.send(decision)
                    continue
                if kind == SLEEP:
                    await self.clock.asleep(seconds or 0.0)
                else:
                    assert waiter is not None
                    await waiter.wait_async(seconds)
                step = next(plan)
        except StopIteration as done:
            result: Decision = done.value
            return result
        finally:
            plan.close()

    # -- the decorator -------------------------------------------------------------------------

    def limit(
        self,
        key: Key | Callable[..., Key] = None,
        *,
        cost: float | Callable[..., float] = 1,
        timeout: float | None = 0.0,
    ) -> Callable[[Callable[P, T]], Callable[P, T]]:
        """Decorate a sync or async function so each call first passes the limiter.

        ``key`` and ``cost`` are values or callables taking the function's arguments.
        ``timeout=0`` (the default) refuses at once with :class:`~buttress.RateLimitExceeded`;
        a positive timeout waits up to that long, ``None`` as long as it takes.

        >>> @limiter.limit(key=lambda user, **_: {"user": user.id})   # doctest: +SKIP
        ... async def handle(user, payload): ...
        """
        timeout_or_none("timeout", timeout)
        if not callable(cost):
            positive("cost", cost)

        def decorate(fn: Callable[P, T]) -> Callable[P, T]:
            if is_async_callable(fn):

                @functools.wraps(fn)
                async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                    k = key(*args, **kwargs) if callable(key) else key
                    c = cost(*args, **kwargs) if callable(cost) else cost
                    if timeout == 0.0:
                        d = await self.try_acquire_async(k, c)
                        if not d.allowed:
                            raise exceeded(d)
                    else:
                        await self.acquire_async(k, c, timeout=timeout)
                    return await fn(*args, **kwargs)

                return cast(Callable[P, T], async_wrapper)

            @functools.wraps(fn)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
                k = key(*args, **kwargs) if callable(key) else key
                c = cost(*args, **kwargs) if callable(cost) else cost
                if timeout == 0.0:
                    d = self.try_acquire(k, c)
                    if not d.allowed:
                        raise exceeded(d)
                else:
                    self.acquire(k, c, timeout=timeout)
                return fn(*args, **kwargs)

            return wrapper

        return decorate

    # -- adaptive limits -----------------------------------------------------------------------

    def record(
        self, ok: bool = True, latency: float | None = None, *, scope: str | None = None
    ) -> None:
        """Feed the outcome of one call to the adaptive scopes (or to ``scope`` only).

        ``ok=False`` (an error) or ``latency >= slow_call`` shrinks the limit; a healthy call
        lets it grow. Does nothing for a limiter without adaptive scopes.
        """
        index = None if scope is None else self._resolver.index(scope)
        self._adaptive.record(ok, latency, index)

    def attach_breaker(
        self, breaker: CircuitBreaker, *, scope: str | None = None
    ) -> Callable[[], None]:
        """Let ``breaker`` steer the adaptive scopes (or ``scope``); returns a detach function.

        Degraded shrinks the limit (again at each heavier level), open drops it to its
        minimum, and until the breaker closes the limit does not grow. With several breakers
        attached, the limit grows only while all of them are closed; attaching one breaker
        twice (for the same scope) does nothing more. Detaching lets the limit grow again
        unless another attached breaker still holds it.
        """
        index = None if scope is None else self._resolver.index(scope)
        return self._adaptive.attach(breaker, index)

    def current_limit(self, scope: str) -> float:
        """A scope's limit now (an adaptive one moves; the others are as configured)."""
        index = self._resolver.index(scope)
        limit = self._adaptive.limit(index)
        return self._frame.algorithms[index].limit if limit is None else limit

    # -- health ----------------------------------------------------------------------------------

    def check_backend(self) -> str:
        """Ask the backend whether it could decide now, charging nothing; return its status.

        A peek at one state, and proof that a decision could be written (SQLite takes and
        releases its write lock; Redis runs a write that changes nothing). ``"ok"``, or
        ``"down"`` when either failed; a failure is recorded as any decision's would be
        (health, ``backend_down`` event), under either failure policy, and a success ends an
        outage. For tools that look at shared state without deciding anything
        (``buttress health``).
        """
        store = self._store
        if not isinstance(store, GuardedBackend):  # memory: cannot fail
            return "ok"
        frame = self._frame
        probe = self._resolver.prefix  # "ns:name:", no scope's key (scope names are not empty)
        now = self.clock.time() if self._wall else self._monotonic()
        with contextlib.suppress(BackendError):  # fail_closed raises; the status says it
            store.check([probe], frame.algorithms[:1], now)
        return self._health.status

    def snapshot(self) -> RateLimiterSnapshot:
        """Counts, the rating and every scope's current limit, for the health report."""
        now = self._monotonic()
        stats = self._stats
        decisions, rating = stats.in_window(now)
        admitted = stats.totals()[3]
        denied = tuple(count_of(c) for c in stats.denied)
        algorithms = {s.algorithm for s in self.scopes}
        waiting = len(self._waiting)
        return RateLimiterSnapshot(
            name=self.name,
            namespace=self.namespace,
            algorithm=algorithms.pop() if len(algorithms) == 1 else "mixed",
            admitted=admitted,
            denied=sum(denied),
            performance_rating=rating,
            decisions_in_window=decisions,
            latency_budget=self.latency_budget,
            keys=(
                self._store.counted_keys()
                if isinstance(self._store, GuardedBackend)
                else self._store.key_count()
            ),
            waiting=waiting,
            scopes=tuple(
                ScopeSnapshot(
                    name=s.name,
                    algorithm=s.algorithm,
                    limit=self.current_limit(s.name),
                    window=s.window,
                    by=s.by,
                    denied=denied[i],
                    min_limit=s.min_limit,
                    max_limit=s.max_limit,
                )
                for i, s in enumerate(self.scopes)
            ),
            decision_latency=_latency_summary(stats, admitted + sum(denied)),
            backend_status=self._health.status,
            failure_policy=self._health.policy,
            mode=self._health.mode,
            local_share=None if self._local is None else self._local.share,
            backend_errors=self._health.errors,
            backend=type(self.backend).__name__,
            backend_down_for=self._health.down_for(now),
            backend_error=self._health.last_error if self._health.down else None,
            unreadable_states=self._health.unreadable,
        )

    def maintain(self, now: float | None = None) -> int:
        """Sweep the backend's expired keys (for the infrastructure's scheduler)."""
        return self.backend.maintain(self._now() if now is None else now)

    def __repr__(self) -> str:
        scopes = ", ".join(f"{s.name}={s.limit:g}/{s.window:g}s" for s in self.scopes)
        return f"<RateLimiter {self.namespace}:{self.name} [{scopes}]>"


def _latency_summary(stats: Counters, decisions: int) -> LatencySummary:
    h = stats.latency()
    return LatencySummary(
        count=decisions,
        mean=h.mean,
        p50=h.percentile(50),
        p95=h.percentile(95),
        p99=h.percentile(99),
        max=h.max,
    )


def _backend_of(backend: Backend | str | None, scopes: int) -> Backend:
    """The backend given, made from its URL, or a new MemoryBackend."""
    if isinstance(backend, str):
        from ._from_url import backend_from_url

        backend = backend_from_url(backend)
    elif backend is not None and not callable(getattr(backend, "decide", None)):
        raise ConfigError(
            "backend",
            "must be a backend (MemoryBackend, SQLiteBackend, RedisBackend) or its URL "
            f"('memory', 'sqlite:///path', 'redis://host:port/db'), got {backend!r}",
        )
    if backend is None:
        return MemoryBackend()
    if isinstance(backend, MemoryBackend):
        check_memory_keys(backend.max_keys, scopes)
    return backend


def check_memory_keys(max_keys: int, scopes: int) -> None:
    """``ConfigError`` (at ``backend.max_keys``) unless a memory backend of ``max_keys`` can
    hold a request of ``scopes`` scopes: a request's own keys are never evicted, so with fewer
    slots than scopes one request of new ids would leave the dict over its cap."""
    if max_keys < scopes:
        raise ConfigError(
            "backend.max_keys",
            f"must be at least the number of scopes ({scopes}): one request holds "
            f"a key per scope, got max_keys={max_keys}",
        )


def _first_frame(scopes: tuple[Scope, ...], resolver: KeyResolver) -> Frame:
    """The scopes as decisions see them, at their configured limits."""
    meta = tuple(
        ScopeMeta(s.name, s.algorithm, s.window, offset)
        for s, offset in zip(scopes, resolver.id_offsets, strict=True)
    )
    return Frame.of(meta, tuple(s.build() for s in scopes))


def _deadline(started: float, timeout: float | None) -> float | None:
    return None if timeout is None else started + timeout
