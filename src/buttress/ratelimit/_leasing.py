"""Leasing: a process takes a slice of a caller's allowance in one round trip and decides
locally from it.

With ``lease=Leasing(size=N, ttl=T)`` on a limiter whose backend is shared (Redis, SQLite), a
request whose keys hold no slice takes one: a single decision of cost ``N`` on every scope of
the request (all or nothing, as any decision). Admitted, the request is decided from the slice
and the rest of it stays in this process for ``T`` seconds: the next requests with the same
keys are decided locally, without a round trip, until the slice is used up or expires. A
refused slice is not the end: the request is then decided on its own, so near the limit every
unit is still used. The unused part of a slice goes back (a refund) when the slice is
replaced, expires and is found so, is pushed out by :attr:`Leasing.max_keys`, or at
:meth:`~buttress.RateLimiter.release_leases`.

No unit is admitted that the backend did not grant first, so every process together never
admits more than the limit. The cost is fairness: a slice held by a process that goes quiet is
no one else's until it goes back (at most ``N`` units per process and key, for at most ``T``
seconds, or until the process next decides on that key).

:class:`Leases` is the bookkeeping, pure but for its lock: the limiter's shell asks it, makes
the round trips and refunds it says to.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .._errors import ConfigError
from ._algorithms import State

__all__ = ["DECIDE", "REFUND", "LeaseStep", "Leases", "Leasing", "Slice"]

SWEEP = 2  # expired slices looked at, and given back, per slice taken

# What the limiter's plan for a leased request asks of the backend (RateLimiter._leased_steps):
# (REFUND, keys, units, now) gives units back; (DECIDE, cost, now) decides the request's keys.
REFUND, DECIDE = 0, 1
LeaseStep = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Leasing:
    """Decide a busy caller's requests locally from slices of its allowance (see the module
    docstring): ``size`` units per slice (at least 2), kept ``ttl`` seconds at most, for at
    most ``max_keys`` callers at once (the least recently used slice goes back first)."""

    size: int
    ttl: float = 1.0
    max_keys: int = 10_000

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 2:
            raise ConfigError("lease.size", f"must be an int of at least 2, got {self.size!r}")
        if (
            isinstance(self.ttl, bool)
            or not isinstance(self.ttl, int | float)
            or not math.isfinite(self.ttl)
            or self.ttl <= 0
        ):
            raise ConfigError("lease.ttl", f"must be a number of seconds above 0, got {self.ttl!r}")
        if (
            isinstance(self.max_keys, bool)
            or not isinstance(self.max_keys, int)
            or self.max_keys < 1
        ):
            raise ConfigError("lease.max_keys", f"must be a positive int, got {self.max_keys!r}")


class Slice:
    """What a process holds of one caller's allowance: ``units`` left, until ``expires``
    (monotonic seconds), and how it was granted: the states the backend read, at ``at``
    (backend time), and the cost ``spent`` from it so far (for each decision's numbers)."""

    __slots__ = ("at", "expires", "spent", "states", "units")

    def __init__(
        self, units: float, expires: float, states: Sequence[State | None], at: float, spent: float
    ) -> None:
        self.units = units
        self.expires = expires
        self.states = states
        self.at = at
        self.spent = spent


# (keys, units) to give back
Returned = list[tuple[tuple[str, ...], float]]


class Leases:
    """The slices of one limiter, by the request's storage keys."""

    __slots__ = ("_lock", "_slices", "lease")

    def __init__(self, lease: Leasing) -> None:
        self.lease = lease
        self._slices: OrderedDict[tuple[str, ...], Slice] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._slices)

    def spend(self, keys: tuple[str, ...], cost: float, now: float) -> tuple[Slice, float] | None:
        """Take ``cost`` from the slice for ``keys`` if it holds that much and has not expired:
        ``(slice, cost spent from it so far, this request's included)``; else ``None``."""
        with self._lock:
            held = self._slices.get(keys)
            if held is None or held.expires <= now or held.units < cost:
                return None
            held.units -= cost
            held.spent += cost
            self._slices.move_to_end(keys)
            return held, held.spent

    def take_back(self, keys: tuple[str, ...], now: float) -> Returned:
        """Before a new slice is asked for ``keys``: what to give back (the old slice's units
        left, and up to :data:`SWEEP` expired slices of other callers)."""
        out: Returned = []
        with self._lock:
            held = self._slices.pop(keys, None)
            if held is not None and held.units > 0:
                out.append((keys, held.units))
            for other in list(self._slices)[:SWEEP]:
                old = self._slices[other]
                if old.expires <= now:
                    del self._slices[other]
                    if old.units > 0:
                        out.append((other, old.units))
        return out

    def keep(self, keys: tuple[str, ...], held: Slice) -> Returned:
        """Keep ``held`` for ``keys``; what to give back (a slice it replaces, one pushed out
        past ``max_keys``)."""
        out: Returned = []
        with self._lock:
            replaced = self._slices.pop(keys, None)
            if replaced is not None and replaced.units > 0:
                out.append((keys, replaced.units))
            self._slices[keys] = held
            while len(self._slices) > self.lease.max_keys:
                old_keys, old = self._slices.popitem(last=False)
                if old.units > 0:
                    out.append((old_keys, old.units))
        return out

    def drain(self) -> Returned:
        """Every slice, to give back (:meth:`~buttress.RateLimiter.release_leases`)."""
        with self._lock:
            out = [(keys, held.units) for keys, held in self._slices.items() if held.units > 0]
            self._slices.clear()
        return out
