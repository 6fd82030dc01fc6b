"""The cost of one ``protect()``: memory check + three-scope rate limit + breaker +
instrumentation, against a bare call and against pybreaker + limits assembled by hand.

    make bench BENCH=protect        (or: .venv/bin/python benchmarks/protect.py [--quick])

Every stack admits every call (limits far above the load). Calls rotate over 100 users in
10 orgs. Each round times every candidate in turn (process CPU time); the best round is kept.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable

import buttress as bt

QUICK = "--quick" in sys.argv
N = 5_000 if QUICK else 30_000
ROUNDS = 3 if QUICK else 7

USERS = [{"user_id": f"u{i}", "org_id": f"o{i % 10}"} for i in range(100)]
# Ten million an hour: buckets stay partly used for the whole run (as under real traffic, where
# an idle token bucket holds no state at all) and nothing is ever refused.
BIG = 10**7
WINDOW = 3600.0

CONFIG = {
    "circuit_breakers": {"svc": {}},
    "rate_limiting": {
        "limiters": {
            "svc": {
                "scopes": [
                    {"name": "user", "limit": BIG, "window": WINDOW},
                    {"name": "org", "limit": BIG, "window": WINDOW},
                    {"name": "global", "limit": BIG, "window": WINDOW},
                ]
            }
        }
    },
    "memory_manager": {"check_interval": 30.0},
}


def work() -> int:
    return 1


async def awork() -> int:
    return 1


def timed(fn: Callable[[int], object], n: int) -> float:
    t0 = time.process_time()
    for i in range(n):
        fn(i)
    return (time.process_time() - t0) / n * 1e9


def timed_async(fn: Callable[[int], object], n: int) -> float:
    async def loop() -> float:
        t0 = time.process_time()
        for i in range(n):
            await fn(i)  # type: ignore[misc]
        return (time.process_time() - t0) / n * 1e9

    return asyncio.run(loop())


def peer_stack() -> Callable[[int], object] | None:
    try:
        import pybreaker
        from limits import RateLimitItemPerHour, storage, strategies
    except ImportError:
        return None
    breaker = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)
    limiter = strategies.FixedWindowRateLimiter(storage.MemoryStorage())
    item = RateLimitItemPerHour(BIG)

    def call(i: int) -> object:
        ctx = USERS[i % 100]
        # limits checks one limit at a time (an earlier hit stays consumed if a later refuses)
        if not (
            limiter.hit(item, "user", ctx["user_id"])
            and limiter.hit(item, "org", ctx["org_id"])
            and limiter.hit(item, "global")
        ):
            raise RuntimeError("limited")
        return breaker.call(work)

    return call


def main() -> int:
    infra = bt.Infrastructure("bench", CONFIG, env={}).start()
    call = infra.call

    def ours(i: int) -> object:
        return call("svc", work, context=USERS[i % 100])

    def bare(i: int) -> object:
        return work()

    def protect_cm(i: int) -> object:
        with infra.protect("svc", context=USERS[i % 100]):
            return work()

    def fallback(exc: BaseException) -> int:
        return 0

    def policed(i: int) -> object:
        return call("svc", work, context=USERS[i % 100], timeout=2.0, fallback=fallback)

    candidates: dict[str, Callable[[int], object]] = {
        "bare call": bare,
        "buttress call()": ours,
        "call() + timeout + fallback": policed,
        "buttress with protect()": protect_cm,
    }
    peers = peer_stack()
    if peers is not None:
        candidates["pybreaker + limits (by hand)"] = peers

    async def abare(i: int) -> object:
        return await awork()

    async def aours(i: int) -> object:
        return await infra.call_async("svc", awork, context=USERS[i % 100])

    async def apoliced(i: int) -> object:
        return await infra.call_async(
            "svc", awork, context=USERS[i % 100], timeout=2.0, fallback=fallback
        )

    acandidates: dict[str, Callable[[int], object]] = {
        "bare await": abare,
        "buttress call_async()": aours,
        "call_async() + timeout + fallback": apoliced,
    }

    best = dict.fromkeys(candidates, float("inf"))
    abest = dict.fromkeys(acandidates, float("inf"))
    for fn in candidates.values():
        timed(fn, N // 10)
    for _ in range(ROUNDS):
        for name, fn in candidates.items():
            best[name] = min(best[name], timed(fn, N))
        for name, afn in acandidates.items():
            abest[name] = min(abest[name], timed_async(afn, N))
    infra.close()

    bare_ns, abare_ns = best["bare call"], abest["bare await"]
    print("protect(): memory + 3-scope limit + breaker + instrumentation")
    print(f"best of {ROUNDS} rounds x {N:,} calls, process CPU time")
    print(f"{'':36}{'ns/call':>10}{'over bare (ns)':>16}")
    for name, ns in best.items():
        over = "" if name == "bare call" else f"{ns - bare_ns:16.0f}"
        print(f"{name:36}{ns:10.0f}{over:>16}")
    for name, ns in abest.items():
        over = "" if name == "bare await" else f"{ns - abare_ns:16.0f}"
        print(f"{name:36}{ns:10.0f}{over:>16}")
    ours_over = best["buttress call()"] - bare_ns
    print()
    print(
        f"sync protect overhead {ours_over / 1000:.2f} us (target <= 5 us: "
        f"{'ok' if ours_over <= 5000 else 'ABOVE TARGET'})"
    )
    print(f"async protect overhead {(abest['buttress call_async()'] - abare_ns) / 1000:.2f} us")
    extra = best["call() + timeout + fallback"] - best["buttress call()"]
    aextra = abest["call_async() + timeout + fallback"] - abest["buttress call_async()"]
    print(
        f"timeout + fallback add {extra / 1000:.2f} us to call(), "
        f"{aextra / 1000:.2f} us to call_async()"
    )
    if peers is not None:
        theirs = best["pybreaker + limits (by hand)"] - bare_ns
        verdict = "ok" if ours_over < theirs else "MISS"
        print(
            f"pybreaker + limits overhead {theirs / 1000:.2f} us -> buttress is "
            f"{theirs / ours_over:.2f}x cheaper (target > 1: {verdict})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
