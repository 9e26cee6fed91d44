"""Late readings benchmark: a fleet drain with 1% of the readings arriving five minutes late,
against the same drain with every reading in order, in the same run.

Each late reading reopens a window already emitted (one HMGET of the kept copy, when the batch
holds late readings) and makes the worker emit it again (one more aggregate entry and kept-window
field in the commit). What that costs Redis per reading decides whether late readings are a
load a fleet's Redis can carry; the figures are Redis CPU per reading and readings/s, each
against the in-order drain of the same readings, on a fresh private redis-server each (AOF on),
with two `python -m consumers aggregate --drain` workers. The readings are written in-process
(the same rows the producer writes), in the order they arrive: by event time, except the late
ones, each written five minutes of ticks after its time.
"""

from __future__ import annotations

import math
import random
import sys

import redis

from producers.writer import StreamWriter
from scripts.bench_common import Figure, parser, print_figures
from scripts.bench_fleet import drain_with_workers, fresh_pipeline, per_reading_us, readings_streams, redis_cpu_s
from telemetry.keys import Keys
from telemetry.partitions import open_layout
from telemetry.schema import FieldMap, row_template

START_MS = 1_700_000_000_000
WRITE_CHUNK = 10_000
WORKERS = 2


def arrival_rows(sensors: int, seconds: int, late_fraction: float, late_s: int, seed: int = 1) -> list[str]:
    """One reading a second per sensor, in arrival order: a late one is written `late_s` ticks later."""
    rng = random.Random(seed)
    row = row_template(FieldMap()).format
    names = [f"late-{index:05d}" for index in range(sensors)]
    due: dict[int, list[str]] = {}
    for tick in range(seconds):
        for index, name in enumerate(names):
            text = row(name, START_MS + tick * 1000 + index % 1000, round(20 + rng.gauss(0, 2), 2),
                       round(50 + rng.gauss(0, 5), 2), tick)
            arrives = tick + late_s if rng.random() < late_fraction else tick
            due.setdefault(arrives, []).append(text)
    return [text for tick in sorted(due) for text in due[tick]]


def drain(label: str, rows: list[str], sensors: int) -> tuple[list[Figure], dict[str, float]]:
    with fresh_pipeline() as (db, processes):
        writer_db = redis.Redis.from_url(processes.url)  # the producer's bytes client
        writer = StreamWriter(writer_db, open_layout(writer_db, Keys()), FieldMap(), 0)
        for start in range(0, len(rows), WRITE_CHUNK):
            writer.write(rows[start:start + WRITE_CHUNK])
        writer.flush()
        streams = readings_streams(db)
        cpu_before, memory_before = redis_cpu_s(db), db.info("memory")["used_memory"]
        run = drain_with_workers(db, processes, streams, WORKERS, label)
        drain_cpu = redis_cpu_s(db) - cpu_before
        counters: dict[str, float] = {}
        for key in db.scan_iter(match="*:counters", _type="hash"):
            for name, value in db.hgetall(key).items():
                counters[name] = counters.get(name, 0) + int(value)
        kept = [key for key in db.scan_iter(match="*:windows", _type="hash")]
        kept_fields = sum(db.hlen(key) for key in kept)
        kept_bytes = sum(db.memory_usage(key, samples=0) or 0 for key in kept)
        counters["memory_growth"] = db.info("memory")["used_memory"] - memory_before
    elapsed, children = run.elapsed_s, run.children
    readings = len(rows)
    figures = [
        Figure(f"{label}: readings/s", readings / elapsed if elapsed > 0 else math.nan, "readings/s"),
        Figure(f"{label}: aggregator Redis CPU", per_reading_us(drain_cpu, readings), "µs/reading"),
        Figure(f"{label}: worker CPU", per_reading_us(sum(c.cpu_s for c in children), readings), "µs/reading"),
        Figure(f"{label}: revisions", counters.get("revisions", 0), "windows"),
        Figure(f"{label}: kept window", kept_bytes / kept_fields if kept_fields else math.nan, "bytes"),
    ]
    counters["processed_ok"] = float(counters.get("processed", 0) == readings)
    return figures, counters


def main() -> int:
    arguments = parser(__doc__.splitlines()[0])
    arguments.add_argument("--sensors", type=int, default=2_000, help="fleet size (default 2,000)")
    arguments.add_argument("--seconds", type=int, default=600, help="readings per sensor, one a second (default 600)")
    arguments.add_argument("--late-fraction", type=float, default=0.01, help="share of readings late (default 0.01)")
    arguments.add_argument("--late-seconds", type=int, default=300, help="how late (default 300)")
    args = arguments.parse_args()
    in_order = arrival_rows(args.sensors, args.seconds, 0.0, args.late_seconds)
    late = arrival_rows(args.sensors, args.seconds, args.late_fraction, args.late_seconds)
    base, base_counters = drain("in order", in_order, args.sensors)
    tried, late_counters = drain(f"{args.late_fraction:.0%} {args.late_seconds // 60} min late", late, args.sensors)
    if not (base_counters["processed_ok"] and late_counters["processed_ok"]) or late_counters.get("too_late"):
        print(f"bench_late: not every reading was processed: {base_counters} {late_counters}", file=sys.stderr)
        return 1
    figures = [*base]
    for figure, baseline in zip(tried, base):
        figures.append(Figure(figure.name, figure.value, figure.unit, baseline.name, baseline.value)
                       if figure.unit in ("readings/s", "µs/reading") else figure)
    kept_per_sensor = 62  # at the defaults: ceil((1 h + 10 s) / 60 s) + 1
    figures.append(Figure("kept windows at the defaults, per 10,000 sensors",
                          tried[-1].value * kept_per_sensor * 10_000 / 1e6, "MB"))
    print_figures(f"late readings, {args.sensors:,} sensors x {args.seconds} s, {WORKERS} workers", figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
