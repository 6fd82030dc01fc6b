"""What the Django, Flask and aiohttp tests share: the configuration their views are guarded
under (a limiter ``api`` of 2 per client a minute; a breaker ``payments`` that opens after
2 failures), and the infrastructure made from it on a test's manual clock.

(A ``conftest.py`` here would shadow the root one, which tests import by that name.)"""

from __future__ import annotations

from typing import Any

import buttress as bt

CONFIG: dict[str, Any] = {
    "memory_manager": {"enabled": False},
    "rate_limiting": {
        "limiters": {
            "api": {
                "algorithm": "fixed_window",
                "scopes": [{"name": "client", "limit": 2, "window": 60.0, "by": "key"}],
            }
        }
    },
    "circuit_breakers": {
        "payments": {
            "failure_threshold": 2,
            "reset_timeout": 30.0,
            "reset_timeout_jitter": 0.0,  # open for exactly 30 s: Retry-After: 30
            "degradation_threshold": None,
        }
    },
    "services": {"payments": {"limiter": False}},
}


def infrastructure(clock: bt.ManualClock) -> bt.Infrastructure:
    """The infrastructure the views are guarded by (use it in a ``with``)."""
    return bt.Infrastructure("web", CONFIG, clock=clock, env={}, background=False)
