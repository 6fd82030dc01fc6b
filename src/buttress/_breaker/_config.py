"""Breaker settings: one frozen, validated record.

Every threshold is optional (``None`` turns its signal off); what is set must make sense, or
:class:`~buttress.ConfigError` names the parameter.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from .._errors import ConfigError
from .._validate import fraction as _fraction
from .._validate import in_interval as _in_interval
from .._validate import int_at_least as _int_at_least
from .._validate import int_between as _int_between
from .._validate import is_number
from .._validate import positive as _positive
from ._states import DegradationLevel

MAX_BUCKETS = 1000
"""The most time buckets a breaker's window is kept in (three lists of that many counts are
made with the breaker): a window is counted to a thousandth at finest."""

ExceptionMatcher = type[BaseException] | Callable[[BaseException], bool]

DEFAULT_SHED_PROBABILITY: Mapping[DegradationLevel, float] = {
    DegradationLevel.LIGHT: 0.1,
    DegradationLevel.MEDIUM: 0.3,
    DegradationLevel.HEAVY: 0.6,
}

DEFAULT_RESET_TIMEOUT_JITTER = 0.1
"""The default +/- share of random spread on a breaker's open time. With none, worker
processes whose breakers opened together probe a dead upstream together: 4 workers were seen
probing within 0.1 s of each other, 5 probes each per cycle. +/-10% de-synchronises them;
``reset_timeout_jitter=0`` gives exact open times back."""


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """What a :class:`~buttress.CircuitBreaker` decides by. See ``docs/circuit-breaker.md``."""

    # The sliding window all signals are counted over, in seconds, split in ``buckets``.
    window: float = 60.0
    buckets: int = 10
    # Failure count in the window: degraded from ``degradation_threshold``, open at
    # ``failure_threshold``.
    failure_threshold: int | None = 5
    degradation_threshold: int | None = 3
    # Failure rate in the window, once it holds ``minimum_calls`` outcomes.
    failure_rate_threshold: float | None = 0.5
    degradation_rate_threshold: float | None = 0.2
    minimum_calls: int = 10
    # Slow-call rate: the share of successful calls that took ``slow_call_duration`` seconds
    # or more. A failure counts as a failure, never as slow, so no failure can dilute it.
    slow_call_duration: float | None = None
    slow_call_rate_threshold: float | None = 0.5
    slow_degradation_rate_threshold: float | None = 0.2
    # Failures in a row open the breaker whatever the window says (low-traffic services).
    consecutive_failure_threshold: int | None = None
    # A degraded level (or degraded itself) is left downwards only once the severity is this
    # far (a fraction of the band) below the level's floor: no flapping on a boundary.
    level_hysteresis: float = 0.05
    # Probability of shedding a non-critical call in each degraded level.
    shed_probability: Mapping[DegradationLevel, float] = field(
        default_factory=lambda: dict(DEFAULT_SHED_PROBABILITY)
    )
    # Open for ``reset_timeout``, times ``reset_timeout_multiplier`` per failed recovery,
    # capped at ``reset_timeout_max``, with +/- ``reset_timeout_jitter`` (a fraction).
    reset_timeout: float = 30.0
    reset_timeout_multiplier: float = 1.0
    reset_timeout_max: float | None = None  # None: 300 s, or reset_timeout if longer
    reset_timeout_jitter: float = DEFAULT_RESET_TIMEOUT_JITTER
    # Half-open: this many probes, closed when ``half_open_success_ratio`` of them succeed.
    half_open_max_calls: int = 5
    half_open_success_ratio: float = 0.8
    # A probe still running after this long counts as failed and frees its permit.
    probe_timeout: float = 30.0
    # Slow start: for ``slow_start`` seconds after recovering (half-open to closed), the share
    # of normal and sheddable calls admitted grows linearly from ``slow_start_initial`` to all
    # of them, instead of the whole load (and every rate limiter's refilled burst) at once.
    # 0 turns it off.
    slow_start: float = 0.0
    slow_start_initial: float = 0.1
    health_check_interval: float = 10.0
    # Classification.
    record: tuple[ExceptionMatcher, ...] = (Exception,)
    ignore: tuple[ExceptionMatcher, ...] = ()
    failure_result: Callable[[Any], bool] | None = None
    # An HTTP client error (400-499 but 408 and 429) counts for nothing: the request was
    # wrong, the dependency answered (see ``_outcome.py``).
    client_errors_neutral: bool = True

    def __post_init__(self) -> None:
        _positive("window", self.window)
        _int_between("buckets", self.buckets, 1, MAX_BUCKETS)
        if self.failure_threshold is not None:
            _int_at_least("failure_threshold", self.failure_threshold, 1)
        if self.degradation_threshold is not None:
            _int_at_least("degradation_threshold", self.degradation_threshold, 1)
            if self.failure_threshold is None:
                raise ConfigError(
                    "degradation_threshold", "needs failure_threshold (the top of its band)"
                )
            if self.degradation_threshold >= self.failure_threshold:
                raise ConfigError(
                    "degradation_threshold",
                    f"must be below failure_threshold ({self.failure_threshold}), "
                    f"got {self.degradation_threshold}; use None to turn degradation off",
                )
        _rate_band(
            "failure_rate_threshold",
            self.failure_rate_threshold,
            "degradation_rate_threshold",
            self.degradation_rate_threshold,
        )
        _int_at_least("minimum_calls", self.minimum_calls, 1)
        if self.slow_call_duration is not None:
            _positive("slow_call_duration", self.slow_call_duration)
        _rate_band(
            "slow_call_rate_threshold",
            self.slow_call_rate_threshold,
            "slow_degradation_rate_threshold",
            self.slow_degradation_rate_threshold,
        )
        if self.consecutive_failure_threshold is not None:
            _int_at_least("consecutive_failure_threshold", self.consecutive_failure_threshold, 1)
        _in_interval("level_hysteresis", self.level_hysteresis, "[0, 1/3)")
        if not isinstance(self.shed_probability, Mapping):
            raise ConfigError(
                "shed_probability",
                f"must map levels (light, medium, heavy) to fractions, got "
                f"{self.shed_probability!r}",
            )
        shed = dict(self.shed_probability)
        for key, p in shed.items():
            try:
                level = DegradationLevel(key)
            except ValueError:
                raise ConfigError(
                    "shed_probability", f"unknown level {key!r} (light, medium or heavy)"
                ) from None
            _fraction(f"shed_probability.{level.value}", p)
        merged = {
            **DEFAULT_SHED_PROBABILITY,
            **{DegradationLevel(k): float(v) for k, v in shed.items()},
        }
        object.__setattr__(self, "shed_probability", merged)
        _positive("reset_timeout", self.reset_timeout)
        _in_interval("reset_timeout_multiplier", self.reset_timeout_multiplier, "[1, inf]")
        cap = self.reset_timeout_max
        if cap is not None:
            _in_interval("reset_timeout_max", cap, "(0, inf]")  # inf: no cap at all
            if not cap >= self.reset_timeout:
                raise ConfigError(
                    "reset_timeout_max",
                    f"must be >= reset_timeout ({self.reset_timeout}), got {cap!r}",
                )
        _in_interval("reset_timeout_jitter", self.reset_timeout_jitter, "[0, 1)")
        _int_at_least("half_open_max_calls", self.half_open_max_calls, 1)
        _in_interval("half_open_success_ratio", self.half_open_success_ratio, "(0, 1]")
        _positive("probe_timeout", self.probe_timeout)
        if not (is_number(self.slow_start) and 0.0 <= self.slow_start < math.inf):
            raise ConfigError(
                "slow_start", f"must be a finite number of seconds >= 0, got {self.slow_start!r}"
            )
        if not (is_number(self.slow_start_initial) and 0.0 < self.slow_start_initial <= 1.0):
            raise ConfigError(
                "slow_start_initial", f"must be in (0, 1], got {self.slow_start_initial!r}"
            )
        _positive("health_check_interval", self.health_check_interval)
        object.__setattr__(self, "record", _matchers("record", self.record))
        object.__setattr__(self, "ignore", _matchers("ignore", self.ignore))
        if self.failure_result is not None and not callable(self.failure_result):
            raise ConfigError("failure_result", f"must be a callable, got {self.failure_result!r}")
        if not isinstance(self.client_errors_neutral, bool):
            raise ConfigError(
                "client_errors_neutral",
                f"must be True or False, got {self.client_errors_neutral!r}",
            )

    @property
    def open_time_cap(self) -> float:
        """``reset_timeout_max``, or (``None``) 300 s or ``reset_timeout`` if longer."""
        cap = self.reset_timeout_max
        return max(300.0, self.reset_timeout) if cap is None else cap

    @property
    def probes_needed(self) -> int:
        """Successful probes that close a half-open breaker."""
        return max(1, math.ceil(self.half_open_success_ratio * self.half_open_max_calls - 1e-9))


def _rate_band(top_name: str, top: float | None, low_name: str, low: float | None) -> None:
    if top is not None:
        _in_interval(top_name, top, "(0, 1]")
    if low is None:
        return
    if top is None:
        raise ConfigError(low_name, f"needs {top_name} (the top of its band)")
    if not (is_number(low) and 0.0 < low < top):
        raise ConfigError(low_name, f"must be in (0, {top_name}={top}), got {low!r}")


def _matchers(
    name: str, value: Sequence[ExceptionMatcher] | ExceptionMatcher
) -> tuple[ExceptionMatcher, ...]:
    items = (value,) if isinstance(value, type) or not isinstance(value, Sequence) else value
    out: list[ExceptionMatcher] = []
    for item in items:
        if (isinstance(item, type) and issubclass(item, BaseException)) or callable(item):
            out.append(cast(ExceptionMatcher, item))
        else:
            raise ConfigError(
                name, f"expects exception types or predicates on an exception, got {item!r}"
            )
    return tuple(out)
