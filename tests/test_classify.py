"""Rules on a call's outcome, as a configuration file writes them (``buttress._classify``).

Parsing is checked on its own (statuses, tables, the paths errors name), then compiling: what
each rule matches, on exceptions and on returned values, with real httpx objects; then the
rules in ``[circuit_breakers.NAME]``, through an Infrastructure built from TOML.
"""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

import buttress as bt
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


# -- from a configuration file -------------------------------------------------------------------

API = """
[circuit_breakers.api]
strategy = "fail_fast"
failure_threshold = 3
record = ["ConnectionError", { status = [429, "5xx"] }]
failure_result = { status = "500-599" }
"""


def infrastructure(tmp_path: Path, toml: str = API, **env: str) -> bt.Infrastructure:
    path = tmp_path / "buttress.toml"
    path.write_text(toml)
    return bt.Infrastructure("t", path, env=env, clock=bt.ManualClock(), background=False)


def returns(status: int) -> Callable[[], httpx.Response]:
    return lambda: httpx.Response(status)


def raises(exc: BaseException) -> Callable[[], None]:
    def fn() -> None:
        raise exc

    return fn


def test_returned_5xx_responses_open_a_breaker_from_toml(tmp_path: Path) -> None:
    with infrastructure(tmp_path) as infra:
        breaker = infra.breakers["api"]
        for status in (503, 404, 404, 200, 500, 404, 201):
            response = infra.call("api", returns(status))
            assert response.status_code == status  # the caller still gets it
        assert breaker.snapshot().failure_count == 2
        assert breaker.state is bt.BreakerState.CLOSED  # 404s and 2xx are successes
        infra.call("api", returns(502))
        assert breaker.state is bt.BreakerState.OPEN
        with pytest.raises(bt.CircuitOpenError):
            infra.call("api", returns(200))


def test_returned_5xx_responses_count_for_awaited_calls_too(tmp_path: Path) -> None:
    async def fetch(status: int) -> httpx.Response:
        return httpx.Response(status)

    async def main(infra: bt.Infrastructure) -> None:
        for _ in range(3):
            await infra.call_async("api", fetch, 503)

    with infrastructure(tmp_path) as infra:
        asyncio.run(main(infra))
        assert infra.breakers["api"].state is bt.BreakerState.OPEN


def test_exceptions_carrying_a_5xx_open_it_while_a_404_stays_neutral(tmp_path: Path) -> None:
    with infrastructure(tmp_path) as infra:
        breaker = infra.breakers["api"]
        for _ in range(5):
            with pytest.raises(httpx.HTTPStatusError):
                infra.call("api", raises(status_error(404)))
        with pytest.raises(ValueError):  # named by no rule: the caller's business
            infra.call("api", raises(ValueError("bad input")))
        with pytest.raises(httpx.HTTPStatusError):
            infra.call("api", raises(status_error(429)))
        with pytest.raises(ConnectionError):
            infra.call("api", raises(ConnectionError("refused")))
        snap = breaker.snapshot()
        assert (snap.failure_count, snap.total_ignored, snap.state) == (
            2,
            5,
            bt.BreakerState.CLOSED,
        )
        with pytest.raises(httpx.HTTPStatusError):
            infra.call("api", raises(status_error(503)))
        assert breaker.state is bt.BreakerState.OPEN


def test_a_with_block_has_no_returned_value_to_judge(tmp_path: Path) -> None:
    with infrastructure(tmp_path) as infra:
        for _ in range(3):
            with infra.protect("api"):
                httpx.Response(503)  # not the block's result: a block has none
        assert infra.breakers["api"].snapshot().failure_count == 0


def test_a_predicate_by_import_path_judges_returned_values(tmp_path: Path) -> None:
    toml = """
    [circuit_breakers.api]
    strategy = "fail_fast"
    failure_threshold = 2
    failure_result = ["test_classify:is_empty", { status = 503 }]
    """
    with infrastructure(tmp_path, toml.replace("\n    ", "\n")) as infra:
        assert infra.call("api", lambda: [1]) == [1]
        assert infra.call("api", list) == []
        assert infra.breakers["api"].state is bt.BreakerState.CLOSED
        infra.call("api", returns(503))
        assert infra.breakers["api"].state is bt.BreakerState.OPEN


@pytest.mark.parametrize(
    ("rules", "path", "message"),
    [
        (
            'record = ["OSError", { status = ["600-700"] }]',
            "circuit_breakers.api.record[1].status",
            '"600-700" is not an HTTP status range (100-599)',
        ),
        (
            "ignore = [{ stauts = 404 }]",
            "circuit_breakers.api.ignore[0].stauts",
            "unknown key 'stauts' (did you mean 'status'?)",
        ),
        (
            "failure_result = { status = [] }",
            "circuit_breakers.api.failure_result.status",
            "names no status",
        ),
        (
            "failure_result = 503",
            "circuit_breakers.api.failure_result",
            "must be a string or a table or a list",
        ),
    ],
)
def test_a_bad_rule_in_a_file_is_a_config_error_naming_it(
    tmp_path: Path, rules: str, path: str, message: str
) -> None:
    file = tmp_path / "buttress.toml"
    file.write_text(f"[circuit_breakers.api]\n{rules}\n")
    with pytest.raises(ConfigError) as info:
        bt.load_config(file, env={})
    assert info.value.path == path
    assert message in info.value.message


def test_a_bad_rule_from_the_environment_names_its_variable() -> None:
    variable = "BUTTRESS_CIRCUIT_BREAKERS__API__RECORD"
    with pytest.raises(ConfigError) as info:
        bt.load_config({}, env={variable: '["OSError", {"status": "6xx"}]'})
    assert info.value.path == "circuit_breakers.api.record[1].status"
    assert info.value.message.endswith(f"(set by {variable})")
    cfg = bt.load_config({}, env={variable: '["OSError", {"status": "5xx"}]'})
    assert cfg.circuit_breakers["api"].record == ["OSError", {"status": "5xx"}]


@pytest.mark.parametrize(
    ("rules", "path"),
    [
        ('record = ["OSError", "httpx.NoSuchError"]', "circuit_breakers.api.record[1]"),
        ('ignore = [{ call = "test_classify:nothing" }]', "circuit_breakers.api.ignore[0].call"),
        ('failure_result = "httpx:Response"', "circuit_breakers.api.failure_result"),
    ],
)
def test_what_a_rule_names_is_imported_at_check_time(tmp_path: Path, rules: str, path: str) -> None:
    toml = f"[circuit_breakers.api]\n{rules}\n"
    cfg = bt.load_config(tomllib.loads(toml), env={})  # the shape is fine: nothing imported yet
    with pytest.raises(ConfigError) as info:
        cfg.check_imports()
    assert info.value.path == path
    with pytest.raises(ConfigError) as info:
        infrastructure(tmp_path, toml)
    assert info.value.path == path  # named once, not prefixed twice


def test_rules_survive_the_round_trip_through_toml_data() -> None:
    cfg = bt.load_config(tomllib.loads(API), env={})
    assert bt.load_config(cfg.to_toml_dict(), env={}) == cfg


def test_an_adaptive_limit_shrinks_on_a_returned_failure_as_the_breaker_counts_it(
    tmp_path: Path,
) -> None:
    toml = (
        API
        + """
[rate_limiting.limiters.api]
scopes = [{ name = "global", limit = 100, algorithm = "adaptive" }]

[memory_manager]
enabled = false
"""
    )
    with infrastructure(tmp_path, toml) as infra:
        limiter = infra.limiters["api"]
        infra.call("api", returns(404))
        assert limiter.current_limit("global") == 100.0
        infra.call("api", returns(503))
        assert limiter.current_limit("global") == 50.0
