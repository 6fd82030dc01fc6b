"""Model-based test: a three-scope RateLimiter against exact per-scope references.

Hypothesis drives a :class:`~buttress.RateLimiter` (user → org → global, each scope with a
random algorithm, limit and window) and a model made of the references in
``ratelimit_reference.py`` through random sequences of time steps, requests, peeks, refunds
and resets on a ManualClock, and checks every decision and that refusals change nothing.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from ratelimit_reference import Reference, RefFixedWindow, RefSlidingWindow, RefTokenBucket

import buttress as bt

F = Fraction
TICK = 64

USERS = ["u1", "u2", "u3"]
ORGS = ["o1", "o2"]
SCOPES = ["user", "org", "global"]

scope_specs = st.tuples(
    st.sampled_from(["token_bucket", "fixed_window", "sliding_window"]),
    st.integers(1, 12),
    st.integers(16, 320),  # window, in ticks of 1/64 s
)


def reference(algorithm: str, limit: int, window: Fraction) -> Reference:
    if algorithm == "token_bucket":
        return RefTokenBucket(F(limit), window, F(limit))
    if algorithm == "fixed_window":
        return RefFixedWindow(F(limit), window)
    return RefSlidingWindow(F(limit), window)


class LimiterMachine(RuleBasedStateMachine):
    START = F(0)  # where the clock starts

    def __init__(self) -> None:
        super().__init__()
        self.now = self.START
        self.clock = bt.ManualClock(float(self.now))
        self.models: list[Reference] = []
        self.limiter: bt.RateLimiter
        self.decisions = 0

    @initialize(specs=st.tuples(scope_specs, scope_specs, scope_specs))
    def build(self, specs: tuple[tuple[str, int, int], ...]) -> None:
        scopes = []
        for name, (algorithm, limit, ticks) in zip(SCOPES, specs, strict=True):
            window = F(ticks, TICK)
            scopes.append(bt.Scope(name, limit, float(window), algorithm=algorithm))  # type: ignore[arg-type]
            self.models.append(reference(algorithm, limit, window))
        self.limiter = bt.RateLimiter(scopes, clock=self.clock, namespace="model")

    def ids(self, user: str, org: str) -> list[str]:
        return [user, org, "*"]

    def context(self, user: str, org: str) -> dict[str, Any]:
        return {"user_id": user, "org": org}

    def stored(self, user: str, org: str) -> list[Any]:
        backend = self.limiter.backend
        assert isinstance(backend, bt.MemoryBackend)
        keys = ["model:default:user:" + user, "model:default:org:" + org, "model:default:global"]
        return [backend.get(k) for k in keys]

    @rule(ticks=st.integers(0, 200))
    def advance(self, ticks: int) -> None:
        self.now += F(ticks, TICK)
        self.clock.set(float(self.now))

    @rule(user=st.sampled_from(USERS), org=st.sampled_from(ORGS), cost=st.integers(1, 5))
    def request(self, user: str, org: str, cost: int) -> None:
        before = self.stored(user, org)
        d = self.limiter.try_acquire(self.context(user, org), cost)
        self.decisions += 1
        ids = self.ids(user, org)
        fits = [m.fits(i, self.now, F(cost)) for m, i in zip(self.models, ids, strict=True)]
        assert d.allowed == all(fits), (d, fits)
        if d.allowed:
            for m, i in zip(self.models, ids, strict=True):
                m.charge(i, self.now, F(cost))
            assert d.retry_after == 0.0
        else:
            assert self.stored(user, org) == before, "a refusal changed a scope"
            refusing = {SCOPES[i] for i, ok in enumerate(fits) if not ok}
            assert d.scope in refusing
            assert d.retry_after > 0
        statuses = d.scopes
        assert [s.scope for s in statuses] == SCOPES
        assert [s.key for s in statuses] == [user, org, None]
        for s, m, i in zip(statuses, self.models, ids, strict=True):
            assert s.remaining == m.remaining(i, self.now)

    @rule(user=st.sampled_from(USERS), org=st.sampled_from(ORGS), cost=st.integers(1, 5))
    def peek(self, user: str, org: str, cost: int) -> None:
        before = self.stored(user, org)
        d = self.limiter.peek(self.context(user, org), cost)
        ids = self.ids(user, org)
        assert d.allowed == all(
            m.fits(i, self.now, F(cost)) for m, i in zip(self.models, ids, strict=True)
        )
        assert self.stored(user, org) == before, "peek changed a scope"

    @rule(user=st.sampled_from(USERS), org=st.sampled_from(ORGS), cost=st.integers(1, 5))
    def refund(self, user: str, org: str, cost: int) -> None:
        self.limiter.refund(self.context(user, org), cost)
        for m, i in zip(self.models, self.ids(user, org), strict=True):
            m.refund(i, self.now, F(cost))

    @rule(user=st.sampled_from(USERS))
    def reset_user(self, user: str) -> None:
        self.limiter.reset({"user": user})  # identifies the user scope only
        self.models[0].reset(user)

    @rule()
    def reset_global(self) -> None:
        self.limiter.reset(scope="global")
        self.models[2].reset("*")

    @invariant()
    def counts_add_up(self) -> None:
        if not hasattr(self, "limiter"):
            return
        snap = self.limiter.snapshot()
        assert snap.admitted + snap.denied == self.decisions
        assert snap.denied == sum(s.denied for s in snap.scopes)


class WallClockLimiterMachine(LimiterMachine):
    """The same at a wall-clock-sized time (2026: one float step is 238 ns), exact on the
    1/64 s grid, as a clock read from ``time.time()`` would make it."""

    START = F(1_767_225_600) + F(1, 8)


LimiterMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
WallClockLimiterMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=40, deadline=None
)
test_limiter_matches_the_model = LimiterMachine.TestCase
test_limiter_matches_the_model_at_wall_clock_times = WallClockLimiterMachine.TestCase
