"""Matching a call's outcome against simple rules: what a configuration file says counts.

A file holds no Python, so what a breaker records or ignores (exceptions) and which returned
values are failures are written as rules:

================================  ==========================================================
``"httpx.TransportError"``        an exception class by import path; a bare name is a builtin
                                  (``"ConnectionError"``). On a returned value, a string is
                                  a predicate's path instead (``"pkg.mod:func"``)
``{status = [429, "500-599"]}``   an HTTP status: ints, ``"lo-hi"`` ranges, ``"5xx"`` classes.
                                  An exception's status as
                                  :func:`~buttress._breaker._outcome.http_status` reads it; a
                                  returned response's ``status_code`` or ``status``
``{call = "pkg.mod:func"}``       a predicate by import path, called with the exception or
                                  the returned value
================================  ==========================================================

A rule is first parsed (:func:`parse_rules`), which imports nothing: loading a configuration
checks every rule's shape, even where the application's packages are not installed. It is
then compiled (:func:`exception_rules`, :func:`exception_rule`, :func:`result_rule`) into
what is quick to test on every call: the class itself (``isinstance``), one frozenset of all
the statuses named, the predicate itself. A mistake is a :class:`~buttress.ConfigError` that
names the rule's setting, quoting values as the file writes them:
``circuit_breakers.api.record[1].status: "600-700" is not an HTTP status range (100-599)``.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ._breaker._config import ExceptionMatcher
from ._breaker._outcome import http_status, result_status
from ._errors import ConfigError
from ._imports import import_callable, import_exception

__all__ = [
    "AnyResult",
    "ExceptionStatus",
    "ResultPredicate",
    "ResultStatus",
    "Rule",
    "describe_statuses",
    "exception_rule",
    "exception_rules",
    "parse_rules",
    "parse_statuses",
    "result_rule",
]

Side = Literal["exception", "result"]
ResultPredicate = Callable[[Any], bool]

LOWEST_STATUS, HIGHEST_STATUS = 100, 599
RULE_KEYS = ("status", "call")
_SHAPES = '{status = [...]} or {call = "module:function"}'


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule as written, its shape checked, nothing imported. ``path`` names the setting
    that holds what the rule depends on (``...record[1].status``, ``...failure_result.call``)."""

    path: str
    kind: Literal["class", "status", "call"]
    statuses: frozenset[int] = frozenset()
    dotted: str = ""  # the import path of a class or a predicate


@dataclass(frozen=True, slots=True)
class ExceptionStatus:
    """True for an exception that carries one of ``statuses``."""

    statuses: frozenset[int]

    def __call__(self, exc: BaseException) -> bool:
        return http_status(exc) in self.statuses

    def __repr__(self) -> str:
        return f"ExceptionStatus({describe_statuses(self.statuses)})"


@dataclass(frozen=True, slots=True)
class ResultStatus:
    """True for a returned response whose status is one of ``statuses``."""

    statuses: frozenset[int]

    def __call__(self, result: object) -> bool:
        return result_status(result) in self.statuses

    def __repr__(self) -> str:
        return f"ResultStatus({describe_statuses(self.statuses)})"


@dataclass(frozen=True, slots=True)
class AnyResult:
    """True when any of ``predicates`` is (a list of rules on a returned value)."""

    predicates: tuple[ResultPredicate, ...]

    def __call__(self, result: object) -> bool:
        return any(predicate(result) for predicate in self.predicates)


# -- compiling (imports what the rules name) -------------------------------------------------


def exception_rules(path: str, values: object) -> tuple[ExceptionMatcher, ...]:
    """Matchers for a list of rules on exceptions (each at ``path[i]``), as ``record``,
    ``ignore`` or a retry's ``on`` take them: classes as they are, one
    :class:`ExceptionStatus` for every status named, predicates as they are."""
    return _exception_matchers(parse_rules(path, values, "exception"))


def exception_rule(path: str, value: object) -> ExceptionMatcher:
    """The matcher for one rule on exceptions, at ``path``."""
    if isinstance(value, list | tuple):
        raise ConfigError(path, f"must be one rule, got a list {_quoted(value)}")
    (matcher,) = exception_rules(path, value)
    return matcher


def result_rule(path: str, value: object) -> ResultPredicate:
    """The predicate for a rule, or a list of rules (any matches), on a returned value, as a
    breaker's ``failure_result`` or a retry's ``on_result`` take it."""
    rules = parse_rules(path, value, "result")
    if not rules:
        raise ConfigError(path, "names no rule (leave the setting out for none)")
    statuses = frozenset().union(*(r.statuses for r in rules))
    predicates: list[ResultPredicate] = [ResultStatus(statuses)] if statuses else []
    predicates += [_predicate(r) for r in rules if r.kind == "call"]
    return predicates[0] if len(predicates) == 1 else AnyResult(tuple(predicates))


def _exception_matchers(rules: Sequence[Rule]) -> tuple[ExceptionMatcher, ...]:
    out: list[ExceptionMatcher] = []
    for rule in rules:
        if rule.kind == "class":
            out.append(import_exception(rule.path, rule.dotted))
        elif rule.kind == "call":
            out.append(_predicate(rule))
    statuses = frozenset().union(*(r.statuses for r in rules))
    if statuses:
        out.append(ExceptionStatus(statuses))
    return tuple(out)


def _predicate(rule: Rule) -> Callable[[Any], bool]:
    obj = import_callable(rule.path, rule.dotted)
    if isinstance(obj, type):  # callable, but calling it makes an instance: always truthy
        raise ConfigError(rule.path, f"{_quoted(rule.dotted)} is a class, not a predicate")
    return obj


# -- parsing (pure) ----------------------------------------------------------------------------


def parse_rules(path: str, value: object, side: Side) -> tuple[Rule, ...]:
    """The rules ``value`` writes, checked, nothing imported: one rule (at ``path``) or a list
    of them (each at ``path[i]``). ``side`` says what they test, which decides what a bare
    string names: an exception class, or (``"result"``) a predicate."""
    if isinstance(value, list | tuple):
        return tuple(_rule(f"{path}[{i}]", item, side) for i, item in enumerate(value))
    return (_rule(path, value, side),)


def _rule(path: str, value: object, side: Side) -> Rule:
    if isinstance(value, str):
        kind: Literal["class", "call"] = "class" if side == "exception" else "call"
        return Rule(path, kind, dotted=_dotted(path, value))
    if isinstance(value, dict):
        return _table(path, value)
    what = "an exception class's import path" if side == "exception" else "a predicate's path"
    raise ConfigError(path, f"must be {what} or a table ({_SHAPES}), got {_quoted(value)}")


def _table(path: str, table: dict[Any, Any]) -> Rule:
    for key in table:
        if key not in RULE_KEYS:
            near = difflib.get_close_matches(str(key), RULE_KEYS, n=1, cutoff=0.6)
            hint = f"did you mean {near[0]!r}?" if near else f"a rule is {_SHAPES}"
            raise ConfigError(f"{path}.{key}", f"unknown key {key!r} ({hint})")
    if len(table) != 1:
        got = "both" if table else "none"
        raise ConfigError(path, f"a rule takes one key, status or call, got {got}: {_SHAPES}")
    if "status" in table:
        where = f"{path}.status"
        return Rule(where, "status", statuses=parse_statuses(where, table["status"]))
    where = f"{path}.call"
    return Rule(where, "call", dotted=_dotted(where, table["call"]))


def _dotted(path: str, value: object) -> str:
    # Only the shape: whether it imports is for the compiling step.
    if isinstance(value, str) and value.strip() and not any(c.isspace() for c in value):
        return value
    raise ConfigError(path, f"must be an import path such as 'pkg.mod:func', got {_quoted(value)}")


def parse_statuses(path: str, value: object) -> frozenset[int]:
    """The HTTP statuses ``value`` names: an int (``503``), a range (``"500-599"``), a class
    (``"5xx"``), or a list of them; every one from 100 to 599."""
    items = value if isinstance(value, list | tuple) else [value]
    if not items:
        raise ConfigError(path, 'names no status: write 503, "500-599" or "5xx"')
    out: set[int] = set()
    for item in items:
        out.update(_status_item(path, item))
    return frozenset(out)


def _status_item(path: str, item: object) -> range:
    if isinstance(item, int) and not isinstance(item, bool):
        if _is_status(item):
            return range(item, item + 1)
        raise ConfigError(path, f"{item} is not an HTTP status ({_BOUNDS})")
    if isinstance(item, str):
        text = item.strip().lower()
        if len(text) == 3 and text[0] in "12345" and text[1:] == "xx":
            hundred = int(text[0]) * 100
            return range(hundred, hundred + 100)
        low_text, dash, high_text = (part.strip() for part in text.partition("-"))
        if _digits(low_text) and (not dash or _digits(high_text)):
            low = int(low_text)
            high = int(high_text) if dash else low
            what = "an HTTP status range" if dash else "an HTTP status"
            if not (_is_status(low) and _is_status(high)):
                raise ConfigError(path, f"{_quoted(item)} is not {what} ({_BOUNDS})")
            if high < low:
                raise ConfigError(path, f'{_quoted(item)} runs backwards (write "{high}-{low}")')
            return range(low, high + 1)
    raise ConfigError(
        path, f'{_quoted(item)} is not a status: write 503, "500-599" or "5xx" ({_BOUNDS})'
    )


_BOUNDS = f"{LOWEST_STATUS}-{HIGHEST_STATUS}"


def _is_status(number: int) -> bool:
    return LOWEST_STATUS <= number <= HIGHEST_STATUS


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _quoted(value: object) -> str:
    """``value`` as the file writes it: a string in double quotes."""
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def describe_statuses(statuses: frozenset[int]) -> str:
    """``"429, 500-599"``: the statuses as the shortest list of numbers and ranges."""
    runs: list[list[int]] = []
    for status in sorted(statuses):
        if runs and status == runs[-1][1] + 1:
            runs[-1][1] = status
        else:
            runs.append([status, status])
    return ", ".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in runs)
