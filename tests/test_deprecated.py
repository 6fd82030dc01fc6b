"""Renamed public names: each old one still works, and warns at the line that used it."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path

import pytest

import buttress as bt
import buttress.ratelimit
from buttress._deprecated import RENAMED


def quiet_manager(**kwargs: object) -> bt.MemoryManager:
    return bt.MemoryManager(probe=lambda: bt.MemoryReading(used=1, limit=10), **kwargs)  # type: ignore[arg-type]


def pool_stats() -> bool:
    with bt.ConnectionPool(create=object) as p:
        return p.stats() == p.snapshot()


async def async_pool_stats() -> bool:
    async with bt.AsyncConnectionPool(create=object) as p:
        return p.stats() == p.snapshot()


# How each old name is used, and what it must still give.
USES: dict[str, Callable[[], bool]] = {
    "MemoryManager(pressure_relief=...)": lambda: (
        quiet_manager(pressure_relief=False).pressure_relief_enabled is False
    ),
    "MemoryManager.pressure_relief": lambda: (
        quiet_manager(pressure_relief_enabled=False).pressure_relief is False
    ),
    "ConnectionPool.stats()": pool_stats,
    "AsyncConnectionPool.stats()": lambda: asyncio.run(async_pool_stats()),
    "buttress.PoolStats": lambda: bt.PoolStats is bt.PoolSnapshot,  # type: ignore[attr-defined]
    "MemoryBackend.stats()": lambda: bt.MemoryBackend().stats() == bt.MemoryBackend().snapshot(),
    "buttress.ratelimit.MemoryBackendStats": lambda: (
        buttress.ratelimit.MemoryBackendStats is buttress.ratelimit.MemoryBackendSnapshot
    ),
    "CircuitBreaker.level": lambda: bt.CircuitBreaker("b").level is None,
}


def test_every_rename_is_tried() -> None:
    assert set(USES) == set(RENAMED)


@pytest.mark.parametrize("old", sorted(RENAMED))
def test_an_old_name_still_works_and_warns_where_it_is_used(old: str) -> None:
    with pytest.warns(DeprecationWarning, match=re.escape(f"{old} is deprecated: use")) as seen:
        assert USES[old]()
    assert RENAMED[old] in str(seen[0].message)
    assert Path(seen[0].filename).name == Path(__file__).name  # the user's line, not ours


def test_a_misspelt_name_is_still_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'PoolStatz'"):
        bt.PoolStatz  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        buttress.ratelimit.Nope  # type: ignore[attr-defined]  # noqa: B018
