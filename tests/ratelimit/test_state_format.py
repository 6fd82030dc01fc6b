"""Stored state names its algorithm and format; unreadable state; cancelled Redis decisions.

* Every storage key carries its scope's algorithm and state format (``user@t1``), so a key
  written by another version (the untagged keys of earlier releases, or another algorithm for
  the same scope during a rolling deploy) is never read as this one's.
* A value that is no state of its algorithm (garbage, not finite) is decided on as a spent
  state, counted (event, snapshot, metric), never an outage: every other key decides normally
  and ``fail_open`` never admits past a limit.
* Two versions with different algorithms for one scope keep two states: a client alternating
  between them gets at most the sum of the two limits (docs/rate-limiting.md, "Changing a
  scope's algorithm").
* An asyncio decision cancelled after its script was sent to Redis is refunded once it
  answers: a cancelled call costs nothing.

Real SQLite files and the shared Redis (its own key prefix per test).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import sqlite3
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from ratelimit_backends import close_backend, make_backend, unique_prefix

import buttress as bt
from buttress.exporters._metrics import _empty, limiter_samples
from buttress.ratelimit._redis import redis_key

T0 = 1_800_000_000.0  # a wall-clock time near today's
NAN = float("nan")


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url, socket_timeout=2.0)
    try:
        yield c
    finally:
        c.close()


class Store:
    """One backend of a test, and how to write raw values under its keys behind its back."""

    def __init__(self, kind: str, tmp_path: Path, redis_url: str | None) -> None:
        self.kind = kind
        self.prefix = unique_prefix("format")
        self.path = tmp_path / "limits.db"
        if kind == "redis":
            assert redis_url is not None
            self.backend = make_backend(kind, redis_url, self.prefix, time_source="caller")
            self.client: Any = redis.Redis.from_url(redis_url, socket_timeout=2.0)
        else:
            self.backend = make_backend(kind, str(self.path))

    def write(self, key: str, state: tuple[float, ...] | bytes) -> None:
        """Store ``state`` under the storage key ``key`` as the backend would (a tuple), or
        raw bytes as they are."""
        if self.kind == "redis":
            # A stored value is the state's doubles, then when its TTL runs (common.lua).
            raw = (
                state
                if isinstance(state, bytes)
                else struct.pack(f"<{len(state) + 1}d", *state, state[0] + 1.0)
            )
            self.client.set(redis_key(self.prefix, key), raw, px=3_600_000)
            return
        blob = state if isinstance(state, bytes) else struct.pack(f"<{len(state)}d", *state)
        expires = state[0] if not isinstance(state, bytes) and math.isfinite(state[0]) else T0 + 1e4
        with sqlite3.connect(self.path) as conn:
            conn.execute(
                "INSERT OR REPLACE INTO buttress_ratelimit (key, expires, state) VALUES (?, ?, ?)",
                (key, expires, blob),
            )
        conn.close()

    def close(self) -> None:
        if self.kind == "redis":
            self.backend.clear("")
            self.client.close()
        close_backend(self.backend)


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    s = Store(request.param, tmp_path, url)
    try:
        yield s
    finally:
        s.close()


def outage_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "is down" in r.getMessage()]


@pytest.mark.parametrize("policy", ["fail_open", "fail_closed"])
def test_old_and_unreadable_states_never_take_the_limiter_down_or_over_admit(
    store: Store, policy: str, event_log: Any, caplog: pytest.LogCaptureFixture
) -> None:
    clock = bt.ManualClock(start=T0)
    rl = bt.RateLimiter(
        [
            bt.Scope("user", 5, 60.0, algorithm="fixed_window"),
            bt.Scope("global", 10_000, 60.0, algorithm="sliding_window"),
        ],
        backend=store.backend,
        clock=clock,
        namespace="fmt",
        name="api",
        failure_policy=policy,  # type: ignore[arg-type]
    )
    # What an earlier release stored, untagged, when this scope was a token bucket: its state
    # under the key it used then; a fixed window cannot read it (IndexError, a script error).
    store.write("fmt:api:user:old", (T0 + 30.0,))
    store.write("fmt:api:global", (T0 + 30.0,))
    # Values under this version's own keys that are no fixed-window state at all.
    store.write(rl._resolver.keys("garbage")[0], b"\x01\x02\x03")
    store.write(rl._resolver.keys("nan")[0], (NAN, 3.0))
    store.write(rl._resolver.keys("negative")[0], (T0 + 30.0, -1e9))  # would admit a billion
    ids = ["old", "garbage", "nan", "negative", *(f"u{i}" for i in range(20))]
    admitted = dict.fromkeys(ids, 0)
    with caplog.at_level(logging.WARNING, logger="buttress"):
        for _ in range(8):  # 8 rounds against a limit of 5: every id ends refused
            for ident in ids:
                admitted[ident] += rl.try_acquire(ident).allowed  # never raises
        assert all(admitted[f"u{i}"] == 5 for i in range(20))  # every other key, normally
        assert admitted["old"] == 5  # the old key is not this scope's state: never read
        # Unreadable: decided as spent (the whole allowance used when found), never as empty.
        assert admitted["garbage"] == admitted["nan"] == admitted["negative"] == 0
        # ... and stored so: the next window decides normally.
        clock.advance(60.0)
        assert [rl.try_acquire(i).allowed for i in ("garbage", "nan", "negative")] == [True] * 3
        assert sum(rl.try_acquire("garbage").allowed for _ in range(9)) == 4
        rl.check_backend()
    snap = rl.snapshot()
    assert (snap.backend_status, snap.backend_errors, snap.unreadable_states) == ("ok", 0, 3)
    assert not outage_records(caplog)
    assert not event_log.named("buttress", "rate_limiter", "backend_down", limiter="api")
    found = event_log.named("buttress", "rate_limiter", "state_unreadable", namespace="fmt")
    assert sorted(md["key"] for _, md in found) == ["garbage", "nan", "negative"]
    assert {(md["scope"], md["action"]) for _, md in found} == {("user", "replaced")}
    warnings = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(warnings) == 3


def test_a_token_bucket_state_whose_low_part_is_no_rounding_is_unreadable(store: Store) -> None:
    """A token bucket stores its TAT as (tat, low), low within one step below tat: any other
    low would lock the id out for ever (far ahead) or hand it a full bucket (far behind)."""
    clock = bt.ManualClock(start=T0)
    rl = bt.RateLimiter(
        bt.Scope("user", 5, 60.0), backend=store.backend, clock=clock, namespace="fmt", name="tb"
    )
    store.write(rl._resolver.keys("ahead")[0], (T0, 1e9))
    store.write(rl._resolver.keys("behind")[0], (T0 + 30.0, -1e9))
    counts = [sum(rl.try_acquire(i).allowed for _ in range(6)) for i in ("ahead", "behind", "new")]
    assert counts == [0, 0, 5]
    assert rl.snapshot().unreadable_states == 2
    clock.advance(60.0)  # spent when found: full again one window later
    counts = [sum(rl.try_acquire(i).allowed for _ in range(6)) for i in ("ahead", "behind")]
    assert counts == [5, 5]


def test_unreadable_states_in_asyncio_decisions_are_no_outage(store: Store) -> None:
    clock = bt.ManualClock(start=T0)
    rl = bt.RateLimiter(
        bt.Scope("user", 3, 60.0),
        backend=store.backend,
        clock=clock,
        namespace="fmt",
        name="aio",
        failure_policy="fail_open",
    )
    store.write(rl._resolver.keys("bad")[0], struct.pack("<3d", 1.0, 2.0, 3.0))

    async def run() -> list[int]:
        counts = []
        for ident in ("bad", "good"):
            decisions = [await rl.try_acquire_async(ident) for _ in range(6)]
            counts.append(sum(d.allowed for d in decisions))
        return counts

    assert asyncio.run(run()) == [0, 3]
    snap = rl.snapshot()
    assert (snap.backend_status, snap.backend_errors, snap.unreadable_states) == ("ok", 0, 1)


def test_unreadable_states_are_counted_in_the_metrics(tmp_path: Path) -> None:
    backend = bt.SQLiteBackend(tmp_path / "limits.db")
    rl = bt.RateLimiter(bt.Scope("user", 5, 60.0), backend=backend, namespace="m", name="api")
    with sqlite3.connect(tmp_path / "limits.db") as conn:
        conn.execute(
            "INSERT INTO buttress_ratelimit VALUES (?, ?, ?)",
            (rl._resolver.keys("x")[0], 1e12, b"not a state"),
        )
    conn.close()
    assert not rl.try_acquire("x")
    samples = _empty()
    limiter_samples("m", {"api": rl.snapshot()}, samples)
    assert samples["limiter.unreadable_states"] == [(("m", "api"), 1.0)]
    assert samples["limiter.backend_up"] == [(("m", "api"), 1.0)]
    backend.close()


def test_peeks_and_refunds_on_unreadable_states_are_no_outage(store: Store) -> None:
    clock = bt.ManualClock(start=T0)
    rl = bt.RateLimiter(
        bt.Scope("user", 4, 60.0, algorithm="sliding_window"),
        backend=store.backend,
        clock=clock,
        namespace="fmt",
        name="peek",
        failure_policy="fail_closed",
    )
    key = rl._resolver.keys("a")[0]
    store.write(key, b"\xff" * 40)  # five doubles: a sliding window's state holds four
    d = rl.peek("a")
    assert (d.allowed, d.remaining) == (False, 0)  # a peek writes nothing...
    store.write(key, b"\xff" * 40)
    rl.refund("a", 1)  # ...a refund gives back from the spent state, stored readable
    assert rl.try_acquire("a")
    assert not rl.try_acquire("a")
    snap = rl.snapshot()
    assert (snap.backend_status, snap.unreadable_states) == ("ok", 2)


@pytest.mark.parametrize("policy", ["fail_open", "fail_closed"])
def test_a_script_error_on_one_key_is_that_requests_failure_only(
    redis_url: str, policy: str, event_log: Any, caplog: pytest.LogCaptureFixture
) -> None:
    backend = bt.RedisBackend(redis_url, prefix=unique_prefix("script"), time_source="caller")
    rl = bt.RateLimiter(
        bt.Scope("user", 3, 60.0),
        backend=backend,
        clock=bt.ManualClock(start=T0),
        namespace="fmt",
        name="script",
        failure_policy=policy,  # type: ignore[arg-type]
    )
    script = backend._decide

    def decide(keys: list[bytes], args: Any) -> Any:  # the script fails on one key's data
        if keys[0].endswith(b":cursed"):
            raise redis.ResponseError("user_script:123: attempt to perform arithmetic on nil")
        return script(keys=keys, args=args)

    backend._decide = decide
    try:
        with caplog.at_level(logging.WARNING, logger="buttress"):
            for n in range(3):
                if policy == "fail_closed":
                    with pytest.raises(bt.BackendError, match="user_script"):
                        rl.try_acquire("cursed")
                else:
                    assert rl.try_acquire("cursed")  # the policy, for this request alone
                assert (
                    sum(rl.try_acquire(f"u{n}.{i}").allowed for i in range(3) for _ in range(4))
                    == 9
                )
        snap = rl.snapshot()
        assert (snap.backend_status, snap.backend_errors, snap.unreadable_states) == ("ok", 0, 3)
        assert not outage_records(caplog)
        found = event_log.named("buttress", "rate_limiter", "state_unreadable", limiter="script")
        assert {(md["key"], md["action"]) for _, md in found} == {("cursed", "policy")}
    finally:
        backend.clear("")
        backend.close()


def test_a_scripts_own_error_is_one_decision_not_an_outage() -> None:
    from buttress.ratelimit._redis import _script_error

    # What Redis answers when a script fails on its own arithmetic, and when the server
    # refuses a write inside one (an outage, as outside a script).
    assert _script_error(redis.ResponseError("user_script:42: attempt to index a nil value"))
    assert not _script_error(redis.exceptions.OutOfMemoryError("OOM ... @user_script:150."))
    assert not _script_error(redis.exceptions.ReadOnlyError("READONLY ... @user_script:150."))
    assert not _script_error(redis.ResponseError("ERR unknown command"))


# -- a rolling deploy: two algorithms for one scope ------------------------------------------


@pytest.fixture(params=["memory", "sqlite", "redis"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "memory":
        yield bt.MemoryBackend()
        return
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    s = Store(request.param, tmp_path, url)
    try:
        yield s.backend
    finally:
        s.close()


def test_two_algorithms_for_one_scope_admit_at_most_the_sum_of_their_limits(
    shared: Any,
) -> None:
    clock = bt.ManualClock(start=T0)

    def version(algorithm: str) -> bt.RateLimiter:
        return bt.RateLimiter(
            bt.Scope("user", 10, 1.0, algorithm=algorithm),  # type: ignore[arg-type]
            backend=shared,
            clock=clock,
            namespace="deploy",
            name="api",
            failure_policy="fail_closed",
        )

    old, new = version("fixed_window"), version("token_bucket")
    # At one instant: each version's whole allowance, and not one more.
    assert sum(rl.try_acquire("u1").allowed for _ in range(50) for rl in (old, new)) == 20
    # Over 20 seconds of requests every 10 ms, each sent to either version at random: the old
    # one admits at most 10 per aligned second (its window), the new one at most its burst
    # plus its rate over any stretch: 10 + 10 per second.
    rng = random.Random(16)
    start = clock.time()
    admitted: dict[str, list[float]] = {"old": [], "new": []}
    for _ in range(2000):
        clock.advance(0.01)
        name = rng.choice(("old", "new"))
        if (old if name == "old" else new).try_acquire("u1"):
            admitted[name].append(clock.time())
    per_second: dict[int, int] = {}
    for t in admitted["old"]:
        per_second[math.floor(t)] = per_second.get(math.floor(t), 0) + 1
    assert max(per_second.values()) <= 10
    times = admitted["new"]
    for i, a in enumerate(times):  # every stretch [a, b] between two admissions
        for j in range(i, len(times)):
            assert j - i + 1 <= 10 + 10 * (times[j] - a) + 1e-6
    duration = clock.time() - start
    assert len(admitted["old"]) + len(admitted["new"]) <= (10 * 21) + (10 + 10 * duration) + 1
    # And both versions did admit: each keeps its own state, neither resets the other.
    assert len(admitted["old"]) > 100 and len(admitted["new"]) > 100


# -- cancelled asyncio decisions on Redis ----------------------------------------------------


def test_cancelled_async_decisions_on_redis_leave_no_charge(
    redis_url: str, redis_client: redis.Redis
) -> None:
    prefix = unique_prefix("cancel")
    backend = bt.RedisBackend(redis_url, prefix=prefix, time_source="caller")
    clock = bt.ManualClock(start=T0)
    limit = 1_000_000
    rl = bt.RateLimiter(
        bt.Scope("user", limit, 3600.0, algorithm="fixed_window"),
        backend=backend,
        clock=clock,
        namespace="cancel",
        failure_policy="fail_closed",
    )
    rng = random.Random(1616)

    async def run() -> tuple[int, int]:
        completed = cancelled = 0
        for _ in range(100):
            tasks = [asyncio.create_task(rl.try_acquire_async("u1")) for _ in range(8)]
            # Cancel each after a random number of event-loop iterations: before its script
            # is sent, while Redis runs it, or as its answer arrives; a quarter never (so that
            # enough complete, whatever the round trip's length and the batches' sizes).
            points = [rng.randrange(16) for _ in tasks]
            for step in range(12):
                for task, point in zip(tasks, points, strict=True):
                    if point == step:
                        task.cancel()
                await asyncio.sleep(0)  # real-time: one loop turn (a cancel point), no wait
            for task in tasks:
                try:
                    decision = await task
                except asyncio.CancelledError:
                    cancelled += 1
                else:
                    assert decision.allowed
                    completed += 1
            # The decisions whose callers were cancelled, until they answer, and the refunds
            # of those that charged: let them finish (the event loop's end would cancel them).
            while pending := {*getattr(backend, "_giving_back", ()), *rl._giving_back}:
                await asyncio.wait(pending)
        return completed, cancelled

    try:
        completed, cancelled = asyncio.run(run())
        assert cancelled >= 300 and completed >= 50  # several hundred cancellations
        used = backend.decide(rl._resolver.keys("u1"), rl.algorithms, 1, T0, False)[1][0]
        assert used is not None
        print(f"{cancelled} cancelled, {completed} completed, {used[1]:g} charged")
        assert used[1] == completed  # exactly the completed calls are charged
    finally:
        backend.clear("")
        backend.close()


@pytest.mark.parametrize(
    "algorithm",
    [
        bt.ratelimit.TokenBucket(7, 3.0),
        bt.ratelimit.FixedWindow(7, 3.0),
        bt.ratelimit.SlidingWindow(7, 3.0),
    ],
)
def test_the_spent_state_is_the_same_on_sqlite_and_redis(
    algorithm: Any, tmp_path: Path, redis_url: str
) -> None:
    from buttress.ratelimit._format import UnreadableState, spent

    now = T0 + 1.234567
    stored = []
    for kind in ("sqlite", "redis"):
        s = Store(kind, tmp_path, redis_url)
        try:
            s.write("x:y:user@t1:a", b"\x00" * 7)
            with pytest.raises(UnreadableState) as caught:
                s.backend.decide(["x:y:user@t1:a"], [algorithm], 1, now, True)
            assert caught.value.outcome is not None and caught.value.repaired
            allowed, states, _ = caught.value.outcome
            assert not allowed
            # What was stored is what the decision saw: a peek reads it back as it is.
            assert s.backend.decide(["x:y:user@t1:a"], [algorithm], 0, now, False)[1] == states
            stored.append(states[0])
        finally:
            s.close()
    assert stored[0] == stored[1] == spent(algorithm, now)
