"""buttress.integrations.requests: the adapter against a real HTTP server on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter
from urllib3.util import Timeout

import buttress as bt
from buttress.integrations.requests import ProtectedAdapter
from servers import ScriptedHTTPServer


@pytest.fixture
def server() -> Iterator[ScriptedHTTPServer]:
    s = ScriptedHTTPServer().start()
    try:
        yield s
    finally:
        s.stop()


def session_with(adapter: HTTPAdapter) -> requests.Session:
    session = requests.Session()
    session.mount("http://", adapter)
    return session


def breakers(clock: bt.ManualClock) -> Any:
    """A breaker per host, on ``clock``, opening at the third failure."""
    return lambda host: bt.CircuitBreaker(
        host, failure_threshold=3, degradation_threshold=None, clock=clock
    )


class Seen(HTTPAdapter):
    """requests' own adapter, noting the timeout each request reached it with."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.timeouts: list[Any] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.timeouts.append(kwargs["timeout"])
        return super().send(request, **kwargs)


class RecordingAdapter(ProtectedAdapter, Seen):
    """Ours, then the recording one below it: what ours passed on."""


def test_the_hosts_breaker_opens_on_503s_and_then_refuses(
    server: ScriptedHTTPServer, clock: bt.ManualClock
) -> None:
    for _ in range(5):
        server.answer("/down", 503)
    adapter = ProtectedAdapter(breaker=breakers(clock))
    with session_with(adapter) as session:
        assert [session.get(f"{server.url}/down").status_code for _ in range(3)] == [503] * 3
        with pytest.raises(bt.CircuitOpenError):
            session.get(f"{server.url}/down")
        other = session.get(f"http://localhost:{server.port}/down")
    assert server.seen == [("GET", "/down")] * 4
    assert other.status_code == 503
    assert adapter.breaker_for(server.host).state is bt.BreakerState.OPEN  # type: ignore[union-attr]


def test_the_retry_waits_as_retry_after_asks(
    server: ScriptedHTTPServer, clock: bt.ManualClock
) -> None:
    for _ in range(2):
        server.answer("/flaky", 503, {"Retry-After": "2"})
    arrivals: list[float] = []
    server.on_request = lambda path: arrivals.append(clock.monotonic())
    breaker = bt.CircuitBreaker("api", degradation_threshold=None, clock=clock)
    adapter = ProtectedAdapter(breaker=breaker, retry=bt.Retry(attempts=3, clock=clock, seed=1))
    with session_with(adapter) as session:
        response = session.get(f"{server.url}/flaky")
    assert (response.status_code, response.text) == (200, "ok")
    assert arrivals == [0.0, 2.0, 4.0]
    assert (breaker.snapshot().total_failures, breaker.snapshot().total_successes) == (2, 1)


def test_when_attempts_run_out_the_last_answer_is_returned(
    server: ScriptedHTTPServer, clock: bt.ManualClock
) -> None:
    for _ in range(3):
        server.answer("/down", 429, {"Retry-After": "1"})
    adapter = ProtectedAdapter(retry=bt.Retry(attempts=2, clock=clock, seed=1))
    with session_with(adapter) as session:
        response = session.get(f"{server.url}/down")
    assert (response.status_code, response.text) == (429, "status 429")
    assert len(server.seen) == 2 and clock.monotonic() == 1.0


def test_a_404_counts_for_nothing_and_is_not_retried(
    server: ScriptedHTTPServer, clock: bt.ManualClock
) -> None:
    for _ in range(3):
        server.answer("/missing", 404)
    breaker = bt.CircuitBreaker("api", failure_threshold=1, degradation_threshold=None, clock=clock)
    adapter = ProtectedAdapter(breaker=breaker, retry=bt.Retry(attempts=3, clock=clock))
    with session_with(adapter) as session:
        answers = [session.get(f"{server.url}/missing") for _ in range(3)]
    assert [r.status_code for r in answers] == [404] * 3
    assert (breaker.snapshot().total_ignored, breaker.snapshot().total_failures) == (3, 0)
    assert breaker.state is bt.BreakerState.CLOSED and len(server.seen) == 3


def test_the_rule_of_the_services_breaker_from_toml(
    server: ScriptedHTTPServer, clock: bt.ManualClock, tmp_path: Path
) -> None:
    config = tmp_path / "buttress.toml"
    config.write_text(
        "[circuit_breakers.inventory]\n"
        'strategy = "fail_fast"\n'
        "failure_threshold = 2\n"
        "failure_rate_threshold = 1.0\n"
        'failure_result = { status = ["502-504"] }\n'
    )
    for status in (500, 504, 502):
        server.answer("/items", status)
    with bt.Infrastructure("shop", str(config), clock=clock, env={}, background=False) as infra:
        adapter = ProtectedAdapter(infra=infra, service="inventory")
        with session_with(adapter) as session:
            statuses = [session.get(f"{server.url}/items").status_code for _ in range(3)]
            with pytest.raises(bt.CircuitOpenError):
                session.get(f"{server.url}/items")
    assert statuses == [500, 504, 502]


def test_an_outbound_quota_refuses_with_rate_limit_exceeded(
    server: ScriptedHTTPServer, clock: bt.ManualClock
) -> None:
    adapter = ProtectedAdapter(limiter=bt.RateLimiter("1/minute", clock=clock))
    with session_with(adapter) as session:
        session.get(server.url)
        with pytest.raises(bt.RateLimitExceeded):
            session.get(server.url)
    assert len(server.seen) == 1


@pytest.mark.parametrize(
    ("given", "capped"),
    [
        (None, 0.5),
        (10, 0.5),
        (0.25, 0.25),
        ((0.25, 30), (0.25, 0.5)),
        ((None, None), (0.5, 0.5)),
        (Timeout(connect=3, read=0.1), (0.5, 0.1)),
    ],
)
def test_the_calls_deadline_caps_the_timeout(
    server: ScriptedHTTPServer, clock: bt.ManualClock, given: Any, capped: Any
) -> None:
    adapter = RecordingAdapter(breaker=bt.CircuitBreaker("api", clock=clock))
    config = {"circuit_breakers": {"page": {}}}
    with (
        bt.Infrastructure("web", config, clock=clock, env={}, background=False) as infra,
        session_with(adapter) as session,
    ):

        def page() -> int:
            clock.advance(1.5)
            return session.get(server.url, timeout=given).status_code

        assert infra.call("page", page, timeout=2.0) == 200
        session.get(server.url, timeout=given)  # outside a protected call: as given
    assert adapter.timeouts[0] == capped
    assert adapter.timeouts[1] is given or adapter.timeouts[1] == given


def test_the_services_own_timeout_caps_the_request(
    server: ScriptedHTTPServer, clock: bt.ManualClock
) -> None:
    with bt.Infrastructure(
        "web", {"circuit_breakers": {"api": {}}}, clock=clock, env={}, background=False
    ) as infra:
        adapter = RecordingAdapter(infra=infra, service="api", timeout=3.0)
        with session_with(adapter) as session:
            session.get(server.url, timeout=(1.0, 10.0))
    assert adapter.timeouts == [(1.0, 3.0)]


def test_mistakes_are_named() -> None:
    with pytest.raises(TypeError, match="not both"):
        ProtectedAdapter(
            infra=bt.Infrastructure("x", {}, env={}, background=False),
            service="api",
            breaker=bt.CircuitBreaker("api"),
        )
    with pytest.raises(TypeError, match="limiter must be a buttress"):
        ProtectedAdapter(limiter="outbound")
    with pytest.raises(TypeError, match="max_hosts must be a positive int"):
        ProtectedAdapter(max_hosts=0)
