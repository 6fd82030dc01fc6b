import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buttress._errors import ConfigError
from buttress._retry._backoff import Backoff


@given(
    initial=st.floats(0, 5),
    multiplier=st.floats(1, 4),
    extra=st.floats(0, 50),
    jitter=st.sampled_from(["full", "equal", "none"]),
    seed=st.integers(0, 2**32),
    retry=st.integers(1, 200),
)
def test_delay_within_jitter_bounds(initial, multiplier, extra, jitter, seed, retry):
    b = Backoff(initial=initial, multiplier=multiplier, max=initial + extra, jitter=jitter)
    cap = min(b.max, initial * multiplier ** (retry - 1)) if retry < 100 else b.cap(retry)
    d = b.delay(retry, random.Random(seed))
    lo = {"full": 0.0, "equal": cap / 2, "none": cap}[jitter]
    assert lo - 1e-9 <= d <= cap + 1e-9


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"initial": -1}, "initial"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"max": 0.01}, "max"),
        ({"jitter": "x"}, "jitter"),
        ({"initial": "1"}, "initial"),
    ],
)
def test_bad_settings_name_the_argument(kwargs, name):
    with pytest.raises(ConfigError, match=name):
        Backoff(**kwargs)
