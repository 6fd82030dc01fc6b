"""One trace, three backends: memory, SQLite and Redis give the same decisions.

The same seeded traces of ``(time, keys, cost)`` (with peeks, refunds, resets and limits that
change between calls, as an adaptive scope's do) go to every backend with the time injected; the
memory backend runs the pure cores directly, SQLite runs them inside its transactions, and Redis
runs the Lua transcription of them. Every answer must be the same: whether it admitted, the
states it read (to the bit; an expired state counts as none) and every number of the decision.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from ratelimit_backends import close_backend, make_backend, unique_prefix
from ratelimit_reference import Reference, RefFixedWindow, RefSlidingWindow, RefTokenBucket

import buttress as bt
from buttress.ratelimit import Algorithm, FixedWindow, SlidingWindow, State, TokenBucket

T0 = 1_767_225_600.125  # a wall-clock-sized time: float precision as in production
STEPS = (0.0, 0.0, 0.001, 0.01, 0.1, 0.25, 1 / 3, 0.5, 0.75, 1.0, 1.5, 2.7, 10.0)
# Time read before a lock may be older than time a state has seen (Rule 4): steps back too.
BACK_STEPS = (-0.001, -0.2, -1 / 3)
COSTS = (1, 1, 1, 2, 0.5, 3, 7)

# Three families of keys; the token bucket's parameters change between calls.
TOKEN_BUCKETS = (TokenBucket(5, 1.0), TokenBucket(5, 1.0, burst=2), TokenBucket(3, 1.0))
FIXED = FixedWindow(4, 1.0)
SLIDING = SlidingWindow(6, 1.5)


@pytest.fixture(params=["sqlite", "redis"])
def persistent(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """A SQLite or Redis backend, on time injected by the test.

    The traces step back in time too (Rule 4), so no backend may sweep: a key swept at one
    time would be missing at an earlier one in one backend and not in another. (Redis keeps
    keys well past expiry on caller time.)
    """
    monkeypatch.setattr("buttress.ratelimit._memory.SWEEP_STEP", 0)
    monkeypatch.setattr("buttress.ratelimit._sqlite.PURGE_EVERY", 10**9)
    if request.param == "sqlite":
        backend = make_backend("sqlite", str(tmp_path / "limits.db"))
    else:
        url = request.getfixturevalue("redis_url")
        backend = make_backend("redis", url, unique_prefix("conformance"), time_source="caller")
    try:
        yield backend
    finally:
        backend.clear("")
        close_backend(backend)


def normalised(states: Any, now: float) -> list[State | None]:
    """An expired state is worth exactly no state (Rule 1): compare them as equal."""
    return [None if s is None or s[0] <= now else tuple(s) for s in states]


def backend_trace(
    seed: int, start: float, steps: int
) -> Iterator[tuple[str, list[str], list[Algorithm], float, float]]:
    rng = random.Random(seed)
    now = start
    for _ in range(steps):
        now += rng.choice(BACK_STEPS) if rng.random() < 0.15 else rng.choice(STEPS)
        user, org = f"u{rng.randrange(3)}", f"o{rng.randrange(2)}"
        scopes = [
            (f"c:t:user:{user}", rng.choice(TOKEN_BUCKETS)),
            (f"c:t:org:{org}", FIXED),
            ("c:t:global", SLIDING),
        ]
        chosen = rng.sample(scopes, rng.choice((1, 2, 3, 3)))
        op = rng.choices(("decide", "peek", "refund", "reset"), (80, 8, 8, 4))[0]
        yield op, [k for k, _ in chosen], [a for _, a in chosen], rng.choice(COSTS), now


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("start", [T0, 4e9, 1.0])  # wall-clock or monotonic-sized times
def test_backends_read_decide_and_write_the_same_states(
    persistent: Any, start: float, seed: int
) -> None:
    memory = bt.MemoryBackend()
    for step, (op, keys, algorithms, cost, now) in enumerate(backend_trace(seed, start, 250)):
        where = f"seed {seed} step {step}: {op} {keys} cost={cost} now={now}"
        if op == "reset":
            memory.reset(keys)
            persistent.reset(keys)
            continue
        if op == "refund":
            memory.refund(keys, algorithms, cost, now)
            persistent.refund(keys, algorithms, cost, now)
        else:
            want = memory.decide(keys, algorithms, cost, now, op == "decide")
            got = persistent.decide(keys, algorithms, cost, now, op == "decide")
            assert got[0] == want[0], where
            assert got[2] == now, where
            assert normalised(got[1], now) == normalised(want[1], now), where
        # Whatever happened, every key now holds the same state everywhere.
        for key, algorithm in zip(keys, algorithms, strict=True):
            _, want_state, _ = memory.decide([key], [algorithm], 1, now, False)
            _, got_state, _ = persistent.decide([key], [algorithm], 1, now, False)
            assert normalised(got_state, now) == normalised(want_state, now), f"{where}: {key}"


# Times where Python's float ``now // window`` differs from ``floor(now / window)``: the scripts
# must index windows as Python does, to the bit.
AWKWARD = [(0.5, 0.1), (1.0, 0.1), (3.3, 0.3), (18.9, 0.7), (5.5, 1.1), (13.5, 2.7)]


@pytest.mark.parametrize(("now", "window"), AWKWARD)
def test_window_indexes_match_pythons_floor_division(
    persistent: Any, now: float, window: float
) -> None:
    memory = bt.MemoryBackend()
    for algorithm in (FixedWindow(3, window), SlidingWindow(3, window)):
        key = f"c:a:{algorithm.name}"
        for t in (now - window, now, now, now + window / 2):
            want = memory.decide([key], [algorithm], 1, t)
            got = persistent.decide([key], [algorithm], 1, t)
            assert (got[0], normalised(got[1], t)) == (want[0], normalised(want[1], t)), (key, t)
        stored = persistent.decide([key], [algorithm], 1, now, False)[1]
        assert list(stored) == list(memory.decide([key], [algorithm], 1, now, False)[1])


@pytest.mark.parametrize(("now", "window"), AWKWARD)
def test_a_fixed_window_never_ends_where_it_starts(
    persistent: Any, now: float, window: float
) -> None:
    """At ``now=1.0, window=0.1`` the naive end ``(now // window + 1) * window`` is ``now``
    itself: every request would open a fresh window. Each backend admits the limit, no more."""
    fixed = FixedWindow(3, window)
    for backend in (bt.MemoryBackend(), persistent):
        admitted = [backend.decide(["c:e:fw"], [fixed], 1, now)[0] for _ in range(6)]
        assert admitted == [True] * 3 + [False] * 3, (backend, now, window)
        (state,) = backend.decide(["c:e:fw"], [fixed], 1, now, False)[1]
        assert state is not None and state[0] > now


def test_time_read_before_a_window_start_counts_as_its_start(persistent: Any) -> None:
    """Rule 4: a ``now`` older than the state's window is taken as that window's start."""
    memory = bt.MemoryBackend()
    sliding = SlidingWindow(10, 1.0)
    # Window 5 spends 6; window 6 spends 2; then a time from window 5 arrives with cost 2,
    # which fits only if its fraction of window 6 is taken as 0, not as negative.
    answers = []
    for t, cost in ((5.9, 6), (6.1, 2), (5.95, 2), (5.95, 1)):
        want = memory.decide(["c:b:sw"], [sliding], cost, t)
        got = persistent.decide(["c:b:sw"], [sliding], cost, t)
        assert (got[0], list(got[1])) == (want[0], list(want[1])), t
        answers.append(got[0])
    assert answers == [True, True, True, False]


# Ids a client can send that are no UTF-8 text (lone surrogates: valid JSON), next to their
# neighbours. "\ud800\udc00" (two lone surrogates) is not "\U00010000" (the pair's character).
ODD_IDS = (
    "\ud800",
    "\udfff",
    "a\ud800b",
    "a\ud800c",
    "\ud800\udc00",
    "\U00010000",
    "\ud7ff",
    "\ue000",
)


def test_ids_that_are_no_utf8_text_are_keys_like_any_other(persistent: Any) -> None:
    memory = bt.MemoryBackend()
    bucket, window = TokenBucket(2, 1000.0), FixedWindow(100, 1000.0)
    for backend in (memory, persistent):
        for ident in ODD_IDS:
            key = f"c:s:user:{ident}"
            answers = [backend.decide([key, "c:s:global"], [bucket, window], 1, T0)[0]]
            answers += [backend.decide([key], [bucket], 1, T0)[0] for _ in range(2)]
            assert answers == [True, True, False], (backend, ident)  # each id its own key
        backend.refund(["c:s:user:a\ud800b"], [bucket], 1, T0)
        backend.reset(["c:s:user:\udfff"])
    for ident in ODD_IDS:
        key = f"c:s:user:{ident}"
        want = memory.decide([key], [bucket], 1, T0, False)
        got = persistent.decide([key], [bucket], 1, T0, False)
        assert (got[0], list(got[1])) == (want[0], list(want[1])), ident
    # clear(prefix) takes exactly the same keys everywhere, by prefixes of every kind.
    for prefix in ("c:s:user:a\ud800", "c:s:user:\ud7ff", "c:s:user:\ud800", "c:s:user:"):
        assert persistent.clear(prefix) == memory.clear(prefix), prefix
        assert persistent.key_count() == memory.key_count(), prefix
    assert persistent.key_count() == 1  # the global scope


def test_a_limiter_counts_such_ids_on_every_backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    for kind, target in targets(request, tmp_path).items():
        backend = make_backend(kind, target, unique_prefix("surrogate"))
        rl = bt.RateLimiter(
            bt.Scope("user", 3, 60.0),
            backend=backend,
            namespace="conf",
            failure_policy="fail_closed",
        )
        try:
            for ident in ("\ud800", "\udc00"):
                assert [rl.try_acquire({"user": ident}).allowed for _ in range(4)] == [
                    True,
                    True,
                    True,
                    False,
                ], (kind, ident)
            assert rl.peek({"user": "\ud800"}).retry_after is not None
            rl.refund({"user": "\ud800"})
            assert rl.try_acquire({"user": "\ud800"}), kind
            rl.reset({"user": "\udc00"})
            assert rl.try_acquire({"user": "\udc00"}).remaining == 2, kind
            assert rl.snapshot().backend_status == "ok"
            rl.clear()
            assert backend.key_count() == 0, kind
        finally:
            close_backend(backend)


# -- through the limiter: every number of every decision ---------------------------------------


def scopes() -> list[bt.Scope]:
    return [
        bt.Scope("user", 5, 1.0, burst=3),
        bt.Scope("org", 8, 2.0, algorithm="fixed_window"),
        bt.Scope("global", 12, 1.5, algorithm="sliding_window"),
        bt.Scope("api", 10, 1.0, algorithm="adaptive", by=None, cooldown=0.0),
    ]


def limiter_on(kind: str, target: str, clock: bt.ManualClock) -> bt.RateLimiter:
    options: dict[str, Any] = {"time_source": "caller"} if kind == "redis" else {}
    backend = make_backend(kind, target, unique_prefix("conformance"), **options)
    return bt.RateLimiter(scopes(), backend=backend, clock=clock, namespace="conf")


def limiter_trace(seed: int, steps: int) -> Iterator[tuple[str, dict[str, str], float, float]]:
    rng = random.Random(seed)
    for _ in range(steps):
        advance = rng.choice(STEPS)
        context = {"user": f"u{rng.randrange(3)}", "org": f"o{rng.randrange(2)}"}
        op = rng.choices(("acquire", "peek", "refund", "reset", "error", "ok"), (80, 6, 6, 3, 3, 2))
        yield op[0], context, rng.choice(COSTS), advance


def summary(d: bt.Decision) -> tuple[Any, ...]:
    return (d.allowed, d.remaining, d.limit, d.reset_after, d.retry_after, d.scope, d.key, d.scopes)


def run_sync(rl: bt.RateLimiter, clock: bt.ManualClock, seed: int) -> list[Any]:
    out: list[Any] = []
    for op, context, cost, advance in limiter_trace(seed, 200):
        clock.advance(advance)
        if op == "acquire":
            out.append(summary(rl.try_acquire(context, cost)))
        elif op == "peek":
            out.append(summary(rl.peek(context, cost)))
        elif op == "refund":
            rl.refund(context, cost)
        elif op == "reset":
            rl.reset(context)
        else:  # the adaptive scope's limit moves; the next call carries the new one
            rl.record(ok=op == "ok")
            out.append(rl.current_limit("api"))
    return out


async def run_async(rl: bt.RateLimiter, clock: bt.ManualClock, seed: int) -> list[Any]:
    out: list[Any] = []
    for op, context, cost, advance in limiter_trace(seed, 200):
        clock.advance(advance)
        if op == "acquire":
            out.append(summary(await rl.try_acquire_async(context, cost)))
        elif op == "peek":
            out.append(summary(await rl.peek_async(context, cost)))
        elif op == "refund":
            await rl.refund_async(context, cost)
        elif op == "reset":
            await rl.reset_async(context)
        else:
            rl.record(ok=op == "ok")
            out.append(rl.current_limit("api"))
    return out


def targets(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    return {
        "memory": "",
        "sqlite": str(tmp_path / "limits.db"),
        "redis": request.getfixturevalue("redis_url"),
    }


def reference(seed: int, start: float = T0) -> list[Any]:
    clock = bt.ManualClock(start, wall=start)  # time() == monotonic(): one clock everywhere
    return run_sync(limiter_on("memory", "", clock), clock, seed)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("start", [T0, 4e9])
@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_limiter_decisions_match_memory(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str, start: float, seed: int
) -> None:
    clock = bt.ManualClock(start, wall=start)
    rl = limiter_on(kind, targets(request, tmp_path)[kind], clock)
    try:
        got = run_sync(rl, clock, seed)
    finally:
        rl.clear()
        close_backend(rl.backend)
    want = reference(seed, start)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g == w, f"seed {seed}, result {i}"


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
async def test_async_decisions_match_sync_memory(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> None:
    clock = bt.ManualClock(T0, wall=T0)
    rl = limiter_on(kind, targets(request, tmp_path)[kind], clock)
    try:
        got = await run_async(rl, clock, seed=7)
    finally:
        rl.clear()
        close_backend(rl.backend)
        if kind == "redis":
            await rl.backend.aclose()  # type: ignore[attr-defined]
    assert got == reference(7)


# -- at wall-clock times: exact, not just the same everywhere ----------------------------------
#
# The traces above hold the backends to each other, and at T0 they would agree even when all of
# them rounded the same way. These hold every backend to the numbers exact arithmetic gives, at
# times where one float step is hundreds of nanoseconds (2026, 2027 and 2096) and at small ones.

WALL_STARTS = (1.0, T0, 1_800_000_000.3, 4_000_000_000.0)
KINDS = ("memory", "memory, pure Python", "sqlite", "redis")


def limiter_at(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    scopes: list[bt.Scope],
    start: float,
) -> tuple[bt.RateLimiter, bt.ManualClock]:
    """A limiter on ``kind`` whose clocks (monotonic and wall) both read ``start``."""
    if kind == "memory, pure Python":  # the closures BUTTRESS_NO_EXTENSIONS runs
        monkeypatch.setattr("buttress.ratelimit._inmemory._FastPath", None)
        kind = "memory"
    clock = bt.ManualClock(start, wall=start)
    options: dict[str, Any] = {"time_source": "caller"} if kind == "redis" else {}
    backend = make_backend(kind, targets(request, tmp_path)[kind], unique_prefix("wall"), **options)
    return bt.RateLimiter(scopes, backend=backend, clock=clock, namespace="wall"), clock


@pytest.mark.parametrize("start", WALL_STARTS)
@pytest.mark.parametrize("kind", KINDS)
def test_a_fresh_bucket_admits_its_whole_burst_at_any_time(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    start: float,
) -> None:
    rl, clock = limiter_at(request, tmp_path, monkeypatch, kind, [bt.Scope("user", 5, 1.0)], start)
    try:
        decisions = [rl.try_acquire("u1") for _ in range(6)]  # simultaneous: time stands still
        assert [d.allowed for d in decisions] == [True] * 5 + [False]
        assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0, 0]
        assert "r=4;" in bt.http.rate_limit_headers(decisions[0])["RateLimit"]
        refused = decisions[-1]
        assert refused.retry_after is not None
        assert 0.2 - 1e-9 <= refused.retry_after <= 0.2 + 1e-6
        clock.advance(refused.retry_after)  # exactly when the next token is due
        assert rl.try_acquire("u1").allowed
        assert not rl.try_acquire("u1").allowed
        clock.advance(1.0)
        assert rl.peek("u1").remaining == 4  # full again (what would be left after one)
        assert [rl.try_acquire("u1").allowed for _ in range(6)] == [True] * 5 + [False]
    finally:
        rl.clear()
        close_backend(rl.backend)


@pytest.mark.parametrize("start", WALL_STARTS)
@pytest.mark.parametrize("kind", KINDS)
def test_windows_count_exactly_at_any_time(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    start: float,
) -> None:
    scopes = [
        bt.Scope("org", 5, 1.0, algorithm="fixed_window"),
        bt.Scope("global", 10, 0.5, algorithm="sliding_window", by=None),
    ]
    rl, clock = limiter_at(request, tmp_path, monkeypatch, kind, scopes, start)
    try:
        clock.set(start - start % 1.0 + 1.0)  # the start of a window of each (exact)
        first = [rl.try_acquire({"org": "o1"}) for _ in range(6)]
        assert [d.allowed for d in first] == [True] * 5 + [False]
        assert [d.scopes[0].remaining for d in first[:5]] == [4, 3, 2, 1, 0]
        assert [d.scopes[1].remaining for d in first[:5]] == [9, 8, 7, 6, 5]
        clock.advance(0.5 + 0.125)  # a quarter into the next sliding window
        # The previous window's 5 weigh three quarters: 3.75, so 6 fit; the org has 5 left.
        d = rl.peek({"org": "o2"})
        assert (d.scopes[0].remaining, d.scopes[1].remaining) == (4, 5)
        clock.advance(0.375)  # the next fixed window: the org is fresh
        d = rl.try_acquire({"org": "o1"})
        assert d.allowed
        assert (d.scopes[0].remaining, d.scopes[1].remaining) == (4, 9)
    finally:
        rl.clear()
        close_backend(rl.backend)


def exact_pairs() -> list[tuple[Algorithm, Reference]]:
    """Algorithms next to their exact references (in Fractions of the float's own value, so
    0.3 is the double nearest 0.3, as the backends see it)."""
    f = Fraction
    return [
        (TokenBucket(5, 1.0), RefTokenBucket(f(5), f(1), f(5))),
        (TokenBucket(3, 1.0, burst=2), RefTokenBucket(f(3), f(1), f(2))),
        (TokenBucket(7, 0.3), RefTokenBucket(f(7), f(0.3), f(7))),
        (FixedWindow(4, 1.0), RefFixedWindow(f(4), f(1))),
        (SlidingWindow(6, 1.5), RefSlidingWindow(f(6), f(3, 2))),
        (SlidingWindow(5, 0.3), RefSlidingWindow(f(5), f(0.3))),
    ]


GRID_STEPS = tuple(Fraction(n, 64) for n in (0, 0, 0, 1, 4, 13, 16, 32, 64, 100))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("start", [1.0, T0, 4_000_000_000.0])  # exact on the 1/64 s grid
@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
def test_every_backend_decides_as_exact_arithmetic_does(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    start: float,
    seed: int,
) -> None:
    """Decisions, ``remaining`` and refunds against the exact references, at wall-clock times."""
    monkeypatch.setattr("buttress.ratelimit._sqlite.PURGE_EVERY", 10**9)
    options: dict[str, Any] = {"time_source": "caller"} if kind == "redis" else {}
    backend = make_backend(
        kind, targets(request, tmp_path)[kind], unique_prefix("exact"), **options
    )
    rng = random.Random(seed)
    refs = exact_pairs()
    exact = Fraction(start)
    try:
        for step in range(300):
            exact += rng.choice(GRID_STEPS)
            now = float(exact)
            assert Fraction(now) == exact
            i = rng.randrange(len(refs))
            algorithm, ref = refs[i]
            key, cost = f"c:x:{i}", rng.choice((1, 1, 1, 2, 3))
            where = f"{kind} start={start} seed={seed} step {step}: {algorithm} cost={cost}"
            if rng.random() < 0.1:
                backend.refund([key], [algorithm], cost, now)
                ref.refund(key, exact, Fraction(cost))
                continue
            commit = rng.random() < 0.9
            allowed, olds, _ = backend.decide([key], [algorithm], cost, now, commit)
            assert allowed == ref.fits(key, exact, Fraction(cost)), where
            verdict = algorithm.decide(olds[0], now, cost)
            assert verdict[0] == allowed, where
            if allowed and commit:
                ref.charge(key, exact, Fraction(cost))
                assert verdict[2] == ref.remaining(key, exact), where
            elif not allowed:
                assert verdict[2] == ref.remaining(key, exact), where
    finally:
        backend.clear("")
        close_backend(backend)


@pytest.mark.parametrize("start", WALL_STARTS)
@pytest.mark.parametrize("kind", KINDS)
def test_a_high_rate_stays_limited_at_any_time(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    start: float,
) -> None:
    """20 million per second: each request moves the TAT by 50 ns, less than half a float step
    at wall-clock times, so a TAT kept as one float never moved and nothing was refused."""
    scope = bt.Scope("user", 20_000_000, 1.0, burst=5)
    rl, _ = limiter_at(request, tmp_path, monkeypatch, kind, [scope], start)
    try:
        assert [rl.try_acquire("u1").allowed for _ in range(8)] == [True] * 5 + [False] * 3
    finally:
        rl.clear()
        close_backend(rl.backend)
