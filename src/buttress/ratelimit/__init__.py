"""Rate limiting: pure algorithm cores (``_algorithms.py``), backends, and the limiter shell."""

from ._adaptive import AdaptiveLimit, AdaptiveState
from ._algorithms import (
    Algorithm,
    FixedWindow,
    SlidingWindow,
    State,
    TokenBucket,
    Verdict,
    admit_all,
    decide_all,
)
from ._backend import Backend, Outcome, TimeBase
from ._decision import Decision, ScopeStatus
from ._failure import FAILURE_POLICIES, FailurePolicy
from ._from_url import backend_from_url
from ._keys import Key
from ._limiter import RateLimiter
from ._memory import MemoryBackend, MemoryBackendStats
from ._redis import RedisBackend
from ._registry import ALGORITHMS
from ._scope import Scope
from ._sqlite import SQLiteBackend
from ._stats import RateLimiterSnapshot, ScopeSnapshot

__all__ = [
    "ALGORITHMS",
    "FAILURE_POLICIES",
    "AdaptiveLimit",
    "AdaptiveState",
    "Algorithm",
    "Backend",
    "Decision",
    "FailurePolicy",
    "FixedWindow",
    "Key",
    "MemoryBackend",
    "MemoryBackendStats",
    "Outcome",
    "RateLimiter",
    "RateLimiterSnapshot",
    "RedisBackend",
    "SQLiteBackend",
    "Scope",
    "ScopeSnapshot",
    "ScopeStatus",
    "SlidingWindow",
    "State",
    "TimeBase",
    "TokenBucket",
    "Verdict",
    "admit_all",
    "backend_from_url",
    "decide_all",
]
