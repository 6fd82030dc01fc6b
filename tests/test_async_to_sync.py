"""tools/async_to_sync.py: each transform, each marker, the tables' honesty and --check."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("async_to_sync", ROOT / "tools/async_to_sync.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


tool = _load_tool()


def sync(source: str, names: Mapping[str, str] | None = None, **prose: str) -> str:
    """The converted text (no header, no ruff) of a dedented snippet."""
    text: str = tool.convert(textwrap.dedent(source), names or {}, prose).text
    return text


def same(text: str) -> str:
    return textwrap.dedent(text)


# -- syntax ------------------------------------------------------------------------------------


def test_async_def_with_for_and_comprehensions_lose_async_and_await() -> None:
    src = """\
        async def f(xs, ys):
            async with lock as held, other:
                async for x in xs:
                    await g(x)
            return [await h(y) async for y in ys]
        """
    assert sync(src) == same("""\
        def f(xs, ys):
            with lock as held, other:
                for x in xs:
                    g(x)
            return [h(y) for y in ys]
        """)


def test_await_keeps_the_parentheses_around_it() -> None:
    src = "ok = (await acall(check, m)) is not False\nreturn not await x.y()\n"
    assert sync(src, {"acall": "call"}) == "ok = (call(check, m)) is not False\nreturn not x.y()\n"


def test_async_dunders_become_the_sync_ones() -> None:
    src = """\
        class Lease:
            async def __aenter__(self): return self
            async def __aexit__(self, *exc): await self.release()
            def __aiter__(self): return self
            async def __anext__(self): raise StopAsyncIteration
        lease.__aenter__()
        """
    assert sync(src) == same("""\
        class Lease:
            def __enter__(self): return self
            def __exit__(self, *exc): self.release()
            def __iter__(self): return self
            def __next__(self): raise StopIteration
        lease.__enter__()
        """)


def test_typing_forms_take_their_sync_shape() -> None:
    src = """\
        def f(cb: Callable[[], Awaitable[int | None]]) -> AsyncIterator[int]: ...
        def g(c: Coroutine[Any, Any, str]) -> typing.AsyncGenerator[int, str]: ...
        def h() -> AsyncContextManager[Lease]: ...
        """
    assert sync(src) == same("""\
        def f(cb: Callable[[], int | None]) -> Iterator[int]: ...
        def g(c: str) -> typing.Generator[int, str, None]: ...
        def h() -> ContextManager[Lease]: ...
        """)


def test_a_module_with_nothing_async_comes_out_byte_for_byte() -> None:
    source = (ROOT / "src/buttress/_pool/_config.py").read_text()
    assert tool.convert(source, tool.NAMES).text == source


# -- the name map ------------------------------------------------------------------------------


def test_the_name_map_renames_whole_identifiers_everywhere() -> None:
    names = {"ALock": "Lock", "apool": "pool", "AsyncLease": "Lease"}
    src = '''\
        def make(apool: AsyncPool) -> AsyncLease:
            """One :class:`AsyncLease` from ``apool``; not AsyncLeases."""
            lock = ALock()  # an ALock, never an ALocked
            ALocks = other.apool
            f(apool=apool)
            return AsyncLease(f"<AsyncLease {apool!r}>\\nAsyncLease", b"AsyncLease", "ALock.x")
        '''
    assert sync(src, names) == same('''\
        def make(pool: AsyncPool) -> Lease:
            """One :class:`Lease` from ``pool``; not AsyncLeases."""
            lock = Lock()  # an Lock, never an ALocked
            ALocks = other.pool
            f(pool=pool)
            return Lease(f"<Lease {pool!r}>\\nLease", b"AsyncLease", "Lock.x")
        ''')


def test_imports_made_twice_by_a_rename_appear_once() -> None:
    src = """\
        from typing import AsyncIterator, Iterator
        from .._concurrency import (
            ALock,
            Lock,
        )
        import asyncio, asyncio_compat
        """
    names = {"ALock": "Lock", "asyncio_compat": "asyncio"}
    assert sync(src, names) == same("""\
        from typing import Iterator
        from .._concurrency import (
            Lock,
        )
        import asyncio
        """)


def test_docstring_code_loses_async_but_prose_and_comments_keep_their_words() -> None:
    src = '''\
        async def release(self):
            """Give it back with ``await lease.release()`` in an ``async with`` block.

            No await here, and a task may be awaited. Like this::

                async with pool.connection() as conn:
                    await conn.execute("...")

            Back to prose: await nothing.

            >>> async with pool.connection() as conn:
            ...     await conn.execute("SELECT 1")
            """
            self._apply(fx)  # no await while a cancellation is on its way out
        '''
    assert sync(src) == same('''\
        def release(self):
            """Give it back with ``lease.release()`` in an ``with`` block.

            No await here, and a task may be awaited. Like this::

                with pool.connection() as conn:
                    conn.execute("...")

            Back to prose: await nothing.

            >>> with pool.connection() as conn:
            ...     conn.execute("SELECT 1")
            """
            self._apply(fx)  # no await while a cancellation is on its way out
        ''')


def test_prose_phrases_change_only_docstrings_and_comments() -> None:
    src = '''\
        def adopt(self):
            """Make the current task the holder (not the tasks)."""
            # Its task gave up.
            log("the task")
        '''
    out = sync(src, **{"current task": "current thread", "Its task": "Its thread"})
    assert out == same('''\
        def adopt(self):
            """Make the current thread the holder (not the tasks)."""
            # Its thread gave up.
            log("the task")
        ''')


# -- markers -----------------------------------------------------------------------------------


def test_if_true_async_keeps_only_the_else_branch() -> None:
    src = """\
        async def check(self, hc):
            # Run the check.
            if True:  # ASYNC
                ok = await asyncio.to_thread(hc)
            else:
                # in this thread
                ok = hc()
                ok = bool(ok)
            return ok
        """
    assert sync(src) == same("""\
        def check(self, hc):
            # Run the check.
            # in this thread
            ok = hc()
            ok = bool(ok)
            return ok
        """)


def test_if_true_async_without_else_leaves_nothing_or_pass() -> None:
    src = """\
        async def stop(self):
            if True:  # ASYNC: tasks only
                await self._task

            return 1


        async def only():
            if True:  # ASYNC
                await x()
        """
    assert sync(src) == same("""\
        def stop(self):

            return 1


        def only():
            pass
        """)


def test_async_comment_above_a_statement_drops_it_with_its_comment() -> None:
    src = """\
        import asyncio

        # -- helpers


        # ASYNC: the sync pool closes in the caller's thread
        # (and keeps no task set)
        @decorated
        async def close_later(self):
            await self.aclose()


        class Pool:
            def __init__(self):
                self.x = 1

                # ASYNC
                self._closers = set()
                self.y = 2
        """
    assert sync(src) == same("""\
        import asyncio

        # -- helpers




        class Pool:
            def __init__(self):
                self.x = 1

                self.y = 2
        """)


@pytest.mark.parametrize(
    ("src", "error"),
    [
        ("x = 1  # ASYNC\n", "line 1: a '# ASYNC' comment that marks nothing"),
        ("if x:  # ASYNC\n    pass\n", "line 1: '# ASYNC' marks only 'if True:'"),
        ("if True:  # ASYNC\n    a()\nelif b:\n    c()\n", "line 1: 'if True:  # ASYNC' takes"),
        ("def f():\n    pass\n    # ASYNC\nelse_ = 1\n", "line 3: a '# ASYNC' comment"),
    ],
)
def test_a_marker_that_marks_nothing_is_an_error(src: str, error: str) -> None:
    with pytest.raises(tool.ConvertError, match=error.replace("(", r"\(")):
        sync(src)


# -- files, tables and the command line -------------------------------------------------------


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


BREAKER_ASYNC = '''\
    """A breaker's call paths, written once."""

    from __future__ import annotations

    import asyncio
    from collections.abc import Awaitable, Callable
    from typing import TypeVar

    T = TypeVar("T")


    class AsyncBreaker:
        async def call_async(self, fn: Callable[[], Awaitable[T]], critical: bool = False) -> T:
            """Run ``fn`` through the breaker: ``await breaker.call_async(fn)``."""
            await self._enter_async(critical)
            return await fn()

        async def check_health_async(self, hc: Callable[[], bool], delay: float) -> bool:
            await self.clock.asleep(delay)
            if True:  # ASYNC
                ok = await asyncio.to_thread(hc)
            else:
                ok = hc()
            return ok

        async def _enter_async(self, critical: bool) -> None:
            pass
    '''

BREAKER_SYNC = '''\
    # DO NOT EDIT: generated from src/breaker_async.py
    # by tools/async_to_sync.py; change the source and run it again.
    """A breaker's call paths, written once."""

    from __future__ import annotations

    from collections.abc import Callable
    from typing import TypeVar

    T = TypeVar("T")


    class Breaker:
        def call(self, fn: Callable[[], T], critical: bool = False) -> T:
            """Run ``fn`` through the breaker: ``breaker.call(fn)``."""
            self._enter(critical)
            return fn()

        def check_health(self, hc: Callable[[], bool], delay: float) -> bool:
            self.clock.sleep(delay)
            ok = hc()
            return ok

        def _enter(self, critical: bool) -> None:
            pass
    '''

BREAKER_NAMES = {
    "AsyncBreaker": "Breaker",
    "call_async": "call",
    "_enter_async": "_enter",
    "check_health_async": "check_health",
    "asleep": "sleep",
}


def test_a_breaker_like_pair_comes_out_as_its_sync_twin(tmp_path: Path) -> None:
    write(tmp_path, "src/breaker_async.py", BREAKER_ASYNC)
    pairs = [tool.Pair("src/breaker_async.py", "src/breaker.py")]
    assert tool.run(pairs, names=BREAKER_NAMES, root=tmp_path) == 0
    assert (tmp_path / "src/breaker.py").read_text() == textwrap.dedent(BREAKER_SYNC)


def test_a_protect_pipeline_of_closures_converts_whole() -> None:
    names = {"protect_async": "protect", "try_acquire_async": "try_acquire"}
    names |= {"refund_async": "refund", "AsyncProtection": "Protection"}
    src = """\
        def protect_async(route):
            limiter = route.limiter

            async def protected(fn):
                if not await limiter.try_acquire_async(route.key):
                    raise Refused(route)
                try:
                    async with route.breaker:
                        return await fn()
                except BaseException:
                    await limiter.refund_async(route.key)
                    raise

            return protected


        class AsyncProtection:
            async def __aenter__(self) -> AsyncProtection:
                await self._limiter.try_acquire_async(self._key)
                return self
        """
    assert sync(src, names) == same("""\
        def protect(route):
            limiter = route.limiter

            def protected(fn):
                if not limiter.try_acquire(route.key):
                    raise Refused(route)
                try:
                    with route.breaker:
                        return fn()
                except BaseException:
                    limiter.refund(route.key)
                    raise

            return protected


        class Protection:
            def __enter__(self) -> Protection:
                self._limiter.try_acquire(self._key)
                return self
        """)


def test_check_finds_stale_missing_and_unlisted_outputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, "a_async.py", "async def f():\n    await g()\n")
    pairs = [tool.Pair("a_async.py", "a.py")]
    assert tool.run(pairs, names={}, root=tmp_path, check=True) == 1  # a.py is missing
    assert "out of date: a.py" in capsys.readouterr().out
    assert tool.run(pairs, names={}, root=tmp_path) == 0
    out = tmp_path / "a.py"
    assert out.read_text().endswith("def f():\n    g()\n")
    assert tool.run(pairs, names={}, root=tmp_path, check=True) == 0

    out.write_text(out.read_text() + "# edited by hand\n")
    capsys.readouterr()
    assert tool.run(pairs, names={}, root=tmp_path, check=True) == 1
    assert "out of date: a.py" in capsys.readouterr().out
    assert out.read_text().endswith("# edited by hand\n")  # --check writes nothing

    assert tool.run(pairs, names={}, root=tmp_path) == 0
    write(tmp_path, "lost.py", f"{tool.HEADER_MARK} from gone_async.py\nx = 1\n")
    assert tool.run(pairs, names={}, root=tmp_path, check=True) == 1
    assert "no pair lists (add them to PAIRS): lost.py" in capsys.readouterr().out


def test_a_table_entry_no_input_uses_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, "a_async.py", "async def f():\n    await aclose()\n")
    names = {"aclose": "close", "asleep": "sleep"}
    pair = tool.Pair("a_async.py", "a.py", names={"a_gone": "gone"}, prose={"the task": "x"})
    assert tool.run([pair], names=names, root=tmp_path) == 1
    out = capsys.readouterr().out
    assert (
        "a_async.py: entries of its names/prose that it never uses: ['a_gone', 'the task']" in out
    )
    assert "names no input uses (remove them): ['asleep']" in out
    del names["asleep"]
    assert tool.run([tool.Pair("a_async.py", "a.py")], names=names, root=tmp_path) == 0


def test_help_prints_usage_and_converts_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    outputs = [ROOT / pair.output for pair in tool.PAIRS]
    before = [p.stat().st_mtime_ns for p in outputs]
    with pytest.raises(SystemExit) as exit_:
        tool.main(["--help"])
    assert exit_.value.code == 0
    help_text = capsys.readouterr().out
    assert help_text.startswith("usage: tools/async_to_sync.py") and "--check" in help_text
    assert "if True:  # ASYNC" in help_text  # the markers are documented where --help shows
    assert [p.stat().st_mtime_ns for p in outputs] == before


def test_the_primitive_pairs_exist_on_both_sides() -> None:
    from buttress import _clock, _concurrency, _scheduler

    known: set[str] = set()
    for module in (_concurrency, _scheduler, _clock):
        for name, value in vars(module).items():
            known.add(name)
            if isinstance(value, type):
                known.update(vars(value))
    missing = {n for pair in tool.PRIMITIVES.items() for n in pair} - known
    assert not missing, f"PRIMITIVES names defined nowhere: {sorted(missing)}"


def test_the_name_groups_do_not_overlap() -> None:
    groups = (tool.SYNTAX, tool.PRIMITIVES, tool.OURS)
    assert sum(map(len, groups)) == len({name for group in groups for name in group})
    for pair in tool.PAIRS:
        assert not pair.names.keys() & tool.SYNTAX.keys()
