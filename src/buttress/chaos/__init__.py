"""Chaos engineering: fault and latency injection, off by default."""

from ._faults import Fault, FaultInjector

__all__ = ["Fault", "FaultInjector"]
