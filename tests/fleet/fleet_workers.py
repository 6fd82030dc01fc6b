"""What each process of the multi-process fleet tests runs (imported by ``spawn`` children)."""

from __future__ import annotations

import time
from typing import Any

import buttress as bt
from buttress._fleet import RedisFleet


def worker(
    url: str,
    namespace: str,
    idx: int,
    plan: str,
    settings: dict[str, Any],
    interval: float,
    start: Any,
    stop: Any,
    results: Any,
    recover_at: Any = None,
) -> None:
    """Call a dependency every 5 ms through a fleet breaker until ``stop`` is set; report.

    ``plan``: ``fail`` (every call fails until the shared ``recover_at`` time, when set, is
    past), ``sick0`` (only process 0's calls fail), ``ok`` (every call works)."""
    fleet = RedisFleet(url, namespace=namespace, quorum=2, sync_interval=interval)
    b = bt.CircuitBreaker("dep", fleet=fleet, **settings)
    log: list[tuple[float, str, str]] = []
    b.subscribe(lambda _b, t: log.append((time.time(), t.to_state.value, t.reason)))
    out: dict[str, Any] = {
        "idx": idx,
        "ran": 0,
        "failed": 0,
        "refused": 0,
        "probes": [],
        "max_gap": 0.0,
        "disconnected_at": None,
        "reconnected_at": None,
        "error": None,
    }
    try:
        if start is not None:
            start.wait(timeout=120)
        out["started"] = time.time()
        last = time.monotonic()
        next_look = 0.0
        while not stop.is_set():
            t = time.time()
            failing = plan == "fail" or (plan == "sick0" and idx == 0)
            if failing and recover_at is not None and 0 < recover_at.value <= t:
                failing = False
            p = b.try_acquire()
            if p:
                out["ran"] += 1
                if p.probe:
                    out["probes"].append(t)
                if failing:
                    out["failed"] += 1
                    p.record_failure()
                else:
                    p.record_success()
            else:
                out["refused"] += 1
            if t >= next_look:
                next_look = t + 0.05
                f = b.snapshot().fleet
                assert f is not None
                if not f.connected and f.syncs and out["disconnected_at"] is None:
                    out["disconnected_at"] = t
                if f.connected and out["disconnected_at"] and out["reconnected_at"] is None:
                    out["reconnected_at"] = t
            time.sleep(0.005)  # real-time: the pace of a service's calls
            now = time.monotonic()
            out["max_gap"] = max(out["max_gap"], now - last)
            last = now
        out["final_state"] = b.state.value
        f = b.snapshot().fleet
        out["override"] = None if f is None or f.override is None else f.override.by
        out["syncs"] = None if f is None else f.syncs
    except Exception as exc:  # reported, not lost in a child
        out["error"] = repr(exc)
    finally:
        fleet.close()
        out["log"] = log
        results.put(out)
