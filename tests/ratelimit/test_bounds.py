"""Ids of any length cost a bounded number of bytes: a long id is stored as a digest.

An id longer than ``MAX_ID_LENGTH`` characters is kept in its storage key as its first
characters and a BLAKE2b digest of the whole (``_keys.long_id``), on every backend and every
path (the compiled fast path, the Python closures, the general path, contexts and bare ids).
"""

from __future__ import annotations

import gc
import re
import sqlite3
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from ratelimit_backends import close_backend, make_backend, unique_prefix

import buttress as bt
from buttress.ratelimit import _inmemory
from buttress.ratelimit._keys import LONG_ID_LENGTH, MAX_ID_LENGTH, long_id

MB = 1 << 20
MIB = 1 << 20


def one_mb_id(i: int) -> str:
    """A distinct id of 1 MB (its difference is at the end, past any prefix kept as it is)."""
    return "u" * (MB - 8) + f"{i:08d}"


@pytest.fixture(params=["compiled", "python"])
def paths(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both in-memory fast paths: the compiled one (when built) and the Python closures."""
    if request.param == "python":
        monkeypatch.setattr(_inmemory, "_FastPath", None)
    elif _inmemory._FastPath is None:
        pytest.skip("the compiled fast path is not built")
    return str(request.param)


def retained_bytes(decide: Any, n: int) -> int:
    """Bytes still allocated after ``n`` decisions of 1 MB ids (each id dropped after use)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            decide(one_mb_id(i))
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("shape", ["bare id", "context"])
def test_300_ids_of_1_mb_cost_less_than_10_mib(paths: str, shape: str) -> None:
    scopes = [bt.Scope("user", limit=5, window=60.0)]
    if shape == "context":
        scopes.append(bt.Scope("global", limit=1e6, window=60.0))
    backend = bt.MemoryBackend()
    limiter = bt.RateLimiter(scopes, backend=backend)

    def decide(user: str) -> None:
        key: Any = user if shape == "bare id" else {"user": user}
        assert limiter.try_acquire(key)

    used = retained_bytes(decide, 300)
    assert used < 10 * MIB, f"{used / MIB:.1f} MiB"
    assert backend.key_count() == 300 + (shape == "context")  # one key per id: none merged


def test_a_long_id_is_limited_as_any_id(paths: str) -> None:
    limiter = bt.RateLimiter(bt.Scope("user", limit=2, window=60.0))
    long, other = one_mb_id(1), one_mb_id(2)  # the same first characters: told apart
    assert [bool(limiter.try_acquire(long)) for _ in range(3)] == [True, True, False]
    assert limiter.try_acquire(other)
    assert limiter.try_acquire({"user": other})
    assert not limiter.try_acquire({"user_id": other})
    decision = limiter.try_acquire(long)
    assert decision.key == long_id(long)


def test_an_id_at_the_maximum_is_kept_as_it_is(paths: str) -> None:
    limiter = bt.RateLimiter(bt.Scope("user", limit=1, window=60.0))
    at_most = "a" * MAX_ID_LENGTH
    assert limiter.try_acquire(at_most).key == at_most
    over = "a" * (MAX_ID_LENGTH + 1)
    assert limiter.try_acquire(over).key == long_id(over)
    assert len(long_id(over)) == LONG_ID_LENGTH == MAX_ID_LENGTH + 1  # never an id kept as is


def test_long_ids_are_hashed_on_the_general_path_too() -> None:
    # A str subclass, an int id of many digits, a cost other than 1, several kinds of id.
    limiter = bt.RateLimiter(
        [bt.Scope("user", limit=3, window=60.0), bt.Scope("org", limit=3, window=60.0)]
    )

    class Name(str):
        pass

    user, org = "u" * 5000, 10**400
    d = limiter.try_acquire({"user": Name(user), "org": org}, cost=2)
    assert d.allowed
    assert {s.key for s in d.scopes} == {long_id(user), long_id(str(org))}
    assert not limiter.try_acquire({"user_id": user, "org_id": str(org)}, cost=2)
    assert limiter.try_acquire({"user_id": user, "org_id": str(org)}, cost=1)


def test_an_int_id_python_cannot_write_out_is_a_context_error() -> None:
    limiter = bt.RateLimiter(bt.Scope("user", limit=3, window=60.0))
    with pytest.raises(bt.ContextError, match=r"key\.user: an int id may have at most"):
        limiter.try_acquire(10**5000)


def test_an_int_id_and_its_text_are_one_caller() -> None:
    # Documented in docs/rate-limiting.md: an id is its text.
    limiter = bt.RateLimiter(bt.Scope("user", limit=2, window=60.0))
    assert limiter.try_acquire(12345)
    assert limiter.try_acquire("12345")
    assert not limiter.try_acquire({"user_id": 12345})


# -- persistent backends: keys hashed the same way -----------------------------------------------


@pytest.fixture(params=["sqlite", "redis"])
def persistent(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Any, str]]:
    """``(kind, backend, where)``: where is the SQLite file, or the Redis URL and key prefix."""
    kind = str(request.param)
    if kind == "redis":
        url = request.getfixturevalue("redis_url")
        prefix = unique_prefix("long-ids")
        backend = make_backend("redis", url, prefix)
        where = f"{url} {prefix}"
    else:
        where = str(tmp_path / "state.db")
        backend = make_backend("sqlite", where)
    try:
        yield kind, backend, where
    finally:
        if kind == "redis":
            backend.clear()
        close_backend(backend)


def stored_keys(kind: str, backend: Any, where: str) -> list[str]:
    if kind == "sqlite":
        with sqlite3.connect(where) as db:
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            keys: list[str] = []
            for table in tables:
                columns = [r[1] for r in db.execute(f"PRAGMA table_info({table})")]
                if "key" in columns:
                    keys += [r[0] for r in db.execute(f"SELECT key FROM {table}")]
            return keys
    url, prefix = where.split(" ")
    client = redis.Redis.from_url(url)
    try:
        return [k.decode() for k in client.scan_iter(match=prefix + "*")]
    finally:
        client.close()


def test_persistent_backends_store_a_long_id_as_its_digest(
    persistent: tuple[str, Any, str],
) -> None:
    kind, backend, where = persistent
    limiter = bt.RateLimiter(
        bt.Scope("user", limit=2, window=60.0), backend=backend, failure_policy="fail_closed"
    )
    long = one_mb_id(7)
    assert [bool(limiter.try_acquire(long)) for _ in range(3)] == [True, True, False]
    keys = stored_keys(kind, backend, where)
    assert keys, "no key stored"
    assert all(len(k) < 2 * LONG_ID_LENGTH for k in keys), [len(k) for k in keys]
    assert any(k.endswith(":user@t1:" + long_id(long)) for k in keys), keys


# -- rates: an interval that underflows or overflows is refused ----------------------------------


@pytest.mark.parametrize(
    ("settings", "path", "words"),
    [
        ({"limit": 5, "window": 1e-320}, "user.window", "at least 1e-09 s"),
        ({"limit": 1e308, "window": 1e-300}, "user.window", "at least 1e-09 s"),
        ({"limit": 1e308, "window": 60.0}, "user.limit", "at most 1e+09 per second"),
        ({"limit": 5, "window": 1e-9}, "user.limit", "at most 1e+09 per second"),
        ({"limit": 1e308, "window": 60.0, "algorithm": "fixed_window"}, "user.limit", "per second"),
        ({"limit": 5e-324, "window": 1.0}, "user.limit", "at most 1e+12 s"),
        ({"limit": 100, "window": 1e300, "algorithm": "sliding_window"}, "user.window", "1e+12"),
        ({"limit": 1, "window": 60.0, "burst": 1e308}, "user.burst", "full burst"),
        (
            {"limit": 10, "window": 1.0, "algorithm": "adaptive", "max_limit": 1e300},
            "user.max_limit",
            "per second",
        ),
    ],
)
def test_a_rate_whose_interval_underflows_or_overflows_is_refused(
    settings: dict[str, Any], path: str, words: str
) -> None:
    with pytest.raises(bt.ConfigError, match=re.escape(words)) as caught:
        bt.Scope("user", **settings)
    assert caught.value.path == path
    scope = {"name": "user", **settings}
    with pytest.raises(bt.ConfigError) as in_a_file:
        bt.load_config({"rate_limiting": {"limiters": {"api": {"scopes": [scope]}}}}, env={})
    assert in_a_file.value.path == f"rate_limiting.limiters.api.scopes[0].{path.split('.')[1]}"


@pytest.mark.parametrize(
    "settings",
    [
        {"limit": 1e9, "window": 1.0},  # one per nanosecond
        {"limit": 1, "window": 1e-9},
        {"limit": 1, "window": 1e12},
        {"limit": 1e-3, "window": 1e9},
        {"limit": 1e20, "window": 1e11},
    ],
)
def test_rates_at_the_bounds_decide_and_report(settings: dict[str, Any]) -> None:
    limiter = bt.RateLimiter(bt.Scope("user", **settings))
    for _ in range(3):
        d = limiter.try_acquire("u")
        assert d.remaining >= 0
        assert bt.http.rate_limit_headers(d)
