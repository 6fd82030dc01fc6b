"""Circuit breaker with gradual degradation. The decisions live in ``_machine.py``."""

from ._breaker import BreakerSnapshot, CircuitBreaker, Guard, Permit
from ._config import BreakerConfig
from ._machine import BreakerMachine
from ._states import BreakerState, DegradationLevel, Transition

__all__ = [
    "BreakerConfig",
    "BreakerMachine",
    "BreakerSnapshot",
    "BreakerState",
    "CircuitBreaker",
    "DegradationLevel",
    "Guard",
    "Permit",
    "Transition",
]
