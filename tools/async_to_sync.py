"""Generate the sync twins of the async modules (unasync-style renames), then ruff-format them.

python tools/async_to_sync.py          # rewrite every generated file
python tools/async_to_sync.py --check  # exit 1 if one is out of date (run by `make lint`)

Each rule is a regular expression applied line by line, in order. Every real difference
between the two worlds lives in ``src/buttress/_concurrency.py`` as a pair of names with one
interface, so the rules only rename and strip ``async``/``await``. A rule that no input uses
is an error, which keeps the table honest.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (async source, generated sync file)
FILES: list[tuple[str, str]] = [
    ("src/buttress/pool/_pool_async.py", "src/buttress/pool/_pool.py"),
    ("tests/pool/test_pool_async.py", "tests/pool/test_pool_sync.py"),
]

RULES: list[tuple[str, str]] = [
    # syntax
    (r"\basync def\b", "def"),
    (r"\basync with\b", "with"),
    (r"\bawait ", ""),
    (r"\b__aenter__\b", "__enter__"),
    (r"\b__aexit__\b", "__exit__"),
    # the primitive pairs of _concurrency.py and _scheduler.py
    (r"\bAsyncScheduler\b", "Scheduler"),
    (r"\bACell\b", "Cell"),
    (r"\bALock\b", "Lock"),
    (r"\bacall\b", "call"),
    (r"\bacurrent_owner\b", "current_owner"),
    (r"\baspawn\b", "spawn"),
    (r"\baclose\b", "close"),
    # our own names
    (r"\bAsyncConnectionPool\b", "ConnectionPool"),
    (r"\bAsyncLease\b", "Lease"),
    (r"\bapool\b", "pool"),
    (r"\basettle\b", "settle"),
    # words in docstrings and comments
    (r"\bthe task\b", "the thread"),
    (r"\bcurrent task\b", "current thread"),
    (r"for asyncio\b", "for threads"),
    (r"Each may be a plain or a coroutine function\.", "Each is a plain function."),
    (r"\banother task\b", "another thread"),
    (r"\bIts task gave up\b", "Its thread gave up"),
]

HEADER = "# DO NOT EDIT: generated from {src} by tools/async_to_sync.py.\n"


def convert(text: str, used: set[int]) -> str:
    compiled = [(i, re.compile(pattern), repl) for i, (pattern, repl) in enumerate(RULES)]
    out = []
    for line in text.splitlines(keepends=True):
        for i, rx, repl in compiled:
            line, n = rx.subn(repl, line)
            if n:
                used.add(i)
        out.append(line)
    return "".join(out)


def ruff(text: str, path: Path) -> str:
    """Sort the imports (renames reorder them) and format, as `make lint` wants them."""
    for args in (["check", "--fix", "--select", "I", "--quiet"], ["format"]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *args, "--stdin-filename", str(path), "-"],
            input=text,
            capture_output=True,
            text=True,
            check=False,
            cwd=ROOT,
        )
        if result.returncode != 0:
            raise SystemExit(f"ruff {args[0]} failed on the output for {path}:\n{result.stderr}")
        text = result.stdout
    return text


def main() -> int:
    check = "--check" in sys.argv[1:]
    used: set[int] = set()
    stale: list[str] = []
    for src, dst in FILES:
        src_path, dst_path = ROOT / src, ROOT / dst
        text = HEADER.format(src=Path(src).name) + convert(src_path.read_text(), used)
        text = ruff(text, dst_path)
        current = dst_path.read_text() if dst_path.exists() else None
        if current == text:
            continue
        if check:
            stale.append(dst)
        else:
            dst_path.write_text(text)
            print(f"wrote {dst}")
    unused = [RULES[i][0] for i in range(len(RULES)) if i not in used]
    if unused:
        print(f"rules used by no input (remove them): {unused}")
        return 1
    if stale:
        print(f"out of date: {', '.join(stale)}; run python tools/async_to_sync.py")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
