"""Producer throughput: the simulator unthrottled (backfill) against a seed-style loop, same Redis, same run."""

from __future__ import annotations

import walrus
from bench_common import START_MS, Figure, Stopwatch, backfill, bench_redis, parser, print_figures

from telemetry.keys import Keys


def simulator_rate(db: walrus.Database, sensors: int, per_sensor: int) -> float:
    keys = Keys("bench-sim")
    with Stopwatch() as watch:
        simulation = backfill(db, keys, sensors, per_sensor, maxlen=1_000_000)
    written = sum(simulation.counts().values())
    assert db.xlen(keys.readings) == written
    return written / watch.seconds


def seed_style_rate(db: walrus.Database, readings: int) -> float:
    """The seed tutorial's producer: one walrus Stream.add (XADD) call per reading."""
    stream = db.Stream(Keys("bench-seed").readings)
    with Stopwatch() as watch:
        for i in range(readings):
            stream.add({"sensor": f"bench-{i % 100:04d}", "ts": str(START_MS + i), "temperature_c": "21.3",
                        "humidity_pct": "45.1", "seq": str(i // 100), "v": "1"}, maxlen=1_000_000)
    return readings / watch.seconds


def main() -> None:
    args = parser(__doc__).parse_args()
    with bench_redis(args.redis_url) as url:
        db = walrus.Database.from_url(url, decode_responses=True)
        fast = simulator_rate(db, sensors=100, per_sensor=3000)
        seed = seed_style_rate(db, 30_000)
        for prefix in ("bench-sim", "bench-seed"):
            db.delete(*db.keys(f"{{{prefix}}}:*"))
    print_figures("producer", [Figure("simulator readings/s (1 process)", fast, "readings/s",
                                      "seed-style xadd loop", seed, ">= 50,000/s and >= 6x")], args.json)


if __name__ == "__main__":
    main()
