"""Which calls overload sheds: the first layer of ``protect()``.

Each monitor (memory, CPU, the event loop of the call) has a level. At ``warning`` a
``sheddable`` call is shed; at ``critical`` a ``normal`` one too; a ``critical`` call never is
(``_priority.py``). The refusal is a :class:`~buttress.LoadShedError` whose ``reason`` says
which monitor shed it (``memory_pressure``, ``cpu_pressure``, ``loop_lag``) and ``level`` at
what level. Memory sheds only when its manager's ``pressure_relief_enabled`` is on, as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from .._errors import LoadShedError
from .._pressure import PressureLevel
from .._priority import CRITICAL, SHEDDABLE

if TYPE_CHECKING:
    from .._memory import MemoryManager
    from ._cpu import CpuMonitor
    from ._loop_monitor import LoopLagMonitors

__all__ = ["OverloadGate"]

_NORMAL: Final = PressureLevel.NORMAL
_CRITICAL: Final = PressureLevel.CRITICAL


class OverloadGate:
    """The monitors an infrastructure has, asked in turn for one call's priority."""

    __slots__ = ("cpu", "loops", "memory")

    def __init__(
        self,
        memory: MemoryManager | None,
        cpu: CpuMonitor | None,
        loops: LoopLagMonitors | None,
    ) -> None:
        self.memory = memory
        self.cpu = cpu
        self.loops = loops

    def check(self, priority: int) -> None:
        """Raise :class:`~buttress.LoadShedError` when a monitor sheds a call of ``priority``."""
        if priority == CRITICAL:
            return
        memory = self.memory
        if memory is not None and memory.pressure_relief_enabled:
            level = memory.level
            if level is not _NORMAL and (level is _CRITICAL or priority == SHEDDABLE):
                if level is _CRITICAL:
                    memory.raise_if_shedding()  # counts and reports the shed, as it always did
                raise LoadShedError("memory_pressure", level=level.value, source=memory.name)
        cpu = self.cpu
        if cpu is not None:
            level = cpu.level
            if level is not _NORMAL and (level is _CRITICAL or priority == SHEDDABLE):
                raise LoadShedError("cpu_pressure", level=level.value, source=cpu.name)
        loops = self.loops
        if loops is not None:
            level = loops.level()
            if level is not _NORMAL and (level is _CRITICAL or priority == SHEDDABLE):
                raise LoadShedError("loop_lag", level=level.value, source=loops.name)
