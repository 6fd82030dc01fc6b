"""Real memory: this process allocates toward a budget set low in the config, then frees it."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from buttress import ManualClock, MemoryLevel, MemoryManager
from buttress._memory._probe import read_process_rss

MiB = 1024 * 1024
# Above glibc's largest mmap threshold (32 MiB on 64-bit), so each chunk is its own mapping
# and freeing it returns the pages to the kernel at once: RSS really falls.
CHUNK = 48 * MiB

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/statm").exists(), reason="reads process RSS from Linux /proc"
)


def test_allocating_toward_the_budget_raises_the_level_and_freeing_lowers_it(
    clock: ManualClock,
) -> None:
    gc.collect()
    rss = read_process_rss()
    assert rss is not None
    # A budget well above today's RSS: start near 0.5, and a few chunks reach critical.
    budget = 2 * rss + 2 * CHUNK
    mm = MemoryManager(
        source="process",
        limit_bytes=budget,
        exit_samples=2,
        check_interval=1.0,
        clock=clock,
        psi_warning=None,  # only this process's own allocations may move the level
        psi_critical=None,
    )
    entered: list[MemoryLevel] = []
    mm.on_pressure("warning", lambda s: entered.append(s.level))
    mm.on_pressure("critical", lambda s: entered.append(s.level))
    first = mm.sample()
    assert first.source == "process"
    assert first.limit == budget
    assert first.level is MemoryLevel.NORMAL, first

    hoard: list[bytearray] = []
    levels = [first.level]
    while levels[-1] is not MemoryLevel.CRITICAL:
        assert len(hoard) < 12, f"RSS did not reach the budget: {mm.last_sample}"
        hoard.append(bytearray(b"\x5a") * CHUNK)  # repetition writes every page
        clock.advance(1.0)
        levels.append(mm.sample().level)
    ranks = [level.rank for level in levels]
    assert ranks == sorted(ranks)  # it only rose while we allocated
    assert entered[-1] is MemoryLevel.CRITICAL
    peak = mm.last_sample
    assert peak is not None
    assert peak.ratio >= 0.85

    hoard.clear()
    gc.collect()
    clock.advance(1.0)
    after_free = mm.sample()
    assert after_free.ratio < 0.65, after_free  # the pages went back to the kernel
    assert after_free.level is MemoryLevel.CRITICAL  # hysteresis: one sample is not enough
    clock.advance(1.0)
    assert mm.sample().level is MemoryLevel.NORMAL
