from collections.abc import Callable, Iterator, Sequence
from typing import Any

MAX_SCOPES: int
MAX_ID_LENGTH: int

# (prefix, by, by_id, admit, interval, reach): by is None for a shared scope; interval and
# reach are a token bucket's (None for another algorithm).
ScopePart = tuple[
    str, str | None, str, Callable[[Any, float, float], Any], float | None, float | None
]

class FastPath:
    """The compiled fast path of a limiter in memory (see ``_speedups.c``)."""

    __wrapped__: Callable[..., Any]

    def __init__(
        self,
        *,
        general: Callable[..., Any],
        scopes: tuple[ScopePart, ...],
        states: dict[str, Any],
        acquire: Callable[[], object],
        release: Callable[[], object],
        grew: Callable[[float, Sequence[str]], bool],
        cap_reached: Callable[[], object],
        monotonic: Callable[[], float],
        queues: dict[str, Any],
        frame: object,
        mark: Callable[[float], float],
        measure: Callable[[float], object],
        admitted: Iterator[int],
        attached: dict[Any, Any],
        on_allowed: Callable[[Any], object],
        on_refused: Callable[[Any, float, float], Any],
        decision_type: type,
        routed: dict[str, None],
        context: bool,
        next_mark: float,
    ) -> None: ...
    def __call__(self, key: Any = None, cost: float = 1) -> Any: ...
