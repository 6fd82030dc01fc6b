"""buttress: the infrastructure layer for Python services.

Circuit breakers with gradual degradation, rate limiters, connection pools, memory pressure,
chaos, health and telemetry, for threads and asyncio alike.

What an application writes is here, in ``__all__``. Besides this package, these modules are
public: :mod:`buttress.events` (the telemetry bus), :mod:`buttress.http` (rate-limit headers),
:mod:`buttress.ratelimit` (the rate limiter's extension points: backends of your own),
:mod:`buttress.testing` (test support and the pytest plugin) and :mod:`buttress.exporters`
(Prometheus and OpenTelemetry). Every module whose name starts with an underscore is private.
"""

from . import events, http
from ._breaker import (
    BreakerConfig,
    BreakerSnapshot,
    BreakerState,
    CircuitBreaker,
    DegradationLevel,
    Permit,
    Transition,
)
from ._chaos import Chaos, Experiment, FaultInjector, FaultSettings
from ._clock import Clock, ManualClock, SystemClock
from ._config import Config, load_config
from ._errors import (
    BackendError,
    ButtressError,
    CircuitOpenError,
    ConfigError,
    ContextError,
    InfrastructureClosedError,
    InjectedFault,
    LoadShedError,
    PoolClosedError,
    PoolTimeoutError,
    RateLimitExceeded,
    RejectedError,
)
from ._health import ComponentCheck, HealthReport, health_asgi_app, health_wsgi_app
from ._infrastructure import Infrastructure, Protection, ResourceSpec, ServiceLayers
from ._instrument import ServiceSnapshot
from ._memory import (
    MemoryLevel,
    MemoryManager,
    MemoryReading,
    MemorySample,
    MemorySnapshot,
    Psi,
    SystemProbe,
)
from ._pool import (
    AsyncConnectionPool,
    AsyncLease,
    ConnectionPool,
    Lease,
    PoolConfig,
    PoolStats,
)
from ._scheduler import AsyncScheduler, Scheduler
from .ratelimit._decision import Decision, ScopeStatus
from .ratelimit._limiter import RateLimiter
from .ratelimit._memory import MemoryBackend
from .ratelimit._redis import RedisBackend
from .ratelimit._scope import Scope
from .ratelimit._sqlite import SQLiteBackend
from .ratelimit._stats import RateLimiterSnapshot, ScopeSnapshot

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
    "ContextError",
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
    "ScopeSnapshot",
    "ScopeStatus",
    "ServiceLayers",
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
