"""What a healed upstream receives in its first second back, from 4 worker processes.

    make bench BENCH=slow_start
    .venv/bin/python benchmarks/slow_start.py [--quick]

Four processes (a service's workers) each offer 100 calls a second to one upstream through
``infra.call``: a circuit breaker per process and one rate limit of 150 calls a second shared
by all four (a token bucket on one SQLite file, burst 150). The upstream fails for a few
seconds, then heals. During the outage the breakers open and the shared bucket fills up, so
without slow start the upstream takes the whole refilled burst plus the rate in its first
second back: about 300 calls. With ``slow_start`` each breaker lets calls back in along its
ramp. Real processes on the real clock (this is a measurement, not a test); the figure printed
is the calls the upstream answered in the first second after it healed, and in the next.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

WORKERS = 4
OFFERED = 100  # calls per second per worker
OUTAGE = 3.0  # seconds the upstream fails
AFTER = 2.0  # seconds measured after it heals


def worker(db: str, slow_start: float, heal_at: float, end: float, out: Any) -> None:
    import buttress as bt

    config = {
        "circuit_breakers": {
            "upstream": {
                "failure_threshold": 5,
                "degradation_threshold": None,
                "failure_rate_threshold": None,
                "degradation_rate_threshold": None,
                "reset_timeout": 0.5,
                "half_open_max_calls": 1,
                "half_open_success_ratio": 1.0,
                "slow_start": slow_start,
            }
        },
        "rate_limiting": {
            "limiters": {
                "upstream": {
                    "backend": f"sqlite:///{db}",
                    "scopes": [{"name": "global", "limit": 150, "window": 1.0, "burst": 150}],
                }
            }
        },
    }
    served: list[float] = []

    def upstream() -> None:
        now = time.monotonic()
        if now < heal_at:
            raise ConnectionError("upstream down")
        served.append(now)

    with bt.Infrastructure("slow-start", config, env={}) as infra:
        step = 1.0 / OFFERED
        due = time.monotonic()
        while (now := time.monotonic()) < end:
            if now < due:
                time.sleep(due - now)
            due += step
            with contextlib.suppress(bt.RejectedError, ConnectionError):
                infra.call("upstream", upstream)
    out.put(served)


def run(slow_start: float) -> tuple[int, int]:
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "limits.db")
        start = time.monotonic() + 1.0  # every worker up before the clock starts
        heal_at = start + OUTAGE
        end = heal_at + AFTER
        queue: Any = multiprocessing.Queue()
        procs = [
            multiprocessing.Process(target=worker, args=(db, slow_start, heal_at, end, queue))
            for _ in range(WORKERS)
        ]
        for p in procs:
            p.start()
        served = [t for _ in procs for t in queue.get()]
        for p in procs:
            p.join()
    first = sum(1 for t in served if heal_at <= t < heal_at + 1.0)
    second = sum(1 for t in served if heal_at + 1.0 <= t < heal_at + 2.0)
    return first, second


def main() -> int:
    print(
        f"{WORKERS} workers x {OFFERED} calls/s, one shared limit of 150/s (burst 150), "
        f"upstream down for {OUTAGE:g} s"
    )
    print(f"{'breaker setting':34s} {'1st second back':>16s} {'2nd second':>11s}")
    settings = [("no slow start", 0.0), ("slow_start = 10 s (initial 0.1)", 10.0)]
    if "--quick" not in sys.argv:
        settings.append(("slow_start = 5 s (initial 0.1)", 5.0))
    for label, slow_start in settings:
        first, second = run(slow_start)
        print(f"{label:34s} {first:16d} {second:11d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
