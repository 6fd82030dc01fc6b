"""The Redis backend on a real server: key layout, TTLs, the server's clock, clients, errors.

Every test uses its own key prefix on the shared server (never FLUSHALL). Outages, the one
round trip per decision and script reloading run on a private redis-server, in
``test_outage.py``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
from ratelimit_backends import unique_prefix, wait_until
from redis.crc import key_slot

import buttress as bt
from buttress.ratelimit import TokenBucket
from buttress.ratelimit._redis import redis_key


@pytest.fixture
def prefix() -> str:
    return unique_prefix("redis")


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url, socket_timeout=2.0)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def backend(redis_url: str, prefix: str) -> Iterator[bt.RedisBackend]:
    b = bt.RedisBackend(redis_url, prefix=prefix)
    try:
        yield b
    finally:
        b.clear("")
        b.close()


def hierarchy(backend: Any, clock: bt.ManualClock | None = None, **kw: Any) -> bt.RateLimiter:
    return bt.RateLimiter(
        [
            bt.Scope("user", 3, 60.0),
            bt.Scope("org", 5, 60.0, algorithm="fixed_window"),
            bt.Scope("global", 100, 60.0, algorithm="sliding_window"),
        ],
        backend=backend,
        clock=clock,
        namespace="shop",
        name="api",
        **kw,
    )


def test_keys_carry_the_namespace_in_one_hash_tag_with_ttls(
    backend: bt.RedisBackend, client: redis.Redis, prefix: str
) -> None:
    rl = hierarchy(backend)
    assert rl.try_acquire({"user": "u1", "org": "o1"})
    keys = sorted(k.decode() for k in client.scan_iter(match=f"{prefix}*"))
    assert keys == [
        f"{prefix}{{shop:api}}:global@s1",  # the scope's algorithm and state format: s1, ...
        f"{prefix}{{shop:api}}:org@f1:o1",
        f"{prefix}{{shop:api}}:user@t1:u1",
    ]
    assert len({key_slot(k.encode()) for k in keys}) == 1  # one slot: one script can touch all
    for key in keys:
        # A TTL on every key, as long as its state lives plus the script's one second of
        # headroom (HEADROOM in common.lua): the sliding window's state lives until the end of
        # the next window, up to two windows (120 s) from now.
        assert 0 < client.pttl(key) <= 121_000
    assert backend.key_count() == 3
    assert rl.snapshot().keys is None  # not counted on a shared server (a SCAN)


def test_ids_cannot_collide_or_move_a_key_to_another_slot(
    backend: bt.RedisBackend, prefix: str
) -> None:
    rl = bt.RateLimiter(
        [bt.Scope("user", 1, 60.0), bt.Scope("user_org", 1, 60.0, by="org")],
        backend=backend,
        namespace="shop",
    )
    tricky = ["a:b", "{x}", "}", "{", "*", "", "ü", "user_org:1", "1"]
    for i, ident in enumerate(tricky):
        # Every id is its own key: the first request of each is admitted.
        assert rl.try_acquire({"user": ident, "org": f"o{i}"}), ident
        redis_keys = [
            redis_key(prefix, f"shop:default:user@t1:{ident}"),
            redis_key(prefix, f"shop:default:user_org@t1:o{i}"),
        ]
        assert {key_slot(k.encode()) for k in redis_keys} == {
            key_slot(f"{prefix}{{shop:default}}".encode())
        }
    assert backend.key_count() == 2 * len(tricky)


def test_clear_escapes_glob_characters(redis_url: str, client: redis.Redis) -> None:
    base = unique_prefix("glob")
    starry = bt.RedisBackend(redis_url, prefix=base + "p*[")
    plain = bt.RedisBackend(redis_url, prefix=base + "pX[")
    bucket = TokenBucket(10, 60.0)
    try:
        for b in (starry, plain):
            b.decide(["ns:l:user:u1", "ns:l:user:u2"], [bucket, bucket], 1, 0.0)
        assert starry.clear("ns:l:") == 2
        assert plain.key_count() == 2  # a pattern built unescaped would have matched these
        assert starry.key_count() == 0
    finally:
        plain.clear("")
        for b in (starry, plain):
            b.close()


def test_idle_keys_vanish(backend: bt.RedisBackend, client: redis.Redis, prefix: str) -> None:
    rl = bt.RateLimiter(bt.Scope("user", 1, 0.3), backend=backend, namespace="idle")
    assert rl.try_acquire("u1")
    key = redis_key(prefix, "idle:default:user@t1:u1")
    # Full again within the 0.3 s window; the TTL runs a second longer (HEADROOM, in
    # lua/common.lua) so that busy keys need not have it rewritten on every call. The TTL is
    # rounded up to the millisecond from a TAT rounded up to a double: 1301 at most.
    assert 300 < client.pttl(key) <= 1301
    wait_until(lambda: not client.exists(key), what="an idle key to expire", limit=5.0)


def test_a_rate_too_fine_for_the_clock_still_stores_a_ttl(
    backend: bt.RedisBackend, client: redis.Redis, prefix: str
) -> None:
    # 10**9 per minute: at wall-clock magnitudes (~1.8e9 s) a double resolves ~0.24 µs, so
    # one unit's interval (60 ns) may not move the bucket's time at all.
    rl = bt.RateLimiter(
        bt.Scope("user", 10**9, 60.0),
        backend=backend,
        namespace="fine",
        failure_policy="fail_closed",
    )
    assert all(rl.try_acquire("u1") for _ in range(3))
    assert 0 < client.pttl(redis_key(prefix, "fine:default:user@t1:u1")) <= 1001


@pytest.mark.parametrize("algorithm", ["token_bucket", "fixed_window", "sliding_window"])
def test_a_keys_ttl_always_outlives_its_state(
    backend: bt.RedisBackend, client: redis.Redis, prefix: str, algorithm: str
) -> None:
    rl = bt.RateLimiter(
        bt.Scope("user", 50, 2.0, algorithm=algorithm),  # type: ignore[arg-type]
        backend=backend,
        namespace="ttl",
    )
    stored = rl._resolver.keys("u1")[0]
    key = redis_key(prefix, stored)
    for i in range(60):
        rl.try_acquire("u1", cost=1 + i % 3)
        if i % 7 == 0:
            rl.refund("u1")
        state = backend.decide([stored], rl.algorithms, 1, 0.0, False)[1][0]
        ttl_ms = client.pttl(key)
        seconds, micros = client.time()  # after the TTL: the check errs on the safe side
        if state is None:
            continue
        # The TTL still runs past the state's expiry.
        assert ttl_ms >= (state[0] - (seconds + micros / 1e6)) * 1000 - 1, i


def test_decisions_run_on_the_servers_clock(
    backend: bt.RedisBackend, client: redis.Redis, prefix: str
) -> None:
    clock = bt.ManualClock()  # its wall clock says 2026-01-01, whatever the server says
    rl = bt.RateLimiter(
        bt.Scope("user", 2, 3600.0, algorithm="fixed_window"),
        backend=backend,
        clock=clock,
        namespace="clock",
    )
    assert rl.try_acquire("u1") and rl.try_acquire("u1")
    clock.advance(7200.0)  # the limiter's clock moves two windows; the server's does not
    d = rl.try_acquire("u1")
    assert not d.allowed
    seconds, micros = client.time()
    server_now = seconds + micros / 1e6
    end, used = backend.decide(["clock:default:user@f1:u1"], rl.algorithms, 1, 0.0, False)[1][0]
    assert used == 2.0
    assert server_now < end <= server_now + 3600.0  # the window is the server's hour
    assert 0.0 < d.retry_after <= 3600.0


def test_adaptive_limits_travel_with_each_call(backend: bt.RedisBackend) -> None:
    clock = bt.ManualClock()
    rl = bt.RateLimiter(
        bt.Scope("api", 10, 3600.0, algorithm="adaptive", by=None, min_limit=2),
        backend=backend,
        clock=clock,
        namespace="adaptive",
    )
    assert rl.try_acquire().remaining == 9
    rl.record(ok=False)  # the limit halves: the next call carries 5
    assert rl.current_limit("api") == 5.0
    d = rl.try_acquire()
    assert (d.limit, d.remaining) == (5.0, 3)
    assert sum(rl.try_acquire().allowed for _ in range(10)) == 3


def test_refunds_and_resets(backend: bt.RedisBackend) -> None:
    rl = hierarchy(backend)
    ctx = {"user": "u1", "org": "o1"}
    assert sum(rl.try_acquire(ctx).allowed for _ in range(5)) == 3
    rl.refund(ctx, 2)
    assert sum(rl.try_acquire(ctx).allowed for _ in range(5)) == 2  # the org has 5 in all
    rl.reset(ctx)
    d = rl.try_acquire(ctx)
    assert (d.allowed, d.scope) == (True, "user")
    # global: 3 admitted, 2 refunded, 2 + 1 admitted; the peek counts its own 1
    assert rl.peek({"user": "u2", "org": "o2"}).scopes[2].remaining == 100 - 4 - 1


async def test_asyncio_path_one_client_per_event_loop(redis_url: str, prefix: str) -> None:
    backend = bt.RedisBackend(redis_url, prefix=prefix)
    rl = hierarchy(backend)
    ctx = {"user": "u1", "org": "o1"}
    try:
        assert (await rl.try_acquire_async(ctx)).allowed
        await rl.refund_async(ctx)
        await rl.reset_async(ctx)
        assert (await rl.peek_async(ctx)).remaining == 2

        def in_another_loop() -> bool:
            async def decide() -> bool:
                try:
                    return (await rl.try_acquire_async(ctx)).allowed
                finally:
                    await backend.aclose()

            return asyncio.run(decide())

        assert await asyncio.to_thread(in_another_loop)
    finally:
        await backend.aclose()
        backend.clear("")
        backend.close()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files in /proc")
def test_each_asyncio_run_closes_the_client_made_for_its_loop(redis_url: str, prefix: str) -> None:
    # A client per event loop, bound to it: each asyncio.run() left one open (and a connection
    # on the server) for good.
    backend = bt.RedisBackend(redis_url, prefix=prefix)
    rl = hierarchy(backend)

    async def one() -> bool:
        allowed = (await rl.try_acquire_async({"user": "u1", "org": "o1"})).allowed
        assert len(backend._aclients) == 1  # this loop's
        return allowed

    try:
        assert asyncio.run(one())
        before = len(os.listdir("/proc/self/fd"))
        assert [asyncio.run(one()) for _ in range(5)] == [True, True, False, False, False]
        assert len(backend._aclients) == 0
        assert len(os.listdir("/proc/self/fd")) == before  # each run closed its client
    finally:
        backend.clear("")
        backend.close()


def test_a_loop_closed_without_shutting_down_is_dropped_by_the_next() -> None:
    from ratelimit_backends import free_port

    # Nothing listens there: each call fails, after the loop's client was made.
    backend = bt.RedisBackend(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5, lazy=True)
    bucket = TokenBucket(1, 1.0)
    loop = asyncio.new_event_loop()
    with pytest.raises(bt.BackendError):
        loop.run_until_complete(backend.decide_async(["k"], [bucket], 1, 0.0))
    loop.close()  # no shutdown_asyncgens(): nothing closed the client
    assert len(backend._aclients) == 1

    async def again() -> int:
        with pytest.raises(bt.BackendError):
            await backend.decide_async(["k"], [bucket], 1, 0.0)
        return len(backend._aclients)

    assert asyncio.run(again()) == 1  # the closed loop's entry went when this loop's came
    assert len(backend._aclients) == 0
    backend.close()


def test_a_callers_asyncio_client_in_a_second_loop_is_a_backend_failure(
    redis_url: str, prefix: str
) -> None:
    # The caller's asyncio client is bound to the loop it connected in; from another loop,
    # redis-py raises RuntimeError, which escaped the failure policy as it was.
    aclient = redis.asyncio.Redis.from_url(redis_url, socket_timeout=1.0)
    backend = bt.RedisBackend(aclient, prefix=prefix)
    rl = hierarchy(backend, failure_policy="fail_closed", backend_retry_interval=0)

    async def one() -> bool:
        return (await rl.try_acquire_async({"user": "u1", "org": "o1"})).allowed

    first = asyncio.new_event_loop()
    try:
        assert first.run_until_complete(one())  # the client connects in the first loop
        with pytest.raises(bt.BackendError, match="bound to the event loop it connected in"):
            asyncio.run(one())  # a second loop (another thread's, say) on that connection
        assert rl.snapshot().backend_status == "down"
    finally:
        first.run_until_complete(aclient.aclose())
        first.run_until_complete(first.shutdown_asyncgens())
        first.close()
    cleaner = bt.RedisBackend(redis_url, prefix=prefix)
    assert cleaner.clear("") == 3  # the first loop's decision, nothing since
    cleaner.close()


async def test_given_clients_are_used_as_they_are(redis_url: str, prefix: str) -> None:
    sync_client = redis.Redis.from_url(redis_url, socket_timeout=1.0)
    async_client = redis.asyncio.Redis.from_url(redis_url, socket_timeout=1.0)
    both = bt.RedisBackend(sync_client, async_client=async_client, prefix=prefix)
    only_async = bt.RedisBackend(async_client, prefix=prefix)
    only_sync = bt.RedisBackend(sync_client, prefix=prefix)
    ctx = {"user": "u1", "org": "o1"}
    try:
        assert hierarchy(both).try_acquire(ctx)
        assert (await hierarchy(both).try_acquire_async(ctx)).allowed
        assert (await hierarchy(only_async).try_acquire_async(ctx)).allowed
        assert not hierarchy(only_sync).try_acquire(ctx)  # the user's 3 are spent
        with pytest.raises(bt.ConfigError, match="only a sync client: pass async_client="):
            await hierarchy(only_sync).try_acquire_async(ctx)
        with pytest.raises(bt.ConfigError, match="only an asyncio client: pass client="):
            hierarchy(only_async).try_acquire(ctx)
    finally:
        both.clear("")
        await async_client.aclose()
        sync_client.close()


def test_bad_settings_are_clear_errors(redis_url: str, backend: bt.RedisBackend) -> None:
    no_timeout = redis.Redis.from_url(redis_url)
    async_client = redis.asyncio.Redis.from_url(redis_url, socket_timeout=1.0)
    try:
        with pytest.raises(bt.ConfigError, match="socket_timeout") as info:
            bt.RedisBackend(no_timeout)
        assert info.value.path == "url_or_client"  # the parameter it came in by
        with pytest.raises(bt.ConfigError, match="socket_timeout") as info:
            bt.RedisBackend(async_client, client=no_timeout)
        assert info.value.path == "client"
    finally:
        no_timeout.close()
    for kwargs, path in (
        ({"prefix": "{a}"}, "prefix"),
        ({"timeout": 0}, "timeout"),
        ({"time_source": "client"}, "time_source"),
    ):
        with pytest.raises(bt.ConfigError) as info:
            bt.RedisBackend(redis_url, **kwargs)
        assert info.value.path == path
    with pytest.raises(bt.ConfigError) as info:
        bt.RedisBackend("http://example.invalid")
    assert info.value.path == "url_or_client"
    with pytest.raises(bt.ConfigError, match="whole number, got 'zero'") as info:
        bt.RedisBackend("redis://127.0.0.1:6379/zero")  # redis-py would use database 0
    assert info.value.path == "url_or_client"
    with pytest.raises(bt.ConfigError) as info:
        bt.RedisBackend(42)  # type: ignore[arg-type]
    assert info.value.path == "url_or_client"

    class Leaky(TokenBucket):
        pass

    with pytest.raises(bt.ConfigError, match="not Leaky"):
        backend.decide(["k"], [Leaky(1, 1.0)], 1, 0.0)


async def test_clients_that_decode_replies_are_refused(redis_url: str) -> None:
    # The scripts answer in packed bytes: such a client failed every call with a raw
    # UnicodeDecodeError (after the call had counted), past the failure policy.
    sync_ok = redis.Redis.from_url(redis_url, socket_timeout=1.0)
    async_ok = redis.asyncio.Redis.from_url(redis_url, socket_timeout=1.0)
    sync_decoding = redis.Redis.from_url(redis_url, socket_timeout=1.0, decode_responses=True)
    async_decoding = redis.asyncio.Redis.from_url(
        redis_url, socket_timeout=1.0, decode_responses=True
    )
    cases: list[tuple[tuple[Any, ...], dict[str, Any], str]] = [
        ((f"{redis_url}?decode_responses=True",), {}, "url_or_client"),
        ((sync_decoding,), {}, "url_or_client"),
        ((async_decoding,), {}, "url_or_client"),
        ((async_ok,), {"client": sync_decoding}, "client"),
        ((sync_ok,), {"async_client": async_decoding}, "async_client"),
        ((redis_url,), {"async_client": async_decoding}, "async_client"),
    ]
    try:
        for args, kwargs, path in cases:
            with pytest.raises(bt.ConfigError, match="decode_responses=True") as info:
                bt.RedisBackend(*args, **kwargs)
            assert info.value.path == path, (args, kwargs)
    finally:
        for c in (sync_ok, sync_decoding):
            c.close()
        for a in (async_ok, async_decoding):
            await a.aclose()


async def test_a_client_given_twice_is_refused_not_ignored(redis_url: str) -> None:
    # client= next to a URL (or a sync client) was silently ignored, its socket_timeout
    # unchecked: the backend used another database than the one the caller's client named.
    mine = redis.Redis.from_url(redis_url, db=5, socket_timeout=1.0)
    other = redis.Redis.from_url(redis_url, db=7, socket_timeout=1.0)
    no_timeout = redis.Redis.from_url(redis_url)
    amine = redis.asyncio.Redis.from_url(redis_url, socket_timeout=1.0)
    aother = redis.asyncio.Redis.from_url(redis_url, socket_timeout=1.0)
    cases: list[tuple[Any, dict[str, Any], str, str]] = [
        (redis_url, {"client": mine}, "client", "given twice: url_or_client is a URL"),
        (redis_url, {"client": no_timeout}, "client", "given twice"),
        (mine, {"client": other}, "client", "given twice: url_or_client is a client"),
        (amine, {"async_client": aother}, "async_client", "given twice"),
        (amine, {"client": aother}, "client", "must be a redis.Redis or redis.RedisCluster"),
        (mine, {"async_client": other}, "async_client", "must be a redis.asyncio.Redis"),
    ]
    try:
        for first, kwargs, path, message in cases:
            with pytest.raises(bt.ConfigError, match=message) as info:
                bt.RedisBackend(first, **kwargs)
            assert info.value.path == path, (first, kwargs)
        # What stays allowed: one client of each kind, and a URL with the caller's asyncio one.
        assert bt.RedisBackend(mine, async_client=amine)._client is mine
        assert bt.RedisBackend(amine, client=mine)._client is mine
        assert bt.RedisBackend(redis_url, async_client=amine)._async_client is amine
    finally:
        for c in (mine, other, no_timeout):
            c.close()
        for a in (amine, aother):
            await a.aclose()


def test_a_server_that_does_not_answer_is_a_backend_error() -> None:
    from ratelimit_backends import free_port

    backend = bt.RedisBackend(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5, lazy=True)
    with pytest.raises(bt.BackendError, match="Redis decide failed: ConnectionError"):
        backend.decide(["k"], [TokenBucket(1, 1.0)], 1, 0.0)
    backend.close()


# -- the server is asked when the backend is made ----------------------------------------------

SENTINEL = "sentinel-pw-7f3a"  # a password no message may show


def test_a_server_that_cannot_be_reached_is_refused_when_made_unless_lazy() -> None:
    from ratelimit_backends import free_port

    port = free_port()  # nothing listens there
    url = f"redis://:{SENTINEL}@127.0.0.1:{port}/0"
    with pytest.raises(bt.BackendError) as info:
        bt.RedisBackend(url, timeout=0.2)
    message = str(info.value)
    assert f"could not reach Redis at 127.0.0.1:{port}/0" in message
    assert "Connection refused" in message and "lazy=True" in message
    assert SENTINEL not in message
    # Lazy: made without asking; the limiter's failure policy applies from the first decision.
    for lazy in (bt.RedisBackend(url, timeout=0.2, lazy=True), bt.RedisBackend(url + "?lazy=true")):
        rl = bt.RateLimiter(bt.Scope("user", 1, 60.0), backend=lazy)
        assert rl.try_acquire("u1").allowed and rl.try_acquire("u1").allowed  # fails open
        assert rl.snapshot().backend_status == "down"
        lazy.close()
    # Through a URL string, as a limiter or the configuration makes it.
    with pytest.raises(bt.BackendError, match="could not reach Redis"):
        bt.RateLimiter(bt.Scope("user", 1, 60.0), backend=f"redis://127.0.0.1:{port}/0")
    lazy_rl = bt.RateLimiter(bt.Scope("u", 1, 60.0), backend=f"redis://127.0.0.1:{port}/0?lazy=1")
    assert lazy_rl.snapshot().backend_status == "ok"  # not asked yet


def test_a_callers_sync_client_is_asked_too() -> None:
    from ratelimit_backends import free_port

    dead = redis.Redis("127.0.0.1", free_port(), socket_timeout=0.2, socket_connect_timeout=0.2)
    with pytest.raises(bt.BackendError, match=r"could not reach Redis at 127\.0\.0\.1"):
        bt.RedisBackend(dead)
    bt.RedisBackend(dead, lazy=True)
    dead.close()


def test_the_servers_own_refusals_are_configuration_errors() -> None:
    from ratelimit_backends import RedisServer

    try:
        server = RedisServer()
    except FileNotFoundError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and {exc}")
        pytest.skip(str(exc))
    base = f"127.0.0.1:{server.port}/0"
    try:
        server.start()
        with redis.Redis("127.0.0.1", server.port, socket_timeout=2.0) as admin:
            admin.config_set("requirepass", SENTINEL)
        with pytest.raises(bt.ConfigError) as info:
            bt.RedisBackend(f"redis://:wrong-{SENTINEL}@{base}")
        assert info.value.path == "url_or_client"
        assert f"Redis at {base} refused the credentials" in info.value.message
        assert SENTINEL not in str(info.value)
        with pytest.raises(bt.ConfigError, match="refused the credentials"):
            bt.RedisBackend(f"redis://{base}")  # none given
        admin = redis.Redis(port=server.port, password=SENTINEL, socket_timeout=2.0)
        admin.acl_setuser("limited", enabled=True, passwords=["+pw"], commands=["-@all"])
        with pytest.raises(bt.ConfigError, match=r"answered PING with an error: .*permission"):
            bt.RedisBackend(f"redis://limited:pw@{base}")
        admin.close()
        bt.RedisBackend(f"redis://:{SENTINEL}@{base}").close()  # the right password
    finally:
        server.kill()


@pytest.mark.parametrize(
    ("url", "lazy", "rest"),
    [
        ("redis://h:6379/0?lazy=true", True, "redis://h:6379/0"),
        (
            "redis://h:6379/0?db=1&lazy=YES&ssl_cert_reqs=none",
            True,
            "redis://h:6379/0?db=1&ssl_cert_reqs=none",
        ),
        ("redis://h:6379/0?lazy=0", False, "redis://h:6379/0"),
        ("redis://h:6379/0", False, "redis://h:6379/0"),
        ("unix:///run/redis.sock?db=2&lazy=false", False, "unix:///run/redis.sock?db=2"),
    ],
)
def test_lazy_is_read_from_the_url_and_kept_from_redis_py(url: str, lazy: bool, rest: str) -> None:
    from buttress.ratelimit._from_url import url_problem, without_lazy

    assert url_problem(url) is None
    assert without_lazy(url) == (rest, lazy)


def test_a_lazy_that_says_neither_is_refused_where_the_url_is_checked() -> None:
    with pytest.raises(bt.ConfigError, match="lazy must be true or false, got 'soon'"):
        bt.RedisBackend("redis://127.0.0.1:6379/0?lazy=soon")
    with pytest.raises(bt.ConfigError, match=r"rate_limiting\.backend: lazy must be true or false"):
        bt.load_config({"rate_limiting": {"backend": "redis://h/0?lazy="}}, env={})
