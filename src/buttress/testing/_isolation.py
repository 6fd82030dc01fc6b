"""``isolated_infrastructure``: a throwaway infrastructure in a namespace of its own."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any

from .._infrastructure import Infrastructure

if TYPE_CHECKING:
    from .._config import Config

__all__ = ["isolated_infrastructure", "isolated_infrastructure_async"]


def _namespace(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _forget_shared_state(infra: Infrastructure) -> None:
    """Remove what the namespace left in shared backends (SQLite rows, Redis keys)."""
    for limiter in infra.limiters.values():
        limiter.clear()


@contextmanager
def isolated_infrastructure(
    config: Config | Mapping[str, Any] | str | None = None,
    *,
    prefix: str = "test",
    env: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> Iterator[Infrastructure]:
    """An :class:`Infrastructure` in a fresh namespace, closed and cleaned up on exit.

    Nothing it does is seen by another namespace, and its keys in shared backends (Redis,
    SQLite) are deleted afterwards. ``env`` defaults to ``{}`` (the process environment is
    ignored, so a developer's ``BUTTRESS_...`` variables cannot change a test); other keyword
    arguments go to :class:`Infrastructure` (``clock=``, ``seed=``, ``pools=``, ...).

    >>> with isolated_infrastructure({"circuit_breakers": {"db": {}}}) as infra:
    ...     infra.call("db", lambda: "ok")
    'ok'
    """
    infra = Infrastructure(_namespace(prefix), config, env={} if env is None else env, **kwargs)
    infra.start()
    try:
        yield infra
    finally:  # forget first: clearing needs the backends' clients, which close() closes
        try:
            _forget_shared_state(infra)
        finally:
            infra.close()


@asynccontextmanager
async def isolated_infrastructure_async(
    config: Config | Mapping[str, Any] | str | None = None,
    *,
    prefix: str = "test",
    env: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> AsyncIterator[Infrastructure]:
    """:func:`isolated_infrastructure` for asyncio (async pools and schedulers started)."""
    infra = Infrastructure(_namespace(prefix), config, env={} if env is None else env, **kwargs)
    await infra.astart()
    try:
        yield infra
    finally:
        try:  # in a worker thread: clearing shared backends is blocking I/O
            await asyncio.to_thread(_forget_shared_state, infra)
        finally:
            await infra.aclose()
