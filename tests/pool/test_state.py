"""The pool's pure core against a model: sizes, single issue, FIFO service, accounting."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from buttress import PoolClosedError, PoolConfig, PoolTimeoutError
from buttress._pool._config import STRATEGIES
from buttress._pool._state import (
    CHECKED_IN,
    CHECKING,
    CLOSED,
    IDLE,
    IN_USE,
    NEEDS_SERVE,
    SERVED,
    SHUT_OUT,
    WAITING,
    Member,
    PoolState,
    Waiter,
)


class PoolMachine(RuleBasedStateMachine):
    """Borrowers, waiters, connects, checks and the clock, in any order."""

    @initialize(
        min_size=st.integers(0, 3),
        extra=st.integers(0, 3),
        max_overflow=st.integers(0, 2),
        strategy=st.sampled_from(STRATEGIES),
        lifetime=st.none() | st.floats(1.0, 40.0),
        idle_timeout=st.none() | st.floats(1.0, 40.0),
        max_waiting=st.none() | st.integers(0, 4),
        health=st.sampled_from(["passive", "active", "mixed"]),
        leak_timeout=st.none() | st.floats(1.0, 20.0),
    )
    def setup(
        self,
        min_size: int,
        extra: int,
        max_overflow: int,
        strategy: Any,
        lifetime: float | None,
        idle_timeout: float | None,
        max_waiting: int | None,
        health: Any,
        leak_timeout: float | None,
    ) -> None:
        self.config = PoolConfig(
            min_size=min_size,
            max_size=max(1, min_size + extra),
            max_overflow=max_overflow,
            strategy=strategy,
            max_lifetime=lifetime,
            idle_timeout=idle_timeout,
            overflow_ttl=5.0,
            max_waiting=max_waiting,
            health_check_strategy=health,
            check_interval=7.0,
            leak_timeout=leak_timeout,
        )
        self.state = PoolState(self.config, rng=random.Random(0))
        self.now = 0.0
        self.held: dict[int, Member] = {}  # borrowed, by member id
        self.checking: dict[int, Member] = {}
        self.waiting: list[Waiter] = []  # live waiters in arrival order
        self.connect_booked = False
        self.checkouts = 0
        self.ever_issued: dict[int, int] = {}  # member id -> times handed out
        self.state.open(self.now)
        self.apply()

    # -- the model's view of the effects --------------------------------------------------------

    def issue(self, m: Member) -> None:
        assert m.id not in self.held, f"member {m.id} issued twice"
        assert m.state == IN_USE
        assert self.now < m.expires, "an expired member was handed out"
        assert m not in list(self.state.idle)
        self.held[m.id] = m
        self.checkouts += 1

    def apply(self) -> None:
        fx = self.state.take_effects()
        if fx is None:
            return
        for w in fx.handoffs:
            if w.state == SERVED:
                # FIFO: the served waiter is the oldest one still waiting.
                assert self.waiting, "a waiter was served twice"
                assert self.waiting[0] is w, "a waiter was served out of order"
                self.waiting.pop(0)
                assert w.member is not None
                self.issue(w.member)
            else:
                assert w.state == SHUT_OUT
                self.waiting.remove(w)
        for m, _reason in fx.close:
            assert m.id not in self.held, "a lent member was closed under its borrower"
            assert m.state != IDLE
        for m in fx.check:
            assert m.state == CHECKING
            self.checking[m.id] = m
        if fx.connect_in is not None:
            assert not self.connect_booked, "two connects at once"
            self.connect_booked = True

    # -- rules ---------------------------------------------------------------------------------

    @rule(fast=st.booleans())
    def checkout(self, fast: bool) -> None:
        if fast:
            m = self.state.try_checkout(self.now)
            if m is not None:
                assert not self.waiting, "the fast path barged past a waiter"
                self.issue(m)
                return
        w = Waiter()
        queued_before = len(self.waiting)
        try:
            got = self.state.checkout(self.now, w)
        except PoolTimeoutError:
            assert self.config.max_waiting is not None
            assert queued_before >= self.config.max_waiting
            self.apply()
            return
        except PoolClosedError:
            assert self.state.closed
            return
        if got is not None:
            assert not self.waiting, "a newcomer barged past a waiter"
            self.issue(got)
        else:
            assert w.state == WAITING
            self.waiting.append(w)
        self.apply()

    @precondition(lambda self: self.held)
    @rule(data=st.data(), fast=st.booleans(), broken=st.booleans(), retire=st.booleans())
    def checkin(self, data: st.DataObject, fast: bool, broken: bool, retire: bool) -> None:
        mid = data.draw(st.sampled_from(sorted(self.held)))
        m = self.held.pop(mid)
        if fast and not broken and not retire:
            code = self.state.try_checkin(m, self.now)
            if code == CHECKED_IN:
                return
            if code == NEEDS_SERVE:
                self.state.serve(self.now)
                self.apply()
                return
        self.state.checkin(
            m, self.now, broken="invalidated" if broken else None, retire_older=retire
        )
        self.apply()

    @precondition(lambda self: self.held)
    @rule(data=st.data(), reason=st.sampled_from(["dead_borrower", "dropped", "check_failed"]))
    def discard(self, data: st.DataObject, reason: str) -> None:
        mid = data.draw(st.sampled_from(sorted(self.held)))
        self.state.discard(self.held.pop(mid), reason, self.now)
        self.apply()

    @precondition(lambda self: self.waiting)
    @rule(data=st.data(), timed_out=st.booleans())
    def abandon(self, data: st.DataObject, timed_out: bool) -> None:
        w = data.draw(st.sampled_from(self.waiting))
        self.waiting.remove(w)
        self.state.abandon(w, self.now, timed_out=timed_out)
        assert w.member is None
        self.apply()

    @precondition(lambda self: self.connect_booked)
    @rule(ok=st.booleans())
    def connect_finished(self, ok: bool) -> None:
        self.connect_booked = False
        if ok:
            self.state.connected(object(), self.now)
        else:
            self.state.connect_failed(self.now, OSError("refused"))
        self.apply()

    @precondition(lambda self: self.checking)
    @rule(data=st.data(), ok=st.booleans())
    def check_finished(self, data: st.DataObject, ok: bool) -> None:
        mid = data.draw(st.sampled_from(sorted(self.checking)))
        self.state.check_done(self.checking.pop(mid), ok, self.now)
        self.apply()

    @precondition(lambda self: self.checking)
    @rule(data=st.data())
    def checks_interrupted(self, data: st.DataObject) -> None:
        # Housekeeping cancelled: the reserved members it had not checked are handed back.
        ids = data.draw(st.sets(st.sampled_from(sorted(self.checking)), min_size=1))
        self.state.unreserve([self.checking.pop(mid) for mid in sorted(ids)], self.now)
        self.apply()

    @rule(dt=st.floats(0.0, 30.0))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule()
    def maintain(self) -> None:
        due = self.state.maintain(self.now)
        self.apply()
        assert due is None or due > self.now, "maintain left work due now"

    @precondition(lambda self: not self.state.closed)
    @rule()
    def close(self) -> None:
        # Rare in practice; hypothesis picks it sometimes and the rest must still hold.
        self.state.close()
        self.apply()
        assert not self.waiting

    # -- invariants ------------------------------------------------------------------------------

    @invariant()
    def sizes_within_capacity(self) -> None:
        s = self.state
        assert len(s.members) + int(s.connecting) <= self.config.capacity

    @invariant()
    def states_agree(self) -> None:
        s = self.state
        idle = list(s.idle)
        assert len({m.id for m in idle}) == len(idle)
        for m in idle:
            assert m.state == IDLE
            assert s.members.get(m.id) is m
        for m in self.held.values():
            assert m.state == IN_USE
            assert s.members.get(m.id) is m
        for m in self.checking.values():
            assert m.state == CHECKING
            assert s.members.get(m.id) is m
        assert s.n_waiting == len(self.waiting)
        assert s.connecting == self.connect_booked
        if s.n_waiting:
            assert not idle, "a member idles while someone waits"

    @invariant()
    def counts_agree(self) -> None:
        stats = self.state.stats()
        assert stats.checkouts == self.checkouts
        assert stats.in_use == len(self.held)
        assert stats.waiting == len(self.waiting)


TestPoolMachine = PoolMachine.TestCase
TestPoolMachine.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)


def test_fifo_service_with_many_waiters() -> None:
    """Ten waiters queue on one member; each return serves the oldest waiter."""
    state = PoolState(PoolConfig(min_size=1, max_size=1), rng=random.Random(1))
    state.open(0.0)
    fx = state.take_effects()
    assert fx is not None
    assert fx.connect_in == 0.0
    state.connected("conn", 0.0)
    first = state.try_checkout(0.0)
    assert first is not None
    waiters = [Waiter() for _ in range(10)]
    for i, w in enumerate(waiters):
        assert state.checkout(float(i), w) is None
    served = []
    m = first
    for t in range(10):
        state.checkin(m, 20.0 + t)
        fx = state.take_effects()
        assert fx is not None
        [w] = fx.handoffs
        served.append(waiters.index(w))
        assert w.member is not None
        m = w.member
    assert served == list(range(10))
    stats = state.stats()
    assert stats.waited == 10
    assert stats.wait_max == pytest.approx(20.0)


def test_a_waiter_giving_up_at_the_moment_of_handoff_passes_the_member_on() -> None:
    state = PoolState(PoolConfig(min_size=1, max_size=1), rng=random.Random(2))
    state.open(0.0)
    state.take_effects()
    state.connected("conn", 0.0)
    m = state.try_checkout(0.0)
    assert m is not None
    late, next_in_line = Waiter(), Waiter()
    assert state.checkout(1.0, late) is None
    assert state.checkout(2.0, next_in_line) is None
    state.checkin(m, 3.0)  # handed to `late` ...
    fx = state.take_effects()
    assert fx is not None
    assert fx.handoffs == [late]
    state.abandon(late, 3.5, timed_out=True)  # ... whose wait ran out meanwhile
    fx = state.take_effects()
    assert fx is not None
    assert fx.handoffs == [next_in_line]
    assert next_in_line.member is m
    assert late.member is None
    s = state.stats()
    assert (s.checkouts, s.waited, s.timeouts, s.in_use) == (2, 1, 1, 1)


def test_a_return_racing_a_new_waiter_is_not_lost() -> None:
    """A fast-path return that lands between a checkout's look at the idle members and its
    joining the queue must still reach that waiter (it saw no waiter, so it will not serve)."""
    state = PoolState(PoolConfig(min_size=1, max_size=1), rng=random.Random(3))
    state.open(0.0)
    state.take_effects()
    state.connected("conn", 0.0)
    m = state.try_checkout(0.0)
    assert m is not None
    take = state._take
    raced: list[bool] = []

    def take_then_race(now: float) -> Member | None:
        got = take(now)  # finds nothing ...
        if not raced:
            raced.append(True)
            assert state.try_checkin(m, now) == CHECKED_IN  # ... as the holder returns it
        return got

    state._take = take_then_race  # type: ignore[method-assign]
    w = Waiter()
    assert state.checkout(1.0, w) is None
    fx = state.take_effects()
    assert fx is not None
    assert fx.handoffs == [w]
    assert w.member is m


def test_a_checkout_refused_by_max_waiting_still_grows_the_pool() -> None:
    """max_waiting=0: nobody ever waits, yet a refused checkout is demand: it starts a connect
    when there is room, so the next checkout finds a member."""
    state = PoolState(PoolConfig(max_size=2, max_waiting=0), rng=random.Random(4))
    state.open(0.0)
    assert state.take_effects() is None  # min_size=0: nothing to connect yet
    with pytest.raises(PoolTimeoutError):
        state.checkout(0.0, Waiter())
    fx = state.take_effects()
    assert fx is not None
    assert fx.connect_in == 0.0
    with pytest.raises(PoolTimeoutError):  # one connect at a time: refused, no second one
        state.checkout(0.0, Waiter())
    assert state.take_effects() is None
    state.connected("conn", 1.0)
    state.take_effects()
    m = state.checkout(1.0, Waiter())
    assert m is not None
    with pytest.raises(PoolTimeoutError):  # one lent, room for one more: another connect
        state.checkout(1.0, Waiter())
    fx = state.take_effects()
    assert fx is not None
    assert fx.connect_in == 0.0
    state.connected("conn2", 2.0)
    state.take_effects()
    assert state.checkout(2.0, Waiter()) is not None
    with pytest.raises(PoolTimeoutError):  # at capacity: no connect
        state.checkout(2.0, Waiter())
    assert state.take_effects() is None
    assert state.stats().rejected == 4


def test_a_member_handed_straight_to_a_waiter_was_never_idle() -> None:
    """mixed checks members idle for check_idle_after before lending them; a member that goes
    from one borrower straight to a waiter was busy all along, however long it was held."""
    config = PoolConfig(min_size=1, max_size=1, health_check_strategy="mixed", check_idle_after=0.5)
    state = PoolState(config, rng=random.Random(5))
    state.open(0.0)
    state.take_effects()
    state.connected("conn", 0.0)
    m = state.checkout(0.0, Waiter())
    assert m is not None
    w = Waiter()
    assert state.checkout(0.0, w) is None
    state.checkin(m, 10.0)  # held for 10 s, then handed to the waiter
    assert w.member is m
    assert not state.due_for_check(m, 10.0)
    assert m.idle_since == 10.0


def test_members_reserved_for_a_check_that_never_ran_go_back_still_due() -> None:
    config = PoolConfig(
        min_size=2, max_size=2, health_check_strategy="active", check_interval=10.0, check_jitter=0
    )
    state = PoolState(config, rng=random.Random(6))
    state.open(0.0)
    state.take_effects()
    a = state.connected("a", 0.0)
    b = state.connected("b", 0.0)
    state.take_effects()
    assert state.maintain(10.0) is None
    fx = state.take_effects()
    assert fx is not None
    assert fx.check == [a, b]
    state.check_done(a, True, 11.0)  # a was checked; then housekeeping was cancelled
    state.unreserve([b], 11.0)
    assert state.take_effects() is None
    assert (b.state, b.idle_since, b.check_due) == (IDLE, 0.0, 10.0)  # idle since 0, still due
    assert state.maintain(11.0) == 21.0  # b reserved again; a's next check is due at 21
    fx = state.take_effects()
    assert fx is not None
    assert fx.check == [b]
    state.close()
    state.unreserve([b], 12.0)  # the pool closed meanwhile: b is retired
    fx = state.take_effects()
    assert fx is not None
    assert [(m.resource, why) for m, why in fx.close] == [("a", "closed"), ("b", "closed")]


def test_a_failing_member_of_an_older_generation_retires_nothing_newer() -> None:
    """After a restart, each stale connection still lent fails in turn: only the first (of the
    current generation) starts a new generation; later ones are just destroyed."""
    state = PoolState(PoolConfig(min_size=2, max_size=3), rng=random.Random(7))
    state.open(0.0)
    state.take_effects()
    state.connected("old1", 0.0)
    state.connected("old2", 0.0)
    state.take_effects()
    old1, old2 = state.checkout(1.0, Waiter()), state.checkout(1.0, Waiter())
    assert old1 is not None and old2 is not None
    state.checkin(old1, 2.0, broken="error", retire_older=True)  # the first failure
    assert state.generation == 1
    state.take_effects()
    fresh = state.connected("fresh", 3.0)
    assert fresh is not None and fresh.generation == 1
    state.take_effects()
    state.checkin(old2, 4.0, broken="error", retire_older=True)  # a stale one fails later
    fx = state.take_effects()
    assert fx is not None
    assert fx.close == [(old2, "error")]
    assert state.generation == 1
    assert fresh.state == IDLE and fresh.expires > 4.0
    assert state.stats().evictions == {"error": 2}
    assert state.checkout(5.0, Waiter()) is fresh


@pytest.mark.parametrize("health", ["active", "mixed"])
def test_active_checks_do_not_keep_an_idle_member_from_its_idle_timeout(health: Any) -> None:
    config = PoolConfig(
        min_size=0,
        max_size=1,
        idle_timeout=60.0,
        max_lifetime=None,
        health_check_strategy=health,
        check_interval=10.0,
        check_jitter=0,
    )
    state = PoolState(config, rng=random.Random(1))
    state.open(0.0)
    state.take_effects()
    m = state.connected("a", 0.0)
    assert m is not None
    state.take_effects()
    now = 0.0
    while m.state != CLOSED and now < 300.0:
        now += 10.0
        state.maintain(now)
        fx = state.take_effects()
        for checked in fx.check if fx is not None else ():
            state.check_done(checked, True, now)
            state.take_effects()
    assert m.id not in state.members  # retired for idling, though every check passed
    assert state.evictions == {"idle_timeout": 1}
    assert now <= 70.0


def test_mixed_does_not_check_again_a_member_an_active_check_just_passed() -> None:
    config = PoolConfig(
        min_size=1,
        max_size=1,
        health_check_strategy="mixed",
        check_interval=10.0,
        check_jitter=0,
        check_idle_after=5.0,
    )
    state = PoolState(config, rng=random.Random(1))
    state.open(0.0)
    state.take_effects()
    m = state.connected("a", 0.0)
    assert m is not None
    state.take_effects()
    state.maintain(10.0)
    fx = state.take_effects()
    assert fx is not None and fx.check == [m]
    state.check_done(m, True, 10.0)
    assert m.idle_since == 0.0  # still idle since 0: a check is no use
    assert not state.due_for_check(m, 12.0)  # proven alive 2 s ago
    assert state.due_for_check(m, 15.0)  # unproven for check_idle_after again


def test_trim_retires_idle_members_down_to_min_size_longest_idle_first() -> None:
    state = PoolState(PoolConfig(min_size=1, max_size=4), rng=random.Random(2))
    state.open(0.0)
    state.take_effects()
    members = [state.connected(name, 0.0) for name in "abcd"]
    state.take_effects()
    taken = [state.checkout(1.0, Waiter()) for _ in range(4)]
    assert all(taken)
    for i, m in enumerate(taken):  # returned at 2, 3, 4 and 5: the first is idle longest
        assert m is not None
        state.checkin(m, 2.0 + i)
    state.take_effects()
    assert state.trim(6.0) == 3
    fx = state.take_effects()
    assert fx is not None
    retired = [m.resource for m, why in fx.close]
    assert len(retired) == 3 and {why for _, why in fx.close} == {"memory_pressure"}
    kept = [m for m in members if m is not None and m.id in state.members]
    assert [m.resource for m in kept] == [taken[-1].resource]  # type: ignore[union-attr]
    assert state.trim(7.0) == 0  # at min_size


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_forget_all_lets_go_of_every_member_closing_none(strategy: Any) -> None:
    # What a forked child does: the members are the parent's connections.
    state = PoolState(PoolConfig(min_size=2, max_size=3, strategy=strategy), rng=random.Random(4))
    state.open(0.0)
    state.take_effects()
    for name in "abc":
        state.connected(name, 0.0)
    lent = state.checkout(1.0, Waiter())
    assert lent is not None
    state.connecting = True  # a connect under way in the parent
    assert state.checkout(1.0, Waiter()) is not None
    assert state.checkout(1.0, Waiter()) is not None
    waiter = Waiter()
    assert state.checkout(1.0, waiter) is None  # one waits
    state.take_effects()

    assert sorted(m.resource for m in state.forget_all()) == ["a", "b", "c"]
    assert state.take_effects() is None  # nothing to close, nobody to wake
    s = state.stats()
    assert (s.size, s.idle, s.in_use, s.waiting, s.connecting) == (0, 0, 0, 0, 0)
    assert s.checkouts == 3  # counters carry on
    state.checkin(lent, 2.0)  # a lease the forking thread held: ignored
    assert state.take_effects() is None
    state.open(2.0)  # starts again from nothing: min_size connects, at once
    fx = state.take_effects()
    assert fx is not None and fx.connect_in == 0.0
    assert state.connected("mine", 2.0) is not None
    assert state.stats().size == 1


def test_a_wait_that_runs_out_before_a_check_puts_the_member_back_unchecked() -> None:
    cfg = PoolConfig(max_size=1, health_check_strategy="mixed", check_idle_after=1.0)
    state = PoolState(cfg, rng=random.Random(5))
    state.open(0.0)
    state.connected("conn", 0.0)
    state.take_effects()
    m = state.checkout(5.0, Waiter())
    assert m is not None and state.due_for_check(m, 5.0)
    state.gave_up(m, 5.0)
    s = state.stats()
    assert (s.timeouts, s.idle, s.in_use, s.checkouts) == (1, 1, 0, 0)
    again = state.checkout(6.0, Waiter())
    assert again is m and state.due_for_check(m, 6.0)  # still idle since 0: still due
