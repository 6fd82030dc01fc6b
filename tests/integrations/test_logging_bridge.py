"""The telemetry bus as standard logging records (buttress/integrations/logging.py), through
real logging handlers and formatters."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

import buttress as bt
from buttress import events
from buttress._catalog import CATALOG
from buttress.integrations import logging as bt_logging
from buttress.integrations._records import LEVELS


class Kept(logging.Handler):
    """Keeps every record, formatted by a real formatter too."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))


@pytest.fixture
def kept() -> Iterator[Kept]:
    handler = Kept()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger("buttress.telemetry")
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(logging.NOTSET)
    bt_logging.detach()


def test_every_event_of_the_catalog_has_a_level_decided() -> None:
    assert set(LEVELS) == set(CATALOG)


def test_a_breaker_opening_is_a_warning_with_its_fields_and_routine_calls_are_debug(
    kept: Kept, clock: bt.ManualClock
) -> None:
    bt_logging.attach()
    breaker = bt.CircuitBreaker(
        "payments", consecutive_failure_threshold=2, reset_timeout=30.0, clock=clock
    )
    for _ in range(2):
        with pytest.raises(ConnectionError):
            breaker.call(_fail)
    with pytest.raises(bt.CircuitOpenError) as refused:
        breaker.call(lambda: None)

    opened = [r for r in kept.records if getattr(r, "buttress_to_state", None) == "open"]
    assert len(opened) == 1
    record = opened[0]
    assert record.levelno == logging.WARNING
    assert record.name == "buttress.telemetry.circuit_breaker"
    assert record.buttress_event == "buttress.circuit_breaker.state_change"  # type: ignore[attr-defined]
    assert record.buttress_breaker == "payments"  # type: ignore[attr-defined]
    assert record.buttress_from_state == "closed"  # type: ignore[attr-defined]
    assert "to_state=open" in record.getMessage()
    rejected = [r for r in kept.records if r.buttress_event.endswith(".rejected")]  # type: ignore[attr-defined]
    assert [r.levelno for r in rejected] == [logging.DEBUG]
    # The refusal's own time left: 30 s, give or take the default jitter (+/-10%).
    assert rejected[0].buttress_retry_after == refused.value.retry_after  # type: ignore[attr-defined]
    assert 27.0 <= rejected[0].buttress_retry_after <= 33.0  # type: ignore[attr-defined]
    warned = "WARNING buttress.telemetry.circuit_breaker buttress.circuit_breaker.state_change "
    assert any(line.startswith(warned) for line in kept.lines)


def test_a_json_formatter_takes_every_field_as_it_is(kept: Kept, clock: bt.ManualClock) -> None:
    bt_logging.attach()
    limiter = bt.RateLimiter([bt.Scope("user", 1, 60.0, by="user")], name="api", clock=clock)
    limiter.try_acquire({"user": "u1"})
    limiter.try_acquire({"user": "u1"})
    out = [
        json.dumps({k: v for k, v in vars(r).items() if k.startswith("buttress_")})
        for r in kept.records
    ]
    loaded = [json.loads(line) for line in out]
    assert [d["buttress_event"] for d in loaded] == [
        "buttress.rate_limiter.allowed",
        "buttress.rate_limiter.denied",
    ]
    assert loaded[1]["buttress_scope"] == "user"
    assert loaded[1]["buttress_retry_after"] > 0
    assert all(r.levelno == logging.DEBUG for r in kept.records)


def test_no_record_is_made_below_the_loggers_level(kept: Kept, clock: bt.ManualClock) -> None:
    logging.getLogger("buttress.telemetry").setLevel(logging.INFO)
    bt_logging.attach()
    limiter = bt.RateLimiter([bt.Scope("global", 5, 60.0)], name="quiet", clock=clock)
    limiter.try_acquire()
    assert kept.records == []


def test_levels_are_replaced_by_event_name_and_none_leaves_one_out(
    kept: Kept, clock: bt.ManualClock
) -> None:
    bt_logging.attach(
        levels={
            "buttress.rate_limiter.denied": logging.ERROR,
            "buttress.rate_limiter.allowed": None,
        }
    )
    limiter = bt.RateLimiter([bt.Scope("global", 1, 60.0)], name="l", clock=clock)
    limiter.try_acquire()
    limiter.try_acquire()
    assert [(r.buttress_event, r.levelno) for r in kept.records] == [  # type: ignore[attr-defined]
        ("buttress.rate_limiter.denied", logging.ERROR)
    ]


def test_what_buttress_already_logs_is_not_logged_twice(kept: Kept) -> None:
    bt_logging.attach()
    meta = {
        "limiter": "api",
        "namespace": "shop",
        "backend": "RedisBackend",
        "policy": "fail_open",
        "error": "ConnectionError: refused",
    }
    events.emit(("buttress", "rate_limiter", "backend_down"), {}, meta)
    del meta["error"]
    events.emit(("buttress", "rate_limiter", "backend_recovered"), {"downtime": 1.0}, meta)
    assert kept.records == []


def test_an_applications_own_event_is_debug_on_its_own_logger(kept: Kept) -> None:
    bt_logging.attach(names=[("app", "job", "done")])
    events.emit(("app", "job", "done"), {"count": 3}, {"job": "nightly"})
    [record] = kept.records
    assert (record.name, record.levelno) == ("buttress.telemetry.app", logging.DEBUG)
    assert record.getMessage() == "app.job.done job=nightly count=3"


def test_secrets_in_an_events_error_are_masked(kept: Kept) -> None:
    bt_logging.attach()
    error = ConnectionError("cannot reach redis://:s3cret@cache:6379/0")
    events.emit(
        ("buttress", "pool", "connect"),
        {"duration": 0.1, "retry_in": 1.0},
        {"pool": "db", "member": None, "ok": False, "error": error},
    )
    [record] = kept.records
    assert record.levelno == logging.WARNING  # a failed connect
    assert "s3cret" not in kept.lines[0]
    assert "s3cret" not in record.buttress_error  # type: ignore[attr-defined]
    assert record.buttress_error.startswith("ConnectionError: ")  # type: ignore[attr-defined]


def test_detach_stops_the_records_and_bad_settings_are_named(kept: Kept) -> None:
    bt_logging.attach()
    with pytest.raises(ValueError, match="already attached"):
        bt_logging.attach()
    assert bt_logging.detach() is True
    events.emit(("app", "x", "y"), {}, {})
    assert kept.records == []
    with pytest.raises(TypeError, match="dotted event names"):
        bt_logging.attach(levels={"denied": logging.INFO})
    with pytest.raises(TypeError, match="a logging level"):
        bt_logging.attach(levels={"buttress.rate_limiter.denied": "loud"})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="the name of a logger"):
        bt_logging.attach(logger=logging.getLogger("x"))  # type: ignore[arg-type]


def _fail() -> None:
    raise ConnectionError("down")
