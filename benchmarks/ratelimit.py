"""Per-decision cost of buttress's rate limiter against limits, pyrate-limiter and aiolimiter.

    make bench BENCH=ratelimit          # or: .venv/bin/python benchmarks/ratelimit.py [--quick]

Every limit is far above what the loop can use, so each call is an admitted decision (the
common case). Cases run interleaved, in many short rounds, and each figure is the best round:
on a shared, noisy machine that is the figure least disturbed by others.

* single scope: one key; ours is ``try_acquire(id)``; limits' ``hit`` with its fixed window,
  moving window and sliding window counter on ``MemoryStorage``; pyrate-limiter's
  ``Limiter(InMemoryBucket).try_acquire``; aiolimiter's ``await acquire()``;
* three scopes (user, org, global): ours is one all-or-nothing ``try_acquire(context)``; the
  peers have no such call, so theirs is three calls in a row (what their users write);
* threads: 4 threads deciding on one key, total throughput;
* many callers: the same forms over 1, 2, 1,000 and 1,000,000 distinct ids taken in a shuffled
  cycle, and a Zipf-distributed stream over 1,000,000 (a few hot callers, a long tail), with
  ``try_acquire(id)`` and ``try_acquire({"user": id})``, one and three scopes, against
  limits' fixed window (its fastest) and aiolimiter (one ``AsyncLimiter`` per id, what its
  users write, as it has no keys). Here limits are what a service sets, not a billion a
  second: a caller's state stays live between its requests, as in real traffic (with a
  billion a second every state expires within nanoseconds, and each decision pays for a new
  key).

Ours runs on its compiled fast path (``_speedups.c``) when it is built; the rows marked
"pure Python" are the same limiters on the Python closures that stand in for it elsewhere.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import aiolimiter
from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    SlidingWindowCounterRateLimiter,
)
from pyrate_limiter import Duration, InMemoryBucket, Limiter, Rate

import buttress as bt
from buttress.ratelimit import _inmemory

QUICK = "--quick" in sys.argv
ROUNDS = 8 if QUICK else 40
N = 4_000  # decisions per case per round
HUGE = 10**9  # never reached: every decision admits (a billion per second: the most a scope takes)
THREADS = 4


def best_ns(fn: Callable[[], None], n: int) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) / n * 1e9


# -- ours ----------------------------------------------------------------------------------


def pure_python(make: Callable[[], Callable[[int], None]]) -> Callable[[int], None]:
    """``make`` with the compiled fast path off: what runs where _speedups.c did not compile."""
    compiled, _inmemory._FastPath = _inmemory._FastPath, None
    try:
        return make()
    finally:
        _inmemory._FastPath = compiled


def ours_single(algorithm: str) -> Callable[[int], None]:
    limiter = bt.RateLimiter(scopes=[bt.Scope("user", HUGE, 1.0, algorithm=algorithm)])  # type: ignore[arg-type]
    try_acquire = limiter.try_acquire

    def run(n: int) -> None:
        for _ in range(n):
            try_acquire("u1")

    return run


def ours_three() -> Callable[[int], None]:
    limiter = bt.RateLimiter(
        scopes=[
            bt.Scope("user", HUGE, 1.0),
            bt.Scope("org", HUGE, 1.0),
            bt.Scope("global", HUGE, 1.0),
        ]
    )
    try_acquire = limiter.try_acquire
    context = {"user": "u1", "org": "o1"}

    def run(n: int) -> None:
        for _ in range(n):
            try_acquire(context)

    return run


def ours_async() -> Callable[[int], None]:
    limiter = bt.RateLimiter(scopes=[bt.Scope("user", HUGE, 1.0)])
    acquire = limiter.acquire_async

    async def loop(n: int) -> None:
        for _ in range(n):
            await acquire("u1")

    return lambda n: asyncio.run(loop(n))


# -- peers ---------------------------------------------------------------------------------


def limits_case(strategy: type, scopes: int) -> Callable[[int], None]:
    limiter = strategy(MemoryStorage())
    item = RateLimitItemPerSecond(HUGE)
    hit = limiter.hit
    ids = [("user", "u1"), ("org", "o1"), ("global", "all")][:scopes]

    def run(n: int) -> None:
        for _ in range(n):
            for ident in ids:
                hit(item, *ident)

    return run


def pyrate_case(scopes: int) -> Callable[[int], None]:
    limiter = Limiter(InMemoryBucket([Rate(HUGE, Duration.SECOND)]))
    acquire = limiter.try_acquire
    names = ["user:u1", "org:o1", "global"][:scopes]

    def run(n: int) -> None:
        for _ in range(n):
            for name in names:
                acquire(name, blocking=False)

    return run


def aiolimiter_case() -> Callable[[int], None]:
    async def loop(n: int) -> None:
        limiter = aiolimiter.AsyncLimiter(HUGE, 1)
        acquire = limiter.acquire
        for _ in range(n):
            await acquire()

    return lambda n: asyncio.run(loop(n))


def threaded(make: Callable[[], Callable[[int], None]]) -> Callable[[int], None]:
    """Split ``n`` decisions over 4 threads sharing one limiter and one key."""
    run_one = make()

    def run(n: int) -> None:
        share = n // THREADS
        workers = [threading.Thread(target=run_one, args=(share,)) for _ in range(THREADS)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    return run


CASES: dict[str, tuple[Callable[[int], None], int]] = {}


def case(name: str, run: Callable[[int], None], n: int = N) -> None:
    CASES[name] = (run, n)


# -- many callers --------------------------------------------------------------------------


def id_streams(quick: bool) -> dict[str, list[str]]:
    """Each stream of ids, by name: a shuffled cycle over k ids, and a Zipf stream."""
    import random

    rng = random.Random(20261206)
    length = 200_000 if quick else 1_000_000
    streams: dict[str, list[str]] = {}
    # One str object per caller, as a service holds a caller's id while it is busy (a million
    # distinct objects for a thousand callers would measure the CPU's caches, not a limiter).
    for k in (1, 2, 1_000, 1_000_000):
        names = [f"u{i}" for i in range(k)]
        ids = [names[i % k] for i in range(length)]
        rng.shuffle(ids)
        streams[f"{k:,} ids"] = ids
    population = 1_000_000
    names = [f"u{i}" for i in range(population)]
    weights = [1.0 / (rank + 1) ** 1.1 for rank in range(population)]
    drawn = rng.choices(range(population), weights=weights, k=length)
    streams["Zipf over 1,000,000"] = [names[i] for i in drawn]
    return streams


COLUMNS = ["ours id", "ours context", "ours 3 scopes", "limits fixed", "limits x3", "aiolimiter"]


def many_callers(quick: bool) -> None:
    streams = id_streams(quick)
    rounds = 2 if quick else 3
    print(f"\nmany callers: ns per admitted decision, best of {rounds} passes over each stream")
    print(f"{'ids':22}" + "".join(f"{c:>15}" for c in COLUMNS))
    results: dict[str, list[float]] = {}
    for label, ids in streams.items():
        best = results[label] = one_stream(ids, rounds)
        print(f"{label:22}" + "".join(f"{ns:15.0f}" for ns in best))
    print("-- bars (1,000 and 1,000,000 ids, both call forms)")
    for label in ("1,000 ids", "1,000,000 ids"):
        ours_id, ours_context, ours_three, limits_one, limits_three, aio = results[label]
        for need, theirs, mine, what in (
            (5.0, limits_one, ours_id, "id >= 5x limits"),
            (5.0, limits_one, ours_context, "context >= 5x limits"),
            (2.0, aio, ours_id, "id >= 2x aiolimiter"),
            (2.0, aio, ours_context, "context >= 2x aiolimiter"),
            (5.0, limits_three, ours_three, "3 scopes >= 5x limits' three calls"),
        ):
            ratio = theirs / mine
            print(f"{'ok ' if ratio >= need else 'MISS'} {label}, {what}: {ratio:.2f}x")


def one_stream(ids: list[str], rounds: int) -> list[float]:
    """Each column's best ns per decision over ``ids``. Every caller's limit (per hour, the
    same for every candidate) is twice what its busiest caller asks over the whole run, and
    small enough that a caller's state outlives the gap until its next request."""
    from collections import Counter

    from limits import RateLimitItemPerHour

    busiest = max(Counter(ids).values()) * (rounds + 1)
    per_id = max(2 * busiest, 100)
    contexts = [{"user": i} for i in ids]
    contexts3 = [{"user": i, "org": "o1"} for i in ids]
    max_keys = 4_000_000
    one = bt.RateLimiter(
        bt.Scope("user", per_id, 3600.0), backend=bt.MemoryBackend(max_keys=max_keys)
    )
    three = bt.RateLimiter(
        [
            bt.Scope("user", per_id, 3600.0),
            bt.Scope("org", HUGE, 60.0),
            bt.Scope("global", HUGE, 60.0),
        ],
        backend=bt.MemoryBackend(max_keys=max_keys),
    )
    hit = FixedWindowRateLimiter(MemoryStorage()).hit
    per_hour = RateLimitItemPerHour(per_id)
    shared = RateLimitItemPerSecond(HUGE)
    limiters: dict[str, aiolimiter.AsyncLimiter] = {}

    def ours_id() -> None:
        acquire = one.try_acquire
        for i in ids:
            acquire(i)

    def ours_context() -> None:
        acquire = one.try_acquire
        for c in contexts:
            acquire(c)

    def ours_three_scopes() -> None:
        acquire = three.try_acquire
        for c in contexts3:
            acquire(c)

    def limits_one() -> None:
        for i in ids:
            hit(per_hour, i)

    def limits_three() -> None:
        for i in ids:
            hit(per_hour, "user", i)
            hit(shared, "org", "o1")
            hit(shared, "global")

    def aio() -> None:
        async def loop() -> None:
            limiters.clear()  # an AsyncLimiter belongs to its event loop
            get = limiters.get
            for i in ids:
                limiter = get(i)
                if limiter is None:
                    limiter = limiters[i] = aiolimiter.AsyncLimiter(per_id, 3600)
                await limiter.acquire()

        asyncio.run(loop())

    runs = [ours_id, ours_context, ours_three_scopes, limits_one, limits_three, aio]
    best = [float("inf")] * len(runs)
    for _ in range(rounds):
        for j, run in enumerate(runs):
            best[j] = min(best[j], best_ns(run, len(ids)))
    return best


def main() -> int:
    slow = N // 4  # pyrate-limiter and the moving window are much slower
    threads = N * 4  # amortise starting the threads
    case("buttress token_bucket", ours_single("token_bucket"))
    case("buttress fixed_window", ours_single("fixed_window"))
    case("buttress sliding_window", ours_single("sliding_window"))
    case("buttress acquire_async", ours_async())
    case("buttress token_bucket, pure Python", pure_python(lambda: ours_single("token_bucket")))
    case("limits fixed window", limits_case(FixedWindowRateLimiter, 1))
    case("limits moving window", limits_case(MovingWindowRateLimiter, 1), slow)
    case("limits sliding window counter", limits_case(SlidingWindowCounterRateLimiter, 1))
    case("pyrate-limiter in-memory bucket", pyrate_case(1), slow)
    case("aiolimiter acquire", aiolimiter_case())
    case("buttress 3 scopes", ours_three())
    case("buttress 3 scopes, pure Python", pure_python(ours_three))
    case("limits fixed window x3", limits_case(FixedWindowRateLimiter, 3))
    case("limits sliding window counter x3", limits_case(SlidingWindowCounterRateLimiter, 3))
    case("pyrate-limiter x3", pyrate_case(3), slow)
    case("buttress 4 threads", threaded(lambda: ours_single("token_bucket")), threads)
    case("buttress 3 scopes 4 threads", threaded(ours_three), threads)
    case(
        "limits fixed window 4 threads",
        threaded(lambda: limits_case(FixedWindowRateLimiter, 1)),
        threads,
    )

    best = {name: float("inf") for name in CASES}
    for _ in range(ROUNDS):
        for name, (run, n) in CASES.items():
            best[name] = min(best[name], best_ns(lambda run=run, n=n: run(n), n))

    ours = best["buttress token_bucket"]
    version = sys.version.split()[0]
    print(f"rate limiter, one admitted decision; best of {ROUNDS} rounds; Python {version}")
    compiled = "on" if _inmemory._FastPath else "OFF (not built, or BUTTRESS_NO_EXTENSIONS)"
    print(f"compiled fast path (buttress.ratelimit._speedups): {compiled}")
    print(f"{'case':36} {'ns/op':>10} {'ops/s':>12} {'vs buttress':>12}")
    single = [n for n in CASES if "3" not in n and "threads" not in n]
    three = [n for n in CASES if "3" in n and "threads" not in n]
    threaded_ = [n for n in CASES if "threads" in n]
    groups = (
        ("single scope", single, ours),
        ("three scopes", three, best["buttress 3 scopes"]),
        ("4 threads, one key", threaded_, best["buttress 4 threads"]),
    )
    for title, names, ref in groups:
        print(f"-- {title}")
        for name in names:
            ns = best[name]
            print(f"{name:36} {ns:10.0f} {1e9 / ns:12,.0f} {ns / ref:11.2f}x")

    fastest_limits = min(best[n] for n in single if n.startswith("limits"))
    bars = [
        ("single scope >= 5x faster than limits' fastest", fastest_limits / ours, 5.0),
        ("single scope >= 2x faster than aiolimiter", best["aiolimiter acquire"] / ours, 2.0),
        ("three scopes <= 3x one scope", 3.0 / (best["buttress 3 scopes"] / ours), 1.0),
    ]
    print("-- bars")
    failed = 0
    for label, ratio, need in bars:
        ok = ratio >= need
        failed += not ok
        shown = ratio if "three" not in label else best["buttress 3 scopes"] / ours
        print(f"{'ok ' if ok else 'MISS'} {label}: {shown:.2f}x")
    many_callers(QUICK)
    return 0  # a benchmark reports; it never fails the build


if __name__ == "__main__":
    raise SystemExit(main())
