"""The README's examples run as written: each alone, in a file, in a fresh process (the rules
of tests/test_docs.py's docstring hold here too)."""

from __future__ import annotations

from pathlib import Path

import pytest

from doc_blocks import ROOT, Block, blocks, failure, run

README = ROOT / "README.md"
BLOCKS = blocks(README)


@pytest.mark.parametrize("block", BLOCKS, ids=[f"line{b.line}" for b in BLOCKS])
def test_readme_example_runs_alone(block: Block, tmp_path: Path) -> None:
    done = run(block, block.source, tmp_path)
    assert done.returncode == 0, failure(block, done)
    assert done.stdout  # every example shows something


def test_readme_has_examples() -> None:
    assert BLOCKS
