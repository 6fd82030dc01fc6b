"""The Redis backend on a real Redis Cluster of three primaries (started by the test).

Every key of one limiter carries the same hash tag, ``{namespace:name}``, so a decision's
scopes all live in one slot and stay exact: one script, one node, one round trip. Different
limiters land in different slots, spread over the nodes.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio
from ratelimit_backends import RedisClusterOfOurOwn, hammer_threads, unique_prefix
from redis.crc import key_slot

import buttress as bt
from buttress.ratelimit._redis import redis_key

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterOfOurOwn]:
    try:
        c = RedisClusterOfOurOwn(str(tmp_path_factory.mktemp("cluster")))
    except FileNotFoundError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and {exc}")
        pytest.skip(str(exc))
    for s in c.servers:  # a RedisServer needs its binary too
        assert Path(s.binary).exists()
    c.start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def client(cluster: RedisClusterOfOurOwn) -> Iterator[redis.RedisCluster]:
    port = cluster.servers[0].port
    c = redis.RedisCluster(host="127.0.0.1", port=port, socket_timeout=2.0)
    try:
        yield c
    finally:
        c.close()


def three_scopes(backend: bt.RedisBackend, name: str) -> bt.RateLimiter:
    return bt.RateLimiter(
        [
            bt.Scope("user", 30, 3600.0),
            bt.Scope("org", 100, 3600.0, algorithm="fixed_window"),
            bt.Scope("global", 400, 3600.0, algorithm="sliding_window"),
        ],
        backend=backend,
        namespace="cluster",
        name=name,
        failure_policy="fail_closed",
    )


def test_every_scope_stays_exact_on_a_cluster(client: redis.RedisCluster) -> None:
    backend = bt.RedisBackend(client, prefix=unique_prefix("cluster"))
    rl = three_scopes(backend, "threads")
    contexts = [{"user": f"u{i}", "org": f"o{i % 2}"} for i in range(8)]
    admitted = hammer_threads(rl, contexts, attempts=40)
    assert sum(admitted) == 200  # two orgs of 100; 8 users x 30 = 240 would allow more
    assert all(a <= 30 for a in admitted)
    assert backend.key_count() == 8 + 2 + 1
    assert backend.clear("cluster:threads:") == 11


def test_a_limiter_lives_in_one_slot_and_limiters_spread(client: redis.RedisCluster) -> None:
    prefix = unique_prefix("cluster")
    backend = bt.RedisBackend(client, prefix=prefix)
    nodes = set()
    for n in range(12):
        rl = three_scopes(backend, f"l{n}")
        assert rl.try_acquire({"user": "u1", "org": "o1"})
        keys = [redis_key(prefix, f"cluster:l{n}:{k}") for k in ("user:u1", "org:o1", "global")]
        (slot,) = {key_slot(k.encode()) for k in keys}
        nodes.add(client.nodes_manager.get_node_from_slot(slot).port)
    assert len(nodes) > 1  # twelve limiters did not all land on one node
    assert backend.clear("cluster:") == 36


async def test_the_asyncio_cluster_client(cluster: RedisClusterOfOurOwn) -> None:
    port = cluster.servers[0].port
    aclient = redis.asyncio.RedisCluster(host="127.0.0.1", port=port, socket_timeout=2.0)
    backend = bt.RedisBackend(aclient, prefix=unique_prefix("cluster"))
    rl = three_scopes(backend, "aio")
    try:
        ctx = {"user": "u1", "org": "o1"}
        results = [(await rl.try_acquire_async(ctx)).allowed for _ in range(32)]
        assert results == [True] * 30 + [False] * 2
        await rl.reset_async(ctx)
        assert (await rl.peek_async(ctx)).allowed
    finally:
        await aclient.aclose()


async def test_concurrent_decisions_are_batched_slot_by_slot(
    cluster: RedisClusterOfOurOwn,
) -> None:
    """Tasks deciding on six limiters at once (six slots, over the nodes): a batch only ever
    holds one slot's decisions (else the cluster refuses the call), and each limiter admits
    exactly its allowance."""
    port = cluster.servers[0].port
    aclient = redis.asyncio.RedisCluster(host="127.0.0.1", port=port, socket_timeout=2.0)
    backend = bt.RedisBackend(aclient, prefix=unique_prefix("cluster"))
    limiters = [three_scopes(backend, f"batch{n}") for n in range(6)]
    try:

        async def caller(rl: bt.RateLimiter, user: str) -> int:
            ctx = {"user": user, "org": "o1"}
            return sum([(await rl.try_acquire_async(ctx)).allowed for _ in range(20)])

        admitted = await asyncio.gather(*(caller(rl, f"u{i}") for rl in limiters for i in range(3)))
        # Per limiter: three users of 30 each asking 20 times: all 60 admitted.
        assert admitted == [20] * 18
        decisions = [await rl.try_acquire_async({"user": "u0", "org": "o1"}) for rl in limiters]
        assert [d.remaining for d in decisions] == [9] * 6
    finally:
        await aclient.aclose()
