"""One typed configuration for the whole infrastructure, from a dict, TOML or the environment.

>>> cfg = load_config({"circuit_breakers": {"payments": {"failure_threshold": 8}}}, env={})
>>> cfg.circuit_breakers["payments"].failure_threshold
8

Unknown keys and bad values raise :class:`~buttress.ConfigError` naming the path, e.g.
``rate_limiting.limiters.api.scopes[0].limit: must be > 0.0, got 0``; an unknown key says
which known one it is close to. Defaults follow the guide.

Environment variables follow pydantic-settings' conventions: the prefix ``BUTTRESS_``, then a
path with ``__`` between its parts, in any case:
``BUTTRESS_MEMORY_MANAGER__CRITICAL_THRESHOLD=0.9``,
``BUTTRESS_CIRCUIT_BREAKERS__PAYMENTS__RESET_TIMEOUT=10s``. Only variables whose first part
names a section are read (``BUTTRESS_NO_EXTENSIONS``, ``BUTTRESS_LOG_LEVEL`` and the like are
left alone); below a section, a misspelt key is an error. A value is read as its setting
expects: a number's or a duration's text, ``true``/``false``, JSON for a list or a table,
``null`` for "unset". They override what a file or dict says; a :class:`Config` already built
is taken as it is.

Durations (``reset_timeout``, ``check_interval``, ...) take a number of seconds or text with a
unit (``"500ms"``, ``"30s"``, ``"2m"``, ``"1h"``). A bare number above what is plausible for
its setting (:data:`PLAUSIBLE_SECONDS`) is refused: it is far more likely milliseconds.
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import os
import tomllib
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ._breaker._config import DEFAULT_RESET_TIMEOUT_JITTER, DEFAULT_SHED_PROBABILITY, MAX_BUCKETS
from ._breaker._outcome import matches_any
from ._chaos import FaultSettings
from ._classify import Side, exception_rules, parse_rules, result_rule
from ._clock import SystemClock
from ._errors import ConfigError
from ._imports import import_callable, import_exception
from ._memory._probe import Source
from ._pool._config import MAX_MIN_SIZE, HealthCheck, Strategy
from ._redact import redact_field, redacted_logger
from ._validate import describe_seconds, is_number, parse_duration
from .ratelimit._registry import AlgorithmName

if TYPE_CHECKING:
    from ._clock import Clock
    from ._retry import Retry
    from .ratelimit._scope import Scope

__all__ = [
    "PLAUSIBLE_SECONDS",
    "ChaosScheduleSettings",
    "ChaosSettings",
    "CircuitBreakerSettings",
    "Config",
    "FaultInjectionSettings",
    "LimiterSettings",
    "MemoryManagerSettings",
    "PoolSettings",
    "RateLimitingSettings",
    "RetryBudgetSettings",
    "RetrySettings",
    "ScopeSettings",
    "ServiceSettings",
    "load_config",
]

ENV_PREFIX = "BUTTRESS_"
ENV_DELIMITER = "__"

_log = redacted_logger("buttress.config")


class EnvText(str):
    """A value as a ``BUTTRESS_...`` variable spells it: text, whatever the setting's type."""

    __slots__ = ()


STRICT_NUMBERS: Mapping[str, Any] = {"strict_numbers": True}
"""The validation context of :func:`load_config`: a number in a file or a dict must be a number
(``5``, not ``"5"``, as the components' own constructors want it); only the environment's
text is read as a number."""


def _number_text(value: Any) -> Any:
    """A number's text (``"10"``, ``"0.5"``) read as that number; anything else as it is."""
    if not isinstance(value, str):
        return value
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _number(value: Any, info: ValidationInfo) -> Any:
    """A number setting's value: its text read as the number where the text may come from the
    environment, which spells every value so; anything else is left to the strict check, which
    refuses ``true`` and ``"high"`` (and, in a file, ``"5"``) for a number.

    Text may come from the environment in a ``BUTTRESS_...`` variable (:class:`EnvText`), or in
    a ``Config`` validated without :data:`STRICT_NUMBERS`: a model nested in the application's
    pydantic-settings, which hands every value over as text."""
    strict = bool(info.context and info.context.get("strict_numbers"))  # load_config
    if strict and isinstance(value, str) and not isinstance(value, EnvText):
        return value
    return _number_text(value)


# Strict: a number (an int is fine), never a bool; its text only from the environment.
# The bounds are the components' own (their config dataclasses check them with _validate);
# tests/test_config_parity.py holds each setting here to the same answers.
_Num = BeforeValidator(_number)
Fraction = Annotated[float, _Num, Field(ge=0.0, le=1.0, strict=True)]  # [0, 1]
Share = Annotated[float, _Num, Field(gt=0.0, le=1.0, strict=True)]  # (0, 1]
ProperFraction = Annotated[float, _Num, Field(gt=0.0, lt=1.0, strict=True)]  # (0, 1)
Jitter = Annotated[float, _Num, Field(ge=0.0, lt=1.0, strict=True)]  # [0, 1)
Positive = Annotated[float, _Num, Field(gt=0.0, strict=True, allow_inf_nan=False)]  # (0, inf)
Seconds = Annotated[float, _Num, Field(ge=0.0, strict=True, allow_inf_nan=False)]  # [0, inf)
Percent = Annotated[float, _Num, Field(gt=0.0, le=100.0, strict=True)]  # (0, 100]
Count = Annotated[int, _Num, Field(ge=1, strict=True)]  # 1, 2, ...
Size = Annotated[int, _Num, Field(ge=0, strict=True)]  # 0, 1, ...
Level = Literal["light", "medium", "heavy"]


# -- durations ---------------------------------------------------------------------------------

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0

PLAUSIBLE_SECONDS: dict[str, dict[str, float]] = {
    "circuit_breakers": {
        "window": HOUR,
        "slow_call_duration": 10 * MINUTE,
        "reset_timeout": HOUR,
        "reset_timeout_max": DAY,  # inf (no cap) is taken too
        "probe_timeout": 10 * MINUTE,
        "slow_start": HOUR,
        "health_check_interval": HOUR,
    },
    "circuit_breakers.fault_injection": {"latency": MINUTE},
    "rate_limiting": {"cleanup_interval": HOUR},
    "rate_limiting.limiters": {"window": DAY, "latency_budget": 1.0},
    "rate_limiting.limiters.scopes": {
        "window": DAY,
        "cooldown": 10 * MINUTE,
        "slow_call": 10 * MINUTE,
    },
    "connection_pools": {
        "overflow_ttl": HOUR,
        "idle_timeout": DAY,
        "max_lifetime": 7 * DAY,
        "checkout_timeout": 10 * MINUTE,
        "check_interval": HOUR,
        "check_idle_after": 5 * MINUTE,
        "leak_timeout": DAY,
        "housekeeping_interval": 10 * MINUTE,
        "connect_backoff": MINUTE,
        "connect_backoff_max": HOUR,
    },
    "memory_manager": {"check_interval": 10 * MINUTE, "gc_interval": HOUR},
    "chaos.schedule": {"every": DAY, "duration": DAY, "max_duration": 7 * DAY},
    "overload.cpu": {"check_interval": 10 * MINUTE},
    "overload.loop_lag": {"interval": 10.0, "window": HOUR, "warning": MINUTE, "critical": MINUTE},
    "services": {"timeout": HOUR},
    "services.bulkhead": {"wait_timeout": 10 * MINUTE},
    "fleet": {"sync_interval": MINUTE},
    "services.retry": {"initial": MINUTE, "max": HOUR, "deadline": HOUR},
    "services.retry.budget": {"window": HOUR},
}
"""Every duration setting, by section: the most seconds a bare number may give it.

A duration is a number of seconds or text with a unit (``"500ms"``, ``"30s"``, ``"2m"``,
``"1h"``). A bare number above its bound is refused, because it is far more likely
milliseconds (the guide writes ``check_interval: 30_000``, which as seconds is 8.3 hours) than
meant; a value with a unit is taken as written (``check_interval = "9h"``). The components
take seconds and set no such bound: this guards the unit, which a file does not show.
"""


def _duration(value: Any, most: float) -> Any:
    """Seconds from a duration's text, or a bare number checked against ``most``; anything
    else is left to the setting's own check."""
    if isinstance(value, list | tuple):  # a (low, high) range
        return type(value)(_duration(v, most) for v in value)
    if isinstance(value, str):
        number = _number_text(value)
        if number is value:
            try:
                return parse_duration(value)
            except ValueError as exc:
                raise ValueError(str(exc)) from None
        value = number
    if is_number(value) and math.isfinite(value) and value > most:
        raise ValueError(
            f"{value:g} is read as seconds ({describe_seconds(value)}), more than a bare number "
            f"may give this setting (at most {describe_seconds(most)}): for milliseconds write "
            f"'{value:g}ms'; to mean {describe_seconds(value)}, write '{value:g}s'"
        )
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    # Where the section sits in the tree, for its durations in PLAUSIBLE_SECONDS.
    _section: ClassVar[str] = ""
    # Keys the section takes that are no field (read by a validator, e.g. rate).
    _keys_besides_fields: ClassVar[tuple[str, ...]] = ()

    @field_validator("*", mode="before")
    @classmethod
    def _durations(cls, value: Any, info: ValidationInfo) -> Any:
        most = PLAUSIBLE_SECONDS.get(cls._section, {}).get(info.field_name or "")
        return value if most is None else _duration(value, most)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # repr() and str() mask passwords (URLs, DSNs, secret-looking kwargs); the data keeps
        # them, for the components that connect.
        for name, value in super().__repr_args__():
            yield name, value if name is None else redact_field(name, value)


def _component_names(value: dict[str, Any]) -> dict[str, Any]:
    """A table of components (breakers, limiters, ...): its names go into storage keys and
    metric labels, so each must be one."""
    for name in value:
        _check_component_name(name)
    return value


# -- circuit breakers --------------------------------------------------------------------------


def _prefixed(path: str, build: Callable[..., object], kwargs: dict[str, Any]) -> Any:
    """``build(**kwargs)``; its ``ConfigError`` is re-raised with ``path`` in front."""
    try:
        return build(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{path}.{exc.path}", exc.message) from None


class FaultInjectionSettings(_Section):
    """Fault injection for one service (off unless ``enabled``; see docs/chaos.md)."""

    _section = "circuit_breakers.fault_injection"

    enabled: bool = False
    failure_rate: Fraction = 0.0
    latency: Seconds | tuple[Seconds, Seconds] | None = None  # a (low, high) pair: low <= high
    latency_rate: Fraction | None = None
    # The guide's chaos_mode: the service is a target of scheduled chaos ([chaos.schedule]).
    chaos_mode: bool = False

    @field_validator("latency")
    @classmethod
    def _latency_range(cls, value: Any) -> Any:
        try:
            FaultSettings.make(latency=value)
        except ConfigError as exc:
            raise ValueError(exc.message) from None
        return value


# A rule on an outcome as a file writes it: an import path, or a table (_classify.py reads both).
WrittenRule = str | dict[str, Any]


def _default_shedding() -> dict[Level, float]:
    return {level.value: p for level, p in DEFAULT_SHED_PROBABILITY.items()}


class FleetSettings(_Section):
    """Where breakers with ``fleet = true`` share their view (``[fleet]``, docs/fleet.md): the
    :class:`~buttress.RedisFleet` arguments. ``namespace`` defaults to the infrastructure's."""

    _section = "fleet"

    url: str | None = None
    namespace: str | None = None
    quorum: Count = 2
    sync_interval: Positive = 0.5

    @field_validator("url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"must be a redis:// (or rediss://, unix://) URL, got {value!r}")
        return value


class CircuitBreakerSettings(_Section):
    """A breaker's settings (see docs/circuit-breaker.md for each)."""

    _section = "circuit_breakers"

    strategy: Literal["gradual_degradation", "fail_fast"] = "gradual_degradation"
    # Shares its view with every process on [fleet] (docs/fleet.md).
    fleet: bool = False
    window: Positive = 60.0
    buckets: Annotated[int, _Num, Field(ge=1, le=MAX_BUCKETS, strict=True)] = 10
    failure_threshold: Count | None = 5
    degradation_threshold: Count | None = 3  # below failure_threshold
    failure_rate_threshold: Share | None = 0.5
    degradation_rate_threshold: ProperFraction | None = 0.2  # below failure_rate_threshold
    minimum_calls: Count = 10
    slow_call_duration: Positive | None = None
    slow_call_rate_threshold: Share | None = 0.5
    slow_degradation_rate_threshold: ProperFraction | None = 0.2  # below the slow-call rate
    consecutive_failure_threshold: Count | None = None
    level_hysteresis: Annotated[float, _Num, Field(ge=0.0, lt=1.0 / 3.0, strict=True)] = 0.05
    shed_probability: dict[Level, Fraction] = Field(default_factory=_default_shedding)
    reset_timeout: Positive = 30.0
    reset_timeout_multiplier: Annotated[float, _Num, Field(ge=1.0, strict=True)] = 1.0
    # None: 300 s, or reset_timeout if longer; inf: no cap.
    reset_timeout_max: Annotated[float, _Num, Field(gt=0.0, strict=True)] | None = None
    reset_timeout_jitter: Jitter = DEFAULT_RESET_TIMEOUT_JITTER
    half_open_max_calls: Count = 5
    half_open_success_ratio: Share = 0.8
    probe_timeout: Positive = 30.0
    slow_start: Seconds = 0.0
    slow_start_initial: Share = 0.1
    health_check_interval: Positive = 10.0
    # Rules on exceptions (_classify.py): a class by import path ("httpx.HTTPError"; a bare
    # name is a builtin), {status = [429, "5xx"]} or {call = "module:function"}.
    record: list[WrittenRule] | None = None
    ignore: list[WrittenRule] | None = None
    # A returned value that counts as a failure: a rule ({status = [...]}, "module:function")
    # or a list of rules, any of which.
    failure_result: WrittenRule | list[WrittenRule] | None = None
    client_errors_neutral: bool = True  # HTTP 4xx (not 408, 429) counts for nothing
    fault_injection: FaultInjectionSettings = FaultInjectionSettings()

    _RULES: ClassVar[dict[str, Side]] = {
        "record": "exception",
        "ignore": "exception",
        "failure_result": "result",
    }

    def _settings(self) -> dict[str, Any]:
        out = self.model_dump(exclude={"strategy", "fault_injection", "fleet", *self._RULES})
        if self.strategy == "fail_fast":
            out["degradation_threshold"] = None
            out["degradation_rate_threshold"] = None
            out["slow_degradation_rate_threshold"] = None
        return out

    def check(self, path: str) -> None:
        """Raise ``ConfigError`` (under ``path``) for what the breaker itself would refuse:
        values valid alone but not together (``degradation_threshold`` above
        ``failure_threshold``, ...)."""
        from ._breaker import BreakerConfig

        _prefixed(path, BreakerConfig, self._settings())
        for name, side in self._RULES.items():  # their shape; what they name is imported later
            value = getattr(self, name)
            if value is not None:
                parse_rules(f"{path}.{name}", value, side)

    def breaker_kwargs(self, path: str) -> dict[str, Any]:
        """Keyword arguments for :class:`~buttress.CircuitBreaker` (the rules compiled, what
        they name imported)."""
        out = self._settings()
        if self.record is not None:
            out["record"] = exception_rules(f"{path}.record", self.record)
        if self.ignore is not None:
            out["ignore"] = exception_rules(f"{path}.ignore", self.ignore)
        if self.failure_result is not None:
            out["failure_result"] = result_rule(f"{path}.failure_result", self.failure_result)
        return out


# -- memory and chaos --------------------------------------------------------------------------


class MemoryManagerSettings(_Section):
    """The memory manager's settings (see docs/memory.md)."""

    _section = "memory_manager"

    enabled: bool = True
    check_interval: Positive = 30.0
    warning_threshold: ProperFraction = 0.70  # below critical_threshold
    critical_threshold: Share = 0.85
    pressure_relief_enabled: bool = True
    source: Source = "auto"
    limit_bytes: Count | None = None
    exit_margin: Annotated[float, _Num, Field(ge=0.0, lt=1.0, strict=True)] = 0.05  # below warning
    exit_samples: Count = 3
    psi_warning: Percent | None = 10.0
    psi_critical: Percent | None = 10.0
    gc_interval: Annotated[float, _Num, Field(ge=0.0, strict=True)] = 30.0  # 0: at every check

    @model_validator(mode="after")
    def _ordered(self) -> MemoryManagerSettings:
        # The policy's rules between settings (critical above warning, exit_margin below it).
        from ._memory._policy import PolicyConfig
        from ._memory._probe import check_source

        fields = set(PolicyConfig.__dataclass_fields__)
        kwargs = {k: v for k, v in self.manager_kwargs().items() if k in fields}
        _prefixed("memory_manager", PolicyConfig, kwargs)
        _prefixed(
            "memory_manager",
            check_source,
            {
                "source": self.source,
                "limit_bytes": self.limit_bytes,
            },
        )
        return self

    def manager_kwargs(self) -> dict[str, Any]:
        return self.model_dump(exclude={"enabled"})


class ChaosScheduleSettings(_Section):
    """Scheduled chaos (see docs/chaos.md, Scheduled chaos): :meth:`Chaos.schedule`'s
    arguments. ``targets`` defaults to the breakers whose ``fault_injection.chaos_mode`` is
    true."""

    _section = "chaos.schedule"

    targets: list[str] | None = None
    experiments: Count = 10
    every: Positive = 60.0
    duration: Positive | tuple[Positive, Positive] = (5.0, 30.0)
    failure_rate: Fraction = 0.5
    latency: Seconds | tuple[Seconds, Seconds] | None = None
    latency_rate: Fraction | None = None
    max_duration: Positive | None = None
    seed: Annotated[int, _Num, Field(strict=True)] | None = None  # None: from chaos.seed
    name: str = "schedule"

    @model_validator(mode="after")
    def _builds(self) -> ChaosScheduleSettings:
        from ._chaos import Chaos, ChaosSchedule

        targets = self.targets if self.targets is not None else ["target"]
        _prefixed("chaos.schedule", ChaosSchedule, {"chaos": Chaos(), **self.kwargs(targets)})
        return self

    def kwargs(self, targets: list[str]) -> dict[str, Any]:
        """Keyword arguments for :meth:`Chaos.schedule <buttress.Chaos.schedule>`."""
        out = self.model_dump(exclude={"targets"})
        out["targets"] = targets
        if isinstance(out["duration"], list | tuple):
            out["duration"] = tuple(out["duration"])
        if isinstance(out["latency"], list):
            out["latency"] = tuple(out["latency"])
        return out


class ChaosSettings(_Section):
    """The chaos master switch, a seed, and scheduled chaos (per-service faults live with each
    breaker)."""

    enabled: bool = False
    seed: Annotated[int, _Num, Field(strict=True)] | None = None
    schedule: ChaosScheduleSettings | None = None


# -- rate limiting -----------------------------------------------------------------------------

Algorithm = AlgorithmName  # the names of the algorithm registry (ratelimit/_registry.py)


def _checked_by(build: Callable[..., object], kwargs: dict[str, Any]) -> None:
    """In a section's validator: ``build(**kwargs)``, its ``ConfigError`` reported at the
    section's path and the setting it names."""
    try:
        build(**kwargs)
    except ConfigError as exc:
        raise _AtKey(exc.path, exc.message) from None


class _AtKey(ValueError):
    """A problem with ``key`` of the section being validated (a key that is no field, such as
    ``rate``): reported at that key's path."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _one_rate(data: Any, *, several: bool) -> Any:
    """``rate = "100/minute"`` in a section's raw data, as the ``limit`` and ``window`` it
    stands for; with ``several``, a limiter's ``rate = "10/second; 1000/hour"`` as one shared
    scope per rate (named as ``RateLimiter("10/second; 1000/hour")`` names them)."""
    if not isinstance(data, Mapping) or "rate" not in data:
        return data
    from .ratelimit._scope import scopes_from_rates

    data = dict(data)
    text = data.pop("rate")
    given = [k for k in ("limit", "window", "scopes") if k in data]
    if given:
        raise _AtKey("rate", f"give rate or {' and '.join(given)}, not both")
    if not isinstance(text, str):
        raise _AtKey("rate", f"must be a string such as '100/minute', got {text!r}")
    try:
        scopes = scopes_from_rates(text)
    except ConfigError as exc:
        raise _AtKey("rate", exc.message) from None
    # The window keeps its unit ("...s"): the rate said it, so no bound on bare numbers applies.
    if len(scopes) == 1:
        data["limit"], data["window"] = scopes[0].limit, f"{scopes[0].window!r}s"
        return data
    if not several:
        raise _AtKey(
            "rate",
            f"{text!r} holds {len(scopes)} rates; a scope takes one (a limiter's rate may "
            "hold several)",
        )
    for key in ("hierarchical", "burst"):
        if data.get(key):
            raise _AtKey("rate", f"{key} takes one rate, and {text!r} holds {len(scopes)}")
    data["scopes"] = [
        {"name": sc.name, "limit": sc.limit, "window": f"{sc.window!r}s", "by": None}
        for sc in scopes
    ]
    return data


class ScopeSettings(_Section):
    """One scope of a limiter (see docs/rate-limiting.md). ``rate = "100/minute"`` may stand
    for ``limit`` and ``window``."""

    _section = "rate_limiting.limiters.scopes"
    _keys_besides_fields = ("rate",)

    name: str
    limit: Positive
    window: Positive = 60.0
    algorithm: Algorithm | None = None  # the limiter's algorithm when unset
    burst: Positive | None = None
    by: str | None = ""  # the context entry holding the id; "" = the scope's name
    # min_limit <= limit <= max_limit, and an adaptive limit never falls below 1
    min_limit: Annotated[float, _Num, Field(ge=1.0, strict=True, allow_inf_nan=False)] | None = None
    max_limit: Annotated[float, _Num, Field(ge=1.0, strict=True, allow_inf_nan=False)] | None = None
    increase: Positive | None = None
    decrease: ProperFraction = 0.5
    cooldown: Seconds = 1.0
    slow_call: Positive | None = None
    # Ids with a limit of their own ({ acme = 50000 }); a function can only be given in code.
    overrides: dict[str, Positive] | None = None

    @model_validator(mode="before")
    @classmethod
    def _rate(cls, data: Any) -> Any:
        return _one_rate(data, several=False)

    @model_validator(mode="after")
    def _rate_bounds(self) -> ScopeSettings:
        # The scope's own bounds on window / limit (ratelimit/_scope.py: check_rate).
        from .ratelimit._scope import check_rate

        try:
            check_rate("scope", self.limit, self.window, self.burst, self.max_limit)
        except ConfigError as exc:
            raise _AtKey(exc.path.rpartition(".")[2], exc.message) from None
        return self


def _check_backend_url(value: str) -> str:
    """A backend URL checked as ``backend_from_url`` will check it (one rule for both)."""
    from .ratelimit._from_url import url_problem

    problem = url_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


class LeasingSettings(_Section):
    """A limiter's leasing (``lease = {size = 100, ttl = 1.0}``, see docs/deployment.md):
    the :class:`~buttress.Leasing` arguments."""

    _section = "rate_limiting.limiters.lease"

    size: Annotated[int, _Num, Field(ge=2, strict=True)]
    ttl: Positive = 1.0
    max_keys: Count = 10_000


class LimiterSettings(_Section):
    """A named limiter: explicit ``scopes``, or the guide's shorthand.

    Shorthand: ``limit`` / ``window`` / ``burst`` make one shared scope (``global``); with
    ``hierarchical = true`` they make the guide's three scopes: ``user`` (``limit``), ``org``
    (10 x ``limit``) and ``global`` (100 x ``limit``). ``rate = "100/minute"`` may stand for
    ``limit`` and ``window``; ``rate = "10/second; 1000/hour"`` makes one shared scope per rate
    (``per_second``, ``per_hour``), as ``RateLimiter("10/second; 1000/hour")`` does.
    """

    _section = "rate_limiting.limiters"
    _keys_besides_fields = ("rate",)

    algorithm: Algorithm | None = None  # default: rate_limiting.default_algorithm
    scopes: list[ScopeSettings] | None = None
    limit: Positive | None = None
    window: Positive = 60.0
    burst: Positive | None = None
    hierarchical: bool = False
    backend: str | None = None  # default: rate_limiting.backend

    @field_validator("backend")
    @classmethod
    def _backend_url(cls, value: str | None) -> str | None:
        return None if value is None else _check_backend_url(value)

    failure_policy: Literal["fail_open", "fail_closed", "local"] | None = None
    # With failure_policy = "local": the share of each limit this process decides alone while
    # the backend is down (1 / the processes sharing it; docs/deployment.md).
    local_share: Share | None = None  # default: rate_limiting.local_share
    latency_budget: Positive = 0.005
    lease: LeasingSettings | None = None  # decide busy callers locally from slices

    @model_validator(mode="before")
    @classmethod
    def _rate(cls, data: Any) -> Any:
        return _one_rate(data, several=True)

    @model_validator(mode="after")
    def _has_scopes(self) -> LimiterSettings:
        if self.scopes is None and self.limit is None:
            raise ValueError("give scopes, or rate or limit (the shorthand)")
        if self.scopes is not None and self.limit is not None:
            raise ValueError("give either scopes or limit (the shorthand), not both")
        if self.scopes is not None:
            names = [s.name for s in self.scopes]
            if not names:
                raise ValueError("scopes must not be empty")
            if len(set(names)) != len(names):
                raise ValueError(f"scope names must be unique, got {names}")
        return self

    def build_scopes(self, path: str, default_algorithm: str) -> list[Scope]:
        """The :class:`~buttress.Scope` objects; a bad combination raises ``ConfigError``
        naming its path (``path`` is this limiter's, e.g. ``rate_limiting.limiters.api``)."""
        from .ratelimit._scope import Scope

        out = []
        for i, kw in enumerate(self.scope_list(default_algorithm)):
            try:
                out.append(Scope(**kw))
            except ConfigError as exc:
                param = exc.path.split(".", 1)[-1]
                where = f"{path}.scopes[{i}]" if self.scopes is not None else path
                raise ConfigError(f"{where}.{param}", exc.message) from None
        return out

    def scope_list(self, default_algorithm: str) -> list[dict[str, Any]]:
        """Keyword arguments for each :class:`~buttress.Scope`."""
        algorithm = self.algorithm or default_algorithm
        if self.scopes is not None:
            out = []
            for sc in self.scopes:
                kw = sc.model_dump(exclude_none=False)
                kw["algorithm"] = sc.algorithm or algorithm
                out.append({k: v for k, v in kw.items() if v is not None or k == "by"})
            return out
        assert self.limit is not None
        base = {"window": self.window, "algorithm": algorithm}
        burst = self.burst
        if not self.hierarchical:
            return [{"name": "global", "limit": self.limit, "burst": burst, **base}]
        return [
            {"name": "user", "limit": self.limit, "burst": burst, **base},
            {"name": "org", "limit": self.limit * 10, "burst": _times(burst, 10), **base},
            {"name": "global", "limit": self.limit * 100, "burst": _times(burst, 100), **base},
        ]


def _times(x: float | None, k: int) -> float | None:
    return None if x is None else x * k


class RateLimitingSettings(_Section):
    """Rate limiting: where state lives and the named limiters."""

    _section = "rate_limiting"

    default_algorithm: Algorithm = "token_bucket"
    # "memory", "sqlite:///path/to/state.db", "redis://host:6379/0" (see backend_from_url)
    backend: str = "memory"
    failure_policy: Literal["fail_open", "fail_closed", "local"] = "fail_open"
    local_share: Share = 1.0
    max_keys: Count = 1_000_000
    # How often the infrastructure sweeps every limiter's expired keys (the guide's
    # cleanup_interval; it writes 300_000 ms, here "5m" or 300).
    cleanup_interval: Positive = 60.0
    limiters: dict[str, LimiterSettings] = Field(default_factory=dict)

    @field_validator("backend")
    @classmethod
    def _backend_url(cls, value: str) -> str:
        return _check_backend_url(value)

    _names = field_validator("limiters")(_component_names)

    @model_validator(mode="after")
    def _scopes_build(self) -> RateLimitingSettings:
        # Every value may be valid alone and the scope still impossible (burst on a fixed
        # window, min_limit above limit): build them now, so `config check` sees it too.
        # The ConfigError keeps its full path through pydantic (see _config_error).
        from .ratelimit._limiter import check_memory_keys

        for name, limiter in self.limiters.items():
            scopes = limiter.build_scopes(f"rate_limiting.limiters.{name}", self.default_algorithm)
            if (limiter.backend or self.backend) == "memory":
                # The limiter's own rule: its memory backend holds a key per scope at once.
                try:
                    check_memory_keys(self.max_keys, len(scopes))
                except ConfigError as exc:
                    raise ConfigError("rate_limiting.max_keys", exc.message) from None
        return self


# -- connection pools ----------------------------------------------------------------------------


class PoolSettings(_Section):
    """A connection pool (see docs/pool.md). ``factory`` makes a member from TOML.

    ``factory`` is an import path such as ``"sqlite3:connect"`` (or ``"module:Class.method"``,
    e.g. ``"psycopg:AsyncConnection.connect"``) called with ``args`` and ``kwargs``; code can
    pass ``create=`` (and ``close=``, ``check=``, ``reset=``) to
    :class:`~buttress.Infrastructure` instead. ``check_sql`` checks a DB-API connection by
    running that statement (awaited in an ``async`` pool, as are the factory's result and the
    members' ``close()``).
    """

    _section = "connection_pools"

    factory: str | None = None
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    check_sql: str | None = None
    # Exception classes by import path, e.g. ["psycopg.OperationalError"]: see invalidate_on.
    invalidate_on: list[str] | None = None
    is_async: bool = Field(False, alias="async")
    min_size: Annotated[int, _Num, Field(ge=0, le=MAX_MIN_SIZE, strict=True)] = 0
    max_size: Count = 10
    max_overflow: Size = 0
    overflow_ttl: Positive = 60.0
    idle_timeout: Positive | None = 600.0
    max_lifetime: Positive | None = 3600.0
    lifetime_jitter: Jitter = 0.05
    strategy: Strategy = "lifo"
    checkout_timeout: Positive | None = 30.0
    max_waiting: Size | None = None
    # None: "mixed" when the pool has a check (check_sql, or check= in code), else "passive".
    health_check_strategy: HealthCheck | None = None
    check_interval: Positive = 30.0
    check_jitter: Jitter = 0.2
    check_idle_after: Seconds = 0.5
    leak_timeout: Positive | None = None
    housekeeping_interval: Positive = 1.0
    connect_timeout: Positive | None = 10.0
    check_timeout: Positive | None = 5.0
    connect_backoff: Positive = 0.5
    connect_backoff_max: Positive = 30.0

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _sizes(self) -> PoolSettings:
        if self.min_size > self.max_size:
            raise ValueError(f"min_size ({self.min_size}) must be <= max_size ({self.max_size})")
        return self

    def check(self, path: str) -> None:
        """Raise ``ConfigError`` (under ``path``) for what the pool itself would refuse."""
        from ._pool import PoolConfig

        _prefixed(path, PoolConfig, self.pool_kwargs())

    def pool_kwargs(self, *, has_check: bool = False) -> dict[str, Any]:
        """Keyword arguments for :class:`~buttress.PoolConfig` (``has_check``: the pool has a
        check, which makes an unset ``health_check_strategy`` ``"mixed"``)."""
        out = self.model_dump(
            exclude={"factory", "args", "kwargs", "check_sql", "invalidate_on", "is_async"},
            by_alias=False,
        )
        if out["health_check_strategy"] is None:
            out["health_check_strategy"] = "mixed" if has_check else "passive"
        return out

    def invalidate_on_types(self, path: str) -> tuple[type[BaseException], ...]:
        """The ``invalidate_on`` exception classes, imported (``path``: this pool's)."""
        return tuple(import_exception(f"{path}.invalidate_on", p) for p in self.invalidate_on or ())


POOL_DEFAULTS = "default"


def _pool_defaults(pools: dict[str, PoolSettings]) -> None:
    """``[connection_pools.default]``: what every pool takes for the settings it leaves unset
    (the guide's ``default_strategy``, ``max_overflow``, ``health_check_strategy``). A
    template, not a pool: it is folded into the others and leaves the table."""
    default = pools.pop(POOL_DEFAULTS, None)
    if default is None:
        return
    given = default.model_fields_set
    for name, pool in list(pools.items()):
        inherited = {k: getattr(default, k) for k in given if k not in pool.model_fields_set}
        if not inherited:
            continue
        merged = pool.model_copy(update=inherited)
        if merged.min_size > merged.max_size:
            where = (
                "" if "min_size" in pool.model_fields_set else " (from connection_pools.default)"
            )
            raise ConfigError(
                f"connection_pools.{name}.min_size",
                f"min_size ({merged.min_size}){where} must be <= max_size ({merged.max_size})",
            )
        pools[name] = merged


# -- services ----------------------------------------------------------------------------------


NonNegative = Annotated[float, _Num, Field(ge=0.0, strict=True, allow_inf_nan=False)]


class RetryBudgetSettings(_Section):
    """A service's retry budget (see docs/retries.md): shared by every call of the service."""

    _section = "services.retry.budget"

    ratio: NonNegative = 0.2
    min_per_second: NonNegative = 10.0
    window: Positive = 10.0


class RetrySettings(_Section):
    """A service's retry policy (``[services.NAME.retry]``, see docs/retries.md): the
    :class:`~buttress.Retry` and :class:`~buttress.Backoff` arguments, flat."""

    _section = "services.retry"

    attempts: Count = 3
    initial: Seconds = 0.1
    multiplier: Annotated[float, _Num, Field(ge=1.0, strict=True, allow_inf_nan=False)] = 2.0
    max: Seconds = 10.0
    jitter: Literal["full", "equal", "none"] = "full"
    deadline: Positive | None = None
    # Which errors are retried: rules on exceptions, as a breaker's record takes them (None:
    # what the service's breaker records, and refusals); a returned value to retry: rules on
    # results, as failure_result takes them.
    on: list[WrittenRule] | None = None
    on_result: WrittenRule | list[WrittenRule] | None = None
    # A [services.NAME.retry.budget] table turns the budget on (each key has its default).
    budget: RetryBudgetSettings | None = None

    def check(self, path: str) -> None:
        """Raise ``ConfigError`` (under ``path``) for values valid alone but not together
        (``max`` below ``initial``), and for rules of the wrong shape."""
        from ._retry import Backoff

        _prefixed(path, Backoff, self._backoff())
        if self.on is not None:
            parse_rules(f"{path}.on", self.on, "exception")
        if self.on_result is not None:
            parse_rules(f"{path}.on_result", self.on_result, "result")

    def _backoff(self) -> dict[str, Any]:
        return {
            "initial": self.initial,
            "multiplier": self.multiplier,
            "max": self.max,
            "jitter": self.jitter,
        }

    def policy(self, path: str, clock: Clock) -> Retry:
        """The :class:`~buttress.Retry` these settings describe, its budget on ``clock``."""
        from ._retry import Backoff, Retry, RetryBudget

        self.check(path)
        b = self.budget
        budget = (
            None
            if b is None
            else RetryBudget(
                ratio=b.ratio, min_per_second=b.min_per_second, window=b.window, clock=clock
            )
        )
        on = None
        if self.on is not None:
            matchers = exception_rules(f"{path}.on", self.on)
            on = functools.partial(matches_any, matchers)
        return Retry(
            attempts=self.attempts,
            backoff=Backoff(**self._backoff()),
            on=on,
            on_result=(
                None if self.on_result is None else result_rule(f"{path}.on_result", self.on_result)
            ),
            deadline=self.deadline,
            budget=budget,
        )


class CpuSettings(_Section):
    """The CPU monitor (``[overload.cpu]``, docs/overload.md): the
    :class:`~buttress.CpuMonitor` arguments. A threshold of ``none`` ignores its signal."""

    _section = "overload.cpu"

    check_interval: Positive = 1.0
    throttle_warning: Share | None = 0.10
    throttle_critical: Share | None = 0.50
    utilisation_warning: Share | None = 0.80
    utilisation_critical: Share | None = 0.95
    psi_warning: Percent | None = 20.0
    psi_critical: Percent | None = 50.0
    exit_margin: Jitter = 0.10
    exit_samples: Count = 3

    @model_validator(mode="after")
    def _ordered(self) -> CpuSettings:
        # The monitor's rules between settings (each critical threshold above its warning).
        from ._overload import CpuConfig

        _checked_by(CpuConfig, self.model_dump())
        return self


class LoopLagSettings(_Section):
    """The event-loop lag monitors (``[overload.loop_lag]``, docs/overload.md): the
    :class:`~buttress.LoopLagMonitors` arguments."""

    _section = "overload.loop_lag"

    interval: Positive = 0.05
    window: Positive = 10.0
    warning: Positive = 0.1
    critical: Positive = 0.5
    exit_margin: Jitter = 0.1
    exit_samples: Count = 20

    @model_validator(mode="after")
    def _ordered(self) -> LoopLagSettings:
        # The monitor's rules between settings (critical above warning, window over interval).
        from ._overload import LagConfig

        _checked_by(LagConfig, self.model_dump())
        return self


class OverloadSettings(_Section):
    """The overload monitors beside memory (``[overload]``): each is on when its table is
    present. At a monitor's warning level ``protect()`` sheds sheddable calls, at critical
    normal ones too (docs/overload.md)."""

    _section = "overload"

    cpu: CpuSettings | None = None
    loop_lag: LoopLagSettings | None = None


class AdaptiveConcurrencySettings(_Section):
    """A bulkhead's adaptive limit (``[services.NAME.bulkhead.adaptive]``): the
    :class:`~buttress.AdaptiveConcurrency` arguments; ``tuning`` its algorithm's own settings
    (docs/adaptive-concurrency.md)."""

    _section = "services.bulkhead.adaptive"

    algorithm: Literal["gradient2", "vegas", "aimd"] = "gradient2"
    initial: Count = 20
    min_limit: Count = 1
    max_limit: Count = 1000
    tuning: dict[str, float | int | None] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _checked(self) -> AdaptiveConcurrencySettings:
        # The limit's rules between settings (min_limit <= initial <= max_limit) and its
        # algorithm's own settings.
        from ._bulkhead import AdaptiveConcurrency

        try:
            AdaptiveConcurrency("check", **self._kwargs())
        except ConfigError as exc:
            key = f"tuning.{exc.path}" if exc.path in self.tuning else exc.path
            raise _AtKey(key, exc.message) from None
        return self

    def _kwargs(self) -> dict[str, Any]:
        return {
            "algorithm": self.algorithm,
            "initial": self.initial,
            "min_limit": self.min_limit,
            "max_limit": self.max_limit,
            **self.tuning,
        }


class BulkheadSettings(_Section):
    """A service's bulkhead (``[services.NAME.bulkhead]``, see docs/bulkhead.md): a fixed
    ``max_concurrent``, or an ``[adaptive]`` table; the :class:`~buttress.Bulkhead` arguments."""

    _section = "services.bulkhead"

    # At most a million of each: Bulkhead's MAX_PLACES (a typo must not ask for billions).
    max_concurrent: Annotated[int, _Num, Field(ge=1, le=1_000_000, strict=True)] | None = None
    max_waiting: Annotated[int, _Num, Field(ge=0, le=1_000_000, strict=True)] = 0
    # Seconds a caller may wait for a place; None (or inf): as long as it takes (within its
    # deadline).
    wait_timeout: Annotated[float, _Num, Field(ge=0.0, strict=True)] | None = 0.0
    adaptive: AdaptiveConcurrencySettings | None = None

    @model_validator(mode="after")
    def _one_limit(self) -> BulkheadSettings:
        if (self.max_concurrent is None) == (self.adaptive is None):
            raise ValueError(  # reported at the table's path
                "give max_concurrent (a fixed limit) or an [adaptive] table, "
                + ("not both" if self.adaptive is not None else "one of them")
            )
        return self

    def make(self, name: str, path: str, clock: Clock) -> Any:
        """The :class:`~buttress.Bulkhead` these settings describe (errors under ``path``)."""
        from ._bulkhead import AdaptiveConcurrency, Bulkhead

        a = self.adaptive
        limit = None
        if a is not None:
            limit = _prefixed(
                f"{path}.adaptive", AdaptiveConcurrency, {"name": name, **a._kwargs()}
            )
        return _prefixed(
            path,
            Bulkhead,
            {
                "name": name,
                "max_concurrent": self.max_concurrent,
                "limit": limit,
                "max_waiting": self.max_waiting,
                "wait_timeout": self.wait_timeout,
                "clock": clock,
            },
        )


class ServiceSettings(_Section):
    """Which components guard a service; each defaults to the one named like the service.

    ``false`` turns a layer off for the service; a string names another component's table.
    """

    _section = "services"

    breaker: str | bool = True
    limiter: str | bool = True
    pool: str | bool = True
    # Its calls' default priority (a call's own priority= wins); critical = true is shorthand
    # for priority = "critical".
    priority: Literal["critical", "normal", "sheddable"] | None = None
    critical: bool = False
    bulkhead: BulkheadSettings | None = None
    # Seconds each call may take (docs/timeouts-and-fallbacks.md); None: no timeout.
    timeout: Positive | None = None
    # A sync call's result that comes after its timeout: "raise" CallTimeoutError, or "keep" it
    # (counted as a timeout failure either way).
    late_result: Literal["raise", "keep"] = "raise"
    # "module:function" called with the exception of a refused or failed call.
    fallback: str | None = None
    # How calls are retried (docs/retries.md); None: not retried.
    retry: RetrySettings | None = None

    @field_validator("breaker", "limiter", "pool", mode="before")
    @classmethod
    def _switch_text(cls, value: Any) -> Any:
        # "false" from the environment turns the layer off; it names no component.
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        return value

    def call_priority(self) -> int:
        """Its calls' default priority (``_priority.py``)."""
        from ._priority import priority_of

        return priority_of(self.priority, True if self.critical else None, 0)


# -- the whole tree ----------------------------------------------------------------------------


class Config(_Section):
    """The whole configuration. Every section is optional."""

    circuit_breakers: dict[str, CircuitBreakerSettings] = Field(default_factory=dict)
    rate_limiting: RateLimitingSettings = RateLimitingSettings()
    connection_pools: dict[str, PoolSettings] = Field(default_factory=dict)
    memory_manager: MemoryManagerSettings = MemoryManagerSettings()
    overload: OverloadSettings = OverloadSettings()
    fleet: FleetSettings = FleetSettings()
    chaos: ChaosSettings = ChaosSettings()
    services: dict[str, ServiceSettings] = Field(default_factory=dict)

    _names = field_validator("circuit_breakers", "connection_pools", "services")(_component_names)

    @model_validator(mode="after")
    def _components_build(self) -> Config:
        # As for the scopes: settings valid one by one may still make an impossible breaker
        # or pool; build their configs now, so `config check` sees it too.
        for name, breaker in self.circuit_breakers.items():
            breaker.check(f"circuit_breakers.{name}")
        _pool_defaults(self.connection_pools)
        for name, pool in self.connection_pools.items():
            pool.check(f"connection_pools.{name}")
        for name, service in self.services.items():  # what each service's table names
            if service.retry is not None:
                service.retry.check(f"services.{name}.retry")
            for kind, choice, components in (
                ("breaker", service.breaker, self.circuit_breakers),
                ("limiter", service.limiter, self.rate_limiting.limiters),
                ("pool", service.pool, self.connection_pools),
            ):
                if isinstance(choice, str) and choice not in components:
                    raise ConfigError(f"services.{name}.{kind}", f"names no {kind} {choice!r}")
        self.chaos_schedule()
        return self

    def chaos_schedule(self) -> dict[str, Any] | None:
        """The arguments of the scheduled chaos to start (``None``: none is configured):
        ``[chaos.schedule]``, whose targets default to the breakers with ``chaos_mode``; a
        ``chaos_mode`` breaker alone runs the default schedule."""
        modes = [
            name
            for name, b in self.circuit_breakers.items()
            if b.fault_injection.chaos_mode and name != "default"
        ]
        schedule = self.chaos.schedule
        if schedule is None and not modes:
            return None
        schedule = schedule if schedule is not None else ChaosScheduleSettings()
        targets = schedule.targets if schedule.targets is not None else modes
        if not targets:
            raise ConfigError(
                "chaos.schedule.targets",
                "names no target, and no breaker has fault_injection.chaos_mode = true: name "
                "the services (or breakers) the schedule may hit",
            )
        return schedule.kwargs(targets)

    def check_imports(self) -> None:
        """Import every exception class, predicate, pool factory and fallback the configuration
        names, as :class:`~buttress.Infrastructure` will; ``ConfigError`` names the first that
        fails."""
        for name, breaker in self.circuit_breakers.items():
            breaker.breaker_kwargs(f"circuit_breakers.{name}")
        for name, pool in self.connection_pools.items():
            if pool.factory is not None:
                import_callable(f"connection_pools.{name}.factory", pool.factory)
            pool.invalidate_on_types(f"connection_pools.{name}")
        for name, service in self.services.items():
            if service.fallback is not None:
                import_callable(f"services.{name}.fallback", service.fallback)
            if service.retry is not None:
                service.retry.policy(f"services.{name}.retry", SystemClock())

    def to_toml_dict(self) -> dict[str, Any]:
        """The resolved configuration as plain data (``None`` values dropped, as TOML has none)."""
        data: dict[str, Any] = _drop_none(self.model_dump(mode="json", by_alias=True))
        return data


# -- loading -----------------------------------------------------------------------------------


def load_config(
    source: Config | Mapping[str, Any] | str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Build a :class:`Config` from a dict or a TOML file path, with ``BUTTRESS_...``
    environment variables applied over it (``env`` defaults to ``os.environ``; pass ``{}`` to
    ignore the environment). A ``Config`` is returned as it is: it was built on purpose, and
    the environment is not applied to it again.
    """
    if isinstance(source, Config):
        return source
    if source is None:
        data: dict[str, Any] = {}
    elif isinstance(source, Mapping):
        data = _deep_copy(source)
    elif isinstance(source, str | os.PathLike):
        data = _read_toml(Path(source))
    else:
        raise ConfigError(
            "config", f"must be a mapping, a Config or a TOML file path, got {source!r}"
        )
    overrides = [
        (_set_path(data, path, value), value, variable)
        for path, value, variable in env_overrides(os.environ if env is None else env)
    ]
    try:
        return Config.model_validate(data, context=STRICT_NUMBERS)
    except ValidationError as exc:
        error = _config_error(exc, data)
    # A value from the environment: say which variable set it, or (for a rule between two
    # settings, reported on the section or on the other one) which variables took part.
    exact = [v for p, _, v in overrides if _covers(".".join(p), error.path)]
    if exact:
        raise ConfigError(error.path, f"{error.message} (set by {exact[0]})") from None
    section = error.path.rpartition(".")[0]
    near = [
        v
        for p, value, v in overrides
        if (".".join(p).startswith(error.path + ".") or ".".join(p[:-1]) == section)
        and (p[-1] in error.message or str(value) in error.message)  # it names that setting
    ]
    if near:
        raise ConfigError(error.path, f"{error.message} (with {', '.join(near)} set)") from None
    raise error from None


def _covers(variable_path: str, error_path: str) -> bool:
    # "record[1].status" is below "record" (a rule's path indexes its list).
    return error_path == variable_path or error_path.startswith(
        (variable_path + ".", variable_path + "[")
    )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), "no such file") from None
    except OSError as exc:
        raise ConfigError(str(path), f"cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), f"is not UTF-8 text (TOML must be): {exc.reason}") from None
    try:
        data: dict[str, Any] = tomllib.loads(text)
        return data
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"is not valid TOML: {exc}") from None


# -- the environment ---------------------------------------------------------------------------


def env_overrides(env: Mapping[str, str]) -> list[tuple[list[str], Any, str]]:
    """``(path, value, variable)`` for each variable of ``env`` that names a config path.

    As pydantic-settings reads a model's fields: the prefix and the names in any case, ``__``
    between the parts, and only variables whose first part is a section of :class:`Config`
    (other ``BUTTRESS_...`` variables belong to someone else: ``BUTTRESS_NO_EXTENSIONS`` to the
    rate limiter's import, a test suite's own). Each value is read as its setting expects
    (:func:`_env_value`).
    """
    out = []
    for key, raw in sorted(env.items()):
        if not key.upper().startswith(ENV_PREFIX):
            continue
        path = key[len(ENV_PREFIX) :].lower().split(ENV_DELIMITER)
        if path[0] not in Config.model_fields:
            _not_read(key, path)
            continue
        if not all(path):
            raise ConfigError(
                key, f"empty part in the variable name (check the '{ENV_DELIMITER}'s)"
            )
        out.append((path, _env_value(_annotation_at(path), raw), key))
    return out


def _not_read(key: str, path: list[str]) -> None:
    """A ``BUTTRESS_...`` variable that names no section: not read. One that looks meant as a
    config path (a section's name with one ``_`` after it, or a near miss) is worth a warning."""
    first = path[0]
    meant = next((s for s in Config.model_fields if first.startswith(s + "_")), None)
    suggestion: str | None
    if meant is not None:
        rest = ENV_DELIMITER.join([first[len(meant) + 1 :], *path[1:]]).upper()
        suggestion = f"{ENV_PREFIX}{meant.upper()}{ENV_DELIMITER}{rest}"
    else:
        near = difflib.get_close_matches(first, list(Config.model_fields), n=1)
        suggestion = (
            ENV_PREFIX + ENV_DELIMITER.join([near[0], *path[1:]]).upper()
            if near and len(path) > 1
            else None
        )
    if suggestion is None:
        _log.debug("%s is not read: %r is not a section of the configuration", key, first)
    else:
        _log.warning(
            "%s is not read: %r is not a section of the configuration (did you mean %s?)",
            key,
            first,
            suggestion,
        )


def _annotation_at(path: list[str]) -> Any:
    """The type the setting at ``path`` takes (``None`` when no setting is there)."""
    node: Any = Config
    for part in path:
        node = _without_none(node)
        if isinstance(node, type) and issubclass(node, BaseModel):
            field = next((f for n, f in node.model_fields.items() if part in (n, f.alias)), None)
            if field is None:
                return None
            node = field.annotation
        elif typing.get_origin(node) is dict:
            node = typing.get_args(node)[1]
        elif typing.get_origin(node) is list and (part.isdigit() or part.startswith("[")):
            node = typing.get_args(node)[0]
        else:
            return None
    return node


def _without_none(annotation: Any) -> Any:
    members = [m for m in _members(annotation) if m is not type(None)]
    return members[0] if len(members) == 1 else annotation


def _members(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _env_value(annotation: Any, raw: str) -> Any:
    """A variable's text as the setting expects it: JSON for a list or a table, ``null`` for
    "unset" where that is allowed; otherwise the text itself, which the setting reads as
    pydantic-settings leaves it to (a number's or a duration's text, ``true``, a name)."""
    if annotation is None:
        return raw  # no such setting: the model names it
    members = [typing.get_origin(m) or m for m in _members(annotation)]
    text = raw.strip()
    if text.lower() == "null" and type(None) in members:
        return None
    if any(m in (list, tuple, dict) or _is_model(m) for m in members):
        try:
            value = json.loads(text)
        except ValueError:
            return EnvText(raw)
        if isinstance(value, list | dict):
            return value
    return EnvText(raw)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _set_path(data: dict[str, Any], path: list[str], value: Any) -> list[str]:
    """Set ``value`` at ``path`` (a table merged into the table there); returns the path as
    spelled in ``data``."""
    node = data
    path = list(path)
    for i in range(len(path) - 1):
        part = path[i] = _existing_key(node, path[i])
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            where = ".".join(path[: i + 1])
            raise ConfigError(where, f"is a value, not a section; cannot set {'.'.join(path)}")
        node = child
    path[-1] = _existing_key(node, path[-1])
    old = node.get(path[-1])
    node[path[-1]] = _merged(old, value) if isinstance(old, dict) else value
    return path


def _merged(old: dict[str, Any], new: Any) -> Any:
    if not isinstance(new, dict):
        return new
    out = dict(old)
    for key, value in new.items():
        out[key] = _merged(out[key], value) if isinstance(out.get(key), dict) else value
    return out


def _existing_key(node: Mapping[str, Any], part: str) -> str:
    """``part`` (lower-cased, as variable names are) as spelled in ``node``: the variable
    BUTTRESS_CIRCUIT_BREAKERS__PAYMENTS__... reaches a breaker named "Payments"."""
    if part in node:
        return part
    matches = [k for k in node if isinstance(k, str) and k.lower() == part]
    return matches[0] if len(matches) == 1 else part


def _config_error(exc: ValidationError, data: Mapping[str, Any]) -> ConfigError:
    grouped: dict[str, list[Any]] = {}
    parts_of: dict[str, list[str]] = {}
    for err in exc.errors(include_url=False):
        cause = err.get("ctx", {}).get("error")
        if isinstance(cause, ConfigError):  # raised by a validator with its own full path
            grouped.setdefault(cause.path, []).append(err)
            continue
        parts = _error_path(err["loc"], data)
        if isinstance(cause, _AtKey):
            parts.append(cause.key)
        path = _joined(parts)
        parts_of[path] = parts
        grouped.setdefault(path, []).append(err)
    problems = [(path, _message(errs, parts_of.get(path, []))) for path, errs in grouped.items()]
    first_path, message = problems[0]
    if len(problems) > 1:
        rest = "; ".join(f"{p}: {m}" for p, m in problems[1:4])
        more = f" (and {len(problems) - 4} more)" if len(problems) > 4 else ""
        message = f"{message}; also {rest}{more}"
    return ConfigError(first_path, message)


def _joined(parts: list[str]) -> str:
    """A path as the messages write it: names joined by dots, list positions in brackets
    (``rate_limiting.limiters.api.scopes[0].limit``), as code-made paths are."""
    out = ""
    for part in parts:
        out += part if part.startswith("[") or not out else "." + part
    return out


def _error_path(loc: tuple[int | str, ...], data: Any) -> list[str]:
    """The parts of a pydantic error location that are in the user's config.

    pydantic also names the union member it tried ("constrained-float", "tuple[...]"); such a
    part is dropped, but only when the user's data has no key of that name at that level, so
    a component named "my-api" or "pay.v2" keeps its place in the path.
    """
    out = []
    node = data
    for part in loc:
        in_data = (isinstance(node, Mapping) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        )
        position = isinstance(node, list) and isinstance(part, int)
        if in_data:
            node = node[part]
        elif _is_union_tag(part):
            continue
        else:
            node = None  # a field the user left out (missing): keep it, stop following
        out.append(f"[{part}]" if position else str(part))
    return out


def _is_union_tag(part: object) -> bool:
    # pydantic names the union member tried in the location: "constrained-float", "tuple[...]"
    return isinstance(part, str) and (
        not part.replace("_", "a").isalnum() or part in ("float", "int", "str", "bool", "none")
    )


_EXPECTED = {
    "float_parsing": "a number",
    "float_type": "a number",
    "finite_number": "a finite number",
    "int_parsing": "an integer",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "tuple_type": "a [low, high] list",
    "list_type": "a list",
    "dict_type": "a table",
    "model_type": "a table",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "a string",
    "none_required": "nothing",
}


def _message(errs: list[Any], path: list[str]) -> str:
    err = errs[0]
    got = err.get("input")
    if len(errs) > 1:  # one value, several union members refused it
        wanted = []
        for e in errs:
            w = _EXPECTED.get(e["type"])
            if w is None:
                return _message([e], path)
            if w not in wanted:
                wanted.append(w)
        return f"must be {' or '.join(wanted)}, got {got!r}"
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        return _unknown_key(path)
    if kind == "missing":
        return "is required"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        words = {
            "greater_than": ">",
            "greater_than_equal": ">=",
            "less_than": "<",
            "less_than_equal": "<=",
        }
        bound = next(iter(ctx.values()))
        return f"must be {words[kind]} {bound}, got {got!r}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}, got {got!r}"
    if kind == "value_error":
        cause = ctx.get("error")
        return cause.message if isinstance(cause, ConfigError) else str(cause or err["msg"])
    if kind in _EXPECTED:
        return f"must be {_EXPECTED[kind]}, got {got!r}"
    return f"{err['msg'][0].lower()}{err['msg'][1:]}, got {got!r}"


def _unknown_key(path: list[str]) -> str:
    """``unknown key 'failure_treshold' (did you mean 'failure_threshold'?)``: the key at the
    end of ``path``, and the closest key its section takes, if one is close."""
    *parent, key = path or ["?"]
    section = _without_none(_annotation_at(parent))
    if not _is_model(section):
        return f"unknown key {key!r}"
    known = [f.alias or n for n, f in section.model_fields.items()]
    known += list(getattr(section, "_keys_besides_fields", ()))
    near = difflib.get_close_matches(key, known, n=1, cutoff=0.7)
    return f"unknown key {key!r}" + (f" (did you mean {near[0]!r}?)" if near else "")


def _check_component_name(name: str) -> None:
    if not name or not all(c.isalnum() or c in "_-." for c in name):
        raise ValueError(f"component name {name!r} may hold only letters, digits, '_', '-' and '.'")


def _deep_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: _deep_copy(v) if isinstance(v, Mapping) else list(v) if isinstance(v, list) else v
        for k, v in data.items()
    }


def _drop_none(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _drop_none(v) for k, v in data.items() if v is not None}
    if isinstance(data, list):
        return [_drop_none(v) for v in data]
    return data
