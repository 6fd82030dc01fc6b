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


# How bad each position is, in one place: the machine compares levels with it, the rate
# limiter's adaptive scopes tell a worsening breaker from a recovering one, and the exporters
# publish the level as a number.
_LEVEL_RANK: dict[DegradationLevel | None, int] = {
    None: 0,
    DegradationLevel.LIGHT: 1,
    DegradationLevel.MEDIUM: 2,
    DegradationLevel.HEAVY: 3,
}
_STATE_RANK: dict[BreakerState, int] = {
    BreakerState.CLOSED: 0,
    BreakerState.DISABLED: 0,
    BreakerState.DEGRADED: 0,  # plus its level's rank
    BreakerState.HALF_OPEN: 4,
    BreakerState.OPEN: 5,
    BreakerState.FORCED_OPEN: 5,
}

PASSING = frozenset({BreakerState.CLOSED, BreakerState.DISABLED})
"""The states in which a breaker lets every call through unjudged: it holds nothing back."""

REFUSING = frozenset({BreakerState.OPEN, BreakerState.FORCED_OPEN})
"""The states in which a breaker refuses every call."""


def level_rank(level: DegradationLevel | None) -> int:
    """0 for no degradation, then 1 (light), 2 (medium), 3 (heavy)."""
    return _LEVEL_RANK[level]


def rank(state: BreakerState, level: DegradationLevel | None = None) -> int:
    """How unhealthy a breaker position is: 0 closed or disabled, 1–3 degraded by level,
    4 half_open, 5 open or forced_open. A move to a higher rank made things worse."""
    return _STATE_RANK[state] + (_LEVEL_RANK[level] if state is BreakerState.DEGRADED else 0)


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
    # Which recovery attempt (half_open) since the breaker last closed: the one started by a
    # move into half_open, or judged by a move out of it; 0 outside recovery.
    recovery_attempts: int = 0
