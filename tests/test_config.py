"""Configuration: the example file covers every option, loads, and errors name paths."""

from __future__ import annotations

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
        c.ServiceSettings: keys_of(list(data["services"].values())),
    }
    for model, seen in covered.items():
        assert fields(model) - seen == set(), f"{model.__name__} options missing from the example"


def test_example_loads_and_builds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # the example's sqlite file lands here
    cfg = bt.load_config(EXAMPLE, env={})
    assert cfg.rate_limiting.limiters["payments"].scopes is not None
    infra = bt.Infrastructure("example", cfg, background=False, env={})
    try:
        assert set(infra.breakers) == {"payments"}
        assert infra.limiters["search"].scopes[1].limit == 10_000
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
            {"circuit_breakers": {"p": {"record": ["builtins.NoSuchError"]}}},
            "circuit_breakers.p.record",
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


def test_a_loaded_config_loads_again_with_the_async_variable() -> None:
    # Infrastructure("app", load_config(...)) applies the environment to a dumped Config.
    env = {"BUTTRESS_CONNECTION_POOLS__DB__ASYNC": "true"}
    data = {"connection_pools": {"db": {"factory": "sqlite3:connect", "args": [":memory:"]}}}
    cfg = bt.load_config(data, env=env)
    again = bt.load_config(cfg, env=env)
    assert again.connection_pools["db"].is_async is True
    assert again == cfg
    assert "async" in cfg.to_toml_dict()["connection_pools"]["db"]


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
