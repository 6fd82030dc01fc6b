"""Timeouts that count, deadlines that nest, fallbacks that never hide a bug, and where a
retry sits in the protect pipeline (docs/timeouts-and-fallbacks.md).

Every wait is on a ``ManualClock``: a hung async dependency is a sleep on it (the clock jumps
to the timeout when every task waits); a slow sync one advances it."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Callable
from typing import Any

import pytest

import buttress as bt

BREAKER = {
    "failure_threshold": 2,
    "degradation_threshold": None,
    "failure_rate_threshold": None,
    "degradation_rate_threshold": None,
    "reset_timeout": 60.0,
}


def infra_with(clock: bt.ManualClock, **service: Any) -> bt.Infrastructure:
    cfg: dict[str, Any] = {"circuit_breakers": {"svc": dict(BREAKER)}}
    if service:
        cfg["services"] = {"svc": service}
    return bt.Infrastructure("t", cfg, clock=clock, env={}, background=False)


def answer(exc: BaseException) -> str:
    return f"fallback for {type(exc).__name__}"


# -- async: the attempt is cancelled at the timeout, and it counts ------------------------------


def test_a_hung_async_dependency_times_out_and_opens_the_breaker() -> None:
    clock = bt.ManualClock()
    infra = infra_with(clock)
    started: list[float] = []

    async def hang() -> str:
        started.append(clock.monotonic())
        await clock.asleep(float("inf"))  # never answers
        return "never"

    async def main() -> None:
        for _ in range(2):
            with pytest.raises(bt.CallTimeoutError) as info:
                await infra.call_async("svc", hang, timeout=2.0)
            assert isinstance(info.value, TimeoutError)
            assert info.value.timeout == 2.0 and info.value.service == "svc"
        with pytest.raises(bt.CircuitOpenError):
            await infra.call_async("svc", hang, timeout=2.0)

    asyncio.run(main())
    assert started == [0.0, 2.0]  # each cut at its timeout, on the injected clock
    assert infra.breakers["svc"].state is bt.BreakerState.OPEN
    snap = infra.health().extra["services"]["svc"]
    assert snap.timeouts == 2 and snap.errors == 2
    infra.close()


def test_a_timeout_counts_even_when_the_breaker_records_other_errors_only() -> None:
    clock = bt.ManualClock()
    breaker = bt.CircuitBreaker(
        "b", failure_threshold=1, record=(ConnectionError,), degradation_threshold=None, clock=clock
    )
    with pytest.raises(bt.CallTimeoutError), breaker:
        raise bt.CallTimeoutError("svc", 1.0)
    assert breaker.state is bt.BreakerState.OPEN


def test_a_timeout_from_the_service_table_applies_and_a_fast_call_passes() -> None:
    clock = bt.ManualClock()
    infra = infra_with(clock, timeout="2s")

    async def quick() -> str:
        await clock.asleep(1.5)
        return "ok"

    async def hang() -> str:
        await clock.asleep(5.0)
        return "late"

    async def main() -> None:
        assert await infra.call_async("svc", quick) == "ok"
        with pytest.raises(bt.CallTimeoutError):
            await infra.call_async("svc", hang)

    asyncio.run(main())
    assert clock.monotonic() == 3.5
    infra.close()


def test_the_operations_own_timeout_error_is_not_ours() -> None:
    clock = bt.ManualClock()
    infra = infra_with(clock)

    async def raises() -> str:
        raise TimeoutError("the client's own")

    with pytest.raises(TimeoutError) as info:
        asyncio.run(infra.call_async("svc", raises, timeout=5.0))
    assert not isinstance(info.value, bt.CallTimeoutError)
    infra.close()


# -- sync: a deadline, and a late result counts ------------------------------------------------


def test_a_late_sync_result_is_a_timeout_failure_that_raises() -> None:
    clock = bt.ManualClock()
    infra = infra_with(clock)

    def slow() -> str:
        clock.advance(3.0)
        return "late"

    for _ in range(2):
        with pytest.raises(bt.CallTimeoutError):
            infra.call("svc", slow, timeout=2.0)
    assert infra.breakers["svc"].state is bt.BreakerState.OPEN
    assert infra.health().extra["services"]["svc"].timeouts == 2
    infra.close()


def test_late_result_keep_returns_it_and_still_counts_the_timeout() -> None:
    clock = bt.ManualClock()
    infra = infra_with(clock, timeout=2.0, late_result="keep")

    def slow() -> str:
        clock.advance(3.0)
        return "late"

    assert infra.call("svc", slow) == "late"
    assert infra.call("svc", slow) == "late"
    assert infra.breakers["svc"].state is bt.BreakerState.OPEN
    assert infra.health().extra["services"]["svc"].timeouts == 2
    infra.close()


def test_remaining_is_visible_inside_and_shrinks_in_nested_calls() -> None:
    clock = bt.ManualClock()
    infra = infra_with(clock)
    seen: list[float | None] = []

    def inner() -> None:
        seen.append(bt.remaining())

    def outer() -> None:
        seen.append(bt.remaining())
        clock.advance(1.0)
        infra.call("svc", inner, timeout=10.0)  # capped by the outer deadline: 4 s left
        infra.call("svc", inner, timeout=3.0)  # its own is smaller
        seen.append(bt.remaining())

    assert bt.remaining() is None
    infra.call("svc", outer, timeout=5.0)
    assert seen == [5.0, 4.0, 3.0, 4.0]
    assert bt.remaining() is None
    infra.close()


def test_remaining_in_nested_async_calls() -> None:
    clock = bt.ManualClock()
    infra = infra_with(clock)
    seen: list[float | None] = []

    async def inner() -> None:
        seen.append(bt.remaining())

    async def outer() -> None:
        seen.append(bt.remaining())
        await clock.asleep(1.0)
        await infra.call_async("svc", inner, timeout=10.0)
        seen.append(bt.remaining())

    asyncio.run(infra.call_async("svc", outer, timeout=5.0))
    assert seen == [5.0, 4.0, 4.0]
    infra.close()


# -- fallbacks ---------------------------------------------------------------------------------


def test_a_fallback_answers_a_recorded_failure_and_a_refusal() -> None:
    clock = bt.ManualClock()
    infra = infra_with(clock)

    def fail() -> str:
        raise ConnectionError("down")

    assert infra.call("svc", fail, fallback=answer) == "fallback for ConnectionError"
    assert infra.call("svc", fail, fallback=answer) == "fallback for ConnectionError"
    assert infra.breakers["svc"].state is bt.BreakerState.OPEN  # the failures still counted
    assert infra.call("svc", fail, fallback=answer) == "fallback for CircuitOpenError"
    snap = infra.health().extra["services"]["svc"]
    assert snap.fallbacks == 3 and snap.errors == 2 and snap.rejected == 1
    infra.close()


@pytest.mark.parametrize(
    "error",
    [TypeError("wrong signature"), bt.ConfigError("x", "bad"), AttributeError("typo")],
    ids=lambda e: type(e).__name__,
)
def test_a_fallback_never_hides_a_programming_or_config_error(error: Exception) -> None:
    infra = infra_with(bt.ManualClock())

    def buggy() -> str:
        raise error

    with pytest.raises(type(error)):
        infra.call("svc", buggy, fallback=answer)
    with pytest.raises(TypeError):
        infra.call("svc", lambda x: x, fallback=answer)  # called without its argument
    assert infra.health().extra["services"]["svc"].fallbacks == 0
    infra.close()


def test_an_ignored_error_is_not_a_failure_to_fall_back_from() -> None:
    cfg = {"circuit_breakers": {"svc": {**BREAKER, "ignore": ["builtins:KeyError"]}}}
    try:
        infra = bt.Infrastructure("t", cfg, clock=bt.ManualClock(), env={}, background=False)
    except bt.ConfigError:
        pytest.skip("ignore is not settable in config here")

    def missing() -> str:
        raise KeyError("k")

    with pytest.raises(KeyError):
        infra.call("svc", missing, fallback=answer)
    infra.close()


def test_an_async_fallback_and_a_timeout_together() -> None:
    clock = bt.ManualClock()
    infra = infra_with(clock)
    seen: list[tuple[Any, ...]] = []
    bt.events.attach(
        "t-policies",
        [("buttress", "service", "timeout"), ("buttress", "service", "fallback")],
        lambda name, m, md: seen.append((name[-1], dict(m), dict(md))),
    )

    async def hang() -> str:
        await clock.asleep(float("inf"))
        return "never"

    async def cached(exc: BaseException) -> str:
        return f"cached after {type(exc).__name__}"

    got = asyncio.run(infra.call_async("svc", hang, timeout=1.0, fallback=cached))
    assert got == "cached after CallTimeoutError"
    assert infra.health().extra["services"]["svc"].fallbacks == 1
    assert bt.events.detach("t-policies")
    assert seen == [
        ("timeout", {"timeout": 1.0}, {"service": "svc"}),
        ("fallback", {}, {"service": "svc", "error": "CallTimeoutError"}),
    ]
    infra.close()


def test_a_sync_call_refuses_an_async_fallback() -> None:
    infra = infra_with(bt.ManualClock())

    async def cached(exc: BaseException) -> str:
        return "x"

    def fail() -> str:
        raise ConnectionError

    with pytest.raises(TypeError, match="call_async"):
        infra.call("svc", fail, fallback=cached)
    infra.close()


def fallback_from_config(exc: BaseException) -> str:
    return "from config"


def test_timeout_and_fallback_from_the_service_table_and_the_decorator() -> None:
    clock = bt.ManualClock()
    infra = infra_with(clock, fallback=f"{__name__}:fallback_from_config")

    @infra.protected("svc")
    def fail() -> str:
        raise ConnectionError

    @infra.protected("svc", timeout=1.0, fallback=answer)
    def slow() -> str:
        clock.advance(2.0)
        return "late"

    assert fail() == "from config"
    assert slow() == "fallback for CallTimeoutError"
    infra.close()


def test_bad_policy_settings_are_clear_errors() -> None:
    with pytest.raises(bt.ConfigError, match="fallback"):
        infra_with(bt.ManualClock(), fallback="no.such.module:f")
    with pytest.raises(bt.ConfigError, match="timeout"):
        infra_with(bt.ManualClock(), timeout=-1)
    with pytest.raises(bt.ConfigError, match="late_result"):
        infra_with(bt.ManualClock(), late_result="maybe")
    infra = infra_with(bt.ManualClock())
    with pytest.raises(ValueError, match="timeout"):
        infra.call("svc", lambda: 1, timeout=0)
    with pytest.raises(TypeError, match="fallback"):
        infra.call("svc", lambda: 1, fallback="nope")
    with pytest.raises(TypeError, match="retry"):
        infra.call("svc", lambda: 1, retry=object())
    infra.close()


def test_call_timeout_error_pickles() -> None:
    err = pickle.loads(pickle.dumps(bt.CallTimeoutError("svc", 2.0)))
    assert isinstance(err, TimeoutError) and err.timeout == 2.0 and "2 s" in str(err)


# -- where a retry sits ------------------------------------------------------------------------


class Again:
    """A test-local retry: calls fn up to ``attempts`` times while it raises."""

    def __init__(self, attempts: int) -> None:
        self.attempts = attempts

    def call(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        for n in range(self.attempts):
            try:
                return fn(*args, **kwargs)
            except Exception:
                if n == self.attempts - 1:
                    raise
        raise AssertionError

    async def call_async(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        for n in range(self.attempts):
            try:
                return await fn(*args, **kwargs)
            except Exception:
                if n == self.attempts - 1:
                    raise
        raise AssertionError


def retry_infra(clock: bt.ManualClock, limit: int = 10) -> bt.Infrastructure:
    cfg = {
        "circuit_breakers": {"svc": {**BREAKER, "failure_threshold": 5}},
        "rate_limiting": {"limiters": {"svc": {"limit": limit, "window": 60.0}}},
    }
    return bt.Infrastructure("t", cfg, clock=clock, env={}, background=False)


def test_a_retried_request_is_charged_once_and_each_attempt_is_a_breaker_call() -> None:
    clock = bt.ManualClock()
    infra = retry_infra(clock, limit=1)
    calls: list[float | None] = []

    def flaky() -> str:
        calls.append(bt.remaining())
        clock.advance(1.0)
        if len(calls) < 3:
            raise ConnectionError
        return "ok"

    assert infra.call("svc", flaky, retry=Again(3), timeout=5.0) == "ok"
    assert calls == [5.0, 5.0, 5.0]  # each attempt its own timeout
    snap = infra.breakers["svc"].snapshot()
    assert (snap.total_failures, snap.total_successes) == (2, 1)  # 3 attempts, 3 breaker calls
    with pytest.raises(bt.RateLimitExceeded):  # limit 1: the retried request took one
        infra.call("svc", flaky)
    infra.close()


def test_a_refusing_limiter_is_not_retried_and_the_fallback_answers() -> None:
    clock = bt.ManualClock()
    infra = retry_infra(clock, limit=1)
    calls: list[int] = []

    def work() -> str:
        calls.append(1)
        return "ok"

    assert infra.call("svc", work, retry=Again(3)) == "ok"
    with pytest.raises(bt.RateLimitExceeded):
        infra.call("svc", work, retry=Again(3))
    assert infra.call("svc", work, retry=Again(3), fallback=answer) == (
        "fallback for RateLimitExceeded"
    )
    assert calls == [1]
    infra.close()


def test_fallback_is_outermost_after_the_retries_run_out_async() -> None:
    clock = bt.ManualClock()
    infra = retry_infra(clock, limit=1)
    attempts: list[int] = []

    async def hang() -> str:
        attempts.append(1)
        await clock.asleep(float("inf"))
        return "never"

    got = asyncio.run(infra.call_async("svc", hang, retry=Again(3), timeout=1.0, fallback=answer))
    assert got == "fallback for CallTimeoutError"
    assert len(attempts) == 3 and clock.monotonic() == 3.0
    assert infra.health().extra["services"]["svc"].timeouts == 3
    with pytest.raises(bt.RateLimitExceeded):  # limit 1: charged once for three attempts
        asyncio.run(infra.call_async("svc", hang))
    infra.close()
