"""Breakers that share their view across processes, on Redis (see ``docs/fleet.md``).

``_core.py`` decides (pure, ``now`` passed in); ``_redis.py`` holds the keys and scripts;
``_fleet.py`` is :class:`RedisFleet`, the driver thread and what it tells each breaker.
A configuration published for the fleet (``buttress config publish``): ``_publication.py``
decides what a process makes of it (pure), ``_publication_store.py`` holds its keys and
scripts; ``_infrastructure/_follow.py`` applies it to an infrastructure.
"""

from ._fleet import FleetStatus, OverrideStatus, RedisFleet

__all__ = ["FleetStatus", "OverrideStatus", "RedisFleet"]
