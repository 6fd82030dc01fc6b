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

Queues are per limiter and guarded by the limiter's lock; sync waiters (threads) and async
waiters (tasks) share them. A head free to ask sleeps until its expected room on the limiter's
clock (``clock.sleep`` / ``clock.asleep``), so a :class:`~buttress.ManualClock` makes waiting
instant in tests; the others wait on an event or a future until they become a head.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import threading
from collections.abc import Sequence

__all__ = ["WaitQueues", "Waiter"]


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
        """Prepare for one wait (limiter lock held), so a wake that follows is never lost."""
        if self._event is not None:
            self._event.clear()
        else:
            assert self._loop is not None
            self._future = self._loop.create_future()

    def wake(self) -> None:
        """Let the waiter try again (limiter lock held). Safe from any thread."""
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
    """The queues of one limiter, keyed by storage key; callers hold the limiter's lock."""

    __slots__ = ("_seq", "queues")

    def __init__(self) -> None:
        self.queues: dict[str, list[Waiter]] = {}
        self._seq = itertools.count()

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
        return sum(len(q) for q in self.queues.values())


def _seq_of(waiter: Waiter) -> int:
    return waiter.seq
