"""The memory manager: measure the pressure the process really faces, and relieve it."""

from ._manager import MemoryManager, MemorySample, MemorySnapshot
from ._policy import MemoryLevel, PolicyConfig, PressurePolicy
from ._probe import (
    CgroupMemory,
    HostMemory,
    MemoryReading,
    Psi,
    SystemProbe,
    locate_cgroup,
    read_cgroup,
    read_meminfo,
    read_process_rss,
    read_psi,
)

__all__ = [
    "CgroupMemory",
    "HostMemory",
    "MemoryLevel",
    "MemoryManager",
    "MemoryReading",
    "MemorySample",
    "MemorySnapshot",
    "PolicyConfig",
    "PressurePolicy",
    "Psi",
    "SystemProbe",
    "locate_cgroup",
    "read_cgroup",
    "read_meminfo",
    "read_process_rss",
    "read_psi",
]
