"""Errors for protected calls made the wrong way, said plainly: the pipeline raises them."""

from __future__ import annotations

import inspect
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._build import Route

# Results whose work happens after the call returns, when the protection has ended: a call
# that returns one is refused (everything taken is given back, nothing is counted).
GENERATORS = frozenset({types.GeneratorType, types.AsyncGeneratorType})
LAZY = GENERATORS | {types.CoroutineType}

# What the function returned, before it has returned anything.
UNCALLED: Any = object()

# What a protected call that returns nothing to judge passes on (a ``with`` block, a failure):
# the breaker's ``failure_result`` is asked about returned values only.
NO_RESULT: Any = object()


def wrong_pool(route: Route, *, asyncio_caller: bool) -> RuntimeError:
    """The error for a call whose service has a pool for the other kind of caller."""
    if not asyncio_caller:
        return RuntimeError(
            f"service {route.name!r} uses the async pool {route.pool_name!r}: "
            "use call_async() / async with under `async with Infrastructure(...)`"
        )
    if route.pool is not None:
        return RuntimeError(
            f"service {route.name!r} uses the thread pool {route.pool_name!r}: use call() or "
            "`with`, or set `async = true` on the pool for asyncio callers"
        )
    return not_started(route)


def not_started(route: Route) -> RuntimeError:
    """The error for an asyncio call before the infrastructure's asyncio side started."""
    if route.pool_name is not None:
        return RuntimeError(
            f"service {route.name!r} uses the async pool {route.pool_name!r}, which is not "
            "open: enter the infrastructure with `async with Infrastructure(...)` (or "
            "`await infra.astart()`) before call_async() / `async with infra.protect(...)`"
        )
    return RuntimeError(f"service {route.name!r}: the protect steps for asyncio are not ready")


def not_awaitable(aw: Any, exc: BaseException) -> bool:
    """Whether ``exc`` is Python refusing ``await aw``: the function returned something that
    is not awaitable. (Checked only once the await failed, so a protected async call pays
    nothing for it.)"""
    return isinstance(exc, TypeError) and not inspect.isawaitable(aw)  # @types.coroutine is


def lazy_result(service: str, fn: Any, result: Any) -> TypeError:
    """The refusal of a call that returned a generator or a coroutine (``result`` is closed)."""
    name = getattr(fn, "__qualname__", None) or repr(fn)
    if isinstance(result, types.CoroutineType):
        result.close()  # never awaited: no warning for it
        return TypeError(
            f"{name} returned a coroutine to call(): protect it with call_async() instead"
        )
    if isinstance(result, types.GeneratorType):
        result.close()
    kind = "an async generator" if isinstance(result, types.AsyncGeneratorType) else "a generator"
    return TypeError(
        f"{name} returned {kind}: its body runs as it is iterated, after the protected call has "
        "returned, so no breaker, pool or limit would guard it. Return the items instead (e.g. "
        f"a list), or iterate inside `with infra.protect({service!r}) as guard:`"
    )
