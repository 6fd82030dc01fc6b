"""The breaker against a simple reference model (Hypothesis stateful testing).

The model keeps every outcome in a plain list and filters it by time bucket when it needs the
window; it has no ring buffer, no batching, no fast path and no lazy shortcuts, and it
re-evaluates after every outcome. The breaker under test is driven through every public way in
(permits, tickets, ``call`` and ``call_async``, both decorators, ``with`` and ``async with``,
``guard``) with a ManualClock. Shedding probabilities are drawn from {0, 1} so both sides agree
without sharing an RNG.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
)

import buttress as bt
from buttress._breaker import BreakerConfig


class Boom(Exception):
    pass


class Ignored(Exception):
    pass


# Every way into a breaker that runs a whole call.
WAYS_IN = (
    "call",
    "decorator",
    "call_async",
    "async_decorator",
    "with",
    "async_with",
    "ticket",
    "ticket_async",
)

RANK = {"closed": 0, "light": 1, "medium": 2, "heavy": 3, "open": 4}


@dataclass
class Ticket:
    gen: int
    probe: int


@dataclass
class Model:
    cfg: BreakerConfig
    state: str = "closed"
    level: str | None = None
    gen: int = 1
    outcomes: list[tuple[int, bool, bool]] = field(default_factory=list)  # bucket, failed, slow
    consecutive: int = 0
    open_until: float = 0.0
    attempts: int = 0
    probes: dict[int, float] = field(default_factory=dict)
    probe_seq: int = 0
    probe_ok: int = 0
    probe_failed: int = 0
    stale: int = 0

    def bucket(self, t: float) -> int:
        return int(t * (self.cfg.buckets / self.cfg.window))

    def window(self, now: float) -> tuple[int, int, int]:
        first = self.bucket(now) - self.cfg.buckets
        live = [o for o in self.outcomes if o[0] > first]
        return len(live), sum(o[1] for o in live), sum(o[2] for o in live)

    # -- the spec, written plainly ----------------------------------------------------------

    def severity(self, now: float) -> tuple[float, str]:
        c = self.cfg
        calls, fails, slow = self.window(now)
        found: list[tuple[float, str]] = []
        if c.failure_threshold is not None:
            if fails >= c.failure_threshold:
                return 1.0, "failure_count"
            if c.degradation_threshold is not None:
                found.append(
                    (
                        (fails - c.degradation_threshold)
                        / (c.failure_threshold - c.degradation_threshold),
                        "failure_count",
                    )
                )
        # (count, out of, band low, band high, reason): the slow rate is over successes
        bands = [
            (fails, calls, c.degradation_rate_threshold, c.failure_rate_threshold, "failure_rate")
        ]
        if c.slow_call_duration is not None and calls > fails:
            bands.append(
                (
                    slow,
                    calls - fails,
                    c.slow_degradation_rate_threshold,
                    c.slow_call_rate_threshold,
                    "slow_call_rate",
                )
            )
        if calls >= c.minimum_calls:
            for count, total, low, high, why in bands:
                if high is None:
                    continue
                rate = count / total
                if rate >= high:
                    return 1.0, why
                if low is not None:
                    found.append(((rate - low) / (high - low), why))
        ct = c.consecutive_failure_threshold
        if ct is not None and self.consecutive >= ct:
            return 1.0, "consecutive_failures"
        if not found:
            return -1.0, ""
        best = found[0]
        for item in found[1:]:
            if item[0] > best[0]:
                best = item
        return best

    def evaluate(self, now: float) -> None:
        s, _ = self.severity(now)
        if s >= 1.0:
            self.open(now)
            return
        if s < 0.0:
            target = None
        else:
            target = "light" if s < 1 / 3 - 1e-9 else "medium" if s < 2 / 3 - 1e-9 else "heavy"
        if self.state == "degraded" and RANK.get(target or "closed", 0) < self.rank():
            # Going down: each level on the way, from the current one, holds the fall while
            # the severity is within the hysteresis below its floor.
            floors = {"heavy": 2 / 3 - 1e-9, "medium": 1 / 3 - 1e-9, "light": 0.0}
            on_the_way = [lv for lv in floors if RANK[lv] <= self.rank()]
            held = [lv for lv in on_the_way if s >= floors[lv] - self.cfg.level_hysteresis]
            target = held[0] if held else None
        if target is None:
            self.state, self.level = "closed", None
        else:
            self.state, self.level = "degraded", target

    def open(self, now: float) -> None:
        c = self.cfg
        wait = min(c.reset_timeout * c.reset_timeout_multiplier**self.attempts, c.reset_timeout_max)
        self.state, self.level, self.gen = "open", None, self.gen + 1
        self.open_until = now + wait

    def close_fresh(self) -> None:
        self.state, self.level, self.gen = "closed", None, self.gen + 1
        self.outcomes = []
        self.consecutive = 0
        self.attempts = 0
        self.probes = {}

    def judge(self, now: float) -> None:
        need = self.cfg.probes_needed
        if self.probe_ok >= need:
            self.close_fresh()
        elif self.probe_failed > self.cfg.half_open_max_calls - need:
            self.probes = {}
            self.open(now)

    def poll(self, now: float) -> None:
        if self.state == "open" and now >= self.open_until:
            self.state, self.gen = "half_open", self.gen + 1
            self.attempts += 1
            self.probes, self.probe_ok, self.probe_failed = {}, 0, 0
        elif self.state == "half_open":
            lost = [p for p, t in self.probes.items() if now - t >= self.cfg.probe_timeout]
            for p in lost:
                del self.probes[p]
                self.probe_failed += 1
            if lost:
                self.judge(now)
        elif self.state == "degraded":
            self.evaluate(now)

    def admit(self, now: float, critical: bool) -> Ticket | str:
        if self.state in ("closed", "disabled"):
            return Ticket(self.gen, 0)
        if self.state == "forced_open":
            return "forced_open"
        self.poll(now)
        if self.state == "closed":
            return Ticket(self.gen, 0)
        if self.state == "degraded":
            assert self.level is not None
            p = self.cfg.shed_probability[bt.DegradationLevel(self.level)]
            return "shed" if (p == 1.0 and not critical) else Ticket(self.gen, 0)
        if self.state == "open":
            return "open"
        used = len(self.probes) + self.probe_ok + self.probe_failed
        if used < self.cfg.half_open_max_calls:
            self.probe_seq += 1
            self.probes[self.probe_seq] = now
            return Ticket(self.gen, self.probe_seq)
        return "half_open_full"

    def finish(self, t: Ticket, outcome: str, slow: bool, now: float) -> None:
        if outcome in ("ignored", "cancelled"):
            if t.probe and t.gen == self.gen:
                self.probes.pop(t.probe, None)
            return
        if t.gen != self.gen:
            self.stale += 1
            return
        failed = outcome == "failure"
        if t.probe:
            if self.probes.pop(t.probe, None) is not None:
                if failed:
                    self.probe_failed += 1
                else:
                    self.probe_ok += 1
                self.judge(now)
            return
        slow = slow and not failed and self.cfg.slow_call_duration is not None
        self.outcomes.append((self.bucket(now), failed, slow))
        self.consecutive = self.consecutive + 1 if failed else 0
        if self.state != "disabled":
            self.evaluate(now)

    def rank(self) -> int:
        return RANK.get(self.level or self.state, -1)


optional_pair = st.one_of(
    st.none(),
    st.tuples(st.integers(1, 4), st.integers(1, 4)).map(lambda p: (p[0], p[0] + p[1])),
)


@st.composite
def configs(draw: st.DrawFn) -> dict[str, object]:
    count = draw(optional_pair)
    rate = draw(st.one_of(st.none(), st.sampled_from([(0.2, 0.5), (None, 0.5), (0.25, 0.75)])))
    slow = draw(st.booleans())
    return {
        "window": draw(st.sampled_from([1.0, 10.0, 60.0])),
        "buckets": draw(st.integers(1, 6)),
        "degradation_threshold": count[0] if count else None,
        "failure_threshold": count[1] if count else None,
        "degradation_rate_threshold": rate[0] if rate else None,
        "failure_rate_threshold": rate[1] if rate else None,
        "minimum_calls": draw(st.integers(1, 6)),
        "slow_call_duration": 1.0 if slow else None,
        "consecutive_failure_threshold": draw(st.one_of(st.none(), st.integers(1, 6))),
        "shed_probability": {
            lvl: draw(st.sampled_from([0.0, 1.0])) for lvl in ("light", "medium", "heavy")
        },
        "level_hysteresis": draw(st.sampled_from([0.0, 0.05, 0.2])),
        "reset_timeout": draw(st.sampled_from([1.0, 5.0])),
        "reset_timeout_multiplier": draw(st.sampled_from([1.0, 2.0])),
        "reset_timeout_max": 12.0,
        "reset_timeout_jitter": 0.0,  # the model opens for exactly its timeout
        "half_open_max_calls": draw(st.integers(1, 4)),
        "half_open_success_ratio": draw(st.sampled_from([0.5, 0.75, 1.0])),
        "probe_timeout": draw(st.sampled_from([2.0, 30.0])),
        "record": (Boom,),
        "ignore": (Ignored,),
    }


class BreakerVersusModel(RuleBasedStateMachine):
    calls = Bundle("calls")

    @initialize(settings=configs())
    def setup(self, settings: dict[str, object]) -> None:
        self.clock = bt.ManualClock()
        self.breaker = bt.CircuitBreaker("model", clock=self.clock, seed=0, **settings)  # type: ignore[arg-type]
        self.model = Model(self.breaker.config)
        self.loop = asyncio.new_event_loop()  # one per run: the async ways in share it

    def teardown(self) -> None:
        loop = getattr(self, "loop", None)
        if loop is not None:
            loop.close()

    def run(self, aw: Awaitable[Any]) -> Any:
        return self.loop.run_until_complete(aw)

    @property
    def now(self) -> float:
        return self.clock.monotonic()

    def compare_admission(self, permit: bt.Permit, expected: Ticket | str) -> None:
        if isinstance(expected, Ticket):
            assert permit.allowed, f"model admits, breaker refused: {permit!r}"
        else:
            assert not permit.allowed, f"model refuses ({expected}), breaker admitted"
            assert permit.reason == expected

    @rule(target=calls, critical=st.booleans(), api=st.sampled_from(["permit", "ticket"]))
    def start(self, critical: bool, api: str = "permit") -> object:
        """Admit a call and keep it open: a permit (``try_acquire``) or a ticket (``begin``)."""
        before = self.model.state
        expected = self.model.admit(self.now, critical)
        if api == "ticket":
            try:
                ticket = self.breaker.begin(critical)
            except (bt.CircuitOpenError, bt.LoadShedError) as exc:
                assert not isinstance(expected, Ticket), f"model admits, breaker raised {exc!r}"
                return None
            assert isinstance(expected, Ticket), f"model refuses ({expected}), breaker admitted"
            return (ticket, expected)
        permit = self.breaker.try_acquire(critical=critical)
        self.compare_admission(permit, expected)
        if before == "forced_open":
            assert not permit.allowed
        if before == "disabled":
            assert permit.allowed
        return (permit, expected) if permit.allowed else None

    @rule(
        call=consumes(calls),
        outcome=st.sampled_from(["success", "failure", "ignored", "cancelled"]),
        slow=st.booleans(),
    )
    def finish(self, call: tuple[Any, Ticket] | None, outcome: str, slow: bool) -> None:
        if call is None:
            return
        held, ticket = call
        stale = ticket.gen != self.model.gen
        rank_before, state_before = self.model.rank(), (self.model.state, self.model.level)
        gen_before = self.model.gen
        if isinstance(held, bt.Permit):
            duration = 2.0 if slow else 0.0
            if outcome == "success":
                held.record_success(duration)
            elif outcome == "failure":
                held.record_failure(duration)
            elif outcome == "ignored":
                held.record_exception(Ignored(), duration)
            else:
                held.release()
        else:  # a ticket from begin(): its duration is the time since it began
            threshold = self.breaker.config.slow_call_duration
            slow = threshold is not None and self.now - held[2] >= threshold
            exc = {
                "success": None,
                "failure": Boom(),
                "ignored": Ignored(),
                "cancelled": asyncio.CancelledError(),
            }[outcome]
            self.breaker.end(held, exc)
        self.model.finish(ticket, outcome, slow, self.now)
        if stale:  # an outcome from an older generation never moves the state
            assert (self.model.state, self.model.level) == state_before
            assert self.breaker.snapshot().generation == gen_before
        if (
            outcome == "failure"
            and not stale
            and not ticket.probe
            and state_before[0] in ("closed", "degraded")
        ):
            # severity never falls while failures in the window rise
            assert self.model.rank() >= rank_before

    @rule(
        outcome=st.sampled_from(["success", "failure", "ignored"]),
        critical=st.booleans(),
        how=st.sampled_from(WAYS_IN),
    )
    def quick_call(self, outcome: str, critical: bool, how: str = "call") -> None:
        """A whole call through one way in (the lock-free paths when closed and not critical)."""
        expected = self.model.admit(self.now, critical)

        def fn() -> str:
            if outcome == "failure":
                raise Boom
            if outcome == "ignored":
                raise Ignored
            return "ok"

        async def afn() -> str:
            return fn()

        try:
            self.run_one_way(how, critical, fn, afn)
        except (bt.CircuitOpenError, bt.LoadShedError) as exc:
            assert not isinstance(expected, Ticket), f"model admits, breaker raised {exc!r}"
            return
        except (Boom, Ignored):
            pass
        assert isinstance(expected, Ticket), f"model refuses ({expected}), breaker admitted"
        self.model.finish(expected, outcome, False, self.now)

    def run_one_way(
        self, how: str, critical: bool, fn: Callable[[], str], afn: Callable[[], Awaitable[str]]
    ) -> None:
        b = self.breaker
        if how == "call":
            b.call(fn) if not critical else b(critical=True)(fn)()
        elif how == "decorator":
            b(fn)() if not critical else b(critical=True)(fn)()
        elif how == "call_async":
            self.run(b.call_async(afn) if not critical else b(critical=True)(afn)())
        elif how == "async_decorator":
            self.run(b(afn)() if not critical else b(critical=True)(afn)())
        elif how == "with":
            if critical:
                with b.guard(critical=True):
                    fn()
            else:
                with b:
                    fn()
        elif how == "async_with":

            async def block() -> None:
                if critical:
                    async with b.guard(critical=True):
                        fn()
                else:
                    async with b:
                        fn()

            self.run(block())
        elif how == "ticket":
            ticket = b.begin(critical)
            try:
                fn()
            except BaseException as exc:
                b.end(ticket, exc)
                raise
            b.end(ticket)
        else:  # ticket_async
            ticket = self.run(b.begin_async(critical))
            try:
                fn()
            except BaseException as exc:
                b.end(ticket, exc)
                raise
            b.end(ticket)

    @rule(
        outcomes=st.lists(st.sampled_from(["success", "failure", "ignored"]), max_size=12),
        how=st.sampled_from(WAYS_IN),
    )
    def burst(self, outcomes: list[str], how: str) -> None:
        """Several calls with no look at the breaker in between (batched fast-path successes)."""
        for outcome in outcomes:
            self.quick_call(outcome, False, how)

    @rule(
        steps=st.lists(
            st.sampled_from(["start", "start", "success", "failure", "cancelled"]), max_size=12
        )
    )
    def interleave(self, steps: list[str]) -> None:
        """Overlapping calls: start some, finish the oldest, start more (probe budgets)."""
        open_calls: list[tuple[bt.Permit, Ticket] | None] = []
        for step in steps:
            if step == "start":
                open_calls.append(self.start(False))  # type: ignore[arg-type]
            elif open_calls:
                self.finish(open_calls.pop(0), step, False)

    @rule(
        steps=st.lists(
            st.sampled_from(["start", "start", "success", "failure", "cancelled"]), max_size=12
        )
    )
    def recover(self, steps: list[str]) -> None:
        """Wait out an open breaker, then run overlapping probes."""
        if self.model.state == "open":
            self.clock.set(max(self.now, self.model.open_until))
        self.interleave(steps)

    @rule(dt=st.sampled_from([0.1, 0.5, 1.0, 2.5, 5.0, 13.0, 61.0]))
    def advance(self, dt: float) -> None:
        self.clock.advance(dt)

    @rule(op=st.sampled_from(["force_open", "disable", "reset", "reset", "reset"]))
    def manual(self, op: str) -> None:
        m = self.model
        if op == "force_open":
            self.breaker.force_open()
            if m.state != "forced_open":
                m.state, m.level, m.gen = "forced_open", None, m.gen + 1
        elif op == "disable":
            self.breaker.disable()
            if m.state != "disabled":
                m.state, m.level, m.gen = "disabled", None, m.gen + 1
        else:
            self.breaker.reset()
            m.close_fresh()

    @invariant()
    def agrees_with_model(self) -> None:
        self.model.poll(self.now)
        snap = self.breaker.snapshot()
        want_level = self.model.level
        got_level = snap.degradation_level.value if snap.degradation_level else None
        assert (snap.state.value, got_level) == (self.model.state, want_level)
        assert snap.generation == self.model.gen
        calls, fails, slow = self.model.window(self.now)
        assert (snap.call_count, snap.failure_count, snap.slow_call_count) == (calls, fails, slow)
        assert snap.consecutive_failures == self.model.consecutive
        assert snap.total_stale == self.model.stale
        event(f"reached {snap.state.value}")
        if self.model.state == "half_open" and self.model.probe_failed:
            event("half_open with a failed probe")

    @invariant()
    def probes_within_budget(self) -> None:
        assert self.breaker.snapshot().probes_in_flight <= self.breaker.config.half_open_max_calls


BreakerVersusModel.TestCase.settings = settings(
    max_examples=400,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_breaker_matches_model = BreakerVersusModel.TestCase
