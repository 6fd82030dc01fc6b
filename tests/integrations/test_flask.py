"""buttress in Flask, through Flask's test client: the extension's default policy from
app.config, the view decorators, refusals answered 429/503 with their fields by the error
handler, 4xx neutral and answered 5xx counted by the breaker, and the health blueprint."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from web_views import CONFIG, infrastructure

import buttress as bt

flask = pytest.importorskip("flask")

from buttress.integrations import flask as bt_flask  # noqa: E402


@pytest.fixture
def infra(clock: bt.ManualClock) -> Iterator[bt.Infrastructure]:
    with infrastructure(clock) as i:
        yield i


def make_app(infra: bt.Infrastructure | None = None, **config: Any) -> Any:
    app = flask.Flask("shop")
    app.config.update({f"BUTTRESS_{name.upper()}": value for name, value in config.items()})
    bt_flask.Buttress(app, infrastructure=infra)
    app.register_blueprint(bt_flask.health_blueprint())

    @app.get("/ok")
    def ok() -> str:
        return "ok"

    @app.get("/free")
    @bt_flask.exempt
    def free() -> str:
        return "free"

    @app.get("/pay/<outcome>")
    @bt_flask.protect("payments")
    def pay(outcome: str) -> Any:
        if outcome == "missing":
            flask.abort(404)
        if outcome == "gone":
            return "gone", 410
        if outcome == "broken":
            return "upstream said no", 502
        if outcome == "raises":
            raise RuntimeError("the gateway hung up")
        return "paid"

    @app.get("/keyed")
    @bt_flask.rate_limit("api", key=bt_flask.api_key("X-API-Key"))
    def keyed() -> str:
        return "keyed"

    @app.get("/anyone")
    @bt_flask.rate_limit("api")
    def anyone() -> str:
        return "anyone"

    @app.get("/apay/<outcome>")
    @bt_flask.protect("payments")
    async def apay(outcome: str) -> Any:  # an async view (flask[async]), guarded the same
        if outcome == "missing":
            flask.abort(404)
        if outcome == "broken":
            return "upstream said no", 502
        return "paid"

    @app.get("/nested")
    def nested() -> str:
        bt_flask.infrastructure().call("payments", lambda: None)
        return "nested"

    return app


def test_the_default_policy_limits_every_view_by_client_ip(infra: bt.Infrastructure) -> None:
    app = make_app(
        infra, rate_limit={"limiter": "api", "key": "ip"}, trusted_proxies=["10.0.0.0/8"]
    )
    client = app.test_client()
    env = {"REMOTE_ADDR": "10.0.0.1"}  # a trusted proxy in front of every client
    behind = {"X-Forwarded-For": "203.0.113.7"}
    first = client.get("/ok", headers=behind, environ_base=env)
    assert first.status_code == 200
    assert first.headers["RateLimit"] == '"client";r=1;t=60'
    assert client.get("/ok", headers=behind, environ_base=env).status_code == 200
    refused = client.get("/ok", headers=behind, environ_base=env)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "60"
    assert refused.headers["RateLimit-Policy"] == '"client";q=2;w=60'
    assert refused.json == {
        "error": "RateLimitExceeded",
        "message": "rate limit 'client' exceeded",
        "retry_after": 60.0,
    }
    other = {"X-Forwarded-For": "198.51.100.2"}
    assert client.get("/ok", headers=other, environ_base=env).status_code == 200
    # Exempt, health, and a view with its own policy are not charged to the default.
    for path in ("/free", "/health/livez", "/pay/fine"):
        assert client.get(path, headers=behind, environ_base=env).status_code == 200


def test_client_errors_are_neutral_and_server_errors_open_the_breaker(
    infra: bt.Infrastructure,
) -> None:
    breaker = infra.breakers["payments"]
    client = make_app(infra).test_client()
    for outcome in ("missing", "gone", "missing", "gone"):
        assert client.get(f"/pay/{outcome}").status_code in (404, 410)
    assert breaker.state is bt.BreakerState.CLOSED
    assert client.get("/pay/broken").status_code == 502  # answered, not raised
    assert client.get("/pay/raises").status_code == 500
    assert breaker.state is bt.BreakerState.OPEN
    refused = client.get("/pay/fine")
    assert (refused.status_code, refused.headers["Retry-After"]) == (503, "30")
    assert refused.json["error"] == "CircuitOpenError"


def test_an_async_view_is_guarded_as_a_sync_one(infra: bt.Infrastructure) -> None:
    breaker = infra.breakers["payments"]
    client = make_app(infra).test_client()
    assert client.get("/apay/missing").status_code == 404
    assert client.get("/apay/fine").data == b"paid"
    assert breaker.state is bt.BreakerState.CLOSED
    assert [client.get("/apay/broken").status_code for _ in range(2)] == [502, 502]
    assert breaker.state is bt.BreakerState.OPEN
    assert client.get("/apay/fine").status_code == 503


def test_the_default_policy_reads_the_answer_of_every_view(infra: bt.Infrastructure) -> None:
    breaker = infra.breakers["payments"]
    app = make_app(infra, protect="payments")

    @app.get("/lookup/<outcome>")
    def lookup(outcome: str) -> Any:
        if outcome == "missing":
            flask.abort(404)
        if outcome == "raises":
            raise RuntimeError("down")
        return "", 200

    client = app.test_client()
    for _ in range(3):
        assert client.get("/lookup/missing").status_code == 404
    assert breaker.state is bt.BreakerState.CLOSED
    assert client.get("/lookup/raises").status_code == 500
    assert client.get("/lookup/raises").status_code == 500
    assert breaker.state is bt.BreakerState.OPEN
    assert client.get("/ok").status_code == 503
    assert client.get("/health/livez").status_code == 200  # probes are never refused


def test_a_refusal_raised_inside_a_view_is_answered(infra: bt.Infrastructure) -> None:
    infra.breakers["payments"].force_open()
    answer = make_app(infra).test_client().get("/nested")
    assert answer.status_code == 503
    assert answer.json["error"] == "CircuitOpenError"


def test_the_api_key_decorator_answers_400_without_a_key(infra: bt.Infrastructure) -> None:
    client = make_app(infra, rate_limit_headers=False).test_client()
    answers = [client.get("/keyed", headers={"X-API-Key": "k1"}) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert "RateLimit" not in answers[0].headers  # turned off
    assert "RateLimit" not in answers[2].headers and answers[2].headers["Retry-After"] == "60"
    missing = client.get("/keyed")
    assert missing.status_code == 400
    assert missing.json["error"] == "ContextError"


def test_a_rate_limit_without_a_key_counts_each_client_behind_the_trusted_proxies(
    infra: bt.Infrastructure,
) -> None:
    client = make_app(infra, trusted_proxies=["10.0.0.0/8"]).test_client()
    proxy = {"REMOTE_ADDR": "10.0.0.1"}

    def get(forwarded_for: str) -> int:
        headers = {"X-Forwarded-For": forwarded_for}
        return int(client.get("/anyone", headers=headers, environ_base=proxy).status_code)

    assert [get("203.0.113.7") for _ in range(3)] == [200, 200, 429]
    assert get("198.51.100.2") == 200  # another client behind the same proxy
    direct = client.get("/anyone", environ_base={"REMOTE_ADDR": "192.0.2.9"})
    assert direct.status_code == 200  # not behind a proxy: its own address
    assert direct.headers["RateLimit"] == '"client";r=1;t=60'


def test_the_infrastructure_is_built_from_config_once() -> None:
    app = make_app(config=CONFIG, namespace="shop")
    with app.app_context():
        built = bt_flask.infrastructure()
        assert built is bt_flask.infrastructure()
    report = app.test_client().get("/health")
    assert (report.status_code, json.loads(report.data)["serviceId"]) == (200, "shop")
    app.extensions["buttress"].process.close()
    assert built.closed


def test_the_health_blueprint_answers_at_its_paths(infra: bt.Infrastructure) -> None:
    client = make_app(infra).test_client()
    assert client.get("/health").json["serviceId"] == "web"
    assert client.get("/health/readyz").status_code == 200
    assert client.get("/health/livez").json == {"status": "pass"}
    assert client.post("/health").status_code == 405


def test_bad_config_names_the_key() -> None:
    with pytest.raises(bt.ConfigError) as info:
        make_app(rate_limit={"limiter": "api", "key": "cookie"})
    assert info.value.path == "BUTTRESS_RATE_LIMIT.key"
    with pytest.raises(bt.ConfigError) as info:
        make_app(trusted_proxy=["10.0.0.1"])
    assert info.value.path == "BUTTRESS_TRUSTED_PROXY"


def test_a_view_outside_the_extension_says_so() -> None:
    app = flask.Flask("bare")

    @app.get("/x")
    @bt_flask.protect("payments")
    def x() -> str:
        return "x"

    app.config["PROPAGATE_EXCEPTIONS"] = True
    with pytest.raises(RuntimeError, match="buttress is not set up for app 'bare'"):
        app.test_client().get("/x")


def test_a_views_priority_decides_who_overload_sheds() -> None:
    clock = bt.ManualClock()
    config = {
        **CONFIG,
        "overload": {"cpu": {"check_interval": 1.0, "psi_warning": None, "psi_critical": None}},
    }
    with bt.Infrastructure("web", config, clock=clock, env={}, background=False) as infra:
        assert infra.cpu is not None
        readings = iter([0, 850_000])  # 85% of one core: warning
        infra.cpu.probe = lambda: bt.CpuReading(usage_usec=next(readings), quota_cores=1.0)
        infra.cpu.sample()
        clock.advance(1.0)
        infra.cpu.sample()
        app = flask.Flask("shop")
        bt_flask.Buttress(app, infrastructure=infra)

        @app.get("/recommend")
        @bt_flask.protect("payments", priority="sheddable")
        def recommend() -> str:
            return "maybe"

        @app.get("/checkout")
        @bt_flask.protect("payments")
        def checkout() -> str:
            return "paid"

        client = app.test_client()
        shed = client.get("/recommend")
        assert shed.status_code == 503
        assert client.get("/checkout").status_code == 200  # normal: shed only at critical
    with pytest.raises(bt.ConfigError):
        bt_flask.protect("payments", priority="urgent")  # type: ignore[arg-type]
