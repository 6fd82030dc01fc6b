"""No password shows: a sentinel password goes everywhere a user can put one (Redis URLs in
each form, a pool's DSN in both forms and its factory's keyword arguments, a factory whose
connect error quotes its DSN), real servers answer or refuse, and every repr, error message,
health document, log record, event and CLI output is searched for it."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

import buttress as bt
from buttress._config import load_config
from buttress._redact import is_secret_key, redact_data, redact_text
from buttress.ratelimit import backend_from_url
from conftest import EventLog
from servers import RedisServer, free_port

SENTINEL = "Sentinel-pw-8723"
TESTS = Path(__file__).resolve().parent


def connect_echoing_its_dsn(dsn: str, **options: Any) -> Any:
    """A pool factory whose error quotes what it was given, as some drivers' errors do."""
    raise ConnectionError(f"could not connect to {dsn} with {options}")


class Shown:
    """Everything the test saw buttress show, by where it showed it."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, where: str, value: object) -> None:
        text = value if isinstance(value, str) else json.dumps(value, default=repr)
        self.items.append((where, text))

    def error(self, where: str, exc: BaseException) -> None:
        self.add(f"{where}: str", str(exc))
        self.add(f"{where}: repr", repr(exc))
        self.add(f"{where}: args", repr(exc.args))
        for attr in ("message", "path"):
            if hasattr(exc, attr):
                self.add(f"{where}: .{attr}", str(getattr(exc, attr)))

    def assert_no_sentinel(self) -> None:
        leaks = [f"{where}: {text[:300]}" for where, text in self.items if SENTINEL in text]
        assert not leaks, "the password shows in:\n" + "\n".join(leaks)


@pytest.fixture(scope="module")
def redis_with_password() -> Iterator[str]:
    """A redis-server of the test's own that asks for the sentinel password."""
    redis = pytest.importorskip("redis")
    try:
        server = RedisServer().start()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    try:
        with redis.Redis(port=server.port) as client:
            client.config_set("requirepass", SENTINEL)
        yield f"redis://:{SENTINEL}@127.0.0.1:{server.port}/0"
    finally:
        server.kill()


def config_toml(redis_url: str, pg_dsn: str, closed: int, *, dead: bool = True) -> str:
    """The configuration; ``dead``: with the limiters and pools that cannot connect."""
    pg = urlsplit(pg_dsn)
    s = SENTINEL
    text = f"""
[memory_manager]
enabled = false

[circuit_breakers.api]

[rate_limiting]
backend = "{redis_url}"

[rate_limiting.limiters.api]
limit = 100

[connection_pools.pg]
factory = "psycopg:connect"
args = ["postgresql://{pg.username or "postgres"}:{s}@{pg.hostname}:{pg.port}/postgres"]
kwargs = {{ password = "{s}", connect_timeout = 5 }}
min_size = 1
max_size = 2
checkout_timeout = 2.0
"""
    if dead:
        text += f"""
[rate_limiting.limiters.dead_closed]
limit = 100
backend = "redis://default:{s}@127.0.0.1:{closed}/0"
failure_policy = "fail_closed"

[rate_limiting.limiters.dead_open]
limit = 100
backend = "redis://127.0.0.1:{closed}/0?password={s}"

[rate_limiting.limiters.dead_tls]
limit = 100
backend = "rediss://:{s}@127.0.0.1:{closed}/0"

[connection_pools.dead]
factory = "psycopg:connect"
args = ["host=127.0.0.1 port={closed} user=postgres password={s} connect_timeout=2"]
min_size = 1
checkout_timeout = 0.2

[connection_pools.echo]
factory = "test_secrets:connect_echoing_its_dsn"
args = ["postgresql://app:{s}@db.internal:5432/app"]
kwargs = {{ password = "{s}", sslpassword = "{s}" }}
min_size = 1
checkout_timeout = 0.2
"""
    return text


@pytest.fixture
def config_file(tmp_path: Path, redis_with_password: str, pg_dsn: str) -> Path:
    path = tmp_path / "buttress.toml"
    path.write_text(config_toml(redis_with_password, pg_dsn, free_port()))
    return path


def test_no_repr_error_health_document_log_or_event_shows_the_password(
    config_file: Path, caplog: pytest.LogCaptureFixture, event_log: EventLog
) -> None:
    caplog.set_level(logging.DEBUG)
    shown = Shown()
    with bt.Infrastructure("shop", str(config_file), env={}, background=False) as infra:
        infra.run_maintenance()  # the pools' min_size connects: pg answers, the others fail
        assert infra.call("api", lambda: "ok") == "ok"  # the password works where it should
        assert infra.pools["pg"].snapshot().size == 1
        with pytest.raises(bt.BackendError) as down:
            infra.call("dead_closed", lambda: None)
        shown.error("BackendError", down.value)
        assert infra.call("dead_open", lambda: "admitted") == "admitted"  # fail_open
        assert infra.call("dead_tls", lambda: "admitted") == "admitted"
        for pool in ("dead", "echo"):
            with pytest.raises(bt.PoolTimeoutError) as timeout:
                infra.call(pool, lambda: None)
            shown.error(f"PoolTimeoutError of {pool}", timeout.value)
            assert timeout.value.connect_error is not None  # it says why, masked
        assert "could not connect to postgresql://app:***@db.internal" in str(timeout.value)

        shown.add("repr(infra)", repr(infra))
        shown.add("repr(config)", repr(infra.config))
        shown.add("str(config)", str(infra.config))
        for name, section in infra.config:
            shown.add(f"repr(config.{name})", repr(section))
        for name, limiter in infra.limiters.items():
            shown.add(f"repr(limiter {name})", repr(limiter))
            shown.add(f"repr(backend {name})", repr(limiter.backend))
            shown.add(f"limiter {name} snapshot", repr(limiter.snapshot()))
        for name, pool in infra.pools.items():
            shown.add(f"repr(pool {name})", repr(pool))
            shown.add(f"pool {name} stats", repr(pool.snapshot()))
        for name, breaker in infra.breakers.items():
            shown.add(f"repr(breaker {name})", repr(breaker))

        report = infra.health()
        assert report.overall_status == "unhealthy"
        shown.add("repr(report)", repr(report))
        for verbose in (False, True):
            shown.add(f"to_dict(verbose={verbose})", report.to_dict(verbose=verbose))
            shown.add(f"to_health_json({verbose})", report.to_health_json(verbose=verbose))
            for probe in ("health", "livez", "readyz"):
                body = bt.health_response(infra, probe, verbose=verbose)[2]
                shown.add(f"{probe} body (verbose={verbose})", body.decode())
        verbose_doc = json.dumps(report.to_health_json(verbose=True))
        assert "could not connect to postgresql://app:***@db.internal" in verbose_doc
        assert "port " in verbose_doc  # the driver's own message, for the operator

    for exc in config_errors():
        shown.error("ConfigError", exc)
    records = caplog.records
    assert any("connect failed" in r.getMessage() for r in records)  # something was logged
    for record in records:
        shown.add(f"log {record.name}: message", record.getMessage())
        shown.add(f"log {record.name}: formatted", logging.Formatter().format(record))
        shown.add(f"log {record.name}: fields", repr(vars(record)))
    shown.add("caplog.text", caplog.text)
    for name, measurements, metadata in event_log.records:
        shown.add(f"event {'.'.join(name)}", {**measurements, **metadata})
    assert len(shown.items) > 50
    shown.assert_no_sentinel()


def config_errors() -> Iterator[bt.ConfigError]:
    """The configuration errors that quote what was written, each with the password in it."""
    s = SENTINEL
    bad: list[Any] = [
        {"rate_limiting": {"backend": f"redis://:{s}@127.0.0.1/zero"}},
        {"rate_limiting": {"backend": f"redis://:{s}@127.0.0.1/0?decode_responses=yes"}},
        {"rate_limiting": {"backend": f"postgresql://u:{s}@127.0.0.1/db"}},
        {"rate_limiting": {"limiters": {"api": {"limit": 1, "backend": f"rediss://:{s}@h/x"}}}},
        {"connection_pools": {"db": f"postgresql://u:{s}@127.0.0.1/db"}},
        {"connection_pools": {"db": {"kwargs": f"password={s}"}}},
        {"connection_pools": {"db": {"args": f"host=h password={s}"}}},
        {"connection_pools": {"db": {"factory": 5, "kwargs": {"password": s}}}},
    ]
    for data in bad:
        with pytest.raises(bt.ConfigError) as info:
            load_config(data, env={})
        yield info.value
    for url in (f"redis://:{s}@127.0.0.1:1/zero", f"mysql://u:{s}@127.0.0.1/db"):
        with pytest.raises(bt.ConfigError) as info:
            backend_from_url(url)
        yield info.value
    with pytest.raises(bt.ConfigError) as info:
        bt.RedisBackend(f"redis://:{s}@127.0.0.1:1/0?decode_responses=true")
    yield info.value


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(TESTS)}  # the echoing factory lives here
    return subprocess.run(
        [sys.executable, "-m", "buttress", *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=120,
    )


def test_no_cli_output_shows_the_password(
    config_file: Path, tmp_path: Path, redis_with_password: str, pg_dsn: str
) -> None:
    shown = Shown()
    check = run_cli("config", "check", str(config_file))
    assert check.returncode == 0, check.stderr
    resolved = json.loads(check.stdout)
    assert resolved["connection_pools"]["pg"]["kwargs"]["password"] == "***"
    assert resolved["rate_limiting"]["backend"].startswith("redis://:***@127.0.0.1:")
    health = run_cli("health", "--config", str(config_file), "--timeout", "1")
    assert health.returncode == 1, health.stderr
    doc = json.loads(health.stdout)
    assert doc["checks"]["connection_pool:echo"][0]["status"] == "fail"
    assert doc["rate_limit_backends"]["dead_closed"]["status"] == "down"
    assert doc["rate_limit_backends"]["api"]["status"] == "ok"
    # Scenarios against the parts that answer (exhausting a dead pool waits long).
    answering = tmp_path / "answering.toml"
    answering.write_text(config_toml(redis_with_password, pg_dsn, free_port(), dead=False))
    scenarios = run_cli("scenarios", "--config", str(answering))
    assert "[x] rate_limit_burst" in scenarios.stdout, scenarios.stdout + scenarios.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[rate_limiting]\nbackend = "redis://:{SENTINEL}@127.0.0.1/zero"\n')
    refused = run_cli("config", "check", str(bad))
    assert refused.returncode == 2 and "redis://:***@127.0.0.1/zero" in refused.stderr
    for name, proc in [
        ("config check", check),
        ("health", health),
        ("scenarios", scenarios),
        ("config check (bad)", refused),
    ]:
        shown.add(f"buttress {name}: stdout", proc.stdout)
        shown.add(f"buttress {name}: stderr", proc.stderr)
    shown.assert_no_sentinel()


# -- the redaction rules ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("redis://:pw@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("redis://user:p@ss:w@h/0", "redis://user:***@h/0"),
        ("rediss://default:pw@h:6380", "rediss://default:***@h:6380"),
        ("unix://:pw@/run/redis.sock?db=0", "unix://:***@/run/redis.sock?db=0"),
        ("redis://h/0?password=pw&db=1", "redis://h/0?password=***&db=1"),
        ("redis://h/0?db=1&password=pw", "redis://h/0?db=1&password=***"),
        ("postgresql://u:pw@h/db", "postgresql://u:***@h/db"),
        ("host=h password=pw dbname=d", "host=h password=*** dbname=d"),
        ("host=h password='p w' dbname=d", "host=h password='***' dbname=d"),
        ("{'password': 'pw', 'user': 'u'}", "{'password': '***', 'user': 'u'}"),
        ('{"db_password": "pw"}', '{"db_password": "***"}'),
        ("PGPASSWORD=pw API-KEY=k auth_token: t", "PGPASSWORD=*** API-KEY=*** auth_token: ***"),
        ("auth=('u', 'pw') x=1", "auth=*** x=1"),
        # Not secrets: names that only contain a secret word's letters, and URLs without one.
        ("algorithm=token_bucket max_tokens=5", "algorithm=token_bucket max_tokens=5"),
        ("redis://u@h:6379/0 at 12:30:01", "redis://u@h:6379/0 at 12:30:01"),
        ("passfile=/home/u/.pgpass sslkey=k.pem", "passfile=/home/u/.pgpass sslkey=k.pem"),
    ],
)
def test_redact_text(text: str, masked: str) -> None:
    assert redact_text(text) == masked
    assert redact_text(masked) == masked  # masking twice changes nothing


def test_redact_data_masks_secret_keys_whatever_their_value() -> None:
    data = {
        "kwargs": {"password": 1234, "user": "u", "token": None, "credentials": {"a": "b"}},
        "args": ["postgresql://u:pw@h/db", ("x", "password=pw")],
        "backend": "redis://:pw@h/0",
    }
    assert redact_data(data) == {
        "kwargs": {"password": "***", "user": "u", "token": None, "credentials": "***"},
        "args": ["postgresql://u:***@h/db", ("x", "password=***")],
        "backend": "redis://:***@h/0",
    }
    assert data["kwargs"]["password"] == 1234  # a copy: the data itself is left alone


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("password", True),
        ("PGPASSWORD", True),
        ("sslpassword", True),
        ("client_secret", True),
        ("api_key", True),
        ("api-key", True),
        ("auth", True),
        ("auth_token", True),
        ("token", True),
        ("token_bucket", False),
        ("max_tokens", False),
        ("oauth", False),
        ("passfile", False),
        ("key", False),
        ("user", False),
    ],
)
def test_secret_looking_names(name: str, secret: bool) -> None:
    assert is_secret_key(name) is secret


def test_every_buttress_logger_masks_its_records() -> None:
    # A logger made with logging.getLogger in a new module would not: every module's
    # `_log` is made by _redact.redacted_logger. In a fresh interpreter, so that loggers the
    # tests make themselves ("buttress.test...") are not counted.
    script = """
import importlib, logging, pkgutil
import buttress as bt
for module in pkgutil.walk_packages(bt.__path__, "buttress."):
    if not module.name.endswith("__main__"):
        importlib.import_module(module.name)
for name, logger in sorted(logging.Logger.manager.loggerDict.items()):
    if name.startswith("buttress.") and isinstance(logger, logging.Logger):
        masks = any(type(f).__name__ == "_RedactingFilter" for f in logger.filters)
        print(name, masks)
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    loggers = dict(line.split() for line in proc.stdout.splitlines())
    assert len(loggers) >= 7, loggers
    assert {name for name, masks in loggers.items() if masks != "True"} == set()


def test_a_log_record_shows_no_secret_in_any_part(caplog: pytest.LogCaptureFixture) -> None:
    from buttress._redact import redacted_logger

    log = redacted_logger("buttress.test_secrets")
    caplog.set_level(logging.DEBUG, logger="buttress.test_secrets")
    try:
        raise ConnectionError(f"cannot reach postgresql://u:{SENTINEL}@h/db")
    except ConnectionError as exc:
        log.warning(
            "connect to %s failed",
            f"redis://:{SENTINEL}@h/0",
            exc_info=exc,
            extra={"dsn": f"host=h password={SENTINEL}", "api_token": SENTINEL, "n": 3},
        )
    log.info("nothing secret here: %d", 5)
    masked, plain = caplog.records
    assert masked.getMessage() == "connect to redis://:***@h/0 failed"
    assert masked.dsn == "host=h password=***"  # type: ignore[attr-defined]
    assert masked.api_token == "***"  # type: ignore[attr-defined]
    assert masked.n == 3  # type: ignore[attr-defined]
    assert masked.exc_info is None  # the exception itself would show the password again
    assert masked.exc_text is not None
    assert "ConnectionError: cannot reach postgresql://u:***@h/db" in masked.exc_text
    assert SENTINEL not in logging.Formatter().format(masked)
    assert SENTINEL not in caplog.text
    # A record that shows nothing secret is left exactly as it was logged.
    assert (plain.msg, plain.args) == ("nothing secret here: %d", (5,))
