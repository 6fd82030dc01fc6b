"""Generate the sync twin of each hand-written async module, then ruff-format it.

    python tools/async_to_sync.py                # regenerate every output in PAIRS
    python tools/async_to_sync.py --check        # write nothing; exit 1 if one is stale
    python tools/async_to_sync.py --diff         # write nothing; show how the stale ones differ
    python tools/async_to_sync.py FILE ...       # only these pairs (a source or its output)

``make lint`` runs ``--check``. Every real difference between the two worlds lives in
``src/buttress/_concurrency.py`` and ``_scheduler.py`` as a pair of names with one interface, so
the conversion is mostly renaming and stripping ``async``/``await``; the few places where the
code itself must differ are marked in the async source (below).

How
---
LibCST parses the async source into a concrete syntax tree, which keeps every comment, blank
line and quote as written; the transforms edit that tree; the result gets the generated
header, then ``ruff check --fix --select I,F401`` (renames reorder imports; a marked
divergence can leave an import unused) and ``ruff format``. The output depends on nothing
but the source, the tables below and ruff (not on the Python version running the tool).

Transforms
----------
- ``async def``/``async with``/``async for`` (comprehensions too) lose ``async``;
  ``await x`` becomes ``x`` (parentheses around it are kept).
- Typing forms: ``Awaitable[T]`` → ``T``, ``Coroutine[A, S, T]`` → ``T``,
  ``AsyncGenerator[Y, S]`` → ``Generator[Y, S, None]``, and the renames of ``SYNTAX``
  (``AsyncIterator`` → ``Iterator``, ``__aenter__`` → ``__enter__``, ...).
- The name map (``SYNTAX``, ``PRIMITIVES``, ``OURS``, plus a pair's own ``names``) renames
  whole identifiers: names, attributes, parameters, imports (duplicates that a rename makes are
  dropped), and whole identifiers inside strings, docstrings and comments (``AsyncLease`` in
  ``"<AsyncLease ...>"`` or in :class:`AsyncLease`, never the ``AsyncLease`` in
  ``AsyncLeases``).
- In docstrings, code also loses ``async``/``await``: inline literals (between double
  backquotes), doctest lines (``>>>``, ``...``) and literal blocks (the indented lines after a
  ``::``). Prose and comments keep their words: "no await here" stays as written.
- A pair's ``prose`` table replaces whole phrases in its docstrings and comments ("the task" →
  "the thread"). Keep it short: prefer wording that is true in both worlds.

A ``PRIMITIVES``/``OURS`` entry or a pair's ``names``/``prose`` entry that no input uses is an
error, which keeps the tables honest (``SYNTAX`` is the language's, always on; with FILE
arguments only the pairs' own tables are checked).

Markers, in the async source
----------------------------
``if True:  # ASYNC`` ... ``else:`` ... (psycopg's marker)
    The async module runs the ``if`` branch; the sync output gets only the ``else`` branch,
    in place of the whole ``if`` (no ``else``: nothing). ``elif`` is refused. Comments above
    the ``if`` stay; the ``else:`` line's own comment goes.

``# ASYNC`` (or ``# ASYNC: why``) on a comment line directly above a statement
    The statement is async-only: the sync output leaves it out, with the comment lines
    directly above it (those after the last blank line). Works for any statement: a line, a
    whole ``def`` or ``class`` (above its decorators), an ``import``.

A comment starting ``# ASYNC`` anywhere else is an error, as is ``# ASYNC`` on an ``if``
whose test is not ``True``. A block left empty gets ``pass``.

Adding a pair
-------------
One line in ``PAIRS``: ``Pair("path/x_async.py", "path/x.py")``, with ``names=`` for renames
that only that file needs and ``prose=`` for its phrases. New names shared by several files
go in ``PRIMITIVES`` (a pair from ``_concurrency.py``, ``_scheduler.py`` or ``_clock.py``) or
``OURS`` (our own classes and helpers).
"""

from __future__ import annotations

import argparse
import difflib
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

ROOT = Path(__file__).resolve().parent.parent
TOOL = "tools/async_to_sync.py"

# The first line of every generated file; --check also finds strays by it.
HEADER_MARK = "# DO NOT EDIT: generated"
HEADER = f"{HEADER_MARK} from {{src}}\n# by {TOOL}; change the source and run it again.\n"


@dataclass(frozen=True)
class Pair:
    """An async source and the sync file generated from it (paths from the project root)."""

    source: str
    output: str
    names: Mapping[str, str] = field(default_factory=dict)  # renames for this file only
    prose: Mapping[str, str] = field(default_factory=dict)  # phrases in docstrings/comments


# -- the name map ------------------------------------------------------------------------------

# The language's async names and their sync forms: always applied, never reported unused.
SYNTAX: dict[str, str] = {
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "__aiter__": "__iter__",
    "__anext__": "__next__",
    "aiter": "iter",
    "anext": "next",
    "StopAsyncIteration": "StopIteration",
    "AsyncIterator": "Iterator",
    "AsyncIterable": "Iterable",
    "AsyncGenerator": "Generator",  # and [Y, S] gains the return type: [Y, S, None]
    "AsyncContextManager": "ContextManager",
    "AbstractAsyncContextManager": "AbstractContextManager",
    "asynccontextmanager": "contextmanager",
    "aclosing": "closing",
}

# The primitive pairs of src/buttress/_concurrency.py, _scheduler.py and _clock.py: one
# interface, two implementations (tests/test_async_to_sync.py checks both names exist).
PRIMITIVES: dict[str, str] = {
    "ACell": "Cell",
    "ALock": "Lock",
    "AsyncScheduler": "Scheduler",
    "acall": "call",
    "acall_within": "call_within",
    "aclose": "close",
    "acurrent_owner": "current_owner",
    "asleep": "sleep",
    "aspawn": "spawn",
}

# Our own classes, helpers and variable names.
OURS: dict[str, str] = {
    "AsyncConnectionPool": "ConnectionPool",
    "AsyncLease": "Lease",
    "apool": "pool",
    "asettle": "settle",
}

NAMES: dict[str, str] = {**PRIMITIVES, **OURS}

# -- what to generate --------------------------------------------------------------------------

POOL_PROSE: dict[str, str] = {
    "for asyncio": "for threads",
    "the task": "the thread",
    "current task": "current thread",
    "another task": "another thread",
    "Its task": "Its thread",
    "Each may be a plain or a coroutine function.": "Each is a plain function.",
}

# The breaker's call paths: async methods end in _async; their thread twins drop it.
BREAKER_NAMES: dict[str, str] = {
    "AsyncCalls": "Calls",
    "AsyncGuardCalls": "GuardCalls",
    "AsyncRunner": "Runner",
    "call_async": "call",
    "_call_async": "_call",
    "_run_async": "_run",
    "_make_run_async": "_make_run",
    "_make_wrap_async": "_make_wrap",
    "_wrap_critical_async": "_wrap_critical",
    "_wrap_async": "_wrap",
    "wrap_async": "wrap",
    "AsyncFn": "Fn",
    "run_async": "run",
    "general_async": "general",
    "begin_async": "begin",
    "_enter_async": "_enter",
    "_delay_async": "_delay",
    "check_health_async": "check_health",
}

# The protect pipeline: its steps for asyncio, and their thread twins.
PROTECT_NAMES: dict[str, str] = {
    "AsyncSteps": "Steps",
    "AsyncProtectionSteps": "ProtectionSteps",
    "compile_steps_async": "compile_steps",
    "run_async": "run",
    "call_async": "call",
    "enter_async": "enter",
    "leave_async": "leave",
    "abandon_async": "abandon",
    "undo_async": "undo",
    "async_steps": "steps",
    "try_acquire_async": "try_acquire",
    "refund_async": "refund",
    "begin_async": "begin",
}

PAIRS: list[Pair] = [
    Pair(
        "src/buttress/ratelimit/_guarded_async.py",
        "src/buttress/ratelimit/_guarded.py",
        names={
            "AsyncGuardedCalls": "GuardedCalls",
            "decide_async": "decide",
            "refund_async": "refund",
            "reset_async": "reset",
        },
    ),
    Pair("src/buttress/_pool/_pool_async.py", "src/buttress/_pool/_pool.py", prose=POOL_PROSE),
    Pair(
        "src/buttress/_breaker/_calls_async.py",
        "src/buttress/_breaker/_calls.py",
        names=BREAKER_NAMES,
    ),
    Pair(
        "src/buttress/_infrastructure/_protect_async.py",
        "src/buttress/_infrastructure/_protect.py",
        names=PROTECT_NAMES,
    ),
    Pair(
        "src/buttress/_infrastructure/_policed_async.py",
        "src/buttress/_infrastructure/_policed.py",
        names={
            "run_async": "run",
            "call_async": "call",
            "try_acquire_async": "try_acquire",
            "policed_async": "policed",
            "refund_async": "refund",
            "_protect_async": "_protect",
            "charged_async": "charged",
            "run_retried_async": "run_retried",
        },
    ),
    Pair(
        "src/buttress/_retry/_runs_async.py",
        "src/buttress/_retry/_runs.py",
        names={
            "AsyncRuns": "Runs",
            "call_async": "call",
            "run_retried_async": "run_retried",
            "_again_async": "_again",
        },
    ),
    Pair(
        "src/buttress/integrations/_sending_async.py",
        "src/buttress/integrations/_sending.py",
        names={
            "send_async": "send",
            "_run_async": "_run",
            "call_async": "call",
            "try_acquire_async": "try_acquire",
            "refund_async": "refund",
        },
    ),
    Pair(
        "src/buttress/integrations/_httpx_async.py",
        "src/buttress/integrations/_httpx.py",
        names={
            "AsyncProtectedTransport": "ProtectedTransport",
            "AsyncBaseTransport": "BaseTransport",
            "AsyncHTTPTransport": "HTTPTransport",
            "AsyncClient": "Client",
            "handle_async_request": "handle_request",
            "_sending_async": "_sending",
            "send_async": "send",
            "_aclose": "_close",
        },
    ),
    Pair("tests/pool/test_pool_async.py", "tests/pool/test_pool_sync.py"),
]


# -- conversion --------------------------------------------------------------------------------


class ConvertError(Exception):
    """A marker or a table the tool cannot honour; the message names the line."""


@dataclass
class Converted:
    text: str
    names_used: set[str]
    prose_used: set[str]


def convert(
    source: str, names: Mapping[str, str] = NAMES, prose: Mapping[str, str] = {}
) -> Converted:
    """The sync twin of ``source`` (without header and formatting), and which entries it used.

    ``names`` is the map on top of ``SYNTAX``; ``prose``, phrases for docstrings and comments.
    """
    module = cst.parse_module(source)
    divergences = _Divergences()
    module = MetadataWrapper(module).visit(divergences)
    divergences.raise_strays()
    unasync = _Unasync({**SYNTAX, **names}, prose)
    module = module.visit(unasync)
    return Converted(module.code, unasync.names_used - SYNTAX.keys(), unasync.prose_used)


_MARKER = re.compile(r"#\s*ASYNC\b")


def _is_marker(comment: cst.Comment | None) -> bool:
    return comment is not None and _MARKER.match(comment.value) is not None


def _leading_lines(stmt: cst.BaseStatement) -> Sequence[cst.EmptyLine]:
    assert isinstance(stmt, cst.SimpleStatementLine | cst.BaseCompoundStatement)
    return stmt.leading_lines


def _marker_block(stmt: cst.BaseStatement) -> int | None:
    """Where the comment lines directly above ``stmt`` start, if one of them is ``# ASYNC``."""
    lines = _leading_lines(stmt)
    start = len(lines)
    while start > 0 and lines[start - 1].comment is not None:
        start -= 1
    return start if any(_is_marker(line.comment) for line in lines[start:]) else None


def _async_if(stmt: cst.BaseStatement) -> cst.Comment | None:
    """The ``# ASYNC`` ending the first line of an ``if``, if there is one."""
    if isinstance(stmt, cst.If) and isinstance(stmt.body, cst.IndentedBlock):
        comment = stmt.body.header.comment
        if _is_marker(comment):
            return comment
    return None


class _Divergences(cst.CSTTransformer):
    """Resolve the markers: ``if True:  # ASYNC`` keeps its else branch, ``# ASYNC`` drops."""

    METADATA_DEPENDENCIES = (PositionProvider,)

    def __init__(self) -> None:
        super().__init__()
        self._markers: dict[int, tuple[int, cst.Comment]] = {}  # id -> (line, node)
        self._honoured: set[int] = set()

    def visit_Comment(self, node: cst.Comment) -> None:
        if _is_marker(node):
            self._markers[id(node)] = (self.get_metadata(PositionProvider, node).start.line, node)

    def raise_strays(self) -> None:
        strays = sorted(line for i, (line, _) in self._markers.items() if i not in self._honoured)
        if strays:
            raise ConvertError(
                f"line {', '.join(map(str, strays))}: a '# ASYNC' comment that marks nothing "
                "(use 'if True:  # ASYNC', or '# ASYNC' on its own line above a statement)"
            )

    def _line(self, node: cst.CSTNode) -> int:
        return self.get_metadata(PositionProvider, node).start.line

    def _statements(
        self, original: Sequence[cst.BaseStatement], updated: Sequence[cst.BaseStatement]
    ) -> tuple[list[cst.BaseStatement], list[cst.EmptyLine]]:
        """The sync statements, and the lines left over after the last one."""
        out: list[cst.BaseStatement] = []
        carry: list[cst.EmptyLine] = []  # lines above a dropped statement, for the next one
        for orig, stmt in zip(original, updated, strict=True):
            start = _marker_block(orig)
            if start is not None:
                self._honoured.update(
                    id(line.comment) for line in _leading_lines(orig)[start:] if line.comment
                )
                carry += _leading_lines(stmt)[:start]
                continue
            if (marker := _async_if(orig)) is not None:
                assert isinstance(orig, cst.If)
                self._honoured.add(id(marker))
                kept, carry = self._else_branch(orig, stmt, carry)
                out += kept
                continue
            if carry:
                stmt = stmt.with_changes(leading_lines=[*carry, *_leading_lines(stmt)])
                carry = []
            out.append(stmt)
        return out, carry

    def _else_branch(
        self, orig: cst.If, stmt: cst.BaseStatement, carry: list[cst.EmptyLine]
    ) -> tuple[list[cst.BaseStatement], list[cst.EmptyLine]]:
        assert isinstance(stmt, cst.If)
        if not (isinstance(orig.test, cst.Name) and orig.test.value == "True"):
            raise ConvertError(f"line {self._line(orig)}: '# ASYNC' marks only 'if True:'")
        if isinstance(orig.orelse, cst.If):
            raise ConvertError(f"line {self._line(orig)}: 'if True:  # ASYNC' takes no elif")
        carry = [*carry, *stmt.leading_lines]
        if stmt.orelse is None:
            return [], carry
        block = stmt.orelse.body
        if not isinstance(block, cst.IndentedBlock):
            raise ConvertError(f"line {self._line(orig)}: write the else branch on its own lines")
        kept = list(block.body)
        kept[0] = kept[0].with_changes(leading_lines=[*carry, *_leading_lines(kept[0])])
        return kept, list(block.footer)

    def leave_IndentedBlock(
        self, original_node: cst.IndentedBlock, updated_node: cst.IndentedBlock
    ) -> cst.IndentedBlock:
        body, rest = self._statements(original_node.body, updated_node.body)
        if not body:
            body = [cst.SimpleStatementLine([cst.Pass()])]
        return updated_node.with_changes(body=body, footer=[*rest, *updated_node.footer])

    def leave_Module(self, original_node: cst.Module, updated_node: cst.Module) -> cst.Module:
        body, rest = self._statements(original_node.body, updated_node.body)
        return updated_node.with_changes(body=body, footer=[*rest, *updated_node.footer])


def _words(table: Iterable[str]) -> re.Pattern[str] | None:
    """Any key of ``table`` standing alone: not inside a longer identifier or word.

    After a backslash escape (the ``n`` of ``\\nAsyncLease``) a name still stands alone.
    """
    keys = sorted(table, key=len, reverse=True)
    if not keys:
        return None
    alternatives = "|".join(map(re.escape, keys))
    return re.compile(rf"(?:(?<!\w)|(?<=\\[abfnrtv]))(?:{alternatives})(?!\w)")


_INLINE_LITERAL = re.compile(r"``.+?``")
_ASYNC_KEYWORD = re.compile(r"\basync\s+(?=(?:def|with|for)\b)|\bawait\s+(?=\S)")


def _strip_keywords(code: str) -> str:
    return _ASYNC_KEYWORD.sub("", code)


def _docstring_code(doc: str) -> str:
    """``doc`` with async/await dropped from its code: inline literals, doctests, ``::`` blocks."""
    out = []
    block_indent: int | None = None  # set while inside a literal block: its paragraph's indent
    for line in doc.splitlines(keepends=True):
        text = line.lstrip()
        indent = len(line) - len(text)
        if block_indent is not None and text.strip() and indent <= block_indent:
            block_indent = None
        if block_indent is not None or text.startswith((">>>", "...")):
            out.append(_strip_keywords(line))
            continue
        out.append(_INLINE_LITERAL.sub(lambda m: _strip_keywords(m[0]), line))
        if text.rstrip().endswith("::"):
            block_indent = indent
    return "".join(out)


class _Unasync(cst.CSTTransformer):
    """Strip async/await, rewrite the typing forms, apply the name map and the prose table."""

    def __init__(self, names: Mapping[str, str], prose: Mapping[str, str]) -> None:
        super().__init__()
        self.names = names
        self.prose = prose
        self.names_used: set[str] = set()
        self.prose_used: set[str] = set()
        self._names_rx = _words(names)
        self._prose_rx = _words(prose)
        self._docstrings: dict[int, cst.SimpleString] = {}

    # -- words in text

    def _rename(self, text: str) -> str:
        if self._names_rx is None:
            return text

        def replace(m: re.Match[str]) -> str:
            self.names_used.add(m[0])
            return self.names[m[0]]

        return self._names_rx.sub(replace, text)

    def _reword(self, text: str) -> str:
        """Prose phrases, then names (so a phrase is written as the async source has it)."""
        if self._prose_rx is not None:

            def replace(m: re.Match[str]) -> str:
                self.prose_used.add(m[0])
                return self.prose[m[0]]

            text = self._prose_rx.sub(replace, text)
        return self._rename(text)

    # -- docstrings: remembered on the way down, rewritten on the way up

    def _note_docstring(self, body: Sequence[cst.BaseStatement] | cst.BaseSuite) -> None:
        if isinstance(body, cst.BaseSuite):
            body = body.body if isinstance(body, cst.IndentedBlock) else []
        first = body[0] if body else None
        if not (
            isinstance(first, cst.SimpleStatementLine)
            and isinstance(first.body[0], cst.Expr)
            and isinstance(first.body[0].value, cst.SimpleString | cst.ConcatenatedString)
        ):
            return
        value: cst.BaseExpression = first.body[0].value
        parts = [value]
        while parts:
            part = parts.pop()
            if isinstance(part, cst.ConcatenatedString):
                parts += [part.left, part.right]
            elif isinstance(part, cst.SimpleString):
                self._docstrings[id(part)] = part

    def visit_Module(self, node: cst.Module) -> None:
        self._note_docstring(node.body)

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self._note_docstring(node.body)

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self._note_docstring(node.body)

    def leave_SimpleString(
        self, original_node: cst.SimpleString, updated_node: cst.SimpleString
    ) -> cst.SimpleString:
        prefix, quote = updated_node.prefix, updated_node.quote
        if "b" in prefix.lower():
            return updated_node
        body = updated_node.value[len(prefix) + len(quote) : -len(quote)]
        if id(original_node) in self._docstrings:
            body = self._reword(_docstring_code(body))
        else:
            body = self._rename(body)
        return updated_node.with_changes(value=f"{prefix}{quote}{body}{quote}")

    def leave_FormattedStringText(
        self, original_node: cst.FormattedStringText, updated_node: cst.FormattedStringText
    ) -> cst.FormattedStringText:
        return updated_node.with_changes(value=self._rename(updated_node.value))

    def leave_Comment(self, original_node: cst.Comment, updated_node: cst.Comment) -> cst.Comment:
        return updated_node.with_changes(value=self._reword(updated_node.value))

    # -- names

    def leave_Name(self, original_node: cst.Name, updated_node: cst.Name) -> cst.Name:
        new = self.names.get(updated_node.value)
        if new is None:
            return updated_node
        self.names_used.add(updated_node.value)
        return updated_node.with_changes(value=new)

    def leave_ImportFrom(
        self, original_node: cst.ImportFrom, updated_node: cst.ImportFrom
    ) -> cst.ImportFrom:
        if isinstance(updated_node.names, cst.ImportStar):
            return updated_node
        return updated_node.with_changes(names=_unique(updated_node.names))

    def leave_Import(self, original_node: cst.Import, updated_node: cst.Import) -> cst.Import:
        return updated_node.with_changes(names=_unique(updated_node.names))

    # -- syntax

    def leave_FunctionDef(
        self, original_node: cst.FunctionDef, updated_node: cst.FunctionDef
    ) -> cst.FunctionDef:
        return updated_node.with_changes(asynchronous=None)

    def leave_With(self, original_node: cst.With, updated_node: cst.With) -> cst.With:
        return updated_node.with_changes(asynchronous=None)

    def leave_For(self, original_node: cst.For, updated_node: cst.For) -> cst.For:
        return updated_node.with_changes(asynchronous=None)

    def leave_CompFor(self, original_node: cst.CompFor, updated_node: cst.CompFor) -> cst.CompFor:
        return updated_node.with_changes(asynchronous=None)

    def leave_Await(self, original_node: cst.Await, updated_node: cst.Await) -> cst.BaseExpression:
        inner = updated_node.expression
        return inner.with_changes(
            lpar=[*updated_node.lpar, *inner.lpar], rpar=[*inner.rpar, *updated_node.rpar]
        )

    def leave_Subscript(
        self, original_node: cst.Subscript, updated_node: cst.Subscript
    ) -> cst.BaseExpression:
        base = original_node.value
        name = (
            base.value
            if isinstance(base, cst.Name)
            else base.attr.value
            if isinstance(base, cst.Attribute)
            else ""
        )
        args = updated_node.slice
        if name == "Awaitable" and len(args) == 1:
            return _type_arg(args[0])
        if name == "Coroutine" and len(args) == 3:
            return _type_arg(args[2])
        if name == "AsyncGenerator" and len(args) == 2:
            none = cst.SubscriptElement(cst.Index(cst.Name("None")))
            return updated_node.with_changes(slice=[*args, none])
        return updated_node


def _type_arg(element: cst.SubscriptElement) -> cst.BaseExpression:
    assert isinstance(element.slice, cst.Index)
    return element.slice.value


def _unique(aliases: Sequence[cst.ImportAlias]) -> list[cst.ImportAlias]:
    """The aliases with the duplicates a rename made left out (``ALock, Lock`` → ``Lock``)."""
    seen: set[tuple[str, str | None]] = set()
    out: list[cst.ImportAlias] = []
    module = cst.Module([])
    for alias in aliases:
        asname = alias.asname.name if alias.asname else None
        key = (
            module.code_for_node(alias.name),
            module.code_for_node(asname) if asname is not None else None,
        )
        if key not in seen:
            seen.add(key)
            out.append(alias)
    if out[-1] is not aliases[-1]:  # the last one went: its comma (or none) ends the list
        out[-1] = out[-1].with_changes(comma=aliases[-1].comma)
    return out


# -- files -------------------------------------------------------------------------------------


def ruff(text: str, path: Path, root: Path) -> str:
    """Sort imports, drop the ones the conversion left unused, and format, as `make lint` wants."""
    for args in (["check", "--fix", "--select", "I,F401", "--quiet"], ["format"]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *args, "--stdin-filename", str(path), "-"],
            input=text,
            capture_output=True,
            text=True,
            check=False,
            cwd=root,
        )
        if result.returncode != 0:
            raise ConvertError(f"ruff {args[0]} failed on the output:\n{result.stderr}")
        text = result.stdout
    return text


def generate(pair: Pair, names: Mapping[str, str], root: Path) -> Converted:
    """The generated file for ``pair``, header and formatting included."""
    overlap = sorted(pair.names.keys() & names.keys())
    if overlap:
        raise ConvertError(f"names both in the pair's map and the global one: {overlap}")
    result = convert((root / pair.source).read_text(), {**names, **pair.names}, pair.prose)
    text = HEADER.format(src=pair.source) + result.text
    result.text = ruff(text, root / pair.output, root)
    return result


def _python_files(root: Path) -> list[Path]:
    """The project's Python files: git's (tracked or not ignored), else every one not hidden."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", "*.py"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    if listed.returncode == 0:
        return [root / line for line in listed.stdout.splitlines()]
    return [
        p
        for p in root.rglob("*.py")
        if not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]


def unlisted_outputs(pairs: Sequence[Pair], root: Path) -> list[str]:
    """Files that carry the generated header but are no output of ``pairs``."""
    outputs = {pair.output for pair in pairs}
    found = []
    for path in _python_files(root):
        rel = path.relative_to(root).as_posix()
        if rel in outputs or not path.is_file():
            continue
        with path.open(encoding="utf-8", errors="replace") as f:
            if f.readline().startswith(HEADER_MARK):
                found.append(rel)
    return sorted(found)


def run(
    pairs: Sequence[Pair] = PAIRS,
    *,
    names: Mapping[str, str] = NAMES,
    root: Path = ROOT,
    check: bool = False,
    diff: bool = False,
    only: Sequence[Pair] | None = None,
) -> int:
    """Generate ``only`` (default: every pair); with ``check`` or ``diff``, write nothing.

    Returns 1 when an output is stale (checking), a table entry is unused or a generated file
    is unlisted, 0 otherwise.
    """
    failed = broken = False
    stale: list[str] = []
    used: set[str] = set()
    for pair in pairs if only is None else only:
        try:
            result = generate(pair, names, root)
        except (ConvertError, cst.ParserSyntaxError) as exc:
            print(f"{pair.source}: {exc}")
            failed = broken = True
            continue
        used |= result.names_used
        unused = [
            *sorted(pair.names.keys() - result.names_used),
            *sorted(pair.prose.keys() - result.prose_used),
        ]
        if unused:
            print(f"{pair.source}: entries of its names/prose that it never uses: {unused}")
            failed = True
        out = root / pair.output
        current = out.read_text() if out.exists() else ""
        if current == result.text:
            continue
        if check or diff:
            stale.append(pair.output)
            if diff:
                sys.stdout.writelines(
                    difflib.unified_diff(
                        current.splitlines(keepends=True),
                        result.text.splitlines(keepends=True),
                        f"{pair.output} (on disk)",
                        f"{pair.output} (generated)",
                    )
                )
        else:
            out.write_text(result.text)
            print(f"wrote {pair.output}")
    if only is None and not broken:  # (a file that failed to convert used nothing)
        unused_names = sorted(names.keys() - used)
        if unused_names:
            print(f"names no input uses (remove them): {unused_names}")
            failed = True
    if check or diff:
        strays = unlisted_outputs(pairs, root)
        if strays:
            print(f"generated files that no pair lists (add them to PAIRS): {', '.join(strays)}")
            failed = True
    if stale:
        print(f"out of date: {', '.join(stale)}; run python {TOOL}")
        failed = True
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=TOOL,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "files",
        nargs="*",
        metavar="FILE",
        help="convert only these pairs, each named by its source or its output "
        "(default: every pair)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 naming each stale output (and any file with the generated "
        "header that no pair lists)",
    )
    parser.add_argument(
        "--diff", action="store_true", help="as --check, and print how each stale output differs"
    )
    args = parser.parse_args(argv)
    only = None
    if args.files:
        by_path = {p: pair for pair in PAIRS for p in (pair.source, pair.output)}
        only = []
        for name in args.files:
            path = Path(name).resolve()
            rel = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else name
            if rel not in by_path:
                parser.error(f"{name} is neither a source nor an output in PAIRS")
            only.append(by_path[rel])
    return run(check=args.check, diff=args.diff, only=only)


if __name__ == "__main__":
    raise SystemExit(main())
