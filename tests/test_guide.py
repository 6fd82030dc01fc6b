"""The guide's service in docs/infrastructure.md, driven further than the page shows (the page's
block itself, and what it prints, is run by tests/test_docs.py)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import buttress as bt

DOC = Path(__file__).resolve().parent.parent / "docs" / "infrastructure.md"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", DOC.read_text(), flags=re.M | re.S)


def test_the_guide_breaker_does_not_open_on_unknown_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = next(b for b in blocks("toml") if b.startswith("# buttress.toml"))
    (tmp_path / "buttress.toml").write_text(toml)
    python = next(b for b in blocks("python") if "class ConfigServer" in b)
    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith("BUTTRESS_")]:
        monkeypatch.delenv(key)
    ns: dict[str, object] = {"__name__": "guide", "print": lambda *a: None}
    exec(compile(python, str(DOC), "exec"), ns)
    # The same classes against a fresh infrastructure from the same file (the guide closed its).
    infra = ns["infra"] = bt.Infrastructure("app", bt.load_config("buttress.toml"), env={})
    with infra:
        server = ns["ConfigServer"](ns["ConfigStore"]())  # type: ignore[operator]
        for i in range(10):  # a client asking for paths that do not exist
            with pytest.raises(KeyError):
                server.get_config(f"missing.{i}", user_id="u1", org_id="acme")
        assert infra.breakers["config_server"].state is bt.BreakerState.CLOSED
        assert server.get_config("feature.search", user_id="u2", org_id="other") is True
