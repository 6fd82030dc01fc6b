"""Per-id limits (``Scope(overrides=...)``): which limit decides one id of a scope.

Theory of operation
-------------------
Rule 2 of ``_algorithms.py``: parameters travel with every call, never with the state. So an
id's own limit is only another algorithm object for its scope, handed to the backend with the
call as an adaptive limit is: the memory backend, SQLite and the Redis scripts (which take
each scope's letter and two parameters per call, ``_wire.py``) decide with it unchanged. A
request with an overridden id gets a :class:`~._decision.Frame` of its own, whose algorithms
are the ids' ones (made once and kept); its decision (``limit``, ``remaining``, the headers)
is computed from them.

An id's limit ``L'`` in a scope of limit ``L`` and burst ``B`` has burst ``B * L' / L``: the
same ratio as the scope's own. Window and algorithm stay the scope's.

Rule 1: a state made under one limit stays valid under another. A state holds times and
counts, never a limit:

* token bucket: the TAT, when the id's bucket is full again. Its depth in seconds,
  ``burst * window / limit``, does not change when the burst scales with the limit, so an id
  keeps the share of its allowance it has used (half spent under 10 is half spent under
  50,000) and is full again at the same time;
* fixed and sliding window: the counts of the window(s); they are held against the new limit
  (30 spent under a limit of 100 leaves 20 under a limit of 50, and none under 20).

A table is immutable; :meth:`RateLimiter.set_overrides` swaps in a new one (one reference
write), so a decision sees the old or the new table whole, and the next decision the new one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .._errors import ConfigError
from ._algorithms import Algorithm
from ._decision import Frame
from ._keys import MAX_ID_LENGTH, long_id
from ._scope import Scope

__all__ = ["OverrideTable"]

_KEPT = 1024  # frames and callable limits kept per table; past it, made again


class _Lookup:
    """One scope's overrides: a dict of stored id -> algorithm, or a callable and the
    algorithms of the limits it answered."""

    __slots__ = ("by_limit", "call", "index", "offset", "scope", "table")

    def __init__(self, index: int, offset: int, scope: Scope) -> None:
        self.index = index
        self.offset = offset
        self.scope = scope
        given = scope.overrides
        self.table: dict[str, Algorithm] | None = None
        self.call: Callable[[str], Any] | None = None
        self.by_limit: dict[float, Algorithm] = {}
        if isinstance(given, Mapping):
            self.table = {}
            for given_id, limit in given.items():
                i = str(given_id)  # already text: Scope keeps a mapping's ids as text
                self.table[i if len(i) <= MAX_ID_LENGTH else long_id(i)] = scope.build(limit)
        else:
            self.call = given

    def called(self, ident: str) -> Algorithm | None:
        """The algorithm of the callable's answer for ``ident`` (``None``: the scope's)."""
        assert self.call is not None
        limit = self.call(ident)
        if limit is None:
            return None
        if limit.__class__ is int or limit.__class__ is float:
            algorithm = self.by_limit.get(limit)
            if algorithm is not None:
                return algorithm
        scope = self.scope
        try:
            value = scope.override_limit(f"{scope.name}.overrides", limit)
        except ConfigError as exc:
            raise ConfigError(
                exc.path,
                f"the callable {self.call!r} answered {limit!r} for id {ident!r}: it must "
                f"answer None (the scope's limit) or a limit; {exc.message}",
            ) from None
        if len(self.by_limit) >= _KEPT:
            self.by_limit.clear()
        algorithm = self.by_limit[value] = scope.build(value)
        return algorithm


class OverrideTable:
    """The per-id limits of one limiter's scopes (those with ``overrides``)."""

    __slots__ = ("_frames", "_lookups", "called", "routed")

    def __init__(self, scopes: Sequence[Scope], prefixes: Sequence[str], offsets: Sequence[int]):
        self._lookups = tuple(
            _Lookup(i, offsets[i], s) for i, s in enumerate(scopes) if s.overrides is not None
        )
        self._frames: dict[tuple[int, ...], tuple[Frame, Frame]] = {}
        # Whether a callable decides some scope's ids (the fast paths then stand aside).
        self.called = any(lookup.call is not None for lookup in self._lookups)
        # The storage keys of the mappings' ids: the fast paths send these to the general path.
        self.routed = frozenset(
            prefixes[lookup.index] + i
            for lookup in self._lookups
            if lookup.table is not None
            for i in lookup.table
        )

    def __bool__(self) -> bool:
        return bool(self._lookups)

    def frame(self, base: Frame, keys: Sequence[str]) -> Frame:
        """The frame deciding ``keys``: ``base`` unless some id has its own limit."""
        chosen: list[Algorithm] | None = None
        for lookup in self._lookups:
            ident = keys[lookup.index][lookup.offset :]
            table = lookup.table
            algorithm = table.get(ident) if table is not None else lookup.called(ident)
            if algorithm is not None:
                if chosen is None:
                    chosen = list(base.algorithms)
                chosen[lookup.index] = algorithm
        if chosen is None:
            return base
        # Keyed by identities: the base frame and the algorithms are kept with the entry
        # (``held``), so no id is reused while it is listed.
        memo = (id(base), *map(id, chosen))
        held = self._frames.get(memo)
        if held is not None and held[0] is base:
            return held[1]
        frame = Frame.of(base.meta, tuple(chosen))
        if len(self._frames) >= _KEPT:
            self._frames.clear()
        self._frames[memo] = (base, frame)
        return frame
