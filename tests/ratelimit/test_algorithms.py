"""The pure rate-limit cores against exact references and their own stated bounds."""

from __future__ import annotations

import math
from fractions import Fraction

from hypothesis import example, given, settings
from hypothesis import strategies as st
from ratelimit_reference import RefFixedWindow, RefSlidingWindow, RefTokenBucket

from buttress.ratelimit import (
    FixedWindow,
    SlidingWindow,
    State,
    TokenBucket,
    admit_all,
    decide_all,
)
from buttress.ratelimit._adaptive import AdaptiveLimit, AdaptiveState
from buttress.ratelimit._algorithms import EPSILON

F = Fraction
EPS = F(EPSILON)
TICK = 64  # times and windows are multiples of 1/64 s: exact in binary floating point

limits = st.integers(1, 40)
windows = st.integers(1, 640).map(lambda n: F(n, TICK))  # 1/64 s .. 10 s
steps = st.lists(
    st.tuples(st.integers(0, 160).map(lambda n: F(n, TICK)), st.integers(1, 6)),
    min_size=1,
    max_size=60,
)
# Where the trace starts: at small times (a monotonic clock) and at wall-clock times, where one
# float step is hundreds of nanoseconds (2026 and 2096); all are exact on the 1/64 s grid.
odd_windows = st.sampled_from([0.1, 0.3, 1 / 3, 0.7, 1.1, 2.7, 60.1])
starts = st.sampled_from([F(0), F(1_767_225_600) + F(1, 8), F(4_000_000_000)])


def run(
    algorithm: object, trace: list[tuple[Fraction, int]], start: Fraction
) -> list[tuple[Fraction, int, bool]]:
    """Feed ``(time step, cost)`` pairs through ``algorithm``; returns ``(t, cost, allowed)``."""
    state: State | None = None
    now = start
    out = []
    for dt, cost in trace:
        now += dt
        v = algorithm.decide(state, float(now), cost)  # type: ignore[attr-defined]
        new = algorithm.admit(state, float(now), cost)  # type: ignore[attr-defined]
        assert (new is not None) == v[0], "admit and decide disagree"
        assert new == v[1], "admit and decide store different states"
        if v[0]:
            state = v[1]
        out.append((now, cost, v[0]))
    return out


# -- token bucket ------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    start=starts,
    limit=limits,
    window=windows | odd_windows.map(F),
    burst=st.none() | st.integers(1, 50),
    trace=steps,
)
def test_token_bucket_matches_an_independent_gcra_reference_exactly(
    start: Fraction,
    limit: int,
    window: Fraction,
    burst: int | None,
    trace: list[tuple[Fraction, int]],
) -> None:
    tb = TokenBucket(limit, float(window), burst)
    ref = RefTokenBucket(F(limit), window, F(burst if burst is not None else limit))
    state: State | None = None
    now = start
    for dt, cost in trace:
        now += dt
        allowed, new, remaining, _, retry_after = tb.decide(state, float(now), cost)
        # Exact, but for the documented allowance (EPSILON seconds and units of cost), which
        # a window that is no binary fraction can come within reach of.
        assert allowed == ((ref._level("k", now) + cost - ref.burst) * ref.interval <= EPS)
        if allowed:
            ref.charge("k", now, F(cost))
            state = new
            assert retry_after == 0.0
        else:
            assert_retry(retry_after, ref.retry_after("k", now, F(cost)), now)
        assert remaining == math.floor(ref.burst - ref._level("k", now) + EPS)


def assert_retry(got: float, want: float, now: Fraction) -> None:
    """``got`` is ``want``, made a wait after which ``now + got`` is a float no earlier than
    ``now + want``: at wall-clock times it may be up to one float step (238 ns) longer."""
    step = math.ulp(float(now) + want)
    assert want - 1e-9 <= got <= want + step + 1e-9, (got, want, step)


@settings(max_examples=200, deadline=None)
@given(
    start=starts,
    limit=limits,
    window=windows | odd_windows.map(F),
    burst=st.none() | st.integers(1, 50),
    trace=steps,
)
def test_token_bucket_admits_no_more_than_burst_plus_rate_over_any_interval(
    start: Fraction,
    limit: int,
    window: Fraction,
    burst: int | None,
    trace: list[tuple[Fraction, int]],
) -> None:
    tb = TokenBucket(limit, float(window), burst)
    cap = F(burst if burst is not None else limit)
    admitted = [(t, c) for t, c, ok in run(tb, trace, start) if ok]
    for i, (first, _) in enumerate(admitted):
        total = F(0)
        for end, cost in admitted[i:]:
            total += cost
            assert total <= cap + (end - first) * limit / window


# -- fixed window ------------------------------------------------------------------------------


# At 4e9 the window ending 0.2 us after ``now`` rounded to the nearest double would end
# before it, and the request went to the next window.
@settings(max_examples=300, deadline=None)
@example(start=F(4_000_000_000), limit=1, window=F(0.1), trace=[(F(0), 1), (F(0), 1)])
@given(start=starts, limit=limits, window=windows | odd_windows.map(F), trace=steps)
def test_fixed_window_matches_the_reference_and_no_window_exceeds_its_limit(
    start: Fraction, limit: int, window: Fraction, trace: list[tuple[Fraction, int]]
) -> None:
    fw = FixedWindow(limit, float(window))
    ref = RefFixedWindow(F(limit), window)
    state: State | None = None
    now = start
    per_window: dict[int, int] = {}
    for dt, cost in trace:
        now += dt
        allowed, new, remaining, reset_after, retry_after = fw.decide(state, float(now), cost)
        assert allowed == ref.fits("k", now, F(cost))
        if allowed:
            ref.charge("k", now, F(cost))
            state = new
            index = math.floor(now / window)
            per_window[index] = per_window.get(index, 0) + cost
            assert per_window[index] <= limit
        else:
            assert_retry(retry_after, ref.retry_after("k", now, F(cost)), now)
        assert remaining == ref.remaining("k", now)
        assert_retry(reset_after, float((math.floor(now / window) + 1) * window - now), now)


# -- sliding window ----------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(start=starts, limit=limits, window=windows | odd_windows.map(F), trace=steps)
def test_sliding_window_matches_the_reference_within_its_documented_bound(
    start: Fraction, limit: int, window: Fraction, trace: list[tuple[Fraction, int]]
) -> None:
    sw = SlidingWindow(limit, float(window))
    ref = RefSlidingWindow(F(limit), window)
    state: State | None = None
    now = start
    admitted: list[tuple[Fraction, int]] = []
    for dt, cost in trace:
        now += dt
        allowed, new, remaining, _, _ = sw.decide(state, float(now), cost)
        assert allowed == (ref.estimate("k", now) + cost <= limit + EPS)  # as above
        if allowed:
            ref.charge("k", now, F(cost))
            state = new
            admitted.append((now, cost))
        assert remaining == max(0, math.floor(limit - ref.estimate("k", now) + EPS))
    # The documented bound: each aligned window admits at most ``limit``; a window-long
    # interval ending at fraction f of an aligned window admits at most limit + f * previous.
    by_window: dict[int, int] = {}
    for t, cost in admitted:
        index = math.floor(t / window)
        by_window[index] = by_window.get(index, 0) + cost
    assert all(total <= limit for total in by_window.values())
    for end, _ in admitted:
        index = math.floor(end / window)
        fraction = end / window - index
        inside = sum(c for t, c in admitted if end - window < t <= end)
        assert inside <= limit + fraction * by_window.get(index - 1, 0) + EPS
        assert inside <= 2 * limit


# -- what every algorithm promises ---------------------------------------------------------------

algorithms = st.one_of(
    st.builds(
        TokenBucket,
        limits,
        windows.map(float),
        st.none() | st.integers(1, 50),
    ),
    st.builds(FixedWindow, limits, windows.map(float)),
    st.builds(SlidingWindow, limits, windows.map(float)),
    # Windows that are no binary fraction: ``index * window`` rounds, at wall-clock times by
    # hundreds of nanoseconds.
    st.builds(TokenBucket, limits, odd_windows, st.none() | st.integers(1, 50)),
    st.builds(FixedWindow, limits, odd_windows),
    st.builds(SlidingWindow, limits, odd_windows),
)


probe_costs = st.integers(1, 6)


def replay(
    algorithm: object, trace: list[tuple[Fraction, int]], start: Fraction
) -> tuple[State | None, Fraction]:
    state: State | None = None
    now = start
    for dt, cost in trace:
        now += dt
        new = algorithm.admit(state, float(now), cost)  # type: ignore[attr-defined]
        if new is not None:
            state = new
    return state, now


@settings(max_examples=300, deadline=None)
@given(start=starts, algorithm=algorithms, trace=steps, cost=st.integers(1, 8))
def test_retry_after_is_honest(
    start: Fraction,
    algorithm: TokenBucket | FixedWindow | SlidingWindow,
    trace: list[tuple[Fraction, int]],
    cost: int,
) -> None:
    """Refused with retry_after r: at now + r the same cost fits (and not much earlier)."""
    state, now = replay(algorithm, trace, start)
    allowed, _, _, _, retry = algorithm.decide(state, float(now), cost)
    if allowed:
        assert retry == 0.0
        return
    if math.isinf(retry):
        assert cost > (algorithm.burst if isinstance(algorithm, TokenBucket) else algorithm.limit)
        return
    assert retry > 0
    assert algorithm.decide(state, float(now) + retry, cost)[0]
    if retry > 1e-3:
        assert not algorithm.decide(state, float(now) + retry - 1e-3, cost)[0]


@settings(max_examples=300, deadline=None)
@given(
    start=starts,
    algorithm=algorithms,
    trace=steps,
    probes=st.lists(st.tuples(st.integers(0, 400), probe_costs)),
)
def test_an_expired_state_is_the_same_as_no_state(
    start: Fraction,
    algorithm: TokenBucket | FixedWindow | SlidingWindow,
    trace: list[tuple[Fraction, int]],
    probes: list[tuple[int, int]],
) -> None:
    """Rule 1: once state[0] <= now a backend may drop the key without changing a decision."""
    state, now = replay(algorithm, trace, start)
    if state is None:
        return
    later = float(max(F(state[0]), now))
    for dt, cost in probes:
        t = later + dt / TICK
        with_state = algorithm.decide(state, t, cost)
        without = algorithm.decide(None, t, cost)
        assert with_state[0] == without[0]
        assert with_state[2] == without[2]


@settings(max_examples=300, deadline=None)
@given(
    start=starts,
    algorithm=algorithms,
    trace=steps,
    cost=st.integers(1, 6),
    probes=st.lists(st.tuples(st.integers(0, 400), probe_costs)),
)
def test_a_refund_undoes_the_charge(
    start: Fraction,
    algorithm: TokenBucket | FixedWindow | SlidingWindow,
    trace: list[tuple[Fraction, int]],
    cost: int,
    probes: list[tuple[int, int]],
) -> None:
    state, now = replay(algorithm, trace, start)
    charged = algorithm.admit(state, float(now), cost)
    if charged is None:
        return
    refunded = algorithm.refund(charged, float(now), cost)
    # The time-equivalent of the original state: a token bucket that was full stays full.
    before = state if state is None or state[0] > float(now) else None
    for dt, c in probes:
        t = float(now) + dt / TICK
        assert algorithm.decide(refunded, t, c)[:1] == algorithm.decide(before, t, c)[:1]
        assert algorithm.decide(refunded, t, c)[2] == algorithm.decide(before, t, c)[2]


@settings(max_examples=200, deadline=None)
@given(start=starts, algorithm=algorithms, trace=steps, cost=st.integers(1, 6))
def test_a_refund_never_gives_more_than_a_fresh_key(
    start: Fraction,
    algorithm: TokenBucket | FixedWindow | SlidingWindow,
    trace: list[tuple[Fraction, int]],
    cost: int,
) -> None:
    state, now = replay(algorithm, trace, start)
    refunded = algorithm.refund(state, float(now), cost * 10)
    assert algorithm.decide(refunded, float(now), 1)[2] <= algorithm.decide(None, float(now), 1)[2]


# -- several scopes --------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    start=starts,
    scopes=st.lists(algorithms, min_size=1, max_size=4),
    histories=st.data(),
    cost=st.integers(1, 6),
)
def test_hierarchical_decisions_are_all_or_nothing(
    start: Fraction,
    scopes: list[TokenBucket | FixedWindow | SlidingWindow],
    histories: st.DataObject,
    cost: int,
) -> None:
    now = start
    states: dict[str, State | None] = {}
    keys = [f"scope{i}" for i in range(len(scopes))]
    for key, algorithm in zip(keys, scopes, strict=True):
        state, t = replay(algorithm, histories.draw(steps), start)
        states[key] = state
        now = max(now, t)
    olds, news = admit_all(scopes, keys, states.get, float(now), cost)
    allowed, verdicts = decide_all(scopes, [states[k] for k in keys], float(now), cost)
    assert olds == [states[k] for k in keys]
    singles = [a.decide(states[k], float(now), cost)[0] for a, k in zip(scopes, keys, strict=True)]
    assert allowed == all(singles) == (news is not None)
    if allowed:
        assert news == [v[1] for v in verdicts]
    else:
        assert all(v[1] is None for v in verdicts), "a refusal must write nothing"
        assert any(not v[0] for v in verdicts)
        for v, single in zip(verdicts, singles, strict=True):
            assert v[0] == single


# -- adaptive --------------------------------------------------------------------------------

signals = st.lists(
    st.one_of(
        st.tuples(st.just("ok"), st.floats(0, 2)),
        st.tuples(st.just("error"), st.floats(0, 2)),
        st.tuples(st.just("slow"), st.floats(0, 2)),
        st.tuples(
            st.sampled_from(["closed", "degraded", "open", "half_open", "forced_open"]),
            st.floats(0, 2),
        ),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(
    low=st.integers(1, 50),
    span=st.integers(0, 500),
    increase=st.floats(0.1, 100),
    decrease=st.floats(0.05, 0.95),
    cooldown=st.floats(0, 3),
    trace=signals,
)
def test_adaptive_stays_within_bounds_and_moves_the_right_way(
    low: int,
    span: int,
    increase: float,
    decrease: float,
    cooldown: float,
    trace: list[tuple[str, float]],
) -> None:
    aimd = AdaptiveLimit(low, low + span, increase, decrease, cooldown, slow_call=1.0)
    state = AdaptiveState(float(low + span))
    now = 0.0
    for signal, dt in trace:
        now += dt
        before = state
        if signal in ("ok", "error", "slow"):
            latency = 2.0 if signal == "slow" else 0.1
            state = aimd.record(state, now, signal != "error", latency)
            if signal == "ok":
                assert state.limit >= before.limit
                if not before.held and before.limit < aimd.max_limit:
                    assert state.limit > before.limit
            else:
                assert state.limit <= before.limit
                if now - before.decreased_at >= cooldown and before.limit > aimd.min_limit:
                    assert state.limit < before.limit
        else:
            worse = signal in ("degraded", "open", "forced_open")
            state = aimd.breaker_moved(state, now, signal, worse)
            if signal in ("open", "forced_open"):
                assert state.limit == aimd.min_limit
            elif signal == "degraded" and before.limit > aimd.min_limit:
                assert state.limit < before.limit
            elif signal in ("closed", "half_open"):
                assert state.limit == before.limit
            assert state.held == (signal != "closed")
        assert aimd.min_limit <= state.limit <= aimd.max_limit


def test_adaptive_grows_by_about_increase_per_window_of_full_use() -> None:
    aimd = AdaptiveLimit(10, 1000, increase=10)
    state = AdaptiveState(100.0)
    for _ in range(100):  # one window's worth of successes at limit 100
        state = aimd.record(state, 0.0, True)
    assert 109 < state.limit < 110


def test_adaptive_holds_while_the_breaker_is_not_closed() -> None:
    aimd = AdaptiveLimit(10, 100, increase=10)
    state = aimd.breaker_moved(AdaptiveState(50.0), 0.0, "half_open", False)
    assert aimd.record(state, 1.0, True).limit == 50.0
    state = aimd.breaker_moved(state, 2.0, "closed", False)
    assert aimd.record(state, 3.0, True).limit > 50.0
