"""What the Django, Flask and aiohttp tests share: the configuration their views are guarded
under (a limiter ``api`` of 2 per client a minute; a breaker ``payments`` that opens after
2 failures). conftest.py makes the ``infra`` fixture from it."""

from __future__ import annotations

from typing import Any

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
        "payments": {"failure_threshold": 2, "reset_timeout": 30.0, "degradation_threshold": None}
    },
    "services": {"payments": {"limiter": False}},
}
