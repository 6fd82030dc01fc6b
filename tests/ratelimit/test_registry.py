"""The algorithm registry against every other place that names algorithms.

The Literal (for mypy and pydantic), the config's type and the Redis scripts' letters cannot
be derived from the table at runtime; these tests hold each to it.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import get_args

import pytest

import buttress as bt
from buttress import _config as config
from buttress.ratelimit._registry import ALGORITHMS, REGISTRY, AlgorithmName

COMMON_LUA = resources.files("buttress.ratelimit").joinpath("lua/common.lua").read_text()


def test_the_literal_names_the_registry_in_its_order() -> None:
    assert get_args(AlgorithmName) == tuple(REGISTRY) == ALGORITHMS == bt.ratelimit.ALGORITHMS


def test_the_config_takes_the_registry_names() -> None:
    assert get_args(config.Algorithm) == ALGORITHMS


def test_a_class_has_one_letter_and_a_letter_one_class() -> None:
    letter_of: dict[object, str] = {}
    class_of: dict[str, object] = {}
    for spec in REGISTRY.values():
        assert letter_of.setdefault(spec.kind, spec.code) == spec.code
        assert class_of.setdefault(spec.code, spec.kind) is spec.kind
        assert len(spec.code) == 1


@pytest.mark.parametrize("name", ALGORITHMS)
def test_every_name_builds_its_class(name: str) -> None:
    spec = REGISTRY[name]  # type: ignore[index]
    scope = bt.Scope("s", 10, 1.0, algorithm=name, burst=5 if spec.burst else None)  # type: ignore[arg-type]
    assert type(scope.build()) is spec.kind
    assert scope.adaptive is spec.adaptive


def test_the_scripts_letter_table_is_the_registry() -> None:
    table = dict(re.findall(r'^--\s+"(\w)"\s+(\w+)', COMMON_LUA, re.MULTILINE))
    assert table == {spec.code: spec.kind.name for spec in REGISTRY.values()}  # type: ignore[attr-defined]


def test_the_scripts_state_widths_are_the_registry() -> None:
    found = re.search(r"^local WIDTH = \{(.*?)\}$", COMMON_LUA, re.MULTILINE)
    assert found is not None
    widths = {k: int(v) for k, v in re.findall(r"(\w) = (\d+)", found.group(1))}
    assert widths == {spec.code: spec.width for spec in REGISTRY.values()}
    for spec in REGISTRY.values():  # what each class's state holds, from a fresh decision
        state = spec.kind(10, 1.0).admit(None, 0.0, 1)
        assert state is not None and len(state) == spec.width


def test_the_scripts_byte_codes_are_the_registrys_letters() -> None:
    found = re.search(r"^local KIND = \{(.*?)\}$", COMMON_LUA, re.MULTILINE)
    assert found is not None
    kinds = {
        int(code): letter for code, letter in re.findall(r'\[(\d+)\] = "(\w)"', found.group(1))
    }
    assert kinds == {ord(spec.code): spec.code for spec in REGISTRY.values()}


@pytest.mark.parametrize("function", ["admit", "refund", "spent"])
def test_the_scripts_run_every_letter(function: str) -> None:
    body = re.search(rf"^local function {function}\(kind.*?^end$", COMMON_LUA, re.M | re.S)
    assert body is not None
    named = re.findall(r'kind == "(\w)"', body.group(0))
    letters = {spec.code for spec in REGISTRY.values()}
    # Every letter but one is tested by name; the last is what falls through.
    assert len(named) == len(set(named)) == len(letters) - 1
    assert set(named) < letters
