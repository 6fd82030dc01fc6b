"""The breaker's states and levels, and the record of a move between them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class BreakerState(StrEnum):
    """Where a breaker stands. ``FORCED_OPEN`` and ``DISABLED`` are set by hand only."""

    CLOSED = "closed"
    DEGRADED = "degraded"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    DISABLED = "disabled"


class DegradationLevel(StrEnum):
    """How hard a degraded breaker sheds: thirds of the degraded band."""

    LIGHT = "light"
    MEDIUM = "medium"
    HEAVY = "heavy"


@dataclass(frozen=True, slots=True)
class Transition:
    """One move of the state machine, with why it happened."""

    from_state: BreakerState
    to_state: BreakerState
    from_level: DegradationLevel | None
    level: DegradationLevel | None
    reason: str
    generation: int
    at: float
    failures: int
    calls: int
    failure_rate: float
