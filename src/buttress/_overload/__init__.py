"""Overload monitors beside memory: CPU (cgroup v2 throttling and quota, PSI, process time)
and asyncio event-loop lag, each a pure policy over readings from an injectable probe."""
