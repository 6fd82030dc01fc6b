"""The rate-limit arithmetic: pure, no I/O, no clock, no lock.

Theory of operation
-------------------
An algorithm object (:class:`TokenBucket`, :class:`FixedWindow`, :class:`SlidingWindow`) holds
the *parameters* of one limit and nothing else. Its methods take the stored *state* of one key
(or ``None`` for a key never seen), the time ``now`` and a ``cost``. ``admit`` is the hot path:
it returns the state to store, or ``None`` when the cost does not fit. ``decide`` gives the
same answer with every number a caller may want (a :data:`Verdict`: remaining, reset, retry);
a decision computes it only when those numbers are read, from the state ``admit`` saw. A
property test holds the two to the same answer. Backends keep the states; the memory backend
runs these methods under its lock, the SQLite backend inside one ``BEGIN IMMEDIATE``
transaction, and the Redis scripts are tested against them.

Rule 1: a state is a tuple of floats whose first item is the time at which the state becomes
equivalent to no state at all (bucket full again, window over). A backend may drop a key once
``state[0] <= now`` without changing any decision; that is its TTL.

Rule 2: parameters travel with every call, never with the state, so a limit may change between
two calls (the adaptive limit does) and the next decision uses the new one.

Rule 3: a hierarchical decision is two phases (:func:`decide_all`): every scope is checked
against its current state, and new states are stored only if every scope admitted. A refusal
consumes nothing anywhere.

Rule 4: time read before a lock may be a little older than time already seen by a state; every
algorithm treats such a ``now`` as the start of the state's current window (or, for the token
bucket, as the state's own time), never as a reason to forget usage.

Rule 5: arithmetic is exact at wall-clock magnitudes. Backends that share a clock between
machines (Redis, SQLite) decide at Unix times near 1.8e9 s, where one step of a double is
238 ns, far more than :data:`EPSILON`. So no decision rests on a time rounded near ``now``:
every calculation is on differences from ``now``, which are small and exact where they are
taken (two doubles within a factor of two subtract exactly); the times stored (window ends, a
sliding window's expiry, a token bucket's TAT) are rounded up, never down, so that Rule 1
holds to the bit, and the token bucket's carries what the rounding added (``(tat, low)``);
``now + retry_after`` is never before the room announced.

Comparisons allow :data:`EPSILON` (one nanosecond, in cost units and seconds) so that a request
arriving exactly when room appears is admitted despite float rounding; Rule 5 keeps every
rounding far below it (about 1e-16 of the numbers compared).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from math import fmod, ulp
from typing import ClassVar, Protocol, TypeAlias

__all__ = [
    "EPSILON",
    "Algorithm",
    "FixedWindow",
    "SlidingWindow",
    "State",
    "TokenBucket",
    "Verdict",
    "admit_all",
    "decide_all",
]

EPSILON = 1e-9
INF = math.inf

State: TypeAlias = tuple[float, ...]
"""What a backend stores for one key; ``state[0]`` is when it expires (Rule 1)."""

Verdict: TypeAlias = tuple[bool, State | None, int, float, float]
"""``(allowed, new_state, remaining, reset_after, retry_after)`` for one scope.

* ``new_state``: what to store if the whole decision admits (``None`` when this scope refused
  or nothing is to be written);
* ``remaining``: whole units of cost still available once the decision takes effect;
* ``reset_after``: seconds until the scope is back to its full allowance (token bucket), or
  until its window ends (windows);
* ``retry_after``: ``0.0`` when admitted, else seconds until this cost could be admitted, with
  nothing else happening meanwhile (``inf`` when it never can: cost above the limit).
"""


class Algorithm(Protocol):
    """What every limit algorithm offers a backend."""

    name: ClassVar[str]

    @property
    def limit(self) -> float:
        """Units of cost per window."""
        ...

    @property
    def window(self) -> float:
        """Seconds."""
        ...

    def admit(self, state: State | None, now: float, cost: float) -> State | None:
        """The hot path: the state to store if ``cost`` fits at ``now``, else ``None``."""
        ...

    def decide(self, state: State | None, now: float, cost: float) -> Verdict:
        """Judge ``cost`` at ``now`` with all the numbers (``admit`` plus the why)."""
        ...

    def refund(self, state: State | None, now: float, cost: float) -> State | None:
        """Give ``cost`` back; returns the state to store (``None``: delete the key)."""
        ...

    def params(self) -> tuple[float, ...]:
        """The parameters as numbers, in the order the Redis scripts read them."""
        ...


@dataclass(frozen=True, slots=True)
class TokenBucket:
    """``limit`` per ``window`` refilled continuously, holding at most ``burst``: GCRA.

    GCRA keeps one time, the theoretical arrival time (TAT): when the bucket would be full
    again. A cost ``c`` moves it to ``max(TAT, now) + c * interval`` and is admitted when that
    lies no more than ``tolerance = burst * interval`` ahead of ``now``.

    The state holds the TAT as two doubles whose sum is the TAT to full precision:
    ``(tat, low)``, ``tat`` the TAT rounded *up* to a double (when the bucket is full again:
    Rule 1) and ``low <= 0`` the part of a rounding step it stands for. Every calculation
    works on ``ahead = (tat - now) + low``, how far the TAT lies ahead of ``now``: a small
    number, exact to about 1e-16 of itself whatever ``now`` is (see :func:`_tat`). A single
    double would not do: at wall-clock magnitudes one step of a double is 238 ns, so each
    charge would round the TAT by up to half of it, and five charges of a 5-per-second bucket
    would not fit in its one second.

    >>> tb = TokenBucket(limit=10, window=1.0)
    >>> allowed, state, remaining, reset_after, retry_after = tb.decide(None, 0.0, 4)
    >>> allowed, state, remaining, round(reset_after, 3)
    (True, (0.4, 0.0), 6, 0.4)
    """

    name: ClassVar[str] = "token_bucket"

    limit: float
    window: float
    burst: float | None = None
    interval: float = field(init=False, default=0.0)  # seconds per unit of cost
    tolerance: float = field(init=False, default=0.0)  # burst * interval: how far TAT may run
    reach: float = field(init=False, default=0.0, repr=False)  # tolerance + EPSILON

    def __post_init__(self) -> None:
        interval = self.window / self.limit
        burst = self.limit if self.burst is None else self.burst
        object.__setattr__(self, "burst", burst)
        object.__setattr__(self, "interval", interval)
        object.__setattr__(self, "tolerance", burst * interval)
        object.__setattr__(self, "reach", burst * interval + EPSILON)

    def admit(self, state: State | None, now: float, cost: float) -> State | None:
        if state is None:
            ahead = cost * self.interval
        else:
            tat, low = state
            ahead = tat - now + low
            ahead = (ahead if ahead > 0.0 else 0.0) + cost * self.interval
        if ahead > self.reach:
            return None
        tat = now + ahead  # _tat(now, ahead), inlined: this is the hot path
        gap = tat - now
        if gap < ahead:
            tat += ulp(tat)
            gap = tat - now
        return (tat, ahead - gap)

    def decide(self, state: State | None, now: float, cost: float) -> Verdict:
        interval = self.interval
        tolerance = self.tolerance
        if state is None:
            ahead = 0.0
        else:
            ahead = state[0] - now + state[1]
            ahead = ahead if ahead > 0.0 else 0.0
        new = ahead + cost * interval
        if new <= tolerance + EPSILON:
            left = int((tolerance - new) / interval + EPSILON)
            return (True, _tat(now, new), left if left > 0 else 0, new, 0.0)
        left = int((tolerance - ahead) / interval + EPSILON)
        retry = INF if cost * interval > tolerance + EPSILON else _later(now, new - tolerance)
        return (False, None, left if left > 0 else 0, ahead, retry)

    def refund(self, state: State | None, now: float, cost: float) -> State | None:
        if state is None or state[0] <= now:
            return None
        ahead = state[0] - now + state[1] - cost * self.interval
        return _tat(now, ahead) if ahead > 0.0 else None

    def params(self) -> tuple[float, ...]:
        return (self.interval, self.tolerance)


def _tat(now: float, ahead: float) -> State:
    """A token bucket's state: the time ``ahead`` seconds after ``now``, as ``(tat, low)``.

    ``tat`` is ``now + ahead`` rounded up to a double, ``low = ahead - (tat - now)`` what the
    rounding added (``<= 0``, less than one step). At wall-clock magnitudes ``tat - now`` is
    exact (Sterbenz: the two are within a factor of two), so ``(tat - now) + low`` gives
    ``ahead`` back to within a rounding of ``ahead`` itself, not of ``now``.
    ``TokenBucket.admit``, ``_speedups.c`` and ``common.lua`` make the same operations in the
    same order.
    """
    tat = now + ahead
    gap = tat - now
    if gap < ahead:  # rounded down: one step up, so that the state ends no earlier
        tat += ulp(tat)
        gap = tat - now
    return (tat, ahead - gap)


def _later(now: float, wait: float) -> float:
    """``wait`` (seconds, relative), made a wait after which the time is not early.

    A caller adds a ``retry_after`` to the time it was decided at; at wall-clock magnitudes
    ``now + wait`` rounds by up to 119 ns, and rounding down would land before the room it
    was told of. So the result is ``t - now`` for the double ``t`` at or just after
    ``now + wait``: then ``now + result`` is exactly ``t`` (Rule 5). ``0.0`` for no wait.
    """
    if not wait > 0.0:
        return 0.0
    if wait == INF:
        return wait
    t = now + wait
    if t - now < wait:
        t += ulp(t)
    return t - now


def _multiple(index: float, window: float) -> float:
    """``index * window`` rounded up: the first double at or after the exact product.

    Window boundaries are stored as times (a fixed window's end, a sliding window's expiry);
    rounded to the nearest double they could fall up to half a step (119 ns at wall-clock
    times) before the true boundary, and a request in that sliver would be counted in the
    next window (Rule 5). Rounded up, ``state[0] > now`` holds exactly while ``now`` is in
    the window (``now // window``, which is exact, is at most its index).
    """
    end = index * window
    if end // window < index:  # rounded below the product
        end += ulp(end)
    return end


def _window_end(now: float, window: float) -> float:
    """The end of the aligned window holding ``now``: always after ``now``.

    ``(now // window + 1) * window`` rounded to the nearest can fall onto ``now`` itself
    (``now=1.0, window=0.1`` gives ``1.0``); rounded up (:func:`_multiple`), it cannot.
    """
    return _multiple(now // window + 1.0, window)


@dataclass(frozen=True, slots=True)
class FixedWindow:
    """At most ``limit`` per window; windows are aligned on multiples of ``window`` seconds.

    The state is ``(window_end, used)``: the bucket of the current window, keyed by its end.
    A request in a later window finds the old bucket expired and starts a fresh one, so expired
    buckets are cleaned by being replaced (and by the backend's TTL, Rule 1).

    >>> fw = FixedWindow(limit=2, window=10.0)
    >>> [fw.decide((10.0, 2.0), 3.0, 1)[0], fw.decide((10.0, 1.0), 3.0, 1)[1]]
    [False, (10.0, 2.0)]
    """

    name: ClassVar[str] = "fixed_window"

    limit: float
    window: float

    def admit(self, state: State | None, now: float, cost: float) -> State | None:
        if state is not None and state[0] > now:
            used = state[1] + cost
            return (state[0], used) if used <= self.limit + EPSILON else None
        if cost > self.limit + EPSILON:
            return None
        return (_window_end(now, self.window), float(cost))

    def decide(self, state: State | None, now: float, cost: float) -> Verdict:
        limit = self.limit
        if state is not None and state[0] > now:
            end, used = state[0], state[1]
        else:
            end, used = _window_end(now, self.window), 0.0
        if used + cost <= limit + EPSILON:
            used += cost
            left = int(limit - used + EPSILON)
            return (True, (end, used), left if left > 0 else 0, end - now, 0.0)
        left = int(limit - used + EPSILON)
        retry = INF if cost > limit + EPSILON else end - now
        return (False, None, left if left > 0 else 0, end - now, retry)

    def refund(self, state: State | None, now: float, cost: float) -> State | None:
        if state is None or state[0] <= now:
            return None  # that window is over: what it counted no longer limits anything
        used = state[1] - cost
        return (state[0], used) if used > EPSILON else None

    def params(self) -> tuple[float, ...]:
        return (self.limit, self.window)


@dataclass(frozen=True, slots=True)
class SlidingWindow:
    """About ``limit`` per any ``window``: the weighted two-window counter.

    Counts are kept for the current aligned window and the previous one. At fraction ``f`` of
    the current window the estimate of the last ``window`` seconds is
    ``previous * (1 - f) + current``, and a cost is admitted when the estimate plus the cost
    stays within ``limit``. The state is ``(expires, index, current, previous)`` with
    ``index = floor(now / window)`` and ``expires = (index + 2) * window`` (rounded up).

    Error bound: each aligned window admits at most ``limit`` exactly (the estimate is never
    below the current count). Any ``window``-long interval ending at fraction ``f`` of an
    aligned window admits at most ``limit + f * previous <= 2 * limit``; the overshoot exists
    only when the previous window's requests bunched at its end, and is zero when they were
    spread evenly. The estimate can also err the other way (refuse early) when they bunched at
    its start.

    >>> sw = SlidingWindow(limit=10, window=1.0)
    >>> sw.decide((3.0, 1.0, 0.0, 10.0), 1.5, 5)[:3]   # half the previous window still counts
    (True, (3.0, 1.0, 5.0, 10.0), 0)
    """

    name: ClassVar[str] = "sliding_window"

    limit: float
    window: float

    def _roll(self, state: State | None, now: float) -> tuple[float, float, float, float]:
        """``(index, fraction, current, previous)`` as seen at ``now``.

        The time into the window is ``fmod(now, window)``, exact (Rule 5); ``now - index *
        window`` would round the product by up to half a step of ``now`` (119 ns at
        wall-clock times), far more than :data:`EPSILON` once divided by a short window.
        """
        window = self.window
        index = now // window
        into = fmod(now, window)
        if into < 0.0:  # a time before 0: floor division rounds down, fmod toward zero
            into += window
        if state is None:
            return index, into / window, 0.0, 0.0
        stored = state[1]
        if index < stored:  # ``now`` read a little before the state's window: its start
            return stored, 0.0, state[2], state[3]
        fraction = into / window
        if index == stored:
            return stored, fraction, state[2], state[3]
        if index == stored + 1.0:
            return index, fraction, 0.0, state[2]
        return index, fraction, 0.0, 0.0

    def admit(self, state: State | None, now: float, cost: float) -> State | None:
        index, fraction, current, previous = self._roll(state, now)
        if previous * (1.0 - fraction) + current + cost > self.limit + EPSILON:
            return None
        return (_multiple(index + 2.0, self.window), index, current + cost, previous)

    def decide(self, state: State | None, now: float, cost: float) -> Verdict:
        limit, window = self.limit, self.window
        index, fraction, current, previous = self._roll(state, now)
        estimate = previous * (1.0 - fraction) + current
        end = _multiple(index + 1.0, window)
        expires = _multiple(index + 2.0, window)
        if estimate + cost <= limit + EPSILON:
            left = int(limit - estimate - cost + EPSILON)
            return (
                True,
                (expires, index, current + cost, previous),
                left if left > 0 else 0,
                expires - now,
                0.0,
            )
        left = int(limit - estimate + EPSILON)
        reset = (expires - now) if current > 0.0 else (end - now) if previous > 0.0 else 0.0
        # How far into its window ``now`` is (before it, for a ``now`` older than the state's).
        into = fraction * window if index == now // window else now - index * window
        if cost > limit + EPSILON:
            retry = INF
        elif current + cost <= limit + EPSILON:
            # Room appears inside this window as the previous window's weight fades.
            retry = window * (1.0 - (limit - current - cost) / previous) - into
        else:
            # Only in the next window, once this window's count has faded enough.
            retry = (window - into) + window * (1.0 - (limit - cost) / current)
        return (False, None, left if left > 0 else 0, reset, _later(now, retry))

    def refund(self, state: State | None, now: float, cost: float) -> State | None:
        """Take ``cost`` off the current window's count, then off the previous window's.

        The previous window has ended but still weighs ``previous * (1 - f)`` in the estimate
        until the current one ends, so what it counted is still refundable; nothing is once
        both have ended (the state has expired). ``common.lua`` does the same.
        """
        if state is None or state[0] <= now:
            return None
        index, _, current, previous = self._roll(state, now)
        taken = min(current, cost)
        current -= taken
        previous = max(0.0, previous - (cost - taken))
        if current <= EPSILON and previous <= EPSILON:
            return None
        return (_multiple(index + 2.0, self.window), index, current, previous)

    def params(self) -> tuple[float, ...]:
        return (self.limit, self.window)


def admit_all(
    algorithms: Sequence[Algorithm],
    keys: Sequence[str],
    lookup: Callable[[str], State | None],
    now: float,
    cost: float,
) -> tuple[list[State | None], list[State] | None]:
    """The hierarchical decision on the hot path (Rule 3).

    Reads each key's state with ``lookup`` (e.g. ``dict.get`` over what a backend holds or
    fetched) and returns ``(states read, new states)``, where the new states are ``None``
    unless every scope admits. :func:`decide_all` gives the same answer with every number.
    """
    olds: list[State | None] = []
    news: list[State] | None = []
    # No strict= here or below on hot paths: in CPython 3.11 it costs ~0.3 µs per zip.
    for key, algorithm in zip(keys, algorithms):  # noqa: B905
        state = lookup(key)
        olds.append(state)
        if news is not None:
            new = algorithm.admit(state, now, cost)
            if new is None:
                news = None  # refused; keep reading: the decision reports every scope
            else:
                news.append(new)
    return olds, news


def decide_all(
    algorithms: Sequence[Algorithm],
    states: Sequence[State | None],
    now: float,
    cost: float,
) -> tuple[bool, list[Verdict]]:
    """The hierarchical decision (Rule 3): admit only if every scope admits.

    Returns ``(allowed, verdicts)``. When allowed, each verdict carries the state to store.
    When refused, no verdict carries a state, and scopes that would have admitted report their
    room as it stands (nothing was consumed).
    """
    verdicts = [a.decide(s, now, cost) for a, s in zip(algorithms, states, strict=True)]
    for v in verdicts:
        if not v[0]:
            break
    else:
        return True, verdicts
    for i, v in enumerate(verdicts):
        if v[0]:
            unchanged = algorithms[i].decide(states[i], now, 0.0)
            verdicts[i] = (True, None, unchanged[2], unchanged[3], 0.0)
    return False, verdicts
