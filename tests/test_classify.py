"""Rules on a call's outcome, as a configuration file writes them (``buttress._classify``).

Parsing is checked on its own (statuses, tables, the paths errors name), then compiling: what
each rule matches, on exceptions and on returned values, with real httpx objects.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from buttress import ConfigError
from buttress._classify import (
    AnyResult,
    ExceptionStatus,
    ResultStatus,
    describe_statuses,
    exception_rule,
    exception_rules,
    parse_rules,
    parse_statuses,
    result_rule,
)

PATH = "circuit_breakers.api.record"
statuses = st.integers(100, 599)


def is_upstream_error(exc: BaseException) -> bool:
    """A predicate named by import path in the tests below."""
    return "upstream" in str(exc)


def is_empty(result: object) -> bool:
    return result == []


def status_error(status: int) -> httpx.HTTPStatusError:
    request = httpx.Request("GET", "https://api.example/items")
    response = httpx.Response(status, request=request)
    return httpx.HTTPStatusError(f"{status}", request=request, response=response)


# -- statuses ------------------------------------------------------------------------------------


@given(low=statuses, high=statuses)
def test_a_range_is_every_status_from_low_to_high(low: int, high: int) -> None:
    low, high = min(low, high), max(low, high)
    assert parse_statuses("s", f"{low}-{high}") == frozenset(range(low, high + 1))
    assert parse_statuses("s", f" {low} - {high} ") == frozenset(range(low, high + 1))


@given(low=statuses, high=statuses)
def test_a_range_written_backwards_is_refused_and_the_right_one_shown(low: int, high: int) -> None:
    if low == high:
        return
    low, high = min(low, high), max(low, high)
    with pytest.raises(ConfigError, match=f'runs backwards \\(write "{low}-{high}"\\)'):
        parse_statuses("s", f"{high}-{low}")


@given(st.integers().filter(lambda n: not 100 <= n <= 599), statuses)
def test_a_number_outside_100_599_is_no_status(outside: int, inside: int) -> None:
    with pytest.raises(ConfigError, match="is not an HTTP status \\(100-599\\)"):
        parse_statuses("s", outside)
    if outside >= 0:
        for text in (f"{outside}-{max(outside, inside)}", f"{min(outside, inside)}-{outside}"):
            with pytest.raises(ConfigError, match="is not an HTTP status range \\(100-599\\)"):
                parse_statuses("s", text)


@given(st.lists(st.one_of(statuses, statuses.map(str)), min_size=1))
def test_a_list_names_the_union_of_its_items(items: list[int | str]) -> None:
    assert parse_statuses("s", items) == {int(i) for i in items}


@pytest.mark.parametrize("digit", [1, 2, 3, 4, 5])
def test_a_class_is_its_hundred(digit: int) -> None:
    hundred = range(digit * 100, digit * 100 + 100)
    assert parse_statuses("s", f"{digit}xx") == frozenset(hundred)
    assert parse_statuses("s", f"{digit}XX") == frozenset(hundred)


@given(st.frozensets(statuses))
def test_statuses_are_described_as_they_could_be_written_back(named: frozenset[int]) -> None:
    text = describe_statuses(named)
    assert parse_statuses("s", text.split(", ")) == named if named else text == ""


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("600-700", '"600-700" is not an HTTP status range (100-599)'),
        ("6xx", '"6xx" is not a status'),
        (True, "true is not a status"),  # TOML's true is no 1
        (503.0, "503.0 is not a status"),
        ("5O3", '"5O3" is not a status'),
        ("500-", '"500-" is not a status'),
        ("٥٠٣", "is not a status"),  # digits, but not ASCII ones
        ([], "names no status"),
        ([500, None], "null is not a status"),
    ],
)
def test_what_is_no_status_is_named(value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_statuses("circuit_breakers.api.record[1].status", value)
    assert info.value.path == "circuit_breakers.api.record[1].status"
    assert message in info.value.message


# -- rules ---------------------------------------------------------------------------------------


def test_a_string_names_a_class_on_exceptions_and_a_predicate_on_results() -> None:
    (on_exc,) = parse_rules(PATH, "httpx.TransportError", "exception")
    (on_result,) = parse_rules("p", "pkg.mod:func", "result")
    assert (on_exc.kind, on_exc.dotted, on_exc.path) == ("class", "httpx.TransportError", PATH)
    assert (on_result.kind, on_result.path) == ("call", "p")


def test_parsing_imports_nothing() -> None:
    rules = parse_rules(PATH, ["no_such_pkg.Error", {"call": "no_such_pkg:pred"}], "exception")
    assert [r.path for r in rules] == [f"{PATH}[0]", f"{PATH}[1].call"]


@pytest.mark.parametrize(
    ("value", "path", "message"),
    [
        ([{"stauts": [503]}], f"{PATH}[0].stauts", "unknown key 'stauts' (did you mean 'status'?)"),
        ([{"when": 1}], f"{PATH}[0].when", 'a rule is {status = [...]} or {call = "'),
        ([{}], f"{PATH}[0]", "a rule takes one key, status or call, got none"),
        ([{"status": 503, "call": "m:f"}], f"{PATH}[0]", "got both"),
        (["OSError", 503], f"{PATH}[1]", "must be an exception class's import path or a table"),
        ([{"call": 3}], f"{PATH}[0].call", "must be an import path"),
        ([{"call": "pkg: f"}], f"{PATH}[0].call", "must be an import path"),
        (["OSError", {"status": ["500-599", "600-700"]}], f"{PATH}[1].status", '"600-700"'),
    ],
)
def test_a_bad_rule_is_named_by_its_path(value: Any, path: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_rules(PATH, value, "exception")
    assert (info.value.path, message in info.value.message) == (path, True), info.value


def test_a_rule_on_results_says_what_else_it_takes() -> None:
    with pytest.raises(ConfigError, match="must be a predicate's path or a table"):
        parse_rules("failure_result", 503, "result")


# -- on exceptions -------------------------------------------------------------------------------


def test_exception_rules_compile_to_classes_predicates_and_one_status_set() -> None:
    matchers = exception_rules(
        PATH,
        [
            "ConnectionError",
            "httpx.TransportError",
            {"status": [429]},
            {"call": "test_classify:is_upstream_error"},
            {"status": "5xx"},
        ],
    )
    assert matchers[:3] == (ConnectionError, httpx.TransportError, is_upstream_error)
    assert matchers[3] == ExceptionStatus(frozenset({429, *range(500, 600)}))
    assert len(matchers) == 4


def test_a_status_rule_reads_the_status_an_exception_carries() -> None:
    match = exception_rule(PATH, {"status": [429, "500-599"]})
    assert match(status_error(503))
    assert match(status_error(429))
    assert not match(status_error(404))
    assert not match(ConnectionError("no status at all"))


def test_an_import_error_names_the_rule() -> None:
    with pytest.raises(ConfigError, match="cannot import exception") as info:
        exception_rules(PATH, ["OSError", "httpx.NoSuchError"])
    assert info.value.path == f"{PATH}[1]"
    with pytest.raises(ConfigError, match="cannot import") as info:
        exception_rules(PATH, [{"call": "test_classify:no_such_predicate"}])
    assert info.value.path == f"{PATH}[0].call"
    with pytest.raises(ConfigError, match="must be one rule"):
        exception_rule(PATH, ["OSError"])


# -- on returned values --------------------------------------------------------------------------


def test_a_status_rule_reads_a_returned_responses_status() -> None:
    failed = result_rule("failure_result", {"status": [503, "502"]})
    assert failed == ResultStatus(frozenset({502, 503}))
    assert failed(httpx.Response(503))
    assert not failed(httpx.Response(200))
    assert not failed(httpx.Response(404))

    class AiohttpLike:  # aiohttp's ClientResponse: the status is `status`
        status = 503

    assert failed(AiohttpLike())
    for no_response in (None, 503, "503", {"status": 503}, object()):
        assert not failed(no_response)


def test_a_list_of_rules_on_results_fails_when_any_matches() -> None:
    failed = result_rule("failure_result", [{"status": "5xx"}, "test_classify:is_empty"])
    assert isinstance(failed, AnyResult)
    assert failed(httpx.Response(500))
    assert failed([])
    assert not failed(httpx.Response(201))
    assert not failed([1])
    assert result_rule("failure_result", {"call": "test_classify:is_empty"}) is is_empty


def test_a_class_is_no_predicate_on_results() -> None:
    with pytest.raises(ConfigError, match="is a class, not a predicate") as info:
        result_rule("failure_result", ["test_classify:is_empty", "httpx:Response"])
    assert info.value.path == "failure_result[1]"
    with pytest.raises(ConfigError, match="names no rule"):
        result_rule("failure_result", [])
