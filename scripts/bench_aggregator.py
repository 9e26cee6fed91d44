"""Aggregator throughput (the exactly-once worker vs a seed-style consumer, best of 3 rounds each;
a 5,000-sensor fleet) and end-to-end latency, one worker in-process on a private Redis.

The fleet regime (thousands of sensors, one or two readings each per commit) has a benchmark of
its own, scripts/bench_fleet.py; this one keeps the figures of many readings per sensor."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import walrus
from bench_common import Figure, Stopwatch, backfill, bench_redis, parser, print_figures

from consumers.rules import load_rules
from consumers.settings import AggregatorSettings
from consumers.worker import AggregatorWorker, OwnedPartition
from telemetry.gc_tuning import tune_for_batches
from telemetry.keys import Keys
from telemetry.partitions import Layout, delete_pipeline, open_layout
from telemetry.schema import FieldMap
from telemetry.timeutil import now_ms, stream_id_ms

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 3


def settings(**overrides) -> AggregatorSettings:
    return AggregatorSettings(**{"consumer": "bench", "start": "all", "rules": load_rules(None), "block_ms": 10,
                                 "settle_ms": 0, **overrides})


def processed(db: walrus.Database, layout: Layout) -> int:
    return sum(int(db.hget(keys.counters, "processed") or 0) for keys in layout.groups("aggregators"))


def worker_rate(db: walrus.Database, layout: Layout, total: int) -> float:
    worker = AggregatorWorker(db, layout, FieldMap(), settings(drain=True), log=io.StringIO())
    with Stopwatch() as watch:
        worker.run(lambda: False)
    assert processed(db, layout) == total
    return total / watch.seconds


def seed_style_rate(db: walrus.Database, total: int) -> float:
    """The seed tutorial's consumer: XREADGROUP COUNT 1 on one stream, then one XACK per entry."""
    stream = "bench-seed:readings"
    pipeline = db.pipeline(transaction=False)
    for index in range(total):
        pipeline.xadd(stream, {"sensor": f"s{index % 100}", "ts": str(index), "temperature_c": "20.5",
                               "humidity_pct": "50.5", "seq": str(index // 100), "v": "1"})
    pipeline.execute()
    db.xgroup_create(stream, "seed", id="0")
    with Stopwatch() as watch:
        for _ in range(total):
            reply = db.xreadgroup("seed", "seed-worker", {stream: ">"}, count=1, block=2000)
            for _, messages in reply:
                for message_id, _fields in messages:
                    db.xack(stream, "seed", message_id)
    db.delete(stream)
    return total / watch.seconds


def latency_ms(url: str, seconds: float = 8.0) -> tuple[float, float, float]:
    """p50/p99 from XADD (the entry id's server time) to the commit that acknowledged it."""
    db = walrus.Database.from_url(url, decode_responses=True)
    layout = open_layout(db, Keys("bench-lat"))
    latencies: list[int] = []

    def record(owned: OwnedPartition, _processed: int, _seconds: float) -> None:
        committed = now_ms()
        latencies.extend(committed - stream_id_ms(entry_id) for entry_id in owned.committed_ids)

    worker = AggregatorWorker(db, layout, FieldMap(), settings(start="new", block_ms=50,
                                                               duration_ms=int((seconds + 2) * 1000)),
                              log=io.StringIO())
    worker.on_commit = record
    worker.step(now_ms())  # owns every partition before the producer starts
    producer = subprocess.Popen(
        [sys.executable, "-m", "producers", "--fleet", "lat-", "100", "--rate", "100", "--duration", str(seconds),
         "--redis-url", url, "--prefix", "bench-lat"], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker.run(lambda: False)
    producer.wait()
    delete_pipeline(db, layout)
    return float(np.percentile(latencies, 50)), float(np.percentile(latencies, 99)), len(latencies) / seconds


def best_rates(db: walrus.Database) -> tuple[float, float]:
    """Best of ROUNDS rounds for each consumer, taken in turn, on fresh readings each round: on a
    shared machine one slow stretch would otherwise decide the ratio."""
    fast, seed = [], []
    for round_number in range(ROUNDS):
        layout = open_layout(db, Keys(f"bench-agg-{round_number}"))
        backfill(db, layout, sensors=100, per_sensor=2000)
        fast.append(worker_rate(db, layout, 200_000))
        seed.append(seed_style_rate(db, 20_000))
        delete_pipeline(db, layout)
    return max(fast), max(seed)


def many_sensors_rate(db: walrus.Database) -> float:
    """A fleet where a commit carries one or two readings per sensor: per-sensor work dominates."""
    layout = open_layout(db, Keys("bench-many"))
    backfill(db, layout, sensors=5000, per_sensor=40)
    rate = worker_rate(db, layout, 200_000)
    delete_pipeline(db, layout)
    return rate


def main() -> None:
    args = parser(__doc__).parse_args()
    tune_for_batches()  # as `python -m consumers aggregate` does; the seed-style consumer runs with it too
    with bench_redis(args.redis_url) as url:
        db = walrus.Database.from_url(url, decode_responses=True)
        fast, seed = best_rates(db)
        many = many_sensors_rate(db)
        p50, p99, live_rate = latency_ms(url)
    print_figures("aggregator", [
        Figure(f"exactly-once worker readings/s (best of {ROUNDS})", fast, "readings/s",
               f"seed-style consumer (best of {ROUNDS})", seed, ">= 60,000/s and >= 15x"),
        Figure("worker readings/s, 5,000 sensors x 40", many, "readings/s"),
        Figure(f"latency p50 at {live_rate:,.0f} readings/s", p50, "ms"),
        Figure(f"latency p99 at {live_rate:,.0f} readings/s", p99, "ms"),
    ], args.json)


if __name__ == "__main__":
    main()
