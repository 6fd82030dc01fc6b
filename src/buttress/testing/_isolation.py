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


def _isolated(
    config: Config | Mapping[str, Any] | str | None, namespace: str, env: Mapping[str, str]
) -> Config:
    """``config``, with a ``[fleet]`` namespace it names replaced by ``namespace``: a fleet
    shared with another namespace would let its breakers and publications cross over."""
    from .._config import load_config

    cfg = load_config(config, env=env)
    if cfg.fleet.namespace is not None:
        fleet = cfg.fleet.model_copy(update={"namespace": namespace})
        cfg = cfg.model_copy(update={"fleet": fleet})
    return cfg


def _make(
    config: Config | Mapping[str, Any] | str | None,
    prefix: str,
    env: Mapping[str, str] | None,
    kwargs: Mapping[str, Any],
) -> Infrastructure:
    namespace = _namespace(prefix)
    env = {} if env is None else env
    return Infrastructure(namespace, _isolated(config, namespace, env), env=env, **kwargs)


def _forget_shared_state(infra: Infrastructure) -> None:
    """Remove what the namespace left in shared backends (SQLite rows, Redis keys)."""
    for limiter in infra.limiters.values():
        limiter.clear()


def _forget_fleet(infra: Infrastructure) -> None:
    """Remove what its fleet left in Redis: once closed, so that no sync writes it again."""
    fleet = infra._build.made_fleet
    if fleet is not None:
        fleet.forget()


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
    SQLite) are deleted afterwards; a ``[fleet]`` namespace in ``config`` is replaced by the
    fresh one, so its fleet breakers share nothing with another test's. ``env`` defaults to
    ``{}`` (the process environment is ignored, so a developer's ``BUTTRESS_...`` variables
    cannot change a test); other keyword arguments go to :class:`Infrastructure` (``clock=``,
    ``seed=``, ``pools=``, ...).

    >>> with isolated_infrastructure({"circuit_breakers": {"db": {}}}) as infra:
    ...     infra.call("db", lambda: "ok")
    'ok'
    """
    infra = _make(config, prefix, env, kwargs)
    infra.start()
    try:
        yield infra
    finally:  # forget first: clearing needs the backends' clients, which close() closes
        try:
            _forget_shared_state(infra)
        finally:
            infra.close()
            _forget_fleet(infra)


@asynccontextmanager
async def isolated_infrastructure_async(
    config: Config | Mapping[str, Any] | str | None = None,
    *,
    prefix: str = "test",
    env: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> AsyncIterator[Infrastructure]:
    """:func:`isolated_infrastructure` for asyncio (async pools and schedulers started)."""
    infra = _make(config, prefix, env, kwargs)
    await infra.astart()
    try:
        yield infra
    finally:
        try:  # in a worker thread: clearing shared backends is blocking I/O
            await asyncio.to_thread(_forget_shared_state, infra)
        finally:
            await infra.aclose()
            await asyncio.to_thread(_forget_fleet, infra)
