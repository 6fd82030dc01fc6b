"""The HTTP answer to a refusal and the client behind proxies: what every web integration
shares (buttress/integrations/_http.py)."""

from __future__ import annotations

import json

import pytest

import buttress as bt
from buttress.integrations._http import (
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


def test_an_answered_status_is_read_as_a_raised_one() -> None:
    from buttress._breaker._outcome import Outcome, classify
    from buttress.integrations._http import answered

    config = bt.BreakerConfig()
    assert answered(200) is None and answered(302) is None
    assert classify(config, answered(404)) is Outcome.IGNORED  # type: ignore[arg-type]
    for status in (408, 429, 500, 502):
        assert classify(config, answered(status)) is Outcome.FAILURE  # type: ignore[arg-type]
    # A refusal still carries no status (it is not a client error).
    assert classify(config, bt.CircuitOpenError("x", "open")) is Outcome.FAILURE


def test_keys_read_from_peer_headers_functions_and_tables() -> None:
    from buttress.integrations._http import api_key, client_ip, key_from_setting, read_key

    headers = {"x-forwarded-for": "203.0.113.7", "x-api-key": "k1"}
    request = {"peer": "10.0.0.1", "user": "ann"}

    def read(key: object) -> object:
        return read_key(key, request, lambda r: r["peer"], lambda r, name: headers.get(name))

    assert read(client_ip(["10.0.0.0/8"])) == "203.0.113.7"
    assert read(client_ip()) == "10.0.0.1"  # no trusted proxy: the peer
    assert read(api_key()) == "k1"
    assert read(api_key("X-Other")) is None
    assert read({"user": lambda r: r["user"], "key": api_key()}) == {"user": "ann", "key": "k1"}
    proxies = TrustedProxies(["10.0.0.0/8"])
    assert read(key_from_setting("ip", proxies)) == "203.0.113.7"
    assert read(key_from_setting({"key": "header:X-API-Key"}, proxies)) == {"key": "k1"}
    assert key_from_setting("json:dumps", proxies) is json.dumps
    with pytest.raises(bt.ConfigError) as info:
        key_from_setting({"user": "nope"}, proxies, "BUTTRESS.rate_limit.key")
    assert info.value.path == "BUTTRESS.rate_limit.key.user"
    with pytest.raises(bt.ConfigError, match="cannot import 'no_such_module:f'"):
        key_from_setting("no_such_module:f", proxies)
