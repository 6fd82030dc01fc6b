"""The integrated layer: order of checks, refunds, namespaces, services, health, instrumentation."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import buttress as bt
from buttress._memory import MemoryReading

CTX = {"user_id": "u1", "org_id": "o1"}


def reading(ratio: float) -> MemoryReading:
    limit = 1_000_000
    return MemoryReading(
        source="process", limit=limit, used=int(ratio * limit), rss=int(ratio * limit)
    )


class Pressure:
    """A memory probe a test turns up and down."""

    def __init__(self) -> None:
        self.ratio = 0.1

    def __call__(self) -> MemoryReading:
        return reading(self.ratio)


def make(clock: bt.ManualClock, config: dict[str, Any], **kw: Any) -> bt.Infrastructure:
    kw.setdefault("env", {})
    kw.setdefault("background", False)
    return bt.Infrastructure("t", config, clock=clock, seed=1, **kw)


LIMITED = {
    "circuit_breakers": {
        "svc": {
            "failure_threshold": 2,
            "degradation_threshold": None,
            "failure_rate_threshold": None,
            "degradation_rate_threshold": None,
            "reset_timeout_jitter": 0.0,  # open for exactly 30 s
        }
    },
    "rate_limiting": {
        "limiters": {
            "svc": {
                "scopes": [
                    {"name": "user", "limit": 3, "window": 60.0},
                    {"name": "org", "limit": 5, "window": 60.0},
                    {"name": "global", "limit": 100, "window": 60.0},
                ]
            }
        }
    },
}


def test_a_plain_call_passes_every_layer(clock: bt.ManualClock) -> None:
    with make(clock, LIMITED) as infra:
        assert infra.call("svc", lambda a, b: a + b, 2, 3, context=CTX) == 5
        snap = infra.services["svc"].snapshot(now=clock.monotonic())
        assert (snap.calls, snap.errors) == (1, 0)


def test_rate_limit_refuses_with_the_scope_and_touches_nothing_after(
    clock: bt.ManualClock,
) -> None:
    with make(clock, LIMITED) as infra:
        for _ in range(3):
            infra.call("svc", lambda: None, context=CTX)
        ran = []
        with pytest.raises(bt.RateLimitExceeded) as info:
            infra.call("svc", ran.append, 1, context=CTX)
        assert ran == []
        assert info.value.scope == "user" and info.value.key == "u1"
        assert info.value.retry_after == pytest.approx(20.0)
        snap = infra.breakers["svc"].snapshot()
        assert snap.call_count == 3  # the refused call never reached the breaker
        # another user of the same org still has room in every scope
        infra.call("svc", lambda: None, context={"user_id": "u2", "org_id": "o1"})


def test_memory_pressure_refuses_first_and_consumes_no_quota(clock: bt.ManualClock) -> None:
    probe = Pressure()
    cfg = {**LIMITED, "memory_manager": {"check_interval": 1.0}}
    with make(clock, cfg, memory_probe=probe) as infra:
        probe.ratio = 0.95
        clock.advance(1.0)
        with pytest.raises(bt.LoadShedError) as info:
            infra.call("svc", lambda: None, context=CTX)
        assert info.value.reason == "memory_pressure"
        # critical work still runs, and nothing was charged by the refused calls
        for _ in range(3):
            infra.call("svc", lambda: None, context=CTX, critical=True)
        with pytest.raises(bt.RateLimitExceeded):
            infra.call("svc", lambda: None, context=CTX, critical=True)


def test_open_breaker_refuses_and_the_rate_limit_charge_is_refunded(
    clock: bt.ManualClock,
) -> None:
    with make(clock, LIMITED) as infra:
        for _ in range(2):
            with pytest.raises(ZeroDivisionError):
                infra.call("svc", lambda: 1 / 0, context={"user_id": "a", "org_id": "o"})
        assert infra.breakers["svc"].state is bt.BreakerState.OPEN
        for _ in range(5):  # more than the user's 3: every refusal was refunded
            with pytest.raises(bt.CircuitOpenError) as info:
                infra.call("svc", lambda: None, context={"user_id": "b", "org_id": "o2"})
            assert info.value.retry_after == pytest.approx(30.0)
        limiter = infra.limiters["svc"]
        assert limiter.peek({"user_id": "b", "org_id": "o2"}).remaining == 2  # after the peeked 1
        rejected = infra.services["svc"].snapshot(now=clock.monotonic()).rejected_by_reason
        assert rejected == {"CircuitOpenError": 5}


def test_pool_exhaustion_refuses_after_releasing_breaker_and_quota(tmp_path: Path) -> None:
    cfg = {
        **LIMITED,
        "connection_pools": {"svc": {"max_size": 1, "checkout_timeout": 0.05}},
    }
    db = tmp_path / "x.db"
    with bt.Infrastructure(
        "t",
        cfg,
        env={},
        pools={"svc": lambda: sqlite3.connect(db, check_same_thread=False)},
    ) as infra:
        with infra.protect("svc", context=CTX) as held:
            assert held.connection.execute("select 1").fetchone() == (1,)
            with pytest.raises(bt.PoolTimeoutError):
                infra.call("svc", lambda conn: None, context={"user_id": "u9", "org_id": "o9"})
            # the refused call's quota came back: u9 can still make 3 calls afterwards
        for _ in range(3):
            assert (
                infra.call(
                    "svc",
                    lambda conn: conn.execute("select 2").fetchone()[0],
                    context={"user_id": "u9", "org_id": "o9"},
                )
                == 2
            )
        assert infra.breakers["svc"].snapshot().probes_in_flight == 0


def test_namespaces_are_isolated(clock: bt.ManualClock) -> None:
    with (
        make(clock, LIMITED) as a,
        bt.Infrastructure("other", LIMITED, clock=clock, env={}, background=False) as b,
    ):
        for _ in range(3):
            a.call("svc", lambda: None, context=CTX)
        with pytest.raises(bt.RateLimitExceeded):
            a.call("svc", lambda: None, context=CTX)
        b.call("svc", lambda: None, context=CTX)  # same ids, separate state


def test_services_route_to_named_components_or_none(clock: bt.ManualClock) -> None:
    cfg = {
        **LIMITED,
        "services": {
            "search": {"breaker": "svc", "limiter": False},
            "admin": {"breaker": False, "limiter": "svc", "critical": True},
        },
    }
    with make(clock, cfg) as infra:
        with pytest.raises(KeyError):
            infra.call("search", lambda: {}["x"])
        assert infra.breakers["svc"].snapshot().failure_count == 1
        for _ in range(3):
            infra.call("admin", lambda: None, context=CTX)
        with pytest.raises(bt.RateLimitExceeded):
            infra.call("admin", lambda: None, context=CTX)
        with pytest.raises(bt.ConfigError, match="unknown service 'unknown-service'"):
            infra.call("unknown-service", lambda: None)
        assert "unknown-service" not in infra.services


def test_an_unknown_service_is_refused_naming_the_closest_names(clock: bt.ManualClock) -> None:
    cfg = {**LIMITED, "services": {"payments": {"breaker": "svc"}}}
    ran = []
    with make(clock, cfg) as infra:
        for way in (
            lambda: infra.call("paymnets", ran.append, 1),
            lambda: infra.protect("paymnets").__enter__(),
            lambda: infra.protected("paymnets")(ran.append)(1),
            lambda: asyncio.run(infra.call_async("paymnets", asyncio.sleep, 0)),
            lambda: infra.layers("paymnets"),
        ):
            with pytest.raises(bt.ConfigError) as info:
                way()
            assert info.value.path == "service"
            assert "unknown service 'paymnets'" in str(info.value)
            assert "did you mean 'payments'?" in str(info.value)
            assert "[services.default]" in str(info.value)  # how to admit dynamic names
        assert ran == []  # never ran unprotected
        with pytest.raises(bt.ConfigError, match=r"known: payments, svc\)") as far:
            infra.call("zzz", ran.append, 1)
        assert "did you mean" not in str(far.value)
        infra.call("payments", ran.append, 1)  # named by its table
        infra.call("svc", ran.append, 2, context=CTX)  # named like its breaker and limiter
        assert ran == [1, 2]
    with make(clock, {}) as empty, pytest.raises(bt.ConfigError, match="names none"):
        empty.call("payments", ran.append, 3)


def test_services_default_admits_every_name_with_its_choices(
    clock: bt.ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = {**LIMITED, "services": {"default": {"breaker": "svc", "limiter": False}}}
    with make(clock, cfg) as infra, caplog.at_level("WARNING", "buttress.infrastructure"):
        for tenant in ("tenant-a", "tenant-b"):
            with pytest.raises(KeyError):
                infra.call(tenant, lambda: {}["x"])
            layers = infra.layers(tenant)
            assert (layers.breaker, layers.limiter) == (infra.breakers["svc"], None)
        assert infra.breakers["svc"].state is bt.BreakerState.OPEN  # both counted there
        assert infra.services["tenant-a"].calls == 1  # instrumented under its own name
        assert "default" not in infra.services  # a template, not a service
        assert infra.layers("svc").limiter is infra.limiters["svc"]  # known names: their own
    assert not [r for r in caplog.records if "has no breaker" in r.getMessage()]
    with pytest.raises(bt.ConfigError, match=r"services\.default\.pool: names no pool 'db'"):
        make(clock, {"services": {"default": {"pool": "db"}}})


def test_a_default_breaker_serves_known_services_without_their_own(
    clock: bt.ManualClock,
) -> None:
    cfg = {
        **LIMITED,
        "circuit_breakers": {"default": {"failure_threshold": 1, "degradation_threshold": None}},
        "services": {"search": {}},
    }
    with make(clock, cfg) as infra:
        with pytest.raises(ValueError):
            infra.call("search", lambda: int("x"))  # a [services] table, no breaker of its own
        assert infra.breakers["search"].state is bt.BreakerState.OPEN
        infra.call("svc", lambda: None, context=CTX)  # a limiter's name: its own breaker
        assert infra.breakers["svc"].state is bt.BreakerState.CLOSED
        with pytest.raises(bt.ConfigError, match="unknown service 'payments'"):
            infra.call("payments", lambda: None)  # a template admits no name by itself


def test_a_default_breaker_serves_services_without_a_table(clock: bt.ManualClock) -> None:
    cfg = {
        "circuit_breakers": {"default": {"failure_threshold": 1, "degradation_threshold": None}},
        "services": {"default": {}},  # any name: each gets a breaker of its own
    }
    with make(clock, cfg) as infra:
        with pytest.raises(ValueError):
            infra.call("payments", lambda: int("x"))
        assert infra.breakers["payments"].state is bt.BreakerState.OPEN
        infra.call("search", lambda: None)  # its own breaker, still closed


def test_chaos_faults_are_injected_only_behind_the_master_switch(clock: bt.ManualClock) -> None:
    cfg = {
        "circuit_breakers": {
            "svc": {"fault_injection": {"enabled": True, "failure_rate": 1.0}},
        }
    }
    with make(clock, cfg) as infra:
        assert infra.call("svc", lambda: "real") == "real"  # chaos.enabled is false
    with make(clock, {**cfg, "chaos": {"enabled": True}}) as infra:
        with pytest.raises(bt.InjectedFault):
            infra.call("svc", lambda: "real")
        assert infra.breakers["svc"].snapshot().failure_count == 1


def test_injected_faults_count_as_failures_whatever_record_says(clock: bt.ManualClock) -> None:
    cfg = {
        "circuit_breakers": {
            "svc": {
                "record": ["builtins.ConnectionError"],  # InjectedFault is not one of these
                "failure_threshold": 3,
                "degradation_threshold": None,
                "fault_injection": {"enabled": True, "failure_rate": 1.0},
            },
        },
        "chaos": {"enabled": True},
    }
    with make(clock, cfg) as infra:
        for _ in range(3):
            with pytest.raises(bt.InjectedFault):
                infra.call("svc", lambda: "real")
        assert infra.breakers["svc"].state is bt.BreakerState.OPEN


def test_an_experiment_started_after_the_route_was_built_applies(clock: bt.ManualClock) -> None:
    # Routes are built on first use, or in __init__ for [services] entries: both before any
    # chaos target exists here. An experiment started later must still reach their calls.
    cfg = {
        "circuit_breakers": {"payments": {"failure_threshold": 100, "degradation_threshold": None}},
        "services": {"checkout": {"breaker": "payments"}, "default": {}},
        "chaos": {"enabled": True},
    }
    with make(clock, cfg) as infra:
        assert infra.call("payments", lambda: "real") == "real"  # the route exists now
        assert infra.call("search", lambda: "real") == "real"  # no breaker: its own name
        with infra.chaos.experiment("payments", failure_rate=1.0) as exp:
            with pytest.raises(bt.InjectedFault):
                infra.call("payments", lambda: "real")
            with pytest.raises(bt.InjectedFault):
                infra.call("checkout", lambda: "real")  # built in __init__, borrows payments
            with pytest.raises(bt.InjectedFault), infra.protect("payments"):
                pass

            async def main() -> None:
                async def work() -> str:
                    return "real"

                with pytest.raises(bt.InjectedFault):
                    await infra.call_async("checkout", work)

            asyncio.run(main())
            assert exp.calls == 4
        assert infra.call("checkout", lambda: "real") == "real"  # it ended
        with infra.chaos.experiment("search", latency=2.0) as exp:
            before = clock.monotonic()
            assert infra.call("search", lambda: "real") == "real"
            assert clock.monotonic() - before == pytest.approx(2.0)
            assert exp.injected_delays == 1


class StallingClock(bt.ManualClock):
    """A manual clock on which an injected delay never ends: a sync sleep is interrupted
    (as by Ctrl-C), an async one waits until its task is cancelled."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeping = asyncio.Event()

    def sleep(self, seconds: float) -> None:
        raise KeyboardInterrupt

    async def asleep(self, seconds: float) -> None:
        self.sleeping.set()
        await asyncio.get_running_loop().create_future()  # until cancelled


HALF_OPEN = {
    "circuit_breakers": {
        "db": {
            "failure_threshold": 1,
            "degradation_threshold": None,
            "failure_rate_threshold": None,
            "degradation_rate_threshold": None,
            "reset_timeout": 1.0,
            "reset_timeout_jitter": 0.0,  # half-open exactly 1 s later
            "half_open_max_calls": 1,
        }
    },
    "rate_limiting": {"limiters": {"db": {"scopes": [{"name": "user", "limit": 5}]}}},
    "chaos": {"enabled": True},
}


def _fail(conn: object) -> None:
    raise ConnectionError("down")


def test_a_call_interrupted_in_the_injected_delay_gives_everything_back() -> None:
    clock = StallingClock()
    cfg = {**HALF_OPEN, "connection_pools": {"db": {"min_size": 1, "max_size": 1}}}
    members = iter(range(100))
    with make(clock, cfg, pools={"db": lambda: f"conn{next(members)}"}) as infra:
        infra.run_maintenance()  # connects the member (no background thread here)
        limiter, breaker, pool = infra.limiters["db"], infra.breakers["db"], infra.pools["db"]
        with pytest.raises(ConnectionError):
            infra.call("db", _fail, rate_key="u1")
        clock.advance(1.0)  # open -> half_open on the next call: one probe permit
        remaining = limiter.peek("u1").remaining
        with infra.chaos.experiment("db", latency=5.0), pytest.raises(KeyboardInterrupt):
            infra.call("db", lambda conn: conn, rate_key="u1")
        assert limiter.peek("u1").remaining == remaining  # the charge was refunded
        assert pool.snapshot().in_use == 0  # the lease went back
        assert infra.call("db", lambda conn: conn, rate_key="u1") == "conn0"  # the permit too
        assert breaker.state is bt.BreakerState.CLOSED


async def reached(point: asyncio.Event, call: asyncio.Task[Any]) -> None:
    """Wait until ``call`` reaches ``point``; fail, rather than wait for ever, if the call
    ends first (refused by a breaker still open, say)."""
    waiter = asyncio.ensure_future(point.wait())
    await asyncio.wait({waiter, call}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if not point.is_set():
        ended = "cancelled" if call.cancelled() else repr(call.exception() or call.result())
        raise AssertionError(f"the call ended ({ended}) before it got there")


def test_an_async_call_cancelled_in_the_injected_delay_gives_everything_back() -> None:
    clock = StallingClock()
    cfg = {**HALF_OPEN, "connection_pools": {"db": {"min_size": 1, "max_size": 1, "async": True}}}
    members = iter(range(100))

    async def make_member() -> str:
        return f"conn{next(members)}"

    async def echo(conn: str) -> str:
        return conn

    async def main() -> None:
        async with make(clock, cfg, pools={"db": make_member}) as infra:
            assert infra.async_scheduler is not None
            await infra.async_scheduler.run_due()  # connects the member
            limiter, breaker = infra.limiters["db"], infra.breakers["db"]
            with pytest.raises(ConnectionError):
                await infra.call_async("db", _async_fail, rate_key="u1")
            clock.advance(1.0)
            remaining = limiter.peek("u1").remaining
            with infra.chaos.experiment("db", latency=5.0):
                task = asyncio.create_task(infra.call_async("db", echo, rate_key="u1"))
                await reached(clock.sleeping, task)  # the call holds everything, in the delay
                assert infra.async_pools["db"].snapshot().in_use == 1
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            assert limiter.peek("u1").remaining == remaining
            assert infra.async_pools["db"].snapshot().in_use == 0
            assert await infra.call_async("db", echo, rate_key="u1") == "conn0"
            assert breaker.state is bt.BreakerState.CLOSED

    asyncio.run(main())


def test_a_call_interrupted_in_the_breaker_step_is_refunded(
    clock: bt.ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    with make(clock, LIMITED) as infra:
        breaker, limiter = infra.breakers["svc"], infra.limiters["svc"]

        def interrupted(critical: bool) -> Any:
            raise KeyboardInterrupt

        async def cancelled(critical: bool) -> Any:
            raise asyncio.CancelledError

        # Before the first call: the route binds breaker.begin when it is built.
        monkeypatch.setattr(breaker, "begin", interrupted)
        monkeypatch.setattr(breaker, "begin_async", cancelled)
        remaining = limiter.peek(CTX).remaining
        with pytest.raises(KeyboardInterrupt):
            infra.call("svc", lambda: None, context=CTX)

        async def main() -> None:
            with pytest.raises(asyncio.CancelledError):
                await infra.call_async("svc", asyncio.sleep, 0, context=CTX)

        asyncio.run(main())
        assert limiter.peek(CTX).remaining == remaining
        assert infra.services["svc"].snapshot(now=clock.monotonic()).rejected == 0


async def _async_fail(conn: object) -> None:
    raise ConnectionError("down")


def test_protect_context_manager_sync_and_async(clock: bt.ManualClock) -> None:
    with make(clock, LIMITED) as infra:
        with infra.protect("svc", context=CTX) as guard:
            assert guard.connection is None
        with pytest.raises(RuntimeError), infra.protect("svc", context=CTX):
            raise RuntimeError("boom")
        assert infra.breakers["svc"].snapshot().failure_count == 1

    async def main() -> None:
        async with make(clock, LIMITED) as ainfra:
            async with ainfra.protect("svc", context=CTX):
                pass

            async def work(x: int) -> int:
                await asyncio.sleep(0)  # real-time: one event-loop turn, no time passes
                return x + 1

            assert await ainfra.call_async("svc", work, 1, context=CTX) == 2
            assert await ainfra.call_async("svc", work, 2, context=CTX) == 3  # the user's 3rd
            with pytest.raises(bt.RateLimitExceeded):
                await ainfra.call_async("svc", work, 1, context=CTX)

    asyncio.run(main())


def test_protected_decorator_with_key_functions(clock: bt.ManualClock) -> None:
    with make(clock, LIMITED) as infra:

        @infra.protected("svc", context=lambda user, org: {"user_id": user, "org_id": org})
        def fetch(user: str, org: str) -> str:
            return f"{user}@{org}"

        assert fetch("u1", "o1") == "u1@o1"
        assert fetch("u1", "o1") == "u1@o1"
        assert fetch("u1", "o1") == "u1@o1"
        with pytest.raises(bt.RateLimitExceeded):
            fetch("u1", "o1")
        assert fetch("u2", "o1") == "u2@o1"


def test_protected_passes_the_functions_own_arguments_through(clock: bt.ManualClock) -> None:
    # The wrapped function may have parameters named like call()'s options.
    cfg = {"rate_limiting": {"limiters": {"shop": {"scopes": [{"name": "user", "limit": 5}]}}}}
    with make(clock, cfg) as infra:

        @infra.protected("shop", rate_key=lambda item, **kw: kw.get("rate_key", "anon"))
        def price(
            item: str,
            cost: int = 0,
            context: Any = None,
            critical: Any = None,
            rate_key: Any = None,
        ) -> tuple[Any, ...]:
            return item, cost, context, critical, rate_key

        assert price("socks", cost=3, context="c", critical="x", rate_key="u1") == (
            "socks",
            3,
            "c",
            "x",
            "u1",
        )
        # charged the decorator's cost (1) to the key the decorator's rate_key chose, not 3
        assert infra.limiters["shop"].peek("u1").remaining == 5 - 1 - 1  # after the peeked 1

        @infra.protected("shop", rate_key="u2")
        async def aprice(item: str, *, cost: int = 0, context: Any = None) -> tuple[Any, ...]:
            return item, cost, context

        assert asyncio.run(aprice("hat", cost=4, context={"user_id": "x"})) == (
            "hat",
            4,
            {"user_id": "x"},
        )
        assert infra.limiters["shop"].peek("u2").remaining == 3


def test_generator_functions_are_refused_not_left_unguarded(clock: bt.ManualClock) -> None:
    # A generator's body runs as it is iterated, after the call returned: the breaker would
    # never see its errors and a pooled connection would be back in the pool meanwhile.
    cfg = {
        **LIMITED,
        "rate_limiting": {"limiters": {"svc": {"scopes": [{"name": "user", "limit": 5}]}}},
        "connection_pools": {"svc": {"min_size": 1, "max_size": 1}},
        "services": {"feed": {"breaker": "svc", "limiter": "svc", "pool": False}},  # asyncio
    }
    with make(clock, cfg, pools={"svc": lambda: "conn"}) as infra:
        infra.run_maintenance()  # connects the member

        def rows(conn: str) -> Any:
            yield conn
            raise ConnectionError("went away mid-stream")

        async def arows(conn: str) -> Any:
            yield conn

        for fn in (rows, arows):
            with pytest.raises(TypeError, match=rf"cannot guard .*{fn.__name__}: .*generator"):
                infra.protected("svc")(fn)

        async def work(conn: str) -> str:
            return conn

        remaining = infra.limiters["svc"].peek("u1").remaining
        for fn in (rows, arows, work):  # call() on a lazy result: refused, nothing kept
            with pytest.raises(TypeError, match=rf"{fn.__name__} returned an? "):
                infra.call("svc", fn, rate_key="u1")

        async def main() -> None:
            with pytest.raises(TypeError, match="arows returned an async generator"):
                await infra.call_async("feed", arows, "conn", rate_key="u1")
            assert await infra.call_async("feed", work, "conn", rate_key="u1") == "conn"

        asyncio.run(main())
        assert infra.limiters["svc"].peek("u1").remaining == remaining - 1  # only `work`
        assert infra.pools["svc"].snapshot().in_use == 0
        snap = infra.breakers["svc"].snapshot()
        assert (snap.call_count, snap.failure_count) == (1, 0)


def test_rate_key_on_a_limiter_of_shared_scopes_says_it_takes_no_id(
    clock: bt.ManualClock,
) -> None:
    cfg = {"rate_limiting": {"limiters": {"api": {"limit": 100}}}}  # one scope: global
    with make(clock, cfg) as infra:
        for key in ("user-1", 7):
            with pytest.raises(bt.ConfigError) as info:
                infra.call("api", lambda: "ok", rate_key=key)
            assert info.value.path == "key"
            assert info.value.message == (
                "limiter 'api' has only shared scopes (global): it takes no id; pass None "
                "(through Infrastructure, drop rate_key)"
            )
        assert infra.call("api", lambda: "ok") == "ok"  # no key: the global scope counts it
        assert infra.call("api", lambda: "ok", context=CTX) == "ok"  # its ids: not needed
        with pytest.raises(bt.ConfigError, match="it takes no id"):  # refused, not ignored
            infra.call("api", lambda: "ok", context=CTX, rate_key="k")
        assert infra.limiters["api"].peek().remaining == 100 - 2 - 1  # after the peeked 1


def test_async_pool_service(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    cfg = {"connection_pools": {"db": {"async": True, "max_size": 2}}}

    async def main() -> None:
        async with bt.Infrastructure(
            "t", cfg, env={}, pools={"db": lambda: sqlite3.connect(db, check_same_thread=False)}
        ) as infra:

            async def query(conn: sqlite3.Connection) -> int:
                return int(conn.execute("select 7").fetchone()[0])

            assert await infra.call_async("db", query) == 7
            with pytest.raises(RuntimeError, match="async pool"):
                infra.call("db", lambda conn: None)
            assert infra.health().connection_pools["db"].checkouts == 1

    asyncio.run(main())


def test_an_async_pool_service_before_astart_is_refused_clearly(clock: bt.ManualClock) -> None:
    cfg = {
        "connection_pools": {"db": {"async": True, "max_size": 1}},
        "rate_limiting": {"limiters": {"db": {"scopes": [{"name": "user", "limit": 5}]}}},
    }
    ran: list[tuple[Any, ...]] = []

    async def query(*args: Any) -> None:
        ran.append(args)

    async def make_member() -> str:
        return "conn"

    async def main(infra: bt.Infrastructure) -> None:
        with pytest.raises(RuntimeError, match=r"async pool 'db', which is not open.*astart"):
            await infra.call_async("db", query, 42, rate_key="u1")
        with pytest.raises(RuntimeError, match="not open"):
            async with infra.protect("db", rate_key="u1"):
                ran.append(("body",))

    with make(clock, cfg, pools={"db": make_member}) as infra:  # plain `with`: sync start only
        remaining = infra.limiters["db"].peek("u1").remaining
        asyncio.run(main(infra))
        assert ran == []  # never called without its connection
        assert infra.limiters["db"].peek("u1").remaining == remaining  # charges refunded


def test_instrument_functions_classes_and_cache_hits(clock: bt.ManualClock) -> None:
    with make(clock, {}) as infra:

        @infra.instrument("catalog")
        def lookup(k: str) -> str:
            clock.advance(0.002)
            if k == "missing":
                raise KeyError(k)
            return k

        @infra.instrument("repo")
        class Repo:
            def get(self) -> int:
                clock.advance(0.010)
                return 1

            async def aget(self) -> int:
                clock.advance(0.020)
                return 2

            def _private(self) -> None:
                pass

        lookup("a")
        with pytest.raises(KeyError):
            lookup("missing")
        infra.cache_hit("catalog")
        infra.cache_hit("catalog")
        infra.cache_miss("catalog")
        repo = Repo()
        assert repo.get() == 1
        assert asyncio.run(repo.aget()) == 2
        clock.advance(1.0)
        cat = infra.services["catalog"].snapshot(now=clock.monotonic())
        assert (cat.calls, cat.errors, cat.errors_by_type) == (2, 1, {"KeyError": 1})
        assert cat.latency_p50 == pytest.approx(0.002, rel=0.01)
        assert cat.cache_hit_ratio == pytest.approx(2 / 3)
        rep = infra.services["repo"].snapshot(now=clock.monotonic())
        assert rep.calls == 2
        assert rep.latency_max == pytest.approx(0.020)
        assert rep.throughput == pytest.approx(2 / 1.034)  # over the 1.034 s it was observed
        with pytest.raises(bt.ConfigError, match="unknown metric 'speed'"):
            infra.instrument("x", metrics=["latency", "speed"])


def test_close_stops_everything_and_is_idempotent(tmp_path: Path) -> None:
    infra = bt.Infrastructure(
        "t",
        {"connection_pools": {"db": {"min_size": 1}}, "memory_manager": {"check_interval": 5.0}},
        env={},
        pools={"db": lambda: sqlite3.connect(tmp_path / "c.db", check_same_thread=False)},
    )
    infra.start()
    infra.close()
    infra.close()
    assert infra.pools["db"].closed
    assert infra.scheduler.closed
    with pytest.raises(RuntimeError, match="closed"):
        infra.start()


@pytest.mark.parametrize(
    ("config", "path"),
    [
        (
            {"circuit_breakers": {"svc": {"failure_threshold": 0}}},
            "circuit_breakers.svc.failure_threshold",
        ),
        ({"circuit_breakers": {"svc": {"colour": "red"}}}, "circuit_breakers.svc.colour"),
        (
            {"circuit_breakers": {"svc": {"degradation_threshold": 5, "failure_threshold": 5}}},
            "circuit_breakers.svc.degradation_threshold",
        ),
        (
            {"rate_limiting": {"limiters": {"api": {"scopes": [{"name": "u", "limit": -1}]}}}},
            "rate_limiting.limiters.api.scopes[0].limit",
        ),
        (
            {
                "rate_limiting": {
                    "limiters": {
                        "api": {"scopes": [{"name": "u", "limit": 1, "algorithm": "leaky"}]}
                    }
                }
            },
            "rate_limiting.limiters.api.scopes[0].algorithm",
        ),
        ({"connection_pools": {"db": {"max_size": 0}}}, "connection_pools.db.max_size"),
        ({"connection_pools": {"db": {}}}, "connection_pools.db.factory"),
        (
            {"connection_pools": {"db": {"factory": "nowhere:connect"}}},
            "connection_pools.db.factory",
        ),
        (  # the policy's own rule, named where the policy names it
            {"memory_manager": {"warning_threshold": 0.9}},
            "memory_manager.critical_threshold",
        ),
        ({"services": {"x": {"breaker": "missing"}}}, "services.x.breaker"),
        ({"chaos": {"enabled": "maybe"}}, "chaos.enabled"),
    ],
)
def test_config_errors_name_the_path(config: dict[str, Any], path: str) -> None:
    with pytest.raises(bt.ConfigError) as info:
        bt.Infrastructure("t", config, env={}, background=False)
    assert info.value.path == path, str(info.value)


def test_sqlite_backend_limits_survive_a_restart(tmp_path: Path) -> None:
    cfg = {
        "rate_limiting": {
            "backend": f"sqlite://{tmp_path / 'limits.db'}",
            "limiters": {"api": {"scopes": [{"name": "user", "limit": 3, "window": 3600.0}]}},
        },
        "memory_manager": {"enabled": False},
    }
    with bt.Infrastructure("app", cfg, env={}, background=False) as first:
        first.call("api", lambda: None, context={"user_id": "u1"})
        first.call("api", lambda: None, context={"user_id": "u1"})
    with bt.Infrastructure("app", cfg, env={}, background=False) as second:
        second.call("api", lambda: None, context={"user_id": "u1"})
        with pytest.raises(bt.RateLimitExceeded):
            second.call("api", lambda: None, context={"user_id": "u1"})


def test_namespaces_are_isolated_on_redis(redis_url: str) -> None:
    cfg = {
        "rate_limiting": {
            "backend": redis_url,
            "limiters": {"api": {"scopes": [{"name": "user", "limit": 2, "window": 60.0}]}},
        },
        "memory_manager": {"enabled": False},
    }
    from buttress.testing import isolated_infrastructure

    with isolated_infrastructure(cfg) as a, isolated_infrastructure(cfg) as b:
        for _ in range(2):
            a.call("api", lambda: None, context={"user_id": "same"})
        with pytest.raises(bt.RateLimitExceeded):
            a.call("api", lambda: None, context={"user_id": "same"})
        b.call("api", lambda: None, context={"user_id": "same"})  # its own namespace, own keys
        assert a.health().rate_limiters["api"].backend_status == "ok"


def test_a_closed_infrastructure_protects_no_more_calls(clock: bt.ManualClock) -> None:
    infra = make(clock, LIMITED)
    with infra:
        infra.call("svc", lambda: None, context=CTX)
    for service in ("svc", "never-seen"):
        with pytest.raises(bt.InfrastructureClosedError, match="is closed"):
            infra.call(service, lambda: None, context=CTX)
        with pytest.raises(bt.InfrastructureClosedError):
            infra.protect(service, context=CTX)

    async def main() -> None:
        with pytest.raises(bt.InfrastructureClosedError):
            await infra.call_async("svc", asyncio.sleep, 0, context=CTX)

    asyncio.run(main())


def test_instrument_checks_its_metrics_and_publishes_their_union(clock: bt.ManualClock) -> None:
    with make(clock, LIMITED) as infra:
        infra.call("svc", lambda: None, context=CTX)  # the service exists, with every metric
        with pytest.raises(bt.ConfigError, match="unknown metric 'bogus'"):
            infra.instrument("svc", metrics=["bogus"])
        infra.instrument("fresh", metrics=["latency"])
        infra.instrument("fresh", metrics=["errors", "latency"])
        assert infra.services["fresh"].metrics == ("latency", "errors")


def test_a_service_nothing_protects_is_reported_once(
    clock: bt.ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    # Admitted by services.default, which gives it nothing: still reported, once.
    cfg = {**LIMITED, "services": {"default": {}}}
    with make(clock, cfg) as infra, caplog.at_level("WARNING", "buttress.infrastructure"):
        infra.call("svc", lambda: None, context=CTX)  # configured: no warning
        infra.call("sevrice", lambda: None)
        infra.call("sevrice", lambda: None)
    warnings = [r.getMessage() for r in caplog.records if "has no breaker" in r.getMessage()]
    assert len(warnings) == 1 and "'sevrice'" in warnings[0]


class Conn:
    """A pooled member that records whether it was closed."""

    def __init__(self, made: list[Conn]) -> None:
        self.closed = False
        made.append(self)

    def close(self) -> None:
        self.closed = True


def test_memory_pressure_trims_idle_pool_members_down_to_min_size(clock: bt.ManualClock) -> None:
    probe = Pressure()
    cfg = {
        "connection_pools": {"db": {"min_size": 1, "max_size": 5}},
        "memory_manager": {"check_interval": 1.0},
    }
    made: list[Conn] = []
    with make(clock, cfg, memory_probe=probe, pools={"db": lambda: Conn(made)}) as infra:
        pool = infra.pools["db"]
        leases = []
        for _ in range(4):
            with contextlib.suppress(bt.PoolTimeoutError):
                pool.connection(timeout=0).__enter__()  # no member yet: books a connect
            infra.run_maintenance()  # connects it
            lease = pool.connection(timeout=0)
            lease.__enter__()
            leases.append(lease)
        assert len(made) == 4
        for lease in leases[1:]:
            lease.__exit__(None, None, None)  # three idle, one still in use
        assert pool.snapshot().idle == 3
        probe.ratio = 0.75  # warning
        clock.advance(1.0)
        infra.run_maintenance()
        stats = pool.snapshot()
        assert (stats.size, stats.idle, stats.in_use) == (1, 0, 1)  # in use is left alone
        assert stats.evictions == {"memory_pressure": 3}
        assert [c.closed for c in made] == [False, True, True, True]
        leases[0].__exit__(None, None, None)
        assert pool.snapshot().idle == 1


async def test_memory_pressure_trims_asyncio_pools_on_their_loop(clock: bt.ManualClock) -> None:
    probe = Pressure()
    cfg = {
        "connection_pools": {"db": {"async": True, "min_size": 0, "max_size": 5}},
        "memory_manager": {"check_interval": 1.0},
    }
    made: list[Conn] = []
    infra = make(clock, cfg, memory_probe=probe, pools={"db": lambda: Conn(made)})
    await infra.astart()
    try:
        pool = infra.async_pools["db"]
        scheduler = infra.async_scheduler
        assert scheduler is not None
        leases = []
        for _ in range(2):
            with contextlib.suppress(bt.PoolTimeoutError):
                await pool.connection(timeout=0).__aenter__()  # books a connect
            await scheduler.run_due()  # connects it
            lease = pool.connection(timeout=0)
            await lease.__aenter__()
            leases.append(lease)
        for lease in leases:
            await lease.__aexit__(None, None, None)
        assert (pool.snapshot().size, pool.snapshot().idle) == (2, 2)
        probe.ratio = 0.75  # warning
        clock.advance(1.0)
        infra.run_maintenance()  # samples memory: the trim is booked on the loop's scheduler
        assert pool.snapshot().size == 2  # not touched from the sampling side
        await scheduler.run_due()  # trims
        await scheduler.run_due()  # closes
        assert pool.snapshot().size == 0
        assert pool.snapshot().evictions == {"memory_pressure": 2}
        assert [c.closed for c in made] == [True, True]
    finally:
        await infra.aclose()


class AsyncConn:
    """An asyncio driver's connection: execute() and close() are coroutines."""

    def __init__(self, made: list[AsyncConn]) -> None:
        self.alive = True
        self.closed = False
        self.ran: list[str] = []
        made.append(self)

    async def execute(self, sql: str) -> None:
        await asyncio.sleep(0)  # real-time: one loop turn, as a driver's I/O would yield
        if not self.alive:
            raise ConnectionError("server closed the connection")
        self.ran.append(sql)

    async def close(self) -> None:
        await asyncio.sleep(0)  # real-time: one loop turn, as a driver's I/O would yield
        self.closed = True


async def test_an_async_pool_from_config_awaits_check_sql_and_the_default_close(
    clock: bt.ManualClock,
) -> None:
    cfg = {
        "connection_pools": {
            "db": {
                "async": True,
                "min_size": 2,
                "max_size": 2,
                "check_sql": "SELECT 1",
                "health_check_strategy": "mixed",
                "check_idle_after": 0.0,
            }
        },
        "memory_manager": {"enabled": False},
    }
    made: list[AsyncConn] = []

    async def connect() -> AsyncConn:
        return AsyncConn(made)

    async def use(conn: AsyncConn) -> AsyncConn:
        return conn

    infra = make(clock, cfg, pools={"db": connect})
    await infra.astart()
    try:
        scheduler = infra.async_scheduler
        assert scheduler is not None
        await scheduler.run_due()
        await scheduler.run_due()  # both members connected
        first = await infra.call_async("db", use)
        assert first.ran == ["SELECT 1"]  # the check ran, awaited, before it was lent
        first.alive = False  # the server dropped it while idle
        clock.advance(1.0)
        second = await infra.call_async("db", use)
        assert second is not first  # the check caught it: never lent
        assert infra.async_pools["db"].snapshot().check_failures == 1
        await scheduler.run_due()  # the closer
        assert first.closed  # its coroutine close() was awaited, not dropped
    finally:
        await infra.aclose()
    assert all(c.closed for c in made)


class DbConn:
    """A DB-API-like member that a disconnect kills: every later use raises."""

    def __init__(self, made: list[DbConn]) -> None:
        self.alive = True
        self.closed = False
        made.append(self)

    def execute(self, sql: str) -> str:
        if not self.alive:
            raise sqlite3.OperationalError("server closed the connection unexpectedly")
        return sql

    def close(self) -> None:
        self.closed = True


def test_invalidate_on_from_config_lets_a_pool_recover_from_dead_connections(
    clock: bt.ManualClock,
) -> None:
    cfg = {
        "connection_pools": {
            "db": {"min_size": 2, "max_size": 2, "invalidate_on": ["sqlite3.OperationalError"]}
        },
        "services": {"db": {"breaker": False, "limiter": False}},
        "memory_manager": {"enabled": False},
    }
    made: list[DbConn] = []
    with make(clock, cfg, pools={"db": lambda: DbConn(made)}) as infra:
        pool = infra.pools["db"]
        infra.run_maintenance()
        infra.run_maintenance()  # both members connected
        assert pool.snapshot().idle == 2
        for conn in made:
            conn.alive = False  # the database restarted: both are dead
        with pytest.raises(sqlite3.OperationalError):
            infra.call("db", lambda conn: conn.execute("SELECT 1"))
        stats = pool.snapshot()
        assert stats.invalidations == 1
        assert stats.size == 0  # the failing member and the older idle one: both retired
        infra.run_maintenance()
        infra.run_maintenance()  # replacements connected
        assert infra.call("db", lambda conn: conn.execute("SELECT 1")) == "SELECT 1"
        assert [c.closed for c in made] == [True, True, False, False]


DOWN = {
    "circuit_breakers": {
        "db": {
            "failure_threshold": 2,
            "degradation_threshold": None,
            "failure_rate_threshold": None,
            "degradation_rate_threshold": None,
        }
    },
    "rate_limiting": {"limiters": {"db": {"scopes": [{"name": "user", "limit": 5}]}}},
    # 1 ms: a checkout that nothing can serve times out at once (real time, nothing to wake it)
    "connection_pools": {"db": {"min_size": 1, "max_size": 1, "checkout_timeout": 0.001}},
    "memory_manager": {"enabled": False},
}


def _refused() -> Any:
    raise ConnectionRefusedError("connection refused: is the server running?")


def test_a_pool_that_cannot_connect_trips_the_breaker_a_busy_one_does_not(
    clock: bt.ManualClock,
) -> None:
    with make(clock, DOWN, pools={"db": _refused}) as infra:
        breaker, limiter = infra.breakers["db"], infra.limiters["db"]
        infra.run_maintenance()  # the min_size connect fails
        assert infra.pools["db"].snapshot().connect_failures == 1
        for _ in range(2):
            with pytest.raises(bt.PoolTimeoutError) as info:
                infra.call("db", lambda conn: conn, rate_key="u1")
            assert isinstance(info.value.connect_error, ConnectionRefusedError)
        snap = breaker.snapshot()
        assert (snap.state, snap.failure_count) == (bt.BreakerState.OPEN, 2)
        with pytest.raises(bt.CircuitOpenError):  # refused at once, no checkout_timeout wait
            infra.call("db", lambda conn: conn, rate_key="u1")
        assert limiter.peek("u1").remaining == 5 - 1  # every refusal refunded (after the peek)
        rejected = infra.services["db"].snapshot(now=clock.monotonic()).rejected_by_reason
        assert rejected == {"PoolTimeoutError": 2, "CircuitOpenError": 1}

    with make(clock, DOWN, pools={"db": lambda: "conn"}) as infra:
        infra.run_maintenance()  # connected
        with infra.protect("db", rate_key="u1") as held:
            assert held.connection == "conn"
            for _ in range(3):  # busy, not down: neutral, as before
                with pytest.raises(bt.PoolTimeoutError) as info:
                    infra.call("db", lambda conn: conn, rate_key="u2")
                assert info.value.connect_error is None
        snap = infra.breakers["db"].snapshot()
        assert (snap.state, snap.failure_count, snap.probes_in_flight) == (
            bt.BreakerState.CLOSED,
            0,
            0,
        )


def test_a_pool_that_never_queues_and_cannot_connect_trips_the_breaker_too(
    clock: bt.ManualClock,
) -> None:
    pools = {"db": {**DOWN["connection_pools"]["db"], "max_waiting": 0}}
    cfg = {**DOWN, "connection_pools": pools}
    with make(clock, cfg, pools={"db": _refused}) as infra:
        infra.run_maintenance()  # the min_size connect fails
        for _ in range(2):  # refused at once (max_waiting=0), while connecting keeps failing
            with pytest.raises(bt.PoolTimeoutError, match="connecting keeps failing") as info:
                infra.call("db", lambda conn: conn, rate_key="u1")
            assert isinstance(info.value.connect_error, ConnectionRefusedError)
        assert infra.breakers["db"].state is bt.BreakerState.OPEN
    with make(clock, cfg, pools={"db": lambda: "conn"}) as infra:
        infra.run_maintenance()  # connected
        with infra.protect("db", rate_key="u1"):
            with pytest.raises(bt.PoolTimeoutError) as info:  # busy: neutral
                infra.call("db", lambda conn: conn, rate_key="u2")
            assert info.value.connect_error is None
        assert infra.breakers["db"].snapshot().failure_count == 0


def test_a_connect_error_the_breaker_does_not_record_stays_neutral(
    clock: bt.ManualClock,
) -> None:
    cfg = {**DOWN, "circuit_breakers": {"db": {**DOWN["circuit_breakers"]["db"]}}}
    cfg["circuit_breakers"]["db"]["record"] = ["builtins.TimeoutError"]
    with make(clock, cfg, pools={"db": _refused}) as infra:
        infra.run_maintenance()
        for _ in range(3):
            with pytest.raises(bt.PoolTimeoutError):
                infra.call("db", lambda conn: conn, rate_key="u1")
        snap = infra.breakers["db"].snapshot()
        assert (snap.state, snap.failure_count, snap.call_count) == (
            bt.BreakerState.CLOSED,
            0,
            0,
        )


async def test_an_async_pool_that_cannot_connect_trips_the_breaker(
    clock: bt.ManualClock,
) -> None:
    cfg = {**DOWN, "connection_pools": {"db": {**DOWN["connection_pools"]["db"], "async": True}}}

    async def refused() -> Any:
        _refused()

    async def use(conn: Any) -> Any:
        return conn

    infra = make(clock, cfg, pools={"db": refused})
    await infra.astart()
    try:
        assert infra.async_scheduler is not None
        await infra.async_scheduler.run_due()  # the min_size connect fails
        for _ in range(2):
            with pytest.raises(bt.PoolTimeoutError):
                await infra.call_async("db", use, rate_key="u1")
        assert infra.breakers["db"].state is bt.BreakerState.OPEN
        with pytest.raises(bt.CircuitOpenError):
            await infra.call_async("db", use, rate_key="u1")
        assert infra.limiters["db"].peek("u1").remaining == 5 - 1
    finally:
        await infra.aclose()


def test_the_rate_limit_decision_gives_headers_for_a_429_and_a_200(clock: bt.ManualClock) -> None:
    from buttress.http import rate_limit_headers

    with make(clock, {**LIMITED, "services": {"unlimited": {}}}) as infra:
        with infra.protect("svc", context=CTX) as guard:
            assert guard.decision is not None and guard.decision.allowed
            headers = rate_limit_headers(guard.decision)
        assert headers == {
            "RateLimit-Policy": '"user";q=3;w=60, "org";q=5;w=60, "global";q=100;w=60',
            "RateLimit": '"user";r=2;t=20, "org";r=4;t=12, "global";r=99;t=1',
        }
        infra.call("svc", lambda: None, context=CTX)
        infra.call("svc", lambda: None, context=CTX)
        with pytest.raises(bt.RateLimitExceeded) as info:
            infra.call("svc", lambda: None, context=CTX)
        d = info.value.decision
        assert d is not None and not d.allowed and d.scope == "user"
        headers = rate_limit_headers(d)
        assert headers["Retry-After"] == "20"  # whole seconds, rounded up
        assert headers["RateLimit"].startswith('"user";r=0;t=60')

        async def main() -> None:
            with pytest.raises(bt.RateLimitExceeded) as info:
                await infra.call_async("svc", asyncio.sleep, 0, context=CTX)
            assert info.value.decision is not None
            assert rate_limit_headers(info.value.decision)["Retry-After"] == "20"
            async with infra.protect("svc", context={"user_id": "u2", "org_id": "o2"}) as g:
                assert g.decision is not None
                assert rate_limit_headers(g.decision)["RateLimit"].startswith('"user";r=2;')

        asyncio.run(main())
        with infra.protect("unlimited") as guard:  # no limiter: no decision
            assert guard.decision is None
    assert bt.RateLimitExceeded("user").decision is None  # raised by anything else
    limiter = bt.RateLimiter(bt.Scope("user", 1, 60.0), clock=clock)
    limiter.try_acquire("u1")
    with pytest.raises(bt.RateLimitExceeded) as info:
        limiter.acquire("u1", timeout=1.0)  # the limiter's own refusals carry theirs too
    assert info.value.decision is not None and info.value.decision.retry_after == 60.0


def test_rate_key_beside_a_context_that_no_scope_reads_is_refused_not_ignored(
    clock: bt.ManualClock,
) -> None:
    cfg = {
        "rate_limiting": {
            "limiters": {
                "config": {"limit": 100, "hierarchical": True},  # user, org, global
                "per_path": {
                    "scopes": [
                        {"name": "user", "limit": 100},
                        {"name": "path", "limit": 2, "by": "key"},  # reads rate_key
                    ]
                },
            }
        },
        "memory_manager": {"enabled": False},
    }
    with make(clock, cfg) as infra:
        message = (
            "rate_key: service 'config': no scope of limiter 'config' reads rate_key (it reads "
            "'org', 'user' from the context); beside a context, rate_key fills only a scope "
            'with by = "key". Drop rate_key, or give the limiter such a scope (e.g. {name = '
            '"per_key", limit = ..., by = "key"}) to limit per key as well'
        )
        remaining = infra.limiters["config"].peek(CTX).remaining
        with pytest.raises(bt.ConfigError) as info:
            infra.call("config", lambda: "v", rate_key=("config_get", "a"), context=CTX)
        assert str(info.value) == message
        with pytest.raises(bt.ConfigError, match="reads rate_key"):
            infra.protect("config", rate_key="a", context=CTX)

        @infra.protected("config", rate_key=lambda path: path, context=lambda path: CTX)
        def get(path: str) -> str:
            return path

        with pytest.raises(bt.ConfigError, match="reads rate_key"):
            get("a")

        async def main() -> None:
            with pytest.raises(bt.ConfigError, match="reads rate_key"):
                await infra.call_async("config", asyncio.sleep, 0, rate_key="a", context=CTX)

        asyncio.run(main())
        assert infra.limiters["config"].peek(CTX).remaining == remaining  # nothing charged
        assert infra.call("config", lambda: "v", context=CTX) == "v"
        for _ in range(2):  # a scope that reads it: limited per path
            infra.call("per_path", lambda: "v", rate_key=("config_get", "a"), context=CTX)
        with pytest.raises(bt.RateLimitExceeded) as refused:
            infra.call("per_path", lambda: "v", rate_key=("config_get", "a"), context=CTX)
        assert (refused.value.scope, refused.value.key) == ("path", "config_get:a")
        infra.call("per_path", lambda: "v", rate_key=("config_get", "b"), context=CTX)


def test_call_async_given_a_plain_function_says_to_use_call(clock: bt.ManualClock) -> None:
    cfg = {
        **LIMITED,
        "connection_pools": {"db": {"async": True, "min_size": 1, "max_size": 1}},
        "services": {"db": {"breaker": False, "limiter": False}},
    }

    async def connect() -> str:
        return "conn"

    ran: list[Any] = []

    def plain(*args: Any) -> str:
        ran.append(args)
        return "sync result"

    async def main() -> None:
        async with make(clock, cfg, pools={"db": connect}) as infra:
            assert infra.async_scheduler is not None
            await infra.async_scheduler.run_due()
            with pytest.raises(TypeError) as info:
                await infra.call_async("svc", plain, 1, context=CTX)
            assert str(info.value) == (
                "test_call_async_given_a_plain_function_says_to_use_call.<locals>.plain "
                "returned 'str', which call_async() cannot await: it is not a coroutine "
                "function; make it `async def`, or protect a plain function with call() (or "
                "`with infra.protect('svc')`). (It ran, and was counted as a call.)"
            )
            assert info.value.__cause__ is None and info.value.__suppress_context__
            with pytest.raises(TypeError, match=r"returned 'NoneType'.*from an async pool"):
                await infra.call_async("db", lambda conn: ran.append(conn))
            assert infra.async_pools["db"].snapshot().in_use == 0  # the lease went back
            snap = infra.breakers["svc"].snapshot()
            assert (snap.call_count, snap.failure_count) == (1, 0)  # it ran and returned

            async def broken(x: int) -> None: ...

            with pytest.raises(TypeError, match="positional argument"):  # its own TypeError
                await infra.call_async("svc", broken, 1, 2, context=CTX)

    asyncio.run(main())
    assert ran == [(1,), "conn"]


async def test_a_call_cancelled_while_its_pool_resets_the_member_still_reports_to_the_breaker(
    clock: bt.ManualClock,
) -> None:
    hold = {"on": False}
    in_reset, release = asyncio.Event(), asyncio.Event()

    async def reset(conn: object) -> None:  # psycopg's rollback(), say
        if hold["on"]:
            in_reset.set()
            await release.wait()

    async def fail(conn: object) -> None:
        raise ConnectionError("down")

    async def op(conn: object) -> str:
        return "ok"

    cfg = {
        "circuit_breakers": {
            "svc": {
                "failure_threshold": 2,
                "degradation_threshold": None,
                "failure_rate_threshold": None,
                "degradation_rate_threshold": None,
                "reset_timeout_jitter": 0.0,  # half-open exactly 30 s later
                "half_open_max_calls": 1,
            }
        },
        "connection_pools": {"svc": {"async": True, "min_size": 1, "max_size": 1}},
        "memory_manager": {"enabled": False},
    }
    spec = bt.ResourceSpec(create=object, reset=reset)
    infra = make(clock, cfg, pools={"svc": spec})
    await infra.astart()
    try:
        assert infra.async_scheduler is not None
        await infra.async_scheduler.run_due()  # connects the member
        breaker = infra.breakers["svc"]
        for _ in range(2):
            with pytest.raises(ConnectionError):
                await infra.call_async("svc", fail)
        clock.advance(30.0)  # reset_timeout: the next call is the one half-open probe
        hold["on"] = True
        probe = asyncio.create_task(infra.call_async("svc", op))
        await reached(in_reset, probe)  # op returned; the pool is resetting the member
        probe.cancel()
        with pytest.raises(asyncio.CancelledError):
            await probe
        snap = breaker.snapshot()
        assert snap.probes_in_flight == 0  # the permit is free: the call was reported
        assert breaker.state is bt.BreakerState.CLOSED  # as the success it was
        assert infra.async_pools["svc"].snapshot().in_use == 0
    finally:
        release.set()
        await infra.aclose()


def test_an_adaptive_limit_takes_outcomes_as_the_breaker_classifies_them(
    clock: bt.ManualClock,
) -> None:
    cfg = {
        "circuit_breakers": {"api": {"ignore": ["builtins.KeyError"]}},
        "rate_limiting": {
            "limiters": {
                "api": {"scopes": [{"name": "global", "limit": 100, "algorithm": "adaptive"}]}
            }
        },
        "memory_manager": {"enabled": False},
    }

    def missing() -> None:
        raise KeyError("no such path")  # an answer, not an outage

    def down() -> None:
        raise ConnectionError("down")

    with make(clock, cfg) as infra:
        limiter = infra.limiters["api"]
        for _ in range(3):
            with pytest.raises(KeyError):
                infra.call("api", missing)
        assert limiter.current_limit("global") == 100.0  # ignored errors: no shrinking
        clock.advance(2.0)  # past the cooldown
        with pytest.raises(ConnectionError):
            infra.call("api", down)
        assert limiter.current_limit("global") == 50.0  # a recorded failure shrinks it
