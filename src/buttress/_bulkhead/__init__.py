"""Bulkheads: a cap on calls in flight, static or adaptive.

``_core.py`` decides who enters, who waits and who is handed a freed place (pure);
``_adaptive.py`` moves an adaptive limit from measured latency (pure algorithms, clock passed
in); ``_bulkhead.py`` is the shell that waits, for threads and asyncio alike.
"""

from ._adaptive import AdaptiveConcurrency, AdaptiveSnapshot
from ._bulkhead import Bulkhead, BulkheadPermit, BulkheadSnapshot

__all__ = [
    "AdaptiveConcurrency",
    "AdaptiveSnapshot",
    "Bulkhead",
    "BulkheadPermit",
    "BulkheadSnapshot",
]
