"""Concurrent decisions sent to Redis together: one script call for all that queued.

A decision asked for while none is on the wire goes at once, alone: a lone caller waits for
nothing more than its own round trip. Decisions asked for while a call is on the wire queue
up, and when it answers they go together, as one call of ``decide.lua``, which decides them
in the order they were asked, each all-or-nothing across its scopes, exactly as if each were
sent alone. A batch holds at most ``_wire.MAX_BATCH`` decisions; on Redis Cluster, only
decisions whose keys share a slot (every key of one limiter does); with the caller's clock
(tests), only decisions made at the same time.

:class:`AsyncBatcher` does it for one event loop's client: the calls are made by a task of
their own, so a caller who is cancelled takes nothing with them. A caller cancelled before
its decision went out is dropped from the queue (nothing is charged); one cancelled after is
answered all the same, and an admitted decision is given back at once (``settle``).
:class:`ThreadBatcher` does it for threads sharing the sync client: a thread queued behind a
call makes the next one, for everyone queued, and wakes them with their answers.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .._fork import call_in_forked_child, fork_safe_lock
from ._backend import Outcome
from ._wire import MAX_BATCH, MAX_BATCH_KEYS, Decided, Pending, Wire, answers, fits

__all__ = ["AsyncBatcher", "ThreadBatcher"]

# (pending, its answer) for an answer nobody waits for any more: give an admitted one back
Settle = Callable[[Pending, Decided], None]


def take(queue: deque[Any], *, cluster: bool, caller_time: bool) -> list[Any]:
    """The next batch from ``queue`` (entries ``(pending, ...)``), in order: as many as fit,
    of one slot on a cluster, of one time with the caller's clock. The rest stay queued, in
    order."""
    first = queue.popleft()
    batch = [first]
    keys = len(first[0].keys)
    if not cluster and not caller_time:  # any decision may join: take them as they come
        while queue and len(batch) < MAX_BATCH:
            more = len(queue[0][0].keys)
            if keys + more > MAX_BATCH_KEYS:
                break
            batch.append(queue.popleft())
            keys += more
        return batch
    tag = _tag(first[0].keys[0]) if cluster else None
    skipped: list[Any] = []
    while queue:
        entry = queue[0]
        p: Pending = entry[0]
        if not fits(len(batch), keys, len(p.keys)):
            break
        queue.popleft()
        if (tag is not None and _tag(p.keys[0]) != tag) or (caller_time and p.now != first[0].now):
            skipped.append(entry)  # another slot, another time: the next batch
            continue
        batch.append(entry)
        keys += len(p.keys)
    queue.extendleft(reversed(skipped))
    return batch


def _tag(storage_key: str) -> str:
    """The part of a storage key that names its slot: the limiter's ``namespace:name``."""
    first = storage_key.find(":")
    second = storage_key.find(":", first + 1) if first >= 0 else -1
    return storage_key if second < 0 else storage_key[:second]


def request_of(wire: Wire, batch: Sequence[Pending]) -> tuple[list[bytes], bytes]:
    """The call for ``batch``: alone, the cached one-decision request; else a batch."""
    if len(batch) == 1:
        p = batch[0]
        return wire.keys(p.keys), wire.decide(p.algorithms, p.cost, p.now, p.commit)
    return wire.batch(batch)


class AsyncBatcher:
    """Batches one event loop's decisions on one asyncio client (see the module docstring).

    ``call(keys, request, writes)`` makes the script call (a coroutine; ``writes`` false when
    every decision only reads); ``failure`` turns a Redis error into the
    :class:`~buttress.BackendError` each caller raises; ``settle`` gives back an admitted
    decision whose caller was cancelled; ``hold`` keeps the call under way referenced (and
    awaitable) while a caller who left has a decision in it.
    """

    __slots__ = (
        "_call",
        "_caller_time",
        "_cluster",
        "_errors",
        "_failure",
        "_hold",
        "_queue",
        "_sender",
        "_settle",
        "_wire",
    )

    def __init__(
        self,
        wire: Wire,
        call: Callable[[list[bytes], bytes, bool], Awaitable[bytes]],
        *,
        errors: tuple[type[BaseException], ...],
        failure: Callable[[BaseException, Sequence[str]], BaseException],
        settle: Settle,
        hold: Callable[[asyncio.Task[None]], None],
        cluster: bool,
        caller_time: bool,
    ) -> None:
        self._wire = wire
        self._call = call
        self._errors = errors
        self._failure = failure
        self._settle = settle
        self._hold = hold
        self._cluster = cluster
        self._caller_time = caller_time
        self._queue: deque[tuple[Pending, asyncio.Future[Decided]]] = deque()
        self._sender: asyncio.Task[None] | None = None

    async def decide(self, pending: Pending) -> Outcome:
        answer: asyncio.Future[Decided] = asyncio.get_running_loop().create_future()
        self._queue.append((pending, answer))
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send())
        try:
            decided = await answer
        except asyncio.CancelledError:
            if answer.done() and not answer.cancelled():
                # Answered, but cancelled before this task resumed: the answer is nobody's.
                self._settle(pending, answer.result())
            elif self._sender is not None:
                # Its decision may be on the wire: the call is held until it answers (and
                # whatever it charged is given back), as the backend's other refunds are.
                self._hold(self._sender)
            raise
        if decided.error is not None:
            raise decided.error
        assert decided.outcome is not None
        return decided.outcome

    async def _send(self) -> None:
        """Send what is queued, batch after batch, until nothing is (then end)."""
        queue = self._queue
        try:
            while queue:
                batch = take(queue, cluster=self._cluster, caller_time=self._caller_time)
                batch = [entry for entry in batch if not entry[1].cancelled()]
                if batch:
                    await self._one_call(batch)
        finally:
            self._sender = None
            if queue:  # the loop is shutting down: nobody will send these
                while queue:
                    _, answer = queue.popleft()
                    answer.cancel()

    async def _one_call(self, batch: list[tuple[Pending, asyncio.Future[Decided]]]) -> None:
        pending = [p for p, _ in batch]
        keys, request = request_of(self._wire, pending)
        try:
            reply = await self._call(keys, request, any(p.commit for p in pending))
            decided = answers(reply, [(p.keys, p.commit) for p in pending])
        except self._errors as exc:
            for p, answer in batch:
                if not answer.done():
                    answer.set_exception(self._failure(exc, p.keys))
            return
        except BaseException:
            for _, answer in batch:  # cancelled with the loop: the outcome is never known
                answer.cancel()
            raise
        for (p, answer), d in zip(batch, decided, strict=True):
            if answer.cancelled():
                self._settle(p, d)  # its caller left after it went out
            else:
                answer.set_result(d)


class ThreadBatcher:
    """Batches threads' decisions on one backend (see the module docstring).

    ``run`` decides a batch in one call (Redis: one script call; SQLite: one transaction) and
    returns each decision's answer in order; an exception it raises is every decision's.

    A thread that finds no call under way makes its own at once. Threads that find one
    queue; when it answers, the first of them makes the next call, for every decision queued
    (its own first), hands each thread its answer and passes the lead to the first still
    queued. No thread makes more than one call for others, and none waits on a timer.
    """

    __slots__ = ("__weakref__", "_busy", "_caller_time", "_cluster", "_lock", "_queue", "_run")

    def __init__(
        self,
        run: Callable[[list[Pending]], Sequence[Decided]],
        *,
        cluster: bool = False,
        caller_time: bool = False,
    ) -> None:
        self._run = run
        self._cluster = cluster
        self._caller_time = caller_time
        self._lock = fork_safe_lock()
        self._queue: deque[tuple[Pending, _Slot]] = deque()
        self._busy = False
        call_in_forked_child(self._after_fork)

    def _after_fork(self) -> None:
        """A forked child has none of its parent's threads: nothing is under way there."""
        self._queue = deque()
        self._busy = False

    def decide(self, pending: Pending) -> Decided:
        """The answer to ``pending``; the call's error is raised as it is (in every thread
        whose decision was in that call)."""
        with self._lock:
            lead = not self._busy
            if lead:
                self._busy = True  # nothing is queued: this decision goes alone, now
            else:
                slot = _Slot()
                self._queue.append((pending, slot))
        if lead:
            try:
                return self._answers([pending])[0].take()
            finally:
                self._pass_lead()
        slot.wait()
        if slot.result is _LEAD:  # its decision heads the queue: it makes the next call
            with self._lock:
                batch = take(self._queue, cluster=self._cluster, caller_time=self._caller_time)
            try:
                answered = self._answers([p for p, _ in batch])
                for (_, queued), answer in zip(batch, answered, strict=True):
                    queued.give(answer)
            finally:
                self._pass_lead()
        return slot.take()

    def _answers(self, pending: list[Pending]) -> list[_Slot]:
        """One call for ``pending``: each decision's answer (or the call's error) in a slot."""
        try:
            results: Sequence[Decided | BaseException] = self._run(pending)
        except BaseException as exc:  # every decision of the call failed alike
            results = [exc] * len(pending)
        return [_Slot.holding(result) for result in results]

    def _pass_lead(self) -> None:
        """The call is answered: the first thread still queued makes the next, or none is."""
        with self._lock:
            successor = self._queue[0][1] if self._queue else None
            if successor is None:
                self._busy = False
        if successor is not None:
            successor.give(_LEAD)


_LEAD: Any = object()  # a slot's "answer" that makes its thread make the next call


class _Slot:
    """Where a thread's answer (or the lead) is left for it."""

    __slots__ = ("_ready", "result")

    def __init__(self) -> None:
        self._ready = threading.Lock()
        self._ready.acquire()
        self.result: Decided | BaseException | None = None

    @classmethod
    def holding(cls, result: Decided | BaseException) -> _Slot:
        """A slot whose answer is already there (nobody waits on it)."""
        slot = cls.__new__(cls)
        slot.result = result
        return slot

    def give(self, result: Decided | BaseException | _Slot) -> None:
        """Leave ``result`` (or another slot's) and wake the thread waiting on this one."""
        self.result = result.result if isinstance(result, _Slot) else result
        self._ready.release()

    def wait(self) -> None:
        self._ready.acquire()

    def take(self) -> Decided:
        result = self.result
        if isinstance(result, BaseException):
            raise result
        assert result is not None
        assert result is not _LEAD
        return result
