"""buttress: the infrastructure layer for Python services.

Circuit breakers with gradual degradation, rate limiters, connection pools, memory pressure,
chaos, health and telemetry, for threads and asyncio alike. Everything public is listed in
``__all__``; every other module is private.
"""

from __future__ import annotations

from . import events
from ._clock import Clock, ManualClock, SystemClock
from ._scheduler import AsyncScheduler, Scheduler
from .breaker import (
    BreakerConfig,
    BreakerSnapshot,
    BreakerState,
    CircuitBreaker,
    DegradationLevel,
    Permit,
    Transition,
)
from .chaos import FaultInjector
from .errors import (
    BackendError,
    ButtressError,
    CircuitOpenError,
    ConfigError,
    InjectedFault,
    LoadShedError,
    PoolClosedError,
    PoolTimeoutError,
    RateLimitExceeded,
    RejectedError,
)
from .pool import (
    AsyncConnectionPool,
    AsyncLease,
    ConnectionPool,
    Lease,
    PoolConfig,
    PoolStats,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "AsyncConnectionPool",
    "AsyncLease",
    "AsyncScheduler",
    "BackendError",
    "BreakerConfig",
    "BreakerSnapshot",
    "BreakerState",
    "ButtressError",
    "CircuitBreaker",
    "CircuitOpenError",
    "Clock",
    "ConfigError",
    "ConnectionPool",
    "DegradationLevel",
    "FaultInjector",
    "InjectedFault",
    "Lease",
    "LoadShedError",
    "ManualClock",
    "Permit",
    "PoolClosedError",
    "PoolConfig",
    "PoolStats",
    "PoolTimeoutError",
    "RateLimitExceeded",
    "RejectedError",
    "Scheduler",
    "SystemClock",
    "Transition",
    "__version__",
    "events",
]

# Public names report themselves as ``buttress.X`` (in reprs, docs and pickles).
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type):
        _obj.__module__ = "buttress"
del _name, _obj
