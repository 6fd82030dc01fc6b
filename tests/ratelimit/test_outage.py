"""Real outages on a redis-server of the test's own: killed, paused, restarted, its scripts
flushed; and the one round trip per decision, counted by the server.

Nothing sleeps to wait for a state change: the limiters' retry interval runs on a
``ManualClock``; only a restarting server is polled, a bounded number of times.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
import redis
from ratelimit_backends import RedisServer

import buttress as bt
from buttress._health import build_report

T = TypeVar("T")

EV_DOWN = ("buttress", "rate_limiter", "backend_down")
EV_RECOVERED = ("buttress", "rate_limiter", "backend_recovered")
CTX = {"user": "u1", "org": "o1"}
HANG = 10.0  # far beyond any timeout below: a call still running then is a hang


@pytest.fixture
def server() -> Iterator[RedisServer]:
    try:
        s = RedisServer()
    except FileNotFoundError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and {exc}")
        pytest.skip(str(exc))
    s.start()
    try:
        yield s
    finally:
        if s.process is not None:
            s.resume()  # in case a test paused it
        s.kill()


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


def evalsha_calls(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {
        k: v["calls"] for k, v in stats.items() if k.startswith(("cmdstat_eval", "cmdstat_script"))
    }


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
        rl.peek(CTX)  # loads the script (EVALSHA, NOSCRIPT, SCRIPT LOAD, EVALSHA) once
        await rl.peek_async(CTX)
        client.config_resetstat()
        decisions = 0
        for i in range(20):  # admitted and refused alike (user u0..u3: 5 each; org 8)
            rl.try_acquire({"user": f"u{i % 4}", "org": "o1"})
            decisions += 1
        for i in range(10):
            await rl.try_acquire_async({"user": f"u{i % 4}", "org": "o2"})
            decisions += 1
        assert evalsha_calls(client) == {"cmdstat_evalsha": decisions}
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
        client.script_flush()  # as after a restart or a failover
        assert rl.try_acquire("u1")
        rl.refund("u1")
        client.script_flush()
        rl.refund("u1")  # the refund script is reloaded too
        assert rl.peek("u1").remaining == 2
    finally:
        backend.close()
        client.close()


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
