"""Hot-path cost of a fleet breaker against a local one, on a real Redis, in one run.

    .venv/bin/python benchmarks/fleet.py [--quick]

Redis at ``BUTTRESS_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``); this run's keys carry
a namespace of their own and are deleted at the end. Both breakers wrap the same trivial
function with their decorator and stay closed; the fleet breaker's driver thread syncs with
Redis every ``sync_interval`` meanwhile (0.5 s, the default, and 0.05 s), and its CPU time
counts (process CPU time, best of several interleaved rounds). The call path itself never
waits for Redis: the target is a fleet breaker within 1.3x of a local one.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import redis

import buttress as bt
from _timing import measure, report, time_sync, work
from buttress._fleet import RedisFleet

QUICK = "--quick" in sys.argv
N = 20_000 if QUICK else 200_000
ROUNDS = 3 if QUICK else 9
URL = os.environ.get("BUTTRESS_REDIS_URL", "redis://127.0.0.1:6379/0")


def main() -> None:
    namespace = "bench-fleet-" + uuid.uuid4().hex[:8]
    fleets = [RedisFleet(URL, namespace=namespace, sync_interval=s) for s in (0.5, 0.05)]
    settings = {"failure_threshold": 5, "reset_timeout": 30.0}
    candidates = {
        "bare call": work,
        "local breaker": bt.CircuitBreaker("local", **settings)(work),
        "fleet (0.5 s)": bt.CircuitBreaker("fleet-a", fleet=fleets[0], **settings)(work),
        "fleet (0.05 s)": bt.CircuitBreaker("fleet-b", fleet=fleets[1], **settings)(work),
    }
    try:
        best = measure(candidates, time_sync, N, ROUNDS)
        report("closed breaker, decorator, sync", best, "bare call", "local breaker", N, ROUNDS)
        for name in ("fleet (0.5 s)", "fleet (0.05 s)"):
            ratio = best[name] / best["local breaker"]
            print(f"{name}: {ratio:.2f}x a local breaker per call (target <= 1.30x)")
    finally:
        for f in fleets:
            f.close()
        client = redis.Redis.from_url(URL)
        keys = list(client.scan_iter(match=f"{namespace}:*"))
        if keys:
            client.delete(*keys)


if __name__ == "__main__":
    main()
