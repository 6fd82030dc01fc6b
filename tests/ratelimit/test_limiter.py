"""RateLimiter's API: scopes and ids, decisions, peek/refund/reset, decorator, adaptive, stats."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from pathlib import Path

import pytest

import buttress as bt
from buttress.ratelimit import Algorithm, Outcome, State, TokenBucket


def limiter(clock: bt.ManualClock, *scopes: bt.Scope, **kw: object) -> bt.RateLimiter:
    return bt.RateLimiter(scopes, clock=clock, **kw)  # type: ignore[arg-type]


def hierarchy(
    clock: bt.ManualClock, user: int = 3, org: int = 5, glob: int = 100
) -> bt.RateLimiter:
    return limiter(
        clock,
        bt.Scope("user", user, 1.0),
        bt.Scope("org", org, 1.0),
        bt.Scope("global", glob, 1.0),
    )


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"limit": 0, "window": 1.0}, "user.limit"),
        ({"limit": 10, "window": -1.0}, "user.window"),
        ({"limit": 10, "window": math.inf}, "user.window"),
        ({"limit": True, "window": 1.0}, "user.limit"),
        ({"limit": 10, "window": 1.0, "algorithm": "leaky"}, "user.algorithm"),
        ({"limit": 10, "window": 1.0, "algorithm": "fixed_window", "burst": 5}, "user.burst"),
        ({"limit": 10, "window": 1.0, "burst": 0}, "user.burst"),
        ({"limit": 10, "window": 1.0, "min_limit": 2}, "user.min_limit"),
        ({"limit": 10, "window": 1.0, "by": "a:b"}, "user.by"),
        ({"limit": 10, "window": 1.0, "algorithm": "adaptive", "min_limit": 20}, "user.limit"),
        ({"limit": 10, "window": 1.0, "algorithm": "adaptive", "min_limit": 0.5}, "user.min_limit"),
        ({"limit": 10, "window": 1.0, "algorithm": "adaptive", "decrease": 1.0}, "user.decrease"),
        ({"limit": 10, "window": 1.0, "algorithm": "adaptive", "cooldown": -1}, "user.cooldown"),
    ],
)
def test_bad_scope_settings_name_the_setting(kwargs: dict[str, object], path: str) -> None:
    with pytest.raises(bt.ConfigError) as info:
        bt.Scope("user", **kwargs)  # type: ignore[arg-type]
    assert info.value.path == path


@pytest.mark.parametrize("setting", ["latency_budget", "stats_window"])
@pytest.mark.parametrize("value", [0, -1.0, math.inf, math.nan, True, "1"])
def test_a_latency_budget_and_a_stats_window_are_finite_and_positive(
    clock: bt.ManualClock, setting: str, value: object
) -> None:
    with pytest.raises(bt.ConfigError, match="finite number > 0") as info:
        limiter(clock, bt.Scope("user", 5, 1.0), **{setting: value})
    assert info.value.path == setting


def test_bad_limiter_settings_name_the_setting(clock: bt.ManualClock) -> None:
    user = bt.Scope("user", 10, 1.0)
    with pytest.raises(bt.ConfigError, match="at least one Scope"):
        bt.RateLimiter([])
    with pytest.raises(bt.ConfigError, match=r"duplicate scope name 'user'.*by="):
        bt.RateLimiter([user, bt.Scope("user", 100, 60.0)])
    with pytest.raises(bt.ConfigError) as info:
        bt.RateLimiter([user], namespace="a:b")
    assert info.value.path == "namespace"
    with pytest.raises(bt.ConfigError) as info:
        bt.RateLimiter([user], latency_budget=0)
    assert info.value.path == "latency_budget"
    with pytest.raises(bt.ConfigError) as info:
        bt.RateLimiter(["user"])  # type: ignore[list-item]
    assert info.value.path == "scopes[0]"
    with pytest.raises(bt.ConfigError, match="burst"):
        bt.Scope("user", 10, 1.0, algorithm="sliding_window", burst=20)


def test_scope_defaults() -> None:
    assert bt.Scope("user", 10, 1.0).by == "user"
    assert bt.Scope("global", 10, 1.0).shared
    assert bt.Scope("tenant_pool", 10, 1.0, by=None).shared
    adaptive = bt.Scope("api", 100, 1.0, algorithm="adaptive")
    assert (adaptive.min_limit, adaptive.max_limit, adaptive.increase) == (10.0, 100, 9.0)


# -- ids and keys ------------------------------------------------------------------------------


def test_context_fills_scopes_by_name_or_name_id(clock: bt.ManualClock) -> None:
    rl = hierarchy(clock, user=1)
    assert rl.try_acquire({"user": "u1", "org": "o1"})
    # user_id / org_id (what protect() passes) fill the same scopes
    d = rl.try_acquire({"user_id": "u1", "org_id": "o1"})
    assert not d
    assert d.scope == "user"
    assert d.key == "u1"
    assert rl.try_acquire({"user_id": 7, "org_id": "o1"}).allowed  # int ids work


def test_missing_or_bad_ids_are_clear_errors(clock: bt.ManualClock) -> None:
    rl = hierarchy(clock)
    # The request's fault (a client error): a missing id, an id of the wrong type.
    with pytest.raises(bt.ContextError, match=r"scope 'org' needs an id.*'org_id'") as missing:
        rl.try_acquire({"user": "u1"})
    assert (missing.value.scope, missing.value.id_name) == ("org", "org")
    assert isinstance(missing.value, ValueError)
    with pytest.raises(bt.ContextError, match="needs an id"):
        rl.try_acquire({"user_id": "u1", "org_id": None})
    with pytest.raises(bt.ContextError, match=r"key\.user: ids are str or int") as wrong:
        rl.try_acquire({"user": ["u1"], "org": "o1"})
    assert (wrong.value.scope, wrong.value.id_name) == ("user", "user")
    with pytest.raises(bt.ContextError, match="must be an id"):
        rl.try_acquire(3.5)  # type: ignore[arg-type]
    # The calling code's fault, whatever the request: a key of a shape the limiter never takes.
    with pytest.raises(bt.ConfigError, match="pass a mapping such as"):
        rl.try_acquire("u1")  # two kinds of id: a bare id is ambiguous
    shared = limiter(clock, bt.Scope("global", 10, 1.0))
    with pytest.raises(bt.ConfigError, match="takes no id"):
        shared.try_acquire("u1")
    for error in (missing.value, wrong.value):
        assert not isinstance(error, bt.ConfigError)  # a handler for 500s does not catch it


def test_a_bare_id_fills_every_scope_that_takes_that_id(clock: bt.ManualClock) -> None:
    rl = limiter(
        clock,
        bt.Scope("user", 10, 1.0),
        bt.Scope("user_hourly", 12, 3600.0, by="user"),
        bt.Scope("global", 1000, 1.0),
    )
    admitted = 0
    for _ in range(40):  # 10/s allows far more over 40 s; the hourly rate caps it
        admitted += rl.try_acquire("u1").allowed
        clock.advance(1.0)
    assert admitted == 12
    d = rl.try_acquire("u1")
    assert d.scope == "user_hourly"
    assert d.key == "u1"
    assert rl.try_acquire("u2")  # another user is untouched


def test_shared_scopes_need_no_id(clock: bt.ManualClock) -> None:
    rl = limiter(clock, bt.Scope("global", 2, 1.0))
    assert rl.try_acquire()
    assert rl.try_acquire(None)
    d = rl.try_acquire({})
    assert not d
    assert d.scope == "global"
    assert d.key is None


def test_ids_cannot_collide_across_scopes_or_limiters(clock: bt.ManualClock) -> None:
    backend = bt.MemoryBackend()
    a = limiter(clock, bt.Scope("user", 1, 1.0), bt.Scope("org", 1, 1.0), backend=backend)
    b = limiter(clock, bt.Scope("user", 1, 1.0), backend=backend, name="other")
    assert a.try_acquire({"user": "x", "org": "x"})  # same id in two scopes: two keys
    assert b.try_acquire("x")  # same scope name in another limiter: another key
    assert backend.key_count() == 3


# -- decisions ---------------------------------------------------------------------------------


def test_an_admitted_decision_names_the_tightest_scope(clock: bt.ManualClock) -> None:
    rl = hierarchy(clock, user=3, org=5)
    d = rl.try_acquire({"user": "u1", "org": "o1"}, cost=2)
    assert d
    assert d == bt.Decision(True, 1, 3, 2 / 3, 0.0, "user")
    assert d.index == 0
    assert [(s.scope, s.remaining) for s in d.scopes] == [("user", 1), ("org", 3), ("global", 98)]


def test_a_refused_decision_names_the_scope_with_the_longest_wait(clock: bt.ManualClock) -> None:
    rl = limiter(clock, bt.Scope("user", 2, 1.0), bt.Scope("org", 2, 10.0))
    assert rl.try_acquire({"user": "u1", "org": "o1"}, 2)
    d = rl.try_acquire({"user": "u1", "org": "o1"})
    assert not d
    assert d.scope == "org"
    assert d.key == "o1"
    assert d.retry_after == pytest.approx(5.0)  # org refills one unit in 5 s, user in 0.5 s
    user, org = d.scopes
    assert (user.allowed, org.allowed) == (False, False)
    assert user.retry_after == pytest.approx(0.5)


def test_a_cost_above_the_limit_never_fits(clock: bt.ManualClock) -> None:
    rl = limiter(clock, bt.Scope("user", 5, 1.0))
    d = rl.try_acquire("u1", cost=6)
    assert not d
    assert d.retry_after == math.inf
    assert d.remaining == 5
    with pytest.raises(bt.RateLimitExceeded) as info:
        rl.acquire("u1", cost=6, timeout=100)
    assert info.value.retry_after is None
    assert info.value.scope == "user"
    assert clock.monotonic() == 0.0  # did not wait for what can never come


@pytest.mark.parametrize("timeout", [0.0, 100.0, None])
def test_a_cost_above_the_limit_raises_with_no_retry_time(
    clock: bt.ManualClock, timeout: float | None
) -> None:
    rl = limiter(clock, bt.Scope("user", 5, 1.0))

    @rl.limit(key="u1", cost=10, timeout=timeout)
    def handle() -> None:
        raise AssertionError("refused calls never run")

    for call in (handle, lambda: rl.acquire("u1", cost=10, timeout=timeout)):
        with pytest.raises(bt.RateLimitExceeded) as info:
            call()
        assert info.value.retry_after is None  # never, rather than "in inf seconds"
        assert "inf" not in str(info.value)
        assert info.value.scope == "user"
        assert info.value.decision is not None
        assert info.value.decision.retry_after == math.inf


async def test_a_cost_above_the_limit_raises_with_no_retry_time_async(
    clock: bt.ManualClock,
) -> None:
    rl = limiter(clock, bt.Scope("user", 5, 1.0))

    @rl.limit(key="u1", cost=10)
    async def handle() -> None:
        raise AssertionError("refused calls never run")

    with pytest.raises(bt.RateLimitExceeded) as info:
        await handle()
    assert info.value.retry_after is None
    assert "inf" not in str(info.value)
    with pytest.raises(bt.RateLimitExceeded) as info:
        await rl.acquire_async("u1", cost=10, timeout=100)
    assert info.value.retry_after is None
    assert "inf" not in str(info.value)


@pytest.mark.parametrize("cost", [0, -1, math.nan, math.inf, True, "1"])
def test_bad_costs_are_refused(clock: bt.ManualClock, cost: object) -> None:
    rl = limiter(clock, bt.Scope("user", 5, 1.0))
    with pytest.raises(bt.ConfigError) as info:
        rl.try_acquire("u1", cost)  # type: ignore[arg-type]
    assert info.value.path == "cost"


@pytest.mark.parametrize("timeout", [-1, math.nan, True, "1"])
def test_bad_timeouts_are_refused(clock: bt.ManualClock, timeout: object) -> None:
    rl = limiter(clock, bt.Scope("user", 5, 1.0))
    with pytest.raises(bt.ConfigError) as info:
        rl.acquire("u1", timeout=timeout)  # type: ignore[arg-type]
    assert info.value.path == "timeout"
    with pytest.raises(bt.ConfigError) as info:
        rl.limit(timeout=timeout)  # type: ignore[arg-type]
    assert info.value.path == "timeout"


def test_an_infinite_timeout_is_no_deadline(clock: bt.ManualClock) -> None:
    rl = limiter(clock, bt.Scope("user", 1, 10.0))
    assert rl.acquire("u1", timeout=math.inf)
    assert rl.acquire("u1", timeout=math.inf)  # waits its turn, as with timeout=None
    assert clock.monotonic() == pytest.approx(10.0)


def test_fractional_costs(clock: bt.ManualClock) -> None:
    rl = limiter(clock, bt.Scope("bytes", 1.0, 1.0, algorithm="fixed_window", by=None))
    assert [rl.try_acquire(None, 0.25).allowed for _ in range(5)] == [True] * 4 + [False]


def test_decision_value_semantics() -> None:
    d = bt.Decision(False, 0, 10, 1.5, 0.25, "user", key="u1")
    assert not d
    assert d.key == "u1"
    assert d.scopes == ()
    assert d == bt.Decision(False, 0, 10, 1.5, 0.25, "user")
    assert hash(d) == hash(bt.Decision(False, 0, 10, 1.5, 0.25, "user"))
    assert "retry_after=0.25" in repr(d)
    assert "scope='user'" in repr(d)


# -- peek, refund, reset -----------------------------------------------------------------------


def test_peek_consumes_nothing_and_counts_nothing(clock: bt.ManualClock) -> None:
    rl = hierarchy(clock, user=2)
    for _ in range(5):
        assert rl.peek({"user": "u1", "org": "o1"}, cost=2)
    assert not rl.peek({"user": "u1", "org": "o1"}, cost=3)
    assert rl.snapshot().admitted == rl.snapshot().denied == 0
    assert rl.try_acquire({"user": "u1", "org": "o1"}, cost=2)


def test_refund_gives_back_to_every_scope(clock: bt.ManualClock) -> None:
    rl = hierarchy(clock, user=2, org=2, glob=2)
    ctx = {"user": "u1", "org": "o1"}
    assert rl.try_acquire(ctx, 2)
    rl.refund(ctx, 2)
    assert [s.remaining for s in rl.peek(ctx, 1).scopes] == [1, 1, 1]
    rl.refund(ctx, 100)  # never beyond a full allowance
    assert [s.remaining for s in rl.peek(ctx, 1).scopes] == [1, 1, 1]


def test_a_refund_gives_back_only_what_still_limits() -> None:
    # Each limiter charges its whole allowance at 0.9 s, in the window [0, 1).
    def charged(algorithm: str) -> tuple[bt.RateLimiter, bt.ManualClock]:
        clock = bt.ManualClock(start=0.9)
        scope = bt.Scope("user", 10, 1.0, algorithm=algorithm)  # type: ignore[arg-type]
        rl = bt.RateLimiter(scope, clock=clock)
        assert rl.try_acquire("u1", 10)
        return rl, clock

    # Fixed window: once [0, 1) is over its count limits nothing, and nothing is refunded.
    fixed, clock = charged("fixed_window")
    clock.set(1.1)
    assert fixed.peek("u1").remaining == 9
    fixed.refund("u1", 10)
    assert fixed.peek("u1").remaining == 9
    # Sliding window: at 1.1 the previous window still weighs 10 * 0.9 = 9 units; the refund
    # comes off it (the current window's count is empty) and gives those 9 back.
    sliding, clock = charged("sliding_window")
    clock.set(1.1)
    assert sliding.peek("u1").remaining == 0
    sliding.refund("u1", 10)
    assert sliding.peek("u1").remaining == 9
    # Once both windows have ended, a refund finds nothing to give back.
    sliding, clock = charged("sliding_window")
    clock.set(2.5)
    sliding.refund("u1", 10)
    assert sliding.backend.get("buttress:default:user@s1:u1") is None  # type: ignore[attr-defined]
    assert sliding.peek("u1", 10)


def test_reset_restores_the_identified_scopes_only(clock: bt.ManualClock) -> None:
    rl = hierarchy(clock, user=1, org=10, glob=3)
    assert rl.try_acquire({"user": "u1", "org": "o1"})
    rl.reset({"user": "u1"})
    assert rl.try_acquire({"user": "u1", "org": "o1"})  # user scope fresh again
    assert rl.try_acquire({"user": "u2", "org": "o1"})
    assert not rl.try_acquire({"user": "u3", "org": "o1"})  # global (3) is spent: not reset
    rl.reset(scope="global")
    assert rl.try_acquire({"user": "u3", "org": "o1"})
    rl.reset({"user": "u1", "org": "o1"}, scope="org")
    with pytest.raises(bt.ConfigError, match="no scope named 'team'"):
        rl.reset(scope="team")


def test_clear_forgets_only_this_limiter(clock: bt.ManualClock) -> None:
    backend = bt.MemoryBackend()
    a = limiter(clock, bt.Scope("user", 1, 1.0), backend=backend, name="a")
    b = limiter(clock, bt.Scope("user", 1, 1.0), backend=backend, name="b")
    assert a.try_acquire("u1")
    assert b.try_acquire("u1")
    a.clear()
    assert a.try_acquire("u1")
    assert not b.try_acquire("u1")


async def test_async_twins(clock: bt.ManualClock) -> None:
    rl = hierarchy(clock, user=1)
    ctx = {"user": "u1", "org": "o1"}
    assert await rl.peek_async(ctx)
    assert await rl.try_acquire_async(ctx)
    assert not await rl.try_acquire_async(ctx)
    await rl.refund_async(ctx)
    assert await rl.try_acquire_async(ctx)
    await rl.reset_async(ctx)
    assert await rl.try_acquire_async(ctx)


# -- the decorator -----------------------------------------------------------------------------


def test_decorator_sync(clock: bt.ManualClock) -> None:
    rl = limiter(clock, bt.Scope("user", 2, 1.0))

    @rl.limit(key=lambda user, **_: user, cost=lambda user, weight=1: weight)
    def handle(user: str, weight: int = 1) -> str:
        return f"ok {user}"

    assert handle("u1") == "ok u1"
    with pytest.raises(bt.RateLimitExceeded) as info:
        handle("u1", weight=2)
    assert info.value.scope == "user"
    assert info.value.key == "u1"
    assert info.value.retry_after == pytest.approx(0.5)
    assert handle("u2", weight=2) == "ok u2"
    assert handle.__name__ == "handle"


async def test_decorator_async_waits_when_given_a_timeout(clock: bt.ManualClock) -> None:
    rl = limiter(clock, bt.Scope("global", 1, 1.0))

    @rl.limit(timeout=5.0)
    async def job() -> float:
        return clock.monotonic()

    assert await job() == 0.0
    assert await job() == 1.0  # waited on the clock for the refill
    assert asyncio.iscoroutinefunction(job)

    @rl.limit()
    async def impatient() -> None:
        raise AssertionError("must not run")

    with pytest.raises(bt.RateLimitExceeded):
        await impatient()


# -- telemetry and snapshot --------------------------------------------------------------------


def test_decisions_emit_allowed_and_denied(clock: bt.ManualClock, event_log: object) -> None:
    rl = hierarchy(clock, user=1)
    rl.try_acquire({"user": "u1", "org": "o1"})
    rl.try_acquire({"user": "u1", "org": "o1"})
    rl.peek({"user": "u1", "org": "o1"})
    allowed = event_log.named("buttress", "rate_limiter", "allowed")  # type: ignore[attr-defined]
    denied = event_log.named("buttress", "rate_limiter", "denied")  # type: ignore[attr-defined]
    assert len(allowed) == 1
    assert len(denied) == 1
    m, md = denied[0]
    assert md == {"limiter": "default", "namespace": "buttress", "scope": "user", "key": "u1"}
    assert m["retry_after"] == pytest.approx(1.0)
    assert m["cost"] == 1


def test_snapshot(clock: bt.ManualClock) -> None:
    rl = limiter(
        clock,
        bt.Scope("user", 2, 1.0, algorithm="fixed_window"),
        bt.Scope("org", 10, 1.0, algorithm="sliding_window"),
        name="api",
        namespace="svc",
    )
    for _ in range(3):
        rl.try_acquire({"user": "u1", "org": "o1"})
    snap = rl.snapshot()
    assert (snap.name, snap.namespace, snap.algorithm) == ("api", "svc", "mixed")
    assert (snap.admitted, snap.denied, snap.keys, snap.waiting) == (2, 1, 2, 0)
    assert [(s.name, s.denied, s.limit) for s in snap.scopes] == [("user", 1, 2), ("org", 0, 10)]
    assert snap.performance_rating == 1.0
    assert snap.decisions_in_window == 3
    assert snap.to_dict()["scopes"][0]["algorithm"] == "fixed_window"


class ProbeBackend(bt.MemoryBackend):
    """A memory backend that takes ``delay`` seconds on the manual clock per decision, asks
    for ``time_base`` time, and records the ``now`` of each decision."""

    def __init__(self, clock: bt.ManualClock, delay: float = 0.0, base: str = "monotonic"):
        super().__init__()
        self.clock = clock
        self.delay = delay
        self.base = base
        self.seen: list[float] = []

    @property
    def time_base(self) -> str:  # type: ignore[override]
        return self.base

    def decide(
        self,
        keys: Sequence[str],
        algorithms: Sequence[Algorithm],
        cost: float,
        now: float,
        commit: bool = True,
    ) -> Outcome:
        self.seen.append(now)
        self.clock.advance(self.delay)
        return super().decide(keys, algorithms, cost, now, commit)


def test_performance_rating_is_the_share_of_decisions_within_budget(
    clock: bt.ManualClock,
) -> None:
    backend = ProbeBackend(clock)
    rl = limiter(
        clock,
        bt.Scope("user", 1000, 1.0),
        bt.Scope("global", 10_000, 1.0),
        backend=backend,
        latency_budget=0.01,
        stats_window=10.0,
    )
    ctx = {"user": "u1"}
    for i in range(64):
        backend.delay = 0.02 if i % 4 == 0 else 0.001
        rl.try_acquire(ctx)
    # One decision in 16 is timed in memory: samples 0, 16, 32, 48 are all slow ones.
    assert rl.snapshot().performance_rating == 0.0
    for _ in range(64):
        backend.delay = 0.001
        rl.try_acquire(ctx)
    assert rl.snapshot().performance_rating == 0.5
    clock.advance(30.0)  # the window moves on
    backend.delay = 0.0
    rl.try_acquire(ctx)
    snap = rl.snapshot()
    assert snap.performance_rating == 1.0
    assert snap.decisions_in_window == 1


# -- adaptive ----------------------------------------------------------------------------------


def test_adaptive_limit_follows_recorded_outcomes(clock: bt.ManualClock, event_log: object) -> None:
    rl = limiter(clock, bt.Scope("api", 100, 1.0, algorithm="adaptive", slow_call=0.5, by=None))
    rl.record(ok=False)
    assert rl.current_limit("api") == 50.0
    assert rl.algorithms[0].limit == 50
    rl.record(ok=True, latency=0.9)  # slow, but within the cooldown: one drop per second
    assert rl.current_limit("api") == 50.0
    clock.advance(1.0)
    rl.record(ok=True, latency=0.9)
    assert rl.current_limit("api") == 25.0
    admitted = sum(rl.try_acquire().allowed for _ in range(100))
    assert admitted == 25  # decisions use the current limit
    for _ in range(2000):
        rl.record(ok=True, latency=0.01)
    assert rl.current_limit("api") == 100.0
    reasons = [
        md["reason"] for _, md in event_log.named("buttress", "rate_limiter", "limit_changed")
    ]  # type: ignore[attr-defined]
    assert reasons == ["error", "slow_call", "recovered"]
    assert rl.snapshot().scopes[0].limit == 100.0


def test_adaptive_limit_follows_an_attached_breaker(clock: bt.ManualClock) -> None:
    breaker = bt.CircuitBreaker(
        "db",
        clock=clock,
        failure_threshold=6,
        degradation_threshold=2,
        failure_rate_threshold=None,
        degradation_rate_threshold=None,
        reset_timeout=5.0,
        shed_probability={"light": 0.0, "medium": 0.0, "heavy": 0.0},
    )
    rl = limiter(
        clock,
        bt.Scope(
            "db", 100, 1.0, algorithm="adaptive", min_limit=5, decrease=0.5, cooldown=0.0, by=None
        ),
    )
    detach = rl.attach_breaker(breaker)

    def fail() -> None:
        with pytest.raises(ZeroDivisionError):
            breaker.call(lambda: 1 / 0)

    fail()
    fail()  # degraded (light)
    assert breaker.state is bt.BreakerState.DEGRADED
    assert rl.current_limit("db") == 50.0
    for _ in range(100):
        rl.record(ok=True)  # no growth while the breaker is not closed
    assert rl.current_limit("db") == 50.0
    limits = []
    while breaker.state is not bt.BreakerState.OPEN:
        fail()
        limits.append(rl.current_limit("db"))
    assert limits == [50.0, 25.0, 12.5, 5.0]  # each heavier level halves it; open: the minimum
    assert rl.current_limit("db") == 5.0
    breaker.reset()
    assert breaker.state is bt.BreakerState.CLOSED
    rl.record(ok=True)
    assert rl.current_limit("db") > 5.0
    detach()
    breaker.force_open()
    assert rl.current_limit("db") > 5.0


def test_attach_breaker_needs_an_adaptive_scope(clock: bt.ManualClock) -> None:
    rl = limiter(clock, bt.Scope("user", 10, 1.0))
    with pytest.raises(bt.ConfigError, match="adaptive"):
        rl.attach_breaker(bt.CircuitBreaker("x", clock=clock))
    rl.record(ok=False)  # no adaptive scope: nothing to do, no error


def test_attaching_an_open_breaker_drops_the_limit_at_once(clock: bt.ManualClock) -> None:
    breaker = bt.CircuitBreaker("db", clock=clock)
    breaker.force_open()
    rl = limiter(clock, bt.Scope("db", 100, 1.0, algorithm="adaptive", by=None))
    rl.attach_breaker(breaker, scope="db")
    assert rl.current_limit("db") == 10.0


def test_breakers_steer_an_adaptive_limit_together(clock: bt.ManualClock) -> None:
    def scope() -> bt.Scope:
        return bt.Scope("db", 100, 1.0, algorithm="adaptive", decrease=0.5, cooldown=0.0, by=None)

    a, b = bt.CircuitBreaker("a", clock=clock), bt.CircuitBreaker("b", clock=clock)
    rl = limiter(clock, scope())
    detach_a = rl.attach_breaker(a)
    assert rl.attach_breaker(a) is detach_a  # twice: nothing more
    rl.attach_breaker(b)
    a.force_open()
    b.force_open()
    b.reset()  # b closes, a is still open: the limit stays held
    for _ in range(100):
        rl.record(ok=True)
    assert rl.current_limit("db") == 10.0
    detach_a()  # nothing holds it now: it grows again
    for _ in range(100):
        rl.record(ok=True)
    assert rl.current_limit("db") > 10.0

    # Detached while its breaker is open: the limit is no longer held.
    rl = limiter(clock, scope())
    c = bt.CircuitBreaker("c", clock=clock)
    detach_c = rl.attach_breaker(c)
    c.force_open()
    detach_c()
    for _ in range(100):
        rl.record(ok=True)
    assert rl.current_limit("db") > 10.0


def test_breakers_are_registered_per_scope_steered_and_detach_handles_stay_their_own(
    clock: bt.ManualClock,
) -> None:
    def adaptive() -> bt.RateLimiter:
        scope = bt.Scope("db", 100, 1.0, algorithm="adaptive", decrease=0.5, cooldown=0.0, by=None)
        return limiter(clock, scope)

    # scope=None and scope="db" steer the same scope: one registration, one hold.
    rl = adaptive()
    a, b = bt.CircuitBreaker("a", clock=clock), bt.CircuitBreaker("b", clock=clock)
    detach = rl.attach_breaker(a)
    assert rl.attach_breaker(a, scope="db") is detach
    rl.attach_breaker(b, scope="db")
    a.force_open()
    b.force_open()
    b.reset()  # a (attached without a scope) still holds "db"
    for _ in range(100):
        rl.record(ok=True)
    assert rl.current_limit("db") == 10.0

    # An old handle, called after re-attaching, leaves the new attachment alone.
    rl = adaptive()
    c = bt.CircuitBreaker("c", clock=clock)
    old = rl.attach_breaker(c)
    old()
    new = rl.attach_breaker(c)
    old()  # stale: does nothing
    assert len(c._listeners) == 1
    new()
    assert len(c._listeners) == 0


def test_one_breaker_attached_twice_shrinks_the_limit_once(clock: bt.ManualClock) -> None:
    breaker = bt.CircuitBreaker(
        "db",
        clock=clock,
        failure_threshold=6,
        degradation_threshold=2,
        failure_rate_threshold=None,
        degradation_rate_threshold=None,
        shed_probability={"light": 0.0, "medium": 0.0, "heavy": 0.0},
    )
    rl = limiter(
        clock,
        bt.Scope("db", 100, 1.0, algorithm="adaptive", decrease=0.5, cooldown=0.0, by=None),
    )
    rl.attach_breaker(breaker)
    rl.attach_breaker(breaker)  # e.g. two services sharing the breaker and the limiter
    for _ in range(2):
        with pytest.raises(ZeroDivisionError):
            breaker.call(lambda: 1 / 0)
    assert breaker.state is bt.BreakerState.DEGRADED
    assert rl.current_limit("db") == 50.0


# -- time base and maintenance ---------------------------------------------------------------


def test_a_shared_backend_gets_wall_clock_time(clock: bt.ManualClock) -> None:
    backend = ProbeBackend(clock, base="wall")
    rl = limiter(clock, bt.Scope("user", 10, 1.0), backend=backend)
    rl.try_acquire("u1")
    assert backend.seen == [clock.time()]


def test_maintain_sweeps_expired_keys(clock: bt.ManualClock) -> None:
    rl = limiter(clock, bt.Scope("user", 10, 1.0))
    for i in range(100):
        rl.try_acquire(f"u{i}")
    clock.advance(0.05)
    assert rl.maintain() == 0  # each key holds 0.1 s of usage
    clock.advance(0.05)
    assert rl.maintain() == 100
    assert rl.backend.key_count() == 0


def test_repr(clock: bt.ManualClock) -> None:
    rl = hierarchy(clock)
    assert repr(rl) == "<RateLimiter buttress:default [user=3/1s, org=5/1s, global=100/1s]>"
    tb = rl.algorithms[0]
    assert isinstance(tb, TokenBucket)
    assert tb.interval == pytest.approx(1 / 3)
    state: State = (1.0, 0.0)
    refunded = tb.refund(state, 0.5, 1)
    assert refunded is not None and refunded[0] == pytest.approx(2 / 3)


def test_a_backend_may_be_given_as_its_url(tmp_path: Path) -> None:
    limiter = bt.RateLimiter(bt.Scope("user", 1, 60.0), backend=f"sqlite://{tmp_path / 'l.db'}")
    assert type(limiter.backend).__name__ == "SQLiteBackend"
    assert limiter.try_acquire("u1") and not limiter.try_acquire("u1")
    limiter.backend.close()  # type: ignore[attr-defined]
    assert isinstance(
        bt.RateLimiter(bt.Scope("user", 1, 1.0), backend="memory").backend, bt.MemoryBackend
    )
    with pytest.raises(bt.ConfigError, match="backend"):
        bt.RateLimiter(bt.Scope("user", 1, 1.0), backend="mongo://x")
    # Whatever is wrong with the URL, the error names the setting given: backend (not the
    # backend's own parameters, path or url_or_client, which the caller never wrote).
    for url, message in (
        (f"sqlite://{tmp_path / 'missing' / 'dir' / 'l.db'}", "unable to open"),
        ("sqlite://:memory:", "its own empty database"),
        ("sqlite://", "needs a file path"),
        ("redis://localhost:notaport/0", "not a Redis URL"),
        ("redis://localhost:6379/zero", "whole number"),  # redis-py would use database 0
        ("redis://localhost:6379/0?decode_responses=True", "decode_responses"),
        ("redis://localhost:6379?db=zero", "whole number"),
    ):
        with pytest.raises(bt.ConfigError, match=message) as info:
            bt.RateLimiter(bt.Scope("user", 1, 1.0), backend=url)
        assert info.value.path == "backend", url
    with pytest.raises(bt.ConfigError, match="must be a backend"):
        bt.RateLimiter(bt.Scope("user", 1, 1.0), backend=42)  # type: ignore[arg-type]
