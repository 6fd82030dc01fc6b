"""``RateLimiter``: the shell around the pure cores and a backend.

The shell resolves a request's ids into one storage key per scope, reads the clock, makes one
backend call (all scopes, atomically), counts the outcome and builds a :class:`Decision`. It
also owns what a backend cannot know: the adaptive limits, whose current values it passes with
every call (``_adaptive.py``), the FIFO queues of callers waiting for room, and the statistics.

Waiting is written once, as a generator (``WaitQueues.plan`` in ``_waiting.py``) that yields
what to do next (decide, sleep, wait for its turn); :meth:`acquire` and :meth:`acquire_async`
are two small drivers that do it with blocking or awaiting calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sys
import sysconfig
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeAlias, TypeVar, cast

from .. import events
from .._clock import Clock, SystemClock
from .._concurrency import is_async_callable
from .._validate import positive, timeout_or_none
from ..errors import BackendError, ConfigError
from ._adaptive import AdaptiveScopes
from ._algorithms import Algorithm, State, TokenBucket
from ._backend import Backend
from ._decision import Decision, Details, Frame, ScopeMeta, exceeded, lazy_decision
from ._failure import BackendHealth, FailurePolicy, GuardedBackend
from ._keys import Key, KeyResolver
from ._memory import MemoryBackend
from ._scope import Scope, check_name
from ._stats import Counters, RateLimiterSnapshot, ScopeSnapshot, count_of
from ._waiting import DECIDE, SLEEP, Waiter, WaitQueues

if TYPE_CHECKING:
    from ..breaker import CircuitBreaker
    from ._speedups import FastPath, ScopePart

P = ParamSpec("P")
T = TypeVar("T")

EV_ALLOWED = ("buttress", "rate_limiter", "allowed")
EV_DENIED = ("buttress", "rate_limiter", "denied")
_enabled = events.enabled
_attached = events.attached  # empty when no handler listens: one cheap test first

_log = logging.getLogger("buttress.rate_limiter")
# What the fast-path closures bind (see RateLimiter._bound).
_Bound: TypeAlias = tuple[
    Callable[[Key, float], Decision],
    dict[str, State],
    Callable[[], bool],
    Callable[[], None],
    Frame,
    Callable[[], float],
    dict[str, list[Waiter]],
    Counters,
]
_new = object.__new__


def _compiled() -> tuple[type[FastPath] | None, int]:
    """The compiled fast path and how many scopes it takes, unless it was not built or
    ``BUTTRESS_NO_EXTENSIONS`` is set (then ``None, 0``)."""
    if os.environ.get("BUTTRESS_NO_EXTENSIONS"):
        return None, 0
    if sys.implementation.name != "cpython" or sysconfig.get_config_var("Py_GIL_DISABLED"):
        return None, 0  # it writes CPython objects' slots, and reads the dict as the GIL allows
    try:
        from ._speedups import MAX_SCOPES, FastPath
    except ImportError:
        return None, 0
    return FastPath, MAX_SCOPES


# Read once at import; tests set _FastPath to None to run the pure-Python paths beside it.
_FastPath, _MAX_SCOPES = _compiled()

# The default cost. CPython keeps one int object for 1, so ``cost is _ONE`` holds for every
# int 1 and for nothing else (not True, not 1.0): the closures' one-test check for the default
# (where it fails, e.g. on another interpreter, the general path still decides correctly).
_ONE = 1


class RateLimiter:
    """Admits a request only if every scope has room, then charges every scope.

    >>> limiter = RateLimiter(scopes=[Scope("user", limit=100, window=60.0),
    ...                               Scope("org", limit=1000, window=60.0),
    ...                               Scope("global", limit=10_000, window=60.0)])
    >>> limiter.try_acquire({"user": "u1", "org": "o1"}).allowed
    True

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
      :class:`~buttress.BackendError`; while it is down the backend is tried again at most
      once per ``backend_retry_interval`` seconds (see ``_failure.py``).
    """

    def __init__(
        self,
        scopes: Sequence[Scope] | Scope,
        *,
        backend: Backend | str | None = None,
        namespace: str = "buttress",
        name: str = "default",
        clock: Clock | None = None,
        latency_budget: float = 0.005,
        stats_window: float = 60.0,
        failure_policy: FailurePolicy = "fail_open",
        backend_retry_interval: float = 1.0,
    ) -> None:
        scopes = (scopes,) if isinstance(scopes, Scope) else tuple(scopes)
        if not scopes:
            raise ConfigError("scopes", "a rate limiter needs at least one Scope")
        seen: set[str] = set()
        for i, scope in enumerate(scopes):
            if not isinstance(scope, Scope):
                raise ConfigError(f"scopes[{i}]", f"must be a Scope, got {scope!r}")
            if scope.name in seen:
                raise ConfigError(
                    f"scopes[{i}].name",
                    f"duplicate scope name {scope.name!r}; give each limit its own name and "
                    f"share the id with by= (e.g. Scope({scope.name + '_hourly'!r}, ..., "
                    f"by={scope.by!r}))",
                )
            seen.add(scope.name)
        self.namespace = check_name("namespace", namespace)
        self.name = check_name("name", name)
        positive("latency_budget", latency_budget)
        positive("stats_window", stats_window)
        self.scopes: tuple[Scope, ...] = scopes
        if isinstance(backend, str):
            from ._from_url import backend_from_url

            backend = backend_from_url(backend)
        elif backend is not None and not callable(getattr(backend, "decide", None)):
            raise ConfigError(
                "backend",
                "must be a backend (MemoryBackend, SQLiteBackend, RedisBackend) or its URL "
                f"('memory', 'sqlite:///path', 'redis://host:port/db'), got {backend!r}",
            )
        self.backend: Backend = MemoryBackend() if backend is None else backend
        if isinstance(self.backend, MemoryBackend) and self.backend.max_keys < len(scopes):
            # A request's own keys are never evicted: with fewer slots than scopes, one
            # request of new ids would leave the dict over its cap.
            raise ConfigError(
                "backend.max_keys",
                f"must be at least the number of scopes ({len(scopes)}): one request holds "
                f"a key per scope, got max_keys={self.backend.max_keys}",
            )
        self.clock: Clock = SystemClock() if clock is None else clock
        self.latency_budget = float(latency_budget)
        self._monotonic = self.clock.monotonic
        # Backend time: one process uses the monotonic clock; shared state uses wall time.
        self._wall = self.backend.time_base != "monotonic"
        self._now = self.clock.time if self._wall else self._monotonic
        self._health = BackendHealth(failure_policy, backend_retry_interval)
        # Calls go through the failure policy, except to memory, which cannot fail.
        self._store: Backend = (
            self.backend
            if isinstance(self.backend, MemoryBackend)
            else GuardedBackend(
                self.backend, self._health, self._monotonic, limiter=name, namespace=namespace
            )
        )
        self._decide_backend = self._store.decide
        self._in_memory = isinstance(self.backend, MemoryBackend)

        self._resolver = KeyResolver(namespace, name, scopes)
        self._keys = self._resolver.keys
        meta = tuple(
            ScopeMeta(s.name, s.algorithm, s.window, offset)
            for s, offset in zip(scopes, self._resolver.id_offsets, strict=True)
        )
        self._frame = Frame.of(meta, tuple(s.build() for s in scopes))
        # The fast path: one identified scope in memory, keyed straight from a str id.
        self._solo = self._resolver.single_scope_prefix
        # Only the memory backend itself lends its lane: a subclass may decide differently.
        lane = self.backend.lane() if type(self.backend) is MemoryBackend else None
        self._lane = lane if self._solo is not None else None
        # Several scopes in memory: decided in place too (see _decide_in_memory).
        self._memory_lane = lane if self._solo is None else None
        if lane is not None:  # unpacked: a NamedTuple field costs a property call on each read
            self._in_place = lane
            self._states, self._lock_backend, self._unlock_backend = lane[:3]
        self._adaptive = AdaptiveScopes(name, scopes, self._frame, self._use_frame, self._monotonic)
        self._waiting = WaitQueues(self._monotonic, lambda: self._frame)
        self._giving_back: set[asyncio.Future[Any]] = set()  # refunds after cancellations
        self._queues = self._waiting.queues
        self._stats = stats = Counters(
            len(scopes), window=float(stats_window), budget=self.latency_budget
        )
        self._admitted = stats.admitted
        self._denied = stats.denied
        self._next_mark = self._monotonic()  # when the statistics next record their totals
        # Latency is measured on one decision in 16 in memory (a clock read is a tenth of
        # the decision there), on every decision elsewhere (where I/O dwarfs it).
        self._sample = 15 if isinstance(self.backend, MemoryBackend) else 0
        if self._lane is not None and not self._adaptive:
            # One fixed scope in memory: the whole decision as one closure (see _solo_path).
            self.try_acquire = self._solo_path()  # type: ignore[method-assign]
        elif self._memory_lane is not None and not self._adaptive and len(scopes) > 1:
            self.try_acquire = self._multi_path()  # type: ignore[method-assign]

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
        lane = self._lane
        if lane is None or key.__class__ is not str or self._queues:
            keys = self._keys(key)  # tries the unrolled reader first for a dict
            if cost.__class__ is not int or cost != 1:  # 1 is the default: one cheap check
                positive("cost", cost)
            if self._queues:
                return self._behind_waiters(keys, cost)
            if self._memory_lane is not None:
                return self._decide_in_memory(keys, cost)
            return self._decide(keys, cost)
        # One scope in memory, keyed straight from a str id (the closure of _solo_path takes
        # this path itself when the cost is 1 and the scope is not adaptive).
        if cost.__class__ is not int or cost != 1:  # 1 is the default: one cheap check
            positive("cost", cost)
        return self._decide_in_memory([self._solo + key], cost)  # type: ignore[operator]

    def _solo_path(self) -> Callable[..., Decision]:
        """``try_acquire`` for one fixed scope in memory, as a closure over what it reads.

        The steps of :meth:`_decide_in_memory` for one key, with one ``admit`` instead of the
        frame's decider and every attribute read once here instead of on each call (at under a
        microsecond a decision, a dozen attribute loads are a fifth of the cost). Anything else
        (another key type, a cost other than 1, callers queued) goes to the general method.
        """
        compiled = self._compiled_path(context=False)
        if compiled is not None:
            return compiled
        lane = self._lane
        assert lane is not None
        assert self._solo is not None
        solo = self._solo
        general, states, lock, unlock, frame, monotonic, queues, stats = self._bound()
        get = states.get
        admit = frame.algorithms[0].admit
        measure = stats.measure
        admitted = self._admitted.__next__
        emit = self._emit
        refused = self._refused_in_memory
        shell = self

        def try_acquire(key: Key = None, cost: float = 1) -> Decision:
            if key.__class__ is not str or cost is not _ONE or queues:
                return general(key, cost)
            k = solo + key
            now = monotonic()
            grew = False
            lock()
            try:
                state = get(k)
                new = admit(state, now, 1)
                if new is not None:
                    states[k] = new
                    if state is None:
                        grew = lane.grew(now, (k,))
            finally:
                unlock()
            if grew:
                lane.cap_reached()
            if now >= shell._next_mark:
                shell._next_mark = stats.mark(now)
            decision: Decision = _new(Decision)
            decision._details = (frame, k, state, now, 1)
            decision._resolved = None
            if new is None:
                return refused(decision, now, 1)
            decision.allowed = True
            if not admitted() & 15:
                measure(monotonic() - now)
            if _attached and _enabled(EV_ALLOWED):
                emit(EV_ALLOWED, decision, 1)
            return decision

        return try_acquire

    def _decide_in_memory(self, keys: list[str], cost: float) -> Decision:
        """A decision in memory: MemoryBackend.decide, _decide and _conclude, unrolled.

        The same two phases as :func:`admit_all` (read every scope, admit only if all have
        room, then write every new state), run by the frame's unrolled copy (``_unrolled``).
        """
        frame = self._frame
        states = self._states
        now = self._monotonic()
        notify = False
        self._lock_backend()
        try:
            held = len(states)
            olds, allowed = frame.decide_in(states, frame.admits, keys, now, cost, True)
            if len(states) != held:
                notify = self._in_place.grew(now, keys)
        finally:
            self._unlock_backend()
        if notify:
            self._in_place.cap_reached()
        if now >= self._next_mark:
            self._next_mark = self._stats.mark(now)
        decision: Decision = _new(Decision)
        if frame.single:  # a shared single scope: details hold the key and state themselves
            decision._details = (frame, keys[0], olds[0], now, cost)
        else:
            decision._details = (frame, keys, olds, now, cost)
        decision._resolved = None
        if allowed:
            decision.allowed = True
            if not next(self._admitted) & 15:
                self._stats.measure(self._monotonic() - now)
            if _attached and _enabled(EV_ALLOWED):
                self._emit(EV_ALLOWED, decision, cost)
            return decision
        return self._refused_in_memory(decision, now, cost)

    def _refused_in_memory(self, decision: Decision, now: float, cost: float) -> Decision:
        """Count and announce a refusal decided in memory (``decision`` has its details)."""
        decision.allowed = False
        if not next(self._denied[0 if len(self.scopes) == 1 else decision.index]) & 15:
            self._stats.measure(self._monotonic() - now)
        if _attached and _enabled(EV_DENIED):
            self._emit(EV_DENIED, decision, cost)
        return decision

    def _bound(self) -> _Bound:
        """What the closures of :meth:`_solo_path` and :meth:`_multi_path` read, bound once:
        the general method, the states and their lock, the frame, the clock, the wait queues,
        the statistics."""
        general: Callable[[Key, float], Decision] = RateLimiter.try_acquire.__get__(self)
        return (
            general,
            self._states,
            self._lock_backend,
            self._unlock_backend,
            self._frame,
            self._monotonic,
            self._queues,
            self._stats,
        )

    def _compiled_path(self, *, context: bool) -> Callable[..., Decision] | None:
        """The compiled fast path (``_speedups.c``) standing in for :meth:`_solo_path`'s
        closure (``context=False``) or :meth:`_multi_path`'s, when it is built and applies."""
        if _FastPath is None or type(_attached) is not dict or len(self.scopes) > _MAX_SCOPES:
            return None
        if any(type(by) is not str for _, by, _ in self._resolver.templates if by is not None):
            return None  # an id name that is a str subclass (an enum) may hash otherwise
        lane = self._in_place
        general, states, lock, unlock, frame, monotonic, queues, stats = self._bound()
        emit = self._emit

        def on_allowed(decision: Decision) -> None:
            if _enabled(EV_ALLOWED):
                emit(EV_ALLOWED, decision, 1)

        scopes: list[ScopePart] = []
        for (prefix, by, by_id), algorithm in zip(
            self._resolver.templates, frame.algorithms, strict=True
        ):
            if type(algorithm) is TokenBucket:  # admitted in C, with exactly the same floats
                gcra = (algorithm.interval, algorithm.reach)
                scopes.append((prefix, by, by_id, algorithm.admit, *gcra))
            else:
                scopes.append((prefix, by, by_id, algorithm.admit, None, None))
        return _FastPath(
            general=general,
            scopes=tuple(scopes),
            states=states,
            acquire=lock,
            release=unlock,
            grew=lane.grew,
            cap_reached=lane.cap_reached,
            monotonic=monotonic,
            queues=queues,
            frame=frame,
            mark=stats.mark,
            measure=stats.measure,
            admitted=self._admitted,
            attached=_attached,
            on_allowed=on_allowed,
            on_refused=self._refused_in_memory,
            decision_type=Decision,
            context=context,
            next_mark=self._next_mark,
        )

    def _multi_path(self) -> Callable[..., Decision]:
        """``try_acquire`` for fixed scopes in memory given a dict context, as a closure.

        :meth:`_decide_in_memory` with the steps before it (key reading, the checks of
        :meth:`try_acquire`) and every attribute read bound once, as :meth:`_solo_path` does
        for one scope; anything else (another key type, a cost other than 1, an id that is not
        a str, callers queued) goes to the general method.
        """
        compiled = self._compiled_path(context=True)
        if compiled is not None:
            return compiled
        lane = self._memory_lane
        assert lane is not None
        keys_of = self._resolver.read
        general, states, lock, unlock, frame, monotonic, queues, stats = self._bound()
        decide_in, admits = frame.decide_in, frame.admits
        measure = stats.measure
        admitted = self._admitted.__next__
        emit = self._emit
        refused = self._refused_in_memory
        shell = self

        def try_acquire(key: Key = None, cost: float = 1) -> Decision:
            if key.__class__ is not dict or cost is not _ONE or queues:
                return general(key, cost)
            keys = keys_of(key.get)
            if keys is None:
                return general(key, cost)
            now = monotonic()
            notify = False
            lock()
            try:
                held = len(states)
                olds, allowed = decide_in(states, admits, keys, now, 1, True)
                if len(states) != held:
                    notify = lane.grew(now, keys)
            finally:
                unlock()
            if notify:
                lane.cap_reached()
            if now >= shell._next_mark:
                shell._next_mark = stats.mark(now)
            decision: Decision = _new(Decision)
            decision._details = (frame, keys, olds, now, 1)
            decision._resolved = None
            if not allowed:
                return refused(decision, now, 1)
            decision.allowed = True
            if not admitted() & 15:
                measure(monotonic() - now)
            if _attached and _enabled(EV_ALLOWED):
                emit(EV_ALLOWED, decision, 1)
            return decision

        return try_acquire

    async def try_acquire_async(self, key: Key = None, cost: float = 1) -> Decision:
        """:meth:`try_acquire` for asyncio callers (the backend call is awaited)."""
        if self._in_memory:  # no I/O to await: the sync path, without a coroutine per call
            return self.try_acquire(key, cost)
        keys = self._keys(key)
        if cost.__class__ is not int or cost != 1:  # 1 is the default: one cheap check
            positive("cost", cost)
        if self._queues:
            return await self._behind_waiters_async(keys, cost)
        return await self._decide_async(keys, cost)

    def _decide(self, keys: Sequence[str], cost: float) -> Decision:
        frame = self._frame
        started = self._monotonic()
        now = self.clock.time() if self._wall else started
        allowed, states, now = self._decide_backend(keys, frame.algorithms, cost, now, True)
        return self._conclude(allowed, frame, keys, states, now, cost, started)

    async def _decide_async(self, keys: Sequence[str], cost: float) -> Decision:
        frame = self._frame
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
        refund = self._store.refund_async(keys, self._frame.algorithms, cost, self._now())
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
        """Count the outcome, emit its event, and make the decision.

        ``started`` is when the decision began, on the monotonic clock: the latency of one
        decision in ``_sample + 1`` is measured against the budget.
        """
        stats = self._stats
        if started >= self._next_mark:
            # Before counting: a mark holds the totals from before its time.
            self._next_mark = stats.mark(started)
        details: Details  # as _details() makes them; inlined on this hot path
        if frame.single:
            details = (frame, keys[0], states[0], now, cost)
        else:
            details = (frame, keys, states, now, cost)
        if forced is not None:
            details = (*details, forced)
        decision: Decision = _new(Decision)  # lazy_decision, inlined
        decision.allowed = allowed
        decision._details = details
        decision._resolved = None
        if allowed:
            n = next(self._admitted)
        else:
            n = next(self._denied[0 if frame.single else decision.index])
        if not n & self._sample:
            stats.measure(self._monotonic() - started)
        if allowed:
            if _attached and _enabled(EV_ALLOWED):
                self._emit(EV_ALLOWED, decision, cost)
        elif _attached and _enabled(EV_DENIED):
            self._emit(EV_DENIED, decision, cost)
        return decision

    def _emit(self, name: tuple[str, ...], d: Decision, cost: float) -> None:
        events.emit(
            name,
            {"cost": cost, "remaining": d.remaining, "retry_after": d.retry_after},
            {"limiter": self.name, "namespace": self.namespace, "scope": d.scope, "key": d.key},
        )

    def _behind_waiters(self, keys: Sequence[str], cost: float) -> Decision:
        """Refuse a request whose keys have waiters queued (decide it if none has)."""
        forced = self._waiting.ahead(keys, cost)
        if forced is None:
            return self._decide(keys, cost)
        frame = self._frame
        started = self._monotonic()
        now = self.clock.time() if self._wall else started
        _, states, now = self._decide_backend(keys, frame.algorithms, cost, now, False)
        return self._conclude(False, frame, keys, states, now, cost, started, forced)

    async def _behind_waiters_async(self, keys: Sequence[str], cost: float) -> Decision:
        """:meth:`_behind_waiters` with the backend call awaited."""
        forced = self._waiting.ahead(keys, cost)
        if forced is None:
            return await self._decide_async(keys, cost)
        frame = self._frame
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
        frame = self._frame
        allowed, states, now = self._decide_backend(
            keys, frame.algorithms, cost, self._now(), False
        )
        return self._peeked(allowed, frame, keys, states, now, cost)

    async def peek_async(self, key: Key = None, cost: float = 1) -> Decision:
        """:meth:`peek` for asyncio callers."""
        keys = self._keys(key)
        positive("cost", cost)
        frame = self._frame
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
        details = _details(frame, keys, states, now, cost)
        if self._queues:  # as try_acquire: refused behind waiters queued on these keys
            forced = self._waiting.ahead(keys, cost)
            if forced is not None:
                return lazy_decision(False, (*details, forced))
        return lazy_decision(allowed, details)

    def refund(self, key: Key = None, cost: float = 1) -> None:
        """Give back ``cost`` to every scope of the request (e.g. the work was not done)."""
        keys = self._keys(key)
        positive("cost", cost)
        self._store.refund(keys, self._frame.algorithms, cost, self._now())

    async def refund_async(self, key: Key = None, cost: float = 1) -> None:
        """:meth:`refund` for asyncio callers."""
        keys = self._keys(key)
        positive("cost", cost)
        # Shielded: a refund the caller stops waiting for is still made (it is often made on
        # the way out of a cancellation).
        await asyncio.shield(
            self._store.refund_async(keys, self._frame.algorithms, cost, self._now())
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
        if self._in_memory:  # no I/O: decide without a coroutine per decision
            first = self.try_acquire(key, cost)
            if first.allowed:
                return first
            in_memory = True
        else:
            first = await self.try_acquire_async(key, cost)
            if first.allowed:
                return first
            in_memory = False
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
        probe = (
            self._resolver.prefix
        )  # "namespace:name:": no scope's key (a scope's name is not empty)
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
            backend_status=self._health.status,
            failure_policy=self._health.policy,
            backend_errors=self._health.errors,
        )

    def maintain(self, now: float | None = None) -> int:
        """Sweep the backend's expired keys (for the infrastructure's scheduler)."""
        return self.backend.maintain(self._now() if now is None else now)

    def __repr__(self) -> str:
        scopes = ", ".join(f"{s.name}={s.limit:g}/{s.window:g}s" for s in self.scopes)
        return f"<RateLimiter {self.namespace}:{self.name} [{scopes}]>"


def _details(
    frame: Frame, keys: Sequence[str], states: Sequence[State | None], now: float, cost: float
) -> Details:
    """What a decision keeps to compute its numbers later (one key and state, unwrapped)."""
    if frame.single:
        return (frame, keys[0], states[0], now, cost)
    return (frame, keys, states, now, cost)


def _deadline(started: float, timeout: float | None) -> float | None:
    return None if timeout is None else started + timeout
