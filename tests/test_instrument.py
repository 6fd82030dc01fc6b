"""Per-service metrics: exact counts, unbiased sampled latencies, an exact maximum."""

from __future__ import annotations

import asyncio

import pytest

import buttress as bt
from buttress._concurrency import is_async_callable
from buttress._histogram import Histogram
from buttress._instrument import ServiceMetrics


def test_sampled_latencies_are_weighted_like_the_calls_they_stand_for() -> None:
    m = ServiceMetrics("svc")
    t = 0.0
    for _ in range(1024):  # recorded one by one
        m.record(0.001, None, now=t)
        t += 0.0001
    for _ in range(3000):  # then one in 8 is kept: it must count for 8
        m.record(0.100, None, now=t)
        t += 0.0001
    s = m.snapshot(now=t)
    true_sum = 1024 * 0.001 + 3000 * 0.100
    assert s.calls == 4024
    assert s.latency_p50 == pytest.approx(0.100, rel=0.01)  # 75 % of the calls took 100 ms
    assert s.latency_mean == pytest.approx(true_sum / 4024, rel=0.01)
    assert s.latency_mean * s.calls == pytest.approx(true_sum, rel=0.01)  # Prometheus _sum


def test_the_slowest_call_is_the_maximum_even_when_not_sampled() -> None:
    m = ServiceMetrics("svc")
    for i in range(2000):
        m.record(5.0 if i == 1500 else 0.001, None, now=0.0)  # 1500 is not one of the 1 in 8
    assert m.snapshot(now=0.0).latency_max == 5.0


def test_histogram_weights() -> None:
    h = Histogram()
    h.record(0.001, 3)
    h.record(0.010)
    assert h.count == 4
    assert h.total == pytest.approx(0.013)
    assert h.percentile(75) == pytest.approx(0.001, rel=0.01)
    assert h.max == 0.010


def test_an_object_with_async_call_is_instrumented_as_async() -> None:
    infra = bt.Infrastructure("t", {}, env={}, background=False, clock=bt.ManualClock())

    class Client:
        async def __call__(self) -> None:
            await infra.clock.asleep(0.05)  # real-time: no, ManualClock.asleep advances it
            raise ConnectionError("down")

    fetch = infra.instrument("api")(Client())

    async def main() -> None:
        for _ in range(3):
            with pytest.raises(ConnectionError):
                await fetch()

    asyncio.run(main())
    s = infra.services["api"].snapshot(now=infra.clock.monotonic())
    assert (s.calls, s.errors) == (3, 3)
    assert s.latency_max == pytest.approx(0.05)  # timed over the await, not the call
    infra.close()


def test_is_async_callable() -> None:
    import functools

    async def coro(x: int = 0) -> None: ...

    class A:
        async def __call__(self) -> None: ...

        async def method(self) -> None: ...

    class S:
        def __call__(self) -> None: ...

    assert is_async_callable(coro)
    assert is_async_callable(functools.partial(coro, 1))
    assert is_async_callable(A())
    assert is_async_callable(A().method)
    assert not is_async_callable(A)  # calling the class makes an instance
    assert not is_async_callable(S())
    assert not is_async_callable(lambda: coro())
    assert not is_async_callable(print)
