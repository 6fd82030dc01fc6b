"""What the built distributions ship: the Lua scripts the Redis backend loads, the typing
marker and stubs, and the compiled fast path (in the wheel) with its C source (in the sdist).

The wheel is built from the unpacked sdist, as pip builds it from PyPI: so the sdist must carry
everything the build needs, and nothing from the working tree's own builds leaks in.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LUA = ROOT / "src" / "buttress" / "ratelimit" / "lua"
SPEEDUPS = "buttress.ratelimit._speedups"
SPEEDUPS_PATH = "buttress/ratelimit/_speedups."


def build(kind: str, source: Path, out: Path) -> Path:
    out.mkdir()
    subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys; from setuptools import build_meta as b; b.build_{kind}(sys.argv[1])",
            str(out),
        ],
        cwd=source,
        check=True,
        capture_output=True,
    )
    (built,) = out.iterdir()
    return built


def test_the_sdist_builds_a_wheel_with_scripts_stubs_and_the_compiled_path(
    tmp_path: Path,
) -> None:
    sdist = build("sdist", ROOT, tmp_path / "sdist")
    with tarfile.open(sdist) as tf:
        members = tf.getnames()
        tf.extractall(tmp_path / "unpacked", filter="data")
    in_sdist = {n.split("/", 1)[1] for n in members if "/" in n}
    for needed in (
        "setup.py",
        "pyproject.toml",
        "src/buttress/ratelimit/_speedups.c",
        "src/buttress/ratelimit/_speedups.pyi",
        "src/buttress/ratelimit/lua/decide.lua",
        "src/buttress/py.typed",
    ):
        assert needed in in_sdist
    assert not any(n.endswith(".so") for n in in_sdist)  # nothing built in place leaks in

    (unpacked,) = (tmp_path / "unpacked").iterdir()
    wheel = build("wheel", unpacked, tmp_path / "wheel")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        shipped = {
            Path(name).name: zf.read(name)
            for name in names
            if name.startswith("buttress/ratelimit/lua/")
        }
    assert "buttress/py.typed" in names
    assert "buttress/ratelimit/_speedups.pyi" in names
    # The extension is optional: required where it compiled for the editable install too.
    if os.environ.get("CI") == "true" or importlib.util.find_spec(SPEEDUPS) is not None:
        assert any(
            n.startswith("buttress/ratelimit/_speedups.") and n.endswith(".so") for n in names
        )
    assert not any(n.endswith(".c") for n in names)
    scripts = {p.name: p.read_bytes() for p in LUA.glob("*.lua")}
    assert set(scripts) == {"common.lua", "decide.lua", "refund.lua"}
    assert shipped == scripts
