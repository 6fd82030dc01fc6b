"""The bulkhead: a cap on calls in flight for threads and tasks, FIFO waiting, places never lost.

The core's rules (``_bulkhead/_core.py``) are held to a reference model over random
operations; the shell is driven by real threads and real asyncio tasks together.
"""

from __future__ import annotations

import asyncio
import pickle
import random
import threading
from collections import deque

import pytest

import buttress as bt
from buttress._bulkhead._core import GONE, SERVED, WAITING, BulkheadState, Waiter


class Steered:
    """An adaptive limit the test moves by hand (the contract a bulkhead reads)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.samples: list[tuple[float, float, int, bool]] = []

    def record(self, *, now: float, rtt: float, inflight: int, dropped: bool) -> int:
        self.samples.append((now, rtt, inflight, dropped))
        return self.limit


# -- the core against a reference model ---------------------------------------------------------


@pytest.mark.parametrize("seed", range(40))
def test_the_core_serves_in_order_and_never_loses_a_place(seed: int) -> None:
    rng = random.Random(seed)
    steered = Steered(rng.randint(1, 4))
    state = BulkheadState(steered, max_waiting=rng.randint(0, 6))
    holders = 0  # callers holding a place and running
    queue: deque[Waiter] = deque()  # the model's queue: live waiters, in order
    handed: list[Waiter] = []  # handed a place, not yet running (may still be cancelled)
    for _ in range(400):
        before = state.in_use
        op = rng.random()
        if op < 0.35:
            if state.enter():
                assert not queue, "a newcomer entered past a waiter"
                holders += 1
            else:
                waiter = Waiter(None, 0.0)
                if state.queue(waiter):
                    queue.append(waiter)
                else:
                    assert len(queue) == state.max_waiting
        elif op < 0.6 and holders:
            holders -= 1
            state.leave(1.0, 0.5, 1, rng.choice(["success", "dropped", "ignored"]))
        elif op < 0.7 and queue:
            waiter = queue[rng.randrange(len(queue))]
            assert not state.abandon(waiter, timed_out=rng.random() < 0.5)
            queue.remove(waiter)
            assert waiter.state == GONE
        elif op < 0.8:
            steered.limit = rng.randint(1, 5)
            state.serve()
        elif handed:
            waiter = handed.pop(rng.randrange(len(handed)))
            roll = rng.random()
            if roll < 0.3:  # cancelled as it was handed the place: passed on
                assert not state.abandon(waiter, timed_out=False)
            elif roll < 0.5:  # timed out as it was handed the place: kept
                assert state.abandon(waiter, timed_out=True)
                holders += 1
            else:
                holders += 1
        for waiter in state.handoffs:
            assert queue and queue[0] is waiter, "a place went to a waiter out of order"
            queue.popleft()
            assert waiter.state == SERVED
            handed.append(waiter)
        state.handoffs.clear()
        assert state.in_use == holders + len(handed)
        assert state.n_waiting == len(queue)
        assert all(w.state == WAITING for w in queue)
        if state.in_use > before:  # whoever entered now entered within the limit
            assert state.in_use <= steered.limit
        if queue:  # no one waits while a place is free
            assert state.in_use >= steered.limit
    # Everyone leaves: every place comes back, and the queue drains.
    while holders or handed or queue:
        if handed:
            handed.pop()
            holders += 1
        if holders:
            holders -= 1
            state.leave(2.0, 1.0, 1, "ignored")
        elif queue:
            assert not state.abandon(queue.popleft(), timed_out=True)
        for waiter in state.handoffs:
            assert queue.popleft() is waiter
            handed.append(waiter)
        state.handoffs.clear()
    assert state.in_use == 0 and state.n_waiting == 0


def test_a_waiter_that_times_out_as_it_is_handed_a_place_keeps_it() -> None:
    state = BulkheadState(1, max_waiting=2)
    assert state.enter()
    first, second = Waiter("a", 0.0), Waiter("b", 0.0)
    assert not state.enter() and state.queue(first) and state.queue(second)
    state.leave(1.0, 0.0, 1, "success")
    assert state.handoffs == [first] and state.in_use == 1
    assert state.abandon(first, timed_out=True)  # kept: served, late by a hair
    assert state.in_use == 1 and state.n_waiting == 1


def test_a_cancelled_waiter_hands_its_place_to_the_next() -> None:
    state = BulkheadState(1, max_waiting=2)
    assert state.enter()
    first, second = Waiter("a", 0.0), Waiter("b", 0.0)
    state.queue(first)
    state.queue(second)
    state.leave(1.0, 0.0, 1, "success")
    assert state.handoffs == [first]
    state.handoffs.clear()
    assert not state.abandon(first, timed_out=False)
    assert state.handoffs == [second] and state.in_use == 1 and state.n_waiting == 0


def test_a_rising_limit_serves_waiters_and_a_falling_one_admits_no_one() -> None:
    steered = Steered(2)
    state = BulkheadState(steered, max_waiting=5)
    assert state.enter() and state.enter() and not state.enter()
    waiters = [Waiter(i, 0.0) for i in range(3)]
    for w in waiters:
        assert state.queue(w)
    steered.limit = 4
    state.serve()
    assert state.handoffs == waiters[:2] and state.in_use == 4
    state.handoffs.clear()
    steered.limit = 1
    state.leave(1.0, 0.0, 4, "success")
    state.leave(1.0, 0.0, 4, "success")
    assert state.in_use == 2 and not state.handoffs  # still over the new limit
    state.leave(1.0, 0.0, 4, "success")
    state.leave(1.0, 0.0, 4, "success")
    assert state.handoffs == [waiters[2]] and state.in_use == 1


def test_samples_reach_the_adaptive_limit_except_ignored_ones() -> None:
    steered = Steered(3)
    state = BulkheadState(steered, max_waiting=0)
    for _ in range(3):
        assert state.enter()
    state.leave(10.0, 9.5, 3, "success")
    state.leave(11.0, 9.0, 2, "dropped")
    state.leave(12.0, 9.0, 1, "ignored")
    assert steered.samples == [(10.0, 0.5, 3, False), (11.0, 2.0, 2, True)]
    assert state.service_time == 0.5  # only successes estimate the service time


# -- the shell: threads and tasks together ------------------------------------------------------


def test_threads_and_tasks_together_never_exceed_the_limit_and_lose_no_place() -> None:
    limit = 4
    bulkhead = bt.Bulkhead("mixed", max_concurrent=limit, max_waiting=10_000, wait_timeout=None)
    inside = 0
    peak = 0
    guard = threading.Lock()
    errors: list[BaseException] = []

    def hold() -> None:
        nonlocal inside, peak
        with guard:
            inside += 1
            peak = max(peak, inside)
            assert inside <= limit
        with guard:
            inside -= 1

    def thread_worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(200):
                if rng.random() < 0.2:
                    permit = bulkhead.try_enter()
                    if permit is not None:
                        hold()
                        permit.release()
                    continue
                with bulkhead:
                    hold()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    async def tasks() -> tuple[int, int]:
        rng = random.Random(7)
        done = cancelled = 0

        async def task_worker() -> None:
            async with bulkhead:
                hold()
                for _ in range(rng.randint(0, 3)):
                    await asyncio.sleep(0)  # real-time: a loop turn held inside, no time passes

        running = [asyncio.create_task(task_worker()) for _ in range(200)]
        for _ in range(20):
            await asyncio.sleep(0)  # real-time: let some queue and some enter
            for task in rng.sample(running, 5):
                task.cancel()
        for outcome in await asyncio.gather(*running, return_exceptions=True):
            if isinstance(outcome, asyncio.CancelledError):
                cancelled += 1
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                done += 1
        return done, cancelled

    threads = [threading.Thread(target=thread_worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    done, cancelled = asyncio.run(tasks())
    for t in threads:
        t.join()
    assert not errors
    assert done + cancelled == 200 and cancelled > 0
    assert peak <= limit
    snapshot = bulkhead.snapshot()
    assert snapshot.in_use == 0 and snapshot.waiting == 0
    assert snapshot.peak_in_use <= limit


async def test_tasks_are_served_in_the_order_they_queued() -> None:
    bulkhead = bt.Bulkhead("fifo", max_concurrent=1, max_waiting=20, wait_timeout=None)
    order: list[int] = []
    holder = bulkhead.try_enter()
    assert holder is not None

    async def worker(i: int) -> None:
        async with bulkhead:
            order.append(i)
            await asyncio.sleep(0)  # real-time: one loop turn inside, while others wait

    tasks = []
    for i in range(10):
        tasks.append(asyncio.create_task(worker(i)))
        await asyncio.sleep(0)  # real-time: the task runs up to its wait
        assert bulkhead.waiting == i + 1
    # A newcomer while the place is free for an instant must not barge past the queue.
    holder.release()
    assert bulkhead.try_enter() is None
    await asyncio.gather(*tasks)
    assert order == list(range(10))
    assert bulkhead.in_use == 0


async def test_a_task_cancelled_after_being_handed_a_place_passes_it_on() -> None:
    bulkhead = bt.Bulkhead("handoff", max_concurrent=1, max_waiting=5, wait_timeout=None)
    holder = bulkhead.try_enter()
    assert holder is not None
    entered: list[str] = []

    async def worker(name: str) -> None:
        async with bulkhead:
            entered.append(name)

    first = asyncio.create_task(worker("first"))
    second = asyncio.create_task(worker("second"))
    await asyncio.sleep(0)  # real-time: both queue
    assert bulkhead.waiting == 2
    holder.release()  # handed to `first`, which has not run yet
    first.cancel()
    await asyncio.wait_for(asyncio.gather(first, second, return_exceptions=True), 10)
    assert entered == ["second"]
    assert first.cancelled()
    assert bulkhead.in_use == 0 and bulkhead.waiting == 0


async def test_a_wait_times_out_on_the_injected_clock() -> None:
    clock = bt.ManualClock()
    bulkhead = bt.Bulkhead("slow", max_concurrent=1, max_waiting=1, wait_timeout=2.0, clock=clock)
    holder = bulkhead.try_enter()
    assert holder is not None
    with pytest.raises(bt.BulkheadFullError) as caught:
        await bulkhead.enter_async()
    assert caught.value.reason == "timeout"
    assert clock.monotonic() == 2.0  # waited its wait_timeout, on the clock
    assert bulkhead.snapshot().timed_out == 1 and bulkhead.waiting == 0
    # A full queue refuses at once.
    clock.set(2.0)
    waiting = asyncio.create_task(bulkhead.enter_async())
    await asyncio.sleep(0)  # real-time: it queues
    with pytest.raises(bt.BulkheadFullError) as full:
        await bulkhead.enter_async()
    assert full.value.reason == "full" and full.value.waiting == 1
    holder.release()
    (await waiting).release()
    assert bulkhead.in_use == 0


def test_a_thread_wait_times_out_when_the_clock_passes_its_deadline() -> None:
    clock = bt.ManualClock()
    bulkhead = bt.Bulkhead("slow", max_concurrent=1, max_waiting=1, wait_timeout=1.0, clock=clock)
    assert bulkhead.try_enter() is not None
    outcome: list[BaseException] = []

    def waiter() -> None:
        try:
            bulkhead.enter()
        except bt.BulkheadFullError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=waiter)
    thread.start()
    while bulkhead.waiting == 0:  # real-time: until the thread has queued
        threading.Event().wait(0.001)  # real-time: a thread is queueing
    clock.advance(1.0)
    thread.join(timeout=10)
    assert outcome and isinstance(outcome[0], bt.BulkheadFullError)
    assert outcome[0].reason == "timeout"


def test_a_thread_waits_for_a_place_a_task_gives_back() -> None:
    bulkhead = bt.Bulkhead("shared", max_concurrent=1, max_waiting=1, wait_timeout=None)
    entered = threading.Event()

    async def main() -> None:
        async with bulkhead:
            thread = threading.Thread(target=lambda: (bulkhead.enter().release(), entered.set()))
            thread.start()
            while bulkhead.waiting == 0:  # real-time: until the thread has queued
                await asyncio.sleep(0.001)  # real-time: a thread is queueing
        await asyncio.to_thread(thread.join, 10)

    asyncio.run(main())
    assert entered.is_set() and bulkhead.in_use == 0


async def test_a_task_waits_for_a_place_a_thread_gives_back() -> None:
    bulkhead = bt.Bulkhead("shared", max_concurrent=1, max_waiting=1, wait_timeout=None)
    permit = bulkhead.try_enter()
    assert permit is not None
    waiting = asyncio.create_task(bulkhead.enter_async())
    await asyncio.sleep(0)  # real-time: it queues
    await asyncio.to_thread(permit.release)  # woken through its loop, from another thread
    (await asyncio.wait_for(waiting, 10)).release()
    assert bulkhead.in_use == 0


def test_errors_and_exits_always_give_the_place_back() -> None:
    bulkhead = bt.Bulkhead("errors", max_concurrent=1)

    def boom() -> None:
        raise ValueError("no")

    for _ in range(3):
        with pytest.raises(ValueError):
            bulkhead.call(boom)
        with pytest.raises(KeyError), bulkhead:
            raise KeyError("k")
    assert bulkhead.in_use == 0
    permit = bulkhead.try_enter()
    assert permit is not None
    permit.release()
    permit.release()  # a second release does nothing
    assert bulkhead.in_use == 0


async def test_call_async_and_the_decorator() -> None:
    bulkhead = bt.Bulkhead("deco", max_concurrent=2)

    @bulkhead
    async def double(x: int) -> int:
        assert bulkhead.in_use == 1
        return 2 * x

    @bulkhead
    def triple(x: int) -> int:
        assert bulkhead.in_use == 1
        return 3 * x

    assert await double(2) == 4
    assert triple(2) == 6

    async def echo(x: int) -> int:
        return x

    assert await bulkhead.call_async(echo, 5) == 5
    assert bulkhead.snapshot().admitted == 3


def test_a_refusal_says_what_is_full_and_when_to_come_back() -> None:
    clock = bt.ManualClock()
    bulkhead = bt.Bulkhead("search", max_concurrent=2, clock=clock)
    for _ in range(4):
        permit = bulkhead.enter()
        clock.advance(0.2)
        permit.release()
    a, b = bulkhead.enter(), bulkhead.enter()
    refusals: list[bt.BulkheadFullError] = []
    bulkhead.on_refused(lambda name, error: refusals.append(error))
    with pytest.raises(bt.BulkheadFullError) as caught:
        bulkhead.enter()
    error = caught.value
    assert isinstance(error, bt.RejectedError)
    assert (error.bulkhead, error.reason, error.limit, error.in_use) == ("search", "full", 2, 2)
    assert error.retry_after == pytest.approx(0.2)
    assert "bulkhead 'search' full (2 of 2 in use, 0 waiting)" in str(error)
    assert refusals == [error]
    assert bulkhead.try_enter() is None and len(refusals) == 2
    again = pickle.loads(pickle.dumps(error))
    assert (again.bulkhead, again.reason, again.retry_after) == ("search", "full", 0.2)
    assert bt.RejectedError.from_dict(error.to_dict()).to_dict() == error.to_dict()
    a.release()
    b.release()
    assert bulkhead.snapshot().rejected == 2


def test_the_deadline_of_the_current_call_bounds_a_wait() -> None:
    from buttress._policies import DEADLINE

    clock = bt.ManualClock()
    bulkhead = bt.Bulkhead(
        "deadline", max_concurrent=1, max_waiting=1, wait_timeout=None, clock=clock
    )
    assert bulkhead.try_enter() is not None
    token = DEADLINE.set((0.0, clock))  # the deadline has passed
    try:
        with pytest.raises(bt.BulkheadFullError) as caught:
            bulkhead.enter()
    finally:
        DEADLINE.reset(token)
    assert caught.value.reason == "timeout"


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({}, "max_concurrent"),
        ({"max_concurrent": 2, "limit": Steered(2)}, "max_concurrent"),
        ({"max_concurrent": 0}, "max_concurrent"),
        ({"max_concurrent": 2.5}, "max_concurrent"),
        ({"max_concurrent": True}, "max_concurrent"),
        ({"max_concurrent": 2, "max_waiting": -1}, "max_waiting"),
        ({"max_concurrent": 2, "wait_timeout": -0.5}, "wait_timeout"),
        ({"max_concurrent": 2, "wait_timeout": "1s"}, "wait_timeout"),
        ({"limit": 5}, "limit"),
    ],
)
def test_bad_settings_name_what_is_wrong(kwargs: dict[str, object], path: str) -> None:
    with pytest.raises(bt.ConfigError) as caught:
        bt.Bulkhead("x", **kwargs)  # type: ignore[arg-type]
    assert caught.value.path == path


def test_exit_without_enter_is_an_error_not_a_lost_count() -> None:
    bulkhead = bt.Bulkhead("x", max_concurrent=1)
    with pytest.raises(RuntimeError, match="exit without a matching enter"):
        bulkhead.__exit__(None, None, None)
    assert bulkhead.in_use == 0
