"""Background work that blocks holds up nothing else: a database host that never answers
stalls neither another pool, nor memory sampling, nor ``close()``, and its own breaker opens.

Real time is unavoidable here (a connect hangs in real time); each wait is bounded and marked.
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import buttress as bt
from buttress import MemoryReading, events


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A loopback port that takes connections (the kernel completes them) and never answers:
    a client's connect goes through, then waits for a reply for ever. Closed on exit, which
    ends the connects still waiting."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield int(server.getsockname()[1])


class CountingProbe:
    def __init__(self, target: int) -> None:
        self.calls = 0
        self.target = target
        self.reached = threading.Event()

    def __call__(self) -> MemoryReading:
        self.calls += 1
        if self.calls >= self.target:
            self.reached.set()
        return MemoryReading(source="process", limit=1000, used=100, rss=100)


class ConnectEvents:
    """Pool connect events, as they come (from the workers' threads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ok: dict[str, int] = {}
        self.failed: dict[str, list[str]] = {}
        self.good_filled = threading.Event()
        self.hung_failed = threading.Event()

    def __call__(self, name: Any, measurements: Any, metadata: Any) -> None:
        pool = metadata["pool"]
        with self.lock:
            if metadata["ok"]:
                self.ok[pool] = self.ok.get(pool, 0) + 1
                if pool == "good" and self.ok[pool] >= 2:
                    self.good_filled.set()
            else:
                self.failed.setdefault(pool, []).append(metadata["error"])
                if pool == "hung":
                    self.hung_failed.set()


def test_a_connect_that_hangs_stalls_nothing_else(tmp_path: Any) -> None:
    psycopg = pytest.importorskip("psycopg")
    seen = ConnectEvents()
    probe = CountingProbe(target=5)
    with silent_server() as port:
        cfg = {
            "connection_pools": {
                # First: its connect is the scheduler's first job.
                "hung": {
                    "min_size": 1,
                    "max_size": 1,
                    "connect_timeout": 0.2,
                    "checkout_timeout": 0.5,
                    "connect_backoff": 0.05,
                    "connect_backoff_max": 0.1,
                },
                "good": {"min_size": 2, "max_size": 2},
            },
            "circuit_breakers": {
                "hung": {"failure_threshold": 3, "degradation_threshold": None},
            },
            "memory_manager": {"check_interval": 0.02},
        }
        # No connect_timeout of psycopg's own: libpq would wait for the reply for ever.
        dsn = f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
        db = tmp_path / "good.db"
        infra = bt.Infrastructure(
            "blocking",
            cfg,
            env={},
            pools={
                "hung": lambda: psycopg.connect(dsn),
                "good": lambda: sqlite3.connect(db, check_same_thread=False),
            },
            memory_probe=probe,
        )
        events.attach("test.blocking", [("buttress", "pool", "connect")], seen)
        try:
            infra.start()
            # real-time: each wait below is bounded; all of them together take about 1 s.
            assert seen.good_filled.wait(2.0), f"the good pool did not fill: {seen.ok}"
            assert probe.reached.wait(2.0), f"memory sampling stalled at {probe.calls}"
            assert seen.hung_failed.wait(2.0), "the hung connect was never given up"
            assert "took longer than 0.2s" in seen.failed["hung"][0]
            assert infra.call("good", lambda conn: conn.execute("SELECT 1").fetchone()) == (1,)

            # Checkouts that time out while connects fail are failures: the breaker opens.
            errors: list[BaseException] = []

            def call_hung() -> None:
                try:
                    infra.call("hung", lambda conn: None)
                except bt.RejectedError as exc:
                    errors.append(exc)

            callers = [threading.Thread(target=call_hung) for _ in range(3)]
            for t in callers:
                t.start()
            for t in callers:
                t.join(5.0)
            assert [type(e) for e in errors] == [bt.PoolTimeoutError] * 3, errors
            assert all(isinstance(e, bt.PoolTimeoutError) and e.connect_error for e in errors)
            assert infra.breakers["hung"].state == "open"
            with pytest.raises(bt.CircuitOpenError):
                infra.call("hung", lambda conn: None)
        finally:
            events.detach("test.blocking")
            started = time.monotonic()
            infra.close()
            closing = time.monotonic() - started
        assert closing < 1.0, f"close() took {closing:.2f}s"
