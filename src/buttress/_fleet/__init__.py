"""Breakers that share their view across processes, on Redis (see ``docs/fleet.md``).

``_core.py`` decides (pure, ``now`` passed in); ``_redis.py`` holds the keys and scripts;
``_fleet.py`` is :class:`RedisFleet`, the driver thread and what it tells each breaker.
"""

from ._fleet import FleetStatus, OverrideStatus, RedisFleet

__all__ = ["FleetStatus", "OverrideStatus", "RedisFleet"]
