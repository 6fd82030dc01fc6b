"""What the per-call benchmarks share: the trivial work, the timers, best-of rounds, the table.

Each timer runs a candidate ``n`` times and returns process CPU time per call in ns (other
processes on a shared machine cost us less than with wall time). :func:`measure` warms every
candidate up, then times each in turn, round after round, keeping each one's best round.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


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


def measure(
    candidates: dict[str, Any], timer: Callable[[Any, int], float], n: int, rounds: int
) -> dict[str, float]:
    """Each candidate's best ns per call over ``rounds`` rounds of ``n`` calls."""
    best = dict.fromkeys(candidates, float("inf"))
    for fn in candidates.values():  # warm up
        timer(fn, n // 10)
    for _ in range(rounds):
        for name, fn in candidates.items():
            best[name] = min(best[name], timer(fn, n))
    return best


def report(
    title: str, best: dict[str, float], base: str, ours: str, n: int, rounds: int
) -> dict[str, float]:
    """Print each candidate's ns per call, its overhead over ``base`` and that overhead as a
    multiple of ``ours``; return the overheads."""
    bare = best[base]
    mine = best[ours] - bare
    width = max(16, *(len(name) + 2 for name in best))
    print(f"\n{title}  (best of {rounds} rounds x {n:,} calls, process CPU time)")
    print(f"{'':{width}}{'ns/call':>10}{'overhead ns':>14}{f'/ {ours}':>{len(ours) + 6}}")
    overheads: dict[str, float] = {}
    for name, ns in best.items():
        over = ns - bare
        overheads[name] = over
        ratio = "" if name in (base, ours) else f"{over / mine:.2f}x"
        shown = "" if name == base else f"{over:14.0f}"
        print(f"{name:{width}}{ns:10.0f}{shown:>14}{ratio:>{len(ours) + 6}}")
    return overheads
