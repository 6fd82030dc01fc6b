"""The shared scheduler: one thread (or task) running timed jobs; never killed by a job."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import threading
import time
from typing import Any

import pytest

from buttress import AsyncScheduler, ManualClock, Scheduler


def test_jobs_run_in_deadline_order_when_due(clock: ManualClock) -> None:
    sched = Scheduler(clock=clock, background=False)
    ran: list[str] = []
    sched.call_later(5.0, lambda: ran.append("late"))
    sched.call_later(1.0, lambda: ran.append("early"))
    sched.call_later(0.0, lambda: ran.append("now"))
    assert sched.run_due() == 1
    clock.advance(5.0)
    assert sched.run_due() == 2
    assert ran == ["now", "early", "late"]
    assert sched.run_due() == 0


def test_periodic_jobs_repeat_within_their_jitter(clock: ManualClock) -> None:
    sched = Scheduler(clock=clock, background=False, rng=random.Random(3))
    times: list[float] = []
    handle = sched.call_every(10.0, lambda: times.append(clock.monotonic()), jitter=0.2)
    for _ in range(200):
        clock.advance(0.5)
        sched.run_due()
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) >= 8
    assert all(7.5 <= g <= 12.5 for g in gaps), gaps  # 10 ± 20 %, plus the 0.5 s steps
    assert len({round(g, 1) for g in gaps}) > 1  # jittered
    sched.cancel(handle)
    clock.advance(100.0)
    assert sched.run_due() == 0


def test_cancelled_jobs_never_run(clock: ManualClock) -> None:
    sched = Scheduler(clock=clock, background=False)
    ran: list[int] = []
    h = sched.call_later(1.0, lambda: ran.append(1))
    h.cancel()
    clock.advance(2.0)
    assert sched.run_due() == 0
    assert ran == []


def test_a_raising_job_is_logged_and_the_thread_carries_on(caplog: Any) -> None:
    sched = Scheduler(name="test-sched")
    done = threading.Event()

    def boom() -> None:
        raise RuntimeError("job failed")

    sched.call_later(0.0, boom)
    sched.call_later(0.0, done.set)
    assert done.wait(10.0)
    sched.close()
    assert "job failed" in caplog.text or any(
        r.exc_info and "job failed" in str(r.exc_info[1]) for r in caplog.records
    )
    assert any(r.levelno == logging.ERROR for r in caplog.records)


def test_close_stops_the_thread_and_drops_pending_jobs() -> None:
    sched = Scheduler()
    started = threading.Event()
    sched.call_later(0.0, started.set)
    assert started.wait(10.0)
    thread = sched._thread
    assert thread is not None
    assert thread.daemon
    assert thread.is_alive()
    ran: list[int] = []
    sched.call_later(3600.0, lambda: ran.append(1))
    sched.close()
    assert not thread.is_alive()
    assert sched.closed
    late = sched.call_later(0.0, lambda: ran.append(2))
    assert late.cancelled
    assert ran == []


def test_scheduling_from_any_thread_wakes_the_scheduler() -> None:
    sched = Scheduler()
    done = threading.Event()
    t = threading.Thread(target=lambda: sched.call_later(0.0, done.set))
    t.start()
    t.join()
    assert done.wait(10.0)
    sched.close()


def test_bad_arguments_are_refused(clock: ManualClock) -> None:
    sched = Scheduler(clock=clock, background=False)
    with pytest.raises(ValueError, match="interval"):
        sched.call_every(0.0, lambda: None)
    with pytest.raises(ValueError, match="jitter"):
        sched.call_every(1.0, lambda: None, jitter=1.0)
    with pytest.raises(ValueError, match="delay"):
        sched.call_later(-1.0, lambda: None)
    with pytest.raises(TypeError):
        sched.call_later(0.0, 42)  # type: ignore[arg-type]
    # Infinite times would reach the thread's wait and kill it (OverflowError).
    with pytest.raises(ValueError, match="delay must be a finite"):
        sched.call_later(float("inf"), lambda: None)
    with pytest.raises(ValueError, match="interval must be a finite"):
        sched.call_every(float("inf"), lambda: None)
    with pytest.raises(ValueError, match="delay"):
        sched.call_later(float("nan"), lambda: None)


def test_a_job_far_in_the_future_leaves_the_thread_waiting_and_alive(clock: ManualClock) -> None:
    sched = Scheduler(clock=clock)
    ran = threading.Event()
    sched.call_later(1e10, lambda: None)  # beyond threading.TIMEOUT_MAX
    sched.call_later(0.0, ran.set)
    assert ran.wait(10.0)
    thread = sched._thread
    assert thread is not None and thread.is_alive()
    sched.close()
    assert not thread.is_alive()


def test_run_due_after_close_does_not_swallow_the_stop_request() -> None:
    # run_due() (e.g. infra.run_maintenance() from another thread) drains the same inbox.
    sched = Scheduler()
    sched.call_later(3600.0, lambda: None)  # starts the thread
    thread = sched._thread
    assert thread is not None
    sched.close(wait=False)
    assert sched.run_due() == 0
    thread.join(10.0)
    assert not thread.is_alive()


def test_async_scheduler_moves_to_the_next_event_loop() -> None:
    sched = AsyncScheduler()
    ran: list[str] = []

    async def first() -> None:
        done = asyncio.Event()
        sched.call_later(0.0, lambda: (ran.append("first loop"), done.set()))
        await asyncio.wait_for(done.wait(), 10.0)

    async def second() -> None:
        done = asyncio.Event()
        sched.call_later(0.0, lambda: (ran.append("second loop"), done.set()))
        await asyncio.wait_for(done.wait(), 10.0)
        await sched.aclose()

    asyncio.run(first())
    asyncio.run(second())  # the first loop is closed: the scheduler starts on this one
    assert ran == ["first loop", "second loop"]


async def test_async_scheduler_awaits_coroutine_jobs_and_survives_errors(caplog: Any) -> None:
    sched = AsyncScheduler()
    done = asyncio.Event()

    async def boom() -> None:
        raise RuntimeError("async job failed")

    async def finish() -> None:
        done.set()

    sched.call_later(0.0, boom)
    sched.call_later(0.0, finish)
    await asyncio.wait_for(done.wait(), 10.0)
    assert "async job failed" in caplog.text or any(
        r.exc_info and "async job failed" in str(r.exc_info[1]) for r in caplog.records
    )
    await sched.aclose()
    assert sched.closed
    assert sched._task is not None
    assert sched._task.done()


async def test_async_scheduler_takes_requests_from_other_threads() -> None:
    sched = AsyncScheduler()
    done = asyncio.Event()
    sched.call_later(3600.0, lambda: None)  # starts the task on this loop
    t = threading.Thread(target=lambda: sched.call_later(0.0, done.set))
    t.start()
    t.join()
    await asyncio.wait_for(done.wait(), 10.0)
    await sched.aclose()


async def test_async_scheduler_manual_mode(clock: ManualClock) -> None:
    sched = AsyncScheduler(clock=clock, background=False)
    ran: list[str] = []

    async def job() -> None:
        ran.append("async")

    sched.call_every(2.0, job)
    sched.call_later(1.0, lambda: ran.append("sync"))
    clock.advance(2.0)
    assert await sched.run_due() == 2
    assert ran == ["sync", "async"]
    await sched.aclose()


def test_a_blocking_job_that_hangs_holds_up_no_other_job_nor_close() -> None:
    sched = Scheduler(name="blocking")
    release, ran = threading.Event(), threading.Event()
    try:
        sched.call_later(0.0, lambda: release.wait(30.0), blocking=True)
        sched.call_later(0.0, ran.set)
        assert ran.wait(10.0)
        started = time.monotonic()
        sched.close()
        assert time.monotonic() - started < 1.0  # the hung job's worker is not waited for
    finally:
        release.set()


def test_a_periodic_blocking_job_skips_its_turns_while_it_runs(clock: ManualClock) -> None:
    sched = Scheduler(clock=clock, background=False)
    started = threading.Semaphore(0)
    release = threading.Event()
    threads: list[threading.Thread] = []

    def job() -> None:
        threads.append(threading.current_thread())
        started.release()
        release.wait(30.0)

    sched.call_every(1.0, job, delay=0.0, blocking=True)
    assert sched._run_due(dispatch=True) == 1  # what the thread does: hand it to a worker
    assert started.acquire(timeout=10.0)
    clock.advance(1.0)
    assert sched._run_due(dispatch=True) == 0  # still running: this turn is skipped
    release.set()
    assert sched._join_blocking(10.0)
    clock.advance(1.0)
    assert sched.run_due() == 1  # run_due() runs it here, in this thread
    assert threads[0] is not threading.current_thread()
    assert threads[1] is threading.current_thread()


async def test_an_async_blocking_job_runs_in_a_task_of_its_own() -> None:
    sched = AsyncScheduler()
    hung = asyncio.Event()
    ran = asyncio.Event()

    async def hang() -> None:
        hung.set()
        await asyncio.Event().wait()  # for ever: only cancellation ends it

    sched.call_later(0.0, hang, blocking=True)
    sched.call_later(0.0, ran.set)
    await asyncio.wait_for(ran.wait(), 10.0)
    await asyncio.wait_for(hung.wait(), 10.0)
    [task] = sched._jobs
    await asyncio.wait_for(sched.aclose(), 10.0)  # cancels it
    assert task.cancelled()
