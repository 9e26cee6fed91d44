"""Runs a producer and aggregator processes, kills and freezes workers, and checks the result
against pandas and against one uninterrupted worker over the same readings."""

from __future__ import annotations

import io
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd
import redis

from consumers.rules import DEFAULT_RULES_TOML, parse_rules
from telemetry.connection import Client, RedisTarget, connect
from telemetry.keys import Keys
from telemetry.partitions import Layout, open_layout
from telemetry.schema import Reading
from telemetry.timeutil import stream_id_ms
from tests.aggregation_helpers import START, counters, drain, latest_windows, make_worker, outputs, pending
from tests.conftest import ROOT

WINDOW_MS = 2_000
PARTITIONS = 6
# The drill kills owners while they hold a claimed batch far more often than crashes happen: with
# the default --max-deliveries of 5 a batch caught five times running is dead-lettered as poison,
# which is that rule working (tests/test_aggregator.py), not what the drill is here to check.
WORKER_FLAGS = ("--start", "all", "--window", "2s", "--grace", "1s", "--idle", "3s", "--rolling", "10s",
                "--batch", "20", "--lease", "1500ms", "--settle", "300ms", "--partitions", str(PARTITIONS),
                "--max-deliveries", "1000")
# The built-in rules, with a silence short enough that an outage longer than it would show a
# false 'silent' alert if the pipeline judged silence on anything but the readings.
HARNESS_RULES = DEFAULT_RULES_TOML.replace('after = "30s"', 'after = "2s"')
ALERT_FIELDS = ["alert_id", "rule", "kind", "sensor", "severity", "state", "value", "threshold", "ts"]


def spawn(module: str, *args: str, env_extra: dict | None = None, stderr=subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})},
                            stdout=subprocess.DEVNULL, stderr=stderr, text=True)


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@dataclass
class Fleet:
    redis_url: str
    rules_path: str
    log_dir: Path  # each worker's log, as no one reads a pipe while the test runs
    worker_url: str | None = None  # workers may reach Redis through a proxy, or as an ACL user
    worker_env: dict[str, str] = field(default_factory=dict)  # e.g. the ACL user's password file
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)
    kills: int = 0
    kills_with_uncommitted_batch: int = 0
    started: int = 0

    @cached_property
    def db(self) -> Client:
        return connect(RedisTarget(self.redis_url, "test"), announce=False)

    @property
    def layout(self) -> Layout:
        return open_layout(self.db, Keys(), PARTITIONS)

    def start_worker(self, name: str) -> None:
        self.started += 1
        with open(self.log_dir / f"{name}.log", "a") as log:
            self.workers[name] = spawn("consumers", "aggregate", "--consumer", name, *WORKER_FLAGS,
                                       "--rules", self.rules_path, "--redis-url", self.worker_url or self.redis_url,
                                       env_extra=self.worker_env, stderr=log)

    def log_of(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text()

    def holds_uncommitted(self, name: str) -> bool:
        try:
            db = self.db
            return any(db.xpending_range(partition.readings, "aggregators", "-", "+", 1, consumername=name)
                       for partition in self.layout.partitions)
        except redis.RedisError:  # no group yet, or the server is restarting
            return False

    def catch_between_read_and_commit(self, name: str, rng: random.Random, tries: int = 200) -> None:
        """Freeze the worker until one freeze finds it holding a read but uncommitted batch."""
        process = self.workers[name]
        for _ in range(tries):
            process.send_signal(signal.SIGSTOP)
            if self.holds_uncommitted(name):
                return
            process.send_signal(signal.SIGCONT)
            time.sleep(rng.uniform(0.0, 0.01))

    def kill_worker(self, name: str) -> None:
        process = self.workers.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait()
        self.kills += 1
        if self.holds_uncommitted(name):
            self.kills_with_uncommitted_batch += 1

    def stop_all(self) -> None:
        for process in self.workers.values():
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)  # in case a freeze was interrupted
                process.send_signal(signal.SIGTERM)
        for process in self.workers.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def fleet_on(redis_url: str, folder: Path) -> Iterator[Fleet]:
    """A fleet with the harness rules, whose workers are stopped whatever the test's outcome."""
    rules = folder / "rules.toml"
    rules.write_text(HARNESS_RULES)
    workers = Fleet(redis_url, str(rules), folder)
    try:
        yield workers
    finally:
        workers.stop_all()


def run_kill_loop(fleet: Fleet, producer: subprocess.Popen, rng: random.Random, sizes: tuple[int, ...],
                  on_tick=None, min_kills: int = 0) -> None:
    """Kill a random worker every few tenths of a second (every other one frozen between read and
    commit first, some right after they started: during a takeover), restart it under a new name,
    and follow the fleet sizes given, one per second of producing; on a slow machine, go on killing
    while the workers catch up until `min_kills` is reached."""
    began = time.monotonic()
    while producer.poll() is None or fleet.kills < min_kills:
        time.sleep(rng.uniform(0.1, 0.3))
        if on_tick is not None:
            on_tick()
        size = sizes[min(len(sizes) - 1, int(time.monotonic() - began))]
        victim = rng.choice(sorted(fleet.workers))
        if fleet.kills % 2 == 0:
            fleet.catch_between_read_and_commit(victim, rng)
        fleet.kill_worker(victim)
        while len(fleet.workers) < size:
            fleet.start_worker(f"w{fleet.started}")
        while len(fleet.workers) > size:
            fleet.workers.pop(min(fleet.workers)).send_signal(signal.SIGTERM)


def arrivals_of(db, layout: Layout) -> list[tuple[Reading, int]]:
    """Each reading, partition by partition in stream order, with the time Redis took it in (its
    entry id's): a source that stalled and then sent its buffer shows a gap here, not in event time."""
    return [(Reading.decode(fields, entry_id), stream_id_ms(entry_id)) for partition in layout.partitions
            for entry_id, fields in db.xrange(partition.readings)]


def readings_of(db, layout: Layout) -> list[Reading]:
    return [reading for reading, _ in arrivals_of(db, layout)]


def wait_until_settled(fleet: Fleet, timeout_s: float) -> None:
    """Every window closed (the last ones on the wall clock, once caught up) and nothing pending."""
    db, layout = fleet.db, fleet.layout
    windows = {(r.sensor, r.ts_ms - r.ts_ms % WINDOW_MS) for r in readings_of(db, layout)}

    def settled() -> bool:
        totals = counters(db, layout)  # each window is emitted once, then once per revision
        return totals.get("windows_emitted", 0) - totals.get("revisions", 0) >= len(windows) and not pending(db, layout)

    wait_for(settled, timeout_s, "every window to close")


def reference_alerts(db, layout: Layout) -> pd.DataFrame:
    """What one uninterrupted worker makes of the same readings, in a group of its own."""
    worker = make_worker(db, layout, group="reference", consumer="reference", window_ms=WINDOW_MS, grace_ms=1000,
                         idle_ms=3000, rolling_ms=10_000, rules=parse_rules(HARNESS_RULES, "harness rules"))
    worker.log = io.StringIO()
    drain(worker, START + 10**12)
    return outputs(db, layout, "alerts", "reference")


def assert_reconciles(db, layout: Layout, late: bool = False, other_than: tuple[str, ...] = ()) -> None:
    """Every window exact (its latest revision), no revision emitted twice, alerts as one
    uninterrupted worker's, every seq once. `late`: the readings include late ones, which revise
    their windows; else none may come late. `other_than`: rules whose events are left out of the
    comparison (a silent rule fires while a producer is frozen, which the readings do not show)."""
    readings = readings_of(db, layout)
    expected = Counter((r.sensor, r.ts_ms - r.ts_ms % WINDOW_MS) for r in readings)
    aggregates = latest_windows(outputs(db, layout, "aggregates"))
    emitted = {(row.sensor, int(row.window_start)): int(row.count) for row in aggregates.itertuples()}
    differing = {key: (emitted.get(key), expected.get(key)) for key in set(emitted) | set(expected)
                 if emitted.get(key) != expected.get(key)}
    totals = counters(db, layout)
    assert not differing, f"window counts (emitted, produced) differ: {sorted(differing.items())[:20]}; {totals}"
    assert totals["processed"] == len(readings)
    assert not {"too_late", "duplicates", "dead_lettered", "lost_to_trim"} & set(totals), totals
    assert totals.get("missing_seq", 0) == 0 and (late or "late" not in totals), totals
    # Alerts raised by readings; silence after the run ends depends on how long the test waits.
    data_end = max(r.ts_ms for r in readings)
    alerts = outputs(db, layout, "alerts")
    alerts = alerts[(alerts.ts.astype(int) <= data_end) & ~alerts.rule.isin(other_than)]
    assert not alerts.empty, "the run fired no alert: it proves nothing about alerts"
    reference = reference_alerts(db, layout)
    reference = reference[(reference.ts.astype(int) <= data_end) & ~reference.rule.isin(other_than)]
    key = ["sensor", "ts", "alert_id", "state"]
    mine = alerts[ALERT_FIELDS].sort_values(key).reset_index(drop=True)
    theirs = reference[ALERT_FIELDS].sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(mine, theirs)
    seqs: dict[str, list[int]] = {}
    for reading in sorted(readings, key=lambda r: (r.sensor, r.seq)):
        seqs.setdefault(reading.sensor, []).append(reading.seq)
    for sensor, values in seqs.items():
        assert values == list(range(len(values))), f"{sensor}: seq gap or duplicate"
