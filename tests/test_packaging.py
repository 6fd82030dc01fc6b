"""What the built distributions ship and say: the Lua scripts the Redis backend loads, the typing
marker and stubs, the compiled fast path (in the wheel) with its C source (in the sdist), the
documentation (in the sdist), one version and the project's links.

The wheel is built from the unpacked sdist, as pip builds it from PyPI: so the sdist must carry
everything the build needs, and nothing from the working tree's own builds leaks in. The wheel
is then installed apart from the source tree and must import and run from there.
"""

from __future__ import annotations

import ast
import email
import importlib.util
import os
import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import pytest

import buttress

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "buttress"
LUA = SRC / "ratelimit" / "lua"
SPEEDUPS = "buttress.ratelimit._speedups"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


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


@dataclass
class Built:
    in_sdist: set[str]  # paths inside the sdist's top directory
    wheel: Path
    in_wheel: list[str]
    metadata: Message


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    tmp = tmp_path_factory.mktemp("dist")
    sdist = build("sdist", ROOT, tmp / "sdist")
    with tarfile.open(sdist) as tf:
        members = tf.getnames()
        tf.extractall(tmp / "unpacked", filter="data")
    (unpacked,) = (tmp / "unpacked").iterdir()
    wheel = build("wheel", unpacked, tmp / "wheel")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        (meta,) = (n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = email.message_from_bytes(zf.read(meta))
    return Built({n.split("/", 1)[1] for n in members if "/" in n}, wheel, names, metadata)


def test_the_sdist_carries_what_the_build_needs_and_the_documentation(built: Built) -> None:
    for needed in (
        "setup.py",
        "pyproject.toml",
        "src/buttress/_version.py",
        "src/buttress/ratelimit/_speedups.c",
        "src/buttress/ratelimit/_speedups.pyi",
        "src/buttress/ratelimit/lua/decide.lua",
        "src/buttress/py.typed",
        "CHANGELOG.md",
        "examples/buttress.toml",
    ):
        assert needed in built.in_sdist
    pages = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert pages <= built.in_sdist  # what the docstrings cite as docs/NAME.md
    assert not any(n.endswith(".so") for n in built.in_sdist)  # nothing built in place leaks in


def test_the_wheel_has_scripts_stubs_and_the_compiled_path(built: Built) -> None:
    names = built.in_wheel
    with zipfile.ZipFile(built.wheel) as zf:
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


def test_the_version_has_one_source(built: Built) -> None:
    """pyproject.toml reads it from src/buttress/_version.py; nothing else states it."""
    assert "version" not in PYPROJECT["project"]
    assert "version" in PYPROJECT["project"]["dynamic"]
    assert built.metadata["Version"] == buttress.__version__
    stated = [
        str(path.relative_to(ROOT))
        for path in [ROOT / "pyproject.toml", ROOT / "setup.py", *SRC.rglob("*.py")]
        if re.search(rf"""["']{re.escape(buttress.__version__)}["']""", path.read_text())
    ]
    assert stated == ["src/buttress/_version.py"]


def test_the_metadata_links_the_project_and_names_the_extras(built: Built) -> None:
    urls = dict(u.split(", ", 1) for u in built.metadata.get_all("Project-URL", []))
    assert set(urls) == {"Homepage", "Documentation", "Changelog", "Issues"}
    assert all(u.startswith("https://") for u in urls.values())
    extras = set(built.metadata.get_all("Provides-Extra", []))
    assert extras >= {"cli", "memory", "postgres", "prometheus", "otel", "redis", "dev"}
    # The README's install section lists every extra an application would choose.
    readme = (ROOT / "README.md").read_text()
    for extra in extras - {"dev"}:
        assert f"`{extra}`" in readme, extra


def test_the_wheel_installs_and_runs_apart_from_the_source(built: Built, tmp_path: Path) -> None:
    """Installed without its dependencies (this interpreter has them) into a directory of its
    own, which comes first on the path: the package, its data and its command run from there."""
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", target, built.wheel],
        check=True,
        capture_output=True,
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    script = """
import importlib.metadata, importlib.resources, buttress
print(buttress.__file__)
print(importlib.metadata.version("buttress") == buttress.__version__)
lua = importlib.resources.files("buttress.ratelimit") / "lua" / "decide.lua"
print(lua.is_file())
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    where, version_matches, lua_found = done.stdout.splitlines()
    assert Path(where).is_relative_to(target)
    assert (version_matches, lua_found) == ("True", "True")
    cli = subprocess.run(
        [target / "bin" / "buttress", "--help"], env=env, capture_output=True, text=True
    )
    assert cli.returncode == 0, cli.stderr
    assert "config" in cli.stdout


# -- the documentation the package cites ------------------------------------------------------


def test_the_documentation_url_is_stated_once_and_every_cited_page_exists() -> None:
    docs_url = PYPROJECT["project"]["urls"]["Documentation"]
    assert docs_url in (buttress.__doc__ or "")  # where ``docs/NAME.md`` is, for help(buttress)
    cited = {
        (str(path.relative_to(ROOT)), page)
        for path in SRC.rglob("*")
        if path.suffix in (".py", ".lua", ".pyi")
        for page in re.findall(r"docs/([a-z][\w.-]*\.md)", path.read_text())
    }
    assert cited  # the check below checks something
    missing = [(where, page) for where, page in cited if not (ROOT / "docs" / page).is_file()]
    assert missing == []


def test_no_message_cites_a_documentation_path() -> None:
    """A message reaches a user of the installed package, which has no docs/ directory: it
    names the documentation URL instead. Docstrings may cite ``docs/NAME.md`` (see above)."""
    found = []
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        found.extend(
            f"{path.relative_to(ROOT)}:{node.lineno}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
            and re.search(r"(?<![/\w])docs/[\w.-]+\.md", node.value)
        )
    assert found == []
