"""buttress's log records: silent in an application that configures no logging, structured
fields that clash with nothing, and every ``extra`` through one helper."""

from __future__ import annotations

import ast
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import buttress as bt
from buttress._logging import FIELD_PREFIX, log_fields
from servers import free_port

SRC = Path(__file__).resolve().parent.parent / "src" / "buttress"

# A limiter whose Redis is down logs a WARNING at its first decision.
OUTAGE = """
import buttress as bt
backend = bt.RedisBackend("redis://127.0.0.1:{port}/0", lazy=True)
limiter = bt.RateLimiter(bt.Scope("user", 1, 60.0), backend=backend)
assert limiter.try_acquire("u1").allowed
print("decided")
"""


def run_snippet(source: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_an_application_without_logging_config_gets_nothing_on_stderr() -> None:
    outage = OUTAGE.format(port=free_port())
    quiet = run_snippet(outage)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "decided\n", "")
    # The same snippet does log: an application that configures logging sees the record.
    configured = run_snippet("import logging\nlogging.basicConfig()\n" + outage)
    assert configured.returncode == 0, configured.stderr
    assert configured.stderr.startswith("WARNING:buttress.rate_limiter:rate limiter ")
    assert "RedisBackend is down" in configured.stderr


def test_the_package_logger_has_a_null_handler_and_still_propagates() -> None:
    logger = logging.getLogger("buttress")
    assert any(isinstance(h, logging.NullHandler) for h in logger.handlers)
    assert logger.propagate


# LogRecord's own attributes (logging refuses some in ``extra``, and the rest would be
# overwritten), and the keys structlog and JSON formatters put beside a record's fields.
RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
RESERVED |= {"event", "level", "logger", "timestamp", "exception", "stack"}


def test_structured_fields_clash_with_nothing() -> None:
    fields = log_fields(
        ("buttress", "rate_limiter", "backend_down"),
        limiter="api",
        namespace="shop",
        backend="RedisBackend",
        policy="fail_open",
        error="refused",
        downtime=1.5,
    )
    assert fields["buttress_event"] == "buttress.rate_limiter.backend_down"
    assert all(name.startswith(FIELD_PREFIX) for name in fields)
    assert not set(fields) & RESERVED
    # Every one of them goes through logging as given.
    record = logging.getLogger("buttress.test").makeRecord(
        "buttress.test", logging.WARNING, __file__, 1, "m", (), None, extra=fields
    )
    assert {name: getattr(record, name) for name in fields} == fields


LOGGING_CALLS = {"debug", "info", "warning", "error", "exception", "critical", "log"}


def test_every_extra_in_the_package_is_made_by_log_fields() -> None:
    calls = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr not in LOGGING_CALLS:
                continue
            for keyword in node.keywords:
                if keyword.arg != "extra":
                    continue
                value, made_by = keyword.value, None
                if isinstance(value, ast.Call) and isinstance(value.func, ast.Name):
                    made_by = value.func.id
                calls.append((path.relative_to(SRC).as_posix(), made_by))
    assert calls, "no structured log record at all"
    assert {made_by for _, made_by in calls} == {"log_fields"}, calls


def test_a_limiter_outage_record_carries_its_fields(
    clock: bt.ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    backend = bt.RedisBackend(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2, lazy=True)
    limiter = bt.RateLimiter(bt.Scope("user", 1, 60.0), backend=backend, clock=clock, name="api")
    for _ in range(100):
        assert limiter.try_acquire("u1").allowed
        clock.advance(0.1)
    (record,) = [r for r in caplog.records if r.name == "buttress.rate_limiter"]
    assert record.levelno == logging.WARNING
    fields = {k: v for k, v in vars(record).items() if k.startswith(FIELD_PREFIX)}
    assert set(fields) == {
        "buttress_event",
        "buttress_limiter",
        "buttress_namespace",
        "buttress_backend",
        "buttress_policy",
        "buttress_error",
    }
    assert (fields["buttress_limiter"], fields["buttress_namespace"]) == ("api", "buttress")
    backend.close()
