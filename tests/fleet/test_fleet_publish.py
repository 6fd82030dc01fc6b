"""A configuration published through the fleet (``buttress config publish``), on a real Redis:
every process's infrastructure reloads it at its next sync, keeping its state; an invalid
file publishes nothing; a process that cannot apply it changes nothing and says why; a
process started later adopts it; ``withdraw`` ends it. Each infrastructure here stands for a
process (a fleet of its own, its own process id); time is a ``ManualClock`` and each sync is
run by hand (``run_maintenance`` after one interval), so nothing waits for the clock."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import buttress as bt
from buttress._cli import main
from buttress._fleet._publication_store import PublicationStore
from servers import free_port

INTERVAL = 0.1
ROOT = Path(__file__).resolve().parents[2]


def document(
    url: str, namespace: str, *, limit: int = 3, threshold: int = 5, extra: str = ""
) -> str:
    return f"""
[fleet]
url = "{url}"
namespace = "{namespace}"
sync_interval = "100ms"

[memory_manager]
enabled = false

[circuit_breakers.payments]
fleet = true
failure_threshold = {threshold}
degradation_threshold = 2
failure_rate_threshold = 1.0
degradation_rate_threshold = 0.5

[rate_limiting.limiters.search]
algorithm = "fixed_window"
scopes = [{{ name = "user", limit = {limit}, window = 60.0 }}]
{extra}"""


class Fleet:
    """The processes of one fleet (infrastructures made from files) and its namespace."""

    def __init__(self, tmp_path: Path, url: str) -> None:
        self.tmp_path = tmp_path
        self.url = url
        self.namespace = "publish-" + uuid.uuid4().hex[:8]
        self.clock = bt.ManualClock()
        self.infras: list[bt.Infrastructure] = []
        self.file = self.write("app.toml", document(url, self.namespace))

    def write(self, name: str, text: str) -> Path:
        path = self.tmp_path / name
        path.write_text(text)
        return path

    def process(self, path: Path | None = None) -> bt.Infrastructure:
        infra = bt.Infrastructure(
            "app", str(path or self.file), env={}, clock=self.clock, background=False
        )
        self.infras.append(infra)
        return infra

    def sync(self) -> None:
        """One sync interval: each process's follower runs once (its scheduler's job)."""
        self.clock.advance(INTERVAL)
        for infra in self.infras:
            infra.run_maintenance()

    def publish(self, text: str, *args: str) -> int:
        return main(["config", "publish", str(self.write("new.toml", text)), *args])

    def store(self) -> PublicationStore:
        import redis

        return PublicationStore(redis.Redis.from_url(self.url, socket_timeout=1.0), self.namespace)

    def close(self) -> None:
        for infra in self.infras:
            infra.close()
        store = self.store()
        store.client.delete(*store.keys())  # the record never expires by itself
        store.client.close()


@pytest.fixture
def fleet(tmp_path: Path, redis_url: str) -> Iterator[Fleet]:
    f = Fleet(tmp_path, redis_url)
    try:
        yield f
    finally:
        f.close()


def published(infra: bt.Infrastructure) -> dict[str, Any]:
    doc: dict[str, Any] = infra.health().to_dict()["published"]
    return doc


def fail(breaker: bt.CircuitBreaker, n: int) -> None:
    for _ in range(n):
        permit = breaker.try_acquire(critical=True)  # a degraded breaker sheds no critical call
        assert permit
        permit.record_failure()


def test_a_publish_reaches_every_process_and_each_reloads_keeping_its_state(
    fleet: Fleet, capsys: pytest.CaptureFixture[str], event_log: Any
) -> None:
    a, b = fleet.process(), fleet.process()
    fleet.sync()
    assert published(a) == {
        "running": 0,
        "state": "none",
        "refused": None,
        "connected": True,
        "fleet_error": None,
    }
    fail(a.breakers["payments"], 2)  # below its threshold of 5
    a.call("search", lambda: None, rate_key="u1")

    new = document(fleet.url, fleet.namespace, limit=5, threshold=3)
    assert fleet.publish(new, "--reason", "incident 7", "--by", "alice") == 0
    record = json.loads(capsys.readouterr().out)
    assert (record["action"], record["by"], record["reason"]) == ("publish", "alice", "incident 7")
    assert (
        a.limiters["search"].scopes[0].limit,
        a.breakers["payments"].config.failure_threshold,
    ) == (3, 5)

    fleet.sync()
    for infra in (a, b):
        assert infra.limiters["search"].scopes[0].limit == 5
        assert infra.breakers["payments"].config.failure_threshold == 3
        status = published(infra)
        assert (status["generation"], status["running"], status["state"]) == (
            record["generation"],
            record["generation"],
            "applied",
        )
        assert (status["by"], status["reason"], status["action"]) == (
            "alice",
            "incident 7",
            "publish",
        )
        assert infra.health().to_dict()["reloads"][-1]["source"] == "fleet"
        # The fleet applies the breaker's new thresholds too, from its next sync.
        fleet_obj = infra._build.made_fleet
        assert fleet_obj is not None
        assert [link.thresholds.failure_threshold for link in fleet_obj._links] == [3]
    # State kept: the two failures counted before still count, so one more opens it.
    payments = a.breakers["payments"]
    assert payments.state is bt.BreakerState.DEGRADED
    fail(payments, 1)
    assert payments.state is bt.BreakerState.OPEN
    for _ in range(4):  # one of the 5 was used before the reload
        a.call("search", lambda: None, rate_key="u1")
    with pytest.raises(bt.RateLimitExceeded):
        a.call("search", lambda: None, rate_key="u1")

    events = event_log.named("buttress", "infrastructure", "reloaded", source="fleet")
    assert len(events) == 2
    fleet.sync()  # each process reports what it runs at its next sync
    assert main(["fleet", "status", "--config", str(fleet.file)]) == 0
    status = json.loads(capsys.readouterr().out)["published"]
    assert (status["generation"], status["by"], status["running_it"]) == (
        record["generation"],
        "alice",
        2,
    )
    assert len(status["processes"]) == 2
    assert {p["state"] for p in status["processes"]} == {"applied"}


def test_an_invalid_file_publishes_nothing(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    a = fleet.process()
    bad = document(fleet.url, fleet.namespace, threshold=0)
    assert fleet.publish(bad) == 2
    err = capsys.readouterr().err
    assert "circuit_breakers.payments.failure_threshold" in err
    assert fleet.publish("[circuit_breakers.payments\n") == 2
    assert "is not valid TOML" in capsys.readouterr().err
    assert fleet.store().read() is None
    fleet.sync()
    assert published(a)["state"] == "none"
    assert a.breakers["payments"].config.failure_threshold == 5


def test_a_process_that_cannot_apply_it_runs_what_it_ran_and_says_why(
    fleet: Fleet,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    event_log: Any,
) -> None:
    a = fleet.process()
    # This process's own file runs a memory manager, which a reload cannot change.
    own = document(fleet.url, fleet.namespace).replace("enabled = false", "enabled = true")
    b = fleet.process(fleet.write("b.toml", own))
    assert fleet.publish(document(fleet.url, fleet.namespace, limit=7)) == 0
    generation = json.loads(capsys.readouterr().out)["generation"]
    with caplog.at_level(logging.WARNING, logger="buttress.infrastructure"):
        fleet.sync()
    assert a.limiters["search"].scopes[0].limit == 7
    assert b.limiters["search"].scopes[0].limit == 3  # unchanged: nothing was applied
    status = published(b)
    assert (status["generation"], status["running"], status["state"]) == (generation, 0, "refused")
    assert status["refused"].startswith("memory_manager: cannot change by reload")
    (warning,) = [r for r in caplog.records if "was not applied" in r.getMessage()]
    assert warning.levelno == logging.WARNING and "memory_manager" in warning.getMessage()
    ((_, metadata),) = event_log.named("buttress", "infrastructure", "reload_refused")
    assert (metadata["source"], metadata["setting"]) == ("fleet", "memory_manager")
    assert b.health().to_dict()["reloads"] == []
    fleet.sync()
    assert main(["fleet", "status", "--config", str(fleet.file)]) == 0
    report = json.loads(capsys.readouterr().out)["published"]
    assert report["running_it"] == 1
    (refusal,) = [p["refused"] for p in report["processes"] if p["state"] == "refused"]
    assert refusal.startswith("memory_manager: cannot change by reload")


def test_a_change_to_the_fleet_itself_is_refused_everywhere(fleet: Fleet) -> None:
    a = fleet.process()
    changed = document(fleet.url, fleet.namespace, limit=9).replace(
        'sync_interval = "100ms"', 'sync_interval = "100ms"\nquorum = 3'
    )
    assert fleet.publish(changed) == 0
    fleet.sync()
    assert a.limiters["search"].scopes[0].limit == 3
    assert published(a)["refused"].startswith("fleet: cannot change by reload")


def test_a_process_started_after_the_publish_adopts_it_and_withdraw_ends_it(
    fleet: Fleet, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    assert fleet.publish(document(fleet.url, fleet.namespace, limit=8), "--by", "bob") == 0
    generation = json.loads(capsys.readouterr().out)["generation"]
    late = fleet.process()
    assert late.limiters["search"].scopes[0].limit == 3  # its file, until its first sync
    late.run_maintenance()  # its first sync is due at once
    assert late.limiters["search"].scopes[0].limit == 8
    assert published(late)["running"] == generation

    # The published configuration wins over the file it watches, until withdrawn.
    late.watch_config(fleet.file, interval=INTERVAL)
    fleet.write("app.toml", document(fleet.url, fleet.namespace, limit=4) + "\n")
    with caplog.at_level(logging.WARNING, logger="buttress.infrastructure"):
        fleet.sync()
    assert late.limiters["search"].scopes[0].limit == 8
    assert any("is in force until it is withdrawn" in r.getMessage() for r in caplog.records)

    assert main(["config", "withdraw", "--config", str(fleet.file), "--reason", "done"]) == 0
    withdrawn = json.loads(capsys.readouterr().out)
    assert (withdrawn["action"], withdrawn["generation"]) == ("withdraw", generation + 1)
    fleet.sync()
    status = published(late)
    assert (status["state"], status["running"], status["generation"]) == (
        "withdrawn",
        generation,
        generation + 1,
    )
    assert late.limiters["search"].scopes[0].limit == 8  # it keeps what it runs
    fresh = fleet.process()  # a process started now runs its file
    fresh.run_maintenance()
    assert fresh.limiters["search"].scopes[0].limit == 4
    # The file applies again at its next change.
    fleet.write("app.toml", document(fleet.url, fleet.namespace, limit=6))
    fleet.sync()
    assert late.limiters["search"].scopes[0].limit == 6
    assert late.health().to_dict()["reloads"][-1]["source"] == "file"

    assert main(["config", "withdraw", "--config", str(fleet.file)]) == 1
    assert "nothing is published" in capsys.readouterr().err


def test_without_redis_a_process_goes_on_with_what_it_runs(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    path = tmp_path / "app.toml"
    path.write_text(document(url, "publish-down"))
    with bt.Infrastructure("app", str(path), env={}, background=False) as infra:
        infra.run_maintenance()
        assert published(infra) == {
            "running": 0,
            "state": "none",
            "refused": None,
            "connected": False,
        }
        verbose = infra.health().to_dict(verbose=True)["published"]
        assert "could not read the published configuration" in verbose["fleet_error"]


def test_the_command_publishes_as_a_program(fleet: Fleet) -> None:
    path = fleet.write("new.toml", document(fleet.url, fleet.namespace, limit=11))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUTTRESS_")}
    env["PYTHONPATH"] = str(ROOT / "src")
    command = [sys.executable, "-m", "buttress", "config", "publish", str(path), "--reason", "r"]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert (record["action"], record["namespace"], record["reason"]) == (
        "publish",
        fleet.namespace,
        "r",
    )
    assert "@" in record["by"]  # user@host
    a = fleet.process()
    a.run_maintenance()
    assert a.limiters["search"].scopes[0].limit == 11
