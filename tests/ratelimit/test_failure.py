"""The failure policy: what a limiter does while its backend is down, and how it recovers.

A backend that fails on demand (a memory backend behind a switch) and a ``ManualClock`` drive
every case; the real outages (a killed and a paused redis-server) are in ``test_outage.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Sequence
from typing import Any

import pytest

import buttress as bt
from buttress._health import build_report
from buttress.ratelimit import Algorithm, Outcome, TimeBase

EV_DOWN = ("buttress", "rate_limiter", "backend_down")
EV_RECOVERED = ("buttress", "rate_limiter", "backend_recovered")


class Switchable:
    """A backend that keeps state in memory but fails every call while ``down``."""

    def __init__(self) -> None:
        self.inner = bt.MemoryBackend()
        self.down = False
        self.calls = 0

    @property
    def time_base(self) -> TimeBase:
        return "wall"

    def _call(self) -> None:
        self.calls += 1
        if self.down:
            raise bt.BackendError("connection refused")

    def decide(
        self,
        keys: Sequence[str],
        algorithms: Sequence[Algorithm],
        cost: float,
        now: float,
        commit: bool = True,
    ) -> Outcome:
        self._call()
        return self.inner.decide(keys, algorithms, cost, now, commit)

    async def decide_async(self, *args: Any) -> Outcome:
        return self.decide(*args)

    def refund(
        self, keys: Sequence[str], algorithms: Sequence[Algorithm], cost: float, now: float
    ) -> None:
        self._call()
        self.inner.refund(keys, algorithms, cost, now)

    async def refund_async(self, *args: Any) -> None:
        self.refund(*args)

    def reset(self, keys: Sequence[str]) -> None:
        self._call()
        self.inner.reset(keys)

    async def reset_async(self, keys: Sequence[str]) -> None:
        self.reset(keys)

    def clear(self, prefix: str) -> int:
        self._call()
        return self.inner.clear(prefix)

    def key_count(self) -> int:
        self._call()
        return self.inner.key_count()

    def maintain(self, now: float) -> int:
        return self.inner.maintain(now)


class ReadsOnly(Switchable):
    """While ``down``, reads (peeks) still answer and writes fail: a read-only or locked SQLite
    file (WAL readers never wait), a Redis replica."""

    def decide(
        self,
        keys: Sequence[str],
        algorithms: Sequence[Algorithm],
        cost: float,
        now: float,
        commit: bool = True,
    ) -> Outcome:
        if commit:
            self._call()
        else:
            self.calls += 1
        return self.inner.decide(keys, algorithms, cost, now, commit)


class ProvesWrites(ReadsOnly):
    """A :class:`ReadsOnly` that can prove it writes (as SQLite and Redis can)."""

    def __init__(self) -> None:
        super().__init__()
        self.checked: list[list[str]] = []

    def check_write(self, keys: Sequence[str] = ()) -> None:
        self.checked.append(list(keys))
        self._call()


def limiter(clock: bt.ManualClock, backend: Switchable, policy: str, **kw: Any) -> bt.RateLimiter:
    return bt.RateLimiter(
        [bt.Scope("user", 2, 60.0), bt.Scope("global", 100, 60.0)],
        backend=backend,  # type: ignore[arg-type]
        clock=clock,
        name=policy,
        failure_policy=policy,  # type: ignore[arg-type]
        **kw,
    )


def health_of(rl: bt.RateLimiter) -> str:
    report = build_report("test", limiters={rl.name: rl.snapshot()}, time=0.0)
    (check,) = report.checks
    return check.status


def test_fail_open_admits_while_down_and_recovers_by_itself(
    clock: bt.ManualClock, event_log: Any
) -> None:
    backend = Switchable()
    rl = limiter(clock, backend, "fail_open", backend_retry_interval=1.0)
    assert rl.try_acquire("u1") and rl.try_acquire("u1")
    assert not rl.try_acquire("u1")  # the user's limit is spent

    backend.down = True
    clock.advance(0.25)
    d = rl.try_acquire("u1")
    assert d.allowed  # the outage admits: limits are not enforced while they cannot be counted
    assert d.remaining == 1  # numbers as if every scope were unused
    snap = rl.snapshot()
    assert (snap.backend_status, snap.failure_policy, snap.backend_errors) == (
        "down",
        "fail_open",
        1,
    )
    assert snap.keys is None
    assert health_of(rl) == "warn"
    assert [md for _, md in event_log.named(*EV_DOWN)] == [
        {
            "limiter": "fail_open",
            "namespace": "buttress",
            "backend": "Switchable",
            "policy": "fail_open",
            "error": "connection refused",
        }
    ]

    # Within the retry interval the backend is spared: decisions follow the policy at once.
    calls = backend.calls
    assert all(rl.try_acquire("u1").allowed for _ in range(5))
    assert backend.calls == calls

    backend.down = False  # it is back, but nobody has asked yet: still shown as down
    assert rl.snapshot().backend_status == "down"
    clock.advance(1.0)
    d = rl.try_acquire("u1")  # the probe: a real decision again (the state survived)
    assert not d.allowed
    assert d.scope == "user"
    assert rl.snapshot().backend_status == "ok"
    assert health_of(rl) == "pass"
    ((measurements, metadata),) = event_log.named(*EV_RECOVERED)
    assert measurements == {"downtime": pytest.approx(1.0)}
    assert metadata["policy"] == "fail_open"
    assert len(event_log.named(*EV_DOWN)) == 1  # one outage, one event


def test_fail_closed_raises_while_down_and_recovers_by_itself(clock: bt.ManualClock) -> None:
    backend = Switchable()
    rl = limiter(clock, backend, "fail_closed", backend_retry_interval=0.5)
    assert rl.try_acquire("u1")
    backend.down = True
    with pytest.raises(bt.BackendError, match=r"buttress:fail_closed.*Switchable is down") as info:
        rl.try_acquire("u1")
    assert isinstance(info.value.__cause__, bt.BackendError)  # the backend's own error
    with pytest.raises(bt.BackendError):
        rl.try_acquire("u1")  # spared: raised at once, without a call
    with pytest.raises(bt.BackendError):
        rl.peek("u1")
    with pytest.raises(bt.BackendError):
        rl.acquire("u1", timeout=1.0)
    with pytest.raises(bt.BackendError):
        rl.refund("u1")
    assert backend.calls == 2  # the first decision, then nothing within the interval
    snap = rl.snapshot()
    assert (snap.backend_status, snap.failure_policy) == ("down", "fail_closed")
    assert snap.waiting == 0  # the failed acquire left no waiter behind
    assert health_of(rl) == "fail"
    assert snap.admitted == 1

    backend.down = False
    clock.advance(0.5)
    assert rl.try_acquire("u1")
    assert not rl.try_acquire("u1")  # the limit is enforced again, with the state kept
    assert rl.snapshot().backend_status == "ok"


def test_a_failed_probe_starts_a_new_interval(clock: bt.ManualClock, event_log: Any) -> None:
    backend = Switchable()
    rl = limiter(clock, backend, "fail_open", backend_retry_interval=1.0)
    backend.down = True
    rl.try_acquire("u1")
    for _ in range(3):
        clock.advance(1.0)
        calls = backend.calls
        rl.try_acquire("u1")  # the probe fails
        rl.try_acquire("u1")  # spared
        assert backend.calls == calls + 1
    assert rl.snapshot().backend_errors == 4
    assert len(event_log.named(*EV_DOWN)) == 1
    assert event_log.named(*EV_RECOVERED) == []


def test_retry_interval_zero_tries_every_call(clock: bt.ManualClock) -> None:
    backend = Switchable()
    rl = limiter(clock, backend, "fail_open", backend_retry_interval=0)
    backend.down = True
    for _ in range(3):
        assert rl.try_acquire("u1")
    assert backend.calls == 3
    backend.down = False
    assert rl.try_acquire("u1")
    assert rl.snapshot().backend_status == "ok"


def test_refunds_are_dropped_when_failing_open(clock: bt.ManualClock) -> None:
    backend = Switchable()
    rl = limiter(clock, backend, "fail_open", backend_retry_interval=0)
    assert rl.try_acquire("u1") and rl.try_acquire("u1")
    backend.down = True
    rl.refund("u1")  # nothing to give back to: dropped, and the outage is recorded
    assert rl.snapshot().backend_status == "down"
    backend.down = False
    assert not rl.try_acquire("u1")  # the refund did not happen


def test_reset_and_clear_always_raise(clock: bt.ManualClock) -> None:
    backend = Switchable()
    rl = limiter(clock, backend, "fail_open")
    backend.down = True
    with pytest.raises(bt.BackendError):
        rl.reset("u1")
    with pytest.raises(bt.BackendError):
        rl.clear()


async def test_async_paths_follow_the_policy(clock: bt.ManualClock) -> None:
    backend = Switchable()
    open_rl = limiter(clock, backend, "fail_open", backend_retry_interval=0)
    closed_rl = limiter(clock, backend, "fail_closed", backend_retry_interval=0)
    backend.down = True
    assert (await open_rl.try_acquire_async("u1")).allowed
    assert (await open_rl.acquire_async("u1", timeout=1.0)).allowed
    assert (await open_rl.peek_async("u1")).allowed
    await open_rl.refund_async("u1")
    for call in (
        closed_rl.try_acquire_async("u1"),
        closed_rl.acquire_async("u1", timeout=1.0),
        closed_rl.peek_async("u1"),
        closed_rl.refund_async("u1"),
    ):
        with pytest.raises(bt.BackendError):
            await call
    backend.down = False
    assert (await closed_rl.try_acquire_async("u1")).allowed
    await open_rl.try_acquire_async("u1")
    assert open_rl.snapshot().backend_status == closed_rl.snapshot().backend_status == "ok"


def test_a_peek_that_answers_does_not_end_an_outage(clock: bt.ManualClock, event_log: Any) -> None:
    # Reads answer, writes fail: were a peek to end the outage, health would flap ok/down and
    # every write would wait for its timeout again.
    backend = ReadsOnly()
    rl = limiter(clock, backend, "fail_closed", backend_retry_interval=0)
    backend.down = True
    with pytest.raises(bt.BackendError):
        rl.try_acquire("u1")
    for _ in range(3):
        assert rl.peek("u1").allowed  # the read answers...
        assert rl.snapshot().backend_status == "down"  # ...and proves nothing about writes
        assert rl.check_backend() == "down"  # nor does the health check's peek
    assert event_log.named(*EV_RECOVERED) == []
    assert len(event_log.named(*EV_DOWN)) == 1
    backend.down = False
    assert rl.check_backend() == "down"  # this backend cannot prove it writes: a write must
    assert rl.try_acquire("u1")
    assert rl.snapshot().backend_status == "ok"
    assert len(event_log.named(*EV_RECOVERED)) == 1


@pytest.mark.parametrize("policy", ["fail_open", "fail_closed"])
def test_a_peek_leaves_the_retry_to_the_next_decision(clock: bt.ManualClock, policy: str) -> None:
    # A peek before each decision (to build headers, say) must not use up the one retry per
    # interval: else the decision is spared every time and the outage never ends.
    backend = Switchable()
    rl = limiter(clock, backend, policy, backend_retry_interval=1.0)
    backend.down = True
    with contextlib.suppress(bt.BackendError):
        rl.try_acquire("u1")
    backend.down = False  # back, though nobody has noticed yet
    clock.advance(1.5)  # a retry is due
    rl.peek("u1")
    calls = backend.calls
    assert rl.try_acquire("u1").allowed
    assert backend.calls == calls + 1  # the decision reached the backend...
    assert rl.snapshot().backend_status == "ok"  # ...and ended the outage
    rl.try_acquire("u1")
    assert not rl.try_acquire("u1").allowed  # counted again: the user scope's 2 are used


async def test_an_async_peek_does_not_end_an_outage(clock: bt.ManualClock) -> None:
    backend = ReadsOnly()
    rl = limiter(clock, backend, "fail_open", backend_retry_interval=0)
    backend.down = True
    assert (await rl.try_acquire_async("u1")).allowed
    assert (await rl.peek_async("u1")).allowed
    assert rl.snapshot().backend_status == "down"
    backend.down = False
    assert (await rl.try_acquire_async("u1")).allowed
    assert rl.snapshot().backend_status == "ok"


def test_check_backend_ends_an_outage_only_once_writes_are_proven(
    clock: bt.ManualClock, event_log: Any
) -> None:
    backend = ProvesWrites()
    rl = limiter(clock, backend, "fail_closed", backend_retry_interval=0)
    assert rl.check_backend() == "ok"
    backend.down = True
    assert rl.check_backend() == "down"  # the peek answers; the proof of a write fails
    assert len(event_log.named(*EV_DOWN)) == 1
    assert rl.check_backend() == "down"
    backend.down = False
    assert rl.check_backend() == "ok"  # no decision needed: the write is proven
    ((measurements, _),) = event_log.named(*EV_RECOVERED)
    assert measurements == {"downtime": 0.0}
    # The probe is a key no scope uses ("namespace:name:"), and nothing was charged.
    assert backend.checked == [["buttress:fail_closed:"]] * 4
    assert backend.inner.key_count() == 0
    assert rl.try_acquire("u1") and rl.try_acquire("u1") and not rl.try_acquire("u1")


def test_check_backend_spares_a_backend_that_is_down(clock: bt.ManualClock) -> None:
    backend = ProvesWrites()
    rl = limiter(clock, backend, "fail_open", backend_retry_interval=1.0)
    backend.down = True
    assert rl.check_backend() == "down"
    calls = backend.calls
    backend.down = False
    assert rl.check_backend() == "down"  # within the retry interval: not asked
    assert backend.calls == calls
    clock.advance(1.0)
    assert rl.check_backend() == "ok"


def test_bad_policy_settings_name_the_setting() -> None:
    scope = bt.Scope("user", 1, 1.0)
    with pytest.raises(bt.ConfigError) as info:
        bt.RateLimiter(scope, failure_policy="open")  # type: ignore[arg-type]
    assert info.value.path == "failure_policy"
    for bad in (-1, math.inf, math.nan, True, "1"):  # inf: a down backend never tried again
        with pytest.raises(bt.ConfigError) as info:
            bt.RateLimiter(scope, backend_retry_interval=bad)  # type: ignore[arg-type]
        assert info.value.path == "backend_retry_interval"


def test_memory_limiters_report_a_healthy_backend(clock: bt.ManualClock) -> None:
    snap = bt.RateLimiter(bt.Scope("user", 1, 1.0), clock=clock).snapshot()
    assert (snap.backend_status, snap.failure_policy, snap.backend_errors) == ("ok", "fail_open", 0)
    assert snap.keys == 0


class AnswersAnyway(Switchable):
    """Answers although its caller was cancelled meanwhile, as redis-py sometimes does when a
    cancellation arrives with the reply."""

    async def decide_async(self, *args: Any) -> Outcome:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()  # the caller is cancelled while the reply is on its way...
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0)  # real-time: one loop turn, where the client loses it
        return self.decide(*args)


async def test_a_cancellation_the_client_lost_is_honoured_and_the_charge_given_back(
    clock: bt.ManualClock,
) -> None:
    backend = AnswersAnyway()
    rl = limiter(clock, backend, "fail_closed")
    untouched = rl.peek("u1").remaining
    with pytest.raises(asyncio.CancelledError):
        await rl.try_acquire_async("u1")
    for _ in range(5):
        await asyncio.sleep(0)  # real-time: loop turns, for the refund task to run
    assert not rl._giving_back
    assert rl.peek("u1").remaining == untouched  # nothing kept: the cancelled call never ran


def test_a_fail_open_admission_reports_no_wait(clock: bt.ManualClock) -> None:
    backend = Switchable()
    rl = limiter(clock, backend, "fail_open")
    backend.down = True
    d = rl.try_acquire("u1", cost=50)  # more than the user scope's 2: admitted all the same
    assert d.allowed
    assert d.retry_after == 0.0  # admitted: no wait, whatever the empty states would say
    assert all(s.allowed for s in d.scopes)
