"""Prometheus metrics for producers and workers (prometheus-client naming: *_total, *_seconds).

Counters count what this process did, so sums across processes are right. Lag and pending are
read from Redis at scrape time by a collector, not kept up to date in a loop.
"""

from __future__ import annotations

from collections.abc import Iterator

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from telemetry.keys import Keys
from telemetry.lag import group_lags


class GroupLagCollector(Collector):
    def __init__(self, db: redis.Redis, stream: str) -> None:
        self.db, self.stream = db, stream

    def collect(self) -> Iterator[GaugeMetricFamily]:
        lag_entries = GaugeMetricFamily("telemetry_group_lag_entries", "Entries not yet delivered to the group",
                                        labels=["group"])
        lag_seconds = GaugeMetricFamily("telemetry_group_lag_seconds", "Age of the oldest undelivered entry",
                                        labels=["group"])
        pending = GaugeMetricFamily("telemetry_group_pending_entries", "Delivered but not yet acknowledged",
                                    labels=["group"])
        try:
            for lag in group_lags(self.db, self.stream):
                lag_entries.add_metric([lag.group], lag.lag_entries)
                lag_seconds.add_metric([lag.group], lag.lag_seconds)
                pending.add_metric([lag.group], lag.pending)
        except (redis.ConnectionError, redis.TimeoutError):
            pass  # an outage shows as missing samples, not as a failed scrape
        yield from (lag_entries, lag_seconds, pending)


def start_producer_metrics(port: int) -> Counter:
    """Serve metrics on port; returns the produced-readings counter to increment."""
    registry = CollectorRegistry()
    produced = Counter("telemetry_readings_produced", "Readings confirmed written to the stream",
                       registry=registry)
    start_http_server(port, registry=registry)
    return produced


def start_worker_metrics(port: int, db: redis.Redis, keys: Keys, group: str):
    """Serve worker metrics on port; returns the worker's on_batch callback that feeds them."""
    registry = CollectorRegistry()
    processed = Counter("telemetry_readings_processed", "Readings applied to windows and rolling stats",
                        registry=registry)
    dead_lettered = Counter("telemetry_readings_dead_lettered", "Entries sent to the dead-letter stream",
                            ["reason"], registry=registry)
    late = Counter("telemetry_readings_late", "Readings whose window had already closed", registry=registry)
    alerts = Counter("telemetry_alerts", "Alerts fired", ["rule", "severity"], registry=registry)
    batch_seconds = Histogram("telemetry_batch_processing_seconds", "Time from read to committed batch",
                              buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
                              registry=registry)
    registry.register(GroupLagCollector(db, keys.readings))
    start_http_server(port, registry=registry)

    def on_batch(batch, result, elapsed: float) -> None:
        processed.inc(len(batch.readings) - result.late)
        for dead in batch.dead_letters:
            dead_lettered.labels(dead.reason.split(":", 1)[0]).inc()
        if result.late:
            dead_lettered.labels("late").inc(result.late)
            late.inc(result.late)
        for rule, severity in result.fired:
            alerts.labels(rule, severity).inc()
        if len(batch):
            batch_seconds.observe(elapsed)

    return on_batch
