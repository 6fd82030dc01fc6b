"""buttress: the infrastructure layer for Python services.

Circuit breakers with gradual degradation, rate limiters, connection pools, memory pressure,
chaos, health and telemetry, for threads and asyncio alike. Everything public is listed in
``__all__``; every other module is private.
"""

from . import events, http
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
from .chaos import Chaos, Experiment, FaultInjector, FaultSettings
from .config import Config, load_config
from .errors import (
    BackendError,
    ButtressError,
    CircuitOpenError,
    ConfigError,
    InfrastructureClosedError,
    InjectedFault,
    LoadShedError,
    PoolClosedError,
    PoolTimeoutError,
    RateLimitExceeded,
    RejectedError,
)
from .health import ComponentCheck, HealthReport, health_asgi_app, health_wsgi_app
from .infrastructure import Infrastructure, Protection, ResourceSpec
from .instrument import ServiceSnapshot
from .memory import (
    MemoryLevel,
    MemoryManager,
    MemoryReading,
    MemorySample,
    MemorySnapshot,
    Psi,
    SystemProbe,
)
from .pool import (
    AsyncConnectionPool,
    AsyncLease,
    ConnectionPool,
    Lease,
    PoolConfig,
    PoolStats,
)
from .ratelimit import (
    Decision,
    MemoryBackend,
    RateLimiter,
    RateLimiterSnapshot,
    RedisBackend,
    Scope,
    ScopeStatus,
    SQLiteBackend,
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
    "Chaos",
    "CircuitBreaker",
    "CircuitOpenError",
    "Clock",
    "ComponentCheck",
    "Config",
    "ConfigError",
    "ConnectionPool",
    "Decision",
    "DegradationLevel",
    "Experiment",
    "FaultInjector",
    "FaultSettings",
    "HealthReport",
    "Infrastructure",
    "InfrastructureClosedError",
    "InjectedFault",
    "Lease",
    "LoadShedError",
    "ManualClock",
    "MemoryBackend",
    "MemoryLevel",
    "MemoryManager",
    "MemoryReading",
    "MemorySample",
    "MemorySnapshot",
    "Permit",
    "PoolClosedError",
    "PoolConfig",
    "PoolStats",
    "PoolTimeoutError",
    "Protection",
    "Psi",
    "RateLimitExceeded",
    "RateLimiter",
    "RateLimiterSnapshot",
    "RedisBackend",
    "RejectedError",
    "ResourceSpec",
    "SQLiteBackend",
    "Scheduler",
    "Scope",
    "ScopeStatus",
    "ServiceSnapshot",
    "SystemClock",
    "SystemProbe",
    "Transition",
    "__version__",
    "events",
    "health_asgi_app",
    "health_wsgi_app",
    "http",
    "load_config",
]

# Public names report themselves as ``buttress.X`` (in reprs, docs and pickles).
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type):
        _obj.__module__ = "buttress"
del _name, _obj
