"""Metrics exporters, as optional extras: import the one you use.

* :mod:`buttress.exporters.prometheus` (``pip install 'buttress[prometheus]'``): a
  ``prometheus_client`` collector, ``register_prometheus(infra)``.
* :mod:`buttress.exporters.otel` (``pip install 'buttress[otel]'``): OpenTelemetry observable
  instruments, ``instrument_infrastructure(infra)``.

Both read the components' snapshots when asked (a scrape, a collection), so they cost nothing
between two reads. Importing ``buttress`` imports neither library; see ``docs/metrics.md``.
"""
