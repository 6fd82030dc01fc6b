"""The pure CPU policy (levels with hysteresis) and the monitor shell on a manual clock."""

from __future__ import annotations

import doctest
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from buttress import ConfigError, ManualClock
from buttress._overload import _cpu_policy
from buttress._overload._cpu import CpuMonitor, CpuSnapshot
from buttress._overload._cpu_policy import CpuConfig, CpuPolicy, CpuSignals
from buttress._overload._cpu_probe import CpuReading
from buttress._pressure import LevelChange, PressureLevel

N, W, C = PressureLevel.NORMAL, PressureLevel.WARNING, PressureLevel.CRITICAL


def test_doctests() -> None:
    assert doctest.testmod(_cpu_policy).failed == 0


def run(policy: CpuPolicy, samples: list[CpuSignals]) -> list[PressureLevel]:
    out = []
    for i, signals in enumerate(samples):
        policy.observe(signals, now=float(i))
        out.append(policy.level)
    return out


def throttled(ratio: float) -> CpuSignals:
    return CpuSignals(throttle_ratio=ratio)


def test_each_signal_enters_its_levels_at_once() -> None:
    assert run(CpuPolicy(), [throttled(r) for r in (0.0, 0.09, 0.10, 0.49, 0.50)]) == [
        N,
        N,
        W,
        W,
        C,
    ]
    used = [CpuSignals(utilisation=u) for u in (0.5, 0.8, 0.95)]
    assert run(CpuPolicy(), used) == [N, W, C]
    waited = [CpuSignals(psi_some_avg10=p) for p in (19.9, 20.0, 50.0)]
    assert run(CpuPolicy(), waited) == [N, W, C]


def test_the_worst_signal_sets_the_level_and_names_the_reason() -> None:
    policy = CpuPolicy()
    change = policy.observe(
        CpuSignals(throttle_ratio=0.2, utilisation=0.97, psi_some_avg10=25.0), now=0.0
    )
    assert change is not None
    assert (change.level, change.reason, change.crossed) == (C, "utilisation", (W, C))


def test_ties_are_reported_as_throttling_first() -> None:
    change = CpuPolicy().observe(CpuSignals(throttle_ratio=0.2, psi_some_avg10=25.0), now=0.0)
    assert change is not None
    assert change.reason == "throttling"


def test_falling_needs_exit_samples_below_the_threshold_less_the_margin() -> None:
    policy = CpuPolicy(CpuConfig(exit_samples=3, exit_margin=0.1))
    # 0.46 holds critical (0.50 x 0.9 = 0.45); 0.40 holds warning (0.10 x 0.9 = 0.09).
    levels = run(policy, [throttled(r) for r in (0.6, 0.46, 0.40, 0.40, 0.40, 0.0, 0.0, 0.0)])
    assert levels == [C, C, C, C, W, W, W, N]
    assert policy.reason == "recovered"


def test_a_sample_back_above_the_exit_line_restarts_the_count() -> None:
    policy = CpuPolicy(CpuConfig(exit_samples=2))
    levels = run(policy, [throttled(r) for r in (0.2, 0.0, 0.095, 0.0, 0.0)])
    assert levels == [W, W, W, W, N]


def test_unknown_signals_raise_nothing_and_do_not_hold_a_level() -> None:
    policy = CpuPolicy(CpuConfig(exit_samples=2))
    assert run(policy, [CpuSignals(), throttled(0.7), CpuSignals(), CpuSignals()]) == [N, C, C, N]


def test_a_signal_set_to_none_is_ignored() -> None:
    policy = CpuPolicy(CpuConfig(utilisation_warning=None, utilisation_critical=None))
    assert policy.observe(CpuSignals(utilisation=1.0), now=0.0) is None
    only_critical = CpuPolicy(CpuConfig(psi_warning=None))
    assert run(only_critical, [CpuSignals(psi_some_avg10=p) for p in (45.0, 55.0)]) == [N, C]


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"check_interval": 0}, "check_interval"),
        ({"throttle_warning": 0.0}, "throttle_warning"),
        ({"throttle_critical": 1.5}, "throttle_critical"),
        ({"throttle_warning": 0.5, "throttle_critical": 0.4}, "throttle_critical"),
        ({"utilisation_warning": True}, "utilisation_warning"),
        ({"utilisation_critical": 0.7}, "utilisation_critical"),
        ({"psi_warning": 0.0}, "psi_warning"),
        ({"psi_critical": 101.0}, "psi_critical"),
        ({"psi_warning": 60.0}, "psi_critical"),
        ({"exit_margin": 1.0}, "exit_margin"),
        ({"exit_margin": -0.1}, "exit_margin"),
        ({"exit_samples": 0}, "exit_samples"),
        ({"exit_samples": 2.5}, "exit_samples"),
    ],
)
def test_bad_settings_name_the_field(kwargs: dict[str, float], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        CpuConfig(**kwargs)  # type: ignore[arg-type]
    assert info.value.path == path
    with pytest.raises(ConfigError) as info:
        CpuMonitor(probe=CpuReading, **kwargs)  # type: ignore[arg-type]
    assert info.value.path == path


# -- the monitor shell, on a manual clock -------------------------------------------------------


class Scenario:
    """A probe that plays a cgroup's counters forward: ``load(used, throttled)`` per second."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.reading = CpuReading(
            usage_usec=0, nr_periods=0, nr_throttled=0, throttled_usec=0, quota_cores=2.0
        )
        self.calls = 0

    def load(self, used: float, throttled_share: float, seconds: float = 1.0) -> None:
        """``seconds`` pass with ``used`` of the 2 cores busy and that share of periods
        throttled (10 periods a second)."""
        r = self.reading
        periods = round(10 * seconds)
        self.reading = replace(
            r,
            usage_usec=(r.usage_usec or 0) + round(used * 2 * seconds * 1e6),
            nr_periods=(r.nr_periods or 0) + periods,
            nr_throttled=(r.nr_throttled or 0) + round(periods * throttled_share),
            throttled_usec=(r.throttled_usec or 0) + round(periods * throttled_share * 30_000),
        )
        self.clock.advance(seconds)

    def __call__(self) -> CpuReading:
        self.calls += 1
        return self.reading


def monitor(clock: ManualClock, **kwargs: object) -> tuple[CpuMonitor, Scenario]:
    scenario = Scenario(clock)
    return CpuMonitor(probe=scenario, clock=clock, **kwargs), scenario  # type: ignore[arg-type]


def test_maybe_sample_is_cheap_until_the_interval_has_passed(clock: ManualClock) -> None:
    cpu, scenario = monitor(clock, check_interval=1.0)
    assert cpu.maybe_sample() is not None  # the first is due at once
    assert cpu.maybe_sample() is None
    clock.advance(0.5)
    assert cpu.maybe_sample() is None
    assert scenario.calls == 1
    clock.advance(0.4)  # 0.9 s: a tenth early counts as on time
    assert cpu.maybe_sample() is not None
    assert cpu.next_sample_at == pytest.approx(1.9)


def test_levels_follow_the_load_with_hysteresis_and_listeners_hear_each_change(
    clock: ManualClock,
) -> None:
    cpu, scenario = monitor(clock, exit_samples=2)
    heard: list[tuple[LevelChange, CpuSnapshot]] = []
    cpu.on_change(lambda change, snapshot: heard.append((change, snapshot)))
    first = cpu.sample()
    assert first.signals.throttle_ratio is None  # one reading has no rates
    levels = []
    for used, share in [(0.5, 0.0), (0.9, 0.2), (1.0, 0.6), (0.5, 0.0), (0.5, 0.0), (0.3, 0.0)]:
        scenario.load(used, share)
        levels.append(cpu.sample().level)
    assert levels == [N, W, C, C, N, N]
    assert [(c.previous, c.level, c.reason) for c, _ in heard] == [
        (N, W, "throttling"),
        (W, C, "throttling"),
        (C, N, "recovered"),
    ]
    change, snapshot = heard[1]
    assert snapshot.level is C
    assert snapshot.throttle_ratio == pytest.approx(0.6)
    assert snapshot.utilisation == pytest.approx(1.0)
    assert snapshot.utilisation_source == "cgroup"
    assert snapshot.throttled_seconds == pytest.approx(0.18)
    assert snapshot.effective_cores == 2.0
    assert snapshot.level_age == 0.0
    assert change.at == clock.monotonic() - 3.0


def test_level_samples_lazily_when_due(clock: ManualClock) -> None:
    cpu, scenario = monitor(clock)
    assert cpu.level is N
    scenario.load(1.0, 0.0, seconds=0.5)
    assert cpu.level is N  # not due yet: the reading is not even taken
    assert scenario.calls == 1
    scenario.load(1.0, 0.0, seconds=0.5)
    assert cpu.level is C  # 1 s of both cores busy
    assert scenario.calls == 2


def test_snapshot_before_any_sample_and_as_plain_data(clock: ManualClock) -> None:
    cpu, _ = monitor(clock, name="api")
    snapshot = cpu.snapshot()  # samples first: the first sample is due at once
    assert snapshot.samples == 1
    assert snapshot.throttle_ratio is None
    data = snapshot.to_dict()
    assert data["level"] == "normal"
    assert data["name"] == "api"
    assert data["quota_cores"] == 2.0
    assert data["sample_age"] == 0.0
    sample = cpu.last_sample
    assert sample is not None
    assert sample.to_dict()["reading"]["quota_cores"] == 2.0


def test_a_failing_probe_is_counted_and_the_level_kept(clock: ManualClock) -> None:
    calls: Iterator[CpuReading | Exception] = iter([CpuReading(), OSError("gone")])

    def probe() -> CpuReading:
        item = next(calls)
        if isinstance(item, Exception):
            raise item
        return item

    cpu = CpuMonitor(probe=probe, clock=clock)
    assert cpu.maybe_sample() is not None
    clock.advance(1.0)
    assert cpu.maybe_sample() is None
    assert cpu.snapshot().probe_errors == 1
    with pytest.raises(TypeError):
        CpuMonitor(probe=lambda: "nope", clock=clock).sample()  # type: ignore[arg-type,return-value]


def test_listeners_that_raise_do_not_stop_the_others(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    cpu, scenario = monitor(clock, exit_samples=1)
    heard: list[PressureLevel] = []

    def broken(change: LevelChange, snapshot: CpuSnapshot) -> None:
        raise RuntimeError("listener bug")

    cpu.on_change(broken)
    remove = cpu.on_change(lambda change, snapshot: heard.append(change.level))
    cpu.sample()
    scenario.load(1.0, 0.0)
    cpu.sample()
    assert heard == [C]
    assert "listener bug" in caplog.text
    remove()
    scenario.load(0.1, 0.0)
    assert cpu.sample().level is N
    assert heard == [C]


@pytest.mark.parametrize("listener", [42, "print"])
def test_a_listener_must_be_a_plain_callable(clock: ManualClock, listener: object) -> None:
    cpu, _ = monitor(clock)
    with pytest.raises(ConfigError) as info:
        cpu.on_change(listener)  # type: ignore[arg-type]
    assert info.value.path == "listener"


def test_an_async_listener_is_refused(clock: ManualClock) -> None:
    async def listener(change: LevelChange, snapshot: CpuSnapshot) -> None: ...

    cpu, _ = monitor(clock)
    with pytest.raises(ConfigError, match="coroutine function"):
        cpu.on_change(listener)


def test_probe_and_root_are_exclusive(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        CpuMonitor(probe=CpuReading, root=tmp_path)
    assert info.value.path == "probe"
    with pytest.raises(ConfigError):
        CpuMonitor(probe=42)  # type: ignore[arg-type]


def test_the_default_probe_reads_this_machine(clock: ManualClock) -> None:
    cpu = CpuMonitor(clock=clock)
    cpu.sample()
    clock.advance(1.0)
    sample = cpu.sample()
    assert sample.signals.effective_cores is None or sample.signals.effective_cores > 0
    assert "CpuMonitor(name='cpu'" in repr(cpu)
