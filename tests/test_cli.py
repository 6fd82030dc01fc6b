"""The ``buttress`` command: the demo, config check, health, and bad input."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from buttress._cli import main
from buttress._demo import run_demo
from servers import free_port

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "buttress.toml"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "buttress", *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )


def test_demo_shows_every_part_working(tmp_path: Path) -> None:
    # Real time (about seven seconds): the demo is meant to be watched.
    out = io.StringIO()
    report = run_demo(out, json_path=str(tmp_path / "r.json"), progress=False)
    assert all(report.checks.values()), report.checks
    text = out.getvalue()
    for needle in (
        "-> degraded (light)",
        "-> degraded (heavy)",
        "-> open",
        "half_open -> closed",
        "by user",
        "by org",
        "by global",
        "level warning",
        "ops/s",
        "schedule gameday planned",  # scheduled chaos
        "experiment gameday/3 ends",
        "inventory recovered from gameday/",  # the recovery-time telemetry
        "health:",
    ):
        assert needle in text, needle
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["load_test"]["success_rate"] > 0.95
    assert saved["denials_by_scope"].keys() == {"user", "org", "global"}
    assert saved["health"]["overall_status"] in ("healthy", "degraded")
    assert saved["scheduled_chaos"]["finished"] == saved["scheduled_chaos"]["planned"] == 3
    assert saved["scheduled_chaos"]["recovery_times"]


def test_config_check_prints_the_resolved_config() -> None:
    proc = run("config", "check", str(EXAMPLE))
    assert proc.returncode == 0, proc.stderr
    resolved = json.loads(proc.stdout)
    assert resolved["circuit_breakers"]["payments"]["failure_threshold"] == 5
    assert "ok" in proc.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("[memory_manager\n", "is not valid TOML"),
        ("[circuit_breakers.db]\nfailure_threshold = 0\n", "circuit_breakers.db.failure_threshold"),
        (
            "[rate_limiting.limiters.api]\nlimit = 10\nburst = 3\nalgorithm = 'fixed_window'\n",
            "rate_limiting.limiters.api.burst: applies to token_bucket",
        ),
        (
            "[rate_limiting.limiters.api]\n"
            "scopes = [{name = 'user', limit = 10, algorithm = 'adaptive', min_limit = 20}]\n",
            "rate_limiting.limiters.api.scopes[0].limit: must lie within",
        ),
        (
            "[rate_limiting.limiters.api]\nlimit = 10\nwindow = inf\n",
            "api.window: must be a finite",
        ),
        ("[rate_limiting.limiters.api]\nlimit = true\n", "api.limit: must be a number, got True"),
        ("[rate_limiting.limiters.api]\nlimit = 'ten'\n", "api.limit: must be a number, got 'ten'"),
        (
            "[memory_manager]\ncheck_interval = 30000\n",
            "memory_manager.check_interval: 30000 is read as seconds (8.33h)",
        ),
        (
            "[circuit_breakers.db]\nfailure_treshold = 3\n",
            "failure_treshold: unknown key 'failure_treshold' (did you mean 'failure_threshold'?)",
        ),
        ("[rate_limiting.limiters.api]\nrate = '100/minit'\n", "unknown unit 'minit'"),
        (b"\xff\xfe", "is not UTF-8 text"),
        (
            "[circuit_breakers.db]\nfailure_threshold = 5\ndegradation_threshold = 8\n",
            "circuit_breakers.db.degradation_threshold: must be below failure_threshold",
        ),
        (
            "[circuit_breakers.db]\nrecord = ['builtins.NoSuchError']\n",
            "circuit_breakers.db.record[0]: cannot import",
        ),
        (
            "[circuit_breakers.db]\nrecord = ['OSError', {status = ['600-700']}]\n",
            'circuit_breakers.db.record[1].status: "600-700" is not an HTTP status range',
        ),
        (
            "[circuit_breakers.db]\nfailure_result = {call = 'nosuchmod:failed'}\n",
            "circuit_breakers.db.failure_result.call: cannot import",
        ),
        ("[connection_pools.db]\nfactory = 'nosuchmod:connect'\n", "db.factory: cannot import"),
    ],
)
def test_config_check_bad_input(tmp_path: Path, content: str | bytes | None, message: str) -> None:
    path = tmp_path / "b.toml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    proc = run("config", "check", str(path))
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_config_check_reads_only_the_variables_that_name_a_setting() -> None:
    # BUTTRESS_NO_EXTENSIONS is the rate limiter's (read at import), BUTTRESS_LOG_LEVEL and
    # BUTTRESS_FOO someone else's: the check neither fails on them nor changes its answer.
    plain = {k: v for k, v in os.environ.items() if not k.upper().startswith("BUTTRESS_")}
    expected = run("config", "check", str(EXAMPLE), env=plain)
    assert expected.returncode == 0, expected.stderr
    for extra in (
        {"BUTTRESS_NO_EXTENSIONS": "1"},
        {"BUTTRESS_FOO": "1", "BUTTRESS_LOG_LEVEL": "debug"},
        {"BUTTRESS_REDIS_URL": "redis://elsewhere:1/0", "BUTTRESS_PG_DSN": "postgresql://x"},
    ):
        proc = run("config", "check", str(EXAMPLE), env={**plain, **extra})
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == expected.stdout
    proc = run(
        "config",
        "check",
        str(EXAMPLE),
        env={**plain, "BUTTRESS_MEMORY_MANAGER__CHECK_INTERVAL": "2m"},
    )
    assert json.loads(proc.stdout)["memory_manager"]["check_interval"] == 120.0


def test_health_of_a_configuration(tmp_path: Path) -> None:
    path = tmp_path / "h.toml"
    path.write_text("[circuit_breakers.db]\n[memory_manager]\nenabled = false\n")
    proc = run("health", "--config", str(path))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["status"] == "pass"
    assert "circuit_breaker:db" in doc["checks"]


def test_health_connects_the_pools(tmp_path: Path) -> None:
    # A pool is asked for a connection before it is judged: one whose database is not there
    # fails (it passed as "0/0 in use" when nothing connected), with what the driver said.
    pytest.importorskip("psycopg")
    closed = free_port()
    path = tmp_path / "h.toml"
    path.write_text(
        "[memory_manager]\nenabled = false\n"
        f"[connection_pools.local]\nfactory = 'sqlite3:connect'\nargs = ['{tmp_path / 'l.db'}']\n"
        "[connection_pools.orders]\nfactory = 'psycopg:connect'\n"
        f"args = ['postgresql://app:s3cret@127.0.0.1:{closed}/orders']\n"
        "[connection_pools.orders_async]\nfactory = 'psycopg:AsyncConnection.connect'\n"
        f"args = ['postgresql://app:s3cret@127.0.0.1:{closed}/orders']\nasync = true\n"
    )
    proc = run("health", "--config", str(path), "--timeout", "2")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["status"] == "fail"
    assert [c["status"] for c in doc["checks"]["connection_pool:local"]] == ["pass"]
    assert doc["checks"]["connection_pool:local"][0]["output"] == "0/1 in use"  # connected
    (orders,) = doc["checks"]["connection_pool:orders"]
    assert orders["status"] == "fail"
    assert orders["output"].startswith("no connection within ")
    assert "; last: OperationalError; OperationalError('connection failed: " in orders["output"]
    assert f"port {closed} failed: Connection refused" in orders["output"]
    (orders_async,) = doc["checks"]["connection_pool:orders_async"]
    assert orders_async["output"] == orders["output"]
    assert "s3cret" not in proc.stdout + proc.stderr


@pytest.mark.slow  # closing waits for the scheduler thread, stuck in the connect
def test_health_gives_up_on_a_connect_that_hangs(tmp_path: Path) -> None:
    # A server that accepts and never answers: the check ends at --timeout, saying so.
    pytest.importorskip("psycopg")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        path = tmp_path / "h.toml"
        path.write_text(
            "[memory_manager]\nenabled = false\n[connection_pools.db]\n"
            f"factory = 'psycopg:connect'\nargs = ['postgresql://u@127.0.0.1:{port}/db']\n"
        )
        proc = run("health", "--config", str(path), "--timeout", "0.5")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (check,) = json.loads(proc.stdout)["checks"]["connection_pool:db"]
    assert check["status"] == "fail"
    assert check["output"] == "no connection within 0.5s; connecting did not finish"


@pytest.mark.parametrize("timeout", ["0", "-1", "soon", "inf"])
def test_health_refuses_a_bad_timeout(timeout: str) -> None:
    proc = run("health", "--config", "x.toml", "--timeout", timeout)
    assert proc.returncode == 2
    assert "argument --timeout: must be a number > 0" in proc.stderr


def test_health_reaches_the_shared_backends(tmp_path: Path, redis_url: str) -> None:
    up = tmp_path / "up.toml"
    up.write_text(
        f"[rate_limiting]\nbackend = '{redis_url}'\n[rate_limiting.limiters.api]\nlimit = 5\n"
        "[memory_manager]\nenabled = false\n"
    )
    proc = run("health", "--config", str(up))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["rate_limit_backends"]["api"]["status"] == "ok"
    assert isinstance(doc["rate_limit_backends"]["api"]["backend_keys"], int)
    # Nothing listens on port 1: the backend is down, and a fail_closed limiter fails health.
    down = tmp_path / "down.toml"
    down.write_text(
        "[rate_limiting]\nbackend = 'redis://127.0.0.1:1/0'\nfailure_policy = 'fail_closed'\n"
        "[rate_limiting.limiters.api]\nlimit = 5\n[memory_manager]\nenabled = false\n"
    )
    proc = run("health", "--config", str(down))
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)  # nothing but the document on stdout
    assert doc["status"] == "fail"
    output = doc["checks"]["rate_limiter:api"][0]["output"]
    assert output.startswith("RedisBackend is down for "), output
    assert "s (fail_closed: refusing)" in output, output
    assert doc["rate_limit_backends"]["api"]["status"] == "down"
    assert "Connection refused" in doc["rate_limit_backends"]["api"]["error"]
    # Why it is down is in the log record, written after the document: the one WARNING of the
    # limiter's outage, which began as the infrastructure started.
    (warning,) = [line for line in proc.stderr.splitlines() if "WARNING" in line]
    assert "rate limiter default:api: RedisBackend is down" in warning
    assert "Connection refused" in warning


def test_log_records_follow_the_results_never_interleave() -> None:
    # The memory scenario logs its level changes (WARNING) as it runs; the results come first.
    proc = subprocess.run(
        [sys.executable, "-m", "buttress", "scenarios", "memory_pressure", "rate_limit_burst"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # one stream, in the order written
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout
    lines = proc.stdout.splitlines()
    results = [i for i, line in enumerate(lines) if line.startswith(("[x]", "health afterwards"))]
    logged = [i for i, line in enumerate(lines) if "buttress.memory" in line]
    assert results == [0, 1, 2], lines
    assert logged and min(logged) > max(results), lines
    assert lines[3] == f"buttress: {len(logged)} log records during the command:"
    assert all(lines[i].startswith("  WARNING buttress.memory: ") for i in logged)


def test_demo_refuses_an_unwritable_report_path_before_running(tmp_path: Path) -> None:
    proc = run("demo", "--json", str(tmp_path / "missing" / "report.json"))
    assert proc.returncode == 2
    assert "--json" in proc.stderr and "no such directory" in proc.stderr
    assert "Traceback" not in proc.stderr and "[1/5]" not in proc.stdout


def test_example_config_passes_every_scenario() -> None:
    proc = run("scenarios", "--config", str(EXAMPLE))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("[x]") == 6


def test_scenarios_command() -> None:
    proc = run("scenarios", "rate_limit_burst", "memory_pressure", "scheduled_chaos")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[x] rate_limit_burst" in proc.stdout
    assert "[x] scheduled_chaos: catalog: 3 of 3 scheduled experiments ran" in proc.stdout
    assert "; recovered in " in proc.stdout
    assert "health afterwards: healthy" in proc.stdout
    proc = run("scenarios", "flood")
    assert proc.returncode == 2
    assert "unknown scenario 'flood'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_command_missing_its_action_prints_its_help_and_fails(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["config"]) == 2
    out = capsys.readouterr().out
    assert out.startswith("usage: buttress config") and "check" in out


@pytest.mark.parametrize("users", ["0", "-3", "many"])
def test_demo_refuses_a_bad_users_count_before_running(users: str) -> None:
    proc = run("demo", "--users", users, "--no-progress")
    assert proc.returncode == 2
    assert "argument --users: must be an integer >= 1" in proc.stderr
    assert "concurrent_users" not in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""  # nothing of the demo ran


def test_usage_errors() -> None:
    assert main([]) == 2
    proc = run("frobnicate")
    assert proc.returncode == 2
    assert "invalid choice: 'frobnicate'" in proc.stderr
    proc = run("health")
    assert proc.returncode == 2
    assert "--config" in proc.stderr


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import buttress

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"buttress {buttress.__version__}\n"
    proc = run("--version")  # python -m buttress
    assert (proc.returncode, proc.stdout) == (0, f"buttress {buttress.__version__}\n")
    script = Path(sys.executable).with_name("buttress")  # the installed command
    if script.exists():
        proc = subprocess.run([script, "--version"], capture_output=True, text=True, check=False)
        assert (proc.returncode, proc.stdout) == (0, f"buttress {buttress.__version__}\n")
