"""Rate strings: ``"100/minute"`` and ``"10/second; 1000/hour"`` in code, and durations' units."""

from __future__ import annotations

from typing import Any

import pytest

import buttress as bt
from buttress._validate import parse_duration
from buttress.ratelimit._rates import parse_rates


@pytest.mark.parametrize(
    ("text", "limit", "window"),
    [
        ("100/minute", 100, 60),
        ("100/minutes", 100, 60),
        ("100 / Minute", 100, 60),
        ("100 per minute", 100, 60),
        ("100 PER MINUTE", 100, 60),
        ("10/second", 10, 1),
        ("10/sec", 10, 1),
        ("10/s", 10, 1),
        ("5/hour", 5, 3600),
        ("5/hr", 5, 3600),
        ("5/h", 5, 3600),
        ("1000/day", 1000, 86400),
        ("1000/d", 1000, 86400),
        ("500/7days", 500, 7 * 86400),  # the limits library's "n per m units"
        ("500/7 days", 500, 7 * 86400),
        ("5/10s", 5, 10),
        ("5 per 10 seconds", 5, 10),
        ("1/500ms", 1, 0.5),
        ("3/1h30m", 3, 5400),
        ("2.5/second", 2.5, 1),
        ("  7/min  ", 7, 60),
    ],
)
def test_one_rate(text: str, limit: float, window: float) -> None:
    [rate] = parse_rates(text)
    assert (rate.limit, rate.window) == (limit, window)
    scope = bt.Scope.parse(text, "user")
    assert (scope.name, scope.limit, scope.window, scope.by) == ("user", limit, window, "user")


@pytest.mark.parametrize("separator", [";", ",", "|", " ; "])
def test_several_rates(separator: str) -> None:
    text = separator.join(["10/second", "1000/hour"])
    assert [(r.limit, r.window) for r in parse_rates(text)] == [(10, 1), (1000, 3600)]


def test_a_limiter_from_one_rate_is_one_shared_scope() -> None:
    clock = bt.ManualClock()
    limiter = bt.RateLimiter("2/minute", clock=clock)
    [scope] = limiter.scopes
    assert (scope.name, scope.limit, scope.window, scope.shared) == ("global", 2, 60, True)
    assert [limiter.try_acquire().allowed for _ in range(3)] == [True, True, False]
    clock.advance(30)
    assert limiter.try_acquire().allowed  # a token bucket: one back after half the window


def test_a_limiter_from_several_rates_names_a_scope_for_each_window() -> None:
    clock = bt.ManualClock()
    limiter = bt.RateLimiter("2/second; 3/hour", clock=clock)
    assert [(s.name, s.limit, s.window, s.shared) for s in limiter.scopes] == [
        ("per_second", 2, 1, True),
        ("per_hour", 3, 3600, True),
    ]
    assert [limiter.try_acquire().allowed for _ in range(3)] == [True, True, False]
    clock.advance(1)
    decision = limiter.try_acquire()
    assert decision.allowed  # the third of the hour
    clock.advance(1)
    decision = limiter.try_acquire()
    assert not decision.allowed
    assert decision.scope == "per_hour"
    names = [s.name for s in bt.RateLimiter("1/10s; 1/5m; 1/500ms; 1/2d; 1/1.5s").scopes]
    assert names == ["per_10s", "per_5m", "per_500ms", "per_2d", "per_1500ms"]


def test_a_scope_from_a_rate_takes_the_other_settings() -> None:
    scope = bt.Scope.parse("100/minute", "user", algorithm="fixed_window", by="account")
    assert (scope.algorithm, scope.by) == ("fixed_window", "account")
    assert bt.Scope.parse("100/minute").shared  # "global" unless named
    limiter = bt.RateLimiter([bt.Scope.parse("5/s", "user"), bt.Scope.parse("50/s", "org")])
    assert limiter.try_acquire({"user": "u1", "org": "o1"}).allowed


@pytest.mark.parametrize(
    ("rate", "path", "message"),
    [
        ("100/minit", "scopes", "rate '100/minit': unknown unit 'minit' (did you mean 'minute'?"),
        ("100", "scopes", "rate '100': write an amount, '/' or 'per', and a window"),
        ("100/", "scopes", "rate '100/': no window after the amount"),
        ("per minute", "scopes", "write an amount"),
        ("-1/second", "scopes", "write an amount"),
        ("0/second", "scopes", "rate '0/second': the amount must be above 0"),
        ("1/0s", "scopes", "rate '1/0s': the window must be longer than 0"),
        ("10/month", "scopes", "'month' has no fixed length: write it in days ('30 days')"),
        ("10/year", "scopes", "write it in days ('365 days')"),
        ("", "scopes", "no rate in ''"),
        (" ; ", "scopes", "no rate in ' ; '"),
        ("10/minute; 20/60s", "scopes", "'10/minute' and '20/60s' have one window (60 s)"),
        (["100/minute"], "scopes[0]", "must be a Scope, got the string '100/minute'"),
        ([bt.Scope("u", 1), 5], "scopes[1]", "must be a Scope, got 5"),
    ],
)
def test_a_bad_rate_says_what_is_wrong(rate: Any, path: str, message: str) -> None:
    with pytest.raises(bt.ConfigError) as info:
        bt.RateLimiter(rate)
    assert info.value.path == path
    assert message in info.value.message


def test_a_scope_takes_one_rate() -> None:
    with pytest.raises(bt.ConfigError, match="holds 2 rates; a scope takes one") as info:
        bt.Scope.parse("1/s; 2/m", "user")
    assert info.value.path == "rate"
    with pytest.raises(bt.ConfigError, match="a rate is a string"):
        bt.Scope.parse(100, "user")  # type: ignore[arg-type]


def test_a_scope_window_defaults_to_a_minute_in_code_as_in_a_file() -> None:
    assert bt.Scope("user", 100).window == 60.0
    assert bt.load_config(
        {"rate_limiting": {"limiters": {"api": {"scopes": [{"name": "user", "limit": 100}]}}}},
        env={},
    ).rate_limiting.limiters["api"].build_scopes("api", "token_bucket") == [bt.Scope("user", 100)]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("300ms", 0.3),
        ("1.5s", 1.5),
        (".5s", 0.5),
        ("30 seconds", 30),
        ("2m", 120),
        ("2 MIN", 120),
        ("1h", 3600),
        ("1h30m", 5400),
        ("1d", 86400),
        ("1e3ms", 1.0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
