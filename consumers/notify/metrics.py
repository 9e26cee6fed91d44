"""The notifier's Prometheus metrics, per sink, read from the running sinks when scraped."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from consumers.notify.notifier import Notifier
from telemetry.metrics import serve


class SinkCollector(Collector):
    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        labels = ["sink", "url"]
        counters = {name: CounterMetricFamily(f"telemetry_notify_{name}", text, labels=labels) for name, text in (
            ("delivered", "Alert events a sink accepted (2xx)"),
            ("retried", "Attempts that failed and were retried"),
            ("dead_lettered", "Alert events given up (4xx, retries exhausted) and dead-lettered"),
            ("resent", "Still-firing alerts re-sent to Alertmanager"))}
        queued = GaugeMetricFamily("telemetry_notify_queued", "Alert events waiting for a sink", labels=labels)
        oldest = GaugeMetricFamily("telemetry_notify_oldest_undelivered_seconds",
                                   "Age of the oldest alert event a sink has not finished", labels=labels)
        for sink, row in zip(self.notifier.sinks, self.notifier.sink_status()):
            values = [sink.kind, row["url"]]
            for name, family in counters.items():
                family.add_metric(values, getattr(sink.counts, name))
            queued.add_metric(values, row["queued"])
            oldest.add_metric(values, row["oldest_undelivered_s"] or 0.0)
        yield from (*counters.values(), queued, oldest)


def start_notify_metrics(port: int, notifier: Notifier) -> None:
    registry = CollectorRegistry()
    registry.register(SinkCollector(notifier))
    serve(port, registry)
