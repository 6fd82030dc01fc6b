"""``failure_policy="local"``: decisions in this process's memory while the shared backend is down.

A limiter whose states live in SQLite or Redis shares each limit with every process that uses
the same backend. While that backend cannot answer, a limiter with the ``local`` policy decides
in a private :class:`~._memory.MemoryBackend` instead, each scope at ``local_share`` of its limit
(and of its burst): with ``local_share = 1/N`` for N processes, the fleet together admits about
the limit, as the backend would have. When the backend answers again the local states are
dropped and the backend decides as before: it kept its own states through the outage, so
nothing admitted before the outage is forgotten, and what was admitted locally was never the
backend's to count.

The share is a setting, not learned: the backend's states say how much of a limit is left,
not which process spent it (a token bucket keeps one time, not a count), and shares learned by
processes at different moments need not add up to one. A process cannot count the others
without the backend, which is what is down.

A scope whose share would be below one unit per window keeps one unit (or its whole limit if
that is smaller): a per-caller limit of 5 per minute over 8 processes would otherwise refuse
every caller while the backend is down. Those scopes may admit up to one unit per process per
window (N in all), a little over the limit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ._algorithms import Algorithm, State
from ._backend import Outcome
from ._decision import Frame
from ._memory import MemoryBackend

__all__ = ["LocalDecisions", "LocalStates", "scaled"]


class LocalStates(tuple[State | None, ...]):
    """The states of a decision made locally (``failure_policy="local"``), as the scaled
    algorithms read them: a decision built on them uses the scaled limits (``LocalDecisions
    .frame``), and a lease is never taken on them (nothing was granted by the backend)."""

    __slots__ = ()


def scaled(algorithm: Algorithm, share: float) -> Algorithm:
    """``algorithm`` at ``share`` of its limit and burst (never below one unit, nor above the
    limit itself)."""
    if share == 1.0:
        return algorithm
    limit = algorithm.limit
    floor = min(limit, 1.0)
    changes: dict[str, float] = {"limit": max(limit * share, floor)}
    burst = getattr(algorithm, "burst", None)
    if burst is not None:
        changes["burst"] = max(burst * share, min(burst, 1.0))
    return dataclasses.replace(algorithm, **changes)  # type: ignore[type-var]


class LocalDecisions:
    """One limiter's private memory backend and its scaled algorithms, for an outage.

    Thread-safe as the memory backend is; :meth:`drop` swaps in an empty one (a decision
    under way in the old one finishes there, harmlessly).
    """

    __slots__ = ("_frames", "_last", "memory", "share")

    def __init__(self, share: float) -> None:
        self.share = share
        self.memory = MemoryBackend()
        # (algorithms, scaled): one pair, swapped whole, so that a thread never reads one
        # tuple's scaling for another.
        self._last: tuple[Sequence[Algorithm], tuple[Algorithm, ...]] | None = None
        self._frames: tuple[Frame, Frame] | None = None

    def frame(self, frame: Frame) -> Frame:
        """The frame a local decision is built on: ``frame`` with the scaled algorithms, so
        its numbers (``limit``, ``remaining``, ``retry_after``) are this process's share."""
        frames = self._frames
        if frames is None or frames[0] is not frame:
            frames = self._frames = (frame, Frame.of(frame.meta, self.algorithms(frame.algorithms)))
        return frames[1]

    def algorithms(self, algorithms: Sequence[Algorithm]) -> tuple[Algorithm, ...]:
        """``algorithms`` scaled by the share (cached for the last tuple seen: a limiter's
        frame changes only when an adaptive limit moves)."""
        last = self._last
        if last is None or last[0] is not algorithms:
            last = self._last = (algorithms, tuple(scaled(a, self.share) for a in algorithms))
        return last[1]

    def decide(
        self,
        keys: Sequence[str],
        algorithms: Sequence[Algorithm],
        cost: float,
        now: float,
        commit: bool,
    ) -> Outcome:
        allowed, states, now = self.memory.decide(
            keys, self.algorithms(algorithms), cost, now, commit
        )
        return allowed, LocalStates(states), now

    def refund(
        self, keys: Sequence[str], algorithms: Sequence[Algorithm], cost: float, now: float
    ) -> None:
        self.memory.refund(keys, self.algorithms(algorithms), cost, now)

    def drop(self) -> None:
        """Forget every local state (the backend answers again, or an outage begins)."""
        if self.memory.key_count():
            self.memory = MemoryBackend()

    def key_count(self) -> int:
        return self.memory.key_count()
