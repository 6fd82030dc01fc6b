"""Real outages on a redis-server of the test's own: killed, paused, restarted, its scripts
flushed; and the one round trip per decision, counted by the server.

Nothing sleeps to wait for a state change: the limiters' retry interval runs on a
``ManualClock``; only a restarting server is polled, a bounded number of times.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
import redis
from ratelimit_backends import RedisServer

import buttress as bt
from buttress._health import build_report
from buttress.exporters._metrics import METRICS, limiter_samples

T = TypeVar("T")

EV_DOWN = ("buttress", "rate_limiter", "backend_down")
EV_RECOVERED = ("buttress", "rate_limiter", "backend_recovered")
CTX = {"user": "u1", "org": "o1"}
HANG = 10.0  # far beyond any timeout below: a call still running then is a hang


@pytest.fixture
def server(private_redis: RedisServer) -> RedisServer:
    return private_redis


def bounded(call: Callable[[], T]) -> T:
    """Run ``call`` in a thread; fail (instead of hanging the suite) if it never returns."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG)
    assert not thread.is_alive(), "a backend call hung"
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def limiters(backend: bt.RedisBackend, clock: bt.ManualClock) -> tuple[bt.RateLimiter, ...]:
    scopes = [
        bt.Scope("user", 2, 3600.0),
        bt.Scope("org", 50, 3600.0),
        bt.Scope("global", 500, 3600.0),
    ]
    return tuple(
        bt.RateLimiter(
            scopes,
            backend=backend,
            clock=clock,
            namespace="outage",
            name=policy,
            failure_policy=policy,  # type: ignore[arg-type]
            backend_retry_interval=1.0,
        )
        for policy in ("fail_open", "fail_closed")
    )


def statuses(*rls: bt.RateLimiter) -> tuple[str, str, tuple[str, ...]]:
    snaps = {rl.name: rl.snapshot() for rl in rls}
    report = build_report("outage", limiters=snaps, time=0.0)
    shown = tuple(s.backend_status for s in snaps.values())
    return report.overall_status, ",".join(c.status for c in report.checks), shown


def test_a_killed_server_fails_open_or_closed_and_both_recover(
    server: RedisServer, clock: bt.ManualClock, event_log: Any
) -> None:
    backend = bt.RedisBackend(server.url, timeout=0.2)
    open_rl, closed_rl = limiters(backend, clock)
    for rl in (open_rl, closed_rl):
        assert rl.try_acquire(CTX) and rl.try_acquire(CTX)
        assert not rl.try_acquire(CTX)  # the user's 2 per hour are spent
    assert statuses(open_rl, closed_rl) == ("healthy", "pass,pass", ("ok", "ok"))

    server.kill()
    assert bounded(lambda: open_rl.try_acquire(CTX)).allowed  # admitted, though spent
    with pytest.raises(bt.BackendError, match="RedisBackend is down"):
        bounded(lambda: closed_rl.try_acquire(CTX))
    assert statuses(open_rl, closed_rl) == ("unhealthy", "warn,fail", ("down", "down"))
    assert sorted(md["limiter"] for _, md in event_log.named(*EV_DOWN)) == [
        "fail_closed",
        "fail_open",
    ]

    server.start()  # back on the same port, empty (no persistence)
    # Until the retry interval has passed, the limiters do not ask: still shown as down.
    assert bounded(lambda: open_rl.try_acquire(CTX)).allowed
    with pytest.raises(bt.BackendError):
        bounded(lambda: closed_rl.try_acquire(CTX))
    assert statuses(open_rl, closed_rl)[2] == ("down", "down")

    clock.advance(1.0)
    for rl in (open_rl, closed_rl):  # recovered by themselves, enforcing again
        decide = functools.partial(rl.try_acquire, CTX)
        assert [bounded(decide).allowed for _ in range(3)] == [True, True, False]
    assert statuses(open_rl, closed_rl) == ("healthy", "pass,pass", ("ok", "ok"))
    assert len(event_log.named(*EV_RECOVERED)) == 2
    assert len(event_log.named(*EV_DOWN)) == 2  # one outage each
    backend.close()


def test_a_paused_server_times_out_instead_of_hanging(
    server: RedisServer, clock: bt.ManualClock
) -> None:
    backend = bt.RedisBackend(server.url, timeout=0.2)
    open_rl, closed_rl = limiters(backend, clock)
    assert open_rl.try_acquire(CTX) and closed_rl.try_acquire(CTX)
    server.pause()  # connections are accepted, nothing is ever answered
    try:
        assert bounded(lambda: open_rl.try_acquire(CTX)).allowed
        with pytest.raises(bt.BackendError, match="Timeout"):
            bounded(lambda: closed_rl.try_acquire(CTX))
        assert statuses(open_rl, closed_rl)[2] == ("down", "down")
    finally:
        server.resume()
    clock.advance(1.0)
    # Answered (admitted or not: the server also ran the timed-out calls once resumed).
    assert isinstance(bounded(lambda: closed_rl.try_acquire(CTX)), bt.Decision)
    assert closed_rl.snapshot().backend_status == "ok"
    backend.close()


async def test_asyncio_outage_fails_open_or_closed_and_recovers(
    server: RedisServer, clock: bt.ManualClock
) -> None:
    backend = bt.RedisBackend(server.url, timeout=0.2)
    open_rl, closed_rl = limiters(backend, clock)
    try:
        assert (await open_rl.try_acquire_async(CTX)).allowed
        assert (await closed_rl.try_acquire_async(CTX)).allowed
        server.pause()
        try:
            d = await asyncio.wait_for(open_rl.try_acquire_async(CTX), HANG)
            assert d.allowed
            with pytest.raises(bt.BackendError):
                await asyncio.wait_for(closed_rl.acquire_async(CTX, timeout=5.0), HANG)
            assert statuses(open_rl, closed_rl)[2] == ("down", "down")
        finally:
            server.resume()
        server.kill()
        server.start()
        clock.advance(1.0)
        for rl in (open_rl, closed_rl):
            assert (await asyncio.wait_for(rl.try_acquire_async(CTX), HANG)).allowed
        assert statuses(open_rl, closed_rl) == ("healthy", "pass,pass", ("ok", "ok"))
    finally:
        await backend.aclose()
        backend.close()


def script_calls(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    kinds = ("cmdstat_eval", "cmdstat_script", "cmdstat_fcall", "cmdstat_function")
    return {k: v["calls"] for k, v in stats.items() if k.startswith(kinds)}


async def test_one_script_call_per_decision_three_scopes_included(server: RedisServer) -> None:
    client = redis.Redis.from_url(server.url, socket_timeout=2.0)
    backend = bt.RedisBackend(server.url)
    rl = bt.RateLimiter(
        [
            bt.Scope("user", 5, 60.0),
            bt.Scope("org", 8, 60.0, algorithm="fixed_window"),
            bt.Scope("global", 100, 60.0, algorithm="sliding_window"),
        ],
        backend=backend,
    )
    try:
        rl.peek(CTX)  # loads the library (FCALL, not found, FUNCTION LOAD, FCALL) once
        await rl.peek_async(CTX)
        client.config_resetstat()
        decisions = 0
        for i in range(20):  # admitted and refused alike (user u0..u3: 5 each; org 8)
            rl.try_acquire({"user": f"u{i % 4}", "org": "o1"})
            decisions += 1
        for i in range(10):
            await rl.try_acquire_async({"user": f"u{i % 4}", "org": "o2"})
            decisions += 1
        assert script_calls(client) == {"cmdstat_fcall": decisions}  # a Redis 7 function
    finally:
        await backend.aclose()
        backend.close()
        client.close()


def test_scripts_are_reloaded_after_the_server_forgets_them(server: RedisServer) -> None:
    client = redis.Redis.from_url(server.url, socket_timeout=2.0)
    backend = bt.RedisBackend(server.url)
    rl = bt.RateLimiter(bt.Scope("user", 3, 60.0), backend=backend, failure_policy="fail_closed")
    try:
        assert rl.try_acquire("u1")
        client.function_flush()  # as after a restart without persistence, or a failover
        client.script_flush()
        assert rl.try_acquire("u1")
        rl.refund("u1")
        client.function_flush()
        rl.refund("u1")  # the library is loaded again for the refund too
        assert rl.peek("u1").remaining == 2
    finally:
        backend.close()
        client.close()


def test_a_user_not_allowed_functions_is_served_by_scripts(server: RedisServer) -> None:
    """Redis functions are an optimisation: a user whose ACL forbids them (as a server before
    Redis 7 lacks them) gets every decision, refund and peek through EVALSHA, and the same
    answers."""
    admin = redis.Redis.from_url(server.url, socket_timeout=2.0)
    admin.acl_setuser(
        "limited",
        enabled=True,
        passwords=["+secret"],
        keys=["*"],
        commands=["+@all", "-function", "-fcall", "-fcall_ro"],
    )
    backend = bt.RedisBackend(server.url.replace("redis://", "redis://limited:secret@"))
    rl = bt.RateLimiter(bt.Scope("user", 3, 60.0), backend=backend, failure_policy="fail_closed")
    try:
        admin.config_resetstat()
        assert [rl.try_acquire("u1").allowed for _ in range(4)] == [True, True, True, False]
        rl.refund("u1")
        assert rl.peek("u1").remaining == 0
        calls = script_calls(admin)
        assert calls.get("cmdstat_fcall", 0) == 0  # tried once, refused (NOPERM): never ran
        assert calls["cmdstat_evalsha"] >= 6  # then scripts, every call
    finally:
        backend.close()
        admin.acl_deluser("limited")
        admin.close()


def test_a_read_only_replica_stays_down_until_it_takes_writes(
    server: RedisServer, event_log: Any
) -> None:
    # A replica (its primary gone) answers the peek's script, which only reads, and refuses
    # every decision's write: a peek or a health check must not end that outage.
    from ratelimit_backends import free_port

    client = redis.Redis.from_url(server.url, socket_timeout=2.0)
    client.replicaof("127.0.0.1", free_port())
    backend = bt.RedisBackend(server.url)
    clock = bt.ManualClock()
    rl = bt.RateLimiter(
        bt.Scope("user", 3, 60.0),
        backend=backend,
        clock=clock,
        namespace="replica",
        failure_policy="fail_closed",
        backend_retry_interval=0,
    )
    try:
        for _ in range(2):
            with pytest.raises(bt.BackendError, match="read only replica"):
                rl.try_acquire("u1")
            assert rl.peek("u1").allowed
            assert rl.check_backend() == "down"
        assert len(event_log.named(*EV_DOWN)) == 1
        assert event_log.named(*EV_RECOVERED) == []
        client.replicaof("NO", "ONE")  # promoted: writes are taken again
        assert rl.check_backend() == "ok"
        assert len(event_log.named(*EV_RECOVERED)) == 1
        assert client.keys("*") == []  # the checks wrote nothing
        assert rl.try_acquire("u1").remaining == 2
    finally:
        backend.close()
        client.close()


# -- an outage is loud: one WARNING as it starts, one as it ends, never one per decision -----


def outage_records(caplog: pytest.LogCaptureFixture, what: str) -> list[logging.LogRecord]:
    name = f"buttress.rate_limiter.backend_{what}"
    return [r for r in caplog.records if getattr(r, "buttress_event", None) == name]


def fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k.startswith("buttress_")}


def limiter_metrics(*rls: bt.RateLimiter) -> dict[str, list[float]]:
    """The backend's two metrics, one value per limiter, as both exporters publish them."""
    out: dict[str, list[Any]] = {m.key: [] for m in METRICS}
    limiter_samples("outage", {rl.name: rl.snapshot() for rl in rls}, out)
    keys = ("limiter.backend_up", "limiter.backend_errors")
    return {key: [value for _, value in out[key]] for key in keys}


def test_a_dead_redis_logs_one_warning_per_limiter_and_one_on_recovery(
    clock: bt.ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    try:
        server = RedisServer()  # a spare port: nothing listens there until server.start()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    backend = bt.RedisBackend(server.url, timeout=0.2, lazy=True)
    open_rl, closed_rl = limiters(backend, clock)
    try:
        for _ in range(400):  # tried again each second: 20 failed calls each, in 20 s
            assert open_rl.try_acquire(CTX).allowed
            with pytest.raises(bt.BackendError, match="RedisBackend is down"):
                closed_rl.try_acquire(CTX)
            clock.advance(0.05)
        down = outage_records(caplog, "down")
        assert [r.buttress_limiter for r in down] == ["fail_open", "fail_closed"]
        for record, policy in zip(down, ("fail_open", "fail_closed"), strict=True):
            assert record.levelno == logging.WARNING and record.name == "buttress.rate_limiter"
            assert fields(record) == {
                "buttress_event": "buttress.rate_limiter.backend_down",
                "buttress_limiter": policy,
                "buttress_namespace": "outage",
                "buttress_backend": "RedisBackend",
                "buttress_policy": policy,
                "buttress_error": record.buttress_error,
            }
            assert "Connection refused" in record.buttress_error
            assert record.getMessage().startswith(
                f"rate limiter outage:{policy}: RedisBackend is down"
            )
        # The health report and the metrics show it.
        overall, checks, shown = statuses(open_rl, closed_rl)
        assert (overall, checks, shown) == ("unhealthy", "warn,fail", ("down", "down"))
        snap = open_rl.snapshot()
        assert (snap.backend, snap.backend_down_for) == ("RedisBackend", pytest.approx(20.0))
        report = build_report("outage", limiters={"fail_open": snap}, time=0.0)
        assert (
            report.checks[0].reason
            == "RedisBackend is down for 20s (fail_open: admitting unchecked)"
        )
        assert limiter_metrics(open_rl, closed_rl) == {
            "limiter.backend_up": [0.0, 0.0],
            "limiter.backend_errors": [20.0, 20.0],
        }

        server.start()  # Redis comes up, on the port the URL names
        clock.advance(1.0)
        for _ in range(50):
            bounded(lambda: open_rl.try_acquire(CTX))
            with contextlib.suppress(bt.RateLimitExceeded):
                bounded(lambda: closed_rl.try_acquire(CTX))
        assert not open_rl.try_acquire(CTX).allowed  # enforcing again
        up = outage_records(caplog, "recovered")
        assert [r.buttress_limiter for r in up] == ["fail_open", "fail_closed"]
        for record in up:
            assert record.levelno == logging.WARNING
            assert record.buttress_downtime == pytest.approx(21.0)  # first failure to answer
            assert set(fields(record)) == {
                "buttress_event",
                "buttress_limiter",
                "buttress_namespace",
                "buttress_backend",
                "buttress_policy",
                "buttress_downtime",
            }
            assert "answers again after 21.000s down" in record.getMessage()
        assert len(outage_records(caplog, "down")) == 2  # nothing more
        assert statuses(open_rl, closed_rl) == ("healthy", "pass,pass", ("ok", "ok"))
        assert limiter_metrics(open_rl, closed_rl)["limiter.backend_up"] == [1.0, 1.0]
    finally:
        backend.close()
        server.kill()


def test_each_outage_of_a_killed_server_is_logged_once_sync_and_asyncio(
    server: RedisServer, clock: bt.ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    backend = bt.RedisBackend(server.url, timeout=0.2)
    rl = bt.RateLimiter(
        bt.Scope("user", 1000, 3600.0), backend=backend, clock=clock, namespace="outage"
    )

    async def decide_async(n: int) -> None:
        for _ in range(n):
            assert (await rl.try_acquire_async("u1")).allowed
            clock.advance(0.25)

    try:
        for outage in (1, 2):
            server.kill()
            for _ in range(20):
                assert bounded(lambda: rl.try_acquire("u1")).allowed  # fails open
                clock.advance(0.25)
            asyncio.run(decide_async(20))
            assert len(outage_records(caplog, "down")) == outage
            assert rl.snapshot().backend_status == "down"
            server.start()
            clock.advance(1.0)
            if outage == 1:  # the first answer ends the outage, on either path
                asyncio.run(decide_async(5))
            else:
                bounded(lambda: rl.try_acquire("u1"))
            assert len(outage_records(caplog, "recovered")) == outage
            assert rl.snapshot().backend_status == "ok"
        assert len(outage_records(caplog, "down")) == 2
    finally:
        backend.close()


def test_an_infrastructure_that_starts_before_its_redis_starts_in_an_outage(
    clock: bt.ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    try:
        server = RedisServer()  # not started: the application comes up first
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    config = {
        "rate_limiting": {
            "backend": server.url,
            "limiters": {
                "api": {"limit": 2, "window": 3600.0},
                "billing": {"limit": 2, "window": 3600.0, "failure_policy": "fail_closed"},
            },
        },
        "memory_manager": {"enabled": False},
    }
    try:
        with bt.Infrastructure("early", config, clock=clock, env={}, background=False) as infra:
            # Made, not refused; each limiter's outage is announced once, and health shows it.
            down = outage_records(caplog, "down")
            assert sorted(r.buttress_limiter for r in down) == ["api", "billing"]
            report = infra.health()
            assert report.overall_status == "unhealthy"
            assert {c.name: c.reason for c in report.checks} == {
                "api": "RedisBackend is down for 0s (fail_open: admitting unchecked)",
                "billing": "RedisBackend is down for 0s (fail_closed: refusing)",
            }
            api, billing = infra.limiters["api"], infra.limiters["billing"]
            for _ in range(5):
                assert api.try_acquire().allowed
                with pytest.raises(bt.BackendError):
                    billing.try_acquire()
            assert len(outage_records(caplog, "down")) == 2

            server.start()
            clock.advance(1.0)
            assert [api.try_acquire().allowed for _ in range(3)] == [True, True, False]
            assert [billing.try_acquire().allowed for _ in range(3)] == [True, True, False]
            assert len(outage_records(caplog, "recovered")) == 2
            assert infra.health().overall_status == "healthy"
    finally:
        server.kill()
