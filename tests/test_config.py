"""Configuration: the example file covers every option, loads, and errors name paths."""

from __future__ import annotations

import os
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import buttress as bt
from buttress import _config as c

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "buttress.toml"


def keys_of(tables: list[dict[str, Any]]) -> set[str]:
    out: set[str] = set()
    for t in tables:
        out |= set(t)
    return out


def fields(model: type[BaseModel]) -> set[str]:
    return {f.alias or name for name, f in model.model_fields.items()}


def test_example_covers_every_option() -> None:
    data = tomllib.loads(EXAMPLE.read_text())
    breakers = list(data["circuit_breakers"].values())
    limiters = list(data["rate_limiting"]["limiters"].values())
    scopes = [s for lim in limiters for s in lim.get("scopes", [])]
    covered = {
        c.Config: set(data),
        c.CircuitBreakerSettings: keys_of(breakers),
        c.FaultInjectionSettings: keys_of(
            [b["fault_injection"] for b in breakers if "fault_injection" in b]
        ),
        c.RateLimitingSettings: set(data["rate_limiting"]),
        c.LimiterSettings: keys_of(limiters),
        c.ScopeSettings: keys_of(scopes),
        c.PoolSettings: keys_of(list(data["connection_pools"].values())),
        c.MemoryManagerSettings: set(data["memory_manager"]),
        c.ChaosSettings: set(data["chaos"]),
        c.ChaosScheduleSettings: set(data["chaos"]["schedule"]),
        c.ServiceSettings: keys_of(list(data["services"].values())),
        c.RetrySettings: keys_of([s["retry"] for s in data["services"].values() if "retry" in s]),
        c.BulkheadSettings: keys_of(
            [s["bulkhead"] for s in data["services"].values() if "bulkhead" in s]
        ),
        c.AdaptiveConcurrencySettings: keys_of(
            [
                s["bulkhead"]["adaptive"]
                for s in data["services"].values()
                if "adaptive" in s.get("bulkhead", {})
            ]
        ),
        c.OverloadSettings: set(data["overload"]),
        c.FleetSettings: set(data["fleet"]),
        c.CpuSettings: set(data["overload"]["cpu"]),
        c.LoopLagSettings: set(data["overload"]["loop_lag"]),
        c.RetryBudgetSettings: keys_of(
            [
                s["retry"]["budget"]
                for s in data["services"].values()
                if "budget" in s.get("retry", {})
            ]
        ),
    }
    for model, seen in covered.items():
        assert fields(model) - seen == set(), f"{model.__name__} options missing from the example"


def test_example_loads_and_builds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # the example's sqlite file lands here
    cfg = bt.load_config(EXAMPLE, env={})
    assert cfg.rate_limiting.limiters["payments"].scopes is not None
    infra = bt.Infrastructure("example", cfg, background=False, env={})
    try:
        assert set(infra.breakers) == {"payments", "search"}  # search: the default breaker
        assert infra.limiters["search"].scopes[1].limit == 10_000
        assert infra.bulkheads["reports"].limit == 20
        assert infra.layers("search").bulkhead is infra.bulkheads["search"]
        assert infra.layers("search").priority == "sheddable"
        assert infra.cpu is not None and infra.loop_lag is not None
    finally:
        infra.close()


def test_environment_overrides(tmp_path: Path) -> None:
    env = {
        "BUTTRESS_MEMORY_MANAGER__CRITICAL_THRESHOLD": "0.9",
        "BUTTRESS_CIRCUIT_BREAKERS__PAYMENTS__RESET_TIMEOUT": "10",
        "BUTTRESS_CHAOS__ENABLED": "true",
        "BUTTRESS_REDIS_URL": "redis://ignored",
    }
    cfg = bt.load_config({"circuit_breakers": {"payments": {}}}, env=env)
    assert cfg.memory_manager.critical_threshold == 0.9
    assert cfg.circuit_breakers["payments"].reset_timeout == 10.0
    assert cfg.chaos.enabled is True
    with pytest.raises(bt.ConfigError) as info:
        bt.load_config({}, env={"BUTTRESS_MEMORY_MANAGER__NOPE": "1"})
    assert info.value.path == "memory_manager.nope"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[circuit_breakers.x]\nfailure_threshold = 'many'",
            "failure_threshold: must be an integer",
        ),
        ("[memory_manager\n", "is not valid TOML"),
        ("[rate_limiting]\nbackend = 'mongo://x'", "rate_limiting.backend: must be 'memory'"),
    ],
)
def test_file_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "b.toml"
    path.write_text(text)
    with pytest.raises(bt.ConfigError, match=message):
        bt.load_config(path, env={})


def test_every_backend_url_backend_from_url_takes_is_valid_in_a_file() -> None:
    # unix:// was taken by backend_from_url and a limiter's backend, refused as the default.
    from buttress.ratelimit import backend_from_url

    for url in ("memory", "sqlite:///var/lib/app/l.db", "redis://h:6379/0", "rediss://h/1"):
        assert bt.load_config({"rate_limiting": {"backend": url}}, env={})
    url = "unix:///tmp/redis.sock?db=2"
    cfg = bt.load_config(
        {"rate_limiting": {"backend": url, "limiters": {"api": {"limit": 5, "backend": url}}}},
        env={},
    )
    assert cfg.rate_limiting.backend == cfg.rate_limiting.limiters["api"].backend == url
    backend = backend_from_url(url, lazy=True)  # made without asking the server
    assert type(backend).__name__ == "RedisBackend"
    backend.close()  # type: ignore[attr-defined]


def test_missing_file() -> None:
    with pytest.raises(bt.ConfigError, match="no such file"):
        bt.load_config("/nonexistent/buttress.toml", env={})


def test_environment_errors_name_the_variable() -> None:
    with pytest.raises(bt.ConfigError) as info:
        bt.load_config({}, env={"BUTTRESS_MEMORY_MANAGER__WARNING_THRESHOLD": "high"})
    assert info.value.path == "memory_manager.warning_threshold"
    assert "set by BUTTRESS_MEMORY_MANAGER__WARNING_THRESHOLD" in info.value.message


@pytest.mark.parametrize("source", [42, [1], 3.5])
def test_a_config_that_is_no_config_is_named(source: Any) -> None:
    with pytest.raises(bt.ConfigError, match="must be a mapping, a Config or a TOML file path"):
        bt.load_config(source, env={})
    with pytest.raises(bt.ConfigError) as info:
        bt.Infrastructure("app", source, env={})
    assert info.value.path == "config"


@pytest.mark.parametrize("namespace", ["a b", "", "x:y", 7])
def test_bad_namespaces_are_refused_up_front(namespace: Any) -> None:
    with pytest.raises(bt.ConfigError) as info:
        bt.Infrastructure(namespace, {"rate_limiting": {"limiters": {"api": {"limit": 1}}}})
    assert info.value.path == "namespace"


@pytest.mark.parametrize(
    ("data", "path"),
    [
        (
            {"rate_limiting": {"limiters": {"my-api": {"limit": 0}}}},
            "rate_limiting.limiters.my-api.limit",
        ),
        ({"circuit_breakers": {"pay.v2": {"colour": 1}}}, "circuit_breakers.pay.v2.colour"),
        ({"circuit_breakers": {"pay-v2": {"window": "x"}}}, "circuit_breakers.pay-v2.window"),
        ({"connection_pools": {"db-main": {"max_size": 0}}}, "connection_pools.db-main.max_size"),
        (
            {"circuit_breakers": {"p": {"fault_injection": {"latency": "x"}}}},
            "circuit_breakers.p.fault_injection.latency",
        ),
    ],
)
def test_error_paths_keep_component_names_with_dashes_and_dots(
    data: dict[str, Any], path: str
) -> None:
    with pytest.raises(bt.ConfigError) as info:
        bt.load_config(data, env={})
    assert info.value.path == path


@pytest.mark.parametrize(
    ("data", "path", "message"),
    [
        (
            {"circuit_breakers": {"p": {"degradation_threshold": 8, "failure_threshold": 5}}},
            "circuit_breakers.p.degradation_threshold",
            "must be below failure_threshold",
        ),
        (
            {"memory_manager": {"exit_margin": 0.8}},
            "memory_manager.exit_margin",
            "warning_threshold",
        ),
        (
            {"rate_limiting": {"backend": "sqlite://"}},
            "rate_limiting.backend",
            "needs a file path",
        ),
        (
            {"rate_limiting": {"backend": "sqlite://:memory:"}},
            "rate_limiting.backend",
            "its own empty database",
        ),
        (
            {"rate_limiting": {"backend": "redis://127.0.0.1:6379/zero"}},
            "rate_limiting.backend",
            "database number .* whole number",
        ),
        (
            {"rate_limiting": {"backend": "redis://127.0.0.1:6379?db=zero"}},
            "rate_limiting.backend",
            "database number .* whole number",
        ),
        (
            {"rate_limiting": {"backend": "redis://127.0.0.1:6379/0?decode_responses=True"}},
            "rate_limiting.backend",
            "decode_responses",
        ),
        (  # a limiter's own backend is checked by the same rule, when the file is loaded
            {"rate_limiting": {"limiters": {"api": {"limit": 5, "backend": "mongo://x"}}}},
            "rate_limiting.limiters.api.backend",
            "must be 'memory'",
        ),
        (
            {"rate_limiting": {"limiters": {"api": {"limit": 5, "backend": "sqlite://"}}}},
            "rate_limiting.limiters.api.backend",
            "needs a file path",
        ),
    ],
)
def test_settings_wrong_together_fail_at_load(
    data: dict[str, Any], path: str, message: str
) -> None:
    # What Infrastructure would refuse, load_config (and so `buttress config check`) refuses.
    with pytest.raises(bt.ConfigError, match=message) as info:
        bt.load_config(data, env={})
    assert info.value.path == path


@pytest.mark.parametrize(
    ("data", "path"),
    [
        (
            {"circuit_breakers": {"p": {"record": ["OSError", "builtins.NoSuchError"]}}},
            "circuit_breakers.p.record[1]",
        ),
        (
            {"connection_pools": {"db": {"factory": "nosuchmod:connect"}}},
            "connection_pools.db.factory",
        ),
        (
            {
                "connection_pools": {
                    "db": {"factory": "sqlite3:connect", "invalidate_on": ["sqlite3.NoSuchError"]}
                }
            },
            "connection_pools.db.invalidate_on",
        ),
    ],
)
def test_imports_are_checked_and_named_once(data: dict[str, Any], path: str) -> None:
    cfg = bt.load_config(data, env={})
    with pytest.raises(bt.ConfigError) as info:
        cfg.check_imports()
    assert info.value.path == path
    with pytest.raises(bt.ConfigError) as info:
        bt.Infrastructure("t", data, env={}, background=False)
    assert info.value.path == path  # not circuit_breakers.p.circuit_breakers.p.record


def test_environment_reaches_components_named_in_any_case() -> None:
    env = {"BUTTRESS_CIRCUIT_BREAKERS__PAYMENTS__RESET_TIMEOUT": "10"}
    cfg = bt.load_config({"circuit_breakers": {"Payments": {"reset_timeout": 30.0}}}, env=env)
    assert set(cfg.circuit_breakers) == {"Payments"}  # no second, lower-case breaker
    assert cfg.circuit_breakers["Payments"].reset_timeout == 10.0
    env = {"BUTTRESS_CIRCUIT_BREAKERS__PAYMENTS__RESET_TIMEOUT": "-1"}
    with pytest.raises(bt.ConfigError) as info:
        bt.load_config({"circuit_breakers": {"Payments": {}}}, env=env)
    assert info.value.path == "circuit_breakers.Payments.reset_timeout"
    assert "set by BUTTRESS_CIRCUIT_BREAKERS__PAYMENTS__RESET_TIMEOUT" in info.value.message


def test_a_config_built_on_purpose_is_not_overlaid_again() -> None:
    env = {"BUTTRESS_CONNECTION_POOLS__DB__ASYNC": "true", "BUTTRESS_CHAOS__ENABLED": "true"}
    data = {"connection_pools": {"db": {"factory": "sqlite3:connect", "args": [":memory:"]}}}
    cfg = bt.load_config(data, env={})
    assert bt.load_config(cfg, env=env) is cfg
    with bt.Infrastructure("t", cfg, env=env, background=False) as infra:
        assert infra.config is cfg
        assert not infra.chaos.enabled
    # A dict or a file still is, and a loaded config keeps its `async` key for TOML.
    loaded = bt.load_config(data, env=env)
    assert loaded.connection_pools["db"].is_async is True
    assert "async" in loaded.to_toml_dict()["connection_pools"]["db"]


def test_memory_manager_errors_name_the_parameter() -> None:
    with pytest.raises(bt.ConfigError) as info:
        bt.Infrastructure("t", {}, env={}, background=False, memory_probe=42)  # type: ignore[arg-type]
    assert info.value.path == "memory_probe"


def test_a_factory_may_name_a_dotted_attribute_after_the_colon() -> None:
    # "psycopg:AsyncConnection.connect" is a classmethod on a class of the module.
    assert c.import_callable("f", "datetime:datetime.fromtimestamp") == datetime.fromtimestamp
    cfg = {
        "connection_pools": {
            "clock": {"factory": "datetime:datetime.fromtimestamp", "args": [0], "min_size": 1}
        },
        "memory_manager": {"enabled": False},
    }
    with bt.Infrastructure("t", cfg, env={}, background=False) as infra:
        infra.run_maintenance()
        assert infra.call("clock", lambda member: member.year) == 1970
    for bad in ("datetime:datetime.no_such", "datetime:datetime..now", "datetime:"):
        with pytest.raises(bt.ConfigError, match="cannot import") as info:
            bt.load_config({"connection_pools": {"db": {"factory": bad}}}, env={}).check_imports()
        assert info.value.path == "connection_pools.db.factory"


def test_a_pool_with_a_check_defaults_to_mixed_health_checks(tmp_path: Path) -> None:
    db = str(tmp_path / "m.db")
    pools = {
        "checked": {"factory": "sqlite3:connect", "args": [db], "check_sql": "SELECT 1"},
        "told": {
            "factory": "sqlite3:connect",
            "args": [db],
            "check_sql": "SELECT 1",
            "health_check_strategy": "passive",
        },
        "plain": {"factory": "sqlite3:connect", "args": [db]},
    }
    cfg = {"connection_pools": pools, "memory_manager": {"enabled": False}}
    with bt.Infrastructure("t", cfg, env={}, background=False) as infra:
        strategies = {n: p.config.health_check_strategy for n, p in infra.pools.items()}
    assert strategies == {"checked": "mixed", "told": "passive", "plain": "passive"}
    assert (
        "health_check_strategy"
        not in bt.load_config(cfg, env={}).to_toml_dict()["connection_pools"]["checked"]
    )  # unset, not "passive": config check shows what was written


@pytest.mark.parametrize(
    ("data", "variable", "value", "path"),
    [
        (
            {"connection_pools": {"db": {"max_size": 2}}},
            "BUTTRESS_CONNECTION_POOLS__DB__MIN_SIZE",
            "5",
            "connection_pools.db",
        ),
        (
            {"circuit_breakers": {"p": {"degradation_threshold": 3}}},
            "BUTTRESS_CIRCUIT_BREAKERS__P__FAILURE_THRESHOLD",
            "2",
            "circuit_breakers.p.degradation_threshold",
        ),
        (
            {"rate_limiting": {"limiters": {"api": {"limit": 10, "burst": 3}}}},
            "BUTTRESS_RATE_LIMITING__LIMITERS__API__ALGORITHM",
            "fixed_window",
            "rate_limiting.limiters.api.burst",
        ),
    ],
)
def test_a_rule_between_two_settings_names_the_variable_that_took_part(
    data: dict[str, Any], variable: str, value: str, path: str
) -> None:
    with pytest.raises(bt.ConfigError) as info:
        bt.load_config(data, env={variable: value})
    assert info.value.path == path
    assert f"(with {variable} set)" in info.value.message


def test_a_variable_that_takes_no_part_in_a_rule_is_not_named() -> None:
    data = {"connection_pools": {"db": {"min_size": 5, "max_size": 2}}}
    with pytest.raises(bt.ConfigError) as info:
        bt.load_config(data, env={"BUTTRESS_CONNECTION_POOLS__DB__IDLE_TIMEOUT": "10"})
    assert "BUTTRESS_" not in info.value.message  # the file broke the rule, not the variable


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("redis://127.0.0.1:6379/zero?db=1", True),  # ?db= wins over the path, as in redis-py
        ("redis://127.0.0.1:6379/0?decode_responses=no&decode_responses=yes", True),  # the first
        ("redis://127.0.0.1:6379/0?decode_responses=yes&decode_responses=no", False),
        ("redis://127.0.0.1:6379/%30", True),
    ],
)
def test_redis_urls_are_read_as_redis_py_reads_them(url: str, ok: bool) -> None:
    data = {"rate_limiting": {"backend": url}}
    if ok:
        assert bt.load_config(data, env={}).rate_limiting.backend == url
    else:
        with pytest.raises(bt.ConfigError, match="decode_responses"):
            bt.load_config(data, env={})


# -- the environment ---------------------------------------------------------------------------

OTHERS_VARIABLES = {
    "BUTTRESS_NO_EXTENSIONS": "1",  # the rate limiter's, read at import
    "BUTTRESS_LOG_LEVEL": "debug",
    "BUTTRESS_FOO": "1",
    "BUTTRESS_REDIS_URL": "redis://elsewhere:6379/0",  # the test suite's
    "BUTTRESS_PG_DSN": "postgresql://postgres@elsewhere/test",
    "BUTTRESS_": "x",
    "BUTTRESS___X": "x",
}


def test_variables_that_name_no_section_change_nothing(tmp_path: Path) -> None:
    without = bt.load_config(EXAMPLE, env={})
    assert bt.load_config(EXAMPLE, env=OTHERS_VARIABLES) == without
    with bt.Infrastructure("t", EXAMPLE, env=OTHERS_VARIABLES, background=False) as infra:
        assert infra.config == without


def test_a_variable_meant_as_a_path_but_not_one_is_named_in_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = {
        "BUTTRESS_CHAOS_ENABLED": "true",  # one "_" where "__" was meant
        "BUTTRESS_MEMORY_MANGER__CHECK_INTERVAL": "10",  # a misspelt section
        "BUTTRESS_NO_EXTENSIONS": "1",
    }
    with caplog.at_level("DEBUG", logger="buttress.config"):
        cfg = bt.load_config({}, env=env)
    assert cfg == bt.load_config({}, env={})
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        "BUTTRESS_CHAOS_ENABLED is not read: 'chaos_enabled' is not a section of the "
        "configuration (did you mean BUTTRESS_CHAOS__ENABLED?)",
        "BUTTRESS_MEMORY_MANGER__CHECK_INTERVAL is not read: 'memory_manger' is not a section "
        "of the configuration (did you mean BUTTRESS_MEMORY_MANAGER__CHECK_INTERVAL?)",
    ]
    debug = [r.getMessage() for r in caplog.records if r.levelname == "DEBUG"]
    assert any(m.startswith("BUTTRESS_NO_EXTENSIONS is not read") for m in debug)


def test_variables_are_read_as_their_settings_expect() -> None:
    env = {
        "BUTTRESS_CHAOS__SEED": "7",
        "BUTTRESS_MEMORY_MANAGER__PSI_WARNING": "null",
        "BUTTRESS_MEMORY_MANAGER__PRESSURE_RELIEF_ENABLED": "false",
        "BUTTRESS_MEMORY_MANAGER__CHECK_INTERVAL": "2m",
        "BUTTRESS_CIRCUIT_BREAKERS__P__RECORD": '["builtins.OSError"]',
        "BUTTRESS_CIRCUIT_BREAKERS__P__FAULT_INJECTION__LATENCY": '["50ms", 0.2]',
        "BUTTRESS_CIRCUIT_BREAKERS__P__SHED_PROBABILITY": '{"light": 0.2}',
        "BUTTRESS_CIRCUIT_BREAKERS__P__FAILURE_THRESHOLD": "8",
        "BUTTRESS_CONNECTION_POOLS__DB__ARGS": '["app.db"]',
        "BUTTRESS_CONNECTION_POOLS__DB__CHECK_SQL": "true",  # a string setting: kept as text
        "BUTTRESS_SERVICES__REPORTS__BREAKER": "2024",  # a name that looks like a number
        "BUTTRESS_SERVICES__REPORTS__LIMITER": "false",  # the switch, not a limiter "false"
        "BUTTRESS_RATE_LIMITING__LIMITERS__API__RATE": "10/second; 1000/hour",
    }
    data = {
        "connection_pools": {"db": {"factory": "sqlite3:connect"}},
        "circuit_breakers": {"2024": {}},  # what services.reports.breaker names
    }
    cfg = bt.load_config(data, env=env)
    assert cfg.chaos.seed == 7
    assert cfg.memory_manager.psi_warning is None
    assert cfg.memory_manager.pressure_relief_enabled is False
    assert cfg.memory_manager.check_interval == 120.0
    breaker = cfg.circuit_breakers["p"]
    assert breaker.record == ["builtins.OSError"]
    assert breaker.fault_injection.latency == (0.05, 0.2)
    assert breaker.shed_probability == {"light": 0.2}
    assert breaker.failure_threshold == 8
    assert cfg.connection_pools["db"].args == ["app.db"]
    assert cfg.connection_pools["db"].check_sql == "true"
    assert (cfg.services["reports"].breaker, cfg.services["reports"].limiter) == ("2024", False)
    scopes = cfg.rate_limiting.limiters["api"].build_scopes("api", "token_bucket")
    assert [(s.name, s.limit, s.window) for s in scopes] == [
        ("per_second", 10.0, 1.0),
        ("per_hour", 1000.0, 3600.0),
    ]


def test_a_table_from_the_environment_merges_into_the_file() -> None:
    data = {"memory_manager": {"check_interval": 5.0, "warning_threshold": 0.6}}
    env = {"BUTTRESS_MEMORY_MANAGER": '{"check_interval": 10}'}
    cfg = bt.load_config(data, env=env)
    assert (cfg.memory_manager.check_interval, cfg.memory_manager.warning_threshold) == (10, 0.6)


def test_variable_names_are_read_in_any_case() -> None:
    cfg = bt.load_config({}, env={"buttress_chaos__enabled": "true"})
    assert cfg.chaos.enabled is True


def test_the_environment_is_read_as_pydantic_settings_reads_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The same variables, read by pydantic-settings into the same model with the same prefix
    # and delimiter, give the same configuration: buttress follows its conventions.
    from pydantic_settings import BaseSettings, SettingsConfigDict

    class EnvConfig(bt.Config, BaseSettings):  # type: ignore[misc]
        model_config = SettingsConfigDict(
            env_prefix="BUTTRESS_", env_nested_delimiter="__", extra="forbid", frozen=True
        )

    env = {
        **OTHERS_VARIABLES,
        "BUTTRESS_MEMORY_MANAGER__CHECK_INTERVAL": "10",
        "BUTTRESS_MEMORY_MANAGER__CRITICAL_THRESHOLD": "0.9",
        "BUTTRESS_CIRCUIT_BREAKERS__PAYMENTS__RESET_TIMEOUT": "1m30s",
        "BUTTRESS_CIRCUIT_BREAKERS__PAYMENTS__RECORD": '["builtins.OSError"]',
        "BUTTRESS_CIRCUIT_BREAKERS__PAYMENTS__FAULT_INJECTION__LATENCY": "[0.1, 0.2]",
        "BUTTRESS_CHAOS__ENABLED": "true",
        "BUTTRESS_CHAOS__SEED": "7",
        "BUTTRESS_RATE_LIMITING__LIMITERS__API__RATE": "100/minute",
        "BUTTRESS_RATE_LIMITING__LIMITERS__API__HIERARCHICAL": "1",
        "BUTTRESS_SERVICES__REPORTS__LIMITER": "false",
        "BUTTRESS_SERVICES__REPORTS__BREAKER": "2024",
        "BUTTRESS_CIRCUIT_BREAKERS__2024__MINIMUM_CALLS": "12",  # the breaker it names
    }
    for key in [k for k in os.environ if k.upper().startswith("BUTTRESS_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert EnvConfig().model_dump() == bt.load_config({}, env=env).model_dump()


def test_a_config_nested_in_pydantic_settings_takes_numbers_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pydantic_settings import BaseSettings, SettingsConfigDict

    class AppSettings(BaseSettings):
        model_config = SettingsConfigDict(env_prefix="APP_", env_nested_delimiter="__")
        debug: bool = False
        buttress: bt.Config = bt.Config()

    monkeypatch.setenv("APP_BUTTRESS__MEMORY_MANAGER__CHECK_INTERVAL", "10")
    monkeypatch.setenv("APP_BUTTRESS__MEMORY_MANAGER__WARNING_THRESHOLD", "0.6")
    monkeypatch.setenv("APP_BUTTRESS__CIRCUIT_BREAKERS__PAYMENTS__FAILURE_THRESHOLD", "8")
    monkeypatch.setenv("APP_BUTTRESS__CIRCUIT_BREAKERS__PAYMENTS__RESET_TIMEOUT", "500ms")
    monkeypatch.setenv("APP_BUTTRESS__RATE_LIMITING__LIMITERS__API__LIMIT", "100")
    monkeypatch.setenv("APP_BUTTRESS__CONNECTION_POOLS__DB__MAX_SIZE", "4")
    monkeypatch.setenv("APP_BUTTRESS__CONNECTION_POOLS__DB__FACTORY", "sqlite3:connect")
    monkeypatch.setenv("APP_BUTTRESS__CONNECTION_POOLS__DB__ARGS", '[":memory:"]')
    settings = AppSettings()
    cfg = settings.buttress
    assert cfg.memory_manager.check_interval == 10
    assert cfg.memory_manager.warning_threshold == 0.6
    assert cfg.circuit_breakers["payments"].failure_threshold == 8
    assert cfg.circuit_breakers["payments"].reset_timeout == 0.5
    assert cfg.rate_limiting.limiters["api"].limit == 100
    assert cfg.connection_pools["db"].max_size == 4
    with bt.Infrastructure("app", cfg, env={}, background=False) as infra:
        assert infra.breakers["payments"].config.failure_threshold == 8


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("true", "must be a number, got 'true'"),  # text read as its number, a bool never
        ("high", "must be a number, got 'high'"),
        ("", "must be a number, got ''"),
    ],
)
def test_a_number_from_text_is_a_number_and_nothing_else(value: str, message: str) -> None:
    with pytest.raises(bt.ConfigError) as info:
        bt.load_config({}, env={"BUTTRESS_MEMORY_MANAGER__CRITICAL_THRESHOLD": value})
    assert info.value.path == "memory_manager.critical_threshold"
    assert message in info.value.message
    with pytest.raises(bt.ConfigError, match="must be a number, got True"):
        bt.load_config({"memory_manager": {"critical_threshold": True}}, env={})


# -- "did you mean" ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "path", "suggestion"),
    [
        ({"circuit_breaker": {}}, "circuit_breaker", "circuit_breakers"),
        ({"rate_limiting": {"limitrs": {}}}, "rate_limiting.limitrs", "limiters"),
        (
            {"circuit_breakers": {"pay.v2": {"failure_treshold": 3}}},
            "circuit_breakers.pay.v2.failure_treshold",
            "failure_threshold",
        ),
        (
            {"circuit_breakers": {"p": {"fault_injection": {"enabeld": True}}}},
            "circuit_breakers.p.fault_injection.enabeld",
            "enabled",
        ),
        (
            {"rate_limiting": {"limiters": {"api": {"limit": 5, "windw": 1}}}},
            "rate_limiting.limiters.api.windw",
            "window",
        ),
        (
            {
                "rate_limiting": {
                    "limiters": {"api": {"scopes": [{"name": "u", "limit": 1, "rte": "1/s"}]}}
                }
            },
            "rate_limiting.limiters.api.scopes[0].rte",
            "rate",
        ),
        ({"connection_pools": {"db": {"asinc": True}}}, "connection_pools.db.asinc", "async"),
        ({"memory_manager": {"check_intervall": 5}}, "memory_manager.check_intervall", None),
        ({"chaos": {"sed": 1}}, "chaos.sed", "seed"),
        ({"services": {"x": {"breakr": "p"}}}, "services.x.breakr", "breaker"),
        ({"circuit_breakers": {"p": {"colour": 1}}}, "circuit_breakers.p.colour", ""),
    ],
)
def test_an_unknown_key_says_which_it_is_close_to(
    data: dict[str, Any], path: str, suggestion: str | None
) -> None:
    with pytest.raises(bt.ConfigError) as info:
        bt.load_config(data, env={})
    key = path.rpartition(".")[2]
    suggestion = suggestion if suggestion is not None else key[:-1]
    assert info.value.path == path
    if suggestion:
        assert info.value.message == f"unknown key {key!r} (did you mean {suggestion!r}?)"
    else:
        assert info.value.message == f"unknown key {key!r}"


def test_an_unknown_key_from_the_environment_says_which_it_is_close_to() -> None:
    with pytest.raises(bt.ConfigError) as info:
        bt.load_config({}, env={"BUTTRESS_MEMORY_MANAGER__CRITICAL_TRESHOLD": "0.9"})
    assert info.value.path == "memory_manager.critical_treshold"
    assert info.value.message == (
        "unknown key 'critical_treshold' (did you mean 'critical_threshold'?) "
        "(set by BUTTRESS_MEMORY_MANAGER__CRITICAL_TRESHOLD)"
    )


# -- durations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("2 minutes", 120.0),
        ("1.5 hours", 5400.0),
        ("300 ms", 0.3),
        ("45", 45),  # a number's text: seconds, as a bare number is
    ],
)
def test_durations_take_units_in_files_dicts_and_the_environment(
    tmp_path: Path, text: str, seconds: float
) -> None:
    path = tmp_path / "b.toml"
    path.write_text(f"[circuit_breakers.p]\nreset_timeout = '{text}'\n")
    from_file = bt.load_config(path, env={}).circuit_breakers["p"].reset_timeout
    from_dict = bt.load_config({"circuit_breakers": {"p": {"reset_timeout": text}}}, env={})
    env = {"BUTTRESS_CIRCUIT_BREAKERS__P__RESET_TIMEOUT": text}
    from_env = bt.load_config({}, env=env).circuit_breakers["p"].reset_timeout
    assert from_file == from_dict.circuit_breakers["p"].reset_timeout == from_env == seconds


def test_a_bare_number_is_seconds() -> None:
    cfg = bt.load_config({"memory_manager": {"check_interval": 45}}, env={})
    assert cfg.memory_manager.check_interval == 45


@pytest.mark.parametrize(
    ("section", "key", "value", "written"),
    [
        ("memory_manager", "check_interval", 30_000, "8.33h"),  # the guide's milliseconds
        ("circuit_breakers.p", "reset_timeout", 30_000, "8.33h"),
        ("connection_pools.db", "checkout_timeout", 5000, "1.39h"),
        ("circuit_breakers.p.fault_injection", "latency", [50, 200], "3.33m"),
    ],
)
def test_an_implausible_bare_number_is_refused_naming_the_unit(
    section: str, key: str, value: Any, written: str
) -> None:
    data: dict[str, Any] = {}
    node = data
    for part in section.split("."):
        node = node.setdefault(part, {})
    node[key] = value
    with pytest.raises(bt.ConfigError) as info:
        bt.load_config(data, env={})
    assert info.value.path == f"{section}.{key}"
    assert f"is read as seconds ({written})" in info.value.message
    assert "ms'" in info.value.message  # how to write milliseconds
    number = max(value) if isinstance(value, list) else value
    node[key] = f"{number}ms"  # meant as milliseconds: taken
    assert bt.load_config(data, env={})
    node[key] = f"{number}s"  # meant as seconds, said with the unit: taken as written
    if key != "latency":
        assert bt.load_config(data, env={})


def test_an_implausible_number_from_the_environment_names_its_variable() -> None:
    env = {"BUTTRESS_MEMORY_MANAGER__CHECK_INTERVAL": "30000"}
    with pytest.raises(bt.ConfigError) as info:
        bt.load_config({}, env=env)
    assert "30000 is read as seconds" in info.value.message
    assert "(set by BUTTRESS_MEMORY_MANAGER__CHECK_INTERVAL)" in info.value.message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("30 parsecs", "unknown unit 'parsecs'"),
        ("5 minits", "unknown unit 'minits' (did you mean 'minutes'?"),
        ("1 month", "'month' has no fixed length"),
        ("-5s", "is not a duration"),
        ("soon", "is not a duration"),
    ],
)
def test_a_bad_duration_says_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(bt.ConfigError) as info:
        bt.load_config({"memory_manager": {"gc_interval": text}}, env={})
    assert info.value.path == "memory_manager.gc_interval"
    assert message in info.value.message


def sections() -> dict[str, type[BaseModel]]:
    return {
        "circuit_breakers": c.CircuitBreakerSettings,
        "circuit_breakers.fault_injection": c.FaultInjectionSettings,
        "rate_limiting": c.RateLimitingSettings,
        "rate_limiting.limiters": c.LimiterSettings,
        "rate_limiting.limiters.scopes": c.ScopeSettings,
        "connection_pools": c.PoolSettings,
        "memory_manager": c.MemoryManagerSettings,
        "chaos.schedule": c.ChaosScheduleSettings,
        "services": c.ServiceSettings,
        "services.retry": c.RetrySettings,
        "services.retry.budget": c.RetryBudgetSettings,
        "overload.cpu": c.CpuSettings,
        "overload.loop_lag": c.LoopLagSettings,
        "services.bulkhead": c.BulkheadSettings,
        "fleet": c.FleetSettings,
    }


def test_every_plausible_bound_names_a_setting_of_its_section() -> None:
    for section, bounds in c.PLAUSIBLE_SECONDS.items():
        model = sections()[section]
        assert model._section == section  # type: ignore[attr-defined]
        assert set(bounds) <= set(model.model_fields), section


def test_every_plausible_bound_is_documented() -> None:
    # docs/infrastructure.md lists each duration setting with its bound, as the table says.
    doc = (EXAMPLE.parent.parent / "docs" / "infrastructure.md").read_text()
    for section, bounds in c.PLAUSIBLE_SECONDS.items():
        for name, most in bounds.items():
            row = f"| `{section}.{name}` | {describe(most)} |"
            assert row in doc, row


def describe(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


# -- rate strings ------------------------------------------------------------------------------


def test_a_rate_stands_for_limit_and_window() -> None:
    cfg = bt.load_config(
        {
            "rate_limiting": {
                "limiters": {
                    "short": {"rate": "100/minute"},
                    "hier": {"rate": "1000 per hour", "hierarchical": True, "burst": 1200},
                    "two": {"rate": "10/second; 1000/hour"},
                    "long": {"rate": "5000/2 days; 1000/6h"},  # a unit, so no bound applies
                    "scoped": {
                        "scopes": [
                            {"name": "user", "rate": "10/s"},
                            {"name": "user_daily", "by": "user", "rate": "1000/day"},
                            {"name": "user_weekly", "by": "user", "rate": "5000/7 days"},
                        ]
                    },
                }
            }
        },
        env={},
    )

    def scopes(name: str) -> list[tuple[str, float, float, str | None]]:
        limiter = cfg.rate_limiting.limiters[name]
        return [
            (s.name, s.limit, s.window, s.by) for s in limiter.build_scopes(name, "token_bucket")
        ]

    assert scopes("short") == [("global", 100, 60, None)]
    assert scopes("hier") == [
        ("user", 1000, 3600, "user"),
        ("org", 10_000, 3600, "org"),
        ("global", 100_000, 3600, None),
    ]
    assert scopes("two") == [("per_second", 10, 1, None), ("per_hour", 1000, 3600, None)]
    assert scopes("long") == [("per_2d", 5000, 172800, None), ("per_6h", 1000, 21600, None)]
    assert scopes("scoped") == [
        ("user", 10, 1, "user"),
        ("user_daily", 1000, 86400, "user"),
        ("user_weekly", 5000, 7 * 86400, "user"),
    ]
    # The same names as in code.
    assert [s.name for s in bt.RateLimiter("10/second; 1000/hour").scopes] == [
        "per_second",
        "per_hour",
    ]


@pytest.mark.parametrize(
    ("limiter", "path", "message"),
    [
        ({"rate": "100/minit"}, "rate", "unknown unit 'minit' (did you mean 'minute'?"),
        ({"rate": "100"}, "rate", "write an amount, '/' or 'per', and a window"),
        ({"rate": "0/second"}, "rate", "the amount must be above 0"),
        ({"rate": "100/minute", "limit": 5}, "rate", "give rate or limit, not both"),
        ({"rate": "100/minute", "window": 5}, "rate", "give rate or window, not both"),
        ({"rate": 100}, "rate", "must be a string such as '100/minute', got 100"),
        ({"rate": "1/s; 2/s"}, "rate", "have one window (1 s)"),
        ({"rate": "1/s; 9/m", "hierarchical": True}, "rate", "hierarchical takes one rate"),
        ({"rate": "1/s; 9/m", "burst": 3}, "rate", "burst takes one rate"),
        ({"scopes": [{"name": "u", "rate": "1/s; 9/m"}]}, "scopes[0].rate", "a scope takes one"),
        ({"scopes": [{"name": "u"}]}, "scopes[0].limit", "is required"),
    ],
)
def test_a_bad_rate_says_what_is_wrong(limiter: dict[str, Any], path: str, message: str) -> None:
    with pytest.raises(bt.ConfigError) as info:
        bt.load_config({"rate_limiting": {"limiters": {"api": limiter}}}, env={})
    assert info.value.path == f"rate_limiting.limiters.api.{path}"
    assert message in info.value.message


def test_a_bad_rate_from_the_environment_names_its_variable() -> None:
    env = {"BUTTRESS_RATE_LIMITING__LIMITERS__API__RATE": "100/fortnight"}
    with pytest.raises(bt.ConfigError) as info:
        bt.load_config({}, env=env)
    assert info.value.path == "rate_limiting.limiters.api.rate"
    assert "(set by BUTTRESS_RATE_LIMITING__LIMITERS__API__RATE)" in info.value.message
