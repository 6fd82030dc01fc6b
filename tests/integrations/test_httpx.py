"""buttress.integrations.httpx: the transports against a real HTTP server on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import buttress as bt
from buttress.integrations.httpx import AsyncProtectedTransport, ErrorResponse, ProtectedTransport
from servers import ScriptedHTTPServer


@pytest.fixture
def server() -> Iterator[ScriptedHTTPServer]:
    s = ScriptedHTTPServer().start()
    try:
        yield s
    finally:
        s.stop()


def breakers(clock: bt.ManualClock, **settings: Any) -> Any:
    """A breaker per host, on ``clock``, opening at the third failure for exactly 30 s."""
    settings = {
        "failure_threshold": 3,
        "degradation_threshold": None,
        "reset_timeout_jitter": 0.0,
        **settings,
    }
    return lambda host: bt.CircuitBreaker(host, clock=clock, **settings)


class Recording(httpx.HTTPTransport):
    """The real transport, noting the timeouts each request reached it with."""

    def __init__(self) -> None:
        super().__init__()
        self.timeouts: list[dict[str, float | None]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.timeouts.append(dict(request.extensions["timeout"]))
        return super().handle_request(request)


class AsyncRecording(httpx.AsyncHTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.timeouts: list[dict[str, float | None]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.timeouts.append(dict(request.extensions["timeout"]))
        return await super().handle_async_request(request)


# -- the breaker ---------------------------------------------------------------------------------


def test_the_hosts_breaker_opens_on_503s_and_then_refuses(
    server: ScriptedHTTPServer, clock: bt.ManualClock
) -> None:
    for _ in range(5):
        server.answer("/down", 503)
    transport = ProtectedTransport(breaker=breakers(clock))
    with httpx.Client(transport=transport, base_url=server.url) as client:
        for _ in range(3):
            assert client.get("/down").status_code == 503  # the caller gets each answer
        with pytest.raises(bt.CircuitOpenError) as refused:
            client.get("/down")
        other = client.get(f"http://localhost:{server.port}/down")  # another host: its own
    assert isinstance(refused.value, bt.RejectedError)
    assert refused.value.retry_after == pytest.approx(30.0)
    assert server.seen == [("GET", "/down")] * 4  # the refused request never left
    assert other.status_code == 503
    assert transport.breaker_for(server.host).state is bt.BreakerState.OPEN  # type: ignore[union-attr]
    assert transport.breaker_for(f"localhost:{server.port}").state is bt.BreakerState.CLOSED  # type: ignore[union-attr]


def test_a_404_counts_for_nothing_and_is_not_retried(
    server: ScriptedHTTPServer, clock: bt.ManualClock
) -> None:
    for _ in range(3):
        server.answer("/missing", 404)
    breaker = bt.CircuitBreaker("api", failure_threshold=1, degradation_threshold=None, clock=clock)
    retry = bt.Retry(attempts=3, clock=clock, seed=1)
    transport = ProtectedTransport(breaker=breaker, retry=retry)
    with httpx.Client(transport=transport, base_url=server.url) as client:
        answers = [client.get("/missing") for _ in range(3)]
    assert [r.status_code for r in answers] == [404, 404, 404]
    assert answers[0].text == "status 404"
    snapshot = breaker.snapshot()
    assert (snapshot.total_ignored, snapshot.total_failures) == (3, 0)
    assert breaker.state is bt.BreakerState.CLOSED
    assert len(server.seen) == 3 and clock.monotonic() == 0.0


def test_the_breakers_per_host_are_bounded(
    server: ScriptedHTTPServer, clock: bt.ManualClock
) -> None:
    transport = ProtectedTransport(breaker=breakers(clock), max_hosts=1)
    with httpx.Client(transport=transport) as client:
        client.get(f"{server.url}/")
        first = transport.breaker_for(server.host)
        assert transport.breaker_for(server.host) is first
        client.get(f"http://localhost:{server.port}/")  # a second host: the first forgotten
        assert transport.breaker_for(server.host) is not first


# -- the retry ----------------------------------------------------------------------------------


def test_the_retry_waits_as_retry_after_asks(
    server: ScriptedHTTPServer, clock: bt.ManualClock
) -> None:
    for _ in range(2):
        server.answer("/flaky", 503, {"Retry-After": "2"})
    arrivals: list[float] = []
    server.on_request = lambda path: arrivals.append(clock.monotonic())
    transport = ProtectedTransport(
        breaker=breakers(clock), retry=bt.Retry(attempts=3, clock=clock, seed=1)
    )
    with httpx.Client(transport=transport, base_url=server.url) as client:
        response = client.get("/flaky")
    assert (response.status_code, response.text) == (200, "ok")
    assert arrivals == [0.0, 2.0, 4.0]  # the backoff alone would have waited under 0.2 s
    snapshot = transport.breaker_for(server.host).snapshot()  # type: ignore[union-attr]
    assert (snapshot.total_failures, snapshot.total_successes) == (2, 1)


def test_when_attempts_run_out_the_last_answer_is_returned(
    server: ScriptedHTTPServer, clock: bt.ManualClock
) -> None:
    for _ in range(3):
        server.answer("/down", 503, {"Retry-After": "1"})
    transport = ProtectedTransport(retry=bt.Retry(attempts=2, clock=clock, seed=1))
    with httpx.Client(transport=transport, base_url=server.url) as client:
        response = client.get("/down")
    assert (response.status_code, response.text) == (503, "status 503")
    assert len(server.seen) == 2


def test_statuses_of_ones_own_are_the_failures(
    server: ScriptedHTTPServer, clock: bt.ManualClock
) -> None:
    server.answer("/", 500)
    server.answer("/", 418)
    breaker = bt.CircuitBreaker("api", clock=clock)
    transport = ProtectedTransport(breaker=breaker, failure_status=[502, "503-504"])
    with httpx.Client(transport=transport, base_url=server.url) as client:
        assert client.get("/").status_code == 500  # not named: the server answered
        assert client.get("/").status_code == 418
    snapshot = breaker.snapshot()
    assert (snapshot.total_successes, snapshot.total_ignored, snapshot.total_failures) == (1, 1, 0)


def test_the_rule_of_the_services_breaker_from_toml(
    server: ScriptedHTTPServer, clock: bt.ManualClock, tmp_path: Path
) -> None:
    config = tmp_path / "buttress.toml"
    config.write_text(
        "[circuit_breakers.inventory]\n"
        'strategy = "fail_fast"\n'
        "failure_threshold = 2\n"
        "failure_rate_threshold = 1.0\n"
        "failure_result = { status = [502] }\n"
    )
    for status in (503, 503, 502, 502):
        server.answer("/items", status)
    with bt.Infrastructure("shop", str(config), clock=clock, env={}, background=False) as infra:
        transport = ProtectedTransport(infra=infra, service="inventory")
        with httpx.Client(transport=transport, base_url=server.url) as client:
            statuses = [client.get("/items").status_code for _ in range(4)]
            with pytest.raises(bt.CircuitOpenError):
                client.get("/items")
        snapshot = infra.breakers["inventory"].snapshot()
    assert statuses == [503, 503, 502, 502]  # 503 is not in the file's rule: a success
    assert (snapshot.total_successes, snapshot.total_failures) == (2, 2)


def test_an_infrastructure_service_retries_through_its_breaker(
    server: ScriptedHTTPServer, clock: bt.ManualClock
) -> None:
    server.answer("/pay", 429, {"Retry-After": "3"})
    config = {
        "circuit_breakers": {"payments": {}},
        "services": {"payments": {"retry": {"attempts": 2}}},
    }
    with bt.Infrastructure("shop", config, clock=clock, env={}, background=False) as infra:
        transport = ProtectedTransport(infra=infra, service=lambda host: "payments")
        with httpx.Client(transport=transport, base_url=server.url) as client:
            response = client.post("/pay", content=b"{}")
        retries = infra.services["payments"].snapshot(now=clock.monotonic()).retries
        snapshot = infra.breakers["payments"].snapshot()
    assert response.status_code == 200 and clock.monotonic() == 3.0
    assert retries == {"retried": 1, "recovered": 1}
    assert (snapshot.total_failures, snapshot.total_successes) == (1, 1)


# -- the rate limit ------------------------------------------------------------------------------


def test_an_outbound_quota_refuses_with_rate_limit_exceeded(
    server: ScriptedHTTPServer, clock: bt.ManualClock
) -> None:
    limiter = bt.RateLimiter("2/minute", clock=clock)
    transport = ProtectedTransport(limiter=limiter)
    with httpx.Client(transport=transport, base_url=server.url) as client:
        client.get("/")
        client.get("/")
        with pytest.raises(bt.RateLimitExceeded) as refused:
            client.get("/")
    assert refused.value.retry_after is not None and refused.value.retry_after > 0
    assert len(server.seen) == 2


# -- the deadline --------------------------------------------------------------------------------


def test_the_calls_deadline_caps_every_timeout(
    server: ScriptedHTTPServer, clock: bt.ManualClock
) -> None:
    inner = Recording()
    config = {"circuit_breakers": {"page": {}}}
    with bt.Infrastructure("web", config, clock=clock, env={}, background=False) as infra:
        transport = ProtectedTransport(inner, breaker=bt.CircuitBreaker("api", clock=clock))
        with httpx.Client(transport=transport, base_url=server.url, timeout=10.0) as client:

            def page() -> int:
                clock.advance(1.5)
                return client.get("/").status_code

            assert infra.call("page", page, timeout=2.0) == 200
            client.get("/", timeout=httpx.Timeout(0.25, read=None))  # outside: as given
            assert infra.call("page", lambda: client.get("/").status_code, timeout=2.0) == 200
    capped = dict.fromkeys(("connect", "read", "write", "pool"), 0.5)
    as_given = {"connect": 0.25, "read": None, "write": 0.25, "pool": 0.25}
    assert inner.timeouts == [capped, as_given, dict.fromkeys(capped, 2.0)]


def test_the_services_own_timeout_caps_the_request(
    server: ScriptedHTTPServer, clock: bt.ManualClock
) -> None:
    inner = Recording()
    with bt.Infrastructure(
        "web", {"circuit_breakers": {"api": {}}}, clock=clock, env={}, background=False
    ) as infra:
        transport = ProtectedTransport(inner, infra=infra, service="api", timeout=3.0)
        with httpx.Client(transport=transport, base_url=server.url) as client:
            client.get("/", timeout=httpx.Timeout(5.0, connect=1.0))
    assert inner.timeouts == [{"connect": 1.0, "read": 3.0, "write": 3.0, "pool": 3.0}]


# -- asyncio -------------------------------------------------------------------------------------


async def test_async_the_breaker_opens_and_the_retry_honours_retry_after(
    server: ScriptedHTTPServer, clock: bt.ManualClock
) -> None:
    for _ in range(2):
        server.answer("/flaky", 503, {"Retry-After": "2"})
    for _ in range(3):
        server.answer("/down", 503)
    arrivals: list[float] = []
    server.on_request = lambda path: arrivals.append(clock.monotonic())
    retrying = AsyncProtectedTransport(
        breaker=breakers(clock), retry=bt.Retry(attempts=3, clock=clock, seed=1)
    )
    async with httpx.AsyncClient(transport=retrying, base_url=server.url) as client:
        response = await client.get("/flaky")
    assert (response.status_code, response.text, arrivals) == (200, "ok", [0.0, 2.0, 4.0])

    plain = AsyncProtectedTransport(breaker=breakers(clock))
    async with httpx.AsyncClient(transport=plain, base_url=server.url) as client:
        assert [(await client.get("/down")).status_code for _ in range(3)] == [503] * 3
        with pytest.raises(bt.CircuitOpenError):
            await client.get("/down")
        assert (await client.get(f"http://localhost:{server.port}/")).status_code == 200


async def test_async_the_deadline_caps_the_timeout(server: ScriptedHTTPServer) -> None:
    inner = AsyncRecording()
    with bt.Infrastructure("web", {"circuit_breakers": {"page": {}}}, env={}) as infra:
        transport = AsyncProtectedTransport(inner)
        async with httpx.AsyncClient(transport=transport, base_url=server.url) as client:

            async def page() -> int:
                return (await client.get("/", timeout=30.0)).status_code

            assert await infra.call_async("page", page, timeout=5.0) == 200
    (seen,) = inner.timeouts
    for name in ("connect", "read", "write", "pool"):  # what was left of 5 s, on the real clock
        assert 4.0 < seen[name] <= 5.0  # type: ignore[operator]


# -- mistakes ------------------------------------------------------------------------------------


def test_mistakes_are_named() -> None:
    with pytest.raises(TypeError, match="with infra=, service= names the service"):
        ProtectedTransport(infra=bt.Infrastructure("x", {}, env={}, background=False))
    with pytest.raises(TypeError, match="give infra= too"):
        ProtectedTransport(service="api")
    with pytest.raises(TypeError, match="failure_status must be statuses"):
        ProtectedTransport(failure_status=True)
    with pytest.raises(bt.ConfigError, match=r"failure_status: 600 is not an HTTP status"):
        ProtectedTransport(failure_status=[503, 600])
    with pytest.raises(TypeError, match=r"inner must be an httpx\.BaseTransport"):
        ProtectedTransport(httpx.AsyncHTTPTransport())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"retry must be a buttress\.Retry"):
        ProtectedTransport(retry=3)  # type: ignore[arg-type]


def test_a_breaker_factory_must_make_breakers(server: ScriptedHTTPServer) -> None:
    transport = ProtectedTransport(breaker=lambda host: "nope")  # type: ignore[arg-type,return-value]
    with httpx.Client(transport=transport) as client, pytest.raises(TypeError, match="must return"):
        client.get(server.url)


def test_the_error_response_reads_as_the_answer_it_carries() -> None:
    """A breaker's status rule and the retry's Retry-After both read it."""
    response = httpx.Response(503, headers={"Retry-After": "7"})
    error = ErrorResponse(response)
    from buttress._breaker._outcome import http_status
    from buttress._retry._retry_after import asked_wait

    assert http_status(error) == 503
    assert asked_wait(error, now=lambda: 0.0) == 7.0


def test_a_service_with_a_pool_is_refused(server: ScriptedHTTPServer) -> None:
    config = {"circuit_breakers": {"api": {}}, "connection_pools": {"api": {"min_size": 0}}}
    with bt.Infrastructure("x", config, pools={"api": object}, env={}, background=False) as infra:
        transport = ProtectedTransport(infra=infra, service="api")
        with (
            httpx.Client(transport=transport) as client,
            pytest.raises(bt.ConfigError, match=r"services\.api\.pool: .*set pool = false"),
        ):
            client.get(server.url)
    assert server.seen == []


def test_a_request_the_breaker_refused_gets_its_charge_back(
    server: ScriptedHTTPServer, clock: bt.ManualClock
) -> None:
    breaker = bt.CircuitBreaker("api", clock=clock)
    limiter = bt.RateLimiter("1/minute", clock=clock)
    transport = ProtectedTransport(breaker=breaker, limiter=limiter)
    with httpx.Client(transport=transport, base_url=server.url) as client:
        breaker.force_open()
        with pytest.raises(bt.CircuitOpenError):
            client.get("/")
        breaker.reset()
        assert client.get("/").status_code == 200  # the quota's one request: still there
        with pytest.raises(bt.RateLimitExceeded):
            client.get("/")
    assert len(server.seen) == 1
