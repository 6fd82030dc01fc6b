from __future__ import annotations

import asyncio

import pytest

from buttress import Clock, ManualClock, SystemClock


def test_manual_clock_moves_only_when_told() -> None:
    c = ManualClock(5.0)
    assert c.monotonic() == 5.0
    c.advance(1.5)
    assert c.monotonic() == 6.5
    c.set(10.0)
    assert c.monotonic() == 10.0
    assert c.time() - c.monotonic() == pytest.approx(ManualClock(0).time())
    with pytest.raises(ValueError, match="seconds must be a finite number >= 0"):
        c.advance(-1)
    with pytest.raises(ValueError, match="cannot go back"):
        c.set(1.0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "5", True, None])
def test_manual_clock_refuses_what_would_corrupt_it(bad: object) -> None:
    c = ManualClock(5.0)
    with pytest.raises(ValueError, match="seconds"):
        c.advance(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="now must be a finite number"):
        c.set(bad)  # type: ignore[arg-type]
    assert c.monotonic() == 5.0  # unchanged


def test_manual_sleep_advances_instead_of_waiting() -> None:
    c = ManualClock()
    c.sleep(3.0)  # real-time: no, ManualClock.sleep advances the clock
    asyncio.run(c.asleep(2.0))  # real-time: no, ManualClock.asleep advances the clock
    assert c.monotonic() == 5.0


def test_both_clocks_satisfy_the_protocol() -> None:
    assert isinstance(SystemClock(), Clock)
    assert isinstance(ManualClock(), Clock)
    s = SystemClock()
    assert s.monotonic() <= s.monotonic()
