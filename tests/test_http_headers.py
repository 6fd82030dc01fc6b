"""buttress.http.rate_limit_headers: the IETF RateLimit fields and Retry-After."""

from __future__ import annotations

import math
import random
import uuid
from pathlib import Path

import pytest

import buttress as bt
import buttress.ratelimit
from buttress.http import admitted_fields, rate_limit_headers


def test_one_policy_item_per_scope(clock: bt.ManualClock) -> None:
    rl = bt.RateLimiter(
        [
            bt.Scope("user", 100, 60.0),
            bt.Scope("org", 1000, 60.0, algorithm="fixed_window"),
            bt.Scope("global", 10_000, 0.5, algorithm="sliding_window"),
        ],
        clock=clock,
    )
    clock.advance(15.0)
    d = rl.try_acquire({"user": "u1", "org": "o1"}, cost=10)
    assert rate_limit_headers(d) == {
        "RateLimit-Policy": '"user";q=100;w=60, "org";q=1000;w=60, "global";q=10000;w=1',
        "RateLimit": '"user";r=90;t=6, "org";r=990;t=45, "global";r=9990;t=1',
    }


def test_a_refusal_adds_retry_after_rounded_up(clock: bt.ManualClock) -> None:
    rl = bt.RateLimiter([bt.Scope("user", 2, 3.0)], clock=clock)
    rl.try_acquire("u1", 2)
    d = rl.try_acquire("u1")
    assert d.retry_after == pytest.approx(1.5)
    fields = rate_limit_headers(d, legacy=True)
    assert fields["Retry-After"] == "2"
    assert fields["RateLimit"] == '"user";r=0;t=3'
    assert (fields["X-RateLimit-Limit"], fields["X-RateLimit-Remaining"]) == ("2", "0")
    assert fields["X-RateLimit-Reset"] == "3"


def test_no_retry_after_when_the_request_can_never_fit(clock: bt.ManualClock) -> None:
    rl = bt.RateLimiter([bt.Scope("user", 2, 3.0)], clock=clock)
    d = rl.try_acquire("u1", 5)
    assert d.retry_after == math.inf
    assert "Retry-After" not in rate_limit_headers(d)


def test_partition_keys_and_quota_unit(clock: bt.ManualClock) -> None:
    rl = bt.RateLimiter([bt.Scope("user", 5, 1.0), bt.Scope("global", 50, 1.0)], clock=clock)
    d = rl.try_acquire("u1")
    fields = rate_limit_headers(d, partition_keys=True, quota_unit="requests")
    assert fields["RateLimit-Policy"] == (
        '"user";q=5;qu="requests";w=1;pk=:dTE=:, "global";q=50;qu="requests";w=1'
    )
    assert fields["RateLimit"] == '"user";r=4;t=1;pk=:dTE=:, "global";r=49;t=1'


def test_a_hand_made_decision_and_adaptive_limits(clock: bt.ManualClock) -> None:
    d = bt.Decision(False, 0, 10, 2.2, 1.2, "api")
    assert rate_limit_headers(d) == {
        "RateLimit-Policy": '"api";q=10',
        "RateLimit": '"api";r=0;t=3',
        "Retry-After": "2",
    }
    rl = bt.RateLimiter([bt.Scope("api", 100, 1.0, algorithm="adaptive", by=None)], clock=clock)
    rl.record(ok=False)
    assert rate_limit_headers(rl.try_acquire())["RateLimit-Policy"] == '"api";q=50;w=1'
    with pytest.raises(ValueError, match="ASCII"):
        rate_limit_headers(bt.Decision(True, 1, 1, 1.0, 0.0, "naïve"))


# -- the fast path for admitted responses, held to rate_limit_headers ---------------------------


class _Down:
    """A backend that is never reachable: a fail_open limiter admits on empty states."""

    time_base = "wall"

    def decide(self, *args: object, **kwargs: object) -> bt.ratelimit.Outcome:
        raise bt.BackendError("connection refused")

    async def decide_async(self, *args: object) -> bt.ratelimit.Outcome:
        raise bt.BackendError("connection refused")

    def refund(self, *args: object) -> None:
        raise bt.BackendError("connection refused")


def _limiters(clock: bt.ManualClock, tmp_path: Path) -> list[bt.RateLimiter]:
    three = [
        bt.Scope("user", 7, 3.0),
        bt.Scope("org", 20, 10.0, algorithm="fixed_window"),
        bt.Scope("global", 50, 0.5, algorithm="sliding_window"),
    ]
    return [
        bt.RateLimiter([bt.Scope("ip", 5, 2.0)], clock=clock),
        bt.RateLimiter([bt.Scope("ip", 9, 1.5, algorithm="sliding_window")], clock=clock),
        bt.RateLimiter([bt.Scope("ip", 4, 60.0, algorithm="fixed_window")], clock=clock),
        bt.RateLimiter(three, clock=clock),
        bt.RateLimiter(three, backend=bt.SQLiteBackend(tmp_path / "limits.db"), clock=clock),
        bt.RateLimiter(
            [bt.Scope("api", 30, 1.0, algorithm="adaptive", by=None)], name="ad", clock=clock
        ),
        bt.RateLimiter(three, backend=_Down(), failure_policy="fail_open", clock=clock),  # type: ignore[arg-type]
    ]


def test_admitted_fields_say_what_rate_limit_headers_says(
    clock: bt.ManualClock, tmp_path: Path
) -> None:
    """Every admitted response's fields come from ``admitted_fields``: for each limiter kind,
    backend and cost, over traffic that fills and drains the limits (an adaptive limit
    moving), it gives exactly the two values ``rate_limit_headers`` renders."""
    rng = random.Random(1812)
    compared = 0
    for rl in _limiters(clock, tmp_path):
        for _ in range(300):
            clock.advance(rng.choice([0.0, 0.001, 0.07, 0.4, 1.3]))
            if rl.name == "ad" and rng.random() < 0.1:
                rl.record(ok=rng.random() < 0.5)
            context = {
                "user": f"u{rng.randrange(3)}",
                "org": "o1",
                "ip": f"10.0.0.{rng.randrange(2)}",
            }
            d = rl.try_acquire(context, cost=rng.choice([1, 1, 2, 3]))
            if not d.allowed:
                continue
            fast = admitted_fields(d)  # first: reading the decision's numbers resolves it
            fields = rate_limit_headers(d)
            assert fast == (fields["RateLimit-Policy"], fields["RateLimit"])
            assert admitted_fields(d) == fast  # and once resolved, the same
            compared += 1
    assert compared > 1000


def test_admitted_fields_of_decisions_made_on_redis(redis_url: str) -> None:
    """Redis decides with its own clock: the fields of what it admitted (a tight limit, so the
    numbers move) are those ``rate_limit_headers`` renders."""
    backend = bt.RedisBackend(redis_url, prefix=f"bt-test:headers:{uuid.uuid4().hex[:12]}:")
    rl = bt.RateLimiter(
        [bt.Scope("user", 40, 2.0), bt.Scope("org", 60, 5.0, algorithm="sliding_window")],
        backend=backend,
    )
    try:
        admitted = 0
        for i in range(50):
            d = rl.try_acquire({"user": f"u{i % 2}", "org": "o1"})
            if d.allowed:
                fast = admitted_fields(d)
                fields = rate_limit_headers(d)
                assert fast == (fields["RateLimit-Policy"], fields["RateLimit"])
                admitted += 1
        assert admitted >= 40
    finally:
        backend.close()
