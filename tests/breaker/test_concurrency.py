"""Threads and asyncio: no lock held across the call, exact counts, cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import threading

import pytest

import buttress as bt


def test_slow_call_does_not_block_other_threads_admission() -> None:
    breaker = bt.CircuitBreaker("svc")
    inside = threading.Event()
    release = threading.Event()

    def slow() -> str:
        inside.set()
        assert release.wait(10)
        return "slow"

    worker = threading.Thread(target=lambda: breaker.call(slow))
    worker.start()
    try:
        assert inside.wait(10)
        # While ``slow`` is running (and holds no lock), other threads are admitted and finish.
        results: list[object] = []

        def fast() -> None:
            results.append(breaker.call(lambda: "fast"))
            permit = breaker.try_acquire()
            results.append(permit.allowed)
            permit.record_success()
            with breaker:
                results.append("cm")

        others = [threading.Thread(target=fast) for _ in range(4)]
        for t in others:
            t.start()
        for t in others:
            t.join(10)
            assert not t.is_alive(), "admission blocked behind a running call"
        assert results.count("fast") == 4 and results.count(True) == 4
    finally:
        release.set()
        worker.join(10)
    assert breaker.snapshot().total_successes == 13


def test_counts_are_exact_after_8_threads_x_10000_calls() -> None:
    # A window long enough that nothing expires, thresholds that never trip.
    breaker = bt.CircuitBreaker(
        "svc",
        window=3600.0,
        failure_threshold=None,
        degradation_threshold=None,
        failure_rate_threshold=None,
        degradation_rate_threshold=None,
    )
    calls, threads = 10_000, 8
    start = threading.Barrier(threads)

    class Boom(Exception):
        pass

    def fail() -> None:
        raise Boom

    def work(i: int) -> None:
        start.wait()
        for n in range(calls):
            if n % 10 == i % 10:
                with contextlib.suppress(Boom):
                    breaker.call(fail)
            else:
                breaker.call(int)

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    snap = breaker.snapshot()
    assert snap.call_count == calls * threads
    assert snap.failure_count == calls * threads // 10
    assert snap.total_successes + snap.total_failures == calls * threads
    assert snap.total_stale == 0


async def test_cancelled_half_open_probe_releases_its_permit(clock: bt.ManualClock) -> None:
    breaker = bt.CircuitBreaker(
        "svc",
        clock=clock,
        failure_threshold=1,
        degradation_threshold=None,
        half_open_max_calls=1,
        reset_timeout_jitter=0.0,  # half-open exactly 30 s later
    )
    with pytest.raises(ZeroDivisionError):
        breaker.call(lambda: 1 / 0)
    clock.advance(30.0)
    assert breaker.state is bt.BreakerState.HALF_OPEN

    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    probe = asyncio.create_task(breaker.call_async(hang))
    await started.wait()
    # The one permit is taken: a second call is refused.
    with pytest.raises(bt.CircuitOpenError):
        await breaker.call_async(asyncio.sleep, 0)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    # Cancellation is neutral and freed the permit: the next probe runs and closes the breaker.
    assert breaker.state is bt.BreakerState.HALF_OPEN
    assert await breaker.call_async(asyncio.sleep, 0, "done") == "done"
    assert breaker.state is bt.BreakerState.CLOSED
    assert breaker.snapshot().total_cancelled == 1


@pytest.mark.parametrize("form", ["call", "with"])
async def test_probe_cancelled_in_injected_latency_releases_its_permit(
    clock: bt.ManualClock, form: str
) -> None:
    class HangingClock(bt.ManualClock):
        async def asleep(self, seconds: float) -> None:  # the injected delay really waits
            await asyncio.Event().wait()

    hanging = HangingClock()
    injector = bt.FaultInjector(latency=5.0, latency_rate=1.0, seed=1)
    injector.enabled = False
    breaker = bt.CircuitBreaker(
        "svc",
        clock=hanging,
        failure_threshold=1,
        degradation_threshold=None,
        half_open_max_calls=1,
        reset_timeout_jitter=0.0,  # half-open exactly 30 s later
        fault_injection=injector,
    )
    with pytest.raises(ZeroDivisionError):
        breaker.call(lambda: 1 / 0)
    hanging.advance(30.0)
    injector.enabled = True

    async def via_with() -> None:
        async with breaker:
            pass

    probe = asyncio.create_task(
        breaker.call_async(asyncio.sleep, 0) if form == "call" else via_with()
    )
    while breaker.snapshot().probes_in_flight == 0:
        await asyncio.sleep(0)  # real-time: a loop turn, to let the probe reach the delay
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    snap = breaker.snapshot()
    assert snap.probes_in_flight == 0
    assert snap.total_cancelled == 1
    injector.enabled = False
    assert await breaker.call_async(asyncio.sleep, 0, "done") == "done"
    assert breaker.state is bt.BreakerState.CLOSED


async def test_async_paths_decorator_context_manager_and_critical(clock: bt.ManualClock) -> None:
    breaker = bt.CircuitBreaker(
        "svc",
        clock=clock,
        seed=5,
        shed_probability={"light": 1.0, "medium": 1.0, "heavy": 1.0},
    )

    @breaker
    async def fetch(x: int) -> int:
        await asyncio.sleep(0)  # real-time: one event-loop turn, no time passes
        return x * 2

    @breaker(critical=True)
    async def must_run() -> str:
        return "ran"

    assert await fetch(21) == 42
    for _ in range(3):
        with pytest.raises(KeyError):
            async with breaker:
                raise KeyError("x")
    assert breaker.state is bt.BreakerState.DEGRADED
    with pytest.raises(bt.LoadShedError):
        await fetch(1)
    assert await must_run() == "ran"
    async with breaker.guard(critical=True):
        pass
    assert breaker.snapshot().total_shed == 1


def test_decorated_method_binds_self() -> None:
    breaker = bt.CircuitBreaker("svc")

    class Client:
        def __init__(self) -> None:
            self.base = 10

        @breaker
        def get(self, n: int) -> int:
            return self.base + n

    assert Client().get(5) == 15
    assert Client.get.__name__ == "get"


def test_nested_with_blocks_on_one_breaker_record_each_call() -> None:
    breaker = bt.CircuitBreaker("svc")
    with pytest.raises(ValueError), breaker:
        with breaker:
            pass
        raise ValueError
    snap = breaker.snapshot()
    assert (snap.success_count, snap.failure_count) == (1, 1)
