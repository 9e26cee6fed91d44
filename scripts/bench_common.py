"""Shared by the benchmark scripts: a private Redis, timing, and one result format for `make bench`."""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Self

from producers.simulation import Simulation, SimulationSettings
from producers.writer import StreamWriter
from telemetry.embedded import PrivateRedisServer
from telemetry.partitions import Layout
from telemetry.schema import FieldMap

START_MS = 1_700_000_000_000


@dataclass(frozen=True, slots=True)
class Figure:
    name: str
    value: float
    unit: str
    baseline_name: str = ""
    baseline: float | None = None
    target: str = ""

    @property
    def ratio(self) -> float | None:
        if not self.baseline:
            return None
        return self.value / self.baseline


def parser(description: str) -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(description=description)
    result.add_argument("--redis-url", help="benchmark against this server (default: a private redis-server)")
    result.add_argument("--json", action="store_true", help="print figures as JSON (for make bench)")
    return result


@contextlib.contextmanager
def bench_redis(url: str | None) -> Iterator[str]:
    """A private server in a temporary folder, so a benchmark never touches anyone's data."""
    if url:
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="telemetry-bench-") as folder, PrivateRedisServer(Path(folder)) as server:
        yield server.url


class Stopwatch:
    def __enter__(self) -> Self:
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc_info) -> None:
        self.seconds = time.perf_counter() - self.started


def machine() -> str:
    import os

    return f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"


def print_figures(title: str, figures: list[Figure], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"title": title, "machine": machine(),
                          "figures": [{**asdict(f), "ratio": f.ratio} for f in figures]}))
        return
    print(f"{title} ({machine()})")
    for figure in figures:
        line = f"  {figure.name:<38} {figure.value:>12,.1f} {figure.unit}"
        if figure.baseline is not None:
            line += f"   vs {figure.baseline_name} {figure.baseline:,.1f}: {figure.ratio:.1f}x"
        if figure.target:
            line += f"   (target {figure.target})"
        print(line)


def backfill(db, layout: Layout, sensors: int, per_sensor: int, maxlen: int = 0) -> Simulation:
    """Write per_sensor readings for each of `sensors` simulated sensors as fast as Redis takes them;
    `maxlen` is per partition stream."""
    names = tuple(f"bench-{i:04d}" for i in range(sensors))
    simulation = Simulation(SimulationSettings(names, count=per_sensor, backfill_start_ms=START_MS),
                            StreamWriter(db, layout, FieldMap(), maxlen), FieldMap(), START_MS, [None] * sensors)
    while not simulation.finished(START_MS + 10**12):
        simulation.step(START_MS + 10**12)
    simulation.writer.flush()
    return simulation
