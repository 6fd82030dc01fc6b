"""buttress: the infrastructure layer for Python services.

Circuit breakers with gradual degradation, rate limiters, connection pools, memory pressure,
chaos, health and telemetry, for threads and asyncio alike.

What an application writes is here, in ``__all__``. Besides this package, these modules are
public: :mod:`buttress.events` (the telemetry bus), :mod:`buttress.http` (rate-limit headers),
:mod:`buttress.ratelimit` (the rate limiter's extension points: backends of your own),
:mod:`buttress.testing` (test support and the pytest plugin) and :mod:`buttress.exporters`
(Prometheus and OpenTelemetry). Every module whose name starts with an underscore is private.

The pages that docstrings cite as ``docs/NAME.md`` are at
https://github.com/buttress-dev/buttress/tree/main/docs, and in the source distribution.
"""

import importlib as _importlib
import typing as _typing

from . import (
    _logging,  # noqa: F401 (on import: the package logger's NullHandler)
    events,
    http,
)
from ._breaker import (
    BreakerConfig,
    BreakerSnapshot,
    BreakerState,
    CircuitBreaker,
    DegradationLevel,
    Permit,
    Transition,
)
from ._bulkhead import (
    AdaptiveConcurrency,
    AdaptiveSnapshot,
    Bulkhead,
    BulkheadPermit,
    BulkheadSnapshot,
)
from ._chaos import Chaos, ChaosSchedule, Experiment, FaultInjector, FaultSettings
from ._clock import Clock, ManualClock, SystemClock
from ._errors import (
    BackendError,
    BulkheadFullError,
    ButtressError,
    CallTimeoutError,
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
from ._fleet import FleetStatus, OverrideStatus, RedisFleet
from ._health import (
    ComponentCheck,
    HealthReport,
    health_asgi_app,
    health_response,
    health_wsgi_app,
)
from ._infrastructure import (
    Infrastructure,
    Protection,
    Reloaded,
    ResourceSpec,
    ServiceLayers,
    health,
)
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
from ._overload import (
    CpuMonitor,
    CpuProbe,
    CpuReading,
    CpuSnapshot,
    LoopLagMonitor,
    LoopLagMonitors,
    LoopLagSnapshot,
    PressureLevel,
)
from ._policies import remaining
from ._pool import (
    AsyncConnectionPool,
    AsyncLease,
    ConnectionPool,
    Lease,
    PoolConfig,
    PoolSnapshot,
)
from ._retry import Attempt, Backoff, Retry, RetryBudget, RetryBudgetSnapshot, parse_retry_after
from ._scheduler import AsyncScheduler, Scheduler
from ._version import __version__
from .ratelimit._decision import Decision, ScopeStatus
from .ratelimit._leasing import Leasing
from .ratelimit._limiter import RateLimiter
from .ratelimit._memory import MemoryBackend
from .ratelimit._redis import RedisBackend
from .ratelimit._scope import Scope
from .ratelimit._sqlite import SQLiteBackend
from .ratelimit._stats import RateLimiterSnapshot, ScopeSnapshot

if _typing.TYPE_CHECKING:
    from ._config import Config, load_config
    from ._dashboard import DashboardApp, dashboard_app

__all__ = [
    "AdaptiveConcurrency",
    "AdaptiveSnapshot",
    "AsyncConnectionPool",
    "AsyncLease",
    "AsyncScheduler",
    "Attempt",
    "BackendError",
    "Backoff",
    "BreakerConfig",
    "BreakerSnapshot",
    "BreakerState",
    "Bulkhead",
    "BulkheadFullError",
    "BulkheadPermit",
    "BulkheadSnapshot",
    "ButtressError",
    "CallTimeoutError",
    "Chaos",
    "ChaosSchedule",
    "CircuitBreaker",
    "CircuitOpenError",
    "Clock",
    "ComponentCheck",
    "Config",
    "ConfigError",
    "ConnectionPool",
    "ContextError",
    "CpuMonitor",
    "CpuProbe",
    "CpuReading",
    "CpuSnapshot",
    "DashboardApp",
    "Decision",
    "DegradationLevel",
    "Experiment",
    "FaultInjector",
    "FaultSettings",
    "FleetStatus",
    "HealthReport",
    "Infrastructure",
    "InfrastructureClosedError",
    "InjectedFault",
    "Lease",
    "Leasing",
    "LoadShedError",
    "LoopLagMonitor",
    "LoopLagMonitors",
    "LoopLagSnapshot",
    "ManualClock",
    "MemoryBackend",
    "MemoryLevel",
    "MemoryManager",
    "MemoryReading",
    "MemorySample",
    "MemorySnapshot",
    "OverrideStatus",
    "Permit",
    "PoolClosedError",
    "PoolConfig",
    "PoolSnapshot",
    "PoolTimeoutError",
    "PressureLevel",
    "Protection",
    "Psi",
    "RateLimitExceeded",
    "RateLimiter",
    "RateLimiterSnapshot",
    "RedisBackend",
    "RedisFleet",
    "RejectedError",
    "Reloaded",
    "ResourceSpec",
    "Retry",
    "RetryBudget",
    "RetryBudgetSnapshot",
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
    "dashboard_app",
    "events",
    "health",
    "health_asgi_app",
    "health_response",
    "health_wsgi_app",
    "http",
    "load_config",
    "parse_retry_after",
    "remaining",
]

# Configuration is the only part that needs pydantic (about 100 ms to import): its names are
# imported on first use, so ``import buttress`` stays light (tests/test_api.py holds it).
_LAZY = {
    "Config": "._config",
    "load_config": "._config",
    "DashboardApp": "._dashboard",
    "dashboard_app": "._dashboard",
}


def _public(obj: object) -> None:
    """Public classes report themselves as ``buttress.X`` (in reprs, docs and pickles)."""
    if isinstance(obj, type):
        obj.__module__ = "buttress"


for _name in __all__:
    if _name not in _LAZY:
        _public(globals()[_name])
del _name

# Renamed public names still work, with a DeprecationWarning (see _deprecated.RENAMED).
_RENAMED = {"PoolStats": "PoolSnapshot"}

if _typing.TYPE_CHECKING:
    PoolStats = PoolSnapshot  # deprecated: PoolSnapshot
else:  # hidden from type checkers, which see the imports above: a misspelt name stays an error

    def __getattr__(name: str) -> object:
        if name in _RENAMED:
            _warn_renamed(f"buttress.{name}")  # at the line that asked for the old name
            return globals()[_RENAMED[name]]
        if name not in _LAZY:
            raise AttributeError(f"module 'buttress' has no attribute {name!r}")
        value = getattr(_importlib.import_module(_LAZY[name], __name__), name)
        _public(value)
        globals()[name] = value  # resolved once
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *_LAZY})

    from ._deprecated import warn_renamed as _warn_renamed
