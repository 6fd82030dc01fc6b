"""The fleet from configuration and from the command line, on a real Redis: [fleet] and
``fleet = true`` make breakers that share one RedisFleet; ``buttress breaker force-open``
reaches them; ``buttress fleet status`` shows the fleet; health names who forced what."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

import buttress as bt
from buttress._cli import main


def write_config(tmp_path: Path, url: str, namespace: str) -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(
        f"""
[fleet]
url = "{url}"
namespace = "{namespace}"
quorum = 2
sync_interval = "100ms"

[circuit_breakers.payments]
fleet = true
failure_threshold = 5
degradation_threshold = 3

[circuit_breakers.local_only]
failure_threshold = 5
"""
    )
    return path


def test_configuration_and_the_command_line_reach_every_process(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    namespace = "fleet-cli-" + uuid.uuid4().hex[:8]
    path = write_config(tmp_path, redis_url, namespace)
    clock = bt.ManualClock()
    with bt.Infrastructure("app", str(path), env={}, clock=clock, background=False) as infra:
        payments = infra.breakers["payments"]
        fleet = infra._build.made_fleet
        assert fleet is not None and infra.breakers["local_only"].snapshot().fleet is None
        assert (
            main(
                [
                    "breaker",
                    "force-open",
                    "payments",
                    "--config",
                    str(path),
                    "--reason",
                    "incident 42",
                    "--by",
                    "alice",
                ]
            )
            == 0
        )
        record = json.loads(capsys.readouterr().out)
        assert (record["action"], record["by"], record["reason"]) == (
            "force_open",
            "alice",
            "incident 42",
        )
        fleet.sync()  # its next sync (run by hand: the clock is a ManualClock)
        assert payments.state is bt.BreakerState.FORCED_OPEN
        check = next(c for c in infra.health().checks if c.name == "payments")
        assert "fleet-wide force_open by alice: incident 42" in check.reason
        assert main(["fleet", "status", "--config", str(path)]) == 0
        status = json.loads(capsys.readouterr().out)["breakers"]["payments"]
        assert status["override"]["effective"] == "force_open"
        assert [p["process"] for p in status["processes"]] == [fleet.process_id]
        assert main(["breaker", "reset", "payments", "--config", str(path), "--by", "bob"]) == 0
        fleet.sync()
        assert payments.state is bt.BreakerState.CLOSED
        assert main(["breaker", "reset", "local_only", "--config", str(path)]) == 2
        assert "no breaker with fleet = true" in capsys.readouterr().err


def test_fleet_true_without_a_fleet_url_names_the_setting() -> None:
    with pytest.raises(bt.ConfigError) as caught:
        bt.Infrastructure("app", {"circuit_breakers": {"p": {"fleet": True}}}, env={})
    assert caught.value.path == "circuit_breakers.p.fleet"
    with pytest.raises(bt.ConfigError) as caught:
        bt.load_config({"fleet": {"url": "http://example"}})
    assert caught.value.path == "fleet.url"


def test_a_reloaded_fleet_breaker_has_the_fleet_apply_its_new_thresholds(
    tmp_path: Path, redis_url: str
) -> None:
    namespace = "fleet-reload-" + uuid.uuid4().hex[:8]
    path = write_config(tmp_path, redis_url, namespace)
    with bt.Infrastructure("app", str(path), env={}, background=False) as infra:
        fleet = infra._build.made_fleet
        assert fleet is not None
        (link,) = fleet._links
        assert link.thresholds.failure_threshold == 5
        path.write_text(path.read_text().replace("failure_threshold = 5", "failure_threshold = 9"))
        assert set(infra.reload(str(path)).changed) == {
            "circuit_breakers.local_only",
            "circuit_breakers.payments",
        }
        # The breaker made to validate the change joined no fleet: one member, the same one.
        assert fleet._links == [link]
        assert link.thresholds.failure_threshold == 9
        assert infra.breakers["payments"].config.failure_threshold == 9
