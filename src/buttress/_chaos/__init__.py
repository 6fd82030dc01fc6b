"""Chaos engineering: fault and latency injection and time-boxed experiments, off by default."""

from ._chaos import Chaos
from ._experiment import Experiment
from ._faults import NO_FAULT, Fault, FaultInjector, FaultSettings
from ._schedule import ChaosSchedule

__all__ = [
    "NO_FAULT",
    "Chaos",
    "ChaosSchedule",
    "Experiment",
    "Fault",
    "FaultInjector",
    "FaultSettings",
]
