"""Input the docs promise to refuse is refused, by code and configuration alike, with an error
naming the setting; settings that allocate have a ceiling.

(Ids and rates of the rate limiter: tests/ratelimit/test_bounds.py; a ManualClock timing pool
checkouts: tests/pool/test_pool_threads.py and test_pool_asyncio.py.)
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import buttress as bt
from buttress import MemoryReading
from buttress._memory._manager import EV_PROBE_ERROR


def config(data: dict[str, Any]) -> bt.Config:
    return bt.load_config({"memory_manager": {"enabled": False}, **data}, env={})


# -- settings that allocate ----------------------------------------------------------------------


def test_a_breaker_of_a_billion_buckets_is_a_config_error() -> None:
    with pytest.raises(bt.ConfigError) as caught:
        bt.CircuitBreaker("db", buckets=10**9)
    assert caught.value.path == "buckets"
    assert "[1, 1000]" in caught.value.message
    with pytest.raises(bt.ConfigError) as in_a_file:
        config({"circuit_breakers": {"db": {"buckets": 10**9}}})
    assert in_a_file.value.path == "circuit_breakers.db.buckets"
    assert bt.CircuitBreaker("db", buckets=1000).config.buckets == 1000


def test_a_pool_keeps_at_most_ten_thousand_members_open() -> None:
    with pytest.raises(bt.ConfigError) as caught:
        bt.PoolConfig(min_size=10**6, max_size=10**7)
    assert caught.value.path == "min_size"
    with pytest.raises(bt.ConfigError) as in_a_file:
        config({"connection_pools": {"db": {"min_size": 10**6, "max_size": 10**7}}})
    assert in_a_file.value.path == "connection_pools.db.min_size"


def test_a_load_test_makes_at_most_ten_thousand_users() -> None:
    with pytest.raises(bt.ConfigError) as caught:
        bt.testing.load_test(None, lambda: None, concurrent_users=10**6, duration=1.0)
    assert caught.value.path == "concurrent_users"


# -- integers are integers -----------------------------------------------------------------------


@pytest.mark.parametrize("seed", [True, 7.0, "seven"])
def test_a_chaos_seed_is_an_integer(seed: Any) -> None:
    with pytest.raises(bt.ConfigError) as caught:
        bt.Chaos(seed=seed)
    assert caught.value.path == "seed"
    with pytest.raises(bt.ConfigError) as in_a_file:
        config({"chaos": {"seed": seed}})
    assert in_a_file.value.path == "chaos.seed"
    assert config({"chaos": {"seed": 7}}).chaos.seed == 7


@pytest.mark.parametrize(
    ("settings", "path"),
    [
        ({"warning_threshold": "0.7"}, "warning_threshold"),
        ({"critical_threshold": True}, "critical_threshold"),
        ({"exit_samples": True}, "exit_samples"),
        ({"exit_samples": 2.0}, "exit_samples"),
        ({"check_interval": math.nan}, "check_interval"),
    ],
)
def test_memory_manager_settings_are_strict_in_code_and_in_a_file(
    settings: dict[str, Any], path: str
) -> None:
    with pytest.raises(bt.ConfigError) as caught:
        bt.MemoryManager(**settings)
    assert caught.value.path == path
    with pytest.raises(bt.ConfigError) as in_a_file:
        bt.load_config({"memory_manager": settings}, env={})
    assert in_a_file.value.path == f"memory_manager.{path}"


# -- memory readings -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"used": math.nan, "limit": 1000}, "used"),
        ({"used": 900, "limit": math.inf}, "limit"),
        ({"used": math.inf, "limit": 1000}, "used"),
        ({"used": True, "limit": 1000}, "used"),
        ({"used": 900, "limit": 1000, "rss": math.nan}, "rss"),
        ({"used": 900, "limit": 1000, "psi": bt.Psi(math.nan, 0.0, 0.0, 0)}, "psi.some_avg10"),
    ],
)
def test_a_reading_that_is_no_number_is_refused(settings: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=rf"MemoryReading\.{field} must be"):
        MemoryReading(source="probe", **settings)


def test_nan_readings_are_probe_errors_and_keep_the_level(
    clock: bt.ManualClock, event_log: Any
) -> None:
    ratio = [0.95]

    def probe() -> MemoryReading:
        return MemoryReading(source="probe", used=ratio[0] * 1000, limit=1000)

    manager = bt.MemoryManager(probe=probe, clock=clock, check_interval=1.0, exit_samples=3)
    manager.sample()
    assert manager.level == bt.MemoryLevel.CRITICAL
    ratio[0] = math.nan
    for _ in range(5):  # more than exit_samples
        clock.advance(1.0)
        assert manager.maybe_sample() is None
        assert manager.level == bt.MemoryLevel.CRITICAL
    assert manager.should_shed()
    errors = event_log.named(*EV_PROBE_ERROR)
    assert len(errors) == 5
    assert "MemoryReading.used" in errors[0][1]["error"]


# -- clocks, permits, headers, services ----------------------------------------------------------


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, True, "0"])
@pytest.mark.parametrize("name", ["start", "wall"])
def test_a_manual_clock_starts_at_a_finite_time(name: str, value: Any) -> None:
    with pytest.raises(ValueError, match=rf"ManualClock: {name} must be a finite number"):
        bt.ManualClock(**{name: value})


def test_record_exception_needs_an_exception(clock: bt.ManualClock) -> None:
    breaker = bt.CircuitBreaker("db", clock=clock, failure_threshold=1, degradation_threshold=None)
    permit = breaker.try_acquire()
    with pytest.raises(TypeError, match="record_exception: exc must be an exception, got None"):
        permit.record_exception(None)  # type: ignore[arg-type]
    assert breaker.snapshot().success_count == 0  # nothing counted: still open to record
    permit.record_exception(OSError("down"))
    assert breaker.state == bt.BreakerState.OPEN


@pytest.mark.parametrize("duration", [math.nan, -1.0, math.inf, "1"])
def test_an_outcome_with_a_bad_duration_is_refused(clock: bt.ManualClock, duration: Any) -> None:
    breaker = bt.CircuitBreaker("db", clock=clock)
    permit = breaker.try_acquire()
    with pytest.raises(ValueError, match="duration: must be a finite number >= 0 or None"):
        permit.record_success(duration)
    permit.record_success(0.1)
    assert breaker.snapshot().success_count == 1


def test_rate_limit_headers_of_no_decision_are_none() -> None:
    assert bt.http.rate_limit_headers(None) == {}
    with pytest.raises(TypeError, match="decision must be a Decision or None"):
        bt.http.rate_limit_headers("allowed")  # type: ignore[arg-type]
    limiter = bt.RateLimiter(bt.Scope("user", limit=1, window=60.0))
    limiter.try_acquire("u")
    with pytest.raises(bt.RateLimitExceeded) as caught:
        limiter.acquire("u", timeout=0)
    assert "Retry-After" in bt.http.rate_limit_headers(caught.value.decision)
    assert bt.http.rate_limit_headers(bt.RateLimitExceeded("user").decision) == {}


@pytest.mark.parametrize("service", [None, 5, ""])
def test_a_call_needs_a_service_name(service: Any) -> None:
    cfg = {"memory_manager": {"enabled": False}, "services": {"default": {}}}
    ran = []
    with bt.Infrastructure("t", cfg, env={}, background=False) as infra:
        with pytest.raises(bt.ConfigError) as caught:
            infra.call(service, lambda: ran.append(1))
        assert caught.value.path == "service"
        with pytest.raises(bt.ConfigError), infra.protect(service):
            ran.append(2)
    assert ran == []


# -- config check builds what Infrastructure builds ----------------------------------------------

REFERENCES = [
    ('[services.x]\nbreaker = "missing"\n', "services.x.breaker", "names no breaker 'missing'"),
    ('[services.x]\nlimiter = "missing"\n', "services.x.limiter", "names no limiter 'missing'"),
    ('[services.x]\npool = "missing"\n', "services.x.pool", "names no pool 'missing'"),
    ('[services.default]\npool = "nope"\n', "services.default.pool", "names no pool 'nope'"),
    (
        "[rate_limiting]\nmax_keys = 2\n[rate_limiting.limiters.api]\nlimit = 10\n"
        "hierarchical = true\n",
        "rate_limiting.max_keys",
        "at least the number of scopes (3)",
    ),
    (
        '[memory_manager]\nsource = "host"\nlimit_bytes = 1000\n',
        "memory_manager.limit_bytes",
        "needs source 'auto' or 'process'",
    ),
]


@pytest.mark.parametrize(("toml", "path", "message"), REFERENCES)
def test_config_check_refuses_what_infrastructure_refuses(
    tmp_path: Path, toml: str, path: str, message: str
) -> None:
    file = tmp_path / "buttress.toml"
    file.write_text(toml)
    with pytest.raises(bt.ConfigError) as built:
        bt.Infrastructure("t", str(file), env={}, background=False).close()
    assert built.value.path == path and message in built.value.message
    with pytest.raises(bt.ConfigError) as loaded:
        bt.load_config(str(file), env={})
    assert (loaded.value.path, loaded.value.message) == (built.value.path, built.value.message)
    proc = subprocess.run(
        [sys.executable, "-m", "buttress", "config", "check", str(file)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode != 0
    assert f"{path}: " in proc.stderr and message in proc.stderr


def test_config_check_notes_a_pool_without_a_factory(tmp_path: Path) -> None:
    file = tmp_path / "buttress.toml"
    file.write_text("[connection_pools.db]\nmax_size = 2\n")
    proc = subprocess.run(
        [sys.executable, "-m", "buttress", "config", "check", str(file)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["connection_pools"]["db"]["max_size"] == 2
    assert "connection_pools.db has no factory" in proc.stderr


# -- a number's text: from the environment only ----------------------------------------------------


@pytest.mark.parametrize(
    ("section", "setting"),
    [
        ("circuit_breakers.db", "failure_threshold"),
        ("circuit_breakers.db", "minimum_calls"),
        ("connection_pools.db", "max_size"),
        ("rate_limiting", "max_keys"),
        ("memory_manager", "exit_samples"),
        ("memory_manager", "warning_threshold"),
    ],
)
def test_a_numbers_text_is_refused_in_a_file_and_read_from_the_environment(
    tmp_path: Path, section: str, setting: str
) -> None:
    """In a file (or a dict) a number is a number, as the components' constructors want it;
    only the environment, which spells every value as text, gives a number's text."""
    *tables, leaf = section.split(".")
    header = ".".join([*tables, leaf])
    path = tmp_path / "buttress.toml"
    path.write_text(f'[{header}]\n{setting} = "5"\n')
    with pytest.raises(bt.ConfigError) as caught:
        bt.load_config(path, env={})
    assert caught.value.path == f"{section}.{setting}"
    assert "must be a number" in caught.value.message or "integer" in caught.value.message
    path.write_text(f"[{header}]\n")
    variable = "BUTTRESS_" + "__".join([*section.split("."), setting]).upper()
    value = "0.5" if setting == "warning_threshold" else "5"
    loaded = bt.load_config(path, env={variable: value}).model_dump()
    node: Any = loaded
    for part in [*section.split("."), setting]:
        node = node[part]
    assert node == float(value) if "." in value else node == int(value)
