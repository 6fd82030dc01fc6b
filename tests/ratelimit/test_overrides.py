"""Per-id limits (``Scope(overrides=...)``, ``RateLimiter.set_overrides``): each id admitted
exactly its own limit, on every backend, on the compiled and the pure-Python memory paths."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ratelimit_backends import unique_prefix

import buttress as bt
from buttress.http import rate_limit_headers
from buttress.ratelimit import _inmemory

WINDOW = 3600.0  # nothing comes back while a test runs, on any clock


def admitted(limiter: bt.RateLimiter, key: Any, tries: int = 40) -> int:
    return sum(limiter.try_acquire(key).allowed for _ in range(tries))


def user_limiter(backend: Any, overrides: Any, algorithm: str = "token_bucket") -> bt.RateLimiter:
    return bt.RateLimiter(
        bt.Scope("user", 3, WINDOW, algorithm=algorithm, overrides=overrides),  # type: ignore[arg-type]
        backend=backend,
        name=unique_prefix("ov").replace(":", "_"),
    )


@pytest.fixture(params=["memory", "memory-pure", "sqlite", "redis"])
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    kind = request.param
    if kind == "memory-pure":
        monkeypatch.setattr(_inmemory, "_FastPath", None)
        yield bt.MemoryBackend()
    elif kind == "memory":
        yield bt.MemoryBackend()
    elif kind == "sqlite":
        b = bt.SQLiteBackend(str(tmp_path / "limits.db"))
        yield b
        b.close()
    else:
        url = request.getfixturevalue("redis_url")
        b = bt.RedisBackend(url, prefix=unique_prefix("overrides"))
        yield b
        b.clear("")
        b.close()


@pytest.mark.parametrize("algorithm", ["token_bucket", "fixed_window", "sliding_window"])
def test_mapping_gives_each_id_its_own_limit(backend: Any, algorithm: str) -> None:
    limiter = user_limiter(backend, {"acme": 10, 7: 5}, algorithm)
    assert admitted(limiter, "acme") == 10
    assert admitted(limiter, "7") == 5  # an int id and its text are one id
    assert admitted(limiter, {"user": 7}) == 0
    assert admitted(limiter, "beta") == 3
    assert limiter.peek("acme").limit == 10
    assert limiter.peek("beta").limit == 3


def test_callable_and_run_time_change(backend: Any) -> None:
    limiter = user_limiter(backend, lambda i: 8 if i.startswith("paid-") else None)
    assert admitted(limiter, "paid-1") == 8
    assert admitted(limiter, "free-1") == 3
    limiter.set_overrides("user", {"free-2": 6})
    assert admitted(limiter, "free-2") == 6
    assert admitted(limiter, "paid-2") == 3  # the callable is gone
    limiter.set_overrides("user", None)
    assert admitted(limiter, "free-3") == 3
    assert limiter.overrides("user") is None


def test_hierarchy_with_an_org_override(backend: Any) -> None:
    limiter = bt.RateLimiter(
        [bt.Scope("user", 4, WINDOW), bt.Scope("org", 5, WINDOW, overrides={"acme": 12})],
        backend=backend,
        name=unique_prefix("ovh").replace(":", "_"),
    )
    acme = sum(admitted(limiter, {"user": f"u{i}", "org": "acme"}, 4) for i in range(5))
    small = sum(admitted(limiter, {"user": f"v{i}", "org": "small"}, 4) for i in range(5))
    assert (acme, small) == (12, 5)
    refused = limiter.try_acquire({"user": "w", "org": "acme"})
    assert (refused.allowed, refused.scope, refused.limit) == (False, "org", 12)


def test_refund_and_headers_use_the_ids_limit(backend: Any) -> None:
    limiter = user_limiter(backend, {"acme": 10})
    assert admitted(limiter, "acme", 10) == 10
    limiter.refund("acme", 2)
    decision = limiter.try_acquire("acme")
    assert (decision.allowed, decision.limit, decision.remaining) == (True, 10, 1)
    headers = dict(rate_limit_headers(decision))
    assert "q=10" in headers["RateLimit-Policy"], headers


@pytest.mark.parametrize("lease", [None, bt.Leasing(size=4, ttl=60.0)])
def test_redis_batches_and_leases_keep_each_ids_limit(
    redis_url: str, lease: bt.Leasing | None
) -> None:
    backend = bt.RedisBackend(redis_url, prefix=unique_prefix("overrides"))
    try:
        limiter = bt.RateLimiter(
            bt.Scope("user", 3, WINDOW, overrides={"acme": 20}), backend=backend, lease=lease
        )

        async def burst(user: str) -> int:  # concurrent: batched into few script calls
            results = await asyncio.gather(*(limiter.try_acquire_async(user) for _ in range(40)))
            return sum(d.allowed for d in results)

        async def main() -> tuple[int, int]:
            return await burst("acme"), await burst("beta")

        acme, beta = asyncio.run(main())
        if lease is None:
            assert (acme, beta) == (20, 3)
        # Under leases a burst may be refused while slices are held; in all, the id's limit.
        assert acme + admitted(limiter, "acme") == 20
        assert beta + admitted(limiter, "beta") == 3
        limiter.release_leases()
    finally:
        backend.clear("")
        backend.close()


def test_compiled_and_pure_paths_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    def make() -> bt.RateLimiter:
        return bt.RateLimiter(
            [bt.Scope("user", 3, 10.0), bt.Scope("org", 6, 10.0, overrides={"acme": 9})],
            clock=clock,
        )

    clock = bt.ManualClock(100.0)
    compiled = make()
    with monkeypatch.context() as m:
        m.setattr(_inmemory, "_FastPath", None)
        pure = make()
    for step in range(60):
        key = {"user": f"u{step % 4}", "org": "acme" if step % 3 else "other"}
        a, b = compiled.try_acquire(key), pure.try_acquire(key)
        assert (a.allowed, a.limit, a.remaining, a.retry_after) == (
            b.allowed,
            b.limit,
            b.remaining,
            b.retry_after,
        )
        clock.advance(0.25)
    assert compiled.backend._states == pure.backend._states  # type: ignore[attr-defined]


def test_a_changed_limit_keeps_the_share_used() -> None:
    clock = bt.ManualClock(0.0)
    limiter = bt.RateLimiter(bt.Scope("user", 10, 60.0), clock=clock)
    assert admitted(limiter, "acme", 5) == 5  # half of 10
    limiter.set_overrides("user", {"acme": 100})
    assert limiter.peek("acme").remaining == 49  # half of 100 left, less the cost peeked


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"overrides": {"acme": 0}}, "user.overrides['acme']"),
        ({"overrides": {"acme": float("inf")}}, "user.overrides['acme']"),
        ({"overrides": {"acme": True}}, "user.overrides['acme']"),
        ({"overrides": {1.5: 10}}, "user.overrides"),
        ({"overrides": {7: 10, "7": 20}}, "user.overrides"),
        ({"overrides": 42}, "user.overrides"),
        ({"overrides": {"a": 5}, "by": None}, "user.overrides"),
        ({"overrides": {"a": 5}, "algorithm": "adaptive"}, "user.overrides"),
    ],
)
def test_bad_overrides_name_the_field(kwargs: dict[str, Any], path: str) -> None:
    with pytest.raises(bt.ConfigError) as caught:
        bt.Scope("user", 3, 60.0, **kwargs)
    assert caught.value.path == path


def test_a_coroutine_function_is_refused() -> None:
    async def plan(user: str) -> float:
        return 10.0

    with pytest.raises(bt.ConfigError, match="coroutine function") as caught:
        bt.Scope("user", 3, 60.0, overrides=plan)  # type: ignore[arg-type]
    assert caught.value.path == "user.overrides"
    limiter = bt.RateLimiter(bt.Scope("user", 3, 60.0))
    with pytest.raises(bt.ConfigError):
        limiter.set_overrides("user", plan)  # type: ignore[arg-type]
    with pytest.raises(bt.ConfigError):
        limiter.set_overrides("nope", {"a": 1})


def test_a_callables_bad_answer_is_a_clear_error() -> None:
    limiter = bt.RateLimiter(bt.Scope("user", 3, 60.0, overrides=lambda i: "lots"))  # type: ignore[arg-type,return-value]
    with pytest.raises(bt.ConfigError, match="answered 'lots' for id 'acme'") as caught:
        limiter.try_acquire("acme")
    assert caught.value.path == "user.overrides"


def test_overrides_from_configuration() -> None:
    config = {
        "rate_limiting": {
            "limiters": {
                "api": {
                    "algorithm": "fixed_window",
                    "scopes": [{"name": "org", "limit": 2, "overrides": {"acme": 5}}],
                }
            }
        }
    }
    with bt.Infrastructure("cfg", config, env={}, background=False) as infra:
        limiter = infra.limiters["api"]
        admitted = {
            org: sum(limiter.try_acquire(org).allowed for _ in range(10))
            for org in ("acme", "beta")
        }
    assert admitted == {"acme": 5, "beta": 2}
    with pytest.raises(bt.ConfigError) as caught:
        bt.load_config(
            {
                "rate_limiting": {
                    "limiters": {
                        "api": {"scopes": [{"name": "org", "limit": 2, "overrides": {"acme": -1}}]}
                    }
                }
            }
        )
    assert caught.value.path.startswith("rate_limiting.limiters.api.scopes[0].overrides")
