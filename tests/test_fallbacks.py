"""Fallbacks: a stand-in answer when a protected call is refused or fails as its breaker
records failures, never for a mistake in the program."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import buttress as bt
from buttress.testing import isolated_infrastructure

BREAKER = {
    "failure_threshold": 2,
    "degradation_threshold": None,
    "minimum_calls": 100,
    "reset_timeout": 60.0,
    "ignore": ["builtins.KeyError"],
}


def config(**service: Any) -> dict[str, Any]:
    return {"circuit_breakers": {"prices": BREAKER}, "services": {"prices": service}}


def down() -> float:
    raise ConnectionError("prices is down")


def cached(exc: Exception) -> float:
    return 9.99


def test_a_recorded_failure_and_then_a_refusal_are_answered_by_the_fallback() -> None:
    seen: list[type[BaseException]] = []

    def fallback(exc: Exception) -> float:
        seen.append(type(exc))
        return 9.99

    with isolated_infrastructure(config(), clock=bt.ManualClock()) as infra:
        assert [infra.call("prices", down, fallback=fallback) for _ in range(3)] == [9.99] * 3
        assert infra.breakers["prices"].state is bt.BreakerState.OPEN  # failures still count
        assert seen == [ConnectionError, ConnectionError, bt.CircuitOpenError]
        assert infra.services["prices"].snapshot(now=infra.clock.monotonic()).fallbacks == 3


def test_mistakes_and_neutral_errors_are_never_answered() -> None:
    def wrong_signature(x: int) -> int:
        return x

    def lookup() -> None:
        raise KeyError("sku-1")  # ignored by the breaker: the caller's business

    with isolated_infrastructure(config(), clock=bt.ManualClock()) as infra:
        with pytest.raises(TypeError):
            infra.call("prices", wrong_signature, fallback=cached)  # no argument given
        with pytest.raises(KeyError):
            infra.call("prices", lookup, fallback=cached)
        with pytest.raises(bt.ConfigError):
            infra.call("prices", down, fallback=cached, timeout=-1.0)
        assert infra.services["prices"].snapshot(now=infra.clock.monotonic()).fallbacks == 0


def test_the_services_fallback_comes_from_configuration() -> None:
    with isolated_infrastructure(config(fallback="builtins:repr"), clock=bt.ManualClock()) as infra:
        assert infra.call("prices", down) == "ConnectionError('prices is down')"
    with pytest.raises(bt.ConfigError) as caught:
        bt.load_config(config(fallback="no_such_module:f"), env={}).check_imports()
    assert caught.value.path == "services.prices.fallback"


def test_an_async_call_times_out_into_its_async_fallback() -> None:
    clock = bt.ManualClock()

    async def hang() -> float:
        await asyncio.Event().wait()
        return 0.0

    async def stale(exc: Exception) -> float:
        assert isinstance(exc, bt.CallTimeoutError)
        return 8.5

    with isolated_infrastructure(config(timeout=1.0), clock=clock) as infra:
        assert asyncio.run(infra.call_async("prices", hang, fallback=stale)) == 8.5
        assert asyncio.run(infra.call_async("prices", hang, fallback=cached)) == 9.99
        assert infra.breakers["prices"].state is bt.BreakerState.OPEN  # two timeouts: failures


def test_a_sync_call_refuses_an_async_fallback() -> None:
    async def stale(exc: Exception) -> float:
        return 8.5

    with (
        isolated_infrastructure(config(), clock=bt.ManualClock()) as infra,
        pytest.raises(TypeError, match="call_async"),
    ):
        infra.call("prices", down, fallback=stale)  # type: ignore[arg-type]
