"""The rate limiter's extension points: what a backend of your own is made of.

The limiter itself (:class:`buttress.RateLimiter`, :class:`buttress.Scope`, the backends
:class:`buttress.MemoryBackend`, :class:`buttress.SQLiteBackend` and
:class:`buttress.RedisBackend`) is in ``buttress``. This module holds the rest, for those who
store limits elsewhere (see ``docs/rate-limiting.md``, "Backends"):

* :class:`Backend`: the protocol a backend implements (``decide``, ``refund``, ``reset``, ...),
  with :data:`Outcome` (what ``decide`` returns) and :data:`TimeBase`;
* the algorithms a backend is handed, pure and stateless (:class:`Algorithm`, with
  :class:`TokenBucket`, :class:`FixedWindow`, :class:`SlidingWindow`), their :data:`State` and
  :class:`Verdict`, and :func:`decide_all` / :func:`admit_all`, which decide every scope of a
  request all or nothing, for a backend that keeps states in a process of its own;
* :func:`backend_from_url` (``"memory"``, ``"sqlite:///path"``, ``"redis://host/0"``),
  :data:`ALGORITHMS`, :data:`FailurePolicy` and :data:`Key` (what identifies a request).
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING

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
from ._failure import FAILURE_POLICIES, FailurePolicy
from ._from_url import backend_from_url
from ._keys import Key
from ._memory import MemoryBackendSnapshot
from ._registry import ALGORITHMS

__all__ = [
    "ALGORITHMS",
    "FAILURE_POLICIES",
    "Algorithm",
    "Backend",
    "FailurePolicy",
    "FixedWindow",
    "Key",
    "MemoryBackendSnapshot",
    "Outcome",
    "SlidingWindow",
    "State",
    "TimeBase",
    "TokenBucket",
    "Verdict",
    "admit_all",
    "backend_from_url",
    "decide_all",
]

# Renamed names still work, with a DeprecationWarning (see buttress._deprecated.RENAMED).
if _TYPE_CHECKING:
    MemoryBackendStats = MemoryBackendSnapshot  # deprecated: MemoryBackendSnapshot
else:
    from .._deprecated import module_renames as _module_renames

    __getattr__ = _module_renames(__name__, {"MemoryBackendStats": "MemoryBackendSnapshot"})
