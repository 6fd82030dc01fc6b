"""``admit_all`` over a dict of states, generated without a loop for each number of scopes.

:func:`~._algorithms.admit_all` is the hierarchical rule (read every scope; write only if all
admit). On CPython 3.11 its ``for`` loop costs more than the three ``admit`` calls it makes
(about 0.2 µs per scope for the iteration, tuple unpacking and appends), and the memory backend
runs it for every multi-scope decision. So the memory path runs a copy generated from one
template with the loop unrolled: the same reads, ``admit`` calls and writes, in the same order.
tests/ratelimit/test_unrolled.py checks every generated size against ``admit_all``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

from ._algorithms import State

__all__ = ["DictDecider", "dict_decider"]

Admit = Callable[[State | None, float, float], State | None]
DictDecider = Callable[
    [dict[str, State], Sequence[Admit], Sequence[str], float, float, bool],
    tuple[tuple[State | None, ...], bool],
]
"""``(states, admits, keys, now, cost, commit) -> (states read, admitted)``; when admitted and
``commit``, the new states are written into ``states``. The caller holds the lock."""


def _source(n: int) -> str:
    ks = ", ".join(f"k{i}" for i in range(n))
    lines = [
        "def decide_in(states, admits, keys, now, cost, commit):",
        f"    {', '.join(f'a{i}' for i in range(n))}, = admits",
        f"    {ks}, = keys",
        "    get = states.get",
        *(f"    s{i} = get(k{i})" for i in range(n)),
        f"    olds = ({', '.join(f's{i}' for i in range(n))},)",
    ]
    for i in range(n):
        lines += [
            f"    n{i} = a{i}(s{i}, now, cost)",
            f"    if n{i} is None:",
            "        return olds, False",
        ]
    lines.append("    if commit:")
    lines += [f"        states[k{i}] = n{i}" for i in range(n)]
    lines.append("    return olds, True")
    return "\n".join(lines) + "\n"


@cache
def dict_decider(n: int) -> DictDecider:
    """The decider for ``n`` scopes (``n >= 1``), generated once per size.

    >>> from buttress.ratelimit import TokenBucket
    >>> states = {}
    >>> admit = TokenBucket(2, 1.0).admit
    >>> dict_decider(2)(states, [admit, admit], ["a", "b"], 0.0, 1, True)
    ((None, None), True)
    >>> states
    {'a': (0.5, 0.0), 'b': (0.5, 0.0)}
    """
    if n < 1:
        raise ValueError(f"a decision has at least one scope, got {n}")
    namespace: dict[str, Any] = {}
    exec(compile(_source(n), f"<buttress dict_decider({n})>", "exec"), namespace)
    decide_in: DictDecider = namespace["decide_in"]
    return decide_in
