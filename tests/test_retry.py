"""bt.Retry on its own: backoff waits on an injected clock, deadlines, refusals' retry_after,
an upstream's Retry-After, budgets, notes, events, and its four forms (call, call_async, a
decorator, the attempt loops). Every wait is a ManualClock's: nothing here sleeps."""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import buttress as bt


class Flaky:
    """Fails ``failures`` times with ``error``, then returns ``value``; records when it ran."""

    def __init__(self, clock: bt.ManualClock, failures: int, error: Exception | None = None):
        self.clock = clock
        self.failures = failures
        self.error = error or ConnectionError("down")
        self.starts: list[float] = []

    def __call__(self) -> str:
        self.starts.append(self.clock.monotonic())
        if len(self.starts) <= self.failures:
            raise self.error
        return "ok"

    async def run(self) -> str:
        return self()


def gaps(starts: list[float]) -> list[float]:
    return [round(b - a, 9) for a, b in itertools.pairwise(starts)]


def expected_waits(backoff: bt.Backoff, seed: int, n: int) -> list[float]:
    rng = random.Random(seed)
    return [round(backoff.delay(i, rng), 9) for i in range(1, n + 1)]


def test_a_call_is_retried_with_the_backoffs_seeded_waits(clock: bt.ManualClock) -> None:
    backoff = bt.Backoff(initial=0.5, multiplier=3.0, max=4.0, jitter="full")
    retry = bt.Retry(attempts=5, backoff=backoff, clock=clock, seed=7)
    op = Flaky(clock, failures=3)
    assert retry.call(op) == "ok"
    assert gaps(op.starts) == expected_waits(backoff, 7, 3)


def test_sync_and_async_make_the_same_decisions() -> None:
    backoff = bt.Backoff(initial=1.0, max=8.0, jitter="equal")
    a, b = bt.ManualClock(), bt.ManualClock()
    sync_op, async_op = Flaky(a, failures=4), Flaky(b, failures=4)
    with pytest.raises(ConnectionError) as sync_err:
        bt.Retry(attempts=4, backoff=backoff, clock=a, seed=3).call(sync_op)
    with pytest.raises(ConnectionError) as async_err:
        asyncio.run(bt.Retry(attempts=4, backoff=backoff, clock=b, seed=3).call_async(async_op.run))
    assert gaps(sync_op.starts) == gaps(async_op.starts) == expected_waits(backoff, 3, 3)
    sync_note, async_note = sync_err.value.__notes__[0], async_err.value.__notes__[0]
    assert sync_note.split(": ", 1)[1] == async_note.split(": ", 1)[1]


def test_exhaustion_re_raises_the_last_error_with_a_note(clock: bt.ManualClock, event_log) -> None:
    errors = iter([ConnectionError("first"), TimeoutError("second"), OSError("third")])

    def op() -> None:
        raise next(errors)

    retry = bt.Retry(attempts=3, backoff=bt.Backoff(initial=0.1, jitter="none"), clock=clock)
    with pytest.raises(OSError, match="third") as info:
        retry.call(op)
    (note,) = info.value.__notes__
    assert "gave up after 3 attempts" in note
    assert "0.1 s, 0.2 s" in note
    assert [m for m, _ in event_log.named("buttress", "retry", "retry")] == [
        {"attempt": 1, "wait": 0.1},
        {"attempt": 2, "wait": 0.2},
    ]
    assert [md["error"] for _, md in event_log.named("buttress", "retry", "retry")] == [
        "ConnectionError",
        "TimeoutError",
    ]
    ((m, md),) = event_log.named("buttress", "retry", "gave_up")
    assert m == {"attempts": 3}
    assert md["reason"] == "exhausted" and md["error"] == "OSError"
    assert md["name"].endswith("op")


def test_only_the_errors_named_by_on_are_retried(clock: bt.ManualClock) -> None:
    op = Flaky(clock, failures=5, error=ValueError("bad input"))
    with pytest.raises(ValueError) as info:
        bt.Retry(attempts=5, on=ConnectionError, clock=clock).call(op)
    assert len(op.starts) == 1
    assert not getattr(info.value, "__notes__", None)  # never retried: nothing to say

    op = Flaky(clock, failures=2, error=ValueError("flaky"))
    assert bt.Retry(attempts=3, on=(KeyError, ValueError), clock=clock).call(op) == "ok"

    op = Flaky(clock, failures=2, error=ValueError("transient"))
    on = lambda exc: "transient" in str(exc)  # noqa: E731
    assert bt.Retry(attempts=3, on=on, clock=clock).call(op) == "ok"


@pytest.mark.parametrize(
    "error",
    [
        TypeError("wrong call"),
        NameError("typo"),
        bt.ConfigError("x", "bad"),
        httpx.HTTPStatusError(
            "404", request=httpx.Request("GET", "http://x"), response=httpx.Response(404)
        ),
    ],
)
def test_by_default_mistakes_and_client_errors_are_not_retried(
    clock: bt.ManualClock, error: Exception
) -> None:
    op = Flaky(clock, failures=5, error=error)
    with pytest.raises(type(error)):
        bt.Retry(attempts=5, clock=clock).call(op)
    assert len(op.starts) == 1


def test_an_error_not_retried_after_retries_says_what_came_before(clock: bt.ManualClock) -> None:
    errors = iter([ConnectionError("flaky"), KeyError("gone")])

    def op() -> None:
        raise next(errors)

    with pytest.raises(KeyError) as info:
        bt.Retry(attempts=5, on=ConnectionError, clock=clock).call(op)
    assert "attempt 2 raised an error it does not retry" in info.value.__notes__[0]


def test_on_result_retries_an_unwanted_value_and_returns_the_last(clock: bt.ManualClock) -> None:
    answers = iter(["pending", "pending", "pending", "done"])
    retry = bt.Retry(attempts=3, on_result=lambda r: r == "pending", clock=clock)
    assert retry.call(lambda: next(answers)) == "pending"  # attempts ran out: the last value
    answers = iter(["pending", "done"])
    assert retry.call(lambda: next(answers)) == "done"


def test_a_refusal_waits_its_retry_after_when_the_deadline_allows(clock: bt.ManualClock) -> None:
    op = Flaky(clock, failures=1, error=bt.CircuitOpenError("payments", "open", retry_after=2.5))
    retry = bt.Retry(attempts=3, backoff=bt.Backoff(initial=0.1), deadline=5.0, clock=clock)
    assert retry.call(op) == "ok"
    assert gaps(op.starts) == [2.5]  # never before the breaker lets calls through


def test_a_refusal_past_the_deadline_is_raised_at_once(clock: bt.ManualClock, event_log) -> None:
    refusal = bt.RateLimitExceeded("too many", retry_after=30.0)
    op = Flaky(clock, failures=1, error=refusal)
    retry = bt.Retry(attempts=3, deadline=5.0, clock=clock)
    with pytest.raises(bt.RateLimitExceeded) as info:
        retry.call(op)
    assert clock.monotonic() == 0.0  # no wait at all
    assert "the wait it asked for (30 s) would pass the deadline" in info.value.__notes__[0]
    ((_, md),) = event_log.named("buttress", "retry", "gave_up")
    assert md["reason"] == "deadline"


def test_without_a_deadline_a_wait_longer_than_backoff_max_is_refused(
    clock: bt.ManualClock,
) -> None:
    op = Flaky(clock, failures=1, error=bt.CircuitOpenError("db", "open", retry_after=60.0))
    with pytest.raises(bt.CircuitOpenError) as info:
        bt.Retry(attempts=3, backoff=bt.Backoff(max=10.0), clock=clock).call(op)
    assert "would pass backoff.max" in info.value.__notes__[0]
    assert clock.monotonic() == 0.0


def test_a_refusal_that_can_never_be_admitted_is_not_retried(clock: bt.ManualClock) -> None:
    op = Flaky(clock, failures=3, error=bt.RateLimitExceeded("cost above limit", retry_after=None))
    with pytest.raises(bt.RateLimitExceeded):
        bt.Retry(attempts=3, on=bt.RejectedError, clock=clock).call(op)
    assert len(op.starts) == 1


@pytest.mark.parametrize(
    ("header", "wait"),
    [("7", 7.0), ("Thu, 01 Jan 1970 00:00:10 GMT", 10.0), ("soon", None)],
)
def test_an_upstreams_retry_after_is_honoured(header: str, wait: float | None) -> None:
    clock = bt.ManualClock(wall=0.0)  # the HTTP-date is 10 s after the wall clock's start
    response = httpx.Response(503, headers={"Retry-After": header})
    error = httpx.HTTPStatusError(
        "503", request=httpx.Request("GET", "http://x"), response=response
    )
    op = Flaky(clock, failures=1, error=error)
    retry = bt.Retry(
        attempts=2, backoff=bt.Backoff(initial=0.5, max=60, jitter="none"), clock=clock
    )
    assert retry.call(op) == "ok"
    if wait is None:
        assert gaps(op.starts) == [0.5]  # malformed: the backoff alone
    else:
        assert gaps(op.starts) == [wait]


def test_a_returned_429_response_is_retried_after_its_retry_after(clock: bt.ManualClock) -> None:
    answers = iter([httpx.Response(429, headers={"Retry-After": "3"}), httpx.Response(200)])
    retry = bt.Retry(
        attempts=3,
        backoff=bt.Backoff(initial=0.1),
        on_result=lambda r: r.status_code == 429,
        clock=clock,
    )
    assert retry.call(lambda: next(answers)).status_code == 200
    assert clock.monotonic() == 3.0


def test_a_custom_retry_after_hook_replaces_the_default(clock: bt.ManualClock) -> None:
    op = Flaky(clock, failures=1, error=ConnectionError("wait 4"))
    hook = lambda outcome: float(str(outcome).split()[-1])  # noqa: E731
    retry = bt.Retry(attempts=2, backoff=bt.Backoff(initial=0.1), retry_after=hook, clock=clock)
    assert retry.call(op) == "ok"
    assert gaps(op.starts) == [4.0]


def test_a_whole_number_of_seconds_asked_for_is_waited(clock: bt.ManualClock) -> None:
    op = Flaky(clock, failures=1, error=bt.LoadShedError("busy", retry_after=2))
    retry = bt.Retry(
        attempts=2, backoff=bt.Backoff(initial=0.1), retry_after=lambda e: 2, clock=clock
    )
    assert retry.call(op) == "ok"
    assert gaps(op.starts) == [2.0]


def test_a_retry_after_hook_that_returns_no_number_is_named(clock: bt.ManualClock) -> None:
    op = Flaky(clock, failures=1)
    retry = bt.Retry(attempts=2, retry_after=lambda e: "5s", clock=clock)
    with pytest.raises(TypeError, match="must return seconds"):
        retry.call(op)


def test_parse_retry_after() -> None:
    assert bt.parse_retry_after("120", now=0.0) == 120.0
    assert bt.parse_retry_after(b" 5 ", now=0.0) == 5.0
    assert bt.parse_retry_after("1.5", now=0.0) == 1.5
    assert bt.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert bt.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=2e9) == 0.0  # past
    for bad in ("", "-3", "soon", "nan", "inf", None):
        assert bt.parse_retry_after(bad, now=0.0) is None
    with pytest.raises(TypeError):
        bt.parse_retry_after(12, now=0.0)  # type: ignore[arg-type]


def test_the_deadline_is_visible_inside_the_attempts(clock: bt.ManualClock) -> None:
    seen: list[float | None] = []

    def op() -> str:
        seen.append(bt.remaining())
        clock.advance(1.0)
        if len(seen) < 3:
            raise ConnectionError
        return "ok"

    retry = bt.Retry(
        attempts=3, backoff=bt.Backoff(initial=0.5, jitter="none"), deadline=10.0, clock=clock
    )
    assert retry.call(op) == "ok"
    assert seen == [10.0, 8.5, 6.5]  # 1 s per attempt, waits of 0.5 and 1.0
    assert bt.remaining() is None


def test_the_budget_refuses_a_retry_and_the_error_says_so(clock: bt.ManualClock, event_log) -> None:
    budget = bt.RetryBudget(ratio=0.0, min_per_second=0.1, window=10.0, clock=clock)  # 1 retry
    retry = bt.Retry(attempts=5, budget=budget, clock=clock)
    op = Flaky(clock, failures=10)
    with pytest.raises(ConnectionError) as info:
        retry.call(op)
    assert len(op.starts) == 2  # the first attempt and the one retry the budget had
    assert "the retry budget refused a retry after 2 attempts" in info.value.__notes__[0]
    assert budget.refused == 1
    snap = budget.snapshot()
    assert (snap.requests, snap.retries, snap.available, snap.refused) == (1, 1, 0, 1)
    assert event_log.named("buttress", "retry", "gave_up")[0][1]["reason"] == "budget"


def test_the_decorator_keeps_the_function_and_retries_both_kinds(clock: bt.ManualClock) -> None:
    retry = bt.Retry(attempts=3, clock=clock)
    op = Flaky(clock, failures=2)

    @retry
    def fetch(x: int) -> str:
        """Docs."""
        return f"{op()}-{x}"

    @retry
    async def afetch(x: int) -> str:
        return f"{op()}-{x}"

    assert fetch.__name__ == "fetch" and fetch.__doc__ == "Docs."
    assert fetch(1) == "ok-1"
    op.starts.clear()
    assert asyncio.run(afetch(2)) == "ok-2"
    assert asyncio.iscoroutinefunction(afetch)
    with pytest.raises(TypeError, match="generator"):

        @retry
        def items():  # type: ignore[no-untyped-def]
            yield 1


def test_the_attempt_loop_retries_the_block(clock: bt.ManualClock) -> None:
    op = Flaky(clock, failures=2)
    results = []
    for attempt in bt.Retry(
        attempts=3, backoff=bt.Backoff(initial=1.0, jitter="none"), clock=clock
    ):
        with attempt:
            results.append((attempt.number, op()))
    assert results == [(3, "ok")]
    assert gaps(op.starts) == [1.0, 2.0]

    op = Flaky(clock, failures=5)
    with pytest.raises(ConnectionError) as info:
        for attempt in bt.Retry(attempts=2, clock=clock):
            with attempt:
                op()
    assert "gave up after 2 attempts" in info.value.__notes__[0]


def test_the_async_attempt_loop_waits_on_the_clock() -> None:
    clock = bt.ManualClock()
    op = Flaky(clock, failures=2)

    async def main() -> list[int]:
        numbers = []
        async for attempt in bt.Retry(
            attempts=3, backoff=bt.Backoff(initial=1.0, jitter="none"), clock=clock, deadline=30.0
        ):
            with attempt:
                numbers.append(attempt.number)
                assert bt.remaining() is not None
                await op.run()
        return numbers

    assert asyncio.run(main()) == [1, 2, 3]
    assert gaps(op.starts) == [1.0, 2.0]


def test_cancellation_and_interrupts_are_never_retried(clock: bt.ManualClock) -> None:
    calls = []

    async def op() -> None:
        calls.append(1)
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(bt.Retry(attempts=3, clock=clock).call_async(op))
    assert calls == [1]


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"attempts": 0}, "attempts"),
        ({"attempts": True}, "attempts"),
        ({"deadline": 0}, "deadline"),
        ({"deadline": float("inf")}, "deadline"),
        ({"deadline": "5s"}, "deadline"),
        ({"deadline": True}, "deadline"),
    ],
)
def test_bad_settings_name_themselves(kwargs: dict[str, Any], path: str) -> None:
    with pytest.raises(bt.ConfigError) as info:
        bt.Retry(**kwargs)
    assert info.value.path == path


@pytest.mark.parametrize(
    "kwargs",
    [
        {"on": "ConnectionError"},
        {"on": ()},
        {"on_result": 3},
        {"backoff": 0.5},
        {"budget": 10},
        {"seed": 1.5},
    ],
)
def test_wrong_types_are_type_errors_naming_the_argument(kwargs: dict[str, Any]) -> None:
    (name,) = kwargs
    with pytest.raises(TypeError, match=name):
        bt.Retry(**kwargs)


# -- model tests ----------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    attempts=st.integers(1, 8),
    initial=st.floats(0.0, 2.0),
    multiplier=st.floats(1.0, 4.0),
    grow=st.floats(0.0, 20.0),
    jitter=st.sampled_from(["full", "equal", "none"]),
    deadline=st.none() | st.floats(0.1, 30.0),
    durations=st.lists(st.floats(0.0, 3.0), min_size=8, max_size=8),
    asked=st.lists(st.none() | st.floats(0.0, 40.0), min_size=8, max_size=8),
    seed=st.integers(0, 2**32),
)
def test_model_waits_follow_the_backoff_and_never_pass_the_deadline(
    attempts: int,
    initial: float,
    multiplier: float,
    grow: float,
    jitter: str,
    deadline: float | None,
    durations: list[float],
    asked: list[float | None],
    seed: int,
) -> None:
    clock = bt.ManualClock()
    backoff = bt.Backoff(initial=initial, multiplier=multiplier, max=initial + grow, jitter=jitter)
    starts: list[float] = []

    def op() -> None:
        n = len(starts)
        starts.append(clock.monotonic())
        clock.advance(durations[n])
        if asked[n] is None:
            raise ConnectionError
        raise bt.LoadShedError("busy", retry_after=asked[n])

    retry = bt.Retry(attempts=attempts, backoff=backoff, deadline=deadline, clock=clock, seed=seed)
    with pytest.raises((ConnectionError, bt.LoadShedError)):
        retry.call(op)
    assert 1 <= len(starts) <= attempts
    for i, start in enumerate(starts[1:], start=1):
        wait = start - (starts[i - 1] + durations[i - 1])
        cap = backoff.cap(i)
        floor = cap / 2 if jitter == "equal" else cap if jitter == "none" else 0.0
        want = asked[i - 1]
        if want is not None and want > cap:
            assert wait == pytest.approx(want)  # a refusal: never before its retry_after
        else:
            assert floor - 1e-9 <= wait <= max(cap, want or 0.0) + 1e-9
        if deadline is not None:
            assert start < deadline  # no attempt starts past the deadline
        elif want is not None:
            assert want <= backoff.max  # without a deadline, max bounds every wait


def test_budget_holds_across_eight_threads() -> None:
    clock = bt.ManualClock()
    budget = bt.RetryBudget(ratio=0.2, min_per_second=1, window=10.0, clock=clock)
    retry = bt.Retry(
        attempts=4, backoff=bt.Backoff(initial=0.0, max=0.0), budget=budget, clock=clock
    )
    runs = [0]
    lock = threading.Lock()

    def op() -> None:
        with lock:
            runs[0] += 1
        raise ConnectionError

    def caller() -> None:
        for _ in range(50):
            with pytest.raises(ConnectionError):
                retry.call(op)

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    requests = 8 * 50
    assert runs[0] - requests <= 0.2 * requests + 10  # ratio x requests + floor (1/s x 10 s)
    assert runs[0] - requests == budget.snapshot().retries
    assert budget.refused > 0


def test_budget_holds_across_asyncio_tasks() -> None:
    clock = bt.ManualClock()
    budget = bt.RetryBudget(ratio=0.1, min_per_second=0.5, window=10.0, clock=clock)
    retry = bt.Retry(
        attempts=3, backoff=bt.Backoff(initial=0.0, max=0.0), budget=budget, clock=clock
    )
    runs = [0]

    async def op() -> None:
        runs[0] += 1
        await asyncio.sleep(0)  # real-time: one loop turn, so other tasks run between attempts
        raise ConnectionError

    async def caller() -> None:
        for _ in range(20):
            with pytest.raises(ConnectionError):
                await retry.call_async(op)

    async def main() -> None:
        await asyncio.gather(*(caller() for _ in range(16)))

    asyncio.run(main())
    requests = 16 * 20
    assert runs[0] - requests <= 0.1 * requests + 5
    assert budget.refused > 0
