"""Every ```python block of docs/*.md runs as written.

The blocks of one page run in order in one namespace (a later block may use what an earlier
one defined), in a fresh temporary working directory (relative files land there), with the
process's ``BUTTRESS_*`` variables removed. A block with a top-level ``await`` / ``async with``
/ ``async for`` runs as the body of a coroutine, in ``asyncio.run``. Tracebacks point at the
page's own lines.

A page may need what its text says comes from outside (``PREAMBLES``: a DSN, an existing
``infra``, a configuration file) and, where the realistic advice would touch the machine or
take long, a literal rewrite of its source (``REWRITES``: a system path becomes a temporary
one, a production host the test server, a long load test a short one). Every rewrite must
match the page, so an edited page cannot silently stop being tested. Functions named
``test_*`` that a page defines are then called with the pytest fixtures they name.

Blocks that are not Python (shell sessions, output, TOML) are fenced ```sh / ```text / ```toml
and are not run here.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import buttress as bt

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))
FENCE = re.compile(r"^```python\n(.*?)^```", flags=re.M | re.S)


def python_blocks(doc: Path) -> list[tuple[int, str]]:
    """``(first line, source)`` of each ```python block, as test_readme.py finds them."""
    text = doc.read_text()
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in FENCE.finditer(text)]


# -- what a page assumes ----------------------------------------------------------------------

Namespace = dict[str, Any]


def fenced(doc: str, lang: str, starts: str) -> str:
    text = (ROOT / "docs" / doc).read_text()
    blocks = re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.M | re.S)
    return next(b for b in blocks if b.startswith(starts))


def existing_infra(ns: Namespace, request: pytest.FixtureRequest) -> None:
    """metrics.md exports "an infrastructure": one with a breaker, a limiter and a pool."""
    config = {
        "circuit_breakers": {"payments": {}},
        "rate_limiting": {"limiters": {"api": {"limit": 100, "window": 60.0}}},
        "connection_pools": {"orders_db": {"factory": "sqlite3:connect", "args": ["orders.db"]}},
    }
    ns["infra"] = bt.Infrastructure("app", config, env={}, background=False).start()
    # The OpenTelemetry block sets the global meter provider, which a process can set only
    # once: here it lands in a holder of the test's own, shut down afterwards.
    metrics = pytest.importorskip("opentelemetry.metrics")
    holder: list[Any] = []
    monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
    monkeypatch.setattr(metrics, "set_meter_provider", holder.append)
    monkeypatch.setattr(metrics, "get_meter_provider", lambda: holder[-1])
    request.addfinalizer(lambda: [p.shutdown() for p in holder])


def postgres_dsn(ns: Namespace, request: pytest.FixtureRequest) -> None:
    """pool.md connects to "your database": the test server's."""
    ns["DSN"] = request.getfixturevalue("pg_dsn")


def redis_cleanup(ns: Namespace, request: pytest.FixtureRequest) -> None:
    """deployment.md's Redis limiter runs on the test server: its keys go afterwards."""
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(request.getfixturevalue("redis_url"))

    def forget() -> None:
        with client:
            for key in client.scan_iter(match="rl:{myapp:*"):
                client.delete(key)

    request.addfinalizer(forget)


def toml_from_the_page(ns: Namespace, request: pytest.FixtureRequest) -> None:
    """infrastructure.md loads the buttress.toml it shows just above, and an application's
    settings from the variables it exports."""
    Path("buttress.toml").write_text(fenced("infrastructure.md", "toml", "# buttress.toml"))
    monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
    for line in fenced("infrastructure.md", "sh", "export APP_").splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        monkeypatch.setenv(name, value)


def example_config(ns: Namespace, request: pytest.FixtureRequest) -> None:
    """testing.md tests "your service's" buttress.toml: the project's example file."""
    shutil.copy(ROOT / "examples" / "buttress.toml", "buttress.toml")


PREAMBLES: dict[str, Callable[[Namespace, pytest.FixtureRequest], None]] = {
    "deployment.md": redis_cleanup,
    "infrastructure.md": toml_from_the_page,
    "metrics.md": existing_infra,
    "pool.md": postgres_dsn,
    "testing.md": example_config,
}

# (page, text in the page, what the test runs instead); ``{tmp}`` is the working directory,
# ``{redis}`` the test Redis (requesting it skips the page when Redis is unreachable).
REWRITES: list[tuple[str, str, str]] = [
    # The realistic advice is a file under /var/lib, which a test cannot write.
    ("deployment.md", '"/var/lib/myapp/limits.db"', '"{tmp}/limits.db"'),
    ("deployment.md", '"redis://redis.internal:6379/0"', '"{redis}"'),
    # The demo's load test: fifty users making a thousand calls each is a second or two.
    ("getting-started.md", "operations_per_user=1000,", "operations_per_user=20,"),
]


def rewritten(doc: str, source: str, request: pytest.FixtureRequest, used: set[int]) -> str:
    for i, (page, old, new) in enumerate(REWRITES):
        if page != doc or old not in source:
            continue
        if "{redis}" in new:
            new = new.replace("{redis}", request.getfixturevalue("redis_url"))
        source = source.replace(old, new.replace("{tmp}", os.getcwd()))
        used.add(i)
    return source


# -- running a page ---------------------------------------------------------------------------


def run_block(doc: Path, line: int, source: str, ns: Namespace) -> None:
    # Padding keeps the page's line numbers in tracebacks. A page's code does not inherit this
    # module's `from __future__ import annotations`: pasted into a file, it would not have it.
    code = compile(
        "\n" * (line - 1) + source,
        str(doc),
        "exec",
        flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
        dont_inherit=True,
    )
    if code.co_flags & inspect.CO_COROUTINE:
        asyncio.run(eval(code, ns))
    else:
        exec(code, ns)


def close_leftovers(ns: Namespace) -> None:
    for value in ns.values():
        if isinstance(value, bt.Infrastructure | bt.ConnectionPool):
            value.close()


@pytest.fixture
def page_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith("BUTTRESS_")]:
        monkeypatch.delenv(key)
    return tmp_path


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_doc_examples_run(doc: Path, page_dir: Path, request: pytest.FixtureRequest) -> None:
    blocks = python_blocks(doc)
    ns: Namespace = {"__name__": f"docs.{doc.stem}"}
    preamble = PREAMBLES.get(doc.name)
    if preamble is not None:
        preamble(ns, request)
    used: set[int] = set()
    try:
        for index, (line, source) in enumerate(blocks):
            source = rewritten(doc.name, source, request, used)
            try:
                run_block(doc, line, source, ns)
            except BaseException as exc:
                exc.add_note(f"in docs/{doc.name}, python block {index} (line {line})")
                raise
        for name, fn in list(ns.items()):
            if name.startswith("test_") and inspect.isfunction(fn):
                fn(*(request.getfixturevalue(p) for p in inspect.signature(fn).parameters))
    finally:
        close_leftovers(ns)
    stale = [old for i, (page, old, _) in enumerate(REWRITES) if page == doc.name and i not in used]
    assert not stale, f"rewrites that match nothing in docs/{doc.name}: {stale}"


def test_every_page_with_python_is_run() -> None:
    assert {d.name for d in DOCS if python_blocks(d)} >= {
        "getting-started.md",
        "infrastructure.md",
        "metrics.md",
        "pool.md",
        "testing.md",
        "chaos.md",
        "rate-limiting.md",
        "deployment.md",
    }
    assert {page for page, _, _ in REWRITES} | set(PREAMBLES) <= {d.name for d in DOCS}


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_every_block_names_its_language(doc: Path) -> None:
    """A bare fence could hide Python from the test above: every block says what it is."""
    bare, inside = [], False
    for number, line in enumerate(doc.read_text().splitlines(), 1):
        if line.startswith("```"):
            if not inside and line == "```":
                bare.append(number)
            inside = not inside
    assert not bare, f"docs/{doc.name}: fences without a language at lines {bare}"


# (page, text that picks the block): blocks whose printed output is written under them, as
# comments after their last print(); what they print must be that.
SHOWN_OUTPUT = [
    ("circuit-breaker.md", "async def fetch_with_timeout"),  # a timeout inside vs around
    ("infrastructure.md", "rate_limit_headers(exc.decision)"),  # 429 and 200 headers
]


@pytest.mark.parametrize(("doc", "marker"), SHOWN_OUTPUT, ids=[m for _, m in SHOWN_OUTPUT])
def test_blocks_print_what_their_comments_show(
    doc: str, marker: str, page_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line, source = next((n, s) for n, s in python_blocks(ROOT / "docs" / doc) if marker in s)
    lines = source.splitlines()
    last_print = max(i for i, text in enumerate(lines) if "print(" in text)
    shown = []
    for text in lines[last_print + 1 :]:
        if not text.startswith("# "):
            break
        shown.append(text[2:])
    assert shown, f"docs/{doc}: no output shown under the block at line {line}"
    ns: Namespace = {"__name__": f"docs.{doc}", "bt": bt}
    try:
        run_block(ROOT / "docs" / doc, line, source, ns)
    finally:
        close_leftovers(ns)
    assert capsys.readouterr().out.splitlines() == shown
