"""The contract between a :class:`~buttress.RateLimiter` and the place its states live.

A limiter turns each request into one backend call carrying, for every scope of the request,
the storage key and the algorithm object (its parameters), plus the cost and ``now``. The
backend checks every scope and then writes every new state, atomically, or writes nothing
(:func:`~buttress.ratelimit._algorithms.admit_all`). Parameters travel with each call, so a
backend keeps no configuration and an adaptive limit can change between calls.

The backend answers with the states it read before deciding and the time it decided at; the
limiter's :class:`~buttress.Decision` derives every number (remaining, reset, retry) from them
with the same pure cores, and only when someone reads them.

A backend that runs the Python cores (memory, SQLite) calls ``admit_all`` on the states it
read; one that runs elsewhere (the Redis scripts) must give the same answers for the same
``(now, keys, cost)`` trace, which a conformance test checks.

A backend that cannot answer (a server down or too slow, a file locked too long) raises
:class:`~buttress.BackendError`, within a bounded time; the limiter then follows its failure
policy (``_failure.py``). A backend that finds a stored value it cannot read as a key's state
raises its subclass :class:`~._format.UnreadableState`, carrying the decision made with a spent
state in its place: counted, never an outage. Any other exception is a bug and propagates as
it is.

Optional: ``check_write(keys)``, proof that a decision on ``keys`` could be written now, writing
nothing (:class:`~buttress.BackendError` if not); ``RateLimiter.check_backend`` calls it. Only a
call that writes ends an outage: a backend may answer reads it cannot follow with writes.

Optional: ``timed(clock)``, the backend reading the time from the limiter's ``clock`` (wall or
monotonic, as its ``time_base`` says) once it holds its lock, for a backend whose decisions wait
for one (SQLite): a decision is then made, and reported, at that time (never before ``now``), so
one that waited is not charged to a window that ended while it waited.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol, TypeAlias

from ._algorithms import Algorithm, State

__all__ = ["Backend", "Outcome", "TimeBase"]

TimeBase: TypeAlias = Literal["monotonic", "wall", "server"]
"""Which clock ``now`` comes from: the limiter's ``clock.monotonic()`` (one process), its
``clock.time()`` (state shared across processes or restarts), or the server's own clock (the
backend ignores ``now`` outside tests)."""

Outcome: TypeAlias = tuple[bool, Sequence[State | None], float]
"""``(allowed, states, now)``: whether the request was admitted, the state of each key (in the
order of the keys) as read *before* deciding, and the time the decision was made at (``now``
as given, or the server's clock)."""


class Backend(Protocol):
    """Where a limiter's states live. Every method is atomic over all the keys it is given."""

    @property
    def time_base(self) -> TimeBase: ...

    def decide(
        self,
        keys: Sequence[str],
        algorithms: Sequence[Algorithm],
        cost: float,
        now: float,
        commit: bool = True,
    ) -> Outcome:
        """Check every scope, then (if ``commit`` and all admit) store every new state.

        ``commit=False`` is a peek: the same answer, nothing written.
        """
        ...

    async def decide_async(
        self,
        keys: Sequence[str],
        algorithms: Sequence[Algorithm],
        cost: float,
        now: float,
        commit: bool = True,
    ) -> Outcome:
        """:meth:`decide` for asyncio callers; never blocks the event loop on I/O."""
        ...

    def refund(
        self, keys: Sequence[str], algorithms: Sequence[Algorithm], cost: float, now: float
    ) -> None:
        """Give ``cost`` back to every scope (never beyond its full allowance)."""
        ...

    async def refund_async(
        self, keys: Sequence[str], algorithms: Sequence[Algorithm], cost: float, now: float
    ) -> None: ...

    def reset(self, keys: Sequence[str]) -> None:
        """Forget the given keys: each scope is back to its full allowance."""
        ...

    async def reset_async(self, keys: Sequence[str]) -> None: ...

    def clear(self, prefix: str) -> int:
        """Forget every key starting with ``prefix``; returns how many went."""
        ...

    def key_count(self) -> int:
        """How many keys hold state now (expired ones not yet swept included)."""
        ...

    def maintain(self, now: float) -> int:
        """Drop expired state; returns how many keys went. For the infrastructure's scheduler."""
        ...
