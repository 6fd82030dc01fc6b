"""Test support: a manual clock, isolated infrastructures, failure scenarios, load tests.

>>> from buttress.testing import isolated_infrastructure, simulate_failures
>>> with isolated_infrastructure({"circuit_breakers": {"db": {}}}) as infra:
...     [r.ok for r in simulate_failures(infra, ["circuit_breaker_chaos"])]
[True]

The pytest plugin (installed with buttress, see ``buttress.testing.pytest_plugin``) offers the
fixtures ``buttress_clock``, ``buttress_infra`` and ``buttress_load_test``.
"""

from .._clock import ManualClock
from ._isolation import isolated_infrastructure, isolated_infrastructure_async
from ._load import LoadTestResult, default_context, load_test, load_test_async
from ._scenarios import SCENARIOS, ScenarioFault, ScenarioResult, simulate_failures

__all__ = [
    "SCENARIOS",
    "LoadTestResult",
    "ManualClock",
    "ScenarioFault",
    "ScenarioResult",
    "default_context",
    "isolated_infrastructure",
    "isolated_infrastructure_async",
    "load_test",
    "load_test_async",
    "simulate_failures",
]
