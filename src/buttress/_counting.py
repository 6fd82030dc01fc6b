"""Lock-free counters: ``itertools.count`` bumps atomically; :func:`count_of` reads one."""

from __future__ import annotations

import itertools


def count_of(counter: itertools.count[int]) -> int:
    """The next value ``counter`` would give, i.e. how many times it was bumped."""
    return int(repr(counter)[6:-1])  # "count(42)": reading it this way does not advance it
