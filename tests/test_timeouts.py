"""Timeouts that count: a protected call's ``timeout``, ``bt.remaining()`` and the breaker.

Every wait is on a ManualClock: asyncio's jumps to the deadline once the loop is idle (a hung
dependency is an idle loop), a thread's call is given the time its operation takes by moving
the clock inside it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import buttress as bt
from buttress.testing import isolated_infrastructure

BREAKER = {
    "failure_threshold": 3,
    "degradation_threshold": None,
    "minimum_calls": 100,  # the rate never applies: three failures open it
    "reset_timeout": 60.0,
}


def config(**service: Any) -> dict[str, Any]:
    return {
        "circuit_breakers": {"upstream": BREAKER},
        "services": {"upstream": service},
    }


def test_a_hung_async_dependency_times_out_and_opens_the_breaker() -> None:
    clock = bt.ManualClock()
    cancelled = []

    async def hang() -> str:
        try:
            await asyncio.Event().wait()  # never answers
        except asyncio.CancelledError:
            cancelled.append(clock.monotonic())
            raise
        return "never"

    async def scenario(infra: bt.Infrastructure) -> None:
        for _ in range(3):
            with pytest.raises(bt.CallTimeoutError) as info:
                await infra.call_async("upstream", hang, timeout=2.0)
            assert isinstance(info.value, TimeoutError)
            assert (info.value.service, info.value.timeout) == ("upstream", 2.0)
        # The timeouts counted as failures: the breaker is open, the dependency spared.
        with pytest.raises(bt.CircuitOpenError):
            await infra.call_async("upstream", hang, timeout=2.0)

    with isolated_infrastructure(config(), clock=clock) as infra:
        asyncio.run(scenario(infra))
        assert cancelled == [2.0, 4.0, 6.0]  # each attempt cancelled at its deadline
        assert infra.breakers["upstream"].state is bt.BreakerState.OPEN


def test_the_services_timeout_comes_from_configuration() -> None:
    clock = bt.ManualClock()

    async def hang() -> None:
        await asyncio.Event().wait()

    with isolated_infrastructure(config(timeout="1500ms"), clock=clock) as infra:
        with pytest.raises(bt.CallTimeoutError) as info:
            asyncio.run(infra.call_async("upstream", hang))
        assert info.value.timeout == 1.5
        assert clock.monotonic() == 1.5


def test_an_async_call_within_its_timeout_returns_its_result() -> None:
    clock = bt.ManualClock()

    async def quick() -> float | None:
        await clock.asleep(0.5)
        return bt.remaining()

    with isolated_infrastructure(config(), clock=clock) as infra:
        assert asyncio.run(infra.call_async("upstream", quick, timeout=2.0)) == 1.5
        snap = infra.breakers["upstream"].snapshot()
        assert (snap.total_successes, snap.total_failures) == (1, 0)


def test_a_sync_result_after_the_deadline_is_a_timeout_failure() -> None:
    clock = bt.ManualClock()

    def slow() -> str:
        clock.advance(3.0)  # the operation took 3 s
        return "late"

    with isolated_infrastructure(config(), clock=clock) as infra:
        for _ in range(3):
            with pytest.raises(bt.CallTimeoutError):
                infra.call("upstream", slow, timeout=2.0)
        with pytest.raises(bt.CircuitOpenError):
            infra.call("upstream", slow, timeout=2.0)


def test_remaining_is_visible_inside_and_shrinks_in_nested_calls() -> None:
    clock = bt.ManualClock()
    seen: dict[str, float | None] = {}

    with isolated_infrastructure(
        {"circuit_breakers": {"outer": {}, "inner": {}}}, clock=clock
    ) as infra:

        def inner() -> None:
            seen["inner"] = bt.remaining()

        def outer() -> None:
            seen["outer"] = bt.remaining()
            clock.advance(1.0)
            # The inner call asks for 10 s, but runs inside the outer call's 4 s left.
            infra.call("inner", inner, timeout=10.0)
            seen["after"] = bt.remaining()

        assert bt.remaining() is None
        infra.call("outer", outer, timeout=5.0)
        assert bt.remaining() is None
    assert seen == {"outer": 5.0, "inner": 4.0, "after": 4.0}


def test_a_timeout_must_be_a_positive_number() -> None:
    with isolated_infrastructure(config(), clock=bt.ManualClock()) as infra:
        for bad in (0, -1.0, float("nan"), float("inf")):
            with pytest.raises(bt.ConfigError) as info:
                infra.call("upstream", lambda: None, timeout=bad)
            assert info.value.path == "timeout"
        for wrong in (True, "2s"):
            with pytest.raises(TypeError, match="timeout"):
                infra.call("upstream", lambda: None, timeout=wrong)
    with pytest.raises(bt.ConfigError) as caught:
        bt.load_config(config(timeout=-1), env={})
    assert caught.value.path == "services.upstream.timeout"


# -- with / async with infra.protect(..., timeout=) -------------------------------------------


def test_a_sync_block_that_ends_late_fails_with_a_timeout_the_breaker_records() -> None:
    clock = bt.ManualClock()
    with isolated_infrastructure(config(), clock=clock) as infra:
        seen = []
        for _ in range(3):
            with pytest.raises(bt.CallTimeoutError), infra.protect("upstream", timeout=2.0):
                seen.append(bt.remaining())
                clock.advance(2.5)  # the operation took 2.5 s
        assert seen == [2.0, 2.0, 2.0]
        assert bt.remaining() is None
        assert infra.breakers["upstream"].state is bt.BreakerState.OPEN
        # refused at the door: no deadline is set
        with pytest.raises(bt.CircuitOpenError), infra.protect("upstream", timeout=2.0):
            pass
        assert bt.remaining() is None
        snap = infra.services["upstream"].snapshot(now=clock.monotonic())
        assert snap.timeouts == 3


def test_a_sync_block_in_time_and_a_kept_late_block() -> None:
    clock = bt.ManualClock()
    with isolated_infrastructure(config(timeout="2s", late_result="keep"), clock=clock) as infra:
        with infra.protect("upstream"):  # the service's timeout
            clock.advance(1.0)
        with infra.protect("upstream"):
            clock.advance(3.0)  # late, kept: no error, but counted as a timeout failure
        breaker = infra.breakers["upstream"].snapshot()
        assert (breaker.total_successes, breaker.total_failures) == (1, 1)
        # the block's own error wins over lateness
        with pytest.raises(KeyError), infra.protect("upstream"):
            clock.advance(3.0)
            raise KeyError("x")


def test_an_async_block_is_cancelled_at_its_timeout_and_opens_the_breaker() -> None:
    clock = bt.ManualClock()
    cancelled: list[float] = []

    async def scenario(infra: bt.Infrastructure) -> None:
        for _ in range(3):
            with pytest.raises(bt.CallTimeoutError) as info:
                async with infra.protect("upstream", timeout=1.5):
                    assert bt.remaining() == 1.5
                    try:
                        await asyncio.Event().wait()  # hangs
                    except asyncio.CancelledError:
                        cancelled.append(clock.monotonic())
                        raise
            assert info.value.timeout == 1.5
        assert infra.breakers["upstream"].state is bt.BreakerState.OPEN
        async with infra.protect("other", timeout=5.0):  # in time: nothing happens
            await clock.asleep(1.0)
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]

    cfg = config()
    cfg["circuit_breakers"]["other"] = {}
    with isolated_infrastructure(cfg, clock=clock) as infra:
        asyncio.run(scenario(infra))
    assert cancelled == [1.5, 3.0, 4.5]


def test_an_async_block_on_the_system_clock_is_cancelled_by_the_loops_timer() -> None:
    async def scenario(infra: bt.Infrastructure) -> None:
        with pytest.raises(bt.CallTimeoutError):
            # real-time: the loop's own timer ends the block after 10 ms
            async with infra.protect("upstream", timeout=0.01):
                await asyncio.Event().wait()  # never set: only the timeout ends it

    with isolated_infrastructure(config()) as infra:
        asyncio.run(scenario(infra))
