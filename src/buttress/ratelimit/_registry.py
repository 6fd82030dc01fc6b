"""Every algorithm a scope may name, in one table.

A name (``Scope(algorithm=...)``, a config file's ``algorithm``) stands for the class of the
objects the scope builds (``_algorithms.py``), the letter the Redis scripts know that class by
(``lua/common.lua``), and what settings it takes. ``Scope`` validates and builds from this
table, ``RedisBackend`` packs requests with its letters, and the config's ``Algorithm`` type is
:data:`AlgorithmName`.

To add an algorithm: its class in ``_algorithms.py``; its name in :data:`AlgorithmName` and
its row in :data:`REGISTRY`; for Redis, its ``admit`` and ``refund`` in ``lua/common.lua`` under
its letter (``tests/ratelimit/test_registry.py`` holds the scripts' letters and this table to
each other, and the Literal to the table).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeAlias

from ._algorithms import Algorithm, FixedWindow, SlidingWindow, TokenBucket

__all__ = ["ALGORITHMS", "REGISTRY", "AlgorithmName", "AlgorithmSpec"]

# A Literal so that mypy and pydantic check names statically; the test above keeps it equal to
# the table's keys.
AlgorithmName: TypeAlias = Literal["token_bucket", "fixed_window", "sliding_window", "adaptive"]


@dataclass(frozen=True, slots=True)
class AlgorithmSpec:
    """What one algorithm name stands for."""

    kind: Callable[..., Algorithm]  # the class a scope builds: kind(limit, window[, burst])
    code: str  # the letter of that class in the Redis scripts' requests (and in storage keys)
    burst: bool  # takes burst= (how much may be spent at once)
    width: int  # how many numbers its stored state holds (lua/common.lua's WIDTH)
    adaptive: bool = False  # its limit moves with feedback (AIMD, see _adaptive.py)


REGISTRY: dict[AlgorithmName, AlgorithmSpec] = {
    "token_bucket": AlgorithmSpec(TokenBucket, "t", burst=True, width=2),
    "fixed_window": AlgorithmSpec(FixedWindow, "f", burst=False, width=2),
    "sliding_window": AlgorithmSpec(SlidingWindow, "s", burst=False, width=4),
    # A token bucket whose rate moves: stored and scripted as one.
    "adaptive": AlgorithmSpec(TokenBucket, "t", burst=True, width=2, adaptive=True),
}

ALGORITHMS: tuple[AlgorithmName, ...] = tuple(REGISTRY)
"""Every name a scope may give, in the order the docs list them."""
