"""Pure backoff: the wait before retry ``n`` (1-based), with jitter drawn from an injected RNG."""

from __future__ import annotations

import random
from dataclasses import dataclass

from .._errors import ConfigError
from .._validate import in_interval

_JITTERS = ("full", "equal", "none")


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """Exponential backoff: ``min(max, initial * multiplier ** (n - 1))`` before retry ``n``.

    ``jitter="full"`` waits a uniform draw in ``[0, cap]``; ``"equal"`` one in
    ``[cap/2, cap]``; ``"none"`` waits ``cap``.
    """

    initial: float = 0.1
    multiplier: float = 2.0
    max: float = 10.0
    jitter: str = "full"

    def __post_init__(self) -> None:
        in_interval("initial", self.initial, "[0, inf)")
        in_interval("multiplier", self.multiplier, "[1, inf)")
        in_interval("max", self.max, "[0, inf)")
        if self.max < self.initial:
            raise ConfigError("max", f"must be >= initial ({self.initial!r}), got {self.max!r}")
        if self.jitter not in _JITTERS:
            raise ConfigError("jitter", f"must be one of {_JITTERS}, got {self.jitter!r}")

    def cap(self, retry: int) -> float:
        """The un-jittered wait before retry ``retry`` (1-based)."""
        if retry < 1:
            raise ValueError(f"retry must be >= 1, got {retry!r}")
        try:
            grown = self.initial * self.multiplier ** (retry - 1)
        except OverflowError:
            return float(self.max)
        return float(min(self.max, grown))

    def delay(self, retry: int, rng: random.Random) -> float:
        """The wait before retry ``retry``, jittered with ``rng``."""
        cap = self.cap(retry)
        if self.jitter == "full":
            return rng.uniform(0.0, cap)
        if self.jitter == "equal":
            return cap / 2 + rng.uniform(0.0, cap / 2)
        return cap
