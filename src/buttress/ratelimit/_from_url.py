"""``backend_from_url``: a backend from the configuration's ``backend`` string."""

from __future__ import annotations

from ..errors import ConfigError
from ._backend import Backend
from ._memory import MemoryBackend


def backend_from_url(url: str, *, max_keys: int = 1_000_000) -> Backend:
    """``"memory"``, ``"sqlite:///path/to/file.db"`` (``sqlite://relative.db``) or
    ``"redis://host:6379/0"`` (also ``rediss://`` and ``unix://``).

    >>> backend_from_url("memory")  # doctest: +ELLIPSIS
    <buttress.ratelimit._memory.MemoryBackend object at ...>
    """
    if url == "memory":
        return MemoryBackend(max_keys=max_keys)
    if url.startswith("sqlite://"):
        from ._sqlite import SQLiteBackend

        path = url[len("sqlite://") :]  # sqlite:///var/lib/app.db is /var/lib/app.db
        if not path:
            raise ConfigError("backend", f"a SQLite URL needs a file path, got {url!r}")
        return SQLiteBackend(path)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from ._redis import RedisBackend

        return RedisBackend(url)
    raise ConfigError(
        "backend", f"must be 'memory', 'sqlite:///path' or 'redis://host:port/db', got {url!r}"
    )
