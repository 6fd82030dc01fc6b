"""The memory manager: measure the pressure the process really faces, and relieve it.

``_probe.py`` reads the kernel (cgroup v2/v1, PSI, the host, the process), ``_policy.py``
decides the level from a reading (pure), ``_manager.py`` samples on a schedule and relieves.
"""

from ._manager import MemoryManager, MemorySample, MemorySnapshot
from ._policy import MemoryLevel
from ._probe import MemoryReading, Psi, SystemProbe

__all__ = [
    "MemoryLevel",
    "MemoryManager",
    "MemoryReading",
    "MemorySample",
    "MemorySnapshot",
    "Psi",
    "SystemProbe",
]
