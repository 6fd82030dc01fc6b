"""Who enters a bulkhead, who waits, and who is handed a freed place. Pure: ``now`` is passed
in, nothing here waits, locks or reads a clock; the shell (``_bulkhead.py``) holds its lock
around each call and wakes the waiters this core hands places to.

Rule 1: no barging. While anyone waits, a newcomer queues behind them (or is refused), even
if a place is free at that instant: a place that frees goes to the first live waiter (FIFO),
handed over under the lock, so the woken waiter cannot lose it to a newcomer.

Rule 2: a place is never lost. Every place taken is given back exactly once: by the caller
that took it (``leave``), or, for a place handed to a waiter that gave up at the same moment
(cancelled), by ``abandon``, which hands it on. A waiter that timed out as it was handed a
place keeps it: it was served, late by a hair.

Rule 3: the limit is read at each decision. An adaptive limit (``AdaptiveConcurrency``) moves
as calls complete; when it falls below the places in use, no one enters until enough leave;
when it rises, waiters are served at once.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Final, Protocol

__all__ = ["FULL", "GONE", "SERVED", "WAITING", "BulkheadState", "Limit", "Waiter"]

WAITING: Final = 0
SERVED: Final = 1  # handed a place (which it now holds)
GONE: Final = 2  # left the queue without a place (timed out or cancelled)

FULL: Final = "full"  # refused at once
TIMEOUT: Final = "timeout"  # waited, and no place came in time

# How much one completed call moves the estimate of the service time (an exponentially
# weighted mean): about the last twenty calls, so a retry_after follows a slowdown quickly.
SERVICE_TIME_WEIGHT: Final = 0.05


class Limit(Protocol):
    """What a bulkhead needs of an adaptive limit (:class:`~buttress.AdaptiveConcurrency`)."""

    @property
    def limit(self) -> int: ...

    def record(self, *, now: float, rtt: float, inflight: int, dropped: bool) -> int: ...


class Waiter:
    """One queued caller. ``cell`` is the shell's wake-up (a thread's lock, a task's future)."""

    __slots__ = ("cell", "since", "state")

    def __init__(self, cell: Any, since: float) -> None:
        self.cell = cell
        self.since = since
        self.state = WAITING


class BulkheadState:
    """The places of one bulkhead and its queue.

    ``limit`` is an int, or an adaptive :class:`Limit` read at each decision. ``max_waiting``
    callers may queue (0: a full bulkhead refuses at once).
    """

    __slots__ = (
        "_adaptive",
        "_static",
        "admitted",
        "handoffs",
        "in_use",
        "max_waiting",
        "n_waiting",
        "peak_in_use",
        "rejected",
        "service_time",
        "timed_out",
        "waited",
        "waiters",
    )

    def __init__(self, limit: int | Limit, max_waiting: int) -> None:
        self._static = limit if isinstance(limit, int) else 0
        self._adaptive = None if isinstance(limit, int) else limit
        self.max_waiting = max_waiting
        self.in_use = 0
        self.peak_in_use = 0
        self.waiters: deque[Waiter] = deque()
        self.n_waiting = 0  # live waiters (the deque also holds ones that left)
        # Served waiters whose shell must wake them (taken by the shell after each call).
        self.handoffs: list[Waiter] = []
        self.admitted = 0  # calls that entered, at once or after waiting
        self.waited = 0  # of those, the ones that waited
        self.rejected = 0  # refused at once
        self.timed_out = 0  # waited and gave up on time
        self.service_time: float | None = None  # estimate, seconds

    @property
    def limit(self) -> int:
        adaptive = self._adaptive
        return self._static if adaptive is None else adaptive.limit

    # -- entering ------------------------------------------------------------------------------

    def enter(self) -> bool:
        """Take a place if one is free and no one waits (Rule 1)."""
        adaptive = self._adaptive
        in_use = self.in_use
        if self.n_waiting or in_use >= (self._static if adaptive is None else adaptive.limit):
            return False
        self.in_use = in_use = in_use + 1
        self.admitted += 1
        if in_use > self.peak_in_use:
            self.peak_in_use = in_use
        return True

    def queue(self, waiter: Waiter) -> bool:
        """After a failed :meth:`enter`: queue ``waiter``, or False when the queue is full
        (the shell then refuses: :data:`FULL`)."""
        if self.n_waiting >= self.max_waiting:
            self.rejected += 1
            return False
        self.waiters.append(waiter)
        self.n_waiting += 1
        return True

    def refuse(self) -> None:
        """Count a refusal made without queueing (a ``try_enter`` that found no place)."""
        self.rejected += 1

    def abandon(self, waiter: Waiter, *, timed_out: bool) -> bool:
        """``waiter`` stopped waiting (its time ran out, or it was cancelled). True when it
        holds a place after all: one handed over as it timed out, which it keeps (Rule 2). A
        cancelled waiter's place goes to the next waiter."""
        if waiter.state == WAITING:
            waiter.state = GONE
            self.n_waiting -= 1
            if timed_out:
                self.timed_out += 1
            self._drop_gone()
            return False
        if waiter.state == SERVED and not timed_out:
            waiter.state = GONE
            self._give_back()
            return False
        return waiter.state == SERVED

    # -- leaving -------------------------------------------------------------------------------

    def leave(self, now: float, started: float, inflight: int, outcome: str) -> None:
        """A call that held a place ended. ``outcome``: ``"success"`` and ``"dropped"`` (timed
        out, or refused further on) are samples for an adaptive limit and the service-time
        estimate; ``"ignored"`` (cancelled, failed fast) is neither."""
        if outcome != "ignored":
            rtt = max(0.0, now - started)
            if outcome == "success":
                estimate = self.service_time
                self.service_time = (
                    rtt if estimate is None else estimate + SERVICE_TIME_WEIGHT * (rtt - estimate)
                )
            if self._adaptive is not None:
                self._adaptive.record(
                    now=now, rtt=rtt, inflight=inflight, dropped=outcome == "dropped"
                )
        self.in_use -= 1
        if self.waiters:
            self.serve()

    def retry_after(self) -> float | None:
        """When a place may be free for a caller refused now: the estimated service time,
        times the rounds the queue ahead of it needs. None before any call has completed."""
        estimate = self.service_time
        if estimate is None:
            return None
        rounds = math.ceil((self.n_waiting + 1) / max(1, self.limit))
        return estimate * rounds

    # -- internals -----------------------------------------------------------------------------

    def _take(self) -> None:
        self.in_use += 1
        self.admitted += 1
        if self.in_use > self.peak_in_use:
            self.peak_in_use = self.in_use

    def _give_back(self) -> None:
        self.in_use -= 1
        self.serve()

    def serve(self) -> None:
        """Hand free places to the first live waiters (Rule 1); after a place is given back or
        an adaptive limit rose."""
        waiters = self.waiters
        while waiters and self.in_use < self.limit:
            waiter = waiters.popleft()
            if waiter.state != WAITING:
                continue
            self.n_waiting -= 1
            waiter.state = SERVED
            self.waited += 1
            self._take()
            self.handoffs.append(waiter)

    def _drop_gone(self) -> None:
        # Waiters that left are skipped when reached; the ones at the head are dropped now,
        # so a queue of timed-out callers does not grow while nothing is given back.
        waiters = self.waiters
        while waiters and waiters[0].state != WAITING:
            waiters.popleft()
        # Ones that left from further back are dropped once they outnumber the live ones.
        if len(waiters) > 2 * self.n_waiting + 16:
            self.waiters = deque(w for w in waiters if w.state == WAITING)
