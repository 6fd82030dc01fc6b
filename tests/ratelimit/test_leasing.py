"""Leasing (``lease=bt.Leasing(...)``): a slice of a caller's allowance taken in one round
trip, decided from locally, given back when it ends; never more admitted than the limit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ratelimit_backends import unique_prefix

import buttress as bt

WINDOW = 1e6  # nothing refills during a test


@pytest.fixture
def backend(redis_url: str) -> Iterator[bt.RedisBackend]:
    made = bt.RedisBackend(redis_url, prefix=unique_prefix("leasing"))
    try:
        yield made
    finally:
        made.clear()
        made.close()


def calls(backend: bt.RedisBackend) -> list[int]:
    """Count the decide script's calls from now on."""
    seen: list[int] = []
    original = backend._decide

    def counted(*, keys: list[bytes], args: tuple[bytes], **options: bool) -> bytes:
        seen.append(1)
        reply: bytes = original(keys=keys, args=args, **options)
        return reply

    backend._decide = counted
    return seen


def leased(
    backend: bt.Backend,
    clock: bt.ManualClock,
    *,
    limit: int = 25,
    size: int = 10,
    ttl: float = 5.0,
    name: str = "leased",
) -> bt.RateLimiter:
    return bt.RateLimiter(
        [bt.Scope("user", limit, WINDOW), bt.Scope("org", 1000, WINDOW, algorithm="fixed_window")],
        backend=backend,
        name=name,
        clock=clock,
        failure_policy="fail_closed",
        lease=bt.Leasing(size=size, ttl=ttl),
    )


CTX = {"user": "u1", "org": "o1"}


def test_a_slice_decides_locally_until_it_is_used_up(
    backend: bt.RedisBackend, clock: bt.ManualClock
) -> None:
    rl = leased(backend, clock)
    made = calls(backend)
    decisions = [rl.try_acquire(CTX) for _ in range(10)]
    assert len(made) == 1  # one round trip took a slice of 10: nine more decided here
    assert all(d.allowed for d in decisions)
    assert [d.scopes[0].remaining for d in decisions] == list(range(24, 14, -1))
    assert rl.try_acquire(CTX).allowed and len(made) == 2  # used up: the next slice


def test_never_more_than_the_limit_even_when_a_slice_no_longer_fits(
    backend: bt.RedisBackend, clock: bt.ManualClock
) -> None:
    rl = leased(backend, clock)  # 25, in slices of 10
    answers = [rl.try_acquire(CTX).allowed for _ in range(30)]
    assert answers == [True] * 25 + [False] * 5  # the last 5 decided one by one, exactly
    rl.release_leases()
    assert not rl.peek(CTX).allowed


def test_processes_holding_slices_share_the_limit_exactly(
    backend: bt.RedisBackend, clock: bt.ManualClock
) -> None:
    # Two limiters on one Redis: two processes, each with its own slices.
    a, b = leased(backend, clock), leased(backend, clock)
    first = [a.try_acquire(CTX).allowed for _ in range(3)] + [
        b.try_acquire(CTX).allowed for _ in range(3)
    ]
    assert first == [True] * 6  # each took a slice of 10: 20 of 25 granted
    rest = [a.try_acquire(CTX).allowed for _ in range(10)] + [
        b.try_acquire(CTX).allowed for _ in range(10)
    ]
    # a's slice has 7 left, b's 7; the 5 still in Redis go one by one, a taking 3 first.
    assert sum(rest) == 25 - 6
    assert rest == [True] * 10 + [True] * 9 + [False]


def test_the_unused_part_goes_back_when_a_slice_expires_or_is_released(
    backend: bt.RedisBackend, clock: bt.ManualClock
) -> None:
    rl = leased(backend, clock, limit=100, ttl=5.0)
    for _ in range(3):
        rl.try_acquire(CTX)
    assert rl.peek(CTX).scopes[0].remaining == 89  # the slice of 10 is held, 90 left
    clock.advance(5.0)  # expired: the next decision gives its 7 units back first
    assert rl.try_acquire(CTX).allowed
    assert rl.peek(CTX).scopes[0].remaining == 86  # 4 used, a new slice of 10 held
    rl.release_leases()
    assert rl.peek(CTX).scopes[0].remaining == 95  # 4 used, nothing held
    assert len(rl._leases or ()) == 0


async def test_asyncio_callers_take_and_spend_slices(
    backend: bt.RedisBackend, clock: bt.ManualClock
) -> None:
    rl = leased(backend, clock)
    answers = [(await rl.try_acquire_async(CTX)).allowed for _ in range(30)]
    assert answers == [True] * 25 + [False] * 5
    await rl.release_leases_async()
    await backend.aclose()


def test_no_slice_is_kept_from_the_failure_policys_admission(clock: bt.ManualClock) -> None:
    from ratelimit_backends import free_port

    down = bt.RedisBackend(f"redis://127.0.0.1:{free_port()}/0", lazy=True, timeout=0.2)
    rl = bt.RateLimiter(
        bt.Scope("user", 5, WINDOW),
        backend=down,
        clock=clock,
        failure_policy="fail_open",
        lease=bt.Leasing(size=10),
    )
    try:
        assert all(rl.try_acquire("u1").allowed for _ in range(3))  # admitted by the policy
        assert rl._leases is not None and len(rl._leases) == 0  # Redis granted nothing
    finally:
        down.close()


def test_slices_on_sqlite(tmp_path: Path, clock: bt.ManualClock) -> None:
    backend = bt.SQLiteBackend(tmp_path / "limits.db")
    a, b = leased(backend, clock), leased(backend, clock)
    answers = [limiter.try_acquire(CTX).allowed for _ in range(15) for limiter in (a, b)]
    assert sum(answers) == 25
    a.release_leases()
    b.release_leases()
    assert not a.peek(CTX).allowed  # all 25 used: nothing held to give back


@pytest.mark.parametrize(
    ("settings", "path"),
    [
        ({"size": 1}, "lease.size"),
        ({"size": 2.5}, "lease.size"),
        ({"size": 10, "ttl": 0}, "lease.ttl"),
        ({"size": 10, "ttl": float("inf")}, "lease.ttl"),
        ({"size": 10, "max_keys": 0}, "lease.max_keys"),
    ],
)
def test_bad_settings_name_the_setting(settings: dict[str, float], path: str) -> None:
    with pytest.raises(bt.ConfigError) as err:
        bt.Leasing(**settings)  # type: ignore[arg-type]
    assert err.value.path == path


def test_leasing_in_memory_is_refused() -> None:
    with pytest.raises(bt.ConfigError, match="shared backend"):
        bt.RateLimiter(bt.Scope("user", 5, 1.0), lease=bt.Leasing(size=10))
    with pytest.raises(bt.ConfigError, match="Leasing"):
        bt.RateLimiter(bt.Scope("user", 5, 1.0), backend="sqlite:///:memory:", lease=10)  # type: ignore[arg-type]


def test_leasing_from_configuration(redis_url: str) -> None:
    def config(lease: dict[str, object]) -> dict[str, object]:
        return {
            "memory_manager": {"enabled": False},
            "rate_limiting": {
                "backend": redis_url,
                "limiters": {"api": {"limit": 50, "window": 60.0, "lease": lease}},
            },
        }

    with bt.Infrastructure(
        unique_prefix("leasecfg").rstrip(":").replace(":", "-"),
        config({"size": 5, "ttl": 2.0}),
        env={},
        background=False,
    ) as infra:
        leases = infra.limiters["api"]._leases
        assert leases is not None and leases.lease == bt.Leasing(size=5, ttl=2.0)
    with pytest.raises(bt.ConfigError) as err:
        bt.Infrastructure("x", config({"size": 1}), env={}, background=False)
    assert err.value.path == "rate_limiting.limiters.api.lease.size"
