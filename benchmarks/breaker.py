"""Closed-state overhead of a circuit breaker per call, buttress against its Python peers.

    make bench BENCH=breaker        (or: .venv/bin/python benchmarks/breaker.py [--quick])

Every breaker wraps the same trivial function with its decorator and stays closed. Each round
times every candidate in turn (process CPU time, so other processes on a shared machine cost
us less); the best round of each is kept. Overhead = candidate - bare call. The ratio column is
peer overhead / buttress overhead: above 1 means buttress is cheaper.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable

import buttress as bt
from _timing import awork, measure, report, time_async, time_sync, work

QUICK = "--quick" in sys.argv
N = 20_000 if QUICK else 100_000
ROUNDS = 3 if QUICK else 9


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


def main() -> int:
    sync = report(
        "sync, closed state",
        measure(sync_candidates(), time_sync, N, ROUNDS),
        "bare call",
        "buttress",
        N,
        ROUNDS,
    )
    asyn = report(
        "asyncio, closed state",
        measure(async_candidates(), time_async, N, ROUNDS),
        "bare await",
        "buttress",
        N,
        ROUNDS,
    )
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
