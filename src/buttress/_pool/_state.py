"""The pool's bookkeeping: pure, no I/O, no clock, no waiting.

Theory of operation
-------------------
A pool holds *members* (each wraps one resource: a connection, a client, a socket). A member is
``IDLE`` (in the idle container), ``IN_USE`` (lent to one borrower), ``CHECKING`` (held by
housekeeping for an active health check) or ``CLOSED`` (retired; its resource is being or has
been closed). This module decides; the shells (``_pool_async.py`` and the ``_pool.py`` generated
from it) connect, close, check, wait and wake, and report back.

Rule 1: no barging. A member that becomes free goes to the first live waiter (FIFO), through
the waiter's own cell; it goes back to the idle container only when nobody waits. A checkout
takes an idle member only when nobody waits.

Rule 2: effects are queued, not done. What the shell must do after a decision (wake served
waiters, close resources, run health checks, start a connect, emit events) accumulates in an
:class:`Effects` record, which the shell takes with :meth:`PoolState.take_effects` under its
lock and carries out after releasing it.

Rule 3: the lock. Every method runs under the shell's lock, except :meth:`try_checkout` and
:meth:`try_checkin`, the fast paths, which run without it. They use only operations that are
atomic under the GIL (one ``list``/``deque`` ``pop``, ``append`` or ``remove`` each) and touch
only the member they hand over, so a member is never handed out twice. They act only when
nobody waits and the strategy's container allows it (``lifo`` and ``fifo``); in every other
case they decline and the shell takes the locked path. Code under the lock that takes members
out of the idle container does so with those same atomic operations.

Rule 4: time is an argument. ``now`` is the shell's monotonic clock reading; every limit
(lifetime, idle time, overflow TTL, checks, leaks, connect backoff) is checked against it when
a member passes by (checkout, checkin) and in :meth:`maintain`, which also returns when it
next has work to do.

Rule 5: one connect at a time. The pool grows by one member per connect, started when members
are below ``min_size``, waiters outnumber connects in flight, or a checkout was refused for
``max_waiting`` (that is demand too); the next starts when it ends.
A borrower never connects: a member returned meanwhile serves the first waiter, and the new
member the next one (or goes idle).
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from .._errors import PoolClosedError, PoolTimeoutError
from .._redact import redact_text
from ._config import PoolConfig

IDLE: Final = 0
IN_USE: Final = 1
CHECKING: Final = 2
CLOSED: Final = 3

# try_checkin's answers.
CHECKED_IN: Final = 0  # done
NEEDS_LOCK: Final = 1  # not taken: call checkin() under the lock
NEEDS_SERVE: Final = 2  # put back, but a waiter (or close) arrived meanwhile: call serve()

# Waiter states.
WAITING: Final = 0
SERVED: Final = 1
SHUT_OUT: Final = 2  # the pool closed while it waited
GONE: Final = 3  # timed out or cancelled

_INF: Final = math.inf


class Member:
    """One pooled resource and what the pool knows about it."""

    __slots__ = (
        "acquired",
        "check_due",
        "created",
        "expires",
        "generation",
        "id",
        "idle_since",
        "last_ok",
        "leak_reported",
        "owner",
        "resource",
        "stack",
        "state",
        "uses",
    )

    def __init__(
        self, member_id: int, resource: Any, now: float, expires: float, generation: int
    ) -> None:
        self.id = member_id
        self.resource = resource
        self.created = now
        self.expires = expires
        self.generation = generation
        self.uses = 0  # checkouts so far
        self.state = IDLE
        self.idle_since = now
        self.last_ok = now  # when it last proved alive (connected, or passed a check)
        self.check_due = _INF
        # Set by the borrower's shell at checkout: who holds it (thread or task), since when,
        # and (with leak_timeout) the stack that took it.
        self.owner: Any = None
        self.acquired = now
        self.stack: Any = None
        self.leak_reported = False

    def __repr__(self) -> str:
        state = ("idle", "in_use", "checking", "closed")[self.state]
        return f"<Member {self.id} {state} uses={self.uses} gen={self.generation}>"


class Waiter:
    """A checkout in the queue. The shell puts its wake-up primitive in ``cell``."""

    __slots__ = ("cell", "member", "since", "state")

    def __init__(self, cell: Any = None) -> None:
        self.cell = cell
        self.member: Member | None = None
        self.since = 0.0
        self.state = WAITING


@dataclass(slots=True)
class Effects:
    """What the shell must do after a decision, outside its lock."""

    # Waiters served (``member`` set) or shut out by close (``member`` None): wake them.
    handoffs: list[Waiter] = field(default_factory=list)
    # Retired members: close their resources. ``(member, reason)``.
    close: list[tuple[Member, str]] = field(default_factory=list)
    # Idle members reserved for an active health check: check, then call check_done().
    check: list[Member] = field(default_factory=list)
    # Start one connect after this many seconds (None: no connect to start).
    connect_in: float | None = None
    # Events to emit: ``(kind, member, reason)``; kind is an event name's last part.
    notes: list[tuple[str, Member | None, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PoolSnapshot:
    """A pool's numbers at one instant. Counters run from the pool's creation."""

    name: str
    size: int  # open members (idle + in use + being checked)
    idle: int
    in_use: int
    checking: int
    overflow: int  # members above max_size
    overflow_in_use: int  # borrowers served beyond max_size
    waiting: int
    connecting: int  # connects in flight (0 or 1)
    generation: int
    min_size: int
    max_size: int
    max_overflow: int
    checkouts: int
    waited: int  # checkouts that had to queue
    timeouts: int
    rejected: int  # refused at once: max_waiting reached
    cancelled: int  # waits abandoned by cancellation
    wait_p50: float
    wait_p95: float
    wait_p99: float
    wait_max: float
    connects: int
    connect_errors: int
    connect_failures: int  # connects failed in a row up to now (0 once one succeeds)
    last_connect_error: str | None  # the last of those (its repr, passwords masked), while failing
    check_failures: int
    invalidations: int
    leaks: int
    evictions: dict[str, int]  # members retired, by reason
    closed: bool

    @property
    def errors(self) -> int:
        """Connect errors, failed health checks and broken members together."""
        return self.connect_errors + self.check_failures + self.invalidations

    @property
    def strategy_efficiency(self) -> float:
        """The share of checkouts the selection strategy served at once from an idle member,
        with no wait for a return or a connect (0-1; 1.0 before the first checkout)."""
        if not self.checkouts:
            return 1.0
        return max(0.0, (self.checkouts - self.waited) / self.checkouts)

    def to_dict(self) -> dict[str, Any]:
        d = {name: getattr(self, name) for name in self.__dataclass_fields__}
        d["evictions"] = dict(self.evictions)
        d["errors"] = self.errors
        d["strategy_efficiency"] = self.strategy_efficiency
        return d


class _WaitHistogram:
    """Wait times in log buckets (4 per doubling, from 1 µs): O(1) to record, ~19 % resolution."""

    __slots__ = ("buckets", "count", "max")

    _BASE = 1e-6
    _PER_DOUBLING = 4

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.max = 0.0

    def _index(self, wait: float) -> int:
        if wait <= self._BASE:
            return 0
        return 1 + int(self._PER_DOUBLING * math.log2(wait / self._BASE))

    def record(self, wait: float, sign: int = 1) -> None:
        i = self._index(wait)
        self.buckets[i] = self.buckets.get(i, 0) + sign
        self.count += sign
        if sign > 0 and wait > self.max:
            self.max = wait

    def quantile(self, q: float, zeros: int) -> float:
        """The ``q`` quantile over ``zeros`` zero waits plus the recorded ones (bucket top)."""
        total = zeros + self.count
        if total <= 0:
            return 0.0
        rank = q * total
        if rank <= zeros:
            return 0.0
        seen = zeros
        for i in sorted(self.buckets):
            seen += self.buckets[i]
            if seen >= rank:
                top = float(self._BASE * 2.0 ** (i / self._PER_DOUBLING))
                return min(top, self.max)
        return self.max


class _RoundRobin:
    """Idle members in creation order; hands out the next one after the last handed out."""

    __slots__ = ("cursor", "ids", "members")

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.members: list[Member] = []
        self.cursor = -1

    def push(self, m: Member) -> None:
        i = bisect.bisect_left(self.ids, m.id)
        self.ids.insert(i, m.id)
        self.members.insert(i, m)

    def pop(self) -> Member:
        if not self.ids:
            raise IndexError("pop from an empty pool")
        i = bisect.bisect_right(self.ids, self.cursor)
        if i == len(self.ids):
            i = 0
        del self.ids[i]
        m = self.members.pop(i)
        self.cursor = m.id
        return m

    def remove(self, m: Member) -> None:
        i = bisect.bisect_left(self.ids, m.id)
        if i == len(self.ids) or self.members[i] is not m:
            raise ValueError("member is not idle")
        del self.ids[i]
        del self.members[i]

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[Member]:
        return iter(tuple(self.members))


class _LeastUsed:
    """Idle members by fewest checkouts (ties: the oldest member first)."""

    __slots__ = ("heap",)

    def __init__(self) -> None:
        self.heap: list[tuple[int, int, Member]] = []

    def push(self, m: Member) -> None:
        heapq.heappush(self.heap, (m.uses, m.id, m))

    def pop(self) -> Member:
        if not self.heap:
            raise IndexError("pop from an empty pool")
        return heapq.heappop(self.heap)[2]

    def remove(self, m: Member) -> None:
        for i, entry in enumerate(self.heap):
            if entry[2] is m:
                self.heap[i] = self.heap[-1]
                self.heap.pop()
                heapq.heapify(self.heap)
                return
        raise ValueError("member is not idle")

    def __len__(self) -> int:
        return len(self.heap)

    def __iter__(self) -> Iterator[Member]:
        return iter([entry[2] for entry in self.heap])


class PoolState:
    """Members, waiters and counters of one pool, and every decision about them."""

    def __init__(self, config: PoolConfig, *, name: str = "pool", rng: random.Random) -> None:
        self.config = config
        self.name = name
        self.rng = rng
        self.members: dict[int, Member] = {}
        self.waiters: deque[Waiter] = deque()
        self.n_waiting = 0  # live waiters (the deque also holds gone ones until popped)
        self.stale: list[Member] = []  # popped by try_checkout but expired: retire under lock
        self.generation = 0
        self.closed = False
        self.opened = False
        self.connecting = False
        self.connect_generation = 0
        self.connect_failures = 0
        self.connect_not_before = -_INF
        self.last_connect_error: BaseException | None = None
        self._next_id = 1
        self._fx: Effects | None = None

        strategy = config.strategy
        self.idle: Any
        self._push: Callable[[Member], None]
        self._pop: Callable[[], Member]
        self._remove: Callable[[Member], None]
        if strategy == "lifo":
            stack: list[Member] = []
            self.idle, self._push, self._pop, self._remove = (
                stack,
                stack.append,
                stack.pop,
                stack.remove,
            )
        elif strategy == "fifo":
            queue: deque[Member] = deque()
            self.idle, self._push, self._pop, self._remove = (
                queue,
                queue.append,
                queue.popleft,
                queue.remove,
            )
        else:
            box = _RoundRobin() if strategy == "round_robin" else _LeastUsed()
            self.idle, self._push, self._pop, self._remove = box, box.push, box.pop, box.remove
        self.lockfree = strategy in ("lifo", "fifo")
        # The fast paths stand aside when this is set: a strategy needing the lock, or closed.
        self.slow = not self.lockfree
        self.checks_idle = config.health_check_strategy in ("active", "mixed")
        self.checks_on_checkout = config.health_check_strategy == "mixed"

        # Counters.
        self.retired_uses = 0  # checkouts of members already retired
        self.waits = _WaitHistogram()
        self.timeouts = 0
        self.rejected = 0
        self.cancelled = 0
        self.connects = 0
        self.connect_errors = 0
        self.check_failures = 0
        self.invalidations = 0
        self.leaks = 0
        self.evictions: dict[str, int] = {}

    # -- effects -----------------------------------------------------------------------------

    def take_effects(self) -> Effects | None:
        """What the shell must now do (or None); the record is then the shell's."""
        fx, self._fx = self._fx, None
        return fx

    @property
    def fx(self) -> Effects:
        fx = self._fx
        if fx is None:
            fx = self._fx = Effects()
        return fx

    def _note(self, kind: str, m: Member | None, reason: str) -> None:
        self.fx.notes.append((kind, m, reason))

    # -- the fast paths (no lock; Rule 3) ------------------------------------------------------

    def try_checkout(self, now: float) -> Member | None:
        """An idle member, or None: the shell must then call :meth:`checkout` under its lock."""
        if self.n_waiting or self.slow or not self.idle:
            return None
        try:
            m = self._pop()
        except IndexError:  # another thread took the last one
            return None
        if now >= m.expires:  # past its lifetime, or retired with its generation
            self.stale.append(m)
            return None
        m.state = IN_USE
        m.uses += 1
        m.acquired = now
        return m

    def try_checkin(self, m: Member, now: float) -> int:
        """Put a returned member back; :data:`NEEDS_LOCK` or :data:`NEEDS_SERVE` when it can't."""
        if self.n_waiting or self.slow or now >= m.expires or m.state != IN_USE:
            return NEEDS_LOCK
        m.idle_since = now
        if self.checks_idle:
            m.check_due = now + self._check_period()
        m.state = IDLE
        self._push(m)
        # A waiter (or close) may have come between the test above and the push.
        if self.n_waiting or self.slow:
            return NEEDS_SERVE
        return CHECKED_IN

    # -- checkout and checkin (under the lock) -------------------------------------------------

    def checkout(self, now: float, waiter: Waiter) -> Member | None:
        """A member, or None with ``waiter`` queued (the shell then waits on its cell).

        Raises :class:`PoolClosedError` when closed and :class:`PoolTimeoutError` when
        ``max_waiting`` waiters already wait (having planned a connect when there is room:
        the shell takes and carries out the effects whether or not this raises).
        """
        self._drain_stale(now)
        if self.closed:
            raise PoolClosedError(f"pool {self.name!r} is closed")
        self.opened = True
        if not self.n_waiting:
            m = self._take(now)
            if m is not None:
                m.state = IN_USE
                m.uses += 1
                return m
        limit = self.config.max_waiting
        if limit is not None and self.n_waiting >= limit:
            self.rejected += 1
            # Refused, but still demand: grow when there is room, or the pool never would
            # with max_waiting=0 (nobody ever waits, so _plan sees no waiter).
            self._plan(now, demand=True)
            # Refused while connecting keeps failing: say so, as a timeout would (a database
            # that is down then trips the service's breaker on this path too).
            failing = self.last_connect_error
            reason = f"; connecting keeps failing: {failing!r}" if failing is not None else ""
            raise PoolTimeoutError(
                self.name,
                waited=0.0,
                message=f"pool {self.name!r}: {self.n_waiting} checkouts already wait "
                f"(max_waiting={limit}){reason}",
                connect_error=failing,
            ) from failing
        waiter.since = now
        self.waiters.append(waiter)
        self.n_waiting += 1
        # A fast-path return may have pushed a member between the take above and the count
        # (it re-reads the count after its push, so it saw none): serve it now, or it idles.
        if self.idle:
            self.serve(now)
        else:
            self._plan(now)
        return None

    def abandon(self, waiter: Waiter, now: float, *, timed_out: bool) -> None:
        """A waiter stops waiting (timeout or cancellation).

        A member handed to it in the meantime is passed on to the next waiter (or goes idle),
        so nothing is lost and nothing is issued twice.
        """
        state = waiter.state
        if state == WAITING:
            waiter.state = GONE
            self.n_waiting -= 1
        elif state == SERVED:
            m = waiter.member
            assert m is not None
            waiter.member = None
            waiter.state = GONE
            m.uses -= 1
            self.waits.record(now - waiter.since, -1)
            self._return(m, now)
        else:
            return  # shut out by close: nothing to undo
        if timed_out:
            self.timeouts += 1
        else:
            self.cancelled += 1
        self.serve(now)

    def checkin(
        self,
        m: Member,
        now: float,
        *,
        broken: str | None = None,
        retire_older: bool = False,
    ) -> None:
        """A borrower returns ``m``. ``broken`` names why it must not be reused, if it must not.

        Returning a member reclaimed meanwhile (its borrower was declared gone) does nothing.
        ``retire_older`` retires every member made before now (a disconnect usually takes
        them all) when ``m`` belongs to the current generation. A member of an older one was
        retired with its generation already, and so was everything made before it: a new
        generation would only throw away the members made since (after a restart, each stale
        connection still lent fails in turn), so it is just destroyed.
        """
        if m.state != IN_USE:
            return
        if retire_older and m.generation == self.generation:
            self.retire_older(now)
        if broken is not None:
            self.invalidations += 1
            self._note("invalidate", m, broken)
            self._retire(m, broken)
        else:
            self._return(m, now)
        self.serve(now)

    def serve(self, now: float) -> None:
        """Hand idle members to waiters; after a race with the fast path, or a close."""
        self._drain_stale(now)
        if self.closed:
            self._shut()
            return
        while self.n_waiting:
            m = self._take(now)
            if m is None:
                break
            self._give(m, now, m.idle_since)
        self._plan(now)

    def _return(self, m: Member, now: float, idle_since: float | None = None) -> None:
        if self.closed:
            self._retire(m, "closed")
        elif now >= m.expires:
            self._expire(m, self._why_expired(m))
        else:
            if self.checks_idle:
                m.check_due = now + self._check_period()
            self._give(m, now, idle_since)

    def _give(self, m: Member, now: float, idle_since: float | None = None) -> None:
        """``m`` is free: to the first live waiter, else idle (Rule 1).

        ``idle_since``: when ``m`` went idle, if it was idle before this (default: it comes
        from use, so it is idle from now; one handed straight over was never idle, which
        ``mixed`` goes by).
        """
        m.idle_since = now if idle_since is None else idle_since
        waiters = self.waiters
        while waiters:
            w = waiters.popleft()
            if w.state != WAITING:
                continue
            self.n_waiting -= 1
            m.state = IN_USE
            m.uses += 1
            w.member = m
            w.state = SERVED
            self.waits.record(now - w.since)
            self.fx.handoffs.append(w)
            return
        m.state = IDLE
        self._push(m)

    def _take(self, now: float) -> Member | None:
        """Pop a usable idle member, retiring the expired ones on the way."""
        while self.idle:
            try:
                m = self._pop()
            except IndexError:
                return None
            if now >= m.expires:
                self._expire(m, self._why_expired(m))
            else:
                return m
        return None

    def _drain_stale(self, now: float) -> None:
        stale = self.stale
        while stale:
            m = stale.pop()
            self._expire(m, self._why_expired(m))

    def _why_expired(self, m: Member) -> str:
        return "generation" if m.generation != self.generation else "max_lifetime"

    def _take_idle(self, m: Member) -> bool:
        """Remove this idle member, unless a fast-path checkout took it first."""
        try:
            self._remove(m)
        except ValueError:
            return False
        return True

    # -- members coming and going ----------------------------------------------------------------

    def discard(self, m: Member, reason: str, now: float) -> None:
        """Retire a member that is in use or being checked (broken, or its borrower is gone)."""
        if m.state == CLOSED or m.state == IDLE:
            return
        if reason in ("dead_borrower", "dropped"):
            self.leaks += 1
            self._note("leak", m, reason)
        elif reason == "check_failed":
            self.check_failures += 1
            self._note("invalidate", m, reason)
        else:
            self.invalidations += 1
            self._note("invalidate", m, reason)
        self._retire(m, reason)
        self.serve(now)

    def retire_older(self, now: float) -> None:
        """Start a new generation: every member made before now is retired when next seen.

        Their lifetime ends now, so the fast paths (which only compare ``expires``) retire
        them too; idle ones go at once.
        """
        self.generation += 1
        for m in tuple(self.members.values()):
            m.expires = -_INF
        for m in tuple(self.idle):
            if self._take_idle(m):
                self._expire(m, "generation")
        self._plan(now)

    def _expire(self, m: Member, reason: str) -> None:
        self._note("expire", m, reason)
        self._retire(m, reason)

    def _retire(self, m: Member, reason: str) -> None:
        if self.members.pop(m.id, None) is None:
            return
        m.state = CLOSED
        self.retired_uses += m.uses
        if reason != "closed":
            self.evictions[reason] = self.evictions.get(reason, 0) + 1
        self.fx.close.append((m, reason))

    def open(self, now: float) -> None:
        """Start keeping ``min_size`` members."""
        if not self.opened and not self.closed:
            self.opened = True
            self._plan(now)

    def reserve_connect(self) -> bool:
        """Claim the connect slot for a caller connecting up to ``min_size`` itself."""
        if self.closed or self.connecting or len(self.members) >= self.config.min_size:
            return False
        self.connecting = True
        self.connect_generation = self.generation
        return True

    def _plan(self, now: float, *, demand: bool = False) -> None:
        """Start a connect when members are short (Rule 5).

        ``demand``: a checkout was just refused (``max_waiting``); it counts as a waiter.
        """
        if self.closed or self.connecting or not self.opened:
            return
        size = len(self.members)
        cfg = self.config
        if size < cfg.min_size or ((demand or self.n_waiting) and size < cfg.capacity):
            self.connecting = True
            self.connect_generation = self.generation
            self.fx.connect_in = max(0.0, self.connect_not_before - now)

    def connected(self, resource: Any, now: float) -> Member | None:
        """A connect finished; the new member is handed out, kept idle, or (None) to close."""
        self.connecting = False
        self.connect_failures = 0
        self.last_connect_error = None  # only a failing streak explains a timeout
        self.connects += 1
        cfg = self.config
        expires = _INF
        if cfg.max_lifetime is not None:
            expires = now + cfg.max_lifetime * (1.0 - cfg.lifetime_jitter * self.rng.random())
        m = Member(self._next_id, resource, now, expires, self.connect_generation)
        self._next_id += 1
        if self.checks_idle:
            m.check_due = now + self._check_period()
        if self.closed or m.generation != self.generation:
            # Made for a pool that has closed, or before a disconnect: close it, make another.
            m.state = CLOSED
            self.fx.close.append((m, "closed" if self.closed else "generation"))
            self._plan(now)
            return None
        self.members[m.id] = m
        if len(self.members) > cfg.max_size:
            self._note("overflow", m, "overflow")
        self._give(m, now)
        self._plan(now)
        return m

    def connect_failed(self, now: float, error: BaseException) -> float:
        """A connect failed; returns the backoff before the next attempt."""
        self.connecting = False
        self.connect_failures += 1
        self.connect_errors += 1
        self.last_connect_error = error
        cfg = self.config
        backoff = min(
            cfg.connect_backoff_max, cfg.connect_backoff * 2.0 ** (self.connect_failures - 1)
        )
        backoff *= 0.5 + 0.5 * self.rng.random()
        self.connect_not_before = now + backoff
        self._plan(now)
        return backoff

    def checkout_check_failed(self, m: Member, now: float) -> None:
        """A check at checkout (``mixed``) failed: the borrower never got ``m``."""
        if m.state == IN_USE:
            m.uses -= 1
        self.discard(m, "check_failed", now)

    def gave_up(self, m: Member | None, now: float) -> None:
        """A borrower's wait ran out while members were being checked before lending
        (``mixed``): one timeout. ``m``, taken but not yet checked, goes back as it was (still
        due for its check)."""
        self.timeouts += 1
        if m is not None and m.state == IN_USE:
            m.uses -= 1
            self._return(m, now, m.idle_since)
            self.serve(now)

    def checked_out_ok(self, m: Member, now: float) -> None:
        """A check at checkout (``mixed``) passed."""
        m.check_due = now + self._check_period()
        m.last_ok = now

    def due_for_check(self, m: Member, now: float) -> bool:
        """Whether ``mixed`` checks this member before lending it: idle, and unproven, for
        ``check_idle_after`` (a check that just passed counts as proof)."""
        since = m.idle_since if m.idle_since > m.last_ok else m.last_ok
        return now - since >= self.config.check_idle_after

    def check_done(self, m: Member, ok: bool, now: float) -> None:
        """An active check of a reserved idle member finished."""
        if m.state != CHECKING:
            return
        m.state = IN_USE  # for _return's benefit: it hands out or parks members in use
        if not ok:
            self.check_failures += 1
            self._note("invalidate", m, "check_failed")
            self._retire(m, "check_failed")
        else:
            # A check is no use: the member stays idle since when it was, so idle_timeout
            # still retires it (it would never fall due if checks reset the idle time).
            m.last_ok = now
            self._return(m, now, m.idle_since)
        self.serve(now)

    def unreserve(self, members: list[Member], now: float) -> None:
        """Hand back members reserved for an active check that never ran (housekeeping was
        interrupted, or the pool closed): idle again, or to a waiter, with their check still
        due; retired when the pool has closed or their lifetime is over. Members no longer
        reserved are skipped.
        """
        for m in members:
            if m.state != CHECKING:
                continue
            if self.closed:
                self._retire(m, "closed")
            elif now >= m.expires:
                self._expire(m, self._why_expired(m))
            else:
                self._give(m, now, m.idle_since)
        self.serve(now)

    def _check_period(self) -> float:
        cfg = self.config
        return cfg.check_interval * (1.0 - cfg.check_jitter * self.rng.random())

    # -- housekeeping ------------------------------------------------------------------------------

    def maintain(self, now: float) -> float | None:
        """Apply every time limit due at ``now``; returns when something is next due (or None).

        Retires idle members past ``max_lifetime``, surplus idle members past ``overflow_ttl``
        (above ``max_size``) and ``idle_timeout`` (above ``min_size``), oldest idle first;
        reserves idle members due for an active check; reports leaks; tops up to ``min_size``.
        """
        self._drain_stale(now)
        if self.closed:
            return None
        cfg = self.config
        idle = sorted(self.idle, key=_by_idle_since)
        for m in idle:
            if now >= m.expires and self._take_idle(m):
                self._expire(m, self._why_expired(m))
        for floor, ttl, reason in (
            (cfg.max_size, cfg.overflow_ttl, "overflow_ttl"),
            (cfg.min_size, cfg.idle_timeout, "idle_timeout"),
        ):
            if ttl is None:
                continue
            for m in idle:
                if len(self.members) <= floor:
                    break
                if m.state == IDLE and m.idle_since + ttl <= now and self._take_idle(m):
                    self._expire(m, reason)
        if self.checks_idle:
            for m in idle:
                if m.state == IDLE and m.check_due <= now and self._take_idle(m):
                    m.state = CHECKING
                    self.fx.check.append(m)
        if cfg.leak_timeout is not None:
            for m in self.members.values():
                if (
                    m.state == IN_USE
                    and not m.leak_reported
                    and now - m.acquired >= cfg.leak_timeout
                ):
                    m.leak_reported = True
                    self.leaks += 1
                    self._note("leak", m, "leak_timeout")
        self._plan(now)
        return self._next_due()

    def trim(self, now: float) -> int:
        """Retire idle members down to ``min_size``, longest idle first (memory pressure);
        returns how many. Members in use are left alone: they come back as usual."""
        if self.closed:
            return 0
        retired = 0
        for m in sorted(self.idle, key=_by_idle_since):
            if len(self.members) <= self.config.min_size:
                break
            if m.state == IDLE and self._take_idle(m):
                self._expire(m, "memory_pressure")
                retired += 1
        return retired

    def _next_due(self) -> float | None:
        cfg = self.config
        due = _INF
        size = len(self.members)
        for m in tuple(self.idle):
            due = min(due, m.expires)
            if size > cfg.max_size:
                due = min(due, m.idle_since + cfg.overflow_ttl)
            if size > cfg.min_size and cfg.idle_timeout is not None:
                due = min(due, m.idle_since + cfg.idle_timeout)
            if self.checks_idle:
                due = min(due, m.check_due)
        if cfg.leak_timeout is not None:
            for m in self.members.values():
                if m.state == IN_USE and not m.leak_reported:
                    due = min(due, m.acquired + cfg.leak_timeout)
        return None if due == _INF else due

    def in_use(self) -> list[Member]:
        """The members lent out now (for the shell's dead-borrower sweep)."""
        return [m for m in self.members.values() if m.state == IN_USE]

    def forget_all(self) -> list[Member]:
        """Let go of every member and waiter, closing nothing; returns the members let go.

        For a forked child: the resources are the parent's (closing one would close it for the
        parent too), the waiters are threads or tasks that did not come along, and no connect
        is under way there. What is left is an empty pool that keeps its counters and settings;
        :meth:`open` fills it again. A member lent at the fork (to the thread that forked) is
        ignored when it comes back.
        """
        dropped = list(self.members.values())
        for m in dropped:
            self.retired_uses += m.uses
            m.state = CLOSED
        self.members.clear()
        while self.idle:
            try:
                self._pop()
            except IndexError:
                break
        self.stale.clear()
        self.waiters.clear()
        self.n_waiting = 0
        self.connecting = False
        self.connect_not_before = -_INF
        self.generation += 1  # nothing made before the fork is the child's
        self.opened = False
        self._fx = None
        return dropped

    def close(self) -> None:
        """Refuse new checkouts, shut out waiters, retire idle members.

        Members in use are closed when returned; a connect in flight is closed when it ends.
        """
        if self.closed:
            return
        self.closed = self.slow = True
        self._shut()

    def _shut(self) -> None:
        while self.waiters:
            w = self.waiters.popleft()
            if w.state == WAITING:
                w.state = SHUT_OUT
                self.fx.handoffs.append(w)
        self.n_waiting = 0
        while True:
            try:
                m = self._pop()
            except IndexError:
                break
            self._retire(m, "closed")
        while self.stale:
            self._retire(self.stale.pop(), "closed")

    # -- numbers -----------------------------------------------------------------------------------

    def stats(self) -> PoolSnapshot:
        cfg = self.config
        members = tuple(self.members.values())
        in_use = sum(1 for m in members if m.state == IN_USE)
        checking = sum(1 for m in members if m.state == CHECKING)
        size = len(members)
        checkouts = self.retired_uses + sum(m.uses for m in members)
        waits = self.waits
        zeros = max(0, checkouts - waits.count)
        return PoolSnapshot(
            name=self.name,
            size=size,
            idle=len(self.idle),
            in_use=in_use,
            checking=checking,
            overflow=max(0, size - cfg.max_size),
            overflow_in_use=max(0, in_use - cfg.max_size),
            waiting=self.n_waiting,
            connecting=int(self.connecting),
            generation=self.generation,
            min_size=cfg.min_size,
            max_size=cfg.max_size,
            max_overflow=cfg.max_overflow,
            checkouts=checkouts,
            waited=waits.count,
            timeouts=self.timeouts,
            rejected=self.rejected,
            cancelled=self.cancelled,
            wait_p50=waits.quantile(0.50, zeros),
            wait_p95=waits.quantile(0.95, zeros),
            wait_p99=waits.quantile(0.99, zeros),
            wait_max=waits.max,
            connects=self.connects,
            connect_errors=self.connect_errors,
            connect_failures=self.connect_failures,
            last_connect_error=(  # a driver's error may quote the DSN: passwords masked
                None
                if self.last_connect_error is None
                else redact_text(repr(self.last_connect_error))
            ),
            check_failures=self.check_failures,
            invalidations=self.invalidations,
            leaks=self.leaks,
            evictions=dict(self.evictions),
            closed=self.closed,
        )


def _by_idle_since(m: Member) -> float:
    return m.idle_since
