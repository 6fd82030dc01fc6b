"""The pure level policy: thresholds, hysteresis, PSI, crossings, gc timing."""

from __future__ import annotations

import doctest

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buttress import ConfigError, MemoryLevel
from buttress._memory import _policy
from buttress._memory._policy import PolicyConfig, PressurePolicy

N, W, C = MemoryLevel.NORMAL, MemoryLevel.WARNING, MemoryLevel.CRITICAL


def run(policy: PressurePolicy, ratios: list[float]) -> list[MemoryLevel]:
    out = []
    for i, ratio in enumerate(ratios):
        policy.observe(ratio, None, None, now=float(i))
        out.append(policy.level)
    return out


def test_doctests() -> None:
    assert doctest.testmod(_policy).failed == 0


def test_thresholds_are_entered_at_once() -> None:
    policy = PressurePolicy()
    assert run(policy, [0.10, 0.69, 0.70, 0.84, 0.85, 0.99]) == [N, N, W, W, C, C]


def test_leaving_needs_exit_samples_below_threshold_minus_margin() -> None:
    policy = PressurePolicy(PolicyConfig(exit_samples=3, exit_margin=0.05))
    levels = run(policy, [0.90, 0.82, 0.81, 0.80, 0.79, 0.79, 0.79])
    # 0.82/0.81/0.80 are below critical but within the margin: they hold critical.
    assert levels == [C, C, C, C, C, C, W]


def test_a_sample_back_above_the_exit_line_restarts_the_count() -> None:
    policy = PressurePolicy(PolicyConfig(exit_samples=3))
    assert run(policy, [0.9, 0.5, 0.5, 0.81, 0.5, 0.5, 0.5]) == [C, C, C, C, C, C, N]


def test_falling_goes_to_the_highest_level_the_streak_still_held() -> None:
    policy = PressurePolicy(PolicyConfig(exit_samples=3))
    # 0.66 still holds warning (0.70 - 0.05), so critical falls to warning, not normal.
    assert run(policy, [0.9, 0.3, 0.66, 0.3]) == [C, C, C, W]
    assert run(policy, [0.3, 0.3, 0.3]) == [W, W, N]


def test_wobbling_around_a_threshold_does_not_flap() -> None:
    policy = PressurePolicy()
    levels = run(policy, [0.71, 0.69, 0.71, 0.68, 0.70, 0.66] * 5)
    assert set(levels) == {W}


def test_crossings_rising_run_every_level_passed_and_falling_only_normal() -> None:
    policy = PressurePolicy(PolicyConfig(exit_samples=1))
    up = policy.observe(0.95, None, None, now=0.0)
    assert up is not None
    assert up.crossed == (W, C)
    assert up.reason == "ratio"
    down = policy.observe(0.75, None, None, now=1.0)
    assert down is not None
    assert down.level is W
    assert down.crossed == ()
    assert policy.observe(0.75, None, None, now=2.0) is None
    again = policy.observe(0.9, None, None, now=3.0)
    assert again is not None
    assert again.crossed == (C,)
    out = policy.observe(0.1, None, None, now=4.0)
    assert out is not None
    assert out.level is N
    assert out.crossed == (N,)
    assert out.reason == "recovered"
    assert policy.since == 4.0


def test_psi_raises_the_level_when_the_ratio_does_not() -> None:
    policy = PressurePolicy(PolicyConfig(psi_warning=10.0, psi_critical=5.0, exit_samples=2))
    change = policy.observe(0.2, 12.0, 0.0, now=0.0)
    assert change is not None
    assert change.level is W
    assert change.reason == "psi"
    change = policy.observe(0.2, 40.0, 6.0, now=1.0)
    assert change is not None
    assert change.level is C
    assert change.reason == "psi"
    # full stall share 3.0 is below 5.0 but above half of it: critical holds
    assert policy.observe(0.2, 40.0, 3.0, now=2.0) is None
    assert policy.observe(0.2, 40.0, 3.0, now=3.0) is None
    assert policy.level is C
    policy.observe(0.2, 4.0, 1.0, now=4.0)
    change = policy.observe(0.2, 4.0, 1.0, now=5.0)
    assert change is not None
    assert change.level is N


def test_missing_psi_and_disabled_psi_count_as_no_pressure() -> None:
    policy = PressurePolicy(PolicyConfig(psi_warning=None, psi_critical=None))
    assert policy.observe(0.1, 99.0, 99.0, now=0.0) is None
    assert PressurePolicy().observe(0.1, None, None, now=0.0) is None


def test_gc_is_due_only_under_pressure_and_at_most_every_interval() -> None:
    policy = PressurePolicy(PolicyConfig(gc_interval=30.0))
    assert not policy.gc_due(0.0)
    policy.observe(0.75, None, None, now=0.0)
    assert policy.gc_due(0.0)
    policy.gc_ran(0.0)
    assert not policy.gc_due(29.9)
    assert policy.gc_due(30.0)


def test_samples_to_leave_counts_down() -> None:
    policy = PressurePolicy(PolicyConfig(exit_samples=3))
    assert policy.samples_to_leave == 0
    policy.observe(0.9, None, None, now=0.0)
    assert policy.samples_to_leave == 3
    policy.observe(0.1, None, None, now=1.0)
    assert policy.samples_to_leave == 2


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"warning_threshold": 0.0}, "warning_threshold"),
        ({"critical_threshold": 1.5}, "critical_threshold"),
        ({"warning_threshold": 0.9, "critical_threshold": 0.8}, "critical_threshold"),
        ({"exit_margin": 0.8}, "exit_margin"),
        ({"exit_samples": 0}, "exit_samples"),
        ({"exit_samples": 2.5}, "exit_samples"),
        ({"psi_warning": 0.0}, "psi_warning"),
        ({"psi_critical": 101.0}, "psi_critical"),
        ({"gc_interval": -1.0}, "gc_interval"),
    ],
)
def test_bad_config_names_the_setting(kwargs: dict[str, float], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        PolicyConfig(**kwargs)  # type: ignore[arg-type]
    assert info.value.path == path


RATIOS = st.lists(st.floats(min_value=0.0, max_value=1.2), min_size=1, max_size=60)


@settings(max_examples=300, deadline=None)
@given(ratios=RATIOS, exit_samples=st.integers(1, 4))
def test_model_rises_at_once_and_falls_only_after_a_sustained_streak(
    ratios: list[float], exit_samples: int
) -> None:
    cfg = PolicyConfig(exit_samples=exit_samples)
    policy = PressurePolicy(cfg)

    def entered(r: float) -> int:
        return 2 if r >= cfg.critical_threshold else 1 if r >= cfg.warning_threshold else 0

    def held(r: float) -> int:
        m = cfg.exit_margin
        return 2 if r >= cfg.critical_threshold - m else 1 if r >= cfg.warning_threshold - m else 0

    history: list[float] = []
    for i, ratio in enumerate(ratios):
        before = policy.level.rank
        policy.observe(ratio, None, None, now=float(i))
        history.append(ratio)
        after = policy.level.rank
        assert after >= entered(ratio)  # never below what the sample demands
        if after > before:
            assert after == entered(ratio)  # rises go exactly to the demanded level
        if after < before:
            streak = history[-exit_samples:]
            assert len(streak) == exit_samples
            assert all(held(r) < before for r in streak)  # a full streak below the exit line
            assert after == max(held(r) for r in streak)
