"""The memory backend under load: exact across threads, bounded in keys."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import buttress as bt
from buttress import events
from buttress.ratelimit import TokenBucket

EV_KEY_CAP = ("buttress", "rate_limiter", "key_cap_reached")

THREADS = 16
ATTEMPTS = 300


@pytest.fixture
def busy_switching() -> Iterator[None]:
    """Switch threads every microsecond, so races get every chance to show."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


@pytest.mark.usefixtures("busy_switching")
@pytest.mark.parametrize("algorithm", ["token_bucket", "fixed_window", "sliding_window"])
@pytest.mark.parametrize(
    ("user", "org", "glob", "tightest"),
    [
        (100, 400, 1000, "global"),  # users allow 1600, orgs 1600, global 1000
        (50, 400, 5000, "user"),  # 16 users x 50 = 800
        (100, 150, 5000, "org"),  # 4 orgs x 150 = 600
    ],
)
def test_sixteen_threads_admit_exactly_the_tightest_allowance(
    algorithm: str, user: int, org: int, glob: int, tightest: str
) -> None:
    clock = bt.ManualClock()  # frozen: nothing refills while the threads hammer
    rl = bt.RateLimiter(
        [
            bt.Scope("user", user, 60.0, algorithm=algorithm),  # type: ignore[arg-type]
            bt.Scope("org", org, 60.0, algorithm=algorithm),  # type: ignore[arg-type]
            bt.Scope("global", glob, 60.0, algorithm=algorithm),  # type: ignore[arg-type]
        ],
        clock=clock,
    )
    admitted = [0] * THREADS
    start = threading.Barrier(THREADS)

    def hammer(i: int) -> None:
        context = {"user_id": f"u{i}", "org_id": f"o{i % 4}"}
        start.wait()
        for _ in range(ATTEMPTS):
            admitted[i] += rl.try_acquire(context).allowed

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    allowance = {"global": glob, "user": user * THREADS, "org": org * 4}
    assert sum(admitted) == allowance[tightest] == min(allowance.values())
    assert all(n <= user for n in admitted)
    for o in range(4):
        assert sum(admitted[i] for i in range(THREADS) if i % 4 == o) <= org
    if tightest == "user":
        assert admitted == [user] * THREADS
    snap = rl.snapshot()
    assert snap.admitted == sum(admitted)
    assert snap.denied == THREADS * ATTEMPTS - sum(admitted)


def test_a_million_keys_stay_under_the_cap() -> None:
    cap = 50_000
    backend = bt.MemoryBackend(max_keys=cap)
    tb = TokenBucket(10, 1.0)  # a key charged once holds state for 0.1 s
    decide = backend.decide
    cap_events: list[dict[str, float]] = []
    events.attach("test.key_cap", [EV_KEY_CAP], lambda _n, m, _md: cap_events.append(dict(m)))
    try:
        # Phase 1: a key every 10 µs keeps ~10,000 live keys; the sweep keeps the dict near
        # that (at most about twice), far below the cap, and never evicts.
        now = 0.0
        peak = 0
        for i in range(500_000):
            now += 1e-5
            assert decide((f"a{i}",), (tb,), 1, now)[0]
            if i % 5_000 == 0:
                peak = max(peak, backend.key_count())
        stats = backend.snapshot()
        assert peak <= 25_000
        assert stats.evicted == 0
        assert stats.swept >= 470_000
        assert not cap_events
        # Phase 2: time stands still, every key stays live: the cap holds by eviction.
        for i in range(500_000):
            assert decide((f"b{i}",), (tb,), 1, now)[0]
            if i % 5_000 == 0:
                assert backend.key_count() <= cap
        stats = backend.snapshot()
        assert stats.keys <= cap
        assert stats.evicted >= 500_000 - cap
        assert len(cap_events) == 1
        assert cap_events[0]["max_keys"] == cap
    finally:
        events.detach("test.key_cap")
    # The newest keys survived; evicted ones come back as fresh keys.
    stored = backend.get("b499999")
    assert stored is not None and stored[0] == pytest.approx(now + 0.1)
    assert backend.get("b0") is None


def test_a_limiter_over_a_capped_backend(clock: bt.ManualClock) -> None:
    backend = bt.MemoryBackend(max_keys=100)
    rl = bt.RateLimiter(bt.Scope("user", 10, 1.0), backend=backend, clock=clock)
    for i in range(1000):
        assert rl.try_acquire(f"u{i}")
        assert backend.key_count() <= 100
    assert rl.snapshot().keys == 100


def test_key_cap_reached_marks_every_episode_without_maintain(clock: bt.ManualClock) -> None:
    backend = bt.MemoryBackend(max_keys=100)
    rl = bt.RateLimiter(bt.Scope("user", 10, 1.0), backend=backend, clock=clock)
    cap_events: list[dict[str, float]] = []
    events.attach("test.key_cap", [EV_KEY_CAP], lambda _n, m, _md: cap_events.append(dict(m)))
    try:
        for i in range(150):  # episode 1: 50 evictions, one event
            rl.try_acquire(f"a{i}")
        assert len(cap_events) == 1
        # Every key expires; a trickle of new keys lets the sweep drop the old ones (no
        # maintain() call): the count falls far below the cap, and the episode is over.
        clock.advance(10.0)
        for i in range(200):
            clock.advance(1.0)
            rl.try_acquire(f"t{i}")
        assert backend.key_count() < 90
        for i in range(150):  # episode 2
            rl.try_acquire(f"b{i}")
        assert len(cap_events) == 2
        assert backend.key_count() == 100
    finally:
        events.detach("test.key_cap")


def test_eviction_takes_the_key_closest_to_expiry_and_spares_the_request() -> None:
    backend = bt.MemoryBackend(max_keys=3)
    tb = TokenBucket(1, 10.0)  # one unit per 10 s: each state lives 10 s per unit used
    for key, t in (("a", 5.0), ("b", 0.0), ("c", 5.0)):
        assert backend.decide([key], [tb], 1, t)[0]
    # At t=6: a and c expire at 15, b at 10: b is the one nearest to being forgotten.
    assert backend.decide(["d"], [tb], 1, 6.0)[0]
    assert backend.get("b") is None
    assert {k for k in "acd" if backend.get(k) is not None} == {"a", "c", "d"}
    assert backend.snapshot().evicted == 1
    # A request's own keys are never evicted to make room for each other.
    small = bt.MemoryBackend(max_keys=1)
    assert small.decide(["x", "y"], [tb, tb], 1, 0.0)[0]
    assert small.key_count() == 2  # the cap gives way rather than split a decision


def test_a_limiter_refuses_a_cap_below_its_scope_count(clock: bt.ManualClock) -> None:
    scopes = [bt.Scope("user", 10, 1.0), bt.Scope("org", 10, 1.0), bt.Scope("global", 99, 1.0)]
    with pytest.raises(bt.ConfigError, match=r"number of scopes \(3\)") as info:
        bt.RateLimiter(scopes, backend=bt.MemoryBackend(max_keys=2), clock=clock)
    assert info.value.path == "backend.max_keys"
    # At the cap exactly, the promise holds: never more than max_keys keys after a call.
    backend = bt.MemoryBackend(max_keys=3)
    rl = bt.RateLimiter(scopes, backend=backend, clock=clock)
    for i in range(20):
        assert rl.try_acquire({"user": f"u{i}", "org": f"o{i}"})
        assert backend.key_count() <= 3
    # A configuration names the setting where it is set.
    config = {
        "rate_limiting": {
            "max_keys": 2,
            "limiters": {"api": {"scopes": [{"name": n, "limit": 5} for n in ("a", "b", "c")]}},
        }
    }
    with pytest.raises(bt.ConfigError) as info:
        bt.Infrastructure("t", config, env={}, background=False)
    assert info.value.path == "rate_limiting.max_keys"


# One operation on a capped backend: ("decide", key numbers), ("wait", seconds),
# ("reset", key numbers), ("clear", prefix) or ("maintain",).
capped_ops = st.lists(
    st.one_of(
        st.tuples(st.just("decide"), st.lists(st.integers(0, 30), min_size=1, max_size=8)),
        st.tuples(st.just("wait"), st.floats(0.0, 3.0)),
        st.tuples(st.just("reset"), st.lists(st.integers(0, 30), max_size=3)),
        st.tuples(st.just("clear"), st.sampled_from(["k1", "k2"])),
        st.tuples(st.just("maintain")),
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(cap=st.integers(1, 8), ops=capped_ops)
def test_the_cap_holds_after_every_call(cap: int, ops: list[tuple[Any, ...]]) -> None:
    # A request may carry up to max_keys keys of its own (a limiter has at most that many
    # scopes); a snapshot of keys deleted since (reset, clear, sweep) must not stop eviction.
    backend = bt.MemoryBackend(max_keys=cap)
    tb = TokenBucket(5, 10.0)
    now = 0.0
    for op in ops:
        if op[0] == "decide":
            keys = list(dict.fromkeys(f"k{n}" for n in op[1]))[:cap]
            backend.decide(keys, [tb] * len(keys), 1, now)
            assert backend.key_count() <= cap
        elif op[0] == "wait":
            now += op[1]
        elif op[0] == "reset":
            backend.reset([f"k{n}" for n in op[1]])
        elif op[0] == "clear":
            backend.clear(op[1])
        else:
            backend.maintain(now)


def test_maintain_and_clear() -> None:
    backend = bt.MemoryBackend()
    tb = TokenBucket(10, 1.0)
    for i in range(3000):
        backend.decide([f"ns:{i}"], [tb], 1, 0.0)
    backend.decide(["other:1"], [tb], 10, 0.0)
    assert backend.maintain(0.05) == 0
    assert backend.maintain(0.1) == 3000
    assert backend.key_count() == 1
    assert backend.clear("ns:") == 0
    assert backend.clear("other:") == 1
    assert repr(backend) == "<MemoryBackend keys=0 max_keys=1000000>"
    with pytest.raises(bt.ConfigError):
        bt.MemoryBackend(max_keys=0)
