"""FIFO waiting for room: the queues ``acquire`` and ``acquire_async`` wait in.

A waiter queues on the storage key of the scope that holds it up longest (``user:u1`` when the
user's own limit is spent, ``global`` when the shared one is), at its place by arrival. One rule
keeps the order: **a waiter asks the backend only when no earlier waiter is queued on any of its
keys**. One that finds an earlier waiter on another of its keys moves to that key's queue (the
one whose head arrived first), behind it; one refused again moves to the queue of the scope that
refused it, at its place by arrival. Newcomers are the latest arrivals: ``try_acquire`` on a
key with a queue is refused, and ``acquire`` queues. So nobody takes room an earlier waiter
queued for, on any scope: a large cost is served in its turn, not starved by a stream of small
ones, and a caller queued on its own key cannot slip past earlier waiters on a shared one.

A waiter is in one queue at a time, and never at the head of one while it waits for another,
so a waiter held up by a long limit of its own (a user's hourly quota) does not hold the
shared scopes' queues meanwhile. Each waiter waits only for earlier ones: the earliest is never
held up by the queues, so every waiter gets its turn and nothing deadlocks.

Queues are per limiter and guarded by their lock; sync waiters (threads) and async waiters
(tasks) share them. A head free to ask sleeps until its expected room on the limiter's clock
(``clock.sleep`` / ``clock.asleep``), so a :class:`~buttress.ManualClock` makes waiting instant
in tests; the others wait on an event or a future until they become a head.

The waiting itself is written once, as a generator (:meth:`WaitQueues.plan`) that yields what
to do next (decide, sleep, wait for its turn) and receives decisions; ``acquire`` and
``acquire_async`` are two small drivers that do it with blocking or awaiting calls.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import math
import threading
from collections.abc import Callable, Generator, Sequence
from typing import TypeAlias

from .._errors import RateLimitExceeded
from .._fork import fork_safe_lock
from ._algorithms import EPSILON
from ._decision import Decision, Frame, exceeded

__all__ = ["DECIDE", "SLEEP", "TURN", "Step", "WaitQueues", "Waiter"]

# What the waiting plan asks its driver to do: decide (and send the decision back), sleep for
# the given seconds, or wait (at most the given seconds, None: no bound) until the waiter is woken.
DECIDE, SLEEP, TURN = 0, 1, 2
Step: TypeAlias = tuple[int, "Waiter | None", float | None]


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Waiter:
    """One caller waiting in ``acquire``: where it queues, and how to wake it."""

    __slots__ = ("_event", "_future", "_loop", "queue_key", "ready_at", "seq")

    def __init__(self, seq: int, loop: asyncio.AbstractEventLoop | None) -> None:
        self.seq = seq  # arrival order
        self.queue_key: str | None = None
        self.ready_at: float | None = None  # when it expects room (monotonic clock time)
        self._loop = loop
        self._event = threading.Event() if loop is None else None
        self._future: asyncio.Future[None] | None = None

    def arm(self) -> None:
        """Prepare for one wait (queues' lock held), so a wake that follows is never lost."""
        if self._event is not None:
            self._event.clear()
        else:
            assert self._loop is not None
            self._future = self._loop.create_future()

    def wake(self) -> None:
        """Let the waiter try again (queues' lock held). Safe from any thread."""
        if self._event is not None:
            self._event.set()
            return
        future = self._future
        if future is not None and self._loop is not None:
            # A closed loop raises RuntimeError: nobody is waiting there any more.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(_resolve, future)

    def wait(self, timeout: float | None) -> None:
        """Block until woken (a thread) or ``timeout`` seconds pass."""
        assert self._event is not None
        self._event.wait(timeout)

    async def wait_async(self, timeout: float | None) -> None:
        """Await until woken or ``timeout`` seconds pass; cancellation propagates."""
        future = self._future
        if future is not None:
            await asyncio.wait((future,), timeout=timeout)

    def __repr__(self) -> str:
        return f"<Waiter seq={self.seq} queue={self.queue_key!r}>"


class WaitQueues:
    """The queues of one limiter, keyed by storage key.

    ``queues`` may be read without the lock (an empty dict: nobody waits); everything else
    happens under ``lock``, which is never held over I/O or a wait.
    """

    __slots__ = ("_frame", "_monotonic", "_seq", "lock", "queues")

    def __init__(
        self, monotonic: Callable[[], float], frame: Callable[[Sequence[str]], Frame]
    ) -> None:
        self.queues: dict[str, list[Waiter]] = {}
        self.lock = fork_safe_lock()
        self._seq = itertools.count()
        self._monotonic = monotonic  # the limiter's clock
        self._frame = frame  # the scopes deciding some keys as they stand now (ids' limits)

    def plan(
        self,
        keys: Sequence[str],
        deadline: float | None,
        loop: asyncio.AbstractEventLoop | None,
        first: Decision,
    ) -> Generator[Step, Decision | None, Decision]:
        """The waiting logic, for both drivers: yields steps, receives decisions.

        ``first`` is the refusal that started the wait; ``deadline`` is on the monotonic clock.
        A refused waiter queues on the key of the scope that refused it for longest; it asks
        again only when no earlier waiter is queued on any of its keys: after sleeping for its
        ``retry_after``, or at once when woken because its turn came.
        """
        now = self._monotonic
        waiter = self.new_waiter(loop)
        last: Decision = first
        decision: Decision | None = first
        try:
            while True:
                if decision is None:
                    with self.lock:
                        held = self.held_up(waiter, keys)
                        if held:
                            waiter.arm()
                    if held:
                        left = None if deadline is None else deadline - now()
                        if left is not None and left <= 0.0:
                            raise self._timed_out(keys, waiter, last)
                        yield (TURN, waiter, left)
                        continue
                    decision = yield (DECIDE, None, None)
                    assert decision is not None
                if decision.allowed:
                    return decision
                last, decision = decision, None
                wait = last.retry_after
                if wait == math.inf or (deadline is not None and now() + wait > deadline + EPSILON):
                    raise exceeded(last)
                with self.lock:
                    self.join(waiter, keys[last.index])
                    waiter.ready_at = now() + wait
                    held = self.held_up(waiter, keys)
                if not held:
                    yield (SLEEP, None, wait)
        finally:
            with self.lock:
                self.leave(waiter)

    def _timed_out(self, keys: Sequence[str], waiter: Waiter, last: Decision) -> RateLimitExceeded:
        """A waiter behind others ran out of time: name the scope it queued for."""
        queue_key = waiter.queue_key
        with self.lock:
            queue = self.queues.get(queue_key) if queue_key is not None else None
            ready_at = queue[0].ready_at if queue else None
        index = keys.index(queue_key) if queue_key in keys else last.index
        retry = last.retry_after
        if ready_at is not None:
            retry = max(retry, ready_at - self._monotonic())
        limit = self._frame(keys).algorithms[index].limit
        return exceeded(last, scope=index, limit=limit, retry_after=retry)

    def ahead(self, keys: Sequence[str], cost: float) -> tuple[tuple[int, float], ...] | None:
        """``(scope index, wait)`` for each of ``keys`` with callers queued on it, else None:
        why a request that found them must wait its turn (``try_acquire`` refuses it).

        Each wait is at least its queue's head's own, and never less than one unit's worth of
        time in that scope.
        """
        with self.lock:
            heads = self.heads(keys)
        if not heads:
            return None
        now = self._monotonic()
        algorithms = self._frame(keys).algorithms
        forced = []
        for index, head in heads:
            algorithm = algorithms[index]
            ready_at = head.ready_at
            wait = ready_at - now if ready_at is not None else 0.0
            forced.append((index, max(wait, algorithm.window / algorithm.limit * cost)))
        return tuple(forced)

    def new_waiter(self, loop: asyncio.AbstractEventLoop | None) -> Waiter:
        return Waiter(next(self._seq), loop)

    def heads(self, keys: Sequence[str]) -> list[tuple[int, Waiter]]:
        """``(position in keys, head)`` for each of ``keys`` that has a queue."""
        queues = self.queues
        return [(i, queues[key][0]) for i, key in enumerate(keys) if key in queues]

    def held_up(self, waiter: Waiter, keys: Sequence[str]) -> bool:
        """Whether an earlier waiter is queued on one of ``keys`` (all of ``waiter``'s keys).

        If one is ahead of it in its own queue, ``waiter`` stays there; otherwise it moves
        behind the earliest head among the other queues, to be woken when its turn comes.
        """
        queues = self.queues
        own = waiter.queue_key
        if own is not None and queues[own][0] is not waiter:
            return True
        earliest = waiter.seq
        behind: str | None = None
        for key in keys:
            queue = queues.get(key)
            if queue and queue[0].seq < earliest:
                earliest, behind = queue[0].seq, key
        if behind is None:
            return False
        self.join(waiter, behind)
        return True

    def join(self, waiter: Waiter, key: str) -> None:
        """Queue ``waiter`` on ``key`` at its place by arrival (moving it if queued elsewhere)."""
        if waiter.queue_key == key:
            return
        self.leave(waiter)
        queue = self.queues.setdefault(key, [])
        bisect.insort(queue, waiter, key=_seq_of)
        waiter.queue_key = key

    def leave(self, waiter: Waiter) -> None:
        """Take ``waiter`` out of its queue; wake whoever becomes the head."""
        key = waiter.queue_key
        if key is None:
            return
        waiter.queue_key = None
        queue = self.queues[key]
        was_head = queue[0] is waiter
        queue.remove(waiter)
        if not queue:
            del self.queues[key]
        elif was_head:
            queue[0].wake()

    def __len__(self) -> int:
        with self.lock:
            return sum(len(q) for q in self.queues.values())


def _seq_of(waiter: Waiter) -> int:
    return waiter.seq
