"""The guide's remaining settings and figures (issue 16, item 6): each gap closed, tested here."""

from __future__ import annotations

from typing import Any

import pytest

import buttress as bt


def _limited(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    rl: dict[str, Any] = {"limiters": {"api": {"scopes": [{"name": "user", "limit": 5, "window": 1.0}]}}}
    rl.update(extra or {})
    return {"rate_limiting": rl}


# -- cleanup_interval ------------------------------------------------------------------------


@pytest.mark.parametrize(("setting", "swept_after"), [(None, 60.0), (5.0, 5.0), ("5m", 300.0)])
def test_cleanup_interval_sets_how_often_expired_keys_are_swept(
    setting: Any, swept_after: float
) -> None:
    clock = bt.ManualClock()
    config = _limited({} if setting is None else {"cleanup_interval": setting})
    with bt.Infrastructure("sweep", config, clock=clock, background=False, env={}) as infra:
        backend = infra.limiters["api"].backend
        for i in range(10):
            infra.limiters["api"].try_acquire({"user": f"u{i}"})
        assert backend.key_count() == 10
        clock.advance(swept_after - 0.5)  # every key long expired, but no sweep is due yet
        infra.run_maintenance()
        assert backend.key_count() == 10
        clock.advance(1.0)
        infra.run_maintenance()
        assert backend.key_count() == 0


def test_cleanup_interval_in_milliseconds_is_refused_with_the_unit_hint() -> None:
    with pytest.raises(bt.ConfigError, match=r"rate_limiting\.cleanup_interval.*ms"):
        bt.load_config(_limited({"cleanup_interval": 300_000}), env={})
