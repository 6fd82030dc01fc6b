"""``lua/sync.lua`` and ``lua/override.lua`` give the answers of the pure core (``_core.py``)
on the same inputs: random fleets seeded into a real Redis, one sync each, compared field by
field (the script's clock is Redis's ``TIME``; the core is given the time the script read)."""

from __future__ import annotations

import random
import uuid

import pytest
import redis

from buttress._breaker import BreakerConfig
from buttress._fleet._core import (
    FleetState,
    Override,
    Record,
    Report,
    override,
    step,
    thresholds_for,
)
from buttress._fleet._redis import FleetStore


@pytest.fixture
def store(redis_url: str) -> FleetStore:
    return FleetStore(
        redis.Redis.from_url(redis_url, socket_timeout=1.0), "conf-" + uuid.uuid4().hex[:8]
    )


def server_ms(c: redis.Redis) -> int:
    s, us = c.time()
    return int(s) * 1000 + int(us) // 1000


@pytest.mark.parametrize("seed", range(60))
def test_sync_script_matches_the_core(store: FleetStore, redis_url: str, seed: int) -> None:
    rng = random.Random(seed)
    c = redis.Redis.from_url(redis_url)
    cfg = BreakerConfig(
        failure_threshold=rng.choice([None, 5, 20]),
        degradation_threshold=None,
        failure_rate_threshold=rng.choice([None, 0.5, 0.25]),
        degradation_rate_threshold=None,
        minimum_calls=rng.choice([1, 10]),
        half_open_max_calls=rng.choice([1, 3, 5]),
        reset_timeout=1000.0,
    )
    th = thresholds_for(cfg, quorum=rng.choice([1, 2, 3]), sync_interval=100.0)
    name = f"b{seed}"
    procs, state_key, probes_key, _ = store.keys(name)
    base = server_ms(c)
    epoch = rng.randint(0, 3)
    until = rng.choice([0, base - 50_000, base + 50_000])
    used = rng.randint(0, 5)
    records = {}
    for i in range(rng.randint(0, 6)):
        r = Record(
            base + rng.choice([-50_000, 50_000]),
            rng.randint(0, 30),
            0,
            rng.choice([epoch, max(0, epoch - 1)]),
        )
        r = Record(r.expires_ms, r.calls, rng.randint(0, r.calls), r.epoch)
        records[f"p{i}"] = r
        c.hset(procs, f"p{i}", f"{r.expires_ms} {r.calls} {r.failures} {r.epoch}")
    c.hset(state_key, mapping={"epoch": epoch, "until": until})
    if used:
        c.set(probes_key, used, px=50_000)
    calls = rng.randint(0, 30)
    report = Report(
        calls,
        rng.randint(0, calls),
        rng.choice([epoch, max(0, epoch - 1)]),
        rng.random() < 0.3,
        rng.choice([0, 0, 2, 5]),
    )
    view, ov = store.sync(name, "me", report, th)
    want_state, want_recs, want_used, want_view = step(
        FleetState(epoch, until), records, used, "me", report, th, view.now_ms
    )
    assert view == want_view
    got_epoch, got_until = c.hmget(state_key, "epoch", "until")
    assert FleetState(int(got_epoch), int(got_until)) == want_state
    assert int(c.get(probes_key) or 0) == want_used
    assert sorted(k.decode() for k in c.hkeys(procs)) == sorted(want_recs)
    assert ov == Override()


def test_override_script_matches_the_core(store: FleetStore, redis_url: str) -> None:
    c = redis.Redis.from_url(redis_url)
    want = Override()
    th = thresholds_for(BreakerConfig(), quorum=2, sync_interval=1.0)
    for action in ("disable", "force_open", "disable", "reset", "force_open"):
        gen, at = store.override("b", action, f"why {action}", "me")
        want = override(want, action, f"why {action}", "me", at)
        _, got = store.sync("b", "me", Report(0, 0, 0), th)
        assert got == want and gen == want.generation
    epoch, until = c.hmget(store.keys("b")[1], "epoch", "until")
    assert (int(epoch), int(until)) == (1, 0)  # the reset started an epoch, closed
