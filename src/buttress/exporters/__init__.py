"""Metrics exporters, as optional extras: import the one you use.

* :mod:`buttress.exporters.prometheus` (the ``prometheus`` extra: ``prometheus_client``): a
  ``prometheus_client`` collector, ``register_prometheus(infra)``.
* :mod:`buttress.exporters.otel` (the ``otel`` extra: ``opentelemetry-api``): OpenTelemetry
  observable instruments, ``instrument_infrastructure(infra)``.

Both read the components' snapshots when asked (a scrape, a collection), so they cost nothing
between two reads. Importing ``buttress`` imports neither library; see ``docs/metrics.md``.
"""
