"""acquire / acquire_async: waiting on the clock, timeouts, FIFO order, cancellation."""

from __future__ import annotations

import asyncio
import math
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    clock.advance(0.5)  # its sleep is over, but it has not run again yet
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
    clock.advance(1.0)  # the head's sleep for its room is over; it has not run again yet
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
    clock.advance(0.5)  # its sleep is over, but it has not run again yet
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


# -- FIFO across scopes --------------------------------------------------------------------------


class SteppedClock(bt.ManualClock):
    """A ManualClock whose ``asleep`` parks until the test moves time to its end.

    A plain ManualClock jumps to the next deadline whenever the loop is idle; here the test
    decides when time comes (``wake_next``), between arrivals, so the order in which waiters
    ask again is the order their clocks ring, as with real time.
    """

    __slots__ = ("_sleepers",)

    def __init__(self) -> None:
        super().__init__()
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def sleep(self, seconds: float) -> None:
        raise AssertionError("only asyncio waiters here")

    async def asleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        entry = (self.monotonic() + max(0.0, seconds), future)
        self._sleepers.append(entry)
        try:
            await future
        finally:
            if entry in self._sleepers:
                self._sleepers.remove(entry)

    def wake_next(self) -> bool:
        """Move time to the earliest sleeper's end and wake all due; False if none sleeps."""
        if not self._sleepers:
            return False
        self.set(max(self.monotonic(), min(t for t, _ in self._sleepers)))
        for entry in list(self._sleepers):
            if entry[0] <= self.monotonic():
                self._sleepers.remove(entry)
                entry[1].set_result(None)
        return True


async def settle() -> None:
    """Let every task run until it waits (for the clock or its turn)."""
    for _ in range(200):
        await asyncio.sleep(0)  # real-time: loop turns, no time passes


async def test_a_later_caller_cannot_pass_earlier_waiters_on_a_shared_scope() -> None:
    clock = SteppedClock()
    rl = bt.RateLimiter([bt.Scope("user", 10, 10.0), bt.Scope("global", 20, 20.0)], clock=clock)
    served: list[tuple[str, float]] = []

    async def take(name: str, user: str, cost: int) -> None:
        await rl.acquire_async({"user": user}, cost)
        served.append((name, clock.monotonic()))

    assert rl.try_acquire({"user": "u1"}, 10)  # u1's own bucket is empty; global has 10 left
    a = asyncio.create_task(take("A", "u1", 10))  # queues on u1's key, until 10 s
    await settle()
    assert rl.try_acquire({"user": "u3"}, 10)  # the shared scope is empty now
    b = asyncio.create_task(take("B", "u2", 5))  # queues on the shared key, until 5 s
    await settle()
    c = asyncio.create_task(take("C", "u1", 1))  # behind A on u1's key (its longer wait)
    await settle()
    assert rl.snapshot().waiting == 3
    while clock.wake_next():
        await settle()
    await asyncio.gather(a, b, c)
    # At 10 s A finds only 5 units in the shared scope and queues there. C, next on u1's
    # key, used to ask at once and take one of the units A was waiting for (A then came at
    # 16 s); now it waits for A on the shared key too.
    assert served == [("B", 5.0), ("A", 15.0), ("C", 16.0)]
    assert rl.snapshot().waiting == 0


ALGORITHMS = ["token_bucket", "fixed_window", "sliding_window"]
arrival = st.tuples(st.just("arrive"), st.sampled_from(["u1", "u2", "u3"]), st.integers(1, 10))


@settings(max_examples=150, deadline=None)
@given(
    user=st.tuples(st.sampled_from(ALGORITHMS), st.integers(1, 8), st.sampled_from([1.0, 4.0])),
    glob=st.tuples(st.sampled_from(ALGORITHMS), st.integers(4, 16), st.sampled_from([2.0, 8.0])),
    used=st.tuples(st.integers(0, 8), st.integers(0, 8), st.integers(0, 8), st.integers(0, 16)),
    steps=st.lists(st.one_of(arrival, st.tuples(st.just("tick"))), min_size=1, max_size=14),
)
def test_waiters_are_served_in_arrival_order_where_they_compete(
    user: tuple[Any, int, float],
    glob: tuple[Any, int, float],
    used: tuple[int, int, int, int],
    steps: list[tuple[Any, ...]],
) -> None:
    """A model of the FIFO promise across a user scope and a shared global scope.

    Callers arrive over time with random users and costs, and wait in ``acquire_async``;
    time moves from one waiter's wake-up to the next. Checked: nobody is admitted while an
    earlier caller is queued on one of its keys (the user's or the shared one), so callers of
    one user are served in arrival order; everyone is served; the queues end empty.
    """
    asyncio.run(_run_fifo_model(user, glob, used, steps))


async def _run_fifo_model(
    user: tuple[Any, int, float],
    glob: tuple[Any, int, float],
    used: tuple[int, int, int, int],
    steps: list[tuple[Any, ...]],
) -> None:
    clock = SteppedClock()
    u_algo, u_limit, u_window = user
    g_algo, g_limit, g_window = glob
    rl = bt.RateLimiter(
        [
            bt.Scope("user", u_limit, u_window, algorithm=u_algo),
            bt.Scope("global", g_limit, g_window, algorithm=g_algo),
        ],
        clock=clock,
    )
    # Some room is used up front: by the three users, and by others on the shared scope.
    for name, n in zip(("u1", "u2", "u3"), used[:3], strict=True):
        if n:
            rl.try_acquire({"user": name}, min(n, u_limit))
    left, other = used[3], 0
    while left > 0:
        n = min(left, u_limit)
        rl.try_acquire({"user": f"other{other}"}, n)
        left, other = left - n, other + 1

    tasks: list[asyncio.Task[None]] = []
    users: list[str] = []
    served: list[int] = []
    waited: list[int] = []  # the callers that had to wait, in arrival order (= waiter seq)

    async def take(i: int, name: str, cost: int) -> None:
        await rl.acquire_async({"user": name}, cost)
        # Admitted (and out of the queues) in this very step: who is queued now was queued
        # when it was admitted. None of them may have arrived before it on one of its keys.
        seq = waited.index(i) if i in waited else len(waited)  # a newcomer is the latest
        for key in rl._resolver.keys({"user": name}):
            for w in rl._waiting.queues.get(key, []):
                assert w.seq > seq, f"caller {i} admitted while {waited[w.seq]} waits on {key}"
        served.append(i)

    for step in steps:
        if step[0] == "tick":
            if clock.wake_next():
                await settle()
            continue
        _, name, cost = step
        i = len(tasks)
        users.append(name)
        tasks.append(asyncio.create_task(take(i, name, min(cost, u_limit, g_limit))))
        await settle()
        if not tasks[i].done():
            waited.append(i)
        assert rl.snapshot().waiting == len(waited) - sum(x in served for x in waited)

    while not all(t.done() for t in tasks):
        assert clock.wake_next(), "callers left waiting with nobody asleep: a lost wake-up"
        await settle()
    for t in tasks:
        t.result()
    assert sorted(served) == list(range(len(tasks)))
    for name in set(users):  # one user's callers compete for every key: arrival order
        mine = [i for i in served if users[i] == name]
        assert mine == sorted(mine), (name, served)
    assert rl.snapshot().waiting == 0
    assert not rl._waiting.queues
