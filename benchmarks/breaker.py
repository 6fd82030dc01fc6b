"""Closed-state overhead of a circuit breaker per call, buttress against its Python peers.

    make bench BENCH=breaker        (or: .venv/bin/python benchmarks/breaker.py [--quick])

Every breaker wraps the same trivial function with its decorator and stays closed. Each round
times every candidate in turn (process CPU time, so other processes on a shared machine cost
us less); the best round of each is kept. Overhead = candidate - bare call. The ratio column is
peer overhead / buttress overhead: above 1 means buttress is cheaper.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable

import buttress as bt

QUICK = "--quick" in sys.argv
N = 20_000 if QUICK else 100_000
ROUNDS = 3 if QUICK else 9


def work() -> int:
    return 1


async def awork() -> int:
    return 1


def time_sync(fn: Callable[[], object], n: int) -> float:
    rng = range(n)
    t0 = time.process_time()
    for _ in rng:
        fn()
    return (time.process_time() - t0) / n * 1e9


def time_async(fn: Callable[[], Awaitable[object]], n: int) -> float:
    async def loop() -> float:
        rng = range(n)
        t0 = time.process_time()
        for _ in rng:
            await fn()
        return (time.process_time() - t0) / n * 1e9

    return asyncio.run(loop())


def sync_candidates() -> dict[str, Callable[[], object]]:
    out: dict[str, Callable[[], object]] = {"bare call": work}
    out["buttress"] = bt.CircuitBreaker("bench", failure_threshold=5, reset_timeout=30.0)(work)
    try:
        import pybreaker

        out["pybreaker"] = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)(work)
    except ImportError:
        pass
    try:
        import circuitbreaker

        out["circuitbreaker"] = circuitbreaker.CircuitBreaker(
            failure_threshold=5, recovery_timeout=30
        )(work)
    except ImportError:
        pass
    try:
        from purgatory import SyncCircuitBreakerFactory

        factory = SyncCircuitBreakerFactory(default_threshold=5, default_ttl=30)
        out["purgatory"] = factory("bench")(work)
    except ImportError:
        pass
    return out


def async_candidates() -> dict[str, Callable[[], Awaitable[object]]]:
    out: dict[str, Callable[[], Awaitable[object]]] = {"bare await": awork}
    out["buttress"] = bt.CircuitBreaker("bench-async", failure_threshold=5, reset_timeout=30.0)(
        awork
    )
    try:
        from datetime import timedelta

        import aiobreaker

        out["aiobreaker"] = aiobreaker.CircuitBreaker(
            fail_max=5, timeout_duration=timedelta(seconds=30)
        )(awork)
    except ImportError:
        pass
    return out


def measure(
    candidates: dict[str, Callable[[], object]], timer: Callable[[Callable[[], object], int], float]
) -> dict[str, float]:
    best = dict.fromkeys(candidates, float("inf"))
    for fn in candidates.values():  # warm up
        timer(fn, N // 10)
    for _ in range(ROUNDS):
        for name, fn in candidates.items():
            best[name] = min(best[name], timer(fn, N))
    return best


def report(title: str, best: dict[str, float], base: str) -> dict[str, float]:
    bare = best[base]
    ours = best["buttress"] - bare
    print(f"\n{title}  (best of {ROUNDS} rounds x {N:,} calls, process CPU time)")
    print(f"{'':16}{'ns/call':>10}{'overhead ns':>14}{'peer/buttress':>16}")
    overheads: dict[str, float] = {}
    for name, ns in best.items():
        over = ns - bare
        overheads[name] = over
        ratio = "" if name in (base, "buttress") else f"{over / ours:15.2f}x"
        shown = "" if name == base else f"{over:14.0f}"
        print(f"{name:16}{ns:10.0f}{shown:>14}{ratio:>16}")
    return overheads


def main() -> int:
    sync = report("sync, closed state", measure(sync_candidates(), time_sync), "bare call")  # type: ignore[arg-type]
    asyn = report("asyncio, closed state", measure(async_candidates(), time_async), "bare await")  # type: ignore[arg-type]
    peers = {k: v for k, v in sync.items() if k not in ("bare call", "buttress")}
    print()
    if peers:
        name, fastest = min(peers.items(), key=lambda kv: kv[1])
        verdict = "ok" if sync["buttress"] <= fastest / 2 else "ABOVE TARGET"
        print(
            f"sync: buttress {sync['buttress']:.0f} ns vs fastest peer {name} {fastest:.0f} ns "
            f"-> {sync['buttress'] / fastest:.2f} of it (target <= 0.50: {verdict})"
        )
    if "aiobreaker" in asyn:
        verdict = "ok" if asyn["buttress"] <= asyn["aiobreaker"] / 2 else "ABOVE TARGET"
        print(
            f"async: buttress {asyn['buttress']:.0f} ns vs aiobreaker {asyn['aiobreaker']:.0f} ns "
            f"-> {asyn['buttress'] / asyn['aiobreaker']:.2f} of it (target <= 0.50: {verdict})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
