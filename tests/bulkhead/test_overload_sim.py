"""The overload simulation, small and seeded: an adaptive limit finds the service's capacity."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path
from types import ModuleType

import pytest

from buttress._bulkhead._adaptive import AdaptiveConcurrency

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load_simulation() -> ModuleType:
    spec = importlib.util.spec_from_file_location("overload_sim", BENCHMARKS / "overload.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


sim = load_simulation()


@pytest.mark.parametrize(
    ("algorithm", "service", "load", "high"),
    [
        ("gradient2", "queue", 3.0, 2.0),  # settles near 1.5 C: latency 1.5 x no-load
        ("vegas", "queue", 3.0, 1.5),  # a few calls above C
        ("gradient2", "ps", 3.0, 2.0),
        ("vegas", "ps", 3.0, 1.5),
        ("gradient2", "queue", 1.2, 2.0),  # modest overload: no runaway either
        ("vegas", "queue", 1.2, 2.0),
    ],
)
def test_the_adaptive_limit_finds_the_capacity(
    algorithm: str, service: str, load: float, high: float
) -> None:
    """Not told C = 20, the limit's mean and final value lie in [C, high x C], and the
    admitted calls' p99 is within twice the unloaded p99 (the SLO)."""
    capacity = 20
    slo = 2 * sim.unloaded_p99(1)
    limit = AdaptiveConcurrency("sim", algorithm=algorithm, rng=random.Random(1))  # type: ignore[arg-type]
    result = sim.simulate(
        algorithm,
        sim.Gate(adaptive=limit),
        capacity=capacity,
        duration=6.0,
        seed=1,
        slo=slo,
        service=service,
        load=load,
    )
    assert capacity <= result.limit_mean <= high * capacity
    assert capacity * 0.9 <= result.limit_final <= high * capacity
    assert result.p99 <= slo
    assert result.timeouts == 0


def test_no_limit_collapses() -> None:
    """The simulation's premise: unlimited, three times the capacity times every call out."""
    slo = 2 * sim.unloaded_p99(1)
    result = sim.simulate("none", sim.Gate(), capacity=20, duration=6.0, seed=1, slo=slo)
    assert result.goodput < 0.05 * 20 / 0.02
    assert result.timeouts > 0.5
