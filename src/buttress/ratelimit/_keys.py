"""Request → storage keys: which key of each scope a request is charged to.

A limiter's identified scopes key as ``namespace:name:scope@t1:<id>``, its shared ones as
``namespace:name:scope@t1``: after the scope's name, the tag of its state's algorithm and format
(``_format.py``), so that state of another algorithm or format is never read as this one's.
A request names its ids in a mapping (``{"user": "u1"}``, or ``{"user_id": "u1"}`` as
``protect()`` passes them), as one bare id when every identified scope reads the same id, or
as ``None`` when every scope is shared.

Two kinds of mistake, two errors. A request whose context lacks an id a scope needs, or holds
an id that is neither a str nor an int, is :class:`~buttress.ContextError`: that request is
wrong (a web application answers 400), and the next may be fine. A key of a shape the limiter
never takes (an id for a limiter with only shared scopes, a bare id where its scopes read
several kinds of id) is :class:`~buttress.ConfigError`: the code that calls the limiter does
not fit its configuration, and no request could succeed.

An id is its text: ``12345`` and ``"12345"`` are one caller, on purpose (an id read as an int
from a database and as text from a header must share one bucket). An id longer than
:data:`MAX_ID_LENGTH` characters is stored as its first characters and a BLAKE2b digest of
the whole (:func:`long_id`), so a key's size is bounded whatever the caller sends.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

from .._errors import ConfigError, ContextError
from ._format import state_tag

if TYPE_CHECKING:
    from ._scope import Scope

__all__ = [
    "LONG_ID_LENGTH",
    "MAX_ID_LENGTH",
    "Key",
    "KeyResolver",
    "KeysReader",
    "keys_reader",
    "long_id",
]

MAX_ID_LENGTH = 256
"""The longest id (in characters) a storage key holds as it is; a longer one is replaced by
:func:`long_id`'s form, :data:`LONG_ID_LENGTH` characters long."""

_HEAD = MAX_ID_LENGTH - 64  # the long id's first characters kept, for people reading keys
LONG_ID_LENGTH = _HEAD + 1 + 64
"""How long a long id's stored form is: one more than :data:`MAX_ID_LENGTH`, so no id kept as
it is can equal one."""


def long_id(value: str) -> str:
    """The stored form of an id longer than :data:`MAX_ID_LENGTH`: its first 192 characters,
    ``~`` and the 256-bit BLAKE2b digest of the whole id (UTF-8) in hex.

    Two long ids share a key only if their digests collide (never found for BLAKE2b); a long id
    never shares one with an id kept as it is, which is shorter.

    >>> form = long_id("x" * 1000)
    >>> len(form), form[190:200]
    (257, 'xx~1c1d1c4')
    """
    digest = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=32)
    return f"{value[:_HEAD]}~{digest.hexdigest()}"


Key: TypeAlias = str | int | Mapping[str, Any] | None
"""What identifies a request: an id (for the one kind of id the limiter's scopes take), a
context mapping (``{"user": "u1", "org": "o1"}``; ``user_id`` works for ``user``), or ``None``
when every scope is shared."""

Template: TypeAlias = tuple[str, str | None, str]
"""One scope's key: ``(prefix, id name, fallback id name)`` (``("ns:api:user@t1:", "user",
"user_id")``), or ``(key, None, "")`` for a shared scope."""

_NO_IDS: dict[str, Any] = {}


class KeyResolver:
    """The storage keys of one limiter's requests, one per scope, in the scopes' order."""

    __slots__ = (
        "_limiter",
        "_scopes",
        "bare_id_name",
        "id_offsets",
        "names",
        "prefix",
        "prefixes",
        "read",
        "single_scope_prefix",
        "templates",
    )

    def __init__(self, namespace: str, limiter: str, scopes: Sequence[Scope]) -> None:
        self._limiter = limiter
        self._scopes = scopes
        self.names = tuple(s.name for s in scopes)
        self.prefix = f"{namespace}:{limiter}:"  # every key of this limiter starts with it
        self.templates: tuple[Template, ...] = tuple(
            (f"{self.prefix}{s.name}{state_tag(s.algorithm)}:", s.by, f"{s.by}_id")
            if s.by is not None
            else (f"{self.prefix}{s.name}{state_tag(s.algorithm)}", None, "")
            for s in scopes
        )
        # Each scope's key without the id (a shared scope's whole key).
        self.prefixes = tuple(prefix for prefix, _, _ in self.templates)
        # Where the caller's id starts in each scope's key; -1 for a shared scope.
        self.id_offsets = tuple(
            len(prefix) if by is not None else -1 for prefix, by, _ in self.templates
        )
        self.read = keys_reader(self.templates)  # the common case of keys(), unrolled
        id_names = {s.by for s in scopes if s.by is not None}
        # The id name a bare id (a str or int key) stands for: the one every scope reads.
        self.bare_id_name = next(iter(id_names)) if len(id_names) == 1 else None
        # With one scope, identified: its key is this prefix and the id, nothing to look up.
        self.single_scope_prefix = (
            self.templates[0][0] if len(scopes) == 1 and scopes[0].by is not None else None
        )

    def keys(self, key: Key, *, partial: bool = False) -> list[str]:
        """One storage key per scope (``partial``: only the scopes ``key`` identifies)."""
        prefix = self.single_scope_prefix  # one identified scope: a str id completes its key
        if prefix is not None and key.__class__ is str and len(key) <= MAX_ID_LENGTH:
            return [prefix + key]
        get: Callable[[str], Any]
        if key.__class__ is dict:
            get = key.get
            if not partial:
                keys = self.read(get)  # every id a str: no loop
                if keys is not None:
                    return keys
        elif key is None:
            get = _NO_IDS.get
        elif isinstance(key, Mapping):
            get = key.get
        elif isinstance(key, str) or (isinstance(key, int) and not isinstance(key, bool)):
            if self.bare_id_name is None:
                if not any(s.by is not None for s in self._scopes):
                    raise ConfigError(
                        "key",
                        f"limiter {self._limiter!r} has only shared scopes "
                        f"({', '.join(self.names)}): it takes no id; pass None (through "
                        "Infrastructure, drop rate_key)",
                    )
                raise ConfigError(
                    "key",
                    f"this limiter's scopes take ids {self._id_names()}: pass a mapping "
                    f"such as {self._example()}",
                )
            get = {self.bare_id_name: key}.get
        else:
            raise ContextError(
                f"key: must be an id (str or int), a mapping of ids or None, got {key!r}"
            )
        out = []
        for prefix, by, by_id in self.templates:
            if by is None:
                if not partial:
                    out.append(prefix)
                continue
            value = get(by)
            if value is None:
                value = get(by_id)  # protect() passes {"user_id": ...}
            if value.__class__ is not str:
                value = self._id(get, by, by_id, partial)
                if value is None:
                    continue
            elif len(value) > MAX_ID_LENGTH:
                value = long_id(value)
            out.append(prefix + value)
        return out

    def reset_keys(self, key: Key, scope: str | None) -> Sequence[str]:
        """The keys ``reset`` forgets: those ``key`` identifies, in ``scope`` only if given (a
        shared scope needs no key)."""
        if scope is None:
            return self.keys(key, partial=True)
        prefix, by, _ = self.templates[self.index(scope)]
        if by is None:
            return (prefix,)
        return tuple(k for k in self.keys(key, partial=True) if k.startswith(prefix))

    def index(self, scope: str) -> int:
        """The position of the scope named ``scope``."""
        if scope not in self.names:
            raise ConfigError("scope", f"no scope named {scope!r} (have {', '.join(self.names)})")
        return self.names.index(scope)

    def _id(self, get: Callable[[str], Any], by: str, by_id: str, partial: bool) -> str | None:
        """The id under ``by`` or ``by_id`` when it is not simply a str under ``by``."""
        value = get(by)
        if value is None:
            value = get(by_id)
        if value.__class__ is str:
            return value if len(value) <= MAX_ID_LENGTH else long_id(value)
        if value is None:
            if partial:
                return None
            scope = next(s.name for s in self._scopes if s.by == by)
            raise ContextError(
                f"scope {scope!r} needs an id: pass {{{by!r}: ...}} or {{{by_id!r}: ...}}",
                scope=scope,
                id_name=by,
            )
        if isinstance(value, str | int) and not isinstance(value, bool):
            text = _text(value, by)
            return text if len(text) <= MAX_ID_LENGTH else long_id(text)
        scope = next(s.name for s in self._scopes if s.by == by)
        raise ContextError(f"key.{by}: ids are str or int, got {value!r}", scope=scope, id_name=by)

    def _id_names(self) -> str:
        return ", ".join(sorted({repr(s.by) for s in self._scopes if s.by is not None})) or "none"

    def _example(self) -> str:
        return "{" + ", ".join(f"{s.by!r}: ..." for s in self._scopes if s.by is not None) + "}"


def _text(value: str | int, by: str) -> str:
    """An id's text (``str(value)``), for a str subclass or an int."""
    try:
        return str(value)
    except ValueError:  # an int of more digits than Python writes out
        raise ContextError(
            f"key.{by}: an int id may have at most {sys.get_int_max_str_digits()} digits",
            id_name=by,
        ) from None


KeysReader = Callable[[Callable[[str], Any]], list[str] | None]
"""``(get) -> storage keys``, or ``None`` when some id is not simply a str (the caller's
general path then resolves it, or says what is wrong)."""


def keys_reader(templates: Sequence[Template]) -> KeysReader:
    """The storage keys of a context, for one limiter's scope templates, without a loop.

    A loop over the templates costs more than the reads it makes (as ``_unrolled`` explains for
    ``admit_all``), and a dict context is read on every decision, so the common case runs a
    function generated for these templates. Ids are read as :meth:`KeyResolver.keys` reads
    them: the name, else the ``_id`` name; an id longer than :data:`MAX_ID_LENGTH` is left to
    that general path too.

    >>> read = keys_reader([("a:user:", "user", "user_id"), ("a:global", None, "")])
    >>> read({"user_id": "u1"}.get), read({"user": 7}.get)
    (['a:user:u1', 'a:global'], None)
    """
    namespace: dict[str, Any] = {}
    lines = ["def keys_of(get):"]
    parts = []
    for i, (prefix, by, by_id) in enumerate(templates):
        namespace[f"P{i}"] = prefix
        if by is None:
            parts.append(f"P{i}")
            continue
        namespace[f"B{i}"], namespace[f"I{i}"] = by, by_id
        lines += [
            f"    v{i} = get(B{i})",
            f"    if v{i} is None:",
            f"        v{i} = get(I{i})",
            f"    if v{i}.__class__ is not str or len(v{i}) > {MAX_ID_LENGTH}:",
            "        return None",
        ]
        parts.append(f"P{i} + v{i}")
    lines.append(f"    return [{', '.join(parts)}]")
    exec(compile("\n".join(lines) + "\n", "<buttress keys_reader>", "exec"), namespace)
    keys_of: KeysReader = namespace["keys_of"]
    return keys_of
