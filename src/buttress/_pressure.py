"""Pressure levels and the hysteresis that moves between them. Pure: ``now`` is passed in.

Every monitor of a resource (memory, CPU, an event loop's lag) reports one of three levels,
and all of them move by one rule, so that they read alike and the pipeline can shed by any:

Rule 1 (rising): a level is entered at once, on the first sample that reaches it. By the time
a resource is short there is no time to wait for a second opinion.

Rule 2 (falling): a level is left only after ``exit_samples`` samples in a row that no longer
hold it, judged against exit lines a margin below the thresholds (each monitor draws its own
lines). It falls to the highest level any sample of that streak still held, so critical may
fall to warning or straight to normal. A signal wobbling around a threshold therefore stays
at the higher level instead of flapping.

A monitor turns its signals into two ranks per sample, the level the sample *enters* (against
the thresholds) and the level it *holds* (against the exit lines), and :class:`Hysteresis`
applies the two rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ._errors import ConfigError
from ._validate import int_at_least

__all__ = ["Hysteresis", "LevelChange", "PressureLevel", "rank_of"]


class PressureLevel(StrEnum):
    """How short a resource is: ``normal``, ``warning`` (relieve) or ``critical`` (also shed).

    Memory, CPU and event-loop lag share these levels (``MemoryLevel`` is this class).
    """

    NORMAL = "normal"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """0, 1 or 2: levels compare by rank."""
        return _RANK[self]

    @classmethod
    def parse(cls, value: PressureLevel | str, path: str = "level") -> PressureLevel:
        """The level named ``value``; ``ConfigError`` at ``path`` for any other name."""
        try:
            return cls(value)
        except ValueError:
            names = ", ".join(level.value for level in cls)
            raise ConfigError(path, f"must be one of {names}; got {value!r}") from None

    @classmethod
    def of_rank(cls, rank: int) -> PressureLevel:
        return _BY_RANK[rank]


_RANK = {PressureLevel.NORMAL: 0, PressureLevel.WARNING: 1, PressureLevel.CRITICAL: 2}
_BY_RANK = {v: k for k, v in _RANK.items()}


@dataclass(frozen=True, slots=True)
class LevelChange:
    """The level moved. ``crossed`` lists the levels whose relief callbacks are due.

    Rising crosses every level passed on the way up (normal → critical crosses warning, then
    critical); falling crosses only ``normal``, on reaching it. ``reason`` names the signal
    that raised the level, or is ``recovered``. ``at`` is the monotonic time of the move.
    """

    previous: PressureLevel
    level: PressureLevel
    reason: str
    crossed: tuple[PressureLevel, ...]
    at: float = 0.0


class Hysteresis:
    """The current level, moved by Rules 1 and 2 of the module docstring.

    >>> levels = Hysteresis(exit_samples=2)
    >>> levels.step(entered=2, held=2, reason="ratio", now=0.0).level.value
    'critical'
    >>> levels.step(entered=0, held=0, reason="ratio", now=1.0) is None   # once below: not yet
    True
    >>> levels.step(entered=0, held=1, reason="ratio", now=2.0).level.value  # the streak held 1
    'warning'
    """

    __slots__ = ("_below", "_below_hold", "exit_samples", "level", "reason", "since")

    def __init__(self, exit_samples: int, now: float = 0.0) -> None:
        self.exit_samples = int_at_least("exit_samples", exit_samples, 1)
        self.level = PressureLevel.NORMAL
        self.since = now
        self.reason = "initial"
        self._below = 0  # samples in a row below the current level's exit line
        self._below_hold = 0  # the highest rank those samples still held

    def step(self, entered: int, held: int, reason: str, now: float) -> LevelChange | None:
        """Feed one sample's ranks (``held >= entered``); returns the change of level, if any.

        ``reason`` is what raised ``entered`` (kept only when the level rises).
        """
        current = self.level.rank
        if entered > current:
            return self._move(entered, reason, now)
        if held >= current:
            self._below = 0
            return None
        self._below += 1
        self._below_hold = held if self._below == 1 else max(self._below_hold, held)
        if self._below < self.exit_samples:
            return None
        return self._move(self._below_hold, "recovered", now)

    @property
    def samples_to_leave(self) -> int:
        """How many more samples below the exit line it takes to leave the level (0: normal)."""
        if self.level is PressureLevel.NORMAL:
            return 0
        return self.exit_samples - self._below

    def _move(self, rank: int, reason: str, now: float) -> LevelChange:
        previous = self.level
        self.level = _BY_RANK[rank]
        self.since = now
        self.reason = reason
        self._below = 0
        if rank > previous.rank:
            crossed = tuple(_BY_RANK[r] for r in range(previous.rank + 1, rank + 1))
        else:
            crossed = (PressureLevel.NORMAL,) if rank == 0 else ()
        return LevelChange(previous, self.level, reason, crossed, now)

    def __repr__(self) -> str:
        return (
            f"Hysteresis(level={self.level.value}, reason={self.reason!r}, "
            f"samples_to_leave={self.samples_to_leave})"
        )


def rank_of(value: float | None, warning: float | None, critical: float | None) -> int:
    """The rank ``value`` reaches against the two thresholds (``None``: not reached)."""
    if value is None:
        return 0
    if critical is not None and value >= critical:
        return 2
    if warning is not None and value >= warning:
        return 1
    return 0
