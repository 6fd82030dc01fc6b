"""What an open dashboard costs the process it watches, at 300 breakers and 50 limiters.

    .venv/bin/python benchmarks/dashboard.py [--quick]

The dashboard builds one frame per interval (1 s by default) however many pages are open:
the health report of every component, plus the rates and histories the page draws. The
baseline is ``infra.health()`` alone, which the frame includes. Printed: CPU time per frame
(process CPU, best of several rounds), the share of one core that is at one frame a second,
and the bytes a page receives per frame (the first one carries every breaker's history).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import buttress as bt
from buttress._dashboard._app import _dumps
from buttress._dashboard._frame import without_history

QUICK = "--quick" in sys.argv
N = 10 if QUICK else 50
ROUNDS = 3 if QUICK else 7
BREAKERS, LIMITERS = 300, 50


def best_ms(fn: object, n: int, rounds: int) -> float:
    assert callable(fn)
    best = float("inf")
    for _ in range(rounds):
        t0 = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, (time.process_time() - t0) / n * 1e3)
    return best


def main() -> None:
    config = {
        "memory_manager": {"enabled": False},
        "circuit_breakers": {f"svc{i // 10}.op{i % 10}": {} for i in range(BREAKERS)},
        "rate_limiting": {
            "limiters": {f"limiter{i}": {"limit": 100, "window": "1s"} for i in range(LIMITERS)}
        },
    }
    infra = bt.Infrastructure("bench", config, background=False)
    for name, breaker in infra.breakers.items():  # some traffic, so the numbers are not all 0
        for i in range(20):
            permit = breaker.try_acquire(critical=True)
            if i % 7 == 0 and name.endswith("op3"):
                permit.record_exception(ConnectionError())
            else:
                permit.record_success()
    app = bt.dashboard_app(infra)
    for _ in range(60):  # a full history
        frame = app.frame()
    health = best_ms(infra.health, N, ROUNDS)
    framed = best_ms(app.frame, N, ROUNDS)
    full = len(_dumps(frame))
    delta = len(_dumps(without_history(frame)))
    print(f"dashboard frame at {BREAKERS} breakers and {LIMITERS} limiters (best of {ROUNDS})")
    print(f"  infra.health()        {health:8.2f} ms CPU")
    print(f"  dashboard frame       {framed:8.2f} ms CPU  ({framed / health:.2f}x the report)")
    print(f"  at one frame a second {framed / 10:8.2f} % of one core")
    print(f"  first frame           {full / 1024:8.1f} KiB (with history)")
    print(f"  each later frame      {delta / 1024:8.1f} KiB")
    infra.close()


if __name__ == "__main__":
    main()
