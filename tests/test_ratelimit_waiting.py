"""acquire / acquire_async: waiting on the clock, timeouts, FIFO order, cancellation."""

from __future__ import annotations

import asyncio
import math
import threading
from typing import Any

import pytest

import buttress as bt


def limiter(clock: bt.ManualClock, *scopes: bt.Scope) -> bt.RateLimiter:
    return bt.RateLimiter(scopes, clock=clock)


def test_acquire_waits_on_the_clock_until_there_is_room(clock: bt.ManualClock) -> None:
    rl = limiter(clock, bt.Scope("user", 2, 1.0))
    for _ in range(3):
        assert rl.acquire("u1", timeout=5.0)
    assert clock.monotonic() == pytest.approx(0.5)  # the third waited one refill interval
    assert rl.snapshot().waiting == 0


def test_acquire_raises_at_once_when_the_wait_would_pass_the_timeout(
    clock: bt.ManualClock,
) -> None:
    rl = limiter(clock, bt.Scope("user", 1, 10.0))
    assert rl.acquire("u1")
    with pytest.raises(bt.RateLimitExceeded) as info:
        rl.acquire("u1", timeout=3.0)
    assert info.value.scope == "user"
    assert info.value.key == "u1"
    assert info.value.limit == 1
    assert info.value.retry_after == pytest.approx(10.0)
    assert clock.monotonic() == 0.0  # no pointless wait before failing
    with pytest.raises(bt.RateLimitExceeded):
        rl.acquire("u1", timeout=0)  # one try
    with pytest.raises(bt.ConfigError):
        rl.acquire("u1", timeout=-1)


async def test_acquire_async_waits_and_times_out(clock: bt.ManualClock) -> None:
    rl = limiter(clock, bt.Scope("user", 1, 2.0))
    assert await rl.acquire_async("u1")
    assert await rl.acquire_async("u1", timeout=2.0)
    assert clock.monotonic() == pytest.approx(2.0)
    with pytest.raises(bt.RateLimitExceeded):
        await rl.acquire_async("u1", timeout=1.0)


async def test_a_large_cost_is_not_starved_by_small_ones(clock: bt.ManualClock) -> None:
    rl = limiter(clock, bt.Scope("user", 10, 1.0))
    assert rl.try_acquire("u1", 10)  # empty the bucket
    order: list[str] = []

    async def take(name: str, cost: int) -> None:
        await rl.acquire_async("u1", cost)
        order.append(name)

    big = asyncio.create_task(take("big", 10))
    # the big request starts waiting first
    await asyncio.sleep(0)  # real-time: one event-loop turn, no time passes
    small = [asyncio.create_task(take(f"s{i}", 1)) for i in range(5)]
    await asyncio.gather(big, *small)
    # Without a queue each small one would fit after 0.1 s and the big one would wait forever.
    assert order == ["big", "s0", "s1", "s2", "s3", "s4"]
    assert clock.monotonic() == pytest.approx(1.5)


async def test_try_acquire_does_not_barge_past_waiters(clock: bt.ManualClock) -> None:
    rl = limiter(clock, bt.Scope("user", 10, 1.0))
    assert rl.try_acquire("u1", 10)
    waiter = asyncio.create_task(rl.acquire_async("u1", 5))
    # the waiter queues and sleeps 0.5 s on the clock
    await asyncio.sleep(0)  # real-time: one event-loop turn, no time passes
    assert clock.monotonic() == pytest.approx(0.5)
    d = rl.try_acquire("u1")  # 5 units are back, but they are the waiter's
    assert not d
    assert d.scope == "user"
    assert d.retry_after > 0
    assert (await waiter).allowed
    clock.advance(1.0)
    assert rl.try_acquire("u1")  # the queue is gone
    assert rl.try_acquire("u2")  # other keys never waited


async def test_a_cancelled_waiter_leaves_the_queue(clock: bt.ManualClock) -> None:
    rl = limiter(clock, bt.Scope("user", 1, 10.0))
    assert rl.try_acquire("u1")
    head = asyncio.create_task(rl.acquire_async("u1"))
    behind = asyncio.create_task(rl.acquire_async("u1"))
    await asyncio.sleep(0)  # real-time: one event-loop turn, no time passes
    assert rl.snapshot().waiting == 2
    head.cancel()  # cancelled while it sleeps for room: the next one takes its place
    with pytest.raises(asyncio.CancelledError):
        await head
    assert (await behind).allowed
    assert clock.monotonic() == pytest.approx(10.0)
    third = asyncio.create_task(rl.acquire_async("u1"))
    await asyncio.sleep(0)  # real-time: one event-loop turn, no time passes
    third.cancel()
    with pytest.raises(asyncio.CancelledError):
        await third
    assert rl.snapshot().waiting == 0


async def test_a_waiter_behind_others_times_out(clock: bt.ManualClock) -> None:
    rl = limiter(clock, bt.Scope("user", 10, 1.0))
    assert rl.try_acquire("u1", 10)
    big = asyncio.create_task(rl.acquire_async("u1", 10))
    await asyncio.sleep(0)  # real-time: one event-loop turn, no time passes
    assert clock.monotonic() == pytest.approx(1.0)  # the head slept for its room
    with pytest.raises(bt.RateLimitExceeded) as info:
        # Behind the head's 10 units, 6 more take until 1.6 s: past this caller's 1.5 s.
        await rl.acquire_async("u1", 6, timeout=0.5)
    assert info.value.scope == "user"
    assert info.value.retry_after == pytest.approx(0.6)
    assert (await big).allowed
    assert rl.snapshot().waiting == 0


async def test_waiters_queue_on_the_scope_that_refused_them(clock: bt.ManualClock) -> None:
    rl = limiter(clock, bt.Scope("user", 100, 1.0), bt.Scope("global", 1, 1.0))
    assert rl.try_acquire({"user": "u0"})
    order: list[str] = []

    async def take(user: str) -> None:
        await rl.acquire_async({"user": user})
        order.append(user)

    tasks = [asyncio.create_task(take(u)) for u in ("u1", "u2", "u3")]
    await asyncio.gather(*tasks)
    assert order == ["u1", "u2", "u3"]  # first come, first served on the shared scope
    assert clock.monotonic() == pytest.approx(3.0)


def test_threads_wait_their_turn(clock: bt.ManualClock) -> None:
    rl = limiter(clock, bt.Scope("global", 1, 1.0))
    results: list[bt.Decision] = []
    lock = threading.Lock()

    def worker() -> None:
        d = rl.acquire(timeout=60.0)
        with lock:
            results.append(d)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(results) == 4
    assert all(results)
    assert clock.monotonic() == pytest.approx(3.0)  # one head slept at a time
    assert rl.snapshot().waiting == 0


async def test_sync_and_async_waiters_share_one_queue(clock: bt.ManualClock) -> None:
    rl = limiter(clock, bt.Scope("global", 1, 1.0))
    assert rl.try_acquire()
    task = asyncio.create_task(rl.acquire_async(timeout=60.0))
    # the task is queued (head)
    await asyncio.sleep(0)  # real-time: one event-loop turn, no time passes
    done = await asyncio.to_thread(rl.acquire, None, 1, timeout=60.0)  # a thread behind it
    assert done
    assert await task
    assert clock.monotonic() == pytest.approx(2.0)


class AsyncOnlyBackend:
    """A backend whose blocking calls fail: the async API must await, never block."""

    time_base = "monotonic"

    def __init__(self) -> None:
        self.inner = bt.MemoryBackend()
        self.awaited = 0

    def decide(self, *args: object, **kwargs: object) -> Any:
        raise AssertionError("a blocking backend call from async code")

    refund = reset = clear = decide

    async def decide_async(self, *args: Any) -> Any:
        self.awaited += 1
        # a real backend would do I/O here
        await asyncio.sleep(0)  # real-time: one event-loop turn, no time passes
        return self.inner.decide(*args)

    async def refund_async(self, *args: Any) -> None:
        self.inner.refund(*args)

    async def reset_async(self, *args: Any) -> None:
        self.inner.reset(*args)

    def key_count(self) -> int:
        return self.inner.key_count()

    def maintain(self, now: float) -> int:
        return self.inner.maintain(now)


async def test_the_async_api_awaits_the_backend(clock: bt.ManualClock) -> None:
    backend = AsyncOnlyBackend()
    rl = bt.RateLimiter(bt.Scope("user", 2, 1.0), backend=backend, clock=clock)  # type: ignore[arg-type]
    assert await rl.try_acquire_async("u1")
    assert await rl.peek_async("u1")
    assert await rl.acquire_async("u1")
    assert await rl.acquire_async("u1", timeout=1.0)  # waits 0.5 s on the clock
    assert clock.monotonic() == pytest.approx(0.5)
    await rl.refund_async("u1")
    await rl.reset_async("u1")

    async def take() -> bool:
        return (await rl.acquire_async("u1", 2, timeout=5.0)).allowed

    assert await rl.try_acquire_async("u1", 2)
    first = asyncio.create_task(take())
    await asyncio.sleep(0)  # real-time: one event-loop turn, no time passes
    assert not await rl.try_acquire_async("u1")  # queued behind the waiter, still no blocking
    assert await first
    assert backend.awaited >= 6


async def test_a_refusal_behind_waiters_names_the_scope_with_the_longest_wait(
    clock: bt.ManualClock,
) -> None:
    rl = limiter(clock, bt.Scope("user", 10, 1.0), bt.Scope("global", 100, 1000.0))
    assert rl.try_acquire({"user": "u1"}, 10)  # u1's own bucket is empty
    waiter = asyncio.create_task(rl.acquire_async({"user": "u1"}, 5))
    # the waiter queues on u1's key and sleeps 0.5 s on the clock
    await asyncio.sleep(0)  # real-time: one event-loop turn, no time passes
    for i in range(2, 11):  # others drain the shared scope (no queue there)
        assert rl.try_acquire({"user": f"u{i}"}, 10)
    d = rl.try_acquire({"user": "u1"})
    assert not d
    # The queue refuses on "user", but "global" refuses too and for longer: waiting for the
    # user's queue alone would not be enough.
    assert d.scope == "global"
    assert d.retry_after == pytest.approx(9.5)  # one unit of 100 per 1000 s, at 0.5 s
    user, glob = d.scopes
    assert not user.allowed and user.retry_after > 0
    assert not glob.allowed
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    unqueued = rl.try_acquire({"user": "u1"})
    assert (unqueued.scope, unqueued.retry_after) == (d.scope, d.retry_after)


async def test_a_cost_that_never_fits_raises_at_once_even_behind_waiters(
    clock: bt.ManualClock,
) -> None:
    rl = limiter(clock, bt.Scope("user", 10, 100.0), bt.Scope("global", 5, 1.0))
    assert rl.try_acquire({"user": "u1"}, 5)
    clock.advance(1.0)
    assert rl.try_acquire({"user": "u1"}, 5)  # u1's own 10 are spent for 100 s
    waiter = asyncio.create_task(rl.acquire_async({"user": "u1"}))
    # the waiter queues on u1's key and sleeps 10 s on the clock
    await asyncio.sleep(0)  # real-time: one event-loop turn, no time passes
    assert rl.snapshot().waiting == 1
    d = rl.try_acquire({"user": "u1"}, 7)  # 7 is above the global limit of 5: never fits
    assert (d.scope, d.retry_after) == ("global", math.inf)
    for timeout in (5.0, None):
        with pytest.raises(bt.RateLimitExceeded) as info:
            await rl.acquire_async({"user": "u1"}, 7, timeout=timeout)
        assert (info.value.scope, info.value.retry_after) == ("global", None)
        assert not waiter.done()  # raised at once, not after waiting in the queue
    assert (await waiter).allowed


async def test_peek_answers_what_try_acquire_would_behind_waiters(clock: bt.ManualClock) -> None:
    rl = limiter(clock, bt.Scope("user", 10, 1.0), bt.Scope("global", 100, 1000.0))
    assert rl.try_acquire({"user": "u1"}, 10)
    waiter = asyncio.create_task(rl.acquire_async({"user": "u1"}, 5))
    # the waiter queues on u1's key and sleeps 0.5 s on the clock
    await asyncio.sleep(0)  # real-time: one event-loop turn, no time passes
    # 5 units are back in u1's bucket, but they are the waiter's.
    for peeked in (rl.peek({"user": "u1"}), await rl.peek_async({"user": "u1"})):
        tried = rl.try_acquire({"user": "u1"})
        assert not peeked and not tried
        assert (peeked.scope, peeked.retry_after) == (tried.scope, tried.retry_after)
        assert peeked.scopes == tried.scopes
    assert rl.peek({"user": "u2"})  # other users never waited
    assert rl.snapshot().denied == 3  # the waiter's first try and two try_acquire: no peek
    assert (await waiter).allowed
    clock.advance(1.0)
    assert rl.peek({"user": "u1"}, 10)  # the queue is gone
