"""One typed configuration for the whole infrastructure, from a dict, TOML or the environment.

>>> cfg = load_config({"circuit_breakers": {"payments": {"failure_threshold": 8}}})
>>> cfg.circuit_breakers["payments"].failure_threshold
8

Unknown keys and bad values raise :class:`~buttress.ConfigError` naming the path, e.g.
``rate_limiting.limiters.api.scopes.0.limit: must be greater than 0``. Defaults follow the guide.
Environment variables ``BUTTRESS_<PATH>`` (sections separated by ``__``) override what a file
or dict says: ``BUTTRESS_MEMORY_MANAGER__CRITICAL_THRESHOLD=0.9``,
``BUTTRESS_CIRCUIT_BREAKERS__PAYMENTS__RESET_TIMEOUT=10``. Values are read as JSON when they
parse as JSON (numbers, ``true``, lists), else as strings.
"""

from __future__ import annotations

import importlib
import json
import os
import tomllib
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ._breaker._config import DEFAULT_SHED_PROBABILITY
from ._chaos import FaultSettings
from ._errors import ConfigError
from ._memory._probe import Source
from ._pool._config import HealthCheck, Strategy
from .ratelimit._registry import AlgorithmName

if TYPE_CHECKING:
    from .ratelimit._scope import Scope

__all__ = [
    "ChaosSettings",
    "CircuitBreakerSettings",
    "Config",
    "FaultInjectionSettings",
    "LimiterSettings",
    "MemoryManagerSettings",
    "PoolSettings",
    "RateLimitingSettings",
    "ScopeSettings",
    "ServiceSettings",
    "load_config",
]

ENV_PREFIX = "BUTTRESS_"

# Strict: a number (an int is fine), never a bool or a string that happens to parse as one.
# The bounds are the components' own (their config dataclasses check them with _validate);
# tests/test_config_parity.py holds each setting here to the same answers.
Fraction = Annotated[float, Field(ge=0.0, le=1.0, strict=True)]  # [0, 1]
Share = Annotated[float, Field(gt=0.0, le=1.0, strict=True)]  # (0, 1]
ProperFraction = Annotated[float, Field(gt=0.0, lt=1.0, strict=True)]  # (0, 1)
Jitter = Annotated[float, Field(ge=0.0, lt=1.0, strict=True)]  # [0, 1)
Positive = Annotated[float, Field(gt=0.0, strict=True, allow_inf_nan=False)]  # (0, inf)
Seconds = Annotated[float, Field(ge=0.0, strict=True, allow_inf_nan=False)]  # [0, inf)
Percent = Annotated[float, Field(gt=0.0, le=100.0, strict=True)]  # (0, 100]
Count = Annotated[int, Field(ge=1, strict=True)]  # 1, 2, ...
Size = Annotated[int, Field(ge=0, strict=True)]  # 0, 1, ...
Level = Literal["light", "medium", "heavy"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _component_names(value: dict[str, Any]) -> dict[str, Any]:
    """A table of components (breakers, limiters, ...): its names go into storage keys and
    metric labels, so each must be one."""
    for name in value:
        _check_component_name(name)
    return value


# -- circuit breakers --------------------------------------------------------------------------


def _prefixed(path: str, build: Callable[..., object], kwargs: dict[str, Any]) -> None:
    """``build(**kwargs)``; its ``ConfigError`` is re-raised with ``path`` in front."""
    try:
        build(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{path}.{exc.path}", exc.message) from None


class FaultInjectionSettings(_Section):
    """Fault injection for one service (off unless ``enabled``; see docs/chaos.md)."""

    enabled: bool = False
    failure_rate: Fraction = 0.0
    latency: Seconds | tuple[Seconds, Seconds] | None = None  # a (low, high) pair: low <= high
    latency_rate: Fraction | None = None

    @field_validator("latency")
    @classmethod
    def _latency_range(cls, value: Any) -> Any:
        try:
            FaultSettings.make(latency=value)
        except ConfigError as exc:
            raise ValueError(exc.message) from None
        return value


def _default_shedding() -> dict[Level, float]:
    return {level.value: p for level, p in DEFAULT_SHED_PROBABILITY.items()}


class CircuitBreakerSettings(_Section):
    """A breaker's settings (see docs/circuit-breaker.md for each)."""

    strategy: Literal["gradual_degradation", "fail_fast"] = "gradual_degradation"
    window: Positive = 60.0
    buckets: Count = 10
    failure_threshold: Count | None = 5
    degradation_threshold: Count | None = 3  # below failure_threshold
    failure_rate_threshold: Share | None = 0.5
    degradation_rate_threshold: ProperFraction | None = 0.2  # below failure_rate_threshold
    minimum_calls: Count = 10
    slow_call_duration: Positive | None = None
    slow_call_rate_threshold: Share | None = 0.5
    slow_degradation_rate_threshold: ProperFraction | None = 0.2  # below the slow-call rate
    consecutive_failure_threshold: Count | None = None
    level_hysteresis: Annotated[float, Field(ge=0.0, lt=1.0 / 3.0, strict=True)] = 0.05
    shed_probability: dict[Level, Fraction] = Field(default_factory=_default_shedding)
    reset_timeout: Positive = 30.0
    reset_timeout_multiplier: Annotated[float, Field(ge=1.0, strict=True)] = 1.0
    # None: 300 s, or reset_timeout if longer; inf: no cap.
    reset_timeout_max: Annotated[float, Field(gt=0.0, strict=True)] | None = None
    reset_timeout_jitter: Jitter = 0.0
    half_open_max_calls: Count = 5
    half_open_success_ratio: Share = 0.8
    probe_timeout: Positive = 30.0
    health_check_interval: Positive = 10.0
    # Exception classes by import path, e.g. ["builtins.ConnectionError", "httpx.HTTPError"].
    record: list[str] | None = None
    ignore: list[str] | None = None
    client_errors_neutral: bool = True  # HTTP 4xx (not 408, 429) counts for nothing
    fault_injection: FaultInjectionSettings = FaultInjectionSettings()

    def _settings(self) -> dict[str, Any]:
        out = self.model_dump(exclude={"strategy", "record", "ignore", "fault_injection"})
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

    def breaker_kwargs(self, path: str) -> dict[str, Any]:
        """Keyword arguments for :class:`~buttress.CircuitBreaker` (``record`` imported)."""
        out = self._settings()
        if self.record is not None:
            out["record"] = tuple(_import_exception(f"{path}.record", p) for p in self.record)
        if self.ignore is not None:
            out["ignore"] = tuple(_import_exception(f"{path}.ignore", p) for p in self.ignore)
        return out


# -- memory and chaos --------------------------------------------------------------------------


class MemoryManagerSettings(_Section):
    """The memory manager's settings (see docs/memory.md)."""

    enabled: bool = True
    check_interval: Positive = 30.0
    warning_threshold: ProperFraction = 0.70  # below critical_threshold
    critical_threshold: Share = 0.85
    pressure_relief_enabled: bool = True
    source: Source = "auto"
    limit_bytes: Count | None = None
    exit_margin: Annotated[float, Field(ge=0.0, lt=1.0, strict=True)] = 0.05  # below warning
    exit_samples: Count = 3
    psi_warning: Percent | None = 10.0
    psi_critical: Percent | None = 10.0
    gc_interval: Annotated[float, Field(ge=0.0, strict=True)] = 30.0  # 0: at every check

    @model_validator(mode="after")
    def _ordered(self) -> MemoryManagerSettings:
        # The policy's rules between settings (critical above warning, exit_margin below it).
        from ._memory._policy import PolicyConfig

        fields = set(PolicyConfig.__dataclass_fields__)
        kwargs = {k: v for k, v in self.manager_kwargs().items() if k in fields}
        _prefixed("memory_manager", PolicyConfig, kwargs)
        return self

    def manager_kwargs(self) -> dict[str, Any]:
        out = self.model_dump(exclude={"enabled", "pressure_relief_enabled"})
        out["pressure_relief"] = self.pressure_relief_enabled
        return out


class ChaosSettings(_Section):
    """The chaos master switch and a seed (per-service faults live with each breaker)."""

    enabled: bool = False
    seed: int | None = None


# -- rate limiting -----------------------------------------------------------------------------

Algorithm = AlgorithmName  # the names of the algorithm registry (ratelimit/_registry.py)


class ScopeSettings(_Section):
    """One scope of a limiter (see docs/rate-limiting.md)."""

    name: str
    limit: Positive
    window: Positive = 60.0
    algorithm: Algorithm | None = None  # the limiter's algorithm when unset
    burst: Positive | None = None
    by: str | None = ""  # the context entry holding the id; "" = the scope's name
    # min_limit <= limit <= max_limit, and an adaptive limit never falls below 1
    min_limit: Annotated[float, Field(ge=1.0, strict=True, allow_inf_nan=False)] | None = None
    max_limit: Annotated[float, Field(ge=1.0, strict=True, allow_inf_nan=False)] | None = None
    increase: Positive | None = None
    decrease: ProperFraction = 0.5
    cooldown: Seconds = 1.0
    slow_call: Positive | None = None


def _check_backend_url(value: str) -> str:
    """A backend URL checked as ``backend_from_url`` will check it (one rule for both)."""
    from .ratelimit._from_url import url_problem

    problem = url_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


class LimiterSettings(_Section):
    """A named limiter: explicit ``scopes``, or the guide's shorthand.

    Shorthand: ``limit`` / ``window`` / ``burst`` make one shared scope (``global``); with
    ``hierarchical = true`` they make the guide's three scopes: ``user`` (``limit``), ``org``
    (10 x ``limit``) and ``global`` (100 x ``limit``).
    """

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

    failure_policy: Literal["fail_open", "fail_closed"] | None = None
    latency_budget: Positive = 0.005

    @model_validator(mode="after")
    def _has_scopes(self) -> LimiterSettings:
        if self.scopes is None and self.limit is None:
            raise ValueError("give either scopes or limit (the shorthand)")
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
                where = f"{path}.scopes.{i}" if self.scopes is not None else path
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

    default_algorithm: Algorithm = "token_bucket"
    # "memory", "sqlite:///path/to/state.db", "redis://host:6379/0" (see backend_from_url)
    backend: str = "memory"
    failure_policy: Literal["fail_open", "fail_closed"] = "fail_open"
    max_keys: Count = 1_000_000
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
        for name, limiter in self.limiters.items():
            limiter.build_scopes(f"rate_limiting.limiters.{name}", self.default_algorithm)
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

    factory: str | None = None
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    check_sql: str | None = None
    # Exception classes by import path, e.g. ["psycopg.OperationalError"]: see invalidate_on.
    invalidate_on: list[str] | None = None
    is_async: bool = Field(False, alias="async")
    min_size: Size = 0
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
        return tuple(
            _import_exception(f"{path}.invalidate_on", p) for p in self.invalidate_on or ()
        )


# -- services ----------------------------------------------------------------------------------


class ServiceSettings(_Section):
    """Which components guard a service; each defaults to the one named like the service.

    ``false`` turns a layer off for the service; a string names another component's table.
    """

    breaker: str | bool = True
    limiter: str | bool = True
    pool: str | bool = True
    critical: bool = False


# -- the whole tree ----------------------------------------------------------------------------


class Config(_Section):
    """The whole configuration. Every section is optional."""

    circuit_breakers: dict[str, CircuitBreakerSettings] = Field(default_factory=dict)
    rate_limiting: RateLimitingSettings = RateLimitingSettings()
    connection_pools: dict[str, PoolSettings] = Field(default_factory=dict)
    memory_manager: MemoryManagerSettings = MemoryManagerSettings()
    chaos: ChaosSettings = ChaosSettings()
    services: dict[str, ServiceSettings] = Field(default_factory=dict)

    _names = field_validator("circuit_breakers", "connection_pools", "services")(_component_names)

    @model_validator(mode="after")
    def _components_build(self) -> Config:
        # As for the scopes: settings valid one by one may still make an impossible breaker
        # or pool; build their configs now, so `config check` sees it too.
        for name, breaker in self.circuit_breakers.items():
            breaker.check(f"circuit_breakers.{name}")
        for name, pool in self.connection_pools.items():
            pool.check(f"connection_pools.{name}")
        return self

    def check_imports(self) -> None:
        """Import every exception class and pool factory the configuration names, as
        :class:`~buttress.Infrastructure` will; ``ConfigError`` names the first that fails."""
        for name, breaker in self.circuit_breakers.items():
            breaker.breaker_kwargs(f"circuit_breakers.{name}")
        for name, pool in self.connection_pools.items():
            if pool.factory is not None:
                import_callable(f"connection_pools.{name}.factory", pool.factory)
            pool.invalidate_on_types(f"connection_pools.{name}")

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
    """Build a :class:`Config` from a dict, a TOML file path or a ``Config``, then apply
    ``BUTTRESS_...`` environment overrides (``env`` defaults to ``os.environ``; pass ``{}`` to
    ignore the environment).
    """
    if isinstance(source, Config):
        data: dict[str, Any] = source.model_dump(by_alias=True)  # `async`, as in TOML
    elif source is None:
        data = {}
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
        for path, value, variable in _env_overrides(os.environ if env is None else env)
    ]
    try:
        return Config.model_validate(data)
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
    return error_path == variable_path or error_path.startswith(variable_path + ".")


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


def _env_overrides(env: Mapping[str, str]) -> list[tuple[list[str], Any, str]]:
    """``(path, value, variable)`` for each ``BUTTRESS_...`` variable."""
    out = []
    for key, raw in sorted(env.items()):
        if not key.startswith(ENV_PREFIX) or key in ("BUTTRESS_REDIS_URL", "BUTTRESS_PG_DSN"):
            continue
        path = [part.lower() for part in key[len(ENV_PREFIX) :].split("__")]
        if not all(path):
            raise ConfigError(key, "empty section in the variable name (check the '__'s)")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        out.append((path, value, key))
    return out


def _set_path(data: dict[str, Any], path: list[str], value: Any) -> list[str]:
    """Set ``value`` at ``path``; returns the path as spelled in ``data``."""
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
    node[path[-1]] = value
    return path


def _existing_key(node: Mapping[str, Any], part: str) -> str:
    """``part`` (lower-cased, as variable names are) as spelled in ``node``: the variable
    BUTTRESS_CIRCUIT_BREAKERS__PAYMENTS__... reaches a breaker named "Payments"."""
    if part in node:
        return part
    matches = [k for k in node if isinstance(k, str) and k.lower() == part]
    return matches[0] if len(matches) == 1 else part


def _config_error(exc: ValidationError, data: Mapping[str, Any]) -> ConfigError:
    grouped: dict[str, list[Any]] = {}
    for err in exc.errors(include_url=False):
        cause = err.get("ctx", {}).get("error")
        if isinstance(cause, ConfigError):  # raised by a validator with its own full path
            grouped.setdefault(cause.path, []).append(err)
            continue
        path = ".".join(_error_path(err["loc"], data))
        grouped.setdefault(path, []).append(err)
    problems = [(path, _message(errs)) for path, errs in grouped.items()]
    first_path, message = problems[0]
    if len(problems) > 1:
        rest = "; ".join(f"{p}: {m}" for p, m in problems[1:4])
        more = f" (and {len(problems) - 4} more)" if len(problems) > 4 else ""
        message = f"{message}; also {rest}{more}"
    return ConfigError(first_path, message)


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
        if in_data:
            node = node[part]
        elif _is_union_tag(part):
            continue
        else:
            node = None  # a field the user left out (missing): keep it, stop following
        out.append(str(part))
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


def _message(errs: list[Any]) -> str:
    err = errs[0]
    got = err.get("input")
    if len(errs) > 1:  # one value, several union members refused it
        wanted = []
        for e in errs:
            w = _EXPECTED.get(e["type"])
            if w is None:
                return _message([e])
            if w not in wanted:
                wanted.append(w)
        return f"must be {' or '.join(wanted)}, got {got!r}"
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown key"
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


def _check_component_name(name: str) -> None:
    if not name or not all(c.isalnum() or c in "_-." for c in name):
        raise ValueError(f"component name {name!r} may hold only letters, digits, '_', '-' and '.'")


def import_callable(path: str, dotted: str) -> Callable[..., Any]:
    """The callable ``dotted`` names: ``"module:attr"``, ``"module:Class.method"`` (a dotted
    attribute path after the colon, e.g. ``"psycopg:AsyncConnection.connect"``) or
    ``"module.attr"``."""
    obj = _resolve(dotted)
    if obj is _MISSING:
        raise ConfigError(
            path, f"cannot import {dotted!r} (write 'module:callable' or 'module:Class.method')"
        )
    if not callable(obj):
        raise ConfigError(path, f"{dotted!r} is not callable")
    return obj  # type: ignore[no-any-return]


_MISSING: Any = object()


def _resolve(dotted: str, default_module: str | None = None) -> Any:
    """What ``dotted`` names (``_MISSING`` when it names nothing): ``"module:attr.attr"``
    (everything after the colon is looked up on the module, part by part) or
    ``"module.attr"`` (the last part on the module; ``default_module`` when there is no dot)."""
    module_name, sep, attrs = dotted.partition(":")
    if not sep:
        module_name, _, attrs = dotted.rpartition(".")
        if not module_name and default_module is not None:
            module_name = default_module
    parts = attrs.split(".")
    if not module_name or not all(parts):
        return _MISSING
    try:
        obj: Any = importlib.import_module(module_name)
    except (ImportError, ValueError, TypeError):
        return _MISSING
    for part in parts:
        parent, obj = obj, getattr(obj, part, _MISSING)
        if obj is _MISSING and isinstance(parent, types.ModuleType):
            try:  # a submodule its package does not import itself ("pkg:sub.Error")
                obj = importlib.import_module(f"{parent.__name__}.{part}")
            except ImportError:
                return _MISSING
        elif obj is _MISSING:
            return _MISSING
    return obj


def _import_exception(path: str, dotted: str) -> type[BaseException]:
    obj = _resolve(dotted, default_module="builtins")
    if obj is _MISSING:
        raise ConfigError(path, f"cannot import exception {dotted!r}")
    if not (isinstance(obj, type) and issubclass(obj, BaseException)):
        raise ConfigError(path, f"{dotted!r} is not an exception class")
    return obj


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
