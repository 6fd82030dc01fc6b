"""The telemetry bus, in the manner of Erlang's ``:telemetry``.

An event name is a tuple of strings, e.g. ``("buttress", "circuit_breaker", "state_change")``.
Components :func:`emit` events with numeric ``measurements`` and a ``metadata`` dict; anything
may :func:`attach` a handler to a list of names (or to :data:`ALL`). Handlers run
synchronously in the emitting thread or task. A handler that raises is detached, logged and
reported as ``("buttress", "telemetry", "handler_failure")``; it never breaks the caller.

Every event buttress emits is listed in :data:`CATALOG` and documented in ``docs/events.md``;
a test keeps the three in step.

>>> seen = []
>>> attach("doc", [("app", "job", "done")], lambda name, m, md: seen.append((name, m)))
>>> emit(("app", "job", "done"), {"count": 1})
>>> detach("doc")
True
>>> seen
[(('app', 'job', 'done'), {'count': 1})]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final

from ._catalog import CATALOG, EventSpec
from ._fork import fork_safe_lock
from ._redact import redacted_logger

__all__ = [
    "ALL",
    "CATALOG",
    "EventName",
    "EventSpec",
    "Handler",
    "attach",
    "detach",
    "emit",
    "enabled",
    "handlers",
    "span",
]

EventName = tuple[str, ...]
Handler = Callable[[EventName, Mapping[str, float], Mapping[str, Any]], None]

_log = redacted_logger("buttress.events")

HANDLER_FAILURE: Final[EventName] = ("buttress", "telemetry", "handler_failure")


class _AllEvents:
    __slots__ = ()

    def __repr__(self) -> str:
        return "buttress.events.ALL"


ALL: Final = _AllEvents()
"""Pass as ``names`` to :func:`attach` to receive every event (exporters, loggers, tests)."""


@dataclass(frozen=True, slots=True)
class _Attached:
    handler_id: str
    names: frozenset[EventName] | None  # None: every event
    fn: Handler = field(compare=False)


_lock = fork_safe_lock()
_by_id: dict[str, _Attached] = {}
# Copy-on-write views read without the lock by emit(); rebuilt on every attach/detach.
_by_name: dict[EventName, tuple[_Attached, ...]] = {}
_catch_all: tuple[_Attached, ...] = ()
# Empty exactly when no handler is attached: the hottest paths test this one object (bound
# once, never rebound) before paying for a call to enabled(). Read-only outside this module.
attached: Final[Mapping[str, object]] = _by_id


def _rebuild() -> None:
    global _by_name, _catch_all
    by_name: dict[EventName, list[_Attached]] = {}
    catch_all: list[_Attached] = []
    for att in _by_id.values():
        if att.names is None:
            catch_all.append(att)
        else:
            for name in att.names:
                by_name.setdefault(name, []).append(att)
    _by_name = {k: tuple(v) for k, v in by_name.items()}
    _catch_all = tuple(catch_all)


def attach(
    handler_id: str,
    names: Iterable[EventName] | EventName | _AllEvents,
    fn: Handler,
) -> None:
    """Call ``fn(name, measurements, metadata)`` for each event in ``names``.

    ``handler_id`` must be unique; attaching an id twice raises :class:`ValueError`.
    """
    if not callable(fn):
        raise TypeError(f"attach({handler_id!r}): handler must be callable, got {fn!r}")
    selected: frozenset[EventName] | None
    if names is ALL:
        selected = None
    elif isinstance(names, tuple) and names and all(isinstance(p, str) for p in names):
        selected = frozenset([names])
    else:
        assert not isinstance(names, _AllEvents)
        if isinstance(names, str):  # iterating it would listen to ('b',), ('u',), ...
            raise TypeError(
                f"attach({handler_id!r}): names is a str; pass an event name as a tuple, "
                f"e.g. {('buttress', 'pool', 'checkout')!r}, or a list of such tuples"
            )
        listed = list(names)
        if not listed:
            raise TypeError(f"attach({handler_id!r}): names is empty (non-empty tuples of str)")
        if all(isinstance(n, str) for n in listed):
            raise TypeError(
                f"attach({handler_id!r}): names is a list of str; pass one event name as a "
                f"tuple, {tuple(listed)!r}, or a list of such tuples"
            )
        for n in listed:
            if isinstance(n, str) or not n or not all(isinstance(p, str) for p in n):
                raise TypeError(
                    f"attach({handler_id!r}): event names are non-empty tuples of str, got {n!r}"
                )
        selected = frozenset(tuple(n) for n in listed)
    with _lock:
        if handler_id in _by_id:
            raise ValueError(f"attach: a handler with id {handler_id!r} is already attached")
        _by_id[handler_id] = _Attached(handler_id, selected, fn)
        _rebuild()


def detach(handler_id: str) -> bool:
    """Remove a handler; returns whether it was attached."""
    with _lock:
        if _by_id.pop(handler_id, None) is None:
            return False
        _rebuild()
        return True


def handlers() -> dict[str, frozenset[EventName] | None]:
    """The attached handler ids and what each listens to (``None``: every event)."""
    with _lock:
        return {hid: att.names for hid, att in _by_id.items()}


def enabled(name: EventName) -> bool:
    """Whether anything listens to ``name``; hot paths check this before building metadata."""
    return bool(_catch_all) or name in _by_name


def emit(
    name: EventName,
    measurements: Mapping[str, float] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Send an event to every handler attached to ``name``. Costs a dict lookup when none is."""
    targets = _by_name.get(name, ())
    if _catch_all:
        targets = targets + _catch_all
    if not targets:
        return
    m = measurements if measurements is not None else {}
    md = metadata if metadata is not None else {}
    for att in targets:
        try:
            att.fn(name, m, md)
        except Exception as exc:
            _handler_failed(att, name, exc)


def _handler_failed(att: _Attached, name: EventName, exc: Exception) -> None:
    detach(att.handler_id)
    _log.error(
        "telemetry handler %r raised on %s and was detached",
        att.handler_id,
        ".".join(name),
        exc_info=exc,
    )
    if name != HANDLER_FAILURE:
        emit(
            HANDLER_FAILURE,
            {},
            {"handler_id": att.handler_id, "event": name, "error": repr(exc)},
        )


@contextmanager
def span(name: EventName, metadata: Mapping[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """Emit ``name + ("start",)``, then ``("stop",)`` or ``("exception",)`` with the duration.

    Yields a dict the body may fill: its items are merged into the stop/exception metadata.
    Durations are seconds, measured on the monotonic clock. Works in sync and async code
    alike (it never awaits).
    """
    md: dict[str, Any] = dict(metadata or {})
    extra: dict[str, Any] = {}
    start = time.monotonic()
    emit((*name, "start"), {"monotonic_time": start}, md)
    try:
        yield extra
    except BaseException as exc:
        emit(
            (*name, "exception"),
            {"duration": time.monotonic() - start},
            {**md, **extra, "kind": type(exc).__name__, "reason": repr(exc)},
        )
        raise
    emit((*name, "stop"), {"duration": time.monotonic() - start}, {**md, **extra})
