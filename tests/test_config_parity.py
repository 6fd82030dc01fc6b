"""Each setting of a configuration file means what its component's own config says.

The components' config records are the truth: ``BreakerConfig``, ``PoolConfig``,
``PolicyConfig`` (with ``MemoryManager``'s own arguments), ``Scope``, ``FaultSettings`` and the
rate limiter's own settings.
``buttress._config`` restates their fields as pydantic models, so a file gets typed errors at
the right path. For each (settings model, component) pair, field by field: the same names (the
deliberate exceptions listed below with their reasons), equal defaults, and the same answer,
accept or refuse, for every value probed at and around the bounds of every numeric field.

A file's value means in code what it says: a number's text (``"10"``, as the environment
spells it) is that number, a duration's text (``"500ms"``) its seconds; the file answers for
it as the component answers for what it means. One deliberate difference: a bare number of
seconds above its setting's plausible bound (``_config.PLAUSIBLE_SECONDS``) is refused by the
file alone (the unit a file does not show), and the same value written with a unit is not.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from buttress import (
    AdaptiveConcurrency,
    Backoff,
    Bulkhead,
    CpuMonitor,
    Leasing,
    LoopLagMonitor,
    LoopLagMonitors,
    RateLimiter,
    Retry,
    RetryBudget,
    Scope,
)
from buttress import _config as c
from buttress._breaker import BreakerConfig, DegradationLevel
from buttress._chaos import FaultSettings
from buttress._errors import ConfigError
from buttress._memory import MemoryManager
from buttress._memory._policy import PolicyConfig
from buttress._memory._probe import SOURCES
from buttress._overload import CpuConfig, LagConfig
from buttress._pool import PoolConfig
from buttress._pool._config import HEALTH_CHECKS, STRATEGIES
from buttress.ratelimit._scope import ALGORITHMS

BELOW_ONE = math.nextafter(1.0, 0.0)
SMALLEST = 5e-324  # the smallest float above 0
HUGE_INT = 2**62


@dataclass(frozen=True)
class Written:
    """A value as a file writes it (``"500ms"``) and what it means in code (0.5)."""

    text: str
    seconds: float


@dataclass(frozen=True)
class Pair:
    """A settings model and the component constructor that validates the same settings."""

    name: str
    settings: type[BaseModel]
    component: Callable[..., object]
    # Only in the file, or only in code: name -> why.
    settings_only: Mapping[str, str] = field(default_factory=dict)
    component_only: Mapping[str, str] = field(default_factory=dict)
    # In both, under another name (settings name -> component name).
    renamed: Mapping[str, str] = field(default_factory=dict)
    # In both, with defaults (and so meanings of "unset") that differ on purpose: name -> why.
    other_default: Mapping[str, str] = field(default_factory=dict)
    # Values both sides need (required fields), the component's that the file defaults, and the
    # file's that the component takes in another form.
    required: Mapping[str, Any] = field(default_factory=dict)
    component_required: Mapping[str, Any] = field(default_factory=dict)
    settings_required: Mapping[str, Any] = field(default_factory=dict)
    # Fields bound by a rule with another setting: that setting's value while the field is
    # probed, chosen so the rule between them does not decide (both sides check it alike).
    partners: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def shared(self) -> list[str]:
        return [n for n in self.settings.model_fields if n not in self.settings_only]

    def component_name(self, name: str) -> str:
        return self.renamed.get(name, name)


RULES = "rules in a file (_classify.py), compiled to matchers; None keeps the breaker's default"

BREAKER = Pair(
    "breaker",
    c.CircuitBreakerSettings,
    BreakerConfig,
    settings_only={
        "strategy": "a preset: fail_fast turns the degradation thresholds off",
        "fault_injection": "the breaker's FaultInjector, which Infrastructure builds",
        "fleet": "whether it joins [fleet]: the breaker takes the RedisFleet made from it",
    },
    other_default={"record": RULES, "ignore": RULES},
    partners={
        "failure_threshold": {"degradation_threshold": None},
        "degradation_threshold": {"failure_threshold": 2**63},
        "failure_rate_threshold": {"degradation_rate_threshold": None},
        "degradation_rate_threshold": {"failure_rate_threshold": 1.0},
        "slow_call_rate_threshold": {"slow_degradation_rate_threshold": None},
        "slow_degradation_rate_threshold": {"slow_call_rate_threshold": 1.0},
        "reset_timeout_max": {"reset_timeout": SMALLEST},
    },
)

POOL = Pair(
    "pool",
    c.PoolSettings,
    PoolConfig,
    settings_only={
        "factory": "how Infrastructure makes members (import path): the pool takes callables",
        "args": "the factory's arguments",
        "kwargs": "the factory's keyword arguments",
        "check_sql": "a check Infrastructure builds: the pool takes a callable",
        "invalidate_on": "exception classes by import path: the pool takes the classes",
        "is_async": "which pool class Infrastructure builds",
    },
    other_default={
        "health_check_strategy": "unset: 'mixed' when the pool has a check, else 'passive'",
    },
    partners={
        "min_size": {"max_size": 2**63},
        "connect_backoff": {"connect_backoff_max": Written("1e308s", 1e308)},
        "connect_backoff_max": {"connect_backoff": SMALLEST},
    },
)

MANAGER_ONLY = "the manager's, not the policy's (see the memory manager pair)"
MEMORY_PARTNERS = {
    "warning_threshold": {"critical_threshold": 1.0, "exit_margin": 0.0},
    "critical_threshold": {"warning_threshold": SMALLEST, "exit_margin": 0.0},
    "exit_margin": {"warning_threshold": BELOW_ONE, "critical_threshold": 1.0},
}

MEMORY_POLICY = Pair(
    "memory policy",
    c.MemoryManagerSettings,
    PolicyConfig,
    settings_only={
        "enabled": "whether Infrastructure makes a memory manager at all",
        "check_interval": MANAGER_ONLY,
        "pressure_relief_enabled": MANAGER_ONLY,
        "source": MANAGER_ONLY,
        "limit_bytes": MANAGER_ONLY,
    },
    partners=MEMORY_PARTNERS,
)

MEMORY_MANAGER = Pair(
    "memory manager",
    c.MemoryManagerSettings,
    MemoryManager,
    settings_only={"enabled": "whether Infrastructure makes a memory manager at all"},
    component_only={
        "probe": "a callable that replaces the system probe: code only",
        "root": "where /proc and /sys are read: for tests of the probe",
        "clock": "code only",
        "name": "Infrastructure names it",
        "pressure_relief": "pressure_relief_enabled's old name, deprecated",
    },
    partners=MEMORY_PARTNERS,
)

ADAPTIVE = {"algorithm": "adaptive"}

SCOPE = Pair(
    "scope",
    c.ScopeSettings,
    Scope,
    other_default={
        "algorithm": "unset: the limiter's algorithm, itself token_bucket unless set",
    },
    required={"name": "api", "limit": 10},
    partners={
        "min_limit": {**ADAPTIVE, "limit": 1e308},
        "max_limit": {**ADAPTIVE, "limit": 1},
        "increase": ADAPTIVE,
        "decrease": ADAPTIVE,
        "cooldown": ADAPTIVE,
        "slow_call": ADAPTIVE,
    },
)

FAULTS = Pair(
    "fault injection",
    c.FaultInjectionSettings,
    FaultSettings.make,
    settings_only={
        "enabled": "the injector's switch (FaultInjector's), not what it injects",
        "chaos_mode": "whether [chaos.schedule] may pick the service, not what it injects",
    },
    component_only={"exception": "a type or factory: code only"},
)

SCOPES_IN_A_FILE = "how a file gives the limiter its scopes (made into Scope objects)"
LIMITER = Pair(
    "rate limiter",
    c.LimiterSettings,
    RateLimiter,
    settings_only={
        "scopes": SCOPES_IN_A_FILE,
        "algorithm": SCOPES_IN_A_FILE,
        "limit": SCOPES_IN_A_FILE,
        "window": SCOPES_IN_A_FILE,
        "burst": SCOPES_IN_A_FILE,
        "hierarchical": SCOPES_IN_A_FILE,
    },
    component_only={
        "namespace": "Infrastructure's namespace",
        "name": "the limiter's table name",
        "clock": "code only",
        "stats_window": "code only",
        "backend_retry_interval": "code only",
    },
    other_default={
        "failure_policy": "unset: rate_limiting.failure_policy, itself fail_open",
        "local_share": "unset: rate_limiting.local_share, itself 1.0",
    },
    settings_required={"limit": 10},
    component_required={"scopes": [Scope("api", 10, 60.0)]},
)

RETRY_ONLY = "the Retry's, not its backoff's (see the retry pair)"
BACKOFF_ONLY = "the backoff's, flat in the file (see the backoff pair)"

BACKOFF = Pair(
    "backoff",
    c.RetrySettings,
    Backoff,
    settings_only={
        "attempts": RETRY_ONLY,
        "deadline": RETRY_ONLY,
        "on": RETRY_ONLY,
        "on_result": RETRY_ONLY,
        "budget": RETRY_ONLY,
    },
    partners={"initial": {"max": Written("1e308s", 1e308)}, "max": {"initial": 0.0}},
)

RETRY = Pair(
    "retry",
    c.RetrySettings,
    Retry,
    settings_only={
        "initial": BACKOFF_ONLY,
        "multiplier": BACKOFF_ONLY,
        "max": BACKOFF_ONLY,
        "jitter": BACKOFF_ONLY,
        "on": RULES,
        "on_result": RULES,
        "budget": "a table of the budget's settings (see the retry budget pair)",
    },
    component_only={
        "backoff": "made from the flat backoff settings",
        "on": "classes or a predicate: a file gives rules",
        "on_result": "a predicate: a file gives rules",
        "budget": "a RetryBudget: a file gives its settings",
        "retry_after": "a callable: code only",
        "clock": "the infrastructure's clock",
        "seed": "code only (tests)",
        "name": "the service's name",
    },
)

RETRY_BUDGET = Pair(
    "retry budget",
    c.RetryBudgetSettings,
    RetryBudget,
    component_only={"clock": "the infrastructure's clock"},
)

LEASING = Pair(
    "leasing",
    c.LeasingSettings,
    Leasing,
    settings_required={"size": 10},
    component_required={"size": 10},
)

BULKHEAD = Pair(
    "bulkhead",
    c.BulkheadSettings,
    Bulkhead,
    settings_only={
        "max_concurrent": "the bulkhead's second argument in code",
        "adaptive": "a table of the adaptive limit's settings (see the adaptive pair)",
    },
    component_only={
        "limit": "an AdaptiveConcurrency: a file gives its table",
        "clock": "the infrastructure's clock",
    },
    settings_required={"max_concurrent": 2},
    component_required={"name": "b", "max_concurrent": 2},
)

ADAPTIVE = Pair(
    "adaptive concurrency",
    c.AdaptiveConcurrencySettings,
    AdaptiveConcurrency,
    settings_only={"tuning": "the algorithm's own settings, keywords in code"},
    component_only={"rng": "code only (tests)"},
    component_required={"name": "a"},
)

CPU = Pair("cpu", c.CpuSettings, CpuConfig)

LOOP_LAG = Pair("loop lag", c.LoopLagSettings, LagConfig)

PAIRS = [
    BREAKER,
    BULKHEAD,
    ADAPTIVE,
    CPU,
    LOOP_LAG,
    POOL,
    MEMORY_POLICY,
    MEMORY_MANAGER,
    SCOPE,
    FAULTS,
    LIMITER,
    BACKOFF,
    RETRY,
    RETRY_BUDGET,
    LEASING,
]

REQUIRED: Any = object()  # a parameter without a default


def component_defaults(component: Callable[..., object]) -> dict[str, Any]:
    if dataclasses.is_dataclass(component):
        out = {}
        for f in dataclasses.fields(component):
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = f.default_factory()
            else:
                out[f.name] = REQUIRED
        return out
    params = inspect.signature(component).parameters.values()
    return {
        p.name: REQUIRED if p.default is inspect.Parameter.empty else p.default
        for p in params
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def settings_default(settings: type[BaseModel], name: str) -> Any:
    info = settings.model_fields[name]
    return REQUIRED if info.is_required() else info.get_default(call_default_factory=True)


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: p.name)
def test_the_same_settings_by_name(pair: Pair) -> None:
    in_file = {pair.component_name(n) for n in pair.shared()}
    in_code = set(component_defaults(pair.component)) - set(pair.component_only)
    assert in_file == in_code
    for listed in (pair.settings_only, pair.renamed):
        assert set(listed) <= set(pair.settings.model_fields), "an exception for nothing"
    assert set(pair.component_only) <= set(component_defaults(pair.component))


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: p.name)
def test_the_same_defaults(pair: Pair) -> None:
    in_code = component_defaults(pair.component)
    differ = {
        name: (settings_default(pair.settings, name), in_code[pair.component_name(name)])
        for name in pair.shared()
        if name not in pair.other_default
        and settings_default(pair.settings, name) != in_code[pair.component_name(name)]
    }
    assert differ == {}
    for name in pair.other_default:
        assert settings_default(pair.settings, name) != in_code[name], f"{name}: now equal"


@pytest.mark.parametrize(
    ("shell", "config"),
    [
        (LoopLagMonitor, LagConfig),
        (LoopLagMonitors, LagConfig),
        (CpuMonitor, CpuConfig),
    ],
    ids=lambda x: x.__name__,
)
def test_a_monitor_takes_its_configs_defaults(shell: type, config: type) -> None:
    """A monitor's keywords repeat its config's fields (a signature users read): held here to
    the config's one source of defaults."""
    in_shell = component_defaults(shell)
    expected = component_defaults(config)
    assert {k: in_shell[k] for k in expected} == expected


# -- bounds ------------------------------------------------------------------------------------

# Points every component bound so far sits on, besides those the settings model declares.
KNOWN_BOUNDS = (0.0, 1.0 / 3.0, 1.0, 100.0)
OTHER_PROBES: tuple[Any, ...] = (
    -math.inf,
    -1,
    0,
    1,
    2,
    0.5,
    1e9,
    HUGE_INT,
    1e308,
    math.inf,
    math.nan,
    True,
    False,
    "1",
    "0.5",
    None,
)


def near(bound: float) -> list[float]:
    """A bound, the floats just either side of it, and points a little further off."""
    return [
        bound,
        math.nextafter(bound, -math.inf),
        math.nextafter(bound, math.inf),
        bound - 1e-9,
        bound + 1e-9,
    ]


def parts(settings: type[BaseModel], name: str) -> list[Any]:
    """Everything a field's type is made of: its members and their constraints, nested."""
    info = settings.model_fields[name]
    out: list[Any] = []
    todo: list[Any] = [info.annotation, *info.metadata]
    while todo:
        part = todo.pop()
        out.append(part)
        todo += typing.get_args(part)
        todo += getattr(part, "metadata", None) or []  # an Annotated member's FieldInfo
        todo += getattr(part, "__metadata__", ())
    return out


def probes(settings: type[BaseModel], name: str) -> list[Any]:
    declared = [
        getattr(part, key)
        for part in parts(settings, name)
        for key in ("gt", "ge", "lt", "le")
        if isinstance(getattr(part, key, None), int | float)
    ]
    most = c.PLAUSIBLE_SECONDS.get(settings._section, {}).get(name)  # type: ignore[attr-defined]
    values: list[Any] = [*OTHER_PROBES]
    for bound in (*KNOWN_BOUNDS, *declared, *([most] if most is not None else [])):
        values += near(float(bound))
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    values += [repr(v) for v in numbers]  # as the environment spells them
    if most is not None:  # a duration: with a unit, as a file may write it
        values += [Written(f"{v!r}s", v) for v in numbers if math.isfinite(v) and v >= 0]
        values += [Written(t, secs) for t, secs in UNIT_PROBES]
    return values


UNIT_PROBES = [
    ("500ms", 0.5),
    ("0.5 s", 0.5),
    ("2m", 120.0),
    ("1h30m", 5400.0),
    ("1 hour", 3600.0),
    ("2 days", 172800.0),
    ("0s", 0.0),
]


def is_numeric(settings: type[BaseModel], name: str) -> bool:
    """Whether the field takes an int or a float (maybe also None, or a pair); a table of
    numbers (``shed_probability``) is probed by its own test."""
    if typing.get_origin(settings.model_fields[name].annotation) is dict:
        return False
    return any(part in (int, float) for part in parts(settings, name))


def numeric_fields(pair: Pair) -> list[tuple[Pair, str]]:
    return [(pair, n) for n in pair.shared() if is_numeric(pair.settings, n)]


def component_answer(pair: Pair, values: Mapping[str, Any]) -> str:
    kwargs = {pair.component_name(k): v for k, v in values.items()}
    try:
        pair.component(**{**pair.required, **pair.component_required, **kwargs})
    except ConfigError:
        return "refuses"
    except Exception as exc:  # a value the component should have named in a ConfigError
        return f"raises {type(exc).__name__}"
    return "accepts"


def settings_answer(pair: Pair, values: Mapping[str, Any]) -> str:
    try:
        pair.settings.model_validate({**pair.required, **pair.settings_required, **values})
    except ValidationError:
        return "refuses"
    return "accepts"


def meaning(value: Any) -> Any:
    """What a file's value means in code: a number's text is that number (in a range or a
    table too)."""
    if isinstance(value, Written):
        return value.seconds
    if isinstance(value, str):
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                pass
    if isinstance(value, list | tuple):
        return type(value)(meaning(v) for v in value)
    if isinstance(value, dict):
        return {k: meaning(v) for k, v in value.items()}
    return value


def as_written(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v.text if isinstance(v, Written) else v for k, v in values.items()}


def as_meant(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: meaning(v) for k, v in values.items()}


def most_seconds(pair: Pair, name: str) -> float | None:
    """The plausible bound of a duration setting (None: not a duration)."""
    section = pair.settings._section  # type: ignore[attr-defined]
    return c.PLAUSIBLE_SECONDS.get(section, {}).get(name)


def implausible(value: Any, most: float | None) -> bool:
    """Whether the file refuses ``value`` as a bare number of seconds above ``most``."""
    if most is None or isinstance(value, Written):
        return False
    if isinstance(value, list | tuple):
        return any(implausible(v, most) for v in value)
    number = meaning(value)
    return (
        isinstance(number, int | float)
        and not isinstance(number, bool)
        and math.isfinite(number)
        and number > most
    )


def disagreements(pair: Pair, name: str, values: list[Any]) -> list[str]:
    out = []
    most = most_seconds(pair, name)
    for value in values:
        written = value.text if isinstance(value, Written) else value
        partners = pair.partners.get(name, {})
        in_file = settings_answer(pair, {**as_written(partners), name: written})
        in_code = component_answer(pair, {**as_meant(partners), name: meaning(value)})
        expected = "refuses" if implausible(value, most) else in_code
        if in_file != expected:
            out.append(
                f"{name}={written!r}: the file {in_file}, the component {in_code} "
                f"(for {meaning(value)!r})"
            )
    return out


@pytest.mark.parametrize(
    ("pair", "name"),
    [pn for pair in PAIRS for pn in numeric_fields(pair)],
    ids=lambda x: x.name if isinstance(x, Pair) else x,
)
def test_the_same_bounds(pair: Pair, name: str) -> None:
    assert disagreements(pair, name, probes(pair.settings, name)) == []


# Every other shared setting, none of them a number: a new setting must be probed or listed.
NOT_NUMBERS = {
    "algorithm",
    "backend",
    "lease",  # a table: see the leasing pair
    "client_errors_neutral",
    "failure_policy",
    "failure_result",
    "by",
    "health_check_strategy",
    "ignore",
    "jitter",
    "name",
    "pressure_relief_enabled",
    "record",
    "shed_probability",
    "source",
    "strategy",
}


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: p.name)
def test_every_shared_setting_is_probed_or_no_number(pair: Pair) -> None:
    probed = {name for _, name in numeric_fields(pair)}
    assert set(pair.shared()) - probed <= NOT_NUMBERS
    assert not probed & NOT_NUMBERS


def test_the_same_bounds_for_each_shed_probability() -> None:
    for level in ("light", "medium", "heavy"):
        values = probes(c.CircuitBreakerSettings, "shed_probability")
        found = [
            f"{level}: {d}"
            for d in disagreements(
                BREAKER, "shed_probability", [{level: v} for v in values] + [{level: None}]
            )
        ]
        assert found == []


def test_the_same_latency_ranges() -> None:
    pairs: list[Any] = [
        (0, 0),
        [0.1, 0.2],
        (0.2, 0.1),
        (-1, 1),
        (0, math.inf),
        (math.nan, 1),
        (True, 1),
        ("1", 2),
        (1, 2, 3),
        (),
        [SMALLEST, SMALLEST],
    ]
    assert disagreements(FAULTS, "latency", pairs) == []


# -- choices -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "name", "choices"),
    [
        (c.PoolSettings, "strategy", STRATEGIES),
        (c.PoolSettings, "health_check_strategy", HEALTH_CHECKS),
        (c.MemoryManagerSettings, "source", SOURCES),
    ],
)
def test_the_same_choices(settings: type[BaseModel], name: str, choices: tuple[str, ...]) -> None:
    assert set(literal_values(settings.model_fields[name].annotation)) == set(choices)


def test_the_same_shedding_levels() -> None:
    assert set(typing.get_args(c.Level)) == {level.value for level in DegradationLevel}


def test_the_same_algorithm_names() -> None:
    assert set(literal_values(c.ScopeSettings.model_fields["algorithm"].annotation)) == set(
        ALGORITHMS
    )


def literal_values(annotation: Any) -> list[Any]:
    """The values of a ``Literal`` (also within ``Literal[...] | None``)."""
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    return [v for arg in typing.get_args(annotation) for v in literal_values(arg)]
