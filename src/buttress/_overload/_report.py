"""Samples and snapshots as plain data, for a health report in JSON."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ["plain"]


def plain(record: DataclassInstance) -> dict[str, Any]:
    """A JSON-ready dict of a dataclass: enums as their values, paths as strings, mappings as
    dicts, nested records as dicts, every other value as it is."""
    return {f.name: _value(getattr(record, f.name)) for f in dataclasses.fields(record)}


def _value(value: object) -> object:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {key: _value(item) for key, item in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(value)
    return value
