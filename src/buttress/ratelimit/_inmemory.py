"""Deciding in the memory backend's own dict: the limiter's hot paths.

With a plain :class:`~._memory.MemoryBackend`, a decision needs no backend call: under the
backend's lock (lent by ``MemoryBackend.lane``) it reads every scope's state, admits, and writes
in place only if all admit, as ``MemoryBackend.decide`` would, with the frame's loop-free
decider (``_unrolled.py``). :meth:`InMemory.decide` does it for any request.

For the common request (a str id for one identified scope, or a dict context for several;
cost 1; nobody waiting; no adaptive scope; no id with a limit of its own, ``Scope(overrides=)``)
:meth:`InMemory.fast_path` makes a ``try_acquire``
that stands in for the limiter's method: a closure over everything it reads, bound once
(at under a microsecond a decision, each attribute load and call is a few percent of it), or,
when it is built, its compiled twin ``FastPath`` from ``_speedups.c``, which does step for step
what these closures do. Anything else goes to the general method.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from collections.abc import Callable
from typing import TYPE_CHECKING

from .. import events
from ._algorithms import TokenBucket
from ._decision import Decision, Frame, details
from ._keys import MAX_ID_LENGTH
from ._memory import Lane
from ._stats import EV_ALLOWED, Recorder

if TYPE_CHECKING:
    from ._keys import Key, KeyResolver
    from ._speedups import FastPath, ScopePart
    from ._waiting import Waiter

__all__ = ["InMemory"]

_enabled = events.enabled
_attached = events.attached  # empty when no handler listens

# The default cost. CPython keeps one int object for 1, so ``cost is ONE`` holds for every
# int 1 and for nothing else (not True, not 1.0): the fast paths' one-test check for the default
# (where it fails, e.g. on another interpreter, the general path still decides correctly).
ONE = 1


def _compiled() -> tuple[type[FastPath] | None, int]:
    """The compiled fast path and how many scopes it takes, unless it was not built or
    ``BUTTRESS_NO_EXTENSIONS`` is set (then ``None, 0``)."""
    if os.environ.get("BUTTRESS_NO_EXTENSIONS"):
        return None, 0
    if sys.implementation.name != "cpython" or sysconfig.get_config_var("Py_GIL_DISABLED"):
        return None, 0  # it writes CPython objects' slots, and reads the dict as the GIL allows
    try:
        from ._speedups import MAX_ID_LENGTH as COMPILED_MAX_ID_LENGTH
        from ._speedups import MAX_SCOPES, FastPath
    except ImportError:
        return None, 0
    if COMPILED_MAX_ID_LENGTH != MAX_ID_LENGTH:  # built from another version of the source
        return None, 0
    return FastPath, MAX_SCOPES


# Read once at import; tests set _FastPath to None to run the pure-Python paths beside it.
_FastPath, _MAX_SCOPES = _compiled()


class InMemory:
    """Decides a limiter's requests in its memory backend's dict, under the backend's lock."""

    __slots__ = ("_conclude", "_lane", "_monotonic", "_recorder")

    def __init__(self, lane: Lane, monotonic: Callable[[], float], recorder: Recorder) -> None:
        self._lane = lane
        self._monotonic = monotonic
        self._recorder = recorder
        self._conclude = recorder.conclude

    def decide(self, frame: Frame, keys: list[str], cost: float) -> Decision:
        """A decision in memory: ``MemoryBackend.decide``, then ``Recorder.conclude``.

        The same two phases as :func:`~._algorithms.admit_all` (read every scope, admit only
        if all have room, then write every new state), run by the frame's unrolled copy.
        """
        states, lock, unlock, grew, cap_reached = self._lane
        now = self._monotonic()
        notify = False
        lock()
        try:
            held = len(states)
            olds, allowed = frame.decide_in(states, frame.admits, keys, now, cost, True)
            if len(states) != held:
                notify = grew(now, keys)
        finally:
            unlock()
        if notify:
            cap_reached()
        return self._conclude(allowed, details(frame, keys, olds, now, cost), now, cost)

    def fast_path(
        self,
        general: Callable[[Key, float], Decision],
        frame: Frame,
        resolver: KeyResolver,
        queues: dict[str, list[Waiter]],
        routed: dict[str, None],
    ) -> Callable[..., Decision] | None:
        """``try_acquire`` for the common requests of fixed scopes, or ``None`` when a single
        shared scope leaves it nothing to save. ``general`` is the method it stands in for,
        which takes every other call; ``queues`` non-empty means someone waits; a request
        touching a storage key in ``routed`` (an id with a limit of its own) goes to
        ``general`` too. Both dicts are the limiter's, read at every call."""
        by_id = resolver.single_scope_prefix is not None
        if not by_id and len(frame.algorithms) == 1:
            return None
        compiled = self._compiled_path(general, frame, resolver, queues, routed, context=not by_id)
        if compiled is not None:
            return compiled
        if by_id:
            return self._keyed_by_id(general, frame, resolver, queues, routed)
        return self._keyed_by_context(general, frame, resolver, queues, routed)

    def _keyed_by_id(
        self,
        general: Callable[[Key, float], Decision],
        frame: Frame,
        resolver: KeyResolver,
        queues: dict[str, list[Waiter]],
        routed: dict[str, None],
    ) -> Callable[..., Decision]:
        """One identified scope, keyed straight from a str id (or read from a dict context):
        :meth:`decide` for one key, with one ``admit`` instead of the frame's decider."""
        prefix = resolver.single_scope_prefix
        assert prefix is not None
        read = resolver.read
        states, lock, unlock, grew, cap_reached = self._lane
        get = states.get
        admit = frame.algorithms[0].admit
        monotonic = self._monotonic
        conclude = self._conclude

        def try_acquire(key: Key = None, cost: float = 1) -> Decision:
            if cost is not ONE or queues:
                return general(key, cost)
            if key.__class__ is str and len(key) <= MAX_ID_LENGTH:
                k = prefix + key
            elif key.__class__ is dict and (keys := read(key.get)) is not None:
                k = keys[0]
            else:
                return general(key, cost)
            if routed and k in routed:
                return general(key, cost)
            now = monotonic()
            notify = False
            lock()
            try:
                state = get(k)
                new = admit(state, now, 1)
                if new is not None:
                    states[k] = new
                    if state is None:
                        notify = grew(now, (k,))
            finally:
                unlock()
            if notify:
                cap_reached()
            return conclude(new is not None, (frame, k, state, now, 1), now, 1)

        return try_acquire

    def _keyed_by_context(
        self,
        general: Callable[[Key, float], Decision],
        frame: Frame,
        resolver: KeyResolver,
        queues: dict[str, list[Waiter]],
        routed: dict[str, None],
    ) -> Callable[..., Decision]:
        """Several scopes, keyed from a dict context whose ids are all str: :meth:`decide`
        after the unrolled key reader."""
        read = resolver.read
        states, lock, unlock, grew, cap_reached = self._lane
        decide_in, admits = frame.decide_in, frame.admits
        monotonic = self._monotonic
        conclude = self._conclude

        def try_acquire(key: Key = None, cost: float = 1) -> Decision:
            if key.__class__ is not dict or cost is not ONE or queues:
                return general(key, cost)
            keys = read(key.get)
            if keys is None or (routed and not routed.keys().isdisjoint(keys)):
                return general(key, cost)
            now = monotonic()
            notify = False
            lock()
            try:
                held = len(states)
                olds, allowed = decide_in(states, admits, keys, now, 1, True)
                if len(states) != held:
                    notify = grew(now, keys)
            finally:
                unlock()
            if notify:
                cap_reached()
            return conclude(allowed, (frame, keys, olds, now, 1), now, 1)

        return try_acquire

    def _compiled_path(
        self,
        general: Callable[[Key, float], Decision],
        frame: Frame,
        resolver: KeyResolver,
        queues: dict[str, list[Waiter]],
        routed: dict[str, None],
        *,
        context: bool,
    ) -> Callable[..., Decision] | None:
        """``_speedups.FastPath`` standing in for :meth:`_keyed_by_id`'s closure (``context=False``)
        or :meth:`_keyed_by_context`'s, when it is built and applies."""
        if _FastPath is None or type(_attached) is not dict or len(resolver.names) > _MAX_SCOPES:
            return None
        if any(type(by) is not str for _, by, _ in resolver.templates if by is not None):
            return None  # an id name that is a str subclass (an enum) may hash otherwise
        recorder = self._recorder
        emit = recorder.emit

        def on_allowed(decision: Decision) -> None:
            if _enabled(EV_ALLOWED):
                emit(EV_ALLOWED, decision, 1)

        scopes: list[ScopePart] = []
        for (prefix, by, by_id), algorithm in zip(
            resolver.templates, frame.algorithms, strict=True
        ):
            if type(algorithm) is TokenBucket:  # admitted in C, with exactly the same floats
                gcra = (algorithm.interval, algorithm.reach)
                scopes.append((prefix, by, by_id, algorithm.admit, *gcra))
            else:
                scopes.append((prefix, by, by_id, algorithm.admit, None, None))
        stats = recorder.stats
        return _FastPath(
            general=general,
            scopes=tuple(scopes),
            states=self._lane.states,
            acquire=self._lane.acquire,
            release=self._lane.release,
            grew=self._lane.grew,
            cap_reached=self._lane.cap_reached,
            monotonic=self._monotonic,
            queues=queues,
            frame=frame,
            mark=stats.mark,
            measure=stats.measure,
            admitted=stats.admitted,
            attached=_attached,
            on_allowed=on_allowed,
            on_refused=recorder.refused,
            decision_type=Decision,
            routed=routed,
            context=context,
            next_mark=recorder.next_mark,
        )
