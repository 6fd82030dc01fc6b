"""``Decision``: what a rate limiter answered, with every scope's numbers behind it.

The hot path only learns *whether* a request fits (``admit``); a decision keeps the states the
backend read, and derives every number (remaining, reset, retry, which scope spoke) from them
with the same pure cores the first time one is read. Most callers only look at ``allowed``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from .._errors import RateLimitExceeded
from ._algorithms import Algorithm, State, Verdict, decide_all
from ._unrolled import DictDecider, dict_decider

__all__ = [
    "Decision",
    "Details",
    "Frame",
    "ScopeMeta",
    "ScopeStatus",
    "details",
    "exceeded",
    "lazy_decision",
]


class ScopeMeta(NamedTuple):
    """What a decision needs to know about one scope of its limiter (static)."""

    name: str
    algorithm: str
    window: float
    id_offset: int  # where the caller's id starts in the storage key; -1 for a shared scope


class ScopeStatus(NamedTuple):
    """One scope's part in a decision (``Decision.scopes``), e.g. for one header item."""

    scope: str
    key: str | None  # the caller's id in this scope; None for a shared scope
    algorithm: str
    allowed: bool  # whether this scope had room (a refused decision consumed nothing anyway)
    limit: float
    window: float
    remaining: int
    reset_after: float
    retry_after: float


class Frame(NamedTuple):
    """A limiter's scopes as one decision saw them (replaced when an adaptive limit moves)."""

    meta: tuple[ScopeMeta, ...]
    algorithms: tuple[Algorithm, ...]
    single: bool  # one scope: details hold the key and state themselves, not 1-tuples
    admits: tuple[Callable[[State | None, float, float], State | None], ...]  # bound ``admit``s
    decide_in: DictDecider  # admit_all over the memory backend's dict, for this many scopes

    @classmethod
    def of(cls, meta: tuple[ScopeMeta, ...], algorithms: tuple[Algorithm, ...]) -> Frame:
        n = len(algorithms)
        return cls(meta, algorithms, n == 1, tuple(a.admit for a in algorithms), dict_decider(n))


# Where a lazy decision comes from: ``(frame, keys, states, now, cost)``, plus ``forced`` =
# ``((scope index, wait), ...)`` when the limiter refused for a reason of its own (waiters
# queued ahead on those scopes' keys). For a single-scope frame, ``keys`` and ``states`` are the
# one key and state.
Details = tuple[Any, ...]

# (index, remaining, limit, reset_after, retry_after, scope, key, statuses)
_Resolved = tuple[int, int, float, float, float, str, "str | None", "tuple[ScopeStatus, ...]"]


class Decision:
    """The answer to one request: admitted or not, and when to come back.

    The fields describe the scope that decided: when refused, the refusing scope with the
    longest ``retry_after``; when admitted, the scope with the least ``remaining``.
    ``decision.scopes`` lists every scope. A decision is true when admitted.

    * ``remaining``: whole units of cost left in that scope after this decision;
    * ``limit``: that scope's limit (the current one for an adaptive scope);
    * ``reset_after``: seconds until that scope is back to its full allowance (token bucket)
      or its window ends (windows);
    * ``retry_after``: ``0.0`` when admitted; else seconds to wait before the same request can
      be admitted (``inf`` when it never can: ``cost`` above the limit);
    * ``key``: the caller's id in that scope (``None`` for a shared scope).

    >>> d = limiter.try_acquire({"user": "u1", "org": "o1"})   # doctest: +SKIP
    >>> if not d:
    ...     return 429, {"Retry-After": str(math.ceil(d.retry_after))}
    """

    __slots__ = ("_details", "_resolved", "allowed")

    allowed: bool
    _details: Details | None
    _resolved: _Resolved | None

    def __init__(
        self,
        allowed: bool,
        remaining: int,
        limit: float,
        reset_after: float,
        retry_after: float,
        scope: str,
        *,
        key: str | None = None,
        scopes: tuple[ScopeStatus, ...] = (),
    ) -> None:
        self.allowed = allowed
        self._details = None
        self._resolved = (0, remaining, limit, reset_after, retry_after, scope, key, scopes)

    def __bool__(self) -> bool:
        return self.allowed

    def _fields(self) -> _Resolved:
        resolved = self._resolved
        if resolved is None:
            assert self._details is not None
            resolved = self._resolved = _resolve(self.allowed, self._details)
        return resolved

    @property
    def remaining(self) -> int:
        return self._fields()[1]

    @property
    def limit(self) -> float:
        return self._fields()[2]

    @property
    def reset_after(self) -> float:
        return self._fields()[3]

    @property
    def retry_after(self) -> float:
        return self._fields()[4]

    @property
    def scope(self) -> str:
        return self._fields()[5]

    @property
    def key(self) -> str | None:
        return self._fields()[6]

    @property
    def scopes(self) -> tuple[ScopeStatus, ...]:
        """Every scope's status, in the limiter's scope order."""
        return self._fields()[7]

    @property
    def index(self) -> int:
        """The position of the deciding scope among the limiter's scopes."""
        return self._fields()[0]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Decision):
            return NotImplemented
        return self.allowed == other.allowed and self._fields()[1:6] == other._fields()[1:6]

    def __hash__(self) -> int:
        return hash((self.allowed, self._fields()[1:6]))

    def __reduce__(self) -> tuple[Any, ...]:
        # A lazy decision's details hold its limiter's generated functions, which do not
        # pickle: a pickled decision is its numbers, resolved now.
        return (_resolved_decision, (self.allowed, self._fields()))

    def __repr__(self) -> str:
        _, remaining, limit, reset_after, retry_after, scope, _, _ = self._fields()
        return (
            f"Decision(allowed={self.allowed!r}, remaining={remaining!r}, limit={limit!r}, "
            f"reset_after={reset_after!r}, retry_after={retry_after!r}, scope={scope!r})"
        )


_new = object.__new__


def lazy_decision(allowed: bool, details: Details) -> Decision:
    """A decision whose numbers are computed from ``details`` when first read."""
    d: Decision = _new(Decision)
    d.allowed = allowed
    d._details = details
    d._resolved = None
    return d


def _resolved_decision(allowed: bool, resolved: _Resolved) -> Decision:
    """A decision whose numbers are known (what an unpickled decision is made by)."""
    d: Decision = _new(Decision)
    d.allowed = allowed
    d._details = None
    d._resolved = resolved
    return d


def details(
    frame: Frame, keys: Sequence[str], states: Sequence[State | None], now: float, cost: float
) -> Details:
    """What a decision keeps to compute its numbers later (one key and state, unwrapped)."""
    if frame.single:
        return (frame, keys[0], states[0], now, cost)
    return (frame, keys, states, now, cost)


def exceeded(
    decision: Decision,
    *,
    scope: int | None = None,
    limit: float | None = None,
    retry_after: float | None = None,
) -> RateLimitExceeded:
    """The error that reports a refusal: by default the refusing scope's, as ``decision`` gives
    it; ``scope`` (its index), ``limit`` and ``retry_after`` tell it otherwise (a waiter that
    ran out of time reports the scope it queued for, at its limit now).

    An infinite wait (the cost is above the limit) is no time to retry at: ``retry_after`` is
    ``None`` then, as :class:`~buttress.RejectedError` promises.
    """
    if scope is None:
        name, key = decision.scope, decision.key
        limit = decision.limit if limit is None else limit
    else:
        status = decision.scopes[scope]
        name, key = status.scope, status.key
        limit = status.limit if limit is None else limit
    retry = decision.retry_after if retry_after is None else retry_after
    return RateLimitExceeded(
        name,
        key=key,
        limit=limit,
        retry_after=retry if retry < math.inf else None,
        decision=decision,
    )


def verdicts_for(
    allowed: bool,
    algorithms: Sequence[Algorithm],
    states: Sequence[State | None],
    now: float,
    cost: float,
) -> list[Verdict]:
    """Every scope's verdict for a decision that went ``allowed``, from the states read."""
    fits, verdicts = decide_all(algorithms, states, now, cost)
    if fits and not allowed:
        # Refused by the limiter itself (waiters ahead): nothing was consumed anywhere.
        verdicts = [
            (True, None, *a.decide(s, now, 0.0)[2:4], 0.0)
            for a, s in zip(algorithms, states, strict=True)
        ]
    elif allowed and not fits:
        # Admitted without the backend (fail_open while it is down): admitted everywhere,
        # with whatever room the states show, and no wait.
        verdicts = [(True, v[1], v[2], v[3], 0.0) for v in verdicts]
    return verdicts


def deciding_scope(allowed: bool, verdicts: Sequence[Verdict]) -> int:
    """Which scope speaks for a decision: least room if admitted, longest wait if refused."""
    best = 0
    if allowed:
        for i in range(1, len(verdicts)):
            if verdicts[i][2] < verdicts[best][2]:
                best = i
        return best
    best_wait = -1.0
    for i, v in enumerate(verdicts):
        if not v[0] and v[4] > best_wait:
            best, best_wait = i, v[4]
    return best


_new_status = tuple.__new__  # a NamedTuple made without its Python-level __new__


def _resolve(allowed: bool, details: Details) -> _Resolved:
    frame: Frame = details[0]
    keys, states, now, cost = details[1:5]
    if frame.single:
        keys, states = (keys,), (states,)
    meta, algorithms = frame.meta, frame.algorithms
    verdicts = verdicts_for(allowed, algorithms, states, now, cost)
    if len(details) > 5:
        # Waiters queued on these scopes refuse too; the decision still names the refusing
        # scope with the longest wait (``inf`` when the cost never fits anywhere).
        for queued, wait in details[5]:
            v = verdicts[queued]
            verdicts[queued] = (False, None, v[2], v[3], max(v[4], wait))
    index = deciding_scope(allowed, verdicts) if len(verdicts) > 1 else 0
    # In ScopeStatus's field order, made as the tuple it is: this runs for every response that
    # shows its RateLimit fields, where the NamedTuple's own __new__ costs twice as much.
    statuses = tuple(
        [
            _new_status(
                ScopeStatus,
                (
                    m.name,
                    None if m.id_offset < 0 else k[m.id_offset :],
                    m.algorithm,
                    v[0],
                    a.limit,
                    m.window,
                    v[2],
                    v[3],
                    v[4],
                ),
            )
            for m, a, k, v in zip(meta, algorithms, keys, verdicts, strict=True)
        ]
    )
    s = statuses[index]
    return (index, s.remaining, s.limit, s.reset_after, s.retry_after, s.scope, s.key, statuses)
