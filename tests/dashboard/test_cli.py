"""``buttress dashboard``: a real server process on a spare loopback port; the admin token only
from the environment or a file, never logged; loopback names only while bound to loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from buttress import ConfigError
from buttress._dashboard._serve import TOKEN_ENV, is_loopback, token_from
from servers import answers, free_port, http_request, wait_until

TOKEN = "cli-admin-token-0123456789abcdef"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "buttress.toml"
    path.write_text("[memory_manager]\nenabled = false\n[circuit_breakers.payments]\n")
    return path


def start(config: Path, port: int, env: dict[str, str]) -> subprocess.Popen[str]:
    """``buttress dashboard`` with exactly ``env`` as its environment."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "buttress",
            "dashboard",
            *("--config", str(config)),
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def ready(port: int, proc: subprocess.Popen[str]) -> None:
    wait_until(
        lambda: answers(port, "/api/state") or proc.poll() is not None,
        what="the dashboard to answer",
    )
    assert proc.poll() is None, proc.communicate()


@pytest.fixture
def served(config: Path) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    port = free_port()
    proc = start(config, port, {**os.environ, TOKEN_ENV: TOKEN})
    try:
        ready(port, proc)
        yield port, proc
    finally:
        proc.terminate()
        if proc.returncode is None:
            proc.communicate(timeout=10)


def test_the_served_dashboard_acts_with_the_token_and_never_logs_it(
    served: tuple[int, subprocess.Popen[str]],
) -> None:
    port, proc = served
    state = json.loads(http_request(port, "/api/state")[1])
    assert state["actions"]["enabled"] is True and state["actions"]["reload"] is True
    body = json.dumps({"action": "force_open", "target": "payments", "reason": "drill"}).encode()
    status, _ = http_request(
        port, "/api/actions", "POST", body, **{"content-type": "application/json"}
    )
    assert status == 401
    status, answer = http_request(
        port,
        "/api/actions",
        "POST",
        body,
        **{"content-type": "application/json", "authorization": f"Bearer {TOKEN}"},
    )
    assert status == 200, answer
    # The action makes the next frame at once; the state answers the newest frame.
    wait_until(
        lambda: (
            json.loads(http_request(port, "/api/state")[1])["breakers"][0]["state"] == "forced_open"
        ),
        what="the frame after the action",
    )
    assert http_request(port, "/api/state", host="rebound.example")[0] == 400  # loopback names only
    proc.terminate()
    out, err = proc.communicate(timeout=10)
    assert "actions enabled" in err and "drill" in err  # the action is logged, with its reason
    assert TOKEN not in out + err


def test_without_a_token_it_is_read_only(config: Path) -> None:
    port = free_port()
    proc = start(config, port, {k: v for k, v in os.environ.items() if k != TOKEN_ENV})
    try:
        ready(port, proc)
        state = json.loads(http_request(port, "/api/state")[1])
        assert state["actions"]["enabled"] is False
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert "read-only" in err


def test_the_token_comes_from_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert token_from(None) is None
    monkeypatch.setenv(TOKEN_ENV, f"  {TOKEN}\n")
    assert token_from(None) == TOKEN
    monkeypatch.setenv(TOKEN_ENV, "short")
    with pytest.raises(ConfigError, match="at least 16 characters"):
        token_from(None)
    file = tmp_path / "token"
    file.write_text(TOKEN + "\n")
    assert token_from(str(file)) == TOKEN  # the file wins over the environment
    file.write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        token_from(str(file))
    with pytest.raises(ConfigError, match="cannot read"):
        token_from(str(tmp_path / "missing"))


def test_bad_arguments_are_named_before_anything_starts(config: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "buttress", "dashboard", "--config", str(config), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 2 and "port number in 1..65535" in run.stderr
    run = subprocess.run(
        [sys.executable, "-m", "buttress", "dashboard", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, TOKEN_ENV: "short"},
    )
    assert run.returncode == 2 and "at least 16 characters" in run.stderr


def test_loopback_names() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.com")
