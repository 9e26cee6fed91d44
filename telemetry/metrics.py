"""Prometheus metrics for producers and workers (prometheus-client naming: *_total, *_seconds).

Counters count what this process did, so sums across processes are right. Lag and pending, per
partition, are read from Redis at scrape time by a collector, not kept up to date in a loop; so
are the group's late readings and revisions, which its commits count in each partition's counters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from telemetry.connection import as_text
from telemetry.errors import UsageError
from telemetry.lag import partition_lags
from telemetry.partitions import Layout

# the partition counters (GroupKeys.counters) exported, with their help text
LATENESS_COUNTERS = {
    "late": ("telemetry_late_readings", "Readings applied to a window already emitted (it was revised)"),
    "too_late": ("telemetry_too_late_readings", "Readings past --allowed-lateness, dead-lettered"),
    "revisions": ("telemetry_window_revisions", "Windows emitted again because late readings changed them"),
}


class GroupLagCollector(Collector):
    """One group's lag and pending on each partition, and its late readings and revisions, read
    when scraped. A worker's endpoint reports its own group: another group's workers report
    theirs, so no series comes from two endpoints."""

    def __init__(self, db: redis.Redis, layout: Layout, group: str) -> None:
        self.db, self.layout, self.group = db, layout, group

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["group", "partition"]
        lag_entries = GaugeMetricFamily("telemetry_group_lag_entries", "Entries not yet delivered to the group",
                                        labels=labels)
        lag_seconds = GaugeMetricFamily("telemetry_group_lag_seconds", "Age of the oldest undelivered entry",
                                        labels=labels)
        pending = GaugeMetricFamily("telemetry_group_pending_entries", "Delivered but not yet acknowledged",
                                    labels=labels)
        lateness = {name: CounterMetricFamily(metric, text, labels=labels)
                    for name, (metric, text) in LATENESS_COUNTERS.items()}
        try:
            for partition in partition_lags(self.db, self.layout.partitions):
                lag = partition.group(self.group)
                if lag is None:
                    continue  # no worker of the group has read this partition yet
                values = [self.group, str(partition.index)]
                lag_entries.add_metric(values, lag.lag_entries)
                lag_seconds.add_metric(values, lag.lag_seconds)
                pending.add_metric(values, lag.pending)
            pipeline = self.db.pipeline(transaction=False)
            for keys in self.layout.groups(self.group):
                pipeline.hgetall(keys.counters)
            for index, counters in enumerate(pipeline.execute()):
                counters = {as_text(name): value for name, value in counters.items()}
                for name, family in lateness.items():
                    family.add_metric([self.group, str(index)], int(counters.get(name, 0)))
        except (redis.ConnectionError, redis.TimeoutError):
            pass  # an outage shows as missing samples, not as a failed scrape
        yield from (lag_entries, lag_seconds, pending, *lateness.values())


def serve(port: int, registry: CollectorRegistry) -> None:
    try:
        start_http_server(port, registry=registry)
    except OSError as error:
        raise UsageError(f"--metrics-port {port}: cannot listen ({error.strerror})") from None


def start_producer_metrics(port: int) -> Counter:
    """Serve metrics on port; returns the produced-readings counter to increment."""
    registry = CollectorRegistry()
    produced = Counter("telemetry_readings_produced", "Readings confirmed written to the stream",
                       registry=registry)
    serve(port, registry)
    return produced


class CommittedPartition(Protocol):
    """What the metrics read of the partition the worker's commit callback is given."""

    fired: list[tuple[str, str]]  # (rule, severity) of the alerts that commit fired


def start_worker_metrics(port: int, db: redis.Redis, layout: Layout, group: str
                         ) -> Callable[[CommittedPartition, int, float], None]:
    """Serve worker metrics on port; returns the worker's on_commit callback that feeds them.
    Dead letters, late readings and the other counters are the partitions' counters in Redis,
    summed by `python -m consumers status`, not counted again here."""
    registry = CollectorRegistry()
    processed = Counter("telemetry_readings_processed", "Readings applied to windows and rolling stats",
                        registry=registry)
    alerts = Counter("telemetry_alerts", "Alerts fired", ["rule", "severity"], registry=registry)
    commit_seconds = Histogram("telemetry_commit_seconds", "Time to commit one partition's batch",
                               buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
                               registry=registry)
    registry.register(GroupLagCollector(db, layout, group))
    serve(port, registry)

    def on_commit(owned: CommittedPartition, readings: int, seconds: float) -> None:
        processed.inc(readings)
        for rule, severity in owned.fired:
            alerts.labels(rule, severity).inc()
        commit_seconds.observe(seconds)

    return on_commit
