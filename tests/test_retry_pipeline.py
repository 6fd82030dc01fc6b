"""bt.Retry in the protect pipeline: each attempt is one breaker call, the rate limit is charged
once per request, no attempt starts while the breaker is open, timeouts count on every attempt,
a service's [services.NAME.retry] applies to its calls, and a budget stops a retry storm."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

import buttress as bt
from buttress.exporters._metrics import gather_all
from buttress.testing import isolated_infrastructure

BREAKER = {
    "failure_threshold": 3,
    "degradation_threshold": None,
    "minimum_calls": 100,
    "reset_timeout": 30.0,
}


def config(limit: int = 100, **service: Any) -> dict[str, Any]:
    return {
        "circuit_breakers": {"api": BREAKER},
        "rate_limiting": {"limiters": {"api": {"limit": limit, "window": 60}}},
        "services": {"api": service},
    }


class Upstream:
    """Fails ``failures`` times, then answers; records each start and the breaker's state."""

    def __init__(self, infra: bt.Infrastructure, failures: int) -> None:
        self.infra = infra
        self.failures = failures
        self.starts: list[tuple[float, bt.BreakerState | None]] = []

    def __call__(self) -> str:
        breaker = self.infra.breakers.get("api")
        state = breaker.state if breaker is not None else None
        self.starts.append((self.infra.clock.monotonic(), state))
        if len(self.starts) <= self.failures:
            raise ConnectionError("api is down")
        return "ok"

    async def run(self) -> str:
        return self()


def snapshot(infra: bt.Infrastructure) -> bt.ServiceSnapshot:
    return infra.services["api"].snapshot(now=infra.clock.monotonic())


def test_a_retried_request_is_charged_once_and_each_attempt_is_a_breaker_call() -> None:
    with isolated_infrastructure(config(limit=1), clock=bt.ManualClock()) as infra:
        op = Upstream(infra, failures=2)
        retry = bt.Retry(attempts=3, seed=1)
        assert infra.call("api", op, retry=retry) == "ok"  # 3 attempts on a limit of 1
        breaker = infra.breakers["api"].snapshot()
        assert (breaker.total_failures, breaker.total_successes) == (2, 1)
        assert snapshot(infra).retries == {"retried": 2, "recovered": 1}
        with pytest.raises(bt.RateLimitExceeded):  # the one request spent the limit
            infra.call("api", op, retry=retry)


def test_no_attempt_starts_while_the_breaker_is_open() -> None:
    with isolated_infrastructure(config(), clock=bt.ManualClock()) as infra:
        op = Upstream(infra, failures=3)
        retry = bt.Retry(attempts=6, backoff=bt.Backoff(initial=0.1), seed=2)
        with pytest.raises(bt.CircuitOpenError) as info:
            infra.call("api", op, retry=retry)  # the third failure opens it
        assert len(op.starts) == 3
        assert "would pass backoff.max" in info.value.__notes__[0]  # 30 s > max of 10 s
        assert snapshot(infra).retries == {"retried": 3, "deadline": 1}

        # With a deadline that allows it, the retry waits for the breaker to half-open.
        infra.breakers["api"].reset()
        op = Upstream(infra, failures=3)
        retry = bt.Retry(attempts=6, backoff=bt.Backoff(initial=0.1), deadline=60.0, seed=2)
        assert infra.call("api", op, retry=retry) == "ok"
        assert all(state is not bt.BreakerState.OPEN for _, state in op.starts)
        opened_at = op.starts[2][0]
        assert op.starts[3][1] is bt.BreakerState.HALF_OPEN  # the next attempt is its probe
        # never before its retry_after: 30 s, give or take the default jitter (+/-10%)
        assert op.starts[3][0] - opened_at >= 27.0


def test_a_service_retry_from_configuration_applies_to_its_calls() -> None:
    service = {
        "retry": {
            "attempts": 4,
            "initial": "200ms",
            "jitter": "none",
            "deadline": "10s",
            "budget": {"ratio": 0.5, "min_per_second": 0.2},  # 2.5 retries
        }
    }
    with isolated_infrastructure(config(**service), clock=bt.ManualClock()) as infra:
        op = Upstream(infra, failures=2)
        assert infra.call("api", op) == "ok"
        starts = [t for t, _ in op.starts]
        assert [round(b - a, 9) for a, b in itertools.pairwise(starts)] == [0.2, 0.4]
        retry = infra._route("api").retry
        assert retry is not None and retry.budget is not None
        assert retry.budget.snapshot().retries == 2

        op = Upstream(infra, failures=1)  # a retry given in code replaces the service's
        with pytest.raises(ConnectionError):
            infra.call("api", op, retry=bt.Retry(attempts=1))


def test_a_bad_retry_table_names_the_setting() -> None:
    for table, path in (
        ({"attempts": 0}, "services.api.retry.attempts"),
        ({"initial": "2s", "max": "1s"}, "services.api.retry.max"),
        ({"budget": {"window": 0}}, "services.api.retry.budget.window"),
        ({"jitter": "lots"}, "services.api.retry.jitter"),
    ):
        with pytest.raises(bt.ConfigError) as info:
            bt.load_config(config(retry=table))
        assert info.value.path == path, (table, info.value)


def test_hung_async_attempts_each_time_out_and_open_the_breaker() -> None:
    clock = bt.ManualClock()

    async def hang() -> str:
        await asyncio.Event().wait()
        return "never"

    async def scenario(infra: bt.Infrastructure) -> None:
        retry = bt.Retry(attempts=5, backoff=bt.Backoff(initial=0.1), seed=3)
        with pytest.raises(bt.CircuitOpenError):
            await infra.call_async("api", hang, timeout=1.0, retry=retry)
        assert infra.breakers["api"].state is bt.BreakerState.OPEN
        assert snapshot(infra).timeouts == 3

    with isolated_infrastructure(config(), clock=clock) as infra:
        asyncio.run(scenario(infra))


def test_the_retry_deadline_bounds_each_attempts_timeout() -> None:
    clock = bt.ManualClock()
    seen: list[float | None] = []

    async def slow() -> str:
        seen.append(bt.remaining())
        await clock.asleep(100.0)
        return "late"

    async def scenario(infra: bt.Infrastructure) -> None:
        retry = bt.Retry(attempts=3, backoff=bt.Backoff(initial=0.5, jitter="none"), deadline=4.0)
        start = clock.monotonic()
        with pytest.raises(bt.CallTimeoutError):
            await infra.call_async("api", slow, timeout=3.0, retry=retry)
        assert clock.monotonic() - start <= 4.0  # the total never exceeds the deadline
        assert seen == [3.0, 0.5]  # the second attempt gets what is left of the deadline

    with isolated_infrastructure(config(), clock=clock) as infra:
        asyncio.run(scenario(infra))


def test_a_fallback_answers_once_retries_are_exhausted() -> None:
    with isolated_infrastructure(config(), clock=bt.ManualClock()) as infra:
        op = Upstream(infra, failures=10)
        got = infra.call("api", op, retry=bt.Retry(attempts=2), fallback=lambda exc: "cached")
        assert got == "cached" and len(op.starts) == 2
        snap = snapshot(infra)
        assert snap.fallbacks == 1 and snap.retries == {"retried": 1, "exhausted": 1}


def test_retries_are_exported_by_outcome() -> None:
    with isolated_infrastructure(config(), clock=bt.ManualClock()) as infra:
        infra.call("api", Upstream(infra, failures=1), retry=bt.Retry(attempts=2))
        out = gather_all(infra)
        rows = {labels[-1]: value for labels, value in out["service.retries"]}
        assert rows == {"recovered": 1.0, "retried": 1.0}


@pytest.mark.parametrize("budgeted", [False, True])
def test_a_retry_storm_is_bounded_by_the_budget(budgeted: bool) -> None:
    """50 callers, 10 requests each, against a dependency that always fails."""
    clock = bt.ManualClock()
    ratio, floor_rate, window = 0.2, 1.0, 60.0
    budget = (
        bt.RetryBudget(ratio=ratio, min_per_second=floor_rate, window=window, clock=clock)
        if budgeted
        else None
    )
    retry = bt.Retry(attempts=4, backoff=bt.Backoff(initial=0.05, max=0.5), budget=budget, seed=4)
    seen = [0]

    async def dependency() -> None:
        seen[0] += 1
        await asyncio.sleep(0)  # real-time: one loop turn, so the callers interleave
        raise ConnectionError("down")

    async def caller(infra: bt.Infrastructure) -> None:
        for _ in range(10):
            with pytest.raises(ConnectionError):
                await infra.call_async("dep", dependency, retry=retry)

    async def storm(infra: bt.Infrastructure) -> None:
        await asyncio.gather(*(caller(infra) for _ in range(50)))

    # No breaker: the budget alone stands between the callers and the dependency.
    with isolated_infrastructure({"services": {"dep": {"breaker": False}}}, clock=clock) as infra:
        asyncio.run(storm(infra))
        requests = 50 * 10
        assert clock.monotonic() < window  # every request fell in one window
        if budgeted:
            assert seen[0] <= (1 + ratio) * requests + floor_rate * window  # 660
            assert snapshot_of(infra, "dep").retries["budget"] > 0
        else:
            assert seen[0] == 4 * requests  # every attempt of every request
        print(f"budget={budgeted}: the dependency saw {seen[0]} calls for {requests} requests")


def snapshot_of(infra: bt.Infrastructure, name: str) -> bt.ServiceSnapshot:
    return infra.services[name].snapshot(now=infra.clock.monotonic())


def test_the_services_retry_budget_is_in_health_and_the_metrics() -> None:
    service = {
        "breaker": False,  # four failures would open it
        "retry": {"attempts": 2, "budget": {"ratio": 0.5, "min_per_second": 0.1}},
    }
    with isolated_infrastructure(config(**service), clock=bt.ManualClock()) as infra:
        outcomes = []
        for _ in range(4):  # each fails once: 0.5 x requests + 1 retries are allowed
            try:
                outcomes.append(infra.call("api", Upstream(infra, failures=1)))
            except ConnectionError:
                outcomes.append("refused")
        assert outcomes == ["ok", "ok", "refused", "ok"]  # the third: 3 retries > 2.5
        report = infra.health().to_dict()
        budget = report["services"]["api"]["retry_budget"]
        assert budget == {"requests": 4, "retries": 3, "available": 0, "refused": 1}
        (row,) = gather_all(infra)["service.retry_budget"]
        assert row[1] == 0.0


class Response:
    def __init__(self, status_code: int) -> None:
        self.status_code = status_code


class StatusError(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


def test_retry_rules_from_configuration() -> None:
    retry = {"attempts": 3, "on": [{"status": ["5xx"]}], "on_result": {"status": [503]}}
    with isolated_infrastructure(
        config(breaker=False, retry=retry), clock=bt.ManualClock()
    ) as infra:
        answers = iter([Response(503), Response(200)])
        assert infra.call("api", lambda: next(answers)).status_code == 200

        errors = iter([StatusError(502), StatusError(404)])

        def fails() -> None:
            raise next(errors)

        with pytest.raises(StatusError) as info:  # 502 is retried, 404 is not
            infra.call("api", fails)
        assert info.value.status_code == 404

        with pytest.raises(ConnectionError):  # not named by `on`: never retried
            infra.call("api", Upstream(infra, failures=1))


def test_bad_retry_rules_name_the_rule() -> None:
    with pytest.raises(bt.ConfigError) as info:
        bt.load_config(config(retry={"on": ["ConnectionError", {"status": ["600-700"]}]}))
    assert info.value.path == "services.api.retry.on[1].status"
    cfg = bt.load_config(config(retry={"on": ["nosuch.module.Error"]}))
    with pytest.raises(bt.ConfigError) as info:
        cfg.check_imports()
    assert info.value.path.startswith("services.api.retry.on")


def test_a_retried_request_that_never_reaches_the_operation_is_refunded() -> None:
    with isolated_infrastructure(config(limit=1), clock=bt.ManualClock()) as infra:
        infra.breakers["api"].force_open()
        op = Upstream(infra, failures=0)
        with pytest.raises(bt.CircuitOpenError):  # refused by every attempt: no work done
            infra.call("api", op, retry=bt.Retry(attempts=3))
        infra.breakers["api"].reset()
        assert infra.call("api", op, retry=bt.Retry(attempts=3)) == "ok"  # the limit is intact
        with pytest.raises(bt.RateLimitExceeded):  # that request did work: it keeps its charge
            infra.call("api", op, retry=bt.Retry(attempts=3))


def test_an_async_retried_request_refused_throughout_is_refunded() -> None:
    async def scenario(infra: bt.Infrastructure) -> None:
        infra.breakers["api"].force_open()
        op = Upstream(infra, failures=0)
        with pytest.raises(bt.CircuitOpenError):
            await infra.call_async("api", op.run, retry=bt.Retry(attempts=3))
        infra.breakers["api"].reset()
        assert await infra.call_async("api", op.run, retry=bt.Retry(attempts=3)) == "ok"

    with isolated_infrastructure(config(limit=1), clock=bt.ManualClock()) as infra:
        asyncio.run(scenario(infra))
