"""Concurrent decisions on Redis, batched: one script call for what queued during the last,
decided in arrival order exactly as if each were sent alone; cancellation per decision.

A gate around the backend's script call holds a call on the wire for as long as a test needs,
so what queues behind it is decided by the test, not by timing.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from ratelimit_backends import hammer_threads, unique_prefix

import buttress as bt
from buttress.ratelimit import _batching

WINDOW = 1e6  # nothing refills during a test


class Gate:
    """Wraps a loop's script call: counts the calls and their sizes, and can hold them."""

    def __init__(self, call: Callable[[list[bytes], bytes, bool], Awaitable[bytes]]) -> None:
        self.call = call
        self.sizes: list[int] = []
        self.open = asyncio.Event()
        self.open.set()
        self.entered = asyncio.Event()

    async def __call__(self, keys: list[bytes], request: bytes, writes: bool) -> bytes:
        self.sizes.append(int.from_bytes(request[17:19], "little"))  # "<BddH": decisions
        self.entered.set()
        await self.open.wait()
        return await self.call(keys, request, writes)


@pytest.fixture
async def backend(redis_url: str) -> AsyncIterator[bt.RedisBackend]:
    made = bt.RedisBackend(redis_url, prefix=unique_prefix("batching"))
    try:
        yield made
    finally:
        made.clear()
        await made.aclose()
        made.close()


async def gate(backend: bt.RedisBackend, rl: bt.RateLimiter) -> Gate:
    """Make the running loop's client (one peek), then put a gate on its calls."""
    await rl.peek_async({"user": "nobody", "org": "none"})
    batcher = backend._aclients[asyncio.get_running_loop()].batcher
    g = Gate(batcher._call)
    batcher._call = g
    return g


def limiter(backend: bt.RedisBackend, name: str = "b", user: int = 3) -> bt.RateLimiter:
    return bt.RateLimiter(
        [bt.Scope("user", user, WINDOW), bt.Scope("org", 100, WINDOW, algorithm="fixed_window")],
        backend=backend,
        name=name,
        failure_policy="fail_closed",
    )


async def test_tasks_deciding_at_once_share_one_call_and_decide_in_order(
    backend: bt.RedisBackend,
) -> None:
    rl = limiter(backend)
    g = await gate(backend, rl)
    ctx = {"user": "u1", "org": "o1"}
    decisions = await asyncio.gather(*(rl.try_acquire_async(ctx) for _ in range(10)))
    assert g.sizes == [10]  # all ten in one script call
    assert [d.allowed for d in decisions] == [True] * 3 + [False] * 7
    # Each decision saw the states the ones before it left: as if sent one by one.
    assert [d.remaining for d in decisions[:3]] == [2, 1, 0]
    assert all(d.scope == "user" and d.retry_after > 0 for d in decisions[3:])
    assert (await rl.peek_async({"user": "u1", "org": "o1"})).scopes[1].remaining == 97


async def test_what_queues_behind_a_call_goes_together_in_the_next(
    backend: bt.RedisBackend,
) -> None:
    rl = limiter(backend, user=100)
    other = limiter(backend, name="other", user=100)
    g = await gate(backend, rl)
    g.open.clear()
    first = asyncio.ensure_future(rl.try_acquire_async({"user": "u1", "org": "o1"}))
    await g.entered.wait()  # the first call is on the wire, alone
    behind = [
        asyncio.ensure_future(lim.try_acquire_async({"user": f"u{i}", "org": "o1"}))
        for i in range(5)
        for lim in (rl, other)
    ]
    peek = asyncio.ensure_future(rl.peek_async({"user": "u1", "org": "o1"}))
    for _ in range(3):
        await asyncio.sleep(0)  # real-time: loop turns, for the tasks to queue
    g.open.set()
    await asyncio.gather(first, *behind, peek)
    assert g.sizes == [1, 11]  # the lone first call, then all that queued behind it
    # The peek came after u1's second decision on rl: it sees both charges (and would take
    # a third).
    assert peek.result().scopes[0].remaining == 97
    assert [f.result().allowed for f in behind] == [True] * 10


async def test_a_caller_cancelled_before_its_call_is_never_charged(
    backend: bt.RedisBackend,
) -> None:
    rl = limiter(backend)
    g = await gate(backend, rl)
    g.open.clear()
    ctx = {"user": "u1", "org": "o1"}
    first = asyncio.ensure_future(rl.try_acquire_async(ctx))
    await g.entered.wait()
    left = asyncio.ensure_future(rl.try_acquire_async(ctx))
    stays = asyncio.ensure_future(rl.try_acquire_async(ctx))
    await asyncio.sleep(0)  # real-time: one loop turn, for both to queue
    left.cancel()
    g.open.set()
    assert (await first).allowed and (await stays).allowed
    with pytest.raises(asyncio.CancelledError):
        await left
    assert g.sizes == [1, 1]  # the cancelled decision never went out
    d = await rl.peek_async(ctx)
    assert d.allowed and d.remaining == 0  # two of three charged: room for one more


async def test_a_caller_cancelled_while_its_call_is_out_is_given_back(
    backend: bt.RedisBackend,
) -> None:
    rl = limiter(backend)
    g = await gate(backend, rl)
    g.open.clear()
    ctx = {"user": "u1", "org": "o1"}
    task = asyncio.ensure_future(rl.try_acquire_async(ctx))
    await g.entered.wait()  # on the wire
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    g.open.set()
    sender = backend._aclients[asyncio.get_running_loop()].batcher._sender
    assert sender is not None
    await sender  # the call answers; its admission, nobody's now, is refunded
    await asyncio.gather(*backend._giving_back)
    d = await rl.peek_async(ctx)
    assert d.remaining == 2  # all three left (a peek shows what would be left after it)
    assert d.scopes[1].remaining == 99


async def test_a_redis_error_fails_every_decision_of_its_call(backend: bt.RedisBackend) -> None:
    rl = limiter(backend)
    g = await gate(backend, rl)

    async def refused(keys: list[bytes], request: bytes, writes: bool) -> bytes:
        import redis

        raise redis.ConnectionError("connection reset by peer")

    g.call = refused
    ctx = {"user": "u1", "org": "o1"}
    outcomes = await asyncio.gather(
        *(rl.try_acquire_async(ctx) for _ in range(4)), return_exceptions=True
    )
    assert [type(o) for o in outcomes] == [bt.BackendError] * 4
    assert all("connection reset" in str(o) for o in outcomes)


def test_threads_deciding_at_once_admit_exactly_the_allowance(backend: bt.RedisBackend) -> None:
    rl = limiter(backend, user=25)
    calls: list[int] = []
    original = backend._decide

    def counted(*, keys: list[bytes], args: tuple[bytes], **options: bool) -> bytes:
        calls.append(int.from_bytes(args[0][17:19], "little"))
        reply: bytes = original(keys=keys, args=args, **options)
        return reply

    backend._decide = counted
    contexts = [{"user": f"u{i % 4}", "org": "o1"} for i in range(16)]
    admitted = hammer_threads(rl, contexts, attempts=20)  # 320 asked of 4 x 25
    assert sum(admitted) == 100
    assert sum(calls) == 320  # every decision went out once


def test_take_keeps_the_order_and_the_bounds() -> None:
    from buttress.ratelimit._wire import MAX_BATCH, Pending

    def pending(key: str, now: float = 0.0) -> tuple[Pending, None]:
        return (Pending([key], [], 1, now, True), None)

    queue = deque(pending(f"ns:a:user:{i}") for i in range(MAX_BATCH + 5))
    batch = _batching.take(queue, cluster=False, caller_time=False)
    assert len(batch) == MAX_BATCH and len(queue) == 5
    # On a cluster: one slot (the limiter's namespace:name) per batch, the rest kept in order.
    queue = deque([pending("ns:a:user:1"), pending("ns:b:user:1"), pending("ns:a:user:2")])
    assert [p.keys for p, _ in _batching.take(queue, cluster=True, caller_time=False)] == [
        ["ns:a:user:1"],
        ["ns:a:user:2"],
    ]
    assert [p.keys for p, _ in queue] == [["ns:b:user:1"]]
    # With the caller's clock: one time per batch.
    queue = deque([pending("ns:a:u:1", 1.0), pending("ns:a:u:2", 2.0)])
    assert len(_batching.take(queue, cluster=False, caller_time=True)) == 1


def test_a_lone_thread_waits_for_nobody(backend: bt.RedisBackend) -> None:
    rl = limiter(backend)
    done = threading.Event()

    def one() -> None:
        rl.try_acquire({"user": "u1", "org": "o1"})
        done.set()

    t = threading.Thread(target=one)
    t.start()
    t.join(timeout=10)
    assert done.is_set()
    assert not backend._threads._busy and not backend._threads._queue


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_starts_with_nothing_under_way() -> None:
    """A parent's thread has a call under way when the process forks: the child's decisions
    go out at once (none of its threads will ever answer the parent's queue)."""
    from buttress.ratelimit._wire import Decided, Pending

    parent = os.getpid()
    entered, gate = threading.Event(), threading.Event()

    def run(batch: list[Pending]) -> list[Decided]:
        if os.getpid() == parent:
            entered.set()
            gate.wait(timeout=30)
        return [Decided((True, [None], 0.0), None) for _ in batch]

    batcher = _batching.ThreadBatcher(run)
    pending = Pending(["ns:a:user:1"], [], 1, 0.0, True)
    t = threading.Thread(target=batcher.decide, args=(pending,))
    t.start()
    entered.wait(timeout=30)
    assert batcher._busy
    pid = os.fork()
    if pid == 0:  # the child: decide, and say how it went (a hang is killed by the alarm)
        signal.alarm(10)
        try:
            os._exit(0 if batcher.decide(pending).outcome is not None else 1)
        except BaseException:
            os._exit(2)
    gate.set()
    t.join()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
