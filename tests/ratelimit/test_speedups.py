"""The compiled fast paths (``_speedups.c``) against the pure-Python closures they stand in for.

Two limiters with the same scopes and the same manual clock, one on each path, are driven
through the same calls; every decision, every stored state and every count must agree exactly.
"""

from __future__ import annotations

import enum
import gc
import inspect
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import buttress as bt
from buttress import events
from buttress.ratelimit import FixedWindow, _inmemory

try:
    from buttress.ratelimit import _speedups
except ImportError:  # pragma: no cover - only where the C file did not compile
    _speedups = None  # type: ignore[assignment]

if _speedups is None or _inmemory._FastPath is None:
    reason = (
        "the compiled fast path is off (BUTTRESS_NO_EXTENSIONS is set)"
        if os.environ.get("BUTTRESS_NO_EXTENSIONS")
        else "buttress.ratelimit._speedups was not built (no C compiler at install?)"
    )
    if os.environ.get("CI") == "true" and not os.environ.get("BUTTRESS_NO_EXTENSIONS"):
        pytest.fail(f"CI=true: {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)

ALGORITHMS = ["token_bucket", "fixed_window", "sliding_window"]


def pair(
    make: Callable[[bt.ManualClock], bt.RateLimiter],
    monkeypatch: pytest.MonkeyPatch,
    start: float = 100.0,
) -> tuple[bt.RateLimiter, bt.RateLimiter, bt.ManualClock]:
    """The same limiter twice on one clock: compiled first, then pure Python."""
    clock = bt.ManualClock(start)
    compiled = make(clock)
    with monkeypatch.context() as m:
        m.setattr(_inmemory, "_FastPath", None)
        pure = make(clock)
    assert type(compiled.try_acquire) is _speedups.FastPath
    assert type(pure.try_acquire) is not _speedups.FastPath
    return compiled, pure, clock


def fields(d: bt.Decision) -> tuple[Any, ...]:
    return (d.allowed, d.remaining, d.limit, d.reset_after, d.retry_after, d.scope, d.index, d.key)


def same_everywhere(a: bt.RateLimiter, b: bt.RateLimiter) -> None:
    assert a.backend._states == b.backend._states  # type: ignore[attr-defined]
    assert a.snapshot() == b.snapshot()  # counts, rating, decisions in the window, keys


# One step: ("advance", seconds) | ("try", id, cost) | ("peek", id) | ("refund", id) |
# ("reset", id). Costs other than 1 and ids that are not str take the general path on both.
ids = st.sampled_from(["u1", "u2", "u3", 7])
steps = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.floats(0.0, 3.0) | st.sampled_from([0.1, 0.25, 1.0])),
        st.tuples(st.just("try"), ids, st.sampled_from([1, 1, 1, 2, 0.5])),
        st.tuples(st.just("peek"), ids),
        st.tuples(st.just("refund"), ids),
        st.tuples(st.just("reset"), ids),
    ),
    max_size=60,
)
# Where the clock starts: small, and at wall-clock magnitudes (one float step: 238 ns, 477 ns).
starts = st.sampled_from([100.0, 1_767_225_600.125, 1_800_000_000.3, 4e9])


def run(
    limiters: tuple[bt.RateLimiter, bt.RateLimiter],
    clock: bt.ManualClock,
    plan: list[Any],
    key: Callable[[Any], Any],
) -> None:
    compiled, pure = limiters
    for step in plan:
        kind = step[0]
        if kind == "advance":
            clock.advance(step[1])
            continue
        k = key(step[1])
        if kind == "try":
            a, b = compiled.try_acquire(k, step[2]), pure.try_acquire(k, step[2])
            assert fields(a) == fields(b), step
        elif kind == "peek":
            assert fields(compiled.peek(k)) == fields(pure.peek(k)), step
        elif kind == "refund":
            compiled.refund(k)
            pure.refund(k)
        else:
            compiled.reset(k)
            pure.reset(k)
        same_everywhere(compiled, pure)


@settings(max_examples=150, deadline=None)
@given(
    algorithm=st.sampled_from(ALGORITHMS),
    limit=st.integers(1, 5),
    window=st.sampled_from([0.3, 1.0, 2.5]),
    burst=st.none() | st.integers(1, 8),
    plan=steps,
    start=starts,
    form=st.sampled_from(["id", "context", "alias"]),
)
def test_one_scope_decides_exactly_as_the_python_path(
    algorithm: str,
    limit: int,
    window: float,
    burst: int | None,
    plan: list[Any],
    start: float,
    form: str,
) -> None:
    """Keyed by a str id, by a context naming it, or by the ``_id`` alias of its name."""

    def key(ident: Any) -> Any:
        return ident if form == "id" else {"user" if form == "context" else "user_id": ident}

    with pytest.MonkeyPatch.context() as mp:
        compiled, pure, clock = pair(
            lambda c: bt.RateLimiter(
                bt.Scope(
                    "user",
                    limit,
                    window,
                    algorithm=algorithm,  # type: ignore[arg-type]
                    burst=burst if algorithm == "token_bucket" else None,
                ),
                clock=c,
            ),
            mp,
            start,
        )
        run((compiled, pure), clock, plan, key)


@settings(max_examples=150, deadline=None)
@given(
    algorithms=st.lists(st.sampled_from(ALGORITHMS), min_size=3, max_size=3),
    limits=st.lists(st.integers(1, 6), min_size=3, max_size=3),
    plan=steps,
    alias=st.booleans(),
    start=starts,
)
def test_three_scopes_decide_exactly_as_the_python_path(
    algorithms: list[str], limits: list[int], plan: list[Any], alias: bool, start: float
) -> None:
    def make(c: bt.ManualClock) -> bt.RateLimiter:
        return bt.RateLimiter(
            [
                bt.Scope("user", limits[0], 1.0, algorithm=algorithms[0]),  # type: ignore[arg-type]
                bt.Scope("org", limits[1], 2.0, algorithm=algorithms[1], by="org"),  # type: ignore[arg-type]
                bt.Scope("global", limits[2], 1.0, algorithm=algorithms[2], by=None),  # type: ignore[arg-type]
            ],
            clock=c,
        )

    def context(ident: Any) -> dict[str, Any]:
        # The org follows the user so that scopes fill at different paces; an int id, a
        # ``user_id`` alias or a missing org take the general path (or its error) on both.
        org = {"u1": "o1", "u2": "o1", "u3": "o2"}.get(ident, "o3")
        return {"user_id" if alias else "user": ident, "org": org}

    with pytest.MonkeyPatch.context() as mp:
        compiled, pure, clock = pair(make, mp, start)
        run((compiled, pure), clock, plan, context)


def test_the_token_bucket_agrees_to_the_last_bit_at_awkward_times(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A rate whose interval is not a binary fraction, and times far from zero: every TAT the
    # C code stores must be the float the Python admit computes.
    compiled, pure, clock = pair(
        lambda c: bt.RateLimiter(bt.Scope("user", 7, 0.3, burst=3), clock=c), monkeypatch
    )
    clock.advance(1e6 + 0.1)
    for i in range(500):
        clock.advance((i % 7) * 0.0123456789)
        assert fields(compiled.try_acquire("u")) == fields(pure.try_acquire("u"))
    same_everywhere(compiled, pure)


def test_calls_it_does_not_take_go_to_the_general_method(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled, pure, _ = pair(
        lambda c: bt.RateLimiter(
            [bt.Scope("user", 5, 1.0), bt.Scope("org", 5, 1.0, by="org")], clock=c
        ),
        monkeypatch,
    )
    for call in (
        lambda rl: rl.try_acquire({"user": 1, "org": "o"}),  # an int id
        lambda rl: rl.try_acquire({"user": "u", "org_id": "o"}),  # an alias
        lambda rl: rl.try_acquire({"user": None, "user_id": "u", "org": "o"}),  # None: the alias
        lambda rl: rl.try_acquire(key={"user": "u", "org": "o"}),  # a keyword
        lambda rl: rl.try_acquire({"user": "u", "org": "o"}, cost=2),
    ):
        assert fields(call(compiled)) == fields(call(pure))
    for bad in ({"user": "u"}, "u", None, {"user": "u", "org": 1.5}):
        with pytest.raises((bt.ConfigError, bt.ContextError)) as c_err:
            compiled.try_acquire(bad)
        with pytest.raises((bt.ConfigError, bt.ContextError)) as p_err:
            pure.try_acquire(bad)
        assert type(c_err.value) is type(p_err.value)
        assert str(c_err.value) == str(p_err.value)
    for cost in (-1, True):  # True is not the cost 1
        with pytest.raises(bt.ConfigError, match="cost"):
            compiled.try_acquire({"user": "u", "org": "o"}, cost)
    with pytest.raises(TypeError):
        compiled.try_acquire("u", 1, 2)  # type: ignore[call-arg]
    same_everywhere(compiled, pure)


def test_it_reads_as_the_method_it_stands_in_for() -> None:
    rl = bt.RateLimiter(bt.Scope("user", 5, 1.0))
    general = bt.RateLimiter.try_acquire.__get__(rl)
    assert inspect.signature(rl.try_acquire) == inspect.signature(general)
    assert rl.try_acquire.__doc__ == bt.RateLimiter.try_acquire.__doc__
    assert rl.try_acquire.__qualname__ == "RateLimiter.try_acquire"
    assert "RateLimiter.try_acquire" in repr(rl.try_acquire)


def lock_is_free(rl: bt.RateLimiter) -> bool:
    lock = rl.backend._lock  # type: ignore[attr-defined]
    if not lock.acquire(blocking=False):
        return False
    lock.release()
    return True


def test_an_admit_failing_under_the_lock_raises_and_frees_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Broken(Exception):
        pass

    def broken(*_: object) -> None:
        raise Broken

    monkeypatch.setattr(FixedWindow, "admit", broken)
    rl = bt.RateLimiter(bt.Scope("user", 3, 1.0, algorithm="fixed_window"))
    assert type(rl.try_acquire) is _speedups.FastPath
    with pytest.raises(Broken):
        rl.try_acquire("u")
    assert lock_is_free(rl)
    assert rl.backend.key_count() == 0  # nothing stored


def test_a_failing_clock_raises_before_anything_is_decided() -> None:
    class Stopped(Exception):
        pass

    class Clock(bt.ManualClock):
        broken = False

        def monotonic(self) -> float:
            if self.broken:
                raise Stopped
            return super().monotonic()

    clock = Clock(0.0)
    rl = bt.RateLimiter(bt.Scope("user", 3, 1.0), clock=clock)
    assert type(rl.try_acquire) is _speedups.FastPath
    clock.broken = True
    with pytest.raises(Stopped):
        rl.try_acquire("u")
    assert lock_is_free(rl)
    clock.broken = False
    assert rl.try_acquire("u").remaining == 2


def test_listeners_and_the_key_cap_hear_what_the_python_path_tells_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    heard: dict[str, list[tuple[Any, ...]]] = {"compiled": [], "pure": []}
    which = {"now": "compiled"}

    def handler(name: Any, measurements: Any, metadata: Any) -> None:
        heard[which["now"]].append((name, dict(measurements), dict(metadata)))

    def make(c: bt.ManualClock) -> bt.RateLimiter:
        return bt.RateLimiter(
            bt.Scope("user", 2, 1.0), clock=c, backend=bt.MemoryBackend(max_keys=3)
        )

    compiled, pure, _ = pair(make, monkeypatch)
    events.attach("speedups-test", events.ALL, handler)
    try:
        for rl, label in ((compiled, "compiled"), (pure, "pure")):
            which["now"] = label
            for ident in ["a", "a", "a", "b", "c", "d", "e"]:
                rl.try_acquire(ident)
    finally:
        events.detach("speedups-test")
    assert heard["compiled"] == heard["pure"]
    names = [h[0][-1] for h in heard["compiled"]]
    assert "allowed" in names and "denied" in names and "key_cap_reached" in names
    same_everywhere(compiled, pure)


def test_a_limiter_on_the_compiled_path_is_collected() -> None:
    rl = bt.RateLimiter([bt.Scope("user", 5, 1.0), bt.Scope("org", 5, 1.0, by="org")])
    assert type(rl.try_acquire) is _speedups.FastPath
    rl.try_acquire({"user": "u", "org": "o"})
    ref = weakref.ref(rl)
    del rl
    gc.collect()
    assert ref() is None


def test_threads_on_the_compiled_path_admit_exactly_the_allowance() -> None:
    clock = bt.ManualClock(0.0)  # frozen: nothing refills while the threads run
    rl = bt.RateLimiter(bt.Scope("user", 1000, 60.0, algorithm="token_bucket"), clock=clock)
    assert type(rl.try_acquire) is _speedups.FastPath
    admitted = [0] * 8
    start = threading.Barrier(8)

    def hammer(i: int) -> None:
        start.wait()
        for _ in range(500):
            if rl.try_acquire("u"):
                admitted[i] += 1

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(admitted) == 1000
    assert rl.snapshot().admitted == 1000


def test_limiters_beyond_what_it_takes_keep_the_python_path() -> None:
    assert _inmemory._MAX_SCOPES == _speedups.MAX_SCOPES
    many = [bt.Scope(f"s{i}", 5, 1.0, by=None) for i in range(_speedups.MAX_SCOPES + 1)]
    rl = bt.RateLimiter(many)
    assert type(rl.try_acquire) is not _speedups.FastPath
    assert rl.try_acquire({}).remaining == 4
    adaptive = bt.RateLimiter(bt.Scope("user", 5, 1.0, algorithm="adaptive"))
    assert type(adaptive.try_acquire) is not _speedups.FastPath  # its limit moves


def test_an_id_name_that_is_a_str_subclass_keeps_the_python_path() -> None:
    class Dim(enum.StrEnum):
        USER = "user"

    rl = bt.RateLimiter(bt.Scope("user", 2, 1.0, by=Dim.USER))
    assert type(rl.try_acquire) is not _speedups.FastPath
    assert [bool(rl.try_acquire({"user": "u"})) for _ in range(3)] == [True, True, False]


def test_a_fast_path_cannot_be_initialised_twice() -> None:
    rl = bt.RateLimiter([bt.Scope("user", 5, 1.0), bt.Scope("org", 5, 1.0, by="org")])
    path = rl.try_acquire
    assert type(path) is _speedups.FastPath
    with pytest.raises(TypeError, match="already initialised"):
        path.__init__(general=print)  # type: ignore[misc]
    assert path({"user": "u", "org": "o"}).remaining == 4


def test_the_fast_path_is_not_built_by_hand() -> None:
    with pytest.raises(TypeError, match="needs"):
        _speedups.FastPath(general=print)  # type: ignore[call-arg]
    path = _speedups.FastPath.__new__(_speedups.FastPath)
    with pytest.raises(TypeError, match="not initialised"):
        path("u")
