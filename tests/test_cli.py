"""The ``buttress`` command."""

from __future__ import annotations

import io
import subprocess
import sys

from buttress._demo import run_breaker_demo
from buttress.cli import main


def test_help_and_unknown_command() -> None:
    assert main([]) == 2
    proc = subprocess.run(
        [sys.executable, "-m", "buttress", "frobnicate"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "invalid choice: 'frobnicate'" in proc.stderr


def test_breaker_demo_walks_every_state() -> None:
    # Runs in real time (about six seconds): the demo is meant to be watched.
    out = io.StringIO()
    assert run_breaker_demo(out, seed=7)
    text = out.getvalue()
    for transition in ("closed -> degraded", "-> open", "open -> half_open", "half_open -> closed"):
        assert transition in text
