"""The HTTP answer to a refusal and the client behind proxies: what every web integration
shares (buttress/integrations/_http.py)."""

from __future__ import annotations

import json

import pytest

import buttress as bt
from buttress.integrations._http import (
    ErrorAnswer,
    TrustedProxies,
    admitted_headers,
    refused,
    timed_out,
)


def test_a_rate_limit_refusal_is_a_429_with_every_scopes_fields_and_no_id() -> None:
    limiter = bt.RateLimiter(
        [bt.Scope("user", 1, 60.0, by="user"), bt.Scope("org", 100, 60.0, by="org")],
        name="api",
        clock=bt.ManualClock(),
    )
    ctx = {"user": "ann@example.com", "org": "acme"}
    admitted = limiter.try_acquire(ctx)
    assert (
        dict(admitted_headers(admitted))["ratelimit-policy"] == '"user";q=1;w=60, "org";q=100;w=60'
    )
    with pytest.raises(bt.RateLimitExceeded) as info:
        limiter.acquire(ctx, timeout=0)
    answer = refused(info.value)
    fields = dict(answer.headers)
    assert answer.status == 429
    assert fields["content-type"] == "application/json"
    assert fields["retry-after"] == "60"
    assert fields["ratelimit"].startswith('"user";r=0')
    body = json.loads(answer.body)
    assert body == {
        "error": "RateLimitExceeded",
        "message": "rate limit 'user' exceeded",
        "retry_after": 60.0,
    }
    assert b"ann@example.com" not in answer.body
    assert "ratelimit" not in dict(refused(info.value, rate_limit_headers_on=False).headers)


def test_other_refusals_are_503_with_retry_after_when_known() -> None:
    answer = refused(bt.CircuitOpenError("payments", "open", retry_after=2.2))
    assert answer.status == 503
    assert dict(answer.headers)["retry-after"] == "3"
    answer = refused(bt.LoadShedError("shed", retry_after=None))
    assert answer.status == 503 and "retry-after" not in dict(answer.headers)
    with pytest.raises(TypeError):
        refused(ValueError("x"))  # type: ignore[arg-type]


def test_the_client_is_the_first_untrusted_hop() -> None:
    proxies = TrustedProxies(["10.0.0.0/8", "::1"])
    # Behind two trusted proxies: the client is the hop before them.
    assert proxies.client("10.0.0.2", "203.0.113.7, 10.0.0.1") == "203.0.113.7"
    # A client that forges the field only adds to the left of the real hop.
    assert proxies.client("10.0.0.2", "1.2.3.4, 203.0.113.7") == "203.0.113.7"
    # An untrusted peer's fields are ignored.
    assert proxies.client("198.51.100.9", "1.2.3.4") == "198.51.100.9"
    # RFC 7239 Forwarded, IPv6 with a port.
    assert proxies.client("::1", None, 'for="[2001:db8::1]:4711";proto=https') == "2001:db8::1"
    assert proxies.client("10.0.0.2", None, "for=192.0.2.60:80, for=10.0.0.1") == "192.0.2.60"
    # No trusted proxies: the peer, whatever the fields say.
    assert TrustedProxies().client("10.0.0.2", "1.2.3.4") == "10.0.0.2"


def test_a_bad_proxy_is_a_config_error_naming_it() -> None:
    with pytest.raises(bt.ConfigError) as info:
        TrustedProxies(["10.0.0.0/8", "proxy.internal"])
    assert info.value.path == "trusted_proxies[1]"


def test_a_timeout_before_the_response_is_a_504_and_other_errors_are_refused() -> None:
    answer = timed_out(bt.CallTimeoutError("db", 2.0))
    assert answer.status == 504
    assert dict(answer.headers) == {"content-type": "application/json"}
    assert json.loads(answer.body)["error"] == "CallTimeoutError"
    with pytest.raises(TypeError, match="CallTimeoutError"):
        timed_out(TimeoutError())  # type: ignore[arg-type]


def test_an_error_answer_is_counted_by_its_status_as_a_raised_error_with_it() -> None:
    breaker = bt.CircuitBreaker(
        "site", failure_threshold=2, degradation_threshold=None, minimum_calls=100
    )

    def answered(status: int) -> None:
        raise ErrorAnswer(status)

    for status in (404, 400, 404, 403, 502, 500):  # client errors neutral, then two failures
        if status == 502:
            assert breaker.state is bt.BreakerState.CLOSED
        with pytest.raises(ErrorAnswer):
            breaker.call(answered, status)
    assert breaker.state is bt.BreakerState.OPEN


def test_trusted_proxies_say_whether_any_is_trusted() -> None:
    assert not TrustedProxies()
    assert TrustedProxies(["10.0.0.0/8"])
