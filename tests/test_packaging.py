"""What a built wheel ships: the Lua scripts the Redis backend loads are package data."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LUA = ROOT / "src" / "buttress" / "ratelimit" / "lua"


def test_the_wheel_ships_the_lua_scripts(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("buttress-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        shipped = {
            Path(name).name: zf.read(name)
            for name in zf.namelist()
            if name.startswith("buttress/ratelimit/lua/")
        }
        assert "buttress/py.typed" in zf.namelist()
    scripts = {p.name: p.read_bytes() for p in LUA.glob("*.lua")}
    assert set(scripts) == {"common.lua", "decide.lua", "refund.lua"}
    assert shipped == scripts
