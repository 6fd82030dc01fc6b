"""What the driver-pool wrappers share (buttress/integrations/_pools.py), with no driver: the
cap, the breaker's outcomes per verdict, the snapshot, and Infrastructure.watch_pool."""

from __future__ import annotations

import pytest

import buttress as bt
from buttress.exporters._metrics import gather
from buttress.integrations._pools import DriverFigures, Guard, server_failed, snapshot, wait_failed


def probe_breaker(clock: bt.ManualClock) -> bt.CircuitBreaker:
    """Half-open after one failure and 30 s, with a single probe."""
    return bt.CircuitBreaker(
        "db",
        failure_threshold=1,
        degradation_threshold=None,
        half_open_max_calls=1,
        half_open_success_ratio=1.0,
        reset_timeout_jitter=0.0,
        clock=clock,
    )


def test_the_sqlstate_classes_of_a_failed_server() -> None:
    assert server_failed(None)  # raised by the client: no connection
    assert all(server_failed(s) for s in ("08006", "53300", "57P01", "57014", "58030"))
    assert not any(server_failed(s) for s in ("23505", "42601", "40001", "55P03", "22012"))
    assert (wait_failed(True), wait_failed(False)) == ("neutral", "failure")


def test_the_cap_counts_who_uses_and_who_waits() -> None:
    guard = Guard("db", None, 2)
    a = guard.enter()
    guard.lent()
    guard.enter()
    with pytest.raises(bt.LoadShedError, match="max_concurrent=2"):
        guard.enter()
    snap = guard.snapshot(DriverFigures(size=1, idle=0, min_size=0, max_size=1, waiting=0))
    assert (snap.in_use, snap.waiting, snap.rejected, snap.checkouts) == (1, 1, 1, 1)
    guard.exit(a, True, None, "success")
    guard.exit(None, False, TimeoutError(), "neutral", timed_out=True)
    assert (guard.in_use, guard.waiting) == (0, 0)
    assert guard.snapshot(DriverFigures(1, 1, 0, 1, 0)).timeouts == 1
    guard.enter()  # room again


def use(guard: Guard, exc: BaseException | None, verdict: str) -> None:
    """One use that got its connection and ended on ``exc``, judged ``verdict``."""
    ticket = guard.enter()
    guard.lent()
    guard.exit(ticket, True, exc, verdict)  # type: ignore[arg-type]


def test_each_verdict_reaches_the_breaker(clock: bt.ManualClock) -> None:
    b = probe_breaker(clock)
    guard = Guard("db", b, 10)
    use(guard, ConnectionResetError("lost"), "failure")
    assert b.state is bt.BreakerState.OPEN
    with pytest.raises(bt.CircuitOpenError):
        guard.enter()
    assert guard.snapshot(DriverFigures(0, 0, 0, 1, 0)).waiting == 0  # the refused one left
    clock.advance(30.0)
    use(guard, ValueError("the app's own"), "neutral")  # the probe is given back,
    use(guard, None, "success")  # so the next one may probe
    assert b.state is bt.BreakerState.CLOSED
    snap = guard.snapshot(DriverFigures(1, 1, 0, 1, 0))
    assert (snap.connect_failures, snap.connect_errors, snap.last_connect_error) == (0, 1, None)


def test_a_driver_short_of_min_size_whose_connects_failed_is_failing() -> None:
    quiet = snapshot("db", DriverFigures(0, 0, 2, 4, 0, connect_errors=3))
    assert quiet.connect_failures == 1
    full = snapshot("db", DriverFigures(2, 2, 2, 4, 0, connect_errors=3))
    assert full.connect_failures == 0  # errors in the past; min_size is met


def test_the_arguments_are_checked() -> None:
    with pytest.raises(TypeError, match="CircuitBreaker"):
        Guard("db", "db", 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="int"):
        Guard("db", None, True)
    with pytest.raises(ValueError, match="at least 1"):
        Guard("db", None, 0)


class Watched:
    def __init__(self, guard: Guard) -> None:
        self.guard = guard

    def snapshot(self) -> bt.PoolSnapshot:
        return self.guard.snapshot(DriverFigures(size=3, idle=1, min_size=1, max_size=5, waiting=0))


def test_a_watched_pool_is_in_the_report_and_the_metrics(clock: bt.ManualClock) -> None:
    with bt.Infrastructure("app", background=False, clock=clock) as infra:
        infra.watch_pool("orders-db", Watched(Guard("orders-db", None, 4)))
        report = infra.health()
        assert report.connection_pools["orders-db"].in_use == 2
        check = next(c for c in report.checks if c.name == "orders-db")
        assert (check.kind, check.status, check.reason) == ("connection_pool", "pass", "2/3 in use")
        used = dict(gather(infra, "pool")["pool.connections"])[("app", "orders-db", "used")]
        assert used == 2.0
        with pytest.raises(bt.ConfigError, match="name"):
            infra.watch_pool("not a name", Watched(Guard("x", None, 1)))
