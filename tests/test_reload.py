"""Infrastructure.reload: all or nothing, state kept, the new settings in force at once."""

from __future__ import annotations

import copy
import threading
from typing import Any

import pytest

import buttress as bt

BASE: dict[str, Any] = {
    "memory_manager": {"enabled": False},
    "circuit_breakers": {
        "svc": {
            "failure_threshold": 3,
            "degradation_threshold": None,
            "failure_rate_threshold": None,
            "degradation_rate_threshold": None,
            "reset_timeout": 30.0,
        }
    },
    "rate_limiting": {
        "limiters": {
            "svc": {
                "algorithm": "fixed_window",
                "scopes": [{"name": "user", "limit": 3, "window": 60.0}],
            }
        }
    },
    "services": {"svc": {"bulkhead": {"max_concurrent": 4}}},
}


def changed(**limits: Any) -> dict[str, Any]:
    config = copy.deepcopy(BASE)
    for path, value in limits.items():
        node = config
        *parents, last = path.split("__")
        for part in parents:
            node = node[part]
        node[last] = value
    return config


def make(clock: bt.ManualClock) -> bt.Infrastructure:
    return bt.Infrastructure("t", BASE, clock=clock, env={}, background=False)


def test_a_new_limit_is_in_force_for_the_next_call_and_what_was_used_carries_over(
    event_log: Any,
) -> None:
    with make(bt.ManualClock()) as infra:
        for _ in range(2):
            infra.call("svc", lambda: None, rate_key="u1")
        config = changed()
        config["rate_limiting"]["limiters"]["svc"]["scopes"][0]["limit"] = 5
        done = infra.reload(config)
        assert done.changed == ("rate_limiting.limiters.svc",)
        assert (done.added, done.removed) == ((), ())
        assert infra.limiters["svc"].scopes[0].limit == 5
        for _ in range(3):  # 2 used before the reload, 5 now: 3 left
            infra.call("svc", lambda: None, rate_key="u1")
        with pytest.raises(bt.RateLimitExceeded) as caught:
            infra.call("svc", lambda: None, rate_key="u1")
        assert caught.value.limit == 5
        assert infra.health().to_dict()["reloads"][-1]["changed"] == ["rate_limiting.limiters.svc"]
    (event,) = event_log.named("buttress", "infrastructure", "reloaded", namespace="t")
    assert event[0] == {"added": 0, "removed": 0, "changed": 1}


def test_a_breaker_keeps_its_state_and_counts_under_new_thresholds() -> None:
    clock = bt.ManualClock()
    with make(clock) as infra:
        breaker = infra.breakers["svc"]
        for _ in range(2):
            with pytest.raises(ZeroDivisionError):
                infra.call("svc", lambda: 1 / 0, rate_key=f"f{_}")
        config = changed()
        config["circuit_breakers"]["svc"]["failure_threshold"] = 10
        config["circuit_breakers"]["svc"]["reset_timeout"] = 5.0
        assert infra.reload(config).changed == ("circuit_breakers.svc",)
        assert infra.breakers["svc"] is breaker  # the same breaker, reconfigured
        assert breaker.snapshot().failure_count == 2  # its window's counts kept
        assert breaker.config.failure_threshold == 10
        # Back to 3: the two failures counted before count now, and the next one opens it.
        infra.reload(BASE)
        with pytest.raises(ZeroDivisionError):
            infra.call("svc", lambda: 1 / 0, rate_key="f3")
        assert breaker.state is bt.BreakerState.OPEN
        opened_until = breaker.snapshot().retry_after
        infra.reload(config)  # an open breaker stays open, until the time it had
        assert breaker.state is bt.BreakerState.OPEN
        assert breaker.snapshot().retry_after == opened_until


def test_an_unchanged_bulkhead_keeps_its_calls_in_flight() -> None:
    with make(bt.ManualClock()) as infra:
        bulkhead = infra.bulkheads["svc"]
        with infra.protect("svc", rate_key="u"):
            config = changed()
            config["rate_limiting"]["limiters"]["svc"]["scopes"][0]["limit"] = 50
            infra.reload(config)
            assert infra.bulkheads["svc"] is bulkhead and bulkhead.in_use == 1
        assert bulkhead.in_use == 0
        config["services"]["svc"]["bulkhead"]["max_concurrent"] = 8
        assert infra.reload(config).changed == ("services.svc",)
        assert infra.bulkheads["svc"].limit == 8


@pytest.mark.parametrize(
    ("edit", "path"),
    [
        (lambda c: c["services"]["svc"].update(limiter="missing"), "services.svc.limiter"),
        (lambda c: c["circuit_breakers"]["svc"].update(failure_threshold=0), "circuit_breakers"),
        (
            lambda c: c.update(connection_pools={"db": {"factory": "sqlite3:connect"}}),
            "connection_pools",
        ),
        (lambda c: c.update(memory_manager={"enabled": True}), "memory_manager"),
    ],
)
def test_an_invalid_or_unsupported_change_changes_nothing(edit: Any, path: str) -> None:
    with make(bt.ManualClock()) as infra:
        infra.call("svc", lambda: None, rate_key="u1")
        before = (infra.config, dict(infra.breakers), dict(infra.limiters), dict(infra._routes))
        config = changed()
        config["rate_limiting"]["limiters"]["svc"]["scopes"][0]["limit"] = 50
        edit(config)
        with pytest.raises(bt.ConfigError) as caught:
            infra.reload(config)
        assert caught.value.path.startswith(path)
        after = (infra.config, dict(infra.breakers), dict(infra.limiters), dict(infra._routes))
        assert after == before
        assert infra.reloads == []
        infra.call("svc", lambda: None, rate_key="u1")
        infra.call("svc", lambda: None, rate_key="u1")
        with pytest.raises(bt.RateLimitExceeded):  # still the old limit of 3
            infra.call("svc", lambda: None, rate_key="u1")


def test_services_and_components_come_and_go() -> None:
    with make(bt.ManualClock()) as infra:
        config = changed()
        config["circuit_breakers"]["search"] = {
            "failure_threshold": 2,
            "degradation_threshold": None,
        }
        config["services"]["search"] = {"limiter": False}
        done = infra.reload(config)
        assert set(done.added) == {"circuit_breakers.search", "services.search"}
        assert infra.call("search", lambda: "found") == "found"
        done = infra.reload(BASE)
        assert set(done.removed) == {"circuit_breakers.search", "services.search"}
        with pytest.raises(bt.ConfigError):
            infra.call("search", lambda: "found")


def test_reloads_do_not_overlap() -> None:
    # Two threads reload at once (a call and, say, the fleet): each reload starts from what the
    # other applied, so the last one swapped in is one of the two configurations, whole.
    configs = [changed(), changed()]
    configs[0]["rate_limiting"]["limiters"]["svc"]["scopes"][0]["limit"] = 10
    configs[1]["circuit_breakers"]["svc"]["failure_threshold"] = 9
    with make(bt.ManualClock()) as infra:
        inside = threading.Event()
        overlapped = []
        original = infra._reload_locked

        def slow(config: Any, source: str) -> bt.Reloaded:
            overlapped.append(inside.is_set())
            inside.set()
            try:
                return original(config, source)
            finally:
                inside.clear()

        infra._reload_locked = slow  # type: ignore[method-assign]
        threads = [threading.Thread(target=infra.reload, args=(configs[i % 2],)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert overlapped == [False] * 20
        assert [r.source for r in infra.reloads] == ["call"] * 10


def test_reloading_under_load_fails_no_call() -> None:
    # real-time: 8 threads call while the configuration is reloaded 40 times.
    config = changed()
    config["rate_limiting"]["limiters"]["svc"]["scopes"][0]["limit"] = 1_000_000
    config["services"]["svc"]["bulkhead"]["max_concurrent"] = 8  # room for every thread
    bigger = copy.deepcopy(config)
    bigger["rate_limiting"]["limiters"]["svc"]["scopes"][0]["limit"] = 2_000_000
    errors: list[BaseException] = []
    calls = [0] * 8
    stop = threading.Event()
    with bt.Infrastructure("load", config, env={}, background=False) as infra:

        def worker(i: int) -> None:
            while not stop.is_set():
                try:
                    infra.call("svc", lambda: None, rate_key=f"user{i}")
                    calls[i] += 1
                except BaseException as exc:  # any failure is the reload's fault
                    errors.append(exc)
                    return

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        try:
            for n in range(40):
                infra.reload(bigger if n % 2 == 0 else config)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)
        assert not errors, errors[:3]
        assert all(calls), calls
        assert infra.limiters["svc"].scopes[0].limit == 1_000_000  # the last one applied
        assert infra.bulkheads["svc"].in_use == 0


def test_a_watched_file_is_reloaded_when_it_changes(
    tmp_path: Any, caplog: Any, event_log: Any
) -> None:
    path = tmp_path / "app.toml"
    path.write_text(
        '[rate_limiting.limiters.svc]\nalgorithm = "fixed_window"\n'
        '[[rate_limiting.limiters.svc.scopes]]\nname = "user"\nlimit = 3\n'
    )
    clock = bt.ManualClock()
    with bt.Infrastructure("w", str(path), clock=clock, env={}, background=False) as infra:
        infra.watch_config(path, interval=1.0)
        clock.advance(1.0)
        infra.run_maintenance()  # unchanged: nothing reloaded
        assert infra.reloads == []
        path.write_text(path.read_text().replace("limit = 3", "limit = 7"))
        clock.advance(1.0)
        infra.run_maintenance()
        assert infra.limiters["svc"].scopes[0].limit == 7
        assert infra.reloads[-1].changed == ("rate_limiting.limiters.svc",)
        assert infra.reloads[-1].source == "file"
        path.write_text(path.read_text().replace("limit = 7", "limit = -1"))  # a mistake
        clock.advance(1.0)
        infra.run_maintenance()
        assert infra.limiters["svc"].scopes[0].limit == 7  # kept
        assert "was not applied" in caplog.text
    ((_, reloaded),) = event_log.named("buttress", "infrastructure", "reloaded", namespace="w")
    assert reloaded["source"] == "file"
    ((_, refused),) = event_log.named("buttress", "infrastructure", "reload_refused", namespace="w")
    assert (refused["source"], refused["setting"]) == (
        "file",
        "rate_limiting.limiters.svc.scopes[0].limit",
    )
    with (
        bt.Infrastructure("w2", None, env={}, background=False) as other,
        pytest.raises(bt.ConfigError),
    ):
        other.watch_config(tmp_path / "missing.toml")
