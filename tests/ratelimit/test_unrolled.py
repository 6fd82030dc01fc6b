"""The memory backend's unrolled hierarchical decision against ``admit_all``, for each size."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buttress.ratelimit import FixedWindow, SlidingWindow, State, TokenBucket, admit_all
from buttress.ratelimit._unrolled import dict_decider

small = st.integers(1, 6)
windows = st.sampled_from([0.25, 1.0, 2.5])
algorithms = st.one_of(
    st.builds(TokenBucket, small, windows, st.none() | small),
    st.builds(FixedWindow, small, windows),
    st.builds(SlidingWindow, small, windows),
)
# A history per scope: the times and costs spent before the decision under test.
history = st.lists(st.tuples(st.sampled_from([0.0, 0.1, 0.5, 1.0]), small), max_size=6)


@settings(max_examples=400, deadline=None)
@given(
    scopes=st.lists(st.tuples(algorithms, history), min_size=1, max_size=6),
    cost=small,
    late=st.sampled_from([0.0, 0.05, 0.3, 2.0]),
    commit=st.booleans(),
    start=st.sampled_from([0.0, 1_767_225_600.125, 4e9]),  # and at wall-clock times
)
def test_unrolled_decider_matches_admit_all(
    scopes: list[tuple[TokenBucket | FixedWindow | SlidingWindow, list[tuple[float, int]]]],
    cost: int,
    late: float,
    commit: bool,
    start: float,
) -> None:
    states: dict[str, State] = {}
    now = start
    for i, (algorithm, spent) in enumerate(scopes):
        t = start
        for dt, c in spent:
            t += dt
            new = algorithm.admit(states.get(f"k{i}"), t, c)
            if new is not None:
                states[f"k{i}"] = new
        now = max(now, t)
    now += late
    keys = [f"k{i}" for i in range(len(scopes))]
    algs = [a for a, _ in scopes]
    before = dict(states)

    olds, news = admit_all(algs, keys, before.get, now, cost)
    got_olds, allowed = dict_decider(len(keys))(
        states, [a.admit for a in algs], keys, now, cost, commit
    )

    assert list(got_olds) == olds
    assert allowed == (news is not None)
    expected = dict(before)
    if news is not None and commit:
        expected.update(zip(keys, news, strict=True))
    assert states == expected  # all-or-nothing: a refusal or a peek writes nothing


def test_a_decision_has_at_least_one_scope() -> None:
    with pytest.raises(ValueError, match="at least one scope"):
        dict_decider(0)


ids = st.none() | st.sampled_from(["u1", "", "a:b", "ü"]) | st.integers(-3, 3)
contexts = st.dictionaries(st.sampled_from(["user", "user_id", "org", "org_id", "x"]), ids)


@settings(max_examples=300, deadline=None)
@given(context=contexts)
def test_unrolled_keys_match_the_general_path(context: dict[str, object]) -> None:
    """A dict context takes the unrolled reader; any other mapping takes the general loop."""
    import types

    import buttress as bt

    limiter = bt.RateLimiter(
        scopes=[bt.Scope("user", 5, 1.0), bt.Scope("org", 5, 1.0), bt.Scope("global", 5, 1.0)]
    )
    fast = limiter._resolver.read(context.get)
    try:
        general = limiter._keys(types.MappingProxyType(context))
    except bt.ContextError:  # a missing id, or one neither str nor int
        assert fast is None  # the reader never answers what the general path refuses
        return
    if fast is not None:
        assert fast == general
    assert limiter._keys(context) == general
