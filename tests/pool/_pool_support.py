"""Fakes and barriers shared by the pool tests (never sleeps: barriers are scheduler jobs)."""

from __future__ import annotations

import asyncio
import itertools
import threading
from typing import Any

_pool_numbers = itertools.count(1)


def unique_pool_name() -> str:
    """A name no other pool in the run has, so a test's event filter sees only its own pool."""
    return f"test-pool-{next(_pool_numbers)}"


class Resource:
    """A stand-in connection: numbered, closable, breakable."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.closed = False
        self.broken = False
        self.in_use = False

    def close(self) -> None:
        self.closed = True

    def ping(self) -> bool:
        if self.closed or self.broken:
            raise ConnectionError(f"resource {self.number} is gone")
        return True

    def __repr__(self) -> str:
        return f"<Resource {self.number}{' closed' if self.closed else ''}>"


class Factory:
    """``create=``: makes Resources 1, 2, 3, ...; ``fail`` makes the next connects raise."""

    def __init__(self) -> None:
        self.made: list[Resource] = []
        self.fail = 0
        self._numbers = itertools.count(1)

    def __call__(self) -> Resource:
        if self.fail:
            self.fail -= 1
            raise ConnectionRefusedError("server unavailable")
        r = Resource(next(self._numbers))
        self.made.append(r)
        return r

    @property
    def open(self) -> list[Resource]:
        return [r for r in self.made if not r.closed]


def _busy(pool: Any) -> bool:
    state = pool._state
    connect_due = state.connecting and state.connect_not_before <= pool.clock.monotonic()
    return bool(connect_due or pool._closing or pool._dropped_leases)


def settle(pool: Any) -> None:
    """Return once the background work the pool has booked so far has run (connects, closes).

    A barrier job goes on the scheduler behind that work, and the blocking jobs it handed to
    workers are waited for; we wait for them, never for time.
    """
    for _ in range(100):
        done = threading.Event()
        pool._scheduler.call_later(0.0, done.set)
        assert done.wait(30.0), "the scheduler did not run the barrier"
        assert pool._scheduler._join_blocking(30.0), "a blocking job did not end"
        if not _busy(pool):
            return
    raise AssertionError(f"background work did not settle: {pool.snapshot()}")


async def asettle(pool: Any) -> None:
    """The asyncio twin of :func:`settle`."""
    for _ in range(100):
        done = asyncio.Event()
        pool._scheduler.call_later(0.0, done.set)
        await asyncio.wait_for(done.wait(), 30.0)
        await asyncio.wait_for(pool._scheduler._join_blocking(), 30.0)
        if not _busy(pool):
            return
    raise AssertionError(f"background work did not settle: {pool.snapshot()}")
