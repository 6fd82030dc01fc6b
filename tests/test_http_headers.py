"""buttress.http.rate_limit_headers: the IETF RateLimit fields and Retry-After."""

from __future__ import annotations

import math

import pytest

import buttress as bt
from buttress.http import rate_limit_headers


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
