"""The levels and hysteresis every monitor shares (memory's policy tests cover them too)."""

from __future__ import annotations

import doctest

import pytest

from buttress import ConfigError, MemoryLevel, _pressure
from buttress._pressure import Hysteresis, PressureLevel, rank_of


def test_doctests() -> None:
    assert doctest.testmod(_pressure).failed == 0


def test_memory_levels_are_the_shared_levels() -> None:
    assert MemoryLevel is PressureLevel
    assert [level.rank for level in PressureLevel] == [0, 1, 2]
    assert PressureLevel.of_rank(2) is PressureLevel.CRITICAL
    assert PressureLevel.parse("warning") is PressureLevel.WARNING
    with pytest.raises(ConfigError) as info:
        PressureLevel.parse("panic", path="overload.cpu.level")
    assert info.value.path == "overload.cpu.level"


def test_rank_of_ignores_unknown_values_and_unset_thresholds() -> None:
    assert rank_of(None, 0.1, 0.5) == 0
    assert rank_of(0.7, None, 0.5) == 2
    assert rank_of(0.3, None, 0.5) == 0
    assert rank_of(0.3, 0.1, None) == 1


def test_a_streak_broken_by_a_held_sample_starts_again() -> None:
    levels = Hysteresis(exit_samples=2)
    levels.step(2, 2, "x", now=0.0)
    assert levels.step(0, 0, "x", now=1.0) is None
    assert levels.step(0, 2, "x", now=2.0) is None  # back above the exit line
    assert levels.step(0, 0, "x", now=3.0) is None
    assert levels.samples_to_leave == 1
    change = levels.step(0, 0, "x", now=4.0)
    assert change is not None
    normal = PressureLevel.NORMAL
    assert (change.level, change.crossed, change.at) == (normal, (normal,), 4.0)


def test_exit_samples_is_checked() -> None:
    with pytest.raises(ConfigError) as info:
        Hysteresis(exit_samples=0)
    assert info.value.path == "exit_samples"
