"""Pool settings: one frozen, validated record. See ``docs/pool.md`` for what each one means."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

from .._errors import ConfigError
from .._validate import in_interval as _in_interval
from .._validate import int_at_least as _int_at_least
from .._validate import int_between as _int_between
from .._validate import positive as _positive

Strategy = Literal["lifo", "fifo", "round_robin", "least_used"]
HealthCheck = Literal["passive", "active", "mixed"]

STRATEGIES: tuple[str, ...] = ("lifo", "fifo", "round_robin", "least_used")
HEALTH_CHECKS: tuple[str, ...] = ("passive", "active", "mixed")


MAX_MIN_SIZE = 10_000
"""The most members a pool keeps open (``min_size``, connected when it opens): a typo there
would open connections until the server or the process runs out."""


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """What a pool decides by. Times are seconds; ``None`` turns a limit off."""

    # Sizes: min_size kept open, max_size regular members, max_overflow more for bursts.
    min_size: int = 0
    max_size: int = 10
    max_overflow: int = 0
    # An idle member above max_size is closed after this long idle.
    overflow_ttl: float = 60.0
    # An idle member above min_size is closed after this long idle.
    idle_timeout: float | None = 600.0
    # No member is used past this age; each member's age limit is cut by up to
    # lifetime_jitter of itself, so members made together do not all expire together.
    max_lifetime: float | None = 3600.0
    lifetime_jitter: float = 0.05
    strategy: Strategy = "lifo"
    # How long a checkout waits for a member (None: for ever) and how many may wait.
    checkout_timeout: float | None = 30.0
    max_waiting: int | None = None
    # passive: only what borrowers report and what reset finds on return;
    # active: also check idle members every check_interval (± check_jitter);
    # mixed: active, plus a check at checkout after check_idle_after seconds idle.
    health_check_strategy: HealthCheck = "passive"
    check_interval: float = 30.0
    check_jitter: float = 0.2
    check_idle_after: float = 0.5
    # A member held longer than this is reported as a leak (with the stack that took it).
    leak_timeout: float | None = None
    # How often housekeeping looks for members held by finished threads or tasks.
    housekeeping_interval: float = 1.0
    # A connect that has not returned after connect_timeout is given up and counts as a failed
    # one; a health check after check_timeout counts as a failed check (a check before lending
    # also ends with the borrower's checkout_timeout). None: no limit.
    connect_timeout: float | None = 10.0
    check_timeout: float | None = 5.0
    # After a failed connect, wait connect_backoff, doubling up to connect_backoff_max.
    connect_backoff: float = 0.5
    connect_backoff_max: float = 30.0

    def __post_init__(self) -> None:
        _int_between("min_size", self.min_size, 0, MAX_MIN_SIZE)
        _int_at_least("max_size", self.max_size, 1)
        if self.min_size > self.max_size:
            raise ConfigError(
                "min_size", f"must be <= max_size ({self.max_size}), got {self.min_size}"
            )
        _int_at_least("max_overflow", self.max_overflow, 0)
        _positive("overflow_ttl", self.overflow_ttl)
        _optional_positive("idle_timeout", self.idle_timeout)
        _optional_positive("max_lifetime", self.max_lifetime)
        _in_interval("lifetime_jitter", self.lifetime_jitter, "[0, 1)")
        if self.strategy not in STRATEGIES:
            raise ConfigError(
                "strategy", f"must be one of {', '.join(STRATEGIES)}; got {self.strategy!r}"
            )
        _optional_positive("checkout_timeout", self.checkout_timeout)
        if self.max_waiting is not None:
            _int_at_least("max_waiting", self.max_waiting, 0)
        if self.health_check_strategy not in HEALTH_CHECKS:
            raise ConfigError(
                "health_check_strategy",
                f"must be one of {', '.join(HEALTH_CHECKS)}; got {self.health_check_strategy!r}",
            )
        _positive("check_interval", self.check_interval)
        _in_interval("check_jitter", self.check_jitter, "[0, 1)")
        _in_interval("check_idle_after", self.check_idle_after, "[0, inf)")
        _optional_positive("leak_timeout", self.leak_timeout)
        _positive("housekeeping_interval", self.housekeeping_interval)
        _optional_positive("connect_timeout", self.connect_timeout)
        _optional_positive("check_timeout", self.check_timeout)
        _positive("connect_backoff", self.connect_backoff)
        _positive("connect_backoff_max", self.connect_backoff_max)
        if self.connect_backoff_max < self.connect_backoff:
            raise ConfigError(
                "connect_backoff_max",
                f"must be >= connect_backoff ({self.connect_backoff}), "
                f"got {self.connect_backoff_max!r}",
            )

    @property
    def capacity(self) -> int:
        """The most members the pool ever holds: ``max_size + max_overflow``."""
        return self.max_size + self.max_overflow


FIELDS = frozenset(f.name for f in fields(PoolConfig))


def _optional_positive(name: str, value: float | None) -> None:
    if value is not None:
        _positive(name, value)
