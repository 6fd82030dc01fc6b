"""Overload monitors beside memory: CPU (cgroup v2 throttling and quota, PSI, process time)
and asyncio event-loop lag, each a pure policy over readings from an injectable probe.

``_cpu_probe.py`` reads the kernel, ``_cpu_policy.py`` derives signals from two readings and a
level from the signals (pure), ``_cpu.py`` samples on a clock. ``_loop_lag.py`` times a loop's
ticks and decides its level (pure), ``_loop_monitor.py`` keeps a tick pending on each loop. The
levels and their hysteresis are shared with memory (``buttress._pressure``).
"""

from .._pressure import LevelChange, PressureLevel
from ._cpu import CpuListener, CpuMonitor, CpuSample, CpuSnapshot
from ._cpu_policy import CpuConfig, CpuSignals
from ._cpu_probe import CpuProbe, CpuReading
from ._loop_lag import LagConfig
from ._loop_monitor import LoopLagListener, LoopLagMonitor, LoopLagMonitors, LoopLagSnapshot

__all__ = [
    "CpuConfig",
    "CpuListener",
    "CpuMonitor",
    "CpuProbe",
    "CpuReading",
    "CpuSample",
    "CpuSignals",
    "CpuSnapshot",
    "LagConfig",
    "LevelChange",
    "LoopLagListener",
    "LoopLagMonitor",
    "LoopLagMonitors",
    "LoopLagSnapshot",
    "PressureLevel",
]
