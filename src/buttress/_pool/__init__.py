"""Connection pools for threads and asyncio. The decisions live in ``_state.py``.

``_pool.py`` is generated from ``_pool_async.py`` by ``tools/async_to_sync.py``.
"""

from ._config import PoolConfig
from ._pool import ConnectionPool, Lease
from ._pool_async import AsyncConnectionPool, AsyncLease
from ._state import PoolSnapshot, PoolState

__all__ = [
    "AsyncConnectionPool",
    "AsyncLease",
    "ConnectionPool",
    "Lease",
    "PoolConfig",
    "PoolSnapshot",
    "PoolState",
]
