"""Fault injection on a breaker: seeded, counted as failures, tagged in telemetry."""

from __future__ import annotations

import pytest

import buttress as bt


def test_injected_failures_move_the_breaker_and_are_tagged(
    clock: bt.ManualClock, event_log: object
) -> None:
    injector = bt.FaultInjector(failure_rate=1.0, seed=1, clock=clock)
    no_shedding = {"light": 0.0, "medium": 0.0, "heavy": 0.0}
    breaker = bt.CircuitBreaker(
        "svc", clock=clock, fault_injection=injector, shed_probability=no_shedding
    )
    ran: list[int] = []
    for _ in range(5):
        with pytest.raises(bt.InjectedFault) as info:
            breaker.call(ran.append, 1)
        assert info.value.injected is True
    assert ran == []  # an injected failure replaces the call
    assert breaker.state is bt.BreakerState.OPEN
    snap = breaker.snapshot()
    assert snap.fault_injection_active and snap.injected_failures == 5
    kinds = [
        md["kind"] for _, md in event_log.named("buttress", "circuit_breaker", "fault_injected")
    ]  # type: ignore[attr-defined]
    assert kinds == ["failure"] * 5


def test_injected_latency_uses_the_clock(clock: bt.ManualClock) -> None:
    injector = bt.FaultInjector(latency=0.25, seed=1, clock=clock)
    breaker = bt.CircuitBreaker("svc", clock=clock, fault_injection=injector)
    assert breaker.call(lambda: "ok") == "ok"
    assert clock.monotonic() == pytest.approx(0.25)


async def test_async_latency_does_not_block_the_loop(clock: bt.ManualClock) -> None:
    injector = bt.FaultInjector(latency=(0.1, 0.3), seed=2, clock=clock)
    breaker = bt.CircuitBreaker("svc", clock=clock, fault_injection=injector)

    async def work() -> str:
        return "ok"

    assert await breaker.call_async(work) == "ok"
    assert 0.1 <= clock.monotonic() <= 0.3


def test_fault_injection_off_by_default_and_switchable(clock: bt.ManualClock) -> None:
    breaker = bt.CircuitBreaker("svc", clock=clock)
    assert not breaker.snapshot().fault_injection_active
    injector = bt.FaultInjector(failure_rate=1.0, enabled=False, clock=clock)
    breaker.fault_injection = injector
    assert breaker.call(lambda: "ok") == "ok"
    injector.enabled = True
    with pytest.raises(bt.InjectedFault):
        breaker.call(lambda: "ok")
    breaker.fault_injection = None
    assert breaker.call(lambda: "ok") == "ok"
