"""The default backend: states in one dict under one lock, with bounded memory.

Every decision holds the lock for the few microseconds the arithmetic takes, never across I/O
or a wait. No thread, no timer: expired keys are swept a little at a time as new keys arrive,
and :meth:`MemoryBackend.maintain` sweeps everything when a scheduler calls it.

Sweeping: each key inserted examines :data:`SWEEP_STEP` others, walking a snapshot of the keys
that is retaken once used up (an O(n) copy every n/2 insertions, so O(1) amortised). A key
whose state has expired (``state[0] <= now``, Rule 1 of ``_algorithms``) is dropped; dropping
it changes no decision. In a steady stream of new keys every key is examined within n/2
insertions, so the dict holds at most about twice the keys that are still live.

The cap: the dict never holds more than ``max_keys`` keys once a call returns. When a new key
would pass the cap, the backend first drops expired keys it meets, then *evicts* the live key
closest to expiry among :data:`EVICTION_SAMPLE` it samples: the one whose usage is nearest to
having been forgotten anyway, so forgetting it early admits the least extra traffic. The keys of
the request being decided are never evicted (a call carrying more new keys than ``max_keys``
leaves the dict over the cap, which is why a ``RateLimiter`` refuses a cap below its number of
scopes). Eviction is counted, and the event
``("buttress", "rate_limiter", "key_cap_reached")`` marks the start of each episode of evictions
(raise ``max_keys`` if you see it); an episode ends once the keys fall below :data:`REARM` of the
cap, whether the sweep or :meth:`MemoryBackend.maintain` brought them there. Refusing unknown
keys instead would let a client that invents keys lock every newcomer out, so it is not offered.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from .. import events
from .._deprecated import warn_renamed
from .._fork import fork_safe_lock
from .._validate import int_at_least
from ._algorithms import Algorithm, State
from ._backend import Outcome, TimeBase
from ._unrolled import dict_decider

__all__ = ["Lane", "MemoryBackend", "MemoryBackendSnapshot"]

SWEEP_STEP = 2
EVICTION_SAMPLE = 5
MAINTAIN_CHUNK = 1024
REARM = 0.9  # an episode of evictions ends once the keys fall below this share of the cap

EV_KEY_CAP = ("buttress", "rate_limiter", "key_cap_reached")


def _walk(states: dict[str, State]) -> Iterator[str | None]:
    """The sweep's endless walk over the keys, one snapshot after another (``None``: empty).

    Retaking a snapshot is O(n) once every n/2 insertions or so: O(1) amortised.
    """
    while True:
        snapshot = list(states)
        if snapshot:
            yield from snapshot
        else:
            yield None


class Lane(NamedTuple):
    """The memory backend's states and lock, lent to a limiter that decides in them itself.

    The limiter (``_inmemory.py``) does under ``acquire``/``release`` exactly what
    :meth:`MemoryBackend.decide` does: read the states, ``admit``, store the new states, and
    when keys were added call ``grew(now, keys)``, then (unlocked) ``cap_reached()`` if that
    returned true. It saves the backend call and its result tuples on every decision; refunds,
    resets and everything else go through the backend's methods.
    """

    states: dict[str, State]
    acquire: Callable[[], bool]
    release: Callable[[], None]
    grew: Callable[[float, Sequence[str]], bool]
    cap_reached: Callable[[], None]


@dataclass(frozen=True, slots=True)
class MemoryBackendSnapshot:
    """The memory backend's bookkeeping: keys held, the cap, keys swept and evicted so far."""

    keys: int
    max_keys: int
    swept: int
    evicted: int


class MemoryBackend:
    """Keeps rate-limit state in this process. The default backend of every limiter.

    >>> backend = MemoryBackend(max_keys=100_000)
    >>> limiter = RateLimiter(scopes=[Scope("user", limit=10, window=1.0)], backend=backend)
    ... # doctest: +SKIP

    One instance per limiter is the norm (each limiter makes its own when given none); limiters
    that share one share its lock, and their keys stay apart by namespace and name.
    """

    __slots__ = (
        "_acquire",
        "_at_cap",
        "_evicted",
        "_lock",
        "_release",
        "_states",
        "_swept",
        "_walk",
        "max_keys",
    )

    def __init__(self, *, max_keys: int = 1_000_000) -> None:
        self.max_keys = int_at_least("max_keys", max_keys, 1)
        self._states: dict[str, State] = {}
        self._lock = fork_safe_lock()
        self._acquire = self._lock.acquire
        self._release = self._lock.release
        self._walk = _walk(self._states)
        self._swept = 0
        self._evicted = 0
        self._at_cap = False

    @property
    def time_base(self) -> TimeBase:
        return "monotonic"

    # -- decisions ---------------------------------------------------------------------------

    def decide(
        self,
        keys: Sequence[str],
        algorithms: Sequence[Algorithm],
        cost: float,
        now: float,
        commit: bool = True,
    ) -> Outcome:
        states = self._states
        notify = False
        self._acquire()
        try:
            if len(keys) == 1:  # one scope: no two-phase bookkeeping needed
                key = keys[0]
                state = states.get(key)
                new = algorithms[0].admit(state, now, cost)
                if new is None:
                    return False, (state,), now
                if commit:
                    states[key] = new
                    if state is None:
                        notify = self._grew(now, keys)
                olds: Sequence[State | None] = (state,)
            else:
                held = len(states)
                admits = [a.admit for a in algorithms]
                olds, allowed = dict_decider(len(keys))(states, admits, keys, now, cost, commit)
                if not allowed:
                    return False, olds, now
                if len(states) != held:
                    notify = self._grew(now, keys)
        finally:
            self._release()
        if notify:
            self._cap_reached()
        return True, olds, now

    def lane(self) -> Lane:
        """What a limiter needs to decide in this backend's dict itself (see ``Lane``)."""
        return Lane(self._states, self._acquire, self._release, self._grew, self._cap_reached)

    async def decide_async(
        self,
        keys: Sequence[str],
        algorithms: Sequence[Algorithm],
        cost: float,
        now: float,
        commit: bool = True,
    ) -> Outcome:
        return self.decide(keys, algorithms, cost, now, commit)

    def refund(
        self, keys: Sequence[str], algorithms: Sequence[Algorithm], cost: float, now: float
    ) -> None:
        states = self._states
        with self._lock:
            for key, algorithm in zip(keys, algorithms, strict=True):
                new = algorithm.refund(states.get(key), now, cost)
                if new is None:
                    states.pop(key, None)
                else:
                    states[key] = new

    async def refund_async(
        self, keys: Sequence[str], algorithms: Sequence[Algorithm], cost: float, now: float
    ) -> None:
        self.refund(keys, algorithms, cost, now)

    def reset(self, keys: Sequence[str]) -> None:
        states = self._states
        with self._lock:
            for key in keys:
                states.pop(key, None)

    async def reset_async(self, keys: Sequence[str]) -> None:
        self.reset(keys)

    def clear(self, prefix: str = "") -> int:
        """Forget every key starting with ``prefix`` (all of them by default)."""
        with self._lock:
            doomed = [k for k in self._states if k.startswith(prefix)]
            for k in doomed:
                del self._states[k]
        return len(doomed)

    # -- reading -----------------------------------------------------------------------------

    def get(self, key: str) -> State | None:
        """The stored state of one key (``None`` when absent), for tests and debugging."""
        return self._states.get(key)

    def key_count(self) -> int:
        return len(self._states)

    def snapshot(self) -> MemoryBackendSnapshot:
        """Keys held, the cap, keys swept and evicted so far."""
        return MemoryBackendSnapshot(len(self._states), self.max_keys, self._swept, self._evicted)

    def stats(self) -> MemoryBackendSnapshot:
        """Deprecated: :meth:`snapshot`."""
        warn_renamed("MemoryBackend.stats()")
        return self.snapshot()

    # -- memory bounds -----------------------------------------------------------------------

    def maintain(self, now: float) -> int:
        """Drop every expired key, a chunk at a time so deciders never wait long for the lock."""
        removed = 0
        keys = list(self._states)
        for start in range(0, len(keys), MAINTAIN_CHUNK):
            with self._lock:
                states = self._states
                for key in keys[start : start + MAINTAIN_CHUNK]:
                    state = states.get(key)
                    if state is not None and state[0] <= now:
                        del states[key]
                        removed += 1
        with self._lock:
            self._swept += removed
            if len(self._states) < self.max_keys * REARM:
                self._at_cap = False
        return removed

    def _grew(self, now: float, protected: Sequence[str]) -> bool:
        """New keys went in (lock held): sweep a step, evict while over the cap.

        Returns whether an eviction episode started (the caller emits the event unlocked).
        """
        states = self._states
        get = states.get
        walk = self._walk
        for _ in range(SWEEP_STEP):
            key = next(walk)
            if key is None:
                break
            state = get(key)
            if state is not None and state[0] <= now:
                del states[key]
                self._swept += 1
        if len(states) <= self.max_keys:
            if self._at_cap and len(states) < self.max_keys * REARM:
                self._at_cap = False  # the episode is over: the next eviction starts another
            return False
        started = False
        # Keys that may go: all but this request's own. Each round drops one of them or walks
        # on; the walk retakes a snapshot of every key once used up, so it reaches one in
        # time (giving up after a few fruitless rounds, with a stale snapshot of deleted keys,
        # left the dict over the cap).
        spare = len(states) - len({key for key in protected if key in states})
        while len(states) > self.max_keys and spare > 0:
            victim: str | None = None
            victim_expiry = math.inf
            for _ in range(EVICTION_SAMPLE):
                key = next(walk)
                if key is None:
                    break
                state = get(key)
                if state is None or key in protected:
                    continue
                if state[0] <= now:  # expired: dropping it is free
                    victim, victim_expiry = key, -math.inf
                    break
                if state[0] < victim_expiry:
                    victim, victim_expiry = key, state[0]
            if victim is None:
                continue
            del states[victim]
            spare -= 1
            if victim_expiry == -math.inf:
                self._swept += 1
                continue
            self._evicted += 1
            if not self._at_cap:
                self._at_cap = started = True
        return started

    def _cap_reached(self) -> None:
        if events.enabled(EV_KEY_CAP):
            events.emit(
                EV_KEY_CAP,
                {"keys": len(self._states), "max_keys": self.max_keys, "evicted": self._evicted},
                {"backend": "memory"},
            )

    def __repr__(self) -> str:
        return f"<MemoryBackend keys={len(self._states)} max_keys={self.max_keys}>"
