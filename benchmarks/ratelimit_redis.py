"""Per-decision cost on a real Redis: buttress's RedisBackend against limits and pyrate-limiter.

    make bench BENCH=ratelimit_redis
    .venv/bin/python benchmarks/ratelimit_redis.py [--quick]

Redis at ``BUTTRESS_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``); every key this run
makes carries a prefix of its own and is deleted at the end. Every limit is far above what the
loop can use, so each call is an admitted decision. Cases run interleaved in short rounds; each
figure is the best round (the one least disturbed on a shared machine).

* floor: a bare redis-py ``PING`` round trip, the least any networked decision can cost;
* single scope: ours is ``try_acquire(id)`` (one ``EVALSHA``); ``limits``' ``hit`` with its
  fixed window, moving window and sliding window counter on ``RedisStorage`` (redis-py);
  pyrate-limiter's ``Limiter(RedisBucket).try_acquire``;
* three scopes (user, org, global): ours is one all-or-nothing ``try_acquire(context)``, still
  one round trip; the peers have no such call, so theirs is three calls in a row;
* sync (``redis.Redis``) and asyncio (``redis.asyncio.Redis``) clients alike;
* a lone caller, batching or not: ours against the same script called straight through
  redis-py (what our decision cost before concurrent decisions were batched);
* a hot key with leasing (``lease=bt.Leasing(size=100)``): one round trip per 100 decisions,
  the rest decided in the process;
* concurrency: 64 asyncio tasks on one loop and 16 threads, each deciding for its own user
  as fast as it can: decisions per second, script calls per decision and the server's time
  per decision (``INFO commandstats``), ours (batched) against limits' (aio and sync) and
  pyrate-limiter's.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import redis
import redis.asyncio
from limits import RateLimitItemPerMinute
from limits import aio as limits_aio
from limits.storage import RedisStorage
from limits.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    SlidingWindowCounterRateLimiter,
)
from pyrate_limiter import Duration, Limiter, Rate, RedisBucket

import buttress as bt

URL = os.environ.get("BUTTRESS_REDIS_URL", "redis://127.0.0.1:6379/0")
QUICK = "--quick" in sys.argv
ROUNDS = 3 if QUICK else 15
N = 500  # decisions per case per round
HUGE = 10**9  # never reached: every decision admits
PREFIX = f"bt-bench:{uuid.uuid4().hex[:8]}:"
IDS = [("user", "u1"), ("org", "o1"), ("global", "all")]

Run = Callable[[int], Awaitable[None]]


def sync(fn: Callable[[], object]) -> Run:
    async def run(n: int) -> None:
        for _ in range(n):
            fn()

    return run


def asynchronous(fn: Callable[[], Awaitable[object]]) -> Run:
    async def run(n: int) -> None:
        for _ in range(n):
            await fn()

    return run


# -- ours ----------------------------------------------------------------------------------


def ours(backend: bt.RedisBackend, scopes: int) -> tuple[bt.RateLimiter, Any]:
    names = ["user", "org", "global"][:scopes]
    limiter = bt.RateLimiter(
        [bt.Scope(name, HUGE, 60.0) for name in names], backend=backend, namespace="bench"
    )
    key: Any = "u1" if scopes == 1 else {"user": "u1", "org": "o1"}
    return limiter, key


# -- peers ---------------------------------------------------------------------------------


def limits_sync(strategy: type, scopes: int) -> Run:
    limiter = strategy(RedisStorage(URL, key_prefix=f"{PREFIX}limits-{strategy.__name__}"))
    item = RateLimitItemPerMinute(HUGE)
    hit = limiter.hit
    ids = IDS[:scopes]

    async def run(n: int) -> None:
        for _ in range(n):
            for ident in ids:
                hit(item, *ident)

    return run


def limits_async(strategy: type, scopes: int) -> Run:
    storage = limits_aio.storage.RedisStorage(
        "async+" + URL, implementation="redispy", key_prefix=f"{PREFIX}aio-{strategy.__name__}"
    )
    limiter = strategy(storage)
    item = RateLimitItemPerMinute(HUGE)
    hit = limiter.hit
    ids = IDS[:scopes]

    async def run(n: int) -> None:
        for _ in range(n):
            for ident in ids:
                await hit(item, *ident)

    return run


def pyrate_sync(client: Any, scopes: int) -> Run:
    limiters = [
        Limiter(RedisBucket.init([Rate(HUGE, Duration.MINUTE)], client, f"{PREFIX}pyrate:{n}"))
        for n, _ in IDS[:scopes]
    ]
    calls = [lim.try_acquire for lim in limiters]

    async def run(n: int) -> None:
        for _ in range(n):
            for call in calls:
                call("x", blocking=False)

    return run


async def pyrate_async(client: Any, scopes: int) -> Run:
    limiters = []
    for n, _ in IDS[:scopes]:
        bucket = await RedisBucket.init([Rate(HUGE, Duration.MINUTE)], client, f"{PREFIX}apy:{n}")
        limiters.append(Limiter(bucket))
    calls = [lim.try_acquire_async for lim in limiters]

    async def run(n: int) -> None:
        for _ in range(n):
            for call in calls:
                await call("x", blocking=False)

    return run


async def main() -> int:
    client = redis.Redis.from_url(URL)
    aclient = redis.asyncio.Redis.from_url(URL)
    backend = bt.RedisBackend(URL, prefix=PREFIX)
    cases: dict[str, tuple[str, Run]] = {}

    def case(group: str, name: str, run: Run) -> None:
        cases[name] = (group, run)

    one, one_key = ours(backend, 1)
    three, three_key = ours(backend, 3)
    case("floor", "redis-py PING (sync)", sync(client.ping))
    case("floor", "redis-py PING (asyncio)", asynchronous(aclient.ping))
    case("single scope, sync", "buttress try_acquire", sync(lambda: one.try_acquire(one_key)))
    case("single scope, sync", "limits fixed window", limits_sync(FixedWindowRateLimiter, 1))
    case("single scope, sync", "limits moving window", limits_sync(MovingWindowRateLimiter, 1))
    case(
        "single scope, sync",
        "limits sliding window counter",
        limits_sync(SlidingWindowCounterRateLimiter, 1),
    )
    case("single scope, sync", "pyrate-limiter RedisBucket", pyrate_sync(client, 1))
    # The same script call our decision makes, straight through redis-py: no batcher, no
    # limiter around it (what a lone decision cost before batching, less the limiter's own).
    keys, request = (
        backend._wire.keys(["bench:lone:user@t1:u1"]),
        backend._wire.decide([one._frame.algorithms[0]], 1, 0.0, True),
    )
    script = client.register_script(backend._texts[0])
    ascript = aclient.register_script(backend._texts[0])
    case("single scope, sync", "decide.lua called directly", sync(lambda: script(keys, [request])))
    # A hot key with leasing: a slice of 100 per round trip, the rest decided in the process.
    hot = bt.RateLimiter(
        [bt.Scope("user", HUGE, 60.0)],
        backend=backend,
        namespace="bench",
        name="leased",
        lease=bt.Leasing(size=100, ttl=1.0),
    )
    case(
        "single scope, sync",
        "buttress leased (slices of 100)",
        sync(lambda: hot.try_acquire("hot")),
    )
    case(
        "single scope, asyncio",
        "buttress try_acquire_async",
        asynchronous(lambda: one.try_acquire_async(one_key)),
    )
    case(
        "single scope, asyncio",
        "decide.lua called directly (asyncio)",
        asynchronous(lambda: ascript(keys, [request])),
    )
    # A lone caller's cost of batching, at the backend: its decide_async (the batcher: a
    # sender task and a future) against the same call made as before batching (a task for
    # the script, shielded so a cancelled caller still learns the outcome).
    algorithms = [one._frame.algorithms[0]]

    async def batched() -> object:
        return await backend.decide_async(["bench:lone:user@t1:u1"], algorithms, 1, 0.0, True)

    async def unbatched() -> object:
        return await asyncio.shield(asyncio.ensure_future(ascript(keys, [request])))

    case("single scope, asyncio", "backend decide_async, batched", asynchronous(batched))
    case("single scope, asyncio", "same call unbatched (task + shield)", asynchronous(unbatched))
    case(
        "single scope, asyncio",
        "buttress leased async (slices of 100)",
        asynchronous(lambda: hot.try_acquire_async("hot")),
    )
    strategies = limits_aio.strategies
    case(
        "single scope, asyncio",
        "limits aio fixed window",
        limits_async(strategies.FixedWindowRateLimiter, 1),
    )
    case(
        "single scope, asyncio",
        "limits aio moving window",
        limits_async(strategies.MovingWindowRateLimiter, 1),
    )
    case(
        "single scope, asyncio",
        "limits aio sliding window counter",
        limits_async(strategies.SlidingWindowCounterRateLimiter, 1),
    )
    case("single scope, asyncio", "pyrate-limiter RedisBucket aio", await pyrate_async(aclient, 1))
    case("three scopes, sync", "buttress 3 scopes", sync(lambda: three.try_acquire(three_key)))
    case("three scopes, sync", "limits fixed window x3", limits_sync(FixedWindowRateLimiter, 3))
    case(
        "three scopes, sync",
        "limits sliding window counter x3",
        limits_sync(SlidingWindowCounterRateLimiter, 3),
    )
    case("three scopes, sync", "pyrate-limiter RedisBucket x3", pyrate_sync(client, 3))
    case(
        "three scopes, asyncio",
        "buttress 3 scopes async",
        asynchronous(lambda: three.try_acquire_async(three_key)),
    )
    case(
        "three scopes, asyncio",
        "limits aio fixed window x3",
        limits_async(strategies.FixedWindowRateLimiter, 3),
    )
    case(
        "three scopes, asyncio",
        "pyrate-limiter RedisBucket aio x3",
        await pyrate_async(aclient, 3),
    )

    try:
        for _, run in cases.values():  # warm up: connections made, scripts loaded
            await run(20)
        best = {name: float("inf") for name in cases}
        server: dict[str, float] = {}
        for _ in range(ROUNDS):
            for name, (_, run) in cases.items():
                calls0, usec0 = script_stats(client)
                t0 = time.perf_counter()
                await run(N)
                best[name] = min(best[name], (time.perf_counter() - t0) / N * 1e9)
                calls, usec = script_stats(client)
                if calls - calls0 > 1:
                    per = (usec - usec0) / (calls - calls0 - 1)
                    server[name] = min(server.get(name, float("inf")), per)
        rows = await concurrency(client, aclient, backend)
    finally:
        for key in client.scan_iter(match=PREFIX + "*", count=1000):
            client.delete(key)
        await backend.aclose()
        backend.close()
        await aclient.aclose()
        client.close()

    report(cases, best, server)
    report_concurrency(rows)
    return 0  # a benchmark reports; it never fails the build


# -- concurrency -------------------------------------------------------------------------------

TASKS = 64
THREADS = 16
PER_CALLER = 100 if QUICK else 300


def script_stats(client: Any) -> tuple[int, float]:
    """Script calls and their server time (µs) so far (EVAL, EVALSHA and FCALL)."""
    stats = client.info("commandstats")
    found = [v for k, v in stats.items() if k.startswith(("cmdstat_eval", "cmdstat_fcall"))]
    return sum(v["calls"] for v in found), sum(v["usec"] for v in found)


async def tasks_rate(client: Any, decide: Callable[[int], Awaitable[object]]) -> tuple[float, ...]:
    """(decisions/s, script calls per decision, server µs per decision) for TASKS tasks."""

    async def caller(i: int) -> None:
        for _ in range(PER_CALLER):
            await decide(i)

    await asyncio.gather(*(caller(i) for i in range(TASKS)))  # warm up
    calls0, usec0 = script_stats(client)
    t0 = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(TASKS)))
    elapsed = time.perf_counter() - t0
    calls, usec = script_stats(client)
    n = TASKS * PER_CALLER
    return n / elapsed, (calls - calls0 - 1) / n, (usec - usec0) / n  # -1: the stats call


def threads_rate(client: Any, decide: Callable[[int], object]) -> tuple[float, ...]:
    """(decisions/s, script calls per decision, server µs per decision) for THREADS threads."""
    import threading

    def run() -> float:
        start = threading.Barrier(THREADS + 1)

        def caller(i: int) -> None:
            start.wait()
            for _ in range(PER_CALLER):
                decide(i)

        threads = [threading.Thread(target=caller, args=(i,)) for i in range(THREADS)]
        for t in threads:
            t.start()
        start.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        return time.perf_counter() - t0

    run()  # warm up
    calls0, usec0 = script_stats(client)
    elapsed = run()
    calls, usec = script_stats(client)
    n = THREADS * PER_CALLER
    return n / elapsed, (calls - calls0 - 1) / n, (usec - usec0) / n


async def concurrency(client: Any, aclient: Any, backend: bt.RedisBackend) -> dict[str, Any]:
    one, _ = ours(backend, 1)
    three, _ = ours(backend, 3)
    users = [f"u{i}" for i in range(max(TASKS, THREADS))]
    contexts = [{"user": u, "org": "o1"} for u in users]
    item = RateLimitItemPerMinute(HUGE)
    aio = limits_aio.strategies
    fixed_aio = aio.FixedWindowRateLimiter(
        limits_aio.storage.RedisStorage(
            "async+" + URL, implementation="redispy", key_prefix=f"{PREFIX}conc-aio"
        )
    )
    sliding_aio = aio.SlidingWindowCounterRateLimiter(
        limits_aio.storage.RedisStorage(
            "async+" + URL, implementation="redispy", key_prefix=f"{PREFIX}conc-aio-s"
        )
    )
    fixed = FixedWindowRateLimiter(RedisStorage(URL, key_prefix=f"{PREFIX}conc-sync"))
    bucket = await RedisBucket.init([Rate(HUGE, Duration.MINUTE)], aclient, f"{PREFIX}conc-py")
    pyrate = Limiter(bucket)
    rows: dict[str, Any] = {}
    rows[f"buttress, {TASKS} tasks"] = await tasks_rate(
        client, lambda i: one.try_acquire_async(users[i])
    )
    rows[f"buttress 3 scopes, {TASKS} tasks"] = await tasks_rate(
        client, lambda i: three.try_acquire_async(contexts[i])
    )
    rows[f"limits aio fixed window, {TASKS} tasks"] = await tasks_rate(
        client, lambda i: fixed_aio.hit(item, users[i])
    )
    rows[f"limits aio sliding counter, {TASKS} tasks"] = await tasks_rate(
        client, lambda i: sliding_aio.hit(item, users[i])
    )
    rows[f"pyrate-limiter aio, {TASKS} tasks"] = await tasks_rate(
        client, lambda i: pyrate.try_acquire_async(users[i], blocking=False)
    )
    rows[f"buttress, {THREADS} threads"] = threads_rate(client, lambda i: one.try_acquire(users[i]))
    rows[f"buttress 3 scopes, {THREADS} threads"] = threads_rate(
        client, lambda i: three.try_acquire(contexts[i])
    )
    rows[f"limits fixed window, {THREADS} threads"] = threads_rate(
        client, lambda i: fixed.hit(item, users[i])
    )
    return rows


def report_concurrency(rows: dict[str, Any]) -> None:
    print(f"\nconcurrent callers, one admitted decision each ({PER_CALLER} per caller)")
    print(f"{'case':44} {'decisions/s':>12} {'calls/decision':>15} {'server µs/decision':>19}")
    for name, (rate, calls, usec) in rows.items():
        print(f"{name:44} {rate:12,.0f} {calls:15.3f} {usec:19.2f}")

    def ratio(ours: str, theirs: list[str]) -> float:
        return float(rows[ours][0] / max(rows[t][0] for t in theirs))

    tasks_peers = [n for n in rows if n.startswith("limits aio")]
    print("-- bars")
    for label, value, need in (
        (
            f"{TASKS} tasks: >= 5x limits' decisions/s",
            ratio(f"buttress, {TASKS} tasks", tasks_peers),
            5.0,
        ),
        (
            f"{THREADS} threads: >= 3x limits' decisions/s",
            ratio(f"buttress, {THREADS} threads", [f"limits fixed window, {THREADS} threads"]),
            3.0,
        ),
    ):
        print(f"{'ok ' if value >= need else 'MISS'} {label}: {value:.2f}x")


def report(
    cases: dict[str, tuple[str, Run]], best: dict[str, float], server: dict[str, float]
) -> None:
    version = sys.version.split()[0]
    print(f"rate limiter on Redis ({URL}), one admitted decision; best of {ROUNDS} rounds of {N}")
    print(f"Python {version}, redis-py {redis.__version__}")
    print(f"{'case':38} {'us/op':>8} {'ops/s':>9} {'vs buttress':>12} {'server us/call':>15}")
    groups: dict[str, list[str]] = {}
    for name, (group, _) in cases.items():
        groups.setdefault(group, []).append(name)
    for group, names in groups.items():
        ref = best[names[0]]
        print(f"-- {group}")
        for name in names:
            ns = best[name]
            busy = f"{server[name]:15.2f}" if name in server else ""
            print(f"{name:38} {ns / 1000:8.1f} {1e9 / ns:9,.0f} {ns / ref:11.2f}x {busy}")

    def limits_fastest(group: str) -> float:
        return min(best[n] for n in groups[group] if n.startswith("limits"))

    ours_sync = best["buttress try_acquire"]
    ours_async = best["buttress try_acquire_async"]
    ours_three = best["buttress 3 scopes"]
    bars = [
        (
            "sync: no slower than limits' fastest",
            limits_fastest("single scope, sync") / ours_sync,
            1.0,
        ),
        (
            "asyncio: no slower than limits' fastest",
            limits_fastest("single scope, asyncio") / ours_async,
            1.0,
        ),
        (
            "three scopes: >= 2x faster than limits' three calls",
            limits_fastest("three scopes, sync") / ours_three,
            2.0,
        ),
    ]
    print("-- bars")
    for label, ratio, need in bars:
        print(f"{'ok ' if ratio >= need else 'MISS'} {label}: {ratio:.2f}x")
    alone = server.get("buttress try_acquire", float("nan"))
    print(
        f"{'ok ' if alone <= 5.0 else 'MISS'} server time of a lone decision <= 5 µs: {alone:.2f}"
    )
    print(
        "   a lone asyncio caller at the backend: batched "
        f"{best['backend decide_async, batched'] / 1000:.1f} µs, unbatched as before "
        f"{best['same call unbatched (task + shield)'] / 1000:.1f} µs"
    )
    print(
        "   a lone caller, batching or not: sync "
        f"{ours_sync / 1000:.1f} µs against {best['decide.lua called directly'] / 1000:.1f} µs "
        "for the script called directly; asyncio "
        f"{ours_async / 1000:.1f} µs against "
        f"{best['decide.lua called directly (asyncio)'] / 1000:.1f} µs"
    )


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
