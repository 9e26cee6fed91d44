"""Cluster benchmark: the fleet drain on a Redis Cluster of 1 master and of 3, in the same run,
and what `--wait-replicas 1` costs on 3 masters with a replica each.

What a cluster is for is capacity: each master serves the partitions whose slots it holds, so
the claims to check are that Redis CPU per reading does not grow with the number of masters and
that the load divides evenly among them. Each configuration is a fresh local cluster (AOF on);
a producer backfills SENSORS x READINGS, then 2 `--drain` workers process everything. Per master:
readings held, Redis CPU (INFO cpu of that node) per reading it holds, producing and aggregating
together. On a 2-core machine three masters, the producer and the workers share two cores, so
readings/s is no capacity figure here; CPU per reading and the split are.

Usage: PYTHONPATH=. python scripts/bench_cluster.py [--sensors N] [--readings N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from bench_fleet import (
    DRAIN_TIMEOUT_S,
    START_MS,
    Figure,
    PhaseFailed,
    PhaseTimeout,
    Processes,
    per_reading_us,
    render,
    start_workers,
    wait_for_exit,
)

from telemetry.local_cluster import PrivateRedisCluster

WORKERS = 2


def cpu_s(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def readings_held(client: redis.Redis) -> int:
    """Entries in the partition streams whose slots this master holds."""
    return sum(client.xlen(key) for key in client.scan_iter(match="*readings*", count=1000, _type="stream"))


@dataclass(frozen=True, slots=True)
class Setup:
    masters: int
    replicas: int = 0
    wait_replicas: int = 0

    @property
    def label(self) -> str:
        text = f"{self.masters} master{'s' if self.masters > 1 else ''}"
        if self.replicas:
            text += f" + {self.replicas} replica each"
        return text + (f", --wait-replicas {self.wait_replicas}" if self.wait_replicas else "")


SETUPS = (Setup(1), Setup(3), Setup(3, 1), Setup(3, 1, 1))


def run(setup: Setup, sensors: int, readings: int) -> list[Figure]:
    label = setup.label
    wait = ["--wait-replicas", str(setup.wait_replicas)] if setup.wait_replicas else []
    with tempfile.TemporaryDirectory(prefix="telemetry-cluster-") as folder:
        cluster = PrivateRedisCluster(Path(folder) / "cluster", masters=setup.masters, replicas=setup.replicas)
        try:
            cluster.start()
            nodes = {port: redis.Redis(port=port, decode_responses=True) for port in cluster.master_ports()}
            with Processes(Path(folder), cluster.url) as processes:
                before = {port: cpu_s(client) for port, client in nodes.items()}
                producer = processes.start("producer", ["producers", "--fleet", "f-", str(sensors), "--count",
                                                        str(readings), "--rate", "1", "--start", str(START_MS),
                                                        *wait])
                wait_for_exit([producer], f"{label} backfill", DRAIN_TIMEOUT_S)
                started = time.perf_counter()
                wait_for_exit(start_workers(processes, WORKERS, "--drain", *wait), f"{label} drain", DRAIN_TIMEOUT_S)
                elapsed = time.perf_counter() - started
            spent = {port: cpu_s(client) - before[port] for port, client in nodes.items()}
            held = {port: readings_held(client) for port, client in nodes.items()}
        finally:
            cluster.stop()
    total = sum(held.values())
    figures = [Figure(f"{label}: readings", total, "readings"),
               Figure(f"{label}: drain, {WORKERS} workers", total / elapsed, "readings/s"),
               Figure(f"{label}: Redis CPU, all masters", per_reading_us(sum(spent.values()), total), "µs/reading")]
    for number, port in enumerate(sorted(nodes), start=1):
        figures += [Figure(f"{label}: master {number} share", 100 * held[port] / total, "% of readings"),
                    Figure(f"{label}: master {number} Redis CPU", per_reading_us(spent[port], held[port]),
                           "µs/reading")]
    return figures


def ratios(figures: list[Figure]) -> list[Figure]:
    """3 masters against 1 (Redis CPU per reading), and --wait-replicas against none (drain rate)."""
    value = {figure.name: figure.value for figure in figures}
    pairs = ((SETUPS[1], SETUPS[0], "Redis CPU, all masters", "Redis CPU per reading, 3 masters vs 1"),
             (SETUPS[3], SETUPS[2], "drain, 2 workers", "drain rate, --wait-replicas 1 vs none"))
    return [Figure(text, value[f"{new.label}: {name}"] / value[f"{old.label}: {name}"], "x")
            for new, old, name, text in pairs
            if value.get(f"{new.label}: {name}") and value.get(f"{old.label}: {name}")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sensors", type=int, default=10_000, help="fleet size (default 10,000)")
    parser.add_argument("--readings", type=int, default=30, help="readings per sensor (default 30)")
    parser.add_argument("--json", action="store_true", help="print a JSON list of {name, value, unit}")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the children are killed on the way out
    figures: list[Figure] = []
    for setup in SETUPS:
        print(f"bench_cluster: {setup.label} ...", file=sys.stderr, flush=True)
        try:
            figures += run(setup, args.sensors, args.readings)
        except (PhaseTimeout, PhaseFailed) as failure:
            print(f"bench_cluster: {failure}", file=sys.stderr)
            figures.append(Figure(f"{setup.label}: FAILED", 1.0, "yes/no"))
    figures += ratios(figures)
    if args.json:
        print(json.dumps([{"name": f.name, "value": f.value, "unit": f.unit} for f in figures]))
        return 0
    print(f"cluster benchmark: {args.sensors:,} sensors x {args.readings} readings, {WORKERS} drain workers "
          f"({os.cpu_count()} cores, Python {sys.version.split()[0]})")
    for figure in figures:
        print(render(figure))
    return 0


if __name__ == "__main__":
    sys.exit(main())
