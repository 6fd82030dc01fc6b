"""Every ```python block of docs/*.md runs as written, as the program a reader pastes it into.

The test writes each block alone into a file, in an empty directory of its own, and runs it
with this interpreter in a fresh process (tests/doc_blocks.py). So a block must:

1. Run alone: import and define everything it uses. No name comes from an earlier block or
   from the prose; a block that needs a limiter or an infrastructure makes one (a small one).
2. Run async code inside ``async def main(): ...`` and ``asyncio.run(main())``: a top-level
   ``await``, ``async with`` or ``async for`` is a SyntaxError in a file, and fails here.
3. Import only buttress, the standard library and what the ``dev`` extra installs.
4. Write only relative paths (its directory is its own, and empty but for rule 6), and reach
   no network but this machine's Redis and PostgreSQL. The page writes their realistic
   addresses; ``REWRITES`` points those at the test servers (``BUTTRESS_REDIS_URL``,
   ``BUTTRESS_PG_DSN``), and the block is skipped when its server is unreachable (a failure
   under CI=true). The block's process has no ``BUTTRESS_*`` variables.
5. Close what it opens and end by itself, within doc_blocks.TIMEOUT seconds, with exit code 0.
6. Find, in its directory, each file the page shows in a fenced block whose first line names
   it (a ```toml block starting ``# buttress.toml``), as if the reader had saved it.
7. Pass under pytest if it defines ``test_*`` functions: such a block is a test module and is
   run by ``python -m pytest`` (the buttress plugin's fixtures are there).
8. Print exactly what it shows, if it is listed in ``SHOWN_OUTPUT``: the first run of
   comment lines after its last ``print()`` is its output.

Where realistic advice would touch the machine or take long (a path under /var/lib, a production
host, a thousand calls per user), ``REWRITES`` replaces that literal text for the test. Each
rewrite must match its page, so an edited page cannot silently stop being tested.

Blocks that are not Python (shell sessions, output, TOML) are fenced ```sh / ```text / ```toml
and are not run; a fence without a language fails here.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from doc_blocks import ROOT, Block, blocks, failure, run, shown_files

DOCS = sorted((ROOT / "docs").rglob("*.md"))  # docs/integrations/ too
BLOCKS = [b for page in DOCS for b in blocks(page)]

# (page, text in the page, what the test runs instead). ``{redis}`` and ``{pg}`` are the test
# servers (asking for one skips the block when it is unreachable), ``{tmp}`` the block's
# working directory.
REWRITES: list[tuple[str, str, str]] = [
    # The realistic advice is a file under /var/lib, which a test cannot write.
    ("deployment.md", '"/var/lib/myapp/limits.db"', '"{tmp}/limits.db"'),
    ("deployment.md", '"redis://redis.internal:6379/0"', '"{redis}"'),
    ("pool.md", '"postgresql://app@db.internal:5432/app"', '"{pg}"'),
    (
        "sqlalchemy.md",
        '"postgresql+psycopg://app@db.internal:5432/app"',
        '"{pg}".replace("postgresql:", "postgresql+psycopg:")',
    ),
    (
        "sqlalchemy.md",
        '"postgresql+asyncpg://app@db.internal:5432/app"',
        '"{pg}".replace("postgresql:", "postgresql+asyncpg:")',
    ),
    ("postgres-pools.md", '"postgresql://app@db.internal:5432/app"', '"{pg}"'),
    ("fleet.md", '"redis://redis.internal:6379/0"', '"{redis}"'),
]

# (page, text that picks the block): blocks whose printed output is written under them, as
# comments after their last print(); what they print must be that.
SHOWN_OUTPUT = [
    ("getting-started.md", "ann's eleventh request"),  # the scope that refuses
    ("circuit-breaker.md", "async def fetch_with_timeout"),  # a timeout inside vs around
    ("infrastructure.md", "rate_limit_headers(exc.decision)"),  # 429 and 200 headers
    ("infrastructure.md", "class ConfigServer"),  # the guide's service and its health
    ("rate-limiting.md", "old, new = version("),  # a rolling deploy's bound
    ("coming-from.md", "open; retry after"),  # pybreaker's two states
    ("retries.md", "retry_after=hint"),  # a custom hint's wait
    ("retries.md", 'infra.call("payments", charge)'),  # retries counted by outcome
    ("asgi.md", 'client_ip(trusted_proxies=["10.0.0.0/8"])'),  # 200, 200, then 429
    ("asgi.md", "async def flaky(request)"),  # returned 502s open the breaker
    ("fastapi.md", 'key={"user": api_key("X-User")}'),  # 200, 200, then 429 in detail
    ("fastapi.md", "raise HTTPException(502)"),  # 404s neutral, 502s open the breaker
    ("django.md", "urlpatterns = [path"),  # a 429 with its fields, a 502 opening a breaker
    ("flask.md", '@rate_limit("api"'),  # the same in Flask
    ("aiohttp.md", "buttress_middleware(infra, default"),  # and in aiohttp
    ("httpx.md", "class Flaky"),  # Retry-After honoured, a 404 neutral
    ("requests.md", "class Flaky"),
    ("fleet.md", "search cluster upgrade"),  # a fleet-wide force-open and its record
    ("fleet.md", "status.connected"),  # a fleet breaker's snapshot
]


def rewritten(block: Block, workdir: Path, request: pytest.FixtureRequest) -> str:
    source = block.source
    for page, old, new in REWRITES:
        if page != block.page.name or old not in source:
            continue
        if "{redis}" in new:
            new = new.replace("{redis}", request.getfixturevalue("redis_url"))
        if "{pg}" in new:
            new = new.replace("{pg}", request.getfixturevalue("pg_dsn"))
        source = source.replace(old, new.replace("{tmp}", str(workdir)))
    return source


def shown_output(block: Block) -> list[str] | None:
    """The lines a block says it prints, when SHOWN_OUTPUT lists it."""
    if not any(p == block.page.name and m in block.source for p, m in SHOWN_OUTPUT):
        return None
    lines = block.source.splitlines()
    last_print = max(i for i, text in enumerate(lines) if "print(" in text)
    shown: list[str] = []
    for text in lines[last_print + 1 :]:
        if text.startswith("# "):
            shown.append(text[2:])
        elif shown:  # the first run of comment lines after the last print()
            break
    assert shown, f"{block.where}: no output shown under the block"
    return shown


@pytest.mark.parametrize("block", BLOCKS, ids=[b.where.removeprefix("docs/") for b in BLOCKS])
def test_doc_block_runs_alone(block: Block, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    for name, text in shown_files(block.page).items():
        (tmp_path / name).write_text(text)
    done = run(block, rewritten(block, tmp_path, request), tmp_path)
    assert done.returncode == 0, failure(block, done)
    shown = shown_output(block)
    if shown is not None:
        assert done.stdout.splitlines() == shown, failure(block, done)


def test_every_rewrite_and_shown_output_matches_its_page() -> None:
    for page, old, _ in REWRITES:
        assert any(b.page.name == page and old in b.source for b in BLOCKS), (page, old)
    for page, marker in SHOWN_OUTPUT:
        assert any(b.page.name == page and marker in b.source for b in BLOCKS), (page, marker)


def test_every_page_with_python_is_run() -> None:
    assert {b.page.name for b in BLOCKS} >= {
        "chaos.md",
        "circuit-breaker.md",
        "deployment.md",
        "events.md",
        "getting-started.md",
        "infrastructure.md",
        "memory.md",
        "metrics.md",
        "pool.md",
        "rate-limiting.md",
        "testing.md",
    }


def test_no_block_awaits_at_top_level() -> None:
    """Rule 2, checked without running anything: a file cannot await at its top level."""
    bad = []
    for block in BLOCKS:
        try:
            ast.parse(block.source)
        except SyntaxError:  # what ast.parse refuses, a file refuses too
            bad.append(block.where)
    assert bad == []


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT / "docs")) for d in DOCS])
def test_every_block_names_its_language(doc: Path) -> None:
    """A bare fence could hide Python from the test above: every block says what it is."""
    bare, inside = [], False
    for number, line in enumerate(doc.read_text().splitlines(), 1):
        if line.startswith("```"):
            if not inside and line == "```":
                bare.append(number)
            inside = not inside
    assert not bare, f"docs/{doc.name}: fences without a language at lines {bare}"


def test_no_instruction_installs_buttress_from_an_index() -> None:
    """buttress is not published: installs are from a checkout (``.``) or a built wheel."""
    pages = [*DOCS, ROOT / "README.md", *(ROOT / "src").rglob("*.py")]
    wrong = [
        f"{page.relative_to(ROOT)}: {m.group(0)}"
        for page in pages
        for m in re.finditer(r"pip install\s+['\"]?buttress\b\S*", page.read_text())
    ]
    assert wrong == []
