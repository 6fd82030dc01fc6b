"""The guide's Step 2 and Step 3, as translated in docs/infrastructure.md, run as written."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "infrastructure.md"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", DOC.read_text(), flags=re.M | re.S)


def test_step_3_config_and_step_2_service_run_as_documented(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = next(b for b in blocks("toml") if b.startswith("# buttress.toml"))
    (tmp_path / "buttress.toml").write_text(toml)
    python = next(b for b in blocks("python") if "class ConfigServer" in b)
    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith("BUTTRESS_")]:
        monkeypatch.delenv(key)
    exec(compile(python, str(DOC), "exec"), {"__name__": "guide"})
    out = capsys.readouterr().out.splitlines()
    assert out == ["True", "healthy", "None", "1.0", "0", "[]", "1.0"]
