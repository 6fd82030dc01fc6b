"""Listeners of a monitor's level: who may listen, and how they are told."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TypeVar

from .._concurrency import is_async_callable
from .._errors import ConfigError
from .._pressure import LevelChange

__all__ = ["add_listener", "check_listener", "notify"]

S = TypeVar("S")
L = TypeVar("L")


def check_listener(listener: object) -> None:
    """``ConfigError`` unless ``listener`` is a plain callable: a coroutine function would
    never be awaited where levels change (a sampling thread, a loop's tick)."""
    if not callable(listener):
        raise ConfigError("listener", f"must be callable, got {listener!r}")
    if is_async_callable(listener):
        raise ConfigError(
            "listener",
            f"{listener!r} is a coroutine function, which nothing would await: listeners run "
            "where the level changes; pass a plain function (it may schedule async work)",
        )


def add_listener(
    listeners: list[L], lock: AbstractContextManager[object], listener: L
) -> Callable[[], None]:
    """Check ``listener`` and add it under ``lock``; the function that removes it again."""
    check_listener(listener)
    with lock:
        listeners.append(listener)

    def remove() -> None:
        with lock:
            if listener in listeners:
                listeners.remove(listener)

    return remove


def notify(
    listeners: Sequence[Callable[[LevelChange, S], object]],
    change: LevelChange,
    snapshot: S,
    log: logging.Logger,
    monitor: str,
) -> None:
    """Call each listener in order; one that raises is logged and the others still run."""
    for listener in listeners:
        try:
            listener(change, snapshot)
        except Exception as exc:
            log.error("%s: level listener %r raised", monitor, listener, exc_info=exc)
