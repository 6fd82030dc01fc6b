"""What an import path in a configuration names: ``"module:attr"`` or ``"module.attr"``.

Configuration files name exception classes, factories, fallbacks and predicates by import
path. Here is the one reading of such a path, and the :class:`~buttress.ConfigError` that names
the setting when it names nothing usable. No pydantic: the rule parser (``_classify.py``) and
the configuration models share it.
"""

from __future__ import annotations

import importlib
import types
from collections.abc import Callable
from typing import Any

from ._errors import ConfigError

MISSING: Any = object()
"""What :func:`resolve` returns for a path that names nothing."""


def resolve(dotted: str, default_module: str | None = None) -> Any:
    """What ``dotted`` names (:data:`MISSING` when it names nothing): ``"module:attr.attr"``
    (everything after the colon is looked up on the module, part by part) or
    ``"module.attr"`` (the last part on the module; ``default_module`` when there is no dot)."""
    module_name, sep, attrs = dotted.partition(":")
    if not sep:
        module_name, _, attrs = dotted.rpartition(".")
        if not module_name and default_module is not None:
            module_name = default_module
    parts = attrs.split(".")
    if not module_name or not all(parts):
        return MISSING
    try:
        obj: Any = importlib.import_module(module_name)
    except (ImportError, ValueError, TypeError):
        return MISSING
    for part in parts:
        parent, obj = obj, getattr(obj, part, MISSING)
        if obj is MISSING and isinstance(parent, types.ModuleType):
            try:  # a submodule its package does not import itself ("pkg:sub.Error")
                obj = importlib.import_module(f"{parent.__name__}.{part}")
            except ImportError:
                return MISSING
        elif obj is MISSING:
            return MISSING
    return obj


def import_callable(path: str, dotted: str) -> Callable[..., Any]:
    """The callable ``dotted`` names: ``"module:attr"``, ``"module:Class.method"`` (a dotted
    attribute path after the colon, e.g. ``"psycopg:AsyncConnection.connect"``) or
    ``"module.attr"``."""
    obj = resolve(dotted)
    if obj is MISSING:
        raise ConfigError(
            path, f"cannot import {dotted!r} (write 'module:callable' or 'module:Class.method')"
        )
    if not callable(obj):
        raise ConfigError(path, f"{dotted!r} is not callable")
    return obj  # type: ignore[no-any-return]


def import_exception(path: str, dotted: str) -> type[BaseException]:
    """The exception class ``dotted`` names; a bare name is a builtin (``"ConnectionError"``)."""
    obj = resolve(dotted, default_module="builtins")
    if obj is MISSING:
        raise ConfigError(path, f"cannot import exception {dotted!r}")
    if not (isinstance(obj, type) and issubclass(obj, BaseException)):
        raise ConfigError(path, f"{dotted!r} is not an exception class")
    return obj
