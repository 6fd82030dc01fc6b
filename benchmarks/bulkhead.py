"""An uncontended enter and exit of a bulkhead against the standard library's semaphores.

    make bench BENCH=bulkhead
    .venv/bin/python benchmarks/bulkhead.py [--quick]

A place taken and given back with nobody waiting: ``with bulkhead:`` against
``with threading.BoundedSemaphore:``, ``async with bulkhead:`` against
``async with asyncio.Semaphore:``, and ``try_enter()`` / ``release()``. A bulkhead does more
(FIFO handoff shared by threads and tasks, counts, a service-time estimate, an adaptive limit's
sample), so the bar is at most 2x the semaphore. Cases run interleaved in rounds; each figure
is the best round.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import buttress as bt

QUICK = "--quick" in sys.argv
ROUNDS = 3 if QUICK else 9
N = 20_000 if QUICK else 100_000


def sync_case(make: Callable[[], object]) -> Callable[[], float]:
    guard = make()

    def run() -> float:
        start = time.perf_counter()
        for _ in range(N):
            with guard:  # type: ignore[attr-defined]
                pass
        return (time.perf_counter() - start) / N

    return run


def try_enter_case() -> Callable[[], float]:
    bulkhead = bt.Bulkhead("bench", max_concurrent=10)

    def run() -> float:
        start = time.perf_counter()
        for _ in range(N):
            permit = bulkhead.try_enter()
            assert permit is not None
            permit.release()
        return (time.perf_counter() - start) / N

    return run


def async_case(make: Callable[[], object]) -> Callable[[], float]:
    def run() -> float:
        async def main() -> float:
            guard = make()
            start = time.perf_counter()
            for _ in range(N):
                async with guard:  # type: ignore[attr-defined]
                    pass
            return (time.perf_counter() - start) / N

        return asyncio.run(main())

    return run


def main() -> int:
    cases = {
        "threading.BoundedSemaphore": sync_case(lambda: threading.BoundedSemaphore(10)),
        "bt.Bulkhead (with)": sync_case(lambda: bt.Bulkhead("bench", max_concurrent=10)),
        "bt.Bulkhead try_enter/release": try_enter_case(),
        "bt.Bulkhead adaptive (with)": sync_case(
            lambda: bt.Bulkhead("bench", limit=bt.AdaptiveConcurrency("bench"))
        ),
        "asyncio.Semaphore": async_case(lambda: asyncio.Semaphore(10)),
        "bt.Bulkhead (async with)": async_case(lambda: bt.Bulkhead("bench", max_concurrent=10)),
    }
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(ROUNDS):
        for name, run in cases.items():
            best[name] = min(best[name], run())
    print(f"uncontended enter + exit, best of {ROUNDS} rounds of {N:,}")
    print(f"{'case':36s} {'ns':>8s}  vs its semaphore")
    base = {
        "threading.BoundedSemaphore": best["threading.BoundedSemaphore"],
        "asyncio.Semaphore": best["asyncio.Semaphore"],
    }
    for name, seconds in best.items():
        ref = base["asyncio.Semaphore" if "async" in name else "threading.BoundedSemaphore"]
        print(f"{name:36s} {seconds * 1e9:8.0f}  {seconds / ref:5.2f}x")
    sync_ratio = best["bt.Bulkhead (with)"] / base["threading.BoundedSemaphore"]
    async_ratio = best["bt.Bulkhead (async with)"] / base["asyncio.Semaphore"]
    print("-- bars")
    for label, ratio in (("threads", sync_ratio), ("asyncio", async_ratio)):
        print(
            f"{'ok ' if ratio <= 2.0 else 'MISS'} {label}: at most 2x the semaphore: {ratio:.2f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
