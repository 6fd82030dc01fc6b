"""OpenTelemetry metrics through ``opentelemetry-api`` alone: observable instruments whose
callbacks read the components' snapshots when the application's SDK collects.

>>> from buttress.exporters.otel import instrument_infrastructure   # doctest: +SKIP
>>> handle = instrument_infrastructure(infra)   # the global MeterProvider
>>> handle.close()                              # stop reporting this infrastructure

Pools report under the ``db.client.connection.*`` semantic-convention names (``count`` by
``db.client.connection.state`` idle/used, ``max``, ``pending_requests``, ``timeouts``; with
``pool_histograms=True`` also the ``wait_time``, ``use_time`` and ``create_time``
histograms); everything else under ``buttress.*``. Without an SDK the API is a no-op. See
``docs/metrics.md``.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import metrics
    from opentelemetry.metrics import CallbackOptions, Histogram, MeterProvider, Observation
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ImportError(
        "buttress.exporters.otel needs opentelemetry-api: "
        "pip install opentelemetry-api (the 'otel' extra)"
    ) from exc

from .. import __version__, events
from .._errors import ConfigError
from .._fork import fork_safe_lock
from ._metrics import METRICS, MetricDef, Published, Summary, gather

if TYPE_CHECKING:
    from .._infrastructure import Infrastructure

__all__ = ["InfrastructureMetrics", "instrument_infrastructure"]

_POOL_NAME = "db.client.connection.pool.name"
_NAMESPACE = "buttress.namespace"

# Pool events → (histogram name, measurement, description).
_HISTOGRAMS: Mapping[tuple[str, ...], tuple[str, str, str]] = {
    ("buttress", "pool", "checkout"): (
        "db.client.connection.wait_time",
        "wait",
        "The time it took to obtain an open connection from the pool.",
    ),
    ("buttress", "pool", "checkin"): (
        "db.client.connection.use_time",
        "held",
        "The time between borrowing a connection and returning it to the pool.",
    ),
    ("buttress", "pool", "connect"): (
        "db.client.connection.create_time",
        "duration",
        "The time it took to create a new connection.",
    ),
}


class _Instruments:
    """One set of observable instruments on one meter provider, reporting every
    infrastructure added to it (OpenTelemetry cannot take an instrument back, so each
    provider gets its instruments once and handles come and go)."""

    def __init__(self, provider: MeterProvider | None) -> None:
        self._meter = metrics.get_meter("buttress", __version__, meter_provider=provider)
        self._lock = fork_safe_lock()
        self.published = Published("instrumented on this meter provider")
        self._histograms: dict[str, Histogram] = {}
        kinds = {
            "gauge": self._meter.create_observable_gauge,
            "summary": self._meter.create_observable_gauge,
            "counter": self._meter.create_observable_counter,
            "updown": self._meter.create_observable_up_down_counter,
        }
        for m in METRICS:
            if m.otel is not None:
                kinds[m.kind](m.otel, [self._callback(m)], unit=m.unit, description=m.help)

    def histogram(self, name: str, description: str) -> Histogram:
        with self._lock:
            h = self._histograms.get(name)
            if h is None:
                h = self._histograms[name] = self._meter.create_histogram(
                    name, unit="s", description=description
                )
            return h

    def _callback(self, m: MetricDef) -> Callable[[CallbackOptions], Iterable[Observation]]:
        keys = m.attribute_keys()

        def observe(options: CallbackOptions) -> Iterable[Observation]:
            found: list[Observation] = []
            for infra in self.published():
                for values, value in gather(infra, m.source)[m.key]:
                    attrs = {k: v for k, v in zip(keys, values, strict=True) if v != ""}
                    if isinstance(value, Summary):
                        found += [
                            Observation(v, {**attrs, "buttress.quantile": q})
                            for q, v in value.quantiles
                        ]
                    else:
                        found.append(Observation(value, attrs))
            return found

        return observe


_by_provider: weakref.WeakKeyDictionary[Any, _Instruments] = weakref.WeakKeyDictionary()
_setup = fork_safe_lock()
# Pool names whose events feed the histograms, and who claimed them: pool events carry the
# pool's name only, so two instrumented infrastructures must not share one.
_claimed: dict[str, list[InfrastructureMetrics]] = {}
_ids = itertools.count(1)


class InfrastructureMetrics:
    """The handle :func:`instrument_infrastructure` returns: :meth:`close` stops reporting.

    Usable as a context manager. The instruments stay on the meter provider (OpenTelemetry has
    no way to remove one); after ``close`` they report nothing for this infrastructure.
    """

    def __init__(
        self, infra: Infrastructure, instruments: _Instruments, pool_histograms: bool
    ) -> None:
        self.infrastructure = infra
        self._instruments = instruments
        self._handler_id: str | None = None
        self._pools: frozenset[str] = frozenset()
        self.closed = False
        if pool_histograms:
            self._watch_pools()

    def _watch_pools(self) -> None:
        infra = self.infrastructure
        pools = frozenset(infra.config.connection_pools)
        with _setup:
            for name in sorted(pools):
                other = next(
                    (h for h in _claimed.get(name, ()) if h.infrastructure is not infra), None
                )
                if other is not None:
                    raise ConfigError(
                        f"connection_pools.{name}",
                        f"pool {name!r} of namespace {other.infrastructure.namespace!r} already "
                        "feeds the wait/use/create time histograms, and pool events carry only "
                        "the pool's name: rename one pool, or pass pool_histograms=False",
                    )
            for name in pools:
                _claimed.setdefault(name, []).append(self)
        self._pools = pools
        hists = {
            event: (self._instruments.histogram(name, description), measurement)
            for event, (name, measurement, description) in _HISTOGRAMS.items()
        }
        namespace = infra.namespace

        def record(
            event: events.EventName, measured: Mapping[str, float], meta: Mapping[str, Any]
        ) -> None:
            pool = meta.get("pool")
            if pool not in pools or meta.get("ok") is False:
                return
            histogram, measurement = hists[event]
            histogram.record(measured[measurement], {_POOL_NAME: pool, _NAMESPACE: namespace})

        self._handler_id = f"buttress.exporters.otel/{next(_ids)}"
        events.attach(self._handler_id, list(_HISTOGRAMS), record)

    def close(self) -> None:
        """Stop reporting this infrastructure. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self._instruments.published.remove(self.infrastructure)
        if self._handler_id is not None:
            events.detach(self._handler_id)
        with _setup:
            for name in self._pools:
                handles = _claimed.get(name, [])
                if self in handles:
                    handles.remove(self)
                if not handles:
                    _claimed.pop(name, None)

    def __enter__(self) -> InfrastructureMetrics:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "reporting"
        return f"<InfrastructureMetrics {self.infrastructure.namespace!r} {state}>"


def instrument_infrastructure(
    infra: Infrastructure,
    meter_provider: MeterProvider | None = None,
    *,
    pool_histograms: bool = False,
) -> InfrastructureMetrics:
    """Report ``infra``'s metrics through ``meter_provider`` (default: the global one).

    ``pool_histograms=True`` also records the ``db.client.connection.wait_time``,
    ``use_time`` and ``create_time`` histograms from the pools' checkout, checkin and connect
    events: a few microseconds per checkout, which is why it is off by default.
    """
    provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    with _setup:
        instruments = _by_provider.get(provider)
        if instruments is None:
            instruments = _by_provider[provider] = _Instruments(provider)
    if not instruments.published.add(infra):
        raise ConfigError(
            "namespace",
            f"infrastructure {infra.namespace!r} is already instrumented on this meter "
            "provider: close its handle first",
        )
    try:
        return InfrastructureMetrics(infra, instruments, pool_histograms)
    except BaseException:
        instruments.published.remove(infra)
        raise
