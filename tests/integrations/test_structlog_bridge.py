"""The telemetry bus as structlog events (buttress/integrations/structlog.py), through a real
structlog logger, processors and JSON renderer."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

structlog = pytest.importorskip("structlog")

import buttress as bt  # noqa: E402
from buttress import events  # noqa: E402
from buttress.integrations import structlog as bt_structlog  # noqa: E402


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    yield io.StringIO()
    bt_structlog.detach()


def _logger(out: io.StringIO, level: int = logging.DEBUG) -> Any:
    return structlog.wrap_logger(
        structlog.PrintLogger(out),
        processors=[structlog.processors.add_log_level, structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(level),
    )


def _lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_breaker_opening_is_a_warning_with_its_keys(
    out: io.StringIO, clock: bt.ManualClock
) -> None:
    bt_structlog.attach(logger=_logger(out))
    breaker = bt.CircuitBreaker(
        "search", consecutive_failure_threshold=1, reset_timeout=10.0, clock=clock
    )
    with pytest.raises(TimeoutError):
        breaker.call(_time_out)
    [opened] = [d for d in _lines(out) if d["event"] == "buttress.circuit_breaker.state_change"]
    assert opened["level"] == "warning"
    assert opened["component"] == "circuit_breaker"
    assert opened["buttress_breaker"] == "search"
    assert opened["buttress_to_state"] == "open"
    assert opened["buttress_event"] == "buttress.circuit_breaker.state_change"


def test_routine_events_are_debug_and_filtered_by_the_loggers_level(
    out: io.StringIO, clock: bt.ManualClock
) -> None:
    bt_structlog.attach(logger=_logger(out, logging.INFO))
    limiter = bt.RateLimiter([bt.Scope("global", 1, 60.0)], name="api", clock=clock)
    limiter.try_acquire()
    limiter.try_acquire()
    assert out.getvalue() == ""
    bt_structlog.detach()
    bt_structlog.attach(
        logger=_logger(out, logging.INFO), levels={"buttress.rate_limiter.denied": logging.INFO}
    )
    limiter.try_acquire()
    [denied] = _lines(out)
    assert (denied["event"], denied["level"]) == ("buttress.rate_limiter.denied", "info")
    assert denied["buttress_scope"] == "global"


def test_the_default_logger_is_structlogs_own_and_secrets_are_masked(
    out: io.StringIO,
) -> None:
    with structlog.testing.capture_logs() as captured:
        bt_structlog.attach()
        events.emit(
            ("buttress", "memory", "relief"),
            {"duration": 0.01},
            {"manager": "m", "level": "warning", "callback": "trim", "error": _secret_error()},
        )
    [entry] = captured
    assert entry["log_level"] == "warning"  # a relief callback that raised
    assert entry["buttress_level"] == "warning"  # the memory level: no clash with structlog's
    assert "s3cret" not in entry["buttress_error"]


def test_a_logger_that_is_not_structlogs_is_named() -> None:
    with pytest.raises(TypeError, match="a structlog logger"):
        bt_structlog.attach(logger=object())


def _time_out() -> None:
    raise TimeoutError("slow")


def _secret_error() -> Exception:
    return RuntimeError("password=s3cret rejected")
