"""pytest fixtures for testing code that uses buttress (registered as the ``buttress`` plugin).

* ``buttress_clock``: a :class:`~buttress.ManualClock`;
* ``buttress_infra``: a factory: ``infra = buttress_infra(config)`` gives an infrastructure in
  a fresh namespace (on ``buttress_clock`` unless ``clock=`` is given), closed and cleaned up
  (Redis and SQLite keys included) after the test;
* ``buttress_simulate``: :func:`~buttress.testing.simulate_failures`;
* ``buttress_load_test``: :func:`~buttress.testing.load_test`.

>>> def test_payments_survive_chaos(buttress_infra, buttress_simulate):  # doctest: +SKIP
...     infra = buttress_infra({"circuit_breakers": {"payments": {}}})
...     buttress_simulate(infra, ["circuit_breaker_chaos"])
...     assert infra.health().overall_status in ("healthy", "degraded")
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from .._clock import ManualClock
from .._infrastructure import Infrastructure
from ._isolation import isolated_infrastructure
from ._load import load_test
from ._scenarios import simulate_failures


@pytest.fixture
def buttress_clock() -> ManualClock:
    """A clock that moves only when the test advances it."""
    return ManualClock()


@pytest.fixture
def buttress_infra(buttress_clock: ManualClock) -> Iterator[Callable[..., Infrastructure]]:
    """Make isolated infrastructures; each is closed and cleaned up after the test."""
    with ExitStack() as stack:

        def make(config: Any = None, **kwargs: Any) -> Infrastructure:
            kwargs.setdefault("clock", buttress_clock)
            return stack.enter_context(isolated_infrastructure(config, **kwargs))

        yield make


@pytest.fixture
def buttress_simulate() -> Callable[..., Any]:
    """:func:`buttress.testing.simulate_failures`."""
    return simulate_failures


@pytest.fixture
def buttress_load_test() -> Callable[..., Any]:
    """:func:`buttress.testing.load_test`."""
    return load_test
