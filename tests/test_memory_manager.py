"""MemoryManager with an injected probe and a manual clock: levels, relief, shedding, sampling."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator, Mapping

import pytest

from buttress import (
    ConfigError,
    LoadShedError,
    ManualClock,
    MemoryLevel,
    MemoryManager,
    MemoryReading,
    MemorySample,
    Psi,
)
from conftest import EventLog

N, W, C = MemoryLevel.NORMAL, MemoryLevel.WARNING, MemoryLevel.CRITICAL
LIMIT = 1_000_000


class ScriptedProbe:
    """A probe whose next reading the test sets: ``probe.ratio = 0.9``."""

    def __init__(self, ratio: float = 0.1) -> None:
        self.ratio = ratio
        self.psi: Psi | None = None
        self.events: Mapping[str, int] = {}
        self.reads = 0
        self.error: Exception | None = None

    def __call__(self) -> MemoryReading:
        self.reads += 1
        if self.error is not None:
            raise self.error
        return MemoryReading(
            source="scenario",
            used=int(self.ratio * LIMIT),
            limit=LIMIT,
            rss=123,
            psi=self.psi,
            events=self.events,
        )


@pytest.fixture
def probe() -> ScriptedProbe:
    return ScriptedProbe()


@pytest.fixture
def collections(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts gc.collect() calls made by the manager (without collecting)."""
    calls: list[int] = []

    def fake_collect(generation: int = 2) -> int:
        calls.append(generation)
        return 5

    monkeypatch.setattr(gc, "collect", fake_collect)
    return calls


def manager(probe: ScriptedProbe, clock: ManualClock, **kwargs: object) -> MemoryManager:
    return MemoryManager(probe=probe, clock=clock, check_interval=10.0, **kwargs)  # type: ignore[arg-type]


def feed(
    mm: MemoryManager, probe: ScriptedProbe, clock: ManualClock, ratios: list[float]
) -> Iterator[MemoryLevel]:
    for ratio in ratios:
        probe.ratio = ratio
        clock.advance(mm.check_interval)
        yield mm.sample().level


def test_sample_reports_the_reading_and_level(probe: ScriptedProbe, clock: ManualClock) -> None:
    mm = manager(probe, clock)
    probe.ratio = 0.75
    sample = mm.sample()
    assert isinstance(sample, MemorySample)
    assert (sample.level, sample.source, sample.limit, sample.used, sample.rss) == (
        W,
        "scenario",
        LIMIT,
        750_000,
        123,
    )
    assert sample.ratio == pytest.approx(0.75)
    assert sample.psi is None
    assert mm.last_sample is sample
    assert mm.level is W


def test_levels_with_hysteresis(probe: ScriptedProbe, clock: ManualClock) -> None:
    mm = manager(probe, clock, exit_samples=2)
    ratios = [0.5, 0.72, 0.86, 0.83, 0.5, 0.5, 0.69, 0.72, 0.6, 0.66, 0.6, 0.6]
    levels = list(feed(mm, probe, clock, ratios))
    assert levels == [N, W, C, C, C, N, N, W, W, W, W, N]


def test_level_change_events(probe: ScriptedProbe, clock: ManualClock, event_log: EventLog) -> None:
    mm = manager(probe, clock, exit_samples=1)
    list(feed(mm, probe, clock, [0.9, 0.1]))
    changes = event_log.named("buttress", "memory", "level_change")
    assert [(md["from_level"], md["to_level"], md["reason"]) for _, md in changes] == [
        ("normal", "critical", "ratio"),
        ("critical", "normal", "recovered"),
    ]
    samples = event_log.named("buttress", "memory", "sample")
    assert len(samples) == 2
    assert samples[0][1]["psi_some_avg10"] is None  # absent PSI is null, never 0


def test_relief_callbacks_run_once_per_entry(
    probe: ScriptedProbe, clock: ManualClock, collections: list[int]
) -> None:
    mm = manager(probe, clock, exit_samples=1)
    seen: list[tuple[str, MemoryLevel]] = []
    mm.on_pressure("warning", lambda s: seen.append(("warning", s.level)))
    mm.on_pressure(C, lambda s: seen.append(("critical", s.level)))
    mm.on_pressure("normal", lambda s: seen.append(("normal", s.level)))
    list(feed(mm, probe, clock, [0.75, 0.75, 0.75]))
    assert seen == [("warning", W)]
    list(feed(mm, probe, clock, [0.9, 0.9, 0.75, 0.9]))
    assert seen == [("warning", W), ("critical", C), ("critical", C)]
    seen.clear()
    list(feed(mm, probe, clock, [0.1, 0.1, 0.95]))
    # back to normal, then a jump straight to critical runs warning's callbacks first
    assert seen == [("normal", N), ("warning", C), ("critical", C)]


def test_a_failing_callback_is_reported_and_the_others_still_run(
    probe: ScriptedProbe, clock: ManualClock, event_log: EventLog, collections: list[int]
) -> None:
    mm = manager(probe, clock)
    ran: list[str] = []

    def broken(sample: MemorySample) -> None:
        raise RuntimeError("cache is gone")

    mm.on_pressure("warning", broken)
    mm.on_pressure("warning", lambda s: ran.append("trim"))
    list(feed(mm, probe, clock, [0.8]))
    assert ran == ["trim"]
    relief = event_log.named("buttress", "memory", "relief")
    assert [md["error"] for _, md in relief] == ["RuntimeError('cache is gone')", None]
    assert relief[0][1]["callback"].endswith("broken")
    assert mm.snapshot().relief_runs == 2


def test_a_coroutine_function_callback_is_refused(probe: ScriptedProbe, clock: ManualClock) -> None:
    mm = manager(probe, clock)

    async def clear_cache(sample: MemorySample) -> None: ...

    with pytest.raises(ConfigError, match="coroutine function, which nothing would await") as info:
        mm.on_pressure("warning", clear_cache)  # type: ignore[arg-type]
    assert info.value.path == "callback"


def test_unregistered_callbacks_do_not_run(
    probe: ScriptedProbe, clock: ManualClock, collections: list[int]
) -> None:
    mm = manager(probe, clock, exit_samples=1)
    ran: list[MemoryLevel] = []
    unregister = mm.on_pressure("warning", lambda s: ran.append(s.level))
    list(feed(mm, probe, clock, [0.8, 0.1]))
    unregister()
    unregister()  # twice is harmless
    list(feed(mm, probe, clock, [0.8]))
    assert ran == [W]


def test_gc_collect_is_rate_limited(
    probe: ScriptedProbe, clock: ManualClock, collections: list[int], event_log: EventLog
) -> None:
    mm = manager(probe, clock, gc_interval=30.0)  # samples every 10 s
    list(feed(mm, probe, clock, [0.5, 0.5]))
    assert collections == []  # no pressure, no collection
    list(feed(mm, probe, clock, [0.8] * 7))  # 70 s at warning
    assert len(collections) == 3  # at 0, 30 and 60 s into the pressure
    gcs = event_log.named("buttress", "memory", "gc")
    assert [m["collected"] for m, _ in gcs] == [5, 5, 5]
    assert {md["level"] for _, md in gcs} == {"warning"}
    assert mm.snapshot().gc_runs == 3


def test_without_pressure_relief_nothing_is_done(
    probe: ScriptedProbe, clock: ManualClock, collections: list[int]
) -> None:
    mm = manager(probe, clock, pressure_relief_enabled=False)
    ran: list[MemorySample] = []
    mm.on_pressure("critical", ran.append)
    list(feed(mm, probe, clock, [0.95, 0.95]))
    assert mm.level is C
    assert ran == []
    assert collections == []
    assert not mm.should_shed()
    mm.raise_if_shedding()  # does not raise


def test_shedding_at_critical_spares_critical_work(
    probe: ScriptedProbe, clock: ManualClock, collections: list[int], event_log: EventLog
) -> None:
    mm = manager(probe, clock, exit_samples=3)
    list(feed(mm, probe, clock, [0.8]))
    assert not mm.should_shed()
    list(feed(mm, probe, clock, [0.9]))
    assert mm.should_shed()
    assert mm.should_shed(critical=False)
    assert not mm.should_shed(critical=True)
    mm.raise_if_shedding(critical=True)
    clock.advance(4.0)
    with pytest.raises(LoadShedError) as info:
        mm.raise_if_shedding()
    err = info.value
    assert (err.reason, err.level, err.source) == ("memory_pressure", "critical", "memory")
    # next sample in 6 s, then two more samples below the line to leave critical
    assert err.retry_after == pytest.approx(6.0 + 2 * 10.0)
    shed = event_log.named("buttress", "memory", "shed")
    assert [m["retry_after"] for m, _ in shed] == [pytest.approx(26.0)]
    assert mm.snapshot().shed == 1


def test_maybe_sample_waits_for_the_check_interval(
    probe: ScriptedProbe, clock: ManualClock
) -> None:
    mm = manager(probe, clock)
    assert mm.next_sample_at == clock.monotonic()
    first = mm.maybe_sample()
    assert first is not None
    assert probe.reads == 1
    clock.advance(8.9)
    assert mm.maybe_sample() is None
    assert probe.reads == 1
    assert mm.next_sample_at == pytest.approx(10.0)
    clock.advance(0.1)  # 9.0 s: a scheduler's jittered period, a tenth early, still counts
    assert mm.maybe_sample() is not None
    assert probe.reads == 2


def test_reading_the_level_samples_lazily(probe: ScriptedProbe, clock: ManualClock) -> None:
    mm = manager(probe, clock)
    probe.ratio = 0.9
    assert mm.level is C  # first read samples at once
    probe.ratio = 0.1
    assert mm.level is C
    assert probe.reads == 1
    assert mm.should_shed()
    assert probe.reads == 1


def test_a_failing_probe_keeps_the_level_and_is_reported(
    probe: ScriptedProbe, clock: ManualClock, event_log: EventLog
) -> None:
    mm = manager(probe, clock)
    probe.ratio = 0.8
    mm.sample()
    probe.error = OSError("memory.current vanished")
    clock.advance(10.0)
    assert mm.maybe_sample() is None
    assert mm.level is W
    errors = event_log.named("buttress", "memory", "probe_error")
    assert [md["error"] for _, md in errors] == ["OSError('memory.current vanished')"]
    assert mm.maybe_sample() is None
    assert probe.reads == 2
    with pytest.raises(OSError, match="vanished"):
        mm.sample()  # an explicit sample raises


def test_probe_must_return_a_reading(clock: ManualClock) -> None:
    mm = MemoryManager(probe=lambda: 0.5, clock=clock)  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="MemoryReading"):
        mm.sample()


def test_psi_pressure_raises_the_level(probe: ScriptedProbe, clock: ManualClock) -> None:
    mm = manager(probe, clock, psi_warning=10.0, psi_critical=5.0)
    probe.psi = Psi(some_avg10=30.0, some_avg60=9.0, some_avg300=2.0, some_total=1, full_avg10=6.0)
    sample = mm.sample()
    assert sample.level is C
    assert sample.ratio < 0.7
    assert mm.snapshot().reason == "psi"


def test_limit_counter_increases_are_reported(
    probe: ScriptedProbe, clock: ManualClock, event_log: EventLog
) -> None:
    mm = manager(probe, clock)
    probe.events = {"high": 10, "max": 2, "oom": 0, "oom_kill": 1}
    assert mm.sample().events == {}  # the first sample is the baseline
    probe.events = {"high": 14, "max": 2, "oom": 1, "oom_kill": 2}
    clock.advance(10.0)
    assert dict(mm.sample().events) == {"high": 4, "oom": 1, "oom_kill": 1}
    reported = event_log.named("buttress", "memory", "limit_events")
    assert [m for m, _ in reported] == [{"high": 4, "max": 0, "oom": 1, "oom_kill": 1}]
    probe.events = {"high": 0, "max": 0, "oom": 0, "oom_kill": 0}  # counters reset
    clock.advance(10.0)
    assert mm.sample().events == {}
    assert dict(mm.snapshot().limit_events) == {"high": 4, "max": 0, "oom": 1, "oom_kill": 1}


def test_snapshot_is_json_ready(probe: ScriptedProbe, clock: ManualClock) -> None:
    mm = manager(probe, clock)
    probe.ratio = 0.75
    clock.advance(5.0)
    snap = mm.snapshot()
    clock.advance(3.0)
    d = json.loads(json.dumps(mm.snapshot().to_dict()))
    assert d["level"] == "warning"
    assert d["source"] == "scenario"
    assert d["psi_some_avg10"] is None
    assert d["psi_full_avg10"] is None
    assert d["sample_age"] == pytest.approx(3.0)
    assert d["level_age"] == pytest.approx(3.0)
    assert d["shedding"] is False
    assert snap.samples == 1
    assert json.loads(json.dumps(mm.sample().to_dict()))["psi"] is None


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"check_interval": 0}, "check_interval"),
        ({"warning_threshold": 0.9}, "critical_threshold"),
        ({"probe": "not callable"}, "probe"),
        ({"probe": lambda: None, "limit_bytes": 10}, "probe"),
        ({"source": "swap"}, "source"),
    ],
)
def test_bad_settings_name_the_setting(kwargs: dict[str, object], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        MemoryManager(**kwargs)  # type: ignore[arg-type]
    assert info.value.path == path


def test_on_pressure_rejects_unknown_levels(probe: ScriptedProbe, clock: ManualClock) -> None:
    mm = manager(probe, clock)
    with pytest.raises(ConfigError, match="normal, warning, critical"):
        mm.on_pressure("panic", print)
    with pytest.raises(ConfigError, match="callable"):
        mm.on_pressure("warning", None)  # type: ignore[arg-type]
