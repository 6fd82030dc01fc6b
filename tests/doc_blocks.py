"""Running the ```python blocks of README.md and docs/*.md as the programs they are.

Each block is written alone to a file in an empty directory of its own and run there by this
interpreter in a fresh process: ``python block.py``, or ``python -m pytest block.py`` for a
block that defines ``test_*`` functions. Nothing is shared with another block or with the test
process: no names, no state, no ``BUTTRESS_*`` variables, no top-level ``await`` (a file
cannot have one). The rules a block must follow are in tests/test_docs.py's docstring.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", flags=re.M | re.S)
# A fenced block that names a file in its first line (``# buttress.toml``) is that file.
FILE_NAME = re.compile(r"#\s*([\w.-]+\.(?:toml|json|txt|ini|cfg))\s*$")
TIMEOUT = 120.0  # seconds: a block that has not ended by then has hung


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the block's first line of code in the page
    source: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def is_test_module(self) -> bool:
        """Defines pytest tests: run by pytest, as a user runs such a file."""
        try:
            tree = ast.parse(self.source)
        except SyntaxError:  # run as a plain file, which reports it at the page's line
            return False
        return any(
            isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.name.startswith("test_")
            for node in tree.body
        )


def blocks(page: Path, lang: str = "python") -> list[Block]:
    text = page.read_text()
    return [
        Block(page, text.count("\n", 0, m.start(2)) + 1, m.group(2))
        for m in FENCE.finditer(text)
        if m.group(1) == lang
    ]


def shown_files(page: Path) -> dict[str, str]:
    """The files a page shows: non-Python blocks whose first line names them."""
    found = {}
    for m in FENCE.finditer(page.read_text()):
        first = m.group(2).partition("\n")[0]
        named = FILE_NAME.fullmatch(first)
        if m.group(1) != "python" and named:
            found[named.group(1)] = m.group(2)
    return found


def run(block: Block, source: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    """Run ``source`` (the block, or the block with the test's rewrites) in ``workdir``.

    Blank lines in front keep the page's line numbers in tracebacks.
    """
    stem = re.sub(r"\W", "_", block.page.stem)
    name = f"test_{stem}_{block.line}.py" if block.is_test_module else f"{stem}_{block.line}.py"
    path = workdir / name
    path.write_text("\n" * (block.line - 1) + source)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", name]
    if not block.is_test_module:
        command = [sys.executable, name]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUTTRESS_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return subprocess.run(
        command, cwd=workdir, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )


def failure(block: Block, done: subprocess.CompletedProcess[str]) -> str:
    return (
        f"the python block at {block.where} exited {done.returncode} "
        f"(traceback line numbers are the page's)\n"
        f"--- stdout\n{done.stdout}--- stderr\n{done.stderr}"
    )
