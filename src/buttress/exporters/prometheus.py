"""Prometheus: a ``prometheus_client`` collector that reads the infrastructure at each scrape.

>>> from prometheus_client import make_wsgi_app                    # doctest: +SKIP
>>> from buttress.exporters.prometheus import register_prometheus   # doctest: +SKIP
>>> register_prometheus(infra)              # on prometheus_client's default REGISTRY
>>> metrics_app = make_wsgi_app()           # serve it at /metrics

Every metric is named ``<prefix>_...`` (``buttress`` by default) and labelled with the
infrastructure's ``namespace``; see ``docs/metrics.md`` for the list. One collector serves any
number of infrastructures (distinct namespaces): :func:`register_prometheus` adds to the one
already on the registry. Custom collectors do not work in prometheus_client's multiprocess
mode; ``docs/metrics.md`` says what to do instead.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

try:
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        Metric,
        SummaryMetricFamily,
    )
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ImportError(
        "buttress.exporters.prometheus needs prometheus_client: "
        "pip install prometheus-client (the 'prometheus' extra)"
    ) from exc

from .._errors import ConfigError
from .._fork import fork_safe_lock
from ._metrics import METRICS, MetricDef, Published, Sample, Summary, gather_all

if TYPE_CHECKING:
    from .._infrastructure import Infrastructure

__all__ = ["InfrastructureCollector", "register_prometheus"]

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_UNITS = ("seconds", "bytes")


class InfrastructureCollector:
    """A custom collector publishing infrastructures' breakers, limiters, pools, memory,
    services, chaos and health. Nothing is measured between scrapes.

    >>> registry = CollectorRegistry()                       # doctest: +SKIP
    >>> registry.register(InfrastructureCollector(infra))    # doctest: +SKIP
    """

    def __init__(self, *infrastructures: Infrastructure, prefix: str = "buttress") -> None:
        if not isinstance(prefix, str) or not _NAME.match(prefix):
            raise ConfigError(
                "prefix", f"must be a Prometheus metric name such as 'buttress', got {prefix!r}"
            )
        self.prefix = prefix
        self._published = Published("published by this collector")
        for infra in infrastructures:
            self.add(infra)

    @property
    def infrastructures(self) -> tuple[Infrastructure, ...]:
        return self._published()

    def add(self, infra: Infrastructure) -> None:
        """Publish ``infra`` too (again: nothing). Namespaces must differ: they tell the
        series apart."""
        self._published.add(infra)

    def remove(self, infra: Infrastructure) -> bool:
        """Stop publishing ``infra`` (e.g. once closed); returns whether it was published."""
        return self._published.remove(infra)

    def describe(self) -> Iterator[Metric]:
        """The families this collector can produce, without samples (for the registry's
        duplicate-name check; a registry never has to scrape to learn them)."""
        for m in _PUBLISHED:
            yield self._family(m)

    def collect(self) -> Iterator[Metric]:
        samples: dict[str, list[Sample]] = {m.key: [] for m in _PUBLISHED}
        for infra in self.infrastructures:
            for key, found in gather_all(infra).items():
                if key in samples:
                    samples[key] += found
        for m in _PUBLISHED:
            if samples[m.key]:
                yield self._family(m, samples[m.key])

    def _family(self, m: MetricDef, samples: Iterable[Sample] = ()) -> Metric:
        name = f"{self.prefix}_{m.prom}"
        unit = next((u for u in _UNITS if name.endswith("_" + u)), "")
        labels = list(m.labels)
        if m.kind == "summary":
            summary = SummaryMetricFamily(name, m.help, labels=labels, unit=unit)
            for values, value in samples:
                assert isinstance(value, Summary)
                _add_summary(summary, labels, values, value)
            return summary
        family: CounterMetricFamily | GaugeMetricFamily
        if m.kind == "counter":
            family = CounterMetricFamily(name, m.help, labels=labels, unit=unit)
        else:
            family = GaugeMetricFamily(name, m.help, labels=labels, unit=unit)
        for values, value in samples:
            assert not isinstance(value, Summary)
            family.add_metric(list(values), value)
        return family

    def __repr__(self) -> str:
        names = ", ".join(repr(i.namespace) for i in self.infrastructures)
        return f"<InfrastructureCollector {self.prefix}_* [{names}]>"


def _add_summary(family: Metric, labels: list[str], values: tuple[str, ...], s: Summary) -> None:
    base = dict(zip(labels, values, strict=True))
    for q, v in s.quantiles:
        family.add_sample(family.name, {**base, "quantile": str(q)}, v)
    family.add_sample(family.name + "_count", base, s.count)
    if s.total is not None:
        family.add_sample(family.name + "_sum", base, s.total)


_PUBLISHED = tuple(m for m in METRICS if m.prom is not None)

_collectors: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, InfrastructureCollector]] = (
    weakref.WeakKeyDictionary()
)
_registering = fork_safe_lock()


def register_prometheus(
    infra: Infrastructure,
    registry: CollectorRegistry | None = None,
    *,
    prefix: str = "buttress",
) -> InfrastructureCollector:
    """Publish ``infra`` on ``registry`` (default: prometheus_client's ``REGISTRY``).

    The first call for a registry and prefix registers an :class:`InfrastructureCollector`;
    later calls add their infrastructure to it. Returns the collector
    (``collector.remove(infra)`` stops publishing one; ``registry.unregister(collector)`` all).
    """
    target = REGISTRY if registry is None else registry
    with _registering:
        by_prefix = _collectors.setdefault(target, {})
        collector = by_prefix.get(prefix)
        registered = getattr(target, "_collector_to_names", None)
        if collector is not None and isinstance(registered, dict) and collector not in registered:
            collector = None  # unregistered by hand since: start afresh
        if collector is None:
            collector = InfrastructureCollector(infra, prefix=prefix)
            target.register(collector)
            by_prefix[prefix] = collector
        else:
            collector.add(infra)
    return collector
