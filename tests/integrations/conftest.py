"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from web_views import CONFIG

import buttress as bt


@pytest.fixture
def infra(clock: bt.ManualClock) -> Iterator[bt.Infrastructure]:
    """The infrastructure the Django, Flask and aiohttp views are guarded by (``CONFIG``), on
    the test's manual clock (a module with an ``infra`` of its own uses that)."""
    with bt.Infrastructure("web", CONFIG, clock=clock, env={}, background=False) as i:
        yield i
