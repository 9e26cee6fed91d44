"""Producer throughput: the simulator unthrottled (backfill) against a seed-style loop, same Redis, same run."""

from __future__ import annotations

import walrus
from bench_common import START_MS, Figure, Stopwatch, backfill, bench_redis, parser, print_figures

from telemetry.keys import Keys
from telemetry.partitions import Layout, delete_pipeline, open_layout, partition_maxlen

SEED_STREAM = "bench-seed:event"


def simulator_rate(db: walrus.Database, layout: Layout, sensors: int, per_sensor: int) -> float:
    with Stopwatch() as watch:
        simulation = backfill(db, layout, sensors, per_sensor, maxlen=partition_maxlen(1_000_000, layout.count))
    written = sum(simulation.counts().values())
    assert sum(db.xlen(partition.readings) for partition in layout.partitions) == written
    return written / watch.seconds


def seed_style_rate(db: walrus.Database, readings: int) -> float:
    """The seed tutorial's producer: one walrus Stream.add (XADD) call per reading, to one stream."""
    stream = db.Stream(SEED_STREAM)
    with Stopwatch() as watch:
        for i in range(readings):
            stream.add({"sensor": f"bench-{i % 100:04d}", "ts": str(START_MS + i), "temperature_c": "21.3",
                        "humidity_pct": "45.1", "seq": str(i // 100), "v": "1"}, maxlen=1_000_000)
    return readings / watch.seconds


def main() -> None:
    args = parser(__doc__).parse_args()
    with bench_redis(args.redis_url) as url:
        db = walrus.Database.from_url(url, decode_responses=True)
        layout = open_layout(db, Keys("bench-sim"))
        fast = simulator_rate(db, layout, sensors=100, per_sensor=3000)
        seed = seed_style_rate(db, 30_000)
        delete_pipeline(db, layout)
        db.delete(SEED_STREAM)
    print_figures("producer", [Figure("simulator readings/s (1 process)", fast, "readings/s",
                                      "seed-style xadd loop", seed, ">= 50,000/s and >= 6x")], args.json)


if __name__ == "__main__":
    main()
