"""The Redis scripts called as Redis functions (``FCALL``) where the server has them.

A script sent with ``EVALSHA`` runs its whole text on every call, defining every helper of
``common.lua`` again (about 1.5 µs of the server's time, a sixth of a decision). A function
library is loaded once (``FUNCTION LOAD``) and its helpers stay defined: the same code, called
with ``FCALL``. The library's name carries a digest of its text, so two versions of buttress
sharing a server each call their own.

Functions need Redis 7 and a user allowed ``FUNCTION LOAD`` and ``FCALL``. Where either is
missing (``unknown command``, ``NOPERM``), or the client is a cluster client (a library would
have to be loaded on every node), each call is the script's ``EVALSHA``, as before. A server
that forgot the library (a restart without persistence, ``FUNCTION FLUSH``) gets it again on
the next call, as a script after ``SCRIPT FLUSH``.
"""

from __future__ import annotations

import hashlib
from typing import Any

__all__ = ["AsyncScriptCall", "Library", "ScriptCall"]


class Library:
    """The library text holding every script as a function, and each function's name.

    Each script's body becomes a function of ``(KEYS, ARGV)``, which it reads as it would the
    globals of a script. Each is registered twice: as it is, and flagged ``no-writes``, the
    one a call that only reads (a peek) uses, which a read-only replica also runs (Redis takes
    a function without flags for one that writes, and refuses it there)."""

    __slots__ = ("names", "text")

    def __init__(self, common: str, scripts: dict[str, str]) -> None:
        # The names carry a digest of the whole library (this wrapping included), so a server
        # holding another version's library never runs it for this one.
        parts = ["#!lua name=buttress___DIGEST__", common]
        for name, script in scripts.items():
            body = f"script_{name}"  # not common.lua's helpers' names (it has a refund)
            registered = f"buttress_{name}___DIGEST__"
            parts += [
                f"local function {body}(KEYS, ARGV)\n{script}\nend",
                f"redis.register_function('{registered}', {body})",
                f"redis.register_function{{function_name = '{registered}_read', "
                f"callback = {body}, flags = {{'no-writes'}}}}",
            ]
        template = "\n".join(parts) + "\n"
        digest = hashlib.sha1(template.encode(), usedforsecurity=False).hexdigest()[:12]
        self.names = {name: f"buttress_{name}_{digest}" for name in scripts}
        self.text = template.replace("__DIGEST__", digest)


def _not_loaded(exc: BaseException) -> bool:
    return "Function not found" in str(exc)


def _unavailable(exc: BaseException) -> bool:
    """The server has no functions for us: too old, or the user may not call them."""
    import redis.exceptions

    text = str(exc)
    return (
        isinstance(exc, redis.exceptions.NoPermissionError)
        or "unknown command" in text
        or text.startswith("NOPERM")
        or "no permissions" in text
    )


class ScriptCall:
    """One script, callable as ``call(keys=..., args=...)`` as a redis-py ``Script`` is: by
    ``FCALL`` of its function, loading the library when the server lacks it, or by the
    ``Script`` (``EVALSHA``) where functions are unavailable (see the module docstring).
    ``writes=False`` is for a call that only reads.

    ``state`` is shared by a client's scripts: once functions turn out to be unavailable
    (or the library cannot be loaded: a user without the right, a replica), none of them
    tries again."""

    __slots__ = ("_client", "_library", "_name", "_script", "_state")

    def __init__(
        self, client: Any, library: Library, name: str, script: Any, state: dict[str, bool]
    ) -> None:
        self._client = client
        self._library = library
        self._name = library.names[name]
        self._script = script
        self._state = state  # {"functions": bool}

    def __call__(self, *, keys: list[bytes], args: tuple[bytes, ...], writes: bool = True) -> Any:
        if not self._state["functions"]:
            return self._script(keys=keys, args=args)
        import redis

        name = self._name if writes else self._name + "_read"
        try:
            return self._client.fcall(name, len(keys), *keys, *args)
        except redis.ResponseError as exc:
            if not (_not_loaded(exc) or _unavailable(exc)):
                raise  # the script's own error, or the server refusing the work
            if _not_loaded(exc):
                try:
                    self._client.function_load(self._library.text, replace=True)
                except redis.ResponseError:
                    pass  # not allowed here: scripts from now on
                else:
                    return self._client.fcall(name, len(keys), *keys, *args)
        self._state["functions"] = False
        return self._script(keys=keys, args=args)


class AsyncScriptCall(ScriptCall):
    """:class:`ScriptCall` on an asyncio client."""

    __slots__ = ()

    async def __call__(
        self, *, keys: list[bytes], args: tuple[bytes, ...], writes: bool = True
    ) -> Any:
        if not self._state["functions"]:
            return await self._script(keys=keys, args=args)
        import redis

        name = self._name if writes else self._name + "_read"
        try:
            return await self._client.fcall(name, len(keys), *keys, *args)
        except redis.ResponseError as exc:
            if not (_not_loaded(exc) or _unavailable(exc)):
                raise
            if _not_loaded(exc):
                try:
                    await self._client.function_load(self._library.text, replace=True)
                except redis.ResponseError:
                    pass
                else:
                    return await self._client.fcall(name, len(keys), *keys, *args)
        self._state["functions"] = False
        return await self._script(keys=keys, args=args)
