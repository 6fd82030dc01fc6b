"""What the Redis scripts are sent and what they answer, packed and unpacked (pure: no I/O).

``lua/common.lua`` documents the format. A decide request carries one or more decisions, each
with its cost, whether it commits, and its scopes (each an index into the call's keys, the
algorithm's letter and two parameters); every key appears once in the call however many
decisions touch it. The reply gives the time decided at, then each decision's verdict and the
states it read. One decision alone is the common case and is packed with the least work: for
the server's clock, every byte of its request is the same from one call to the next.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import NamedTuple

from .._errors import ConfigError
from ._algorithms import Algorithm, State
from ._backend import Outcome
from ._format import UnreadableState
from ._registry import ALGORITHMS, REGISTRY

__all__ = ["Decided", "Pending", "Wire", "redis_key"]

_CODES: dict[object, int] = {spec.kind: ord(spec.code) for spec in REGISTRY.values()}
_DECIDE_HEAD = struct.Struct("<BddH")  # caller's time given, that time, TTL slack, decisions
_DECISION = struct.Struct("<dBB")  # cost, commit, scopes
_REFUND_HEAD = struct.Struct("<dBBdd")  # cost, (unused), caller's time given, that time, slack
_SCOPE = struct.Struct("<Bdd")  # algorithm letter, two parameters
_INDEXES = [struct.pack("<H", i) for i in range(256)]
_NOW = struct.Struct("<d")
_DOUBLES = [struct.Struct(f"<{n}d") for n in range(128)]  # a state of n doubles
_MAX_INDEX = 0xFFFF

MAX_BATCH = 128
"""The most decisions one script call carries (and a call never names more than
:data:`MAX_BATCH_KEYS` keys): a batch is bounded in the time the script holds the server."""

MAX_BATCH_KEYS = 1024


def redis_key(prefix: str, key: str) -> str:
    """The Redis key of a limiter's storage key: the limiter's ``namespace:name`` is the tag.

    >>> redis_key("", "app:api:user:u1")
    '{app:api}:user:u1'
    """
    first = key.find(":")
    second = key.find(":", first + 1) if first >= 0 else -1
    if second < 0:  # not a limiter's key: the whole key is its own tag
        return f"{prefix}{{{key}}}"
    return f"{prefix}{{{key[:second]}}}{key[second:]}"


class Pending(NamedTuple):
    """One decision waiting for its call: its storage keys, scopes' algorithms, cost, the
    caller's time (for ``time_source="caller"``) and whether it commits."""

    keys: Sequence[str]
    algorithms: Sequence[Algorithm]
    cost: float
    now: float
    commit: bool


class Decided(NamedTuple):
    """One decision's answer: its outcome, or the :class:`UnreadableState` to raise."""

    outcome: Outcome | None
    error: UnreadableState | None


class Wire:
    """Packs one backend's requests (its prefix, clock source and TTL slack)."""

    __slots__ = ("_caller_time", "_heads", "_made", "_params", "_prefix", "_single", "_slack")

    def __init__(self, prefix: str, caller_time: bool, slack: float) -> None:
        self._prefix = prefix
        self._caller_time = caller_time
        self._slack = slack
        self._params: dict[Algorithm, bytes] = {}
        self._heads: dict[tuple[float, bool, int], bytes] = {}  # each decision's "<dBB"
        self._made: dict[str, bytes] = {}  # storage key -> Redis key, for recent keys
        # A one-decision request on the server's clock, by (algorithms, cost, commit): the
        # same bytes every time.
        self._single: dict[tuple[tuple[Algorithm, ...], float, bool], bytes] = {}

    def scope(self, algorithm: Algorithm) -> bytes:
        """One scope's algorithm letter and two parameters, packed."""
        packed = self._params.get(algorithm)
        if packed is None:
            code = _CODES.get(type(algorithm))
            if code is None:
                raise ConfigError(
                    "algorithm",
                    f"RedisBackend runs the scopes of {', '.join(ALGORITHMS)}, "
                    f"not {type(algorithm).__name__}",
                )
            packed = _SCOPE.pack(code, *algorithm.params())
            if len(self._params) > 4096:  # adaptive limits make new objects; keep it bounded
                self._params.clear()
            self._params[algorithm] = packed
        return packed

    def keys(self, keys: Sequence[str]) -> list[bytes]:
        """The Redis keys, as bytes. Encoded here rather than by redis-py (which would refuse
        a lone surrogate); every other key's bytes are what redis-py would send. Recent ones
        are kept: the keys of busy callers come back again and again."""
        made = self._made
        out = []
        for k in keys:
            b = made.get(k)
            if b is None:
                b = redis_key(self._prefix, k).encode("utf-8", "surrogatepass")
                if len(made) >= 4096:
                    made.clear()
                made[k] = b
            out.append(b)
        return out

    def decide(
        self, algorithms: Sequence[Algorithm], cost: float, now: float, commit: bool
    ) -> bytes:
        """The request of one decision whose keys are the call's keys, in order."""
        if not self._caller_time:
            memo = (tuple(algorithms), cost, commit)
            request = self._single.get(memo)
            if request is None:
                request = self._one(algorithms, cost, 0.0, commit)
                if len(self._single) > 1024:  # adaptive limits make new objects
                    self._single.clear()
                self._single[memo] = request
            return request
        return self._one(algorithms, cost, now, commit)

    def _one(self, algorithms: Sequence[Algorithm], cost: float, now: float, commit: bool) -> bytes:
        parts = [
            _DECIDE_HEAD.pack(self._caller_time, now, self._slack, 1),
            _DECISION.pack(cost, commit, len(algorithms)),
        ]
        for i, algorithm in enumerate(algorithms, 1):
            parts += (_INDEXES[i], self.scope(algorithm))
        return b"".join(parts)

    def batch(self, pending: Sequence[Pending]) -> tuple[list[bytes], bytes]:
        """The keys and request of several decisions in one call, in their order; each key
        is named once. (The caller's time, when used, is the first decision's.)"""
        index: dict[str, int] = {}
        heads = self._heads
        params = self._params
        parts = [_DECIDE_HEAD.pack(self._caller_time, pending[0].now, self._slack, len(pending))]
        append = parts.append
        for p in pending:
            algorithms = p.algorithms
            shape = (p.cost, p.commit, len(algorithms))
            head = heads.get(shape)
            if head is None:
                head = heads[shape] = _DECISION.pack(*shape)
                if len(heads) > 256:  # costs of every size: keep it bounded
                    heads.clear()
            append(head)
            for key, algorithm in zip(p.keys, algorithms, strict=True):
                i = index.get(key)
                if i is None:
                    i = index[key] = len(index) + 1
                append(_INDEXES[i] if i < 256 else struct.pack("<H", i))
                append(params.get(algorithm) or self.scope(algorithm))
        return self.keys(list(index)), b"".join(parts)

    def refund(self, algorithms: Sequence[Algorithm], cost: float, now: float) -> bytes:
        """refund.lua's request: one scope after another, as the call's keys."""
        head = _REFUND_HEAD.pack(cost, True, self._caller_time, now, self._slack)
        return head + b"".join([self.scope(a) for a in algorithms])


def fits(batch: int, keys: int, more_keys: int) -> bool:
    """Whether one more decision of ``more_keys`` keys fits a call of ``batch`` decisions and
    ``keys`` keys."""
    return batch < MAX_BATCH and keys + more_keys <= min(MAX_BATCH_KEYS, _MAX_INDEX)


def outcome(reply: bytes, keys: Sequence[str], commit: bool) -> Outcome:
    """The outcome of a one-decision reply; raises :class:`UnreadableState` (with it) if
    some state stands in for an unreadable one."""
    decided = answers(reply, [(keys, commit)])[0]
    if decided.error is not None:
        raise decided.error
    assert decided.outcome is not None
    return decided.outcome


def answers(reply: bytes, decisions: Sequence[tuple[Sequence[str], bool]]) -> list[Decided]:
    """Each decision's answer, from a reply to ``decisions`` (their keys and commit flags, in
    the order sent)."""
    (now,) = _NOW.unpack_from(reply)
    at = _NOW.size
    out: list[Decided] = []
    append = out.append
    for keys, commit in decisions:
        flags = reply[at]
        at += 1
        states: list[State | None] = []
        unreadable: list[int] = []
        for _ in range(len(keys)):
            n = reply[at]
            at += 1
            if n & 128:
                unreadable.append(len(states))
                n &= 127
            if n:
                states.append(_DOUBLES[n].unpack_from(reply, at))
                at += 8 * n
            else:
                states.append(None)
        result = (flags & 1 == 1, states, now)
        if flags & 2:
            append(Decided(None, UnreadableState(keys, unreadable, result, repaired=commit)))
        else:
            append(Decided(result, None))
    return out
