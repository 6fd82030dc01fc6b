"""What a stored state is: its tag in every storage key, and a state that cannot be read.

**The tag.** A scope's storage key names the algorithm and the format of the state stored under
it: ``namespace:name:scope@<letter><format>[:id]`` (``app:api:user@t1:u1``), where the letter is
the algorithm's in ``_registry.py`` (``t`` token bucket and adaptive, which store the same
state; ``f`` fixed window; ``s`` sliding window) and ``<format>`` is :data:`STATE_FORMAT`. The
key resolver builds it once per scope (``_keys.py``), so the memory backend, its compiled fast
path, SQLite and the Redis scripts all use the same keys. Two versions of a service running
side by side with different algorithms for one scope (a rolling deploy) therefore keep two
states, each bounded by its own limit, and never read (or reset) each other's; a version that
does not tag its keys (before 1.0's format) never meets a tagged key either. Bump
:data:`STATE_FORMAT` whenever a stored layout changes: the new layout then gets new keys.

**A state that cannot be read** (a value of the wrong size, a number that is not finite, a
negative count, a value of the wrong type: nothing buttress writes, but a file or server others
can write to may hold it) is never read as "no state": that would let whoever writes it admit
without limit.
It is replaced by a *spent* state, as if the scope's whole allowance had been used at the moment
it was found (:func:`spent`); the decision is made on that (refused, unless it costs nothing),
and a decision that writes stores the spent state, so the key decides normally again once its
window (or the bucket's refill) has passed. The backend reports it by raising
:class:`UnreadableState` carrying that decision; the limiter's failure guard counts it (the
``state_unreadable`` event, the ``unreadable_states`` metric) and answers with the decision:
it is never an outage of the backend, and no other key is affected.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

from .._errors import BackendError
from ._algorithms import Algorithm, FixedWindow, SlidingWindow, State, TokenBucket, _tat
from ._backend import Outcome
from ._registry import REGISTRY, AlgorithmName

__all__ = ["STATE_FORMAT", "UnreadableState", "decoded", "scope_and_id", "spent", "state_tag"]

STATE_FORMAT = 1
"""The version of every stored layout; part of every storage key (see the module's doc)."""

# 2^-52: a token bucket's low part lies within one step of its tat, at most |tat| * 2^-52.
_ULP_RATIO = 2.220446049250313e-16

TAG = "@"  # between a scope's name and its state's tag: no name holds it

_WIDTHS: dict[object, int] = {spec.kind: spec.width for spec in REGISTRY.values()}
# Where a state holds counts of cost used, which no decision or refund leaves below zero (a
# negative count would admit without limit).
_COUNTS: dict[object, tuple[int, ...]] = {FixedWindow: (1,), SlidingWindow: (2, 3)}


def state_tag(algorithm: AlgorithmName) -> str:
    """The tag a scope's keys carry after its name.

    >>> state_tag("fixed_window"), state_tag("adaptive")
    ('@f1', '@t1')
    """
    return f"{TAG}{REGISTRY[algorithm].code}{STATE_FORMAT}"


def scope_and_id(key: str) -> tuple[str, str | None]:
    """The scope name and the caller's id (``None`` for a shared scope) of a storage key.

    >>> scope_and_id("app:api:user@t1:u:1"), scope_and_id("app:api:global@f1")
    (('user', 'u:1'), ('global', None))
    """
    rest = key.split(":", 2)[-1]
    scope, _, tail = rest.partition(TAG)
    _, colon, caller = tail.partition(":")
    return scope, caller if colon else None


def decoded(algorithm: Algorithm, blob: object) -> State | None:
    """The state packed in ``blob`` (little-endian doubles) for ``algorithm``, or ``None``
    when it cannot be one: not bytes, the wrong size, a number that is not finite, or a
    negative count (``common.lua``'s ``decode`` checks the same)."""
    width = _WIDTHS.get(type(algorithm))
    if not isinstance(blob, bytes) or not blob or len(blob) % 8:
        return None
    if width is not None and len(blob) != 8 * width:
        return None
    state: State = struct.unpack(f"<{len(blob) // 8}d", blob)
    for value in state:
        if not math.isfinite(value):
            return None
    for at in _COUNTS.get(type(algorithm), ()):
        if state[at] < 0.0:
            return None
    if isinstance(algorithm, TokenBucket):  # (tat, low): low within one step below tat
        tat, low = state
        if low > 0.0 or low < -abs(tat) * _ULP_RATIO:
            return None
    return state


def spent(algorithm: Algorithm, now: float) -> State | None:
    """The state of a scope whose whole allowance was used at ``now`` (what an unreadable
    state is replaced by); ``None`` for an algorithm this module does not know.
    ``lua/common.lua``'s ``spent`` is the same arithmetic.

    >>> spent(TokenBucket(10, 1.0), 100.0), spent(FixedWindow(10, 60.0), 100.0)
    ((101.0, 0.0), (120.0, 10.0))
    """
    if isinstance(algorithm, TokenBucket):
        return _tat(now, algorithm.tolerance)  # the bucket empty: full again after a burst
    if isinstance(algorithm, FixedWindow | SlidingWindow):
        return algorithm.admit(None, now, algorithm.limit)  # the window's whole limit, now
    return None


class UnreadableState(BackendError):
    """A backend found states it cannot read under ``keys`` (their positions in the call:
    ``indexes``).

    ``outcome`` is the decision made with each of them replaced by a spent state (and, if the
    call writes, stored so); ``None`` when the backend could not decide (then the failure
    policy decides that one request). ``repaired``: the spent states were written.
    """

    def __init__(
        self,
        keys: Sequence[str],
        indexes: Sequence[int],
        outcome: Outcome | None,
        *,
        repaired: bool,
        detail: str = "",
    ) -> None:
        self.keys = tuple(keys[i] for i in indexes)
        self.indexes = tuple(indexes)
        self.outcome = outcome
        self.repaired = repaired
        what = "replaced by a spent state" if outcome is not None else "no decision made"
        super().__init__(
            f"unreadable rate-limit state under {', '.join(self.keys)} ({what})"
            + (f": {detail}" if detail else "")
        )
