"""Prometheus metrics from a running worker and producer, scraped over HTTP."""

from __future__ import annotations

import urllib.request

from telemetry.embedded import free_port
from telemetry.keys import Keys
from telemetry.partitions import open_layout
from tests.aggregation_helpers import START
from tests.conftest import run_cli
from tests.crash_harness import spawn, wait_for


def scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return response.read().decode()
    except OSError:
        return ""


def test_worker_exports_counters_gauges_and_histogram(redis_url, db):
    assert run_cli("producers", "m1", "m2", "--count", "300", "--start", str(START), "--spike-rate", "180",
                   "--partitions", "4", "--redis-url", redis_url).returncode == 0
    layout = open_layout(db, Keys())
    db.xadd(layout.partition_for("m1").readings, {"sensor": "m1", "ts": "1", "temperature_c": "nan",
                                                  "humidity_pct": "1"})
    late = layout.partition_for("m1")  # a straggler for m1's first window, long emitted by then
    db.xadd(late.readings, {"sensor": "m1", "ts": str(START + 500), "temperature_c": "20.5", "humidity_pct": "50"})
    port = free_port()
    worker = spawn("consumers", "aggregate", "--start", "all", "--metrics-port", str(port), "--redis-url", redis_url)
    try:
        wait_for(lambda: "telemetry_readings_processed_total 601.0" in scrape(port), 30, "601 processed")
        wait_for(lambda: 'telemetry_group_pending_entries{group="aggregators",partition="3"} 0.0' in scrape(port),
                 30, "every partition read")
        text = scrape(port)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    assert 'telemetry_alerts_total{rule="temperature-jump",severity="warning"}' in text
    for index in range(4):
        assert f'telemetry_group_lag_entries{{group="aggregators",partition="{index}"}} 0.0' in text
        assert f'telemetry_group_pending_entries{{group="aggregators",partition="{index}"}} 0.0' in text
    assert "telemetry_commit_seconds_bucket" in text and "telemetry_commit_seconds_count" in text
    for metric in ("telemetry_late_readings_total", "telemetry_window_revisions_total"):
        assert f'{metric}{{group="aggregators",partition="{late.index}"}} 1.0' in text


def test_producer_exports_produced_readings(redis_url):
    port = free_port()
    producer = spawn("producers", "p1", "--rate", "20", "--metrics-port", str(port), "--redis-url", redis_url)
    try:
        wait_for(lambda: "telemetry_readings_produced_total" in scrape(port)
                 and "telemetry_readings_produced_total 0.0" not in scrape(port), 30, "readings produced")
    finally:
        producer.terminate()
        assert producer.wait(timeout=30) == 0
