"""What call policies cost when nothing goes wrong, buttress against stamina and tenacity.

    make bench BENCH=policies        (or: .venv/bin/python benchmarks/policies.py [--quick])

1. A retry around a call that succeeds at the first attempt: ``bt.Retry`` (its ``call``, and
   as a decorator) against stamina's and tenacity's decorators (and ``Retrying``'s call), sync
   and asyncio. Overhead = candidate - bare call. Target: ours at most a fifth of the faster
   peer's.
2. The protect pipeline with timeout + retry + fallback against the same ``infra.call``
   without them (breaker and limiter on both), sync and asyncio.

Each round times every candidate in turn (process CPU time, so other processes on a shared
machine cost us less); the best round of each is kept. Compare within one run only.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable

import buttress as bt
from _timing import awork, measure, report, time_async, time_sync, work

QUICK = "--quick" in sys.argv
N = 10_000 if QUICK else 50_000
ROUNDS = 3 if QUICK else 7


def retry_sync() -> dict[str, Callable[[], object]]:
    retry = bt.Retry(attempts=3)
    out: dict[str, Callable[[], object]] = {"bare call": work}
    out["buttress Retry.call"] = lambda: retry.call(work)
    out["buttress @Retry"] = retry(work)
    try:
        import stamina

        out["stamina @retry"] = stamina.retry(on=Exception, attempts=3)(work)
    except ImportError:
        pass
    try:
        import tenacity

        out["tenacity @retry"] = tenacity.retry(stop=tenacity.stop_after_attempt(3))(work)
        retrying = tenacity.Retrying(stop=tenacity.stop_after_attempt(3))
        out["tenacity Retrying"] = lambda: retrying(work)
    except ImportError:
        pass
    return out


def retry_async() -> dict[str, Callable[[], Awaitable[object]]]:
    retry = bt.Retry(attempts=3)
    out: dict[str, Callable[[], Awaitable[object]]] = {"bare await": awork}
    out["buttress Retry.call_async"] = lambda: retry.call_async(awork)
    out["buttress @Retry"] = retry(awork)
    try:
        import stamina

        out["stamina @retry"] = stamina.retry(on=Exception, attempts=3)(awork)
    except ImportError:
        pass
    try:
        import tenacity

        out["tenacity @retry"] = tenacity.retry(stop=tenacity.stop_after_attempt(3))(awork)
    except ImportError:
        pass
    return out


CONFIG = {
    "circuit_breakers": {"api": {}},
    "rate_limiting": {"limiters": {"api": {"limit": 10**10, "window": 60}}},
}


def pipeline(infra: bt.Infrastructure) -> dict[str, Callable[[], object]]:
    retry = bt.Retry(attempts=3)

    def cached(exc: BaseException) -> int:
        return 0

    return {
        "bare call": work,
        "infra.call": lambda: infra.call("api", work),
        "+ timeout": lambda: infra.call("api", work, timeout=5.0),
        "+ retry": lambda: infra.call("api", work, retry=retry),
        "+ fallback": lambda: infra.call("api", work, fallback=cached),
        "+ all three": lambda: infra.call("api", work, timeout=5.0, retry=retry, fallback=cached),
    }


def pipeline_async(infra: bt.Infrastructure) -> dict[str, Callable[[], Awaitable[object]]]:
    retry = bt.Retry(attempts=3)

    def cached(exc: BaseException) -> int:
        return 0

    return {
        "bare await": awork,
        "infra.call_async": lambda: infra.call_async("api", awork),
        "+ timeout": lambda: infra.call_async("api", awork, timeout=5.0),
        "+ retry": lambda: infra.call_async("api", awork, retry=retry),
        "+ fallback": lambda: infra.call_async("api", awork, fallback=cached),
        "+ all three": lambda: infra.call_async(
            "api", awork, timeout=5.0, retry=retry, fallback=cached
        ),
    }


def verdict(kind: str, over: dict[str, float], ours: str) -> None:
    peers = {k: v for k, v in over.items() if k.split()[0] in ("stamina", "tenacity")}
    if not peers:
        print(f"{kind}: no peer installed (pip install -r benchmarks/requirements.txt)")
        return
    name, fastest = min(peers.items(), key=lambda kv: kv[1])
    share = over[ours] / fastest
    ok = "ok" if share <= 0.2 else "ABOVE TARGET"
    print(
        f"{kind}: {ours} {over[ours]:.0f} ns overhead vs the fastest peer ({name}) "
        f"{fastest:.0f} ns -> {share:.2f} of it (target <= 0.20: {ok})"
    )


def main() -> int:
    sync = report(
        "retry, first attempt succeeds: sync",
        measure(retry_sync(), time_sync, N, ROUNDS),
        "bare call",
        "buttress @Retry",
        N,
        ROUNDS,
    )
    asyn = report(
        "retry, first attempt succeeds: asyncio",
        measure(retry_async(), time_async, N, ROUNDS),
        "bare await",
        "buttress @Retry",
        N,
        ROUNDS,
    )
    infra = bt.Infrastructure("bench", CONFIG, env={}, background=False)
    try:
        report(
            "protect pipeline: sync",
            measure(pipeline(infra), time_sync, N, ROUNDS),
            "bare call",
            "infra.call",
            N,
            ROUNDS,
        )
        report(
            "protect pipeline: asyncio",
            measure(pipeline_async(infra), time_async, N, ROUNDS),
            "bare await",
            "infra.call_async",
            N,
            ROUNDS,
        )
    finally:
        infra.close()
    print()
    verdict("sync", sync, "buttress @Retry")
    verdict("sync", sync, "buttress Retry.call")
    verdict("asyncio", asyn, "buttress @Retry")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
