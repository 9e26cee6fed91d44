"""Runs a producer and several aggregator processes, kills workers with SIGKILL, and checks the result."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import pandas as pd
import redis
import walrus

from telemetry.keys import Keys
from telemetry.schema import Reading
from tests.conftest import ROOT

WINDOW_MS = 2_000
WORKER_FLAGS = ("--start", "all", "--window", "2s", "--grace", "1s", "--claim-idle", "500ms",
                "--claim-every", "300ms", "--idle", "3s", "--batch", "20")


def spawn(module: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@dataclass
class Fleet:
    redis_url: str
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)
    kills: int = 0
    kills_with_uncommitted_batch: int = 0

    @property
    def db(self) -> walrus.Database:
        return walrus.Database.from_url(self.redis_url, decode_responses=True)

    def start_worker(self, name: str) -> None:
        self.workers[name] = spawn("consumers", "aggregate", "--consumer", name, *WORKER_FLAGS,
                                   "--redis-url", self.redis_url)

    def _holds_uncommitted(self, name: str, keys: Keys) -> bool:
        try:
            return bool(self.db.xpending_range(keys.readings, "aggregators", "-", "+", 1, consumername=name))
        except redis.RedisError:  # no group yet, or the server is restarting in the fault test
            return False

    def catch_between_read_and_commit(self, name: str, keys: Keys, rng: random.Random, tries: int = 200) -> None:
        """Freeze the worker until one freeze finds it holding a read but uncommitted batch."""
        process = self.workers[name]
        for _ in range(tries):
            process.send_signal(signal.SIGSTOP)
            if self._holds_uncommitted(name, keys):
                return
            process.send_signal(signal.SIGCONT)
            time.sleep(rng.uniform(0.0, 0.01))

    def kill_worker(self, name: str, keys: Keys) -> None:
        process = self.workers[name]
        process.send_signal(signal.SIGKILL)
        process.wait()
        self.kills += 1
        if self._holds_uncommitted(name, keys):
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


def run_kill_loop(fleet: Fleet, keys: Keys, producer: subprocess.Popen, rng: random.Random,
                  max_kills: int | None = None, on_tick=None) -> None:
    while producer.poll() is None:
        time.sleep(rng.uniform(0.2, 0.6))
        if on_tick is not None:
            on_tick()
        if max_kills is not None and fleet.kills >= max_kills:
            continue
        victim = rng.choice(sorted(fleet.workers))
        if fleet.kills % 2 == 0:
            fleet.catch_between_read_and_commit(victim, keys, rng)
        fleet.kill_worker(victim, keys)
        del fleet.workers[victim]
        # come back under the same name (resumes its pending) or a new one (others must claim)
        fleet.start_worker(victim if rng.random() < 0.5 else f"{victim}-r{fleet.kills}")


def expected_windows(db, keys: Keys) -> Counter:
    counts: Counter = Counter()
    for entry_id, fields in db.xrange(keys.readings):
        reading = Reading.decode(fields, entry_id)
        counts[(reading.sensor, reading.ts_ms - reading.ts_ms % WINDOW_MS)] += 1
    return counts


def assert_reconciles(db, keys: Keys) -> None:
    """Every window counted exactly; nothing emitted twice; every seq present once."""
    expected = expected_windows(db, keys)
    aggregates = pd.DataFrame([fields for _, fields in db.xrange(keys.aggregates)])
    assert not aggregates.duplicated(["sensor", "window_start"]).any(), "an aggregate was emitted twice"
    emitted = {(row.sensor, int(row.window_start)): int(row.count) for row in aggregates.itertuples()}
    assert emitted == dict(expected), "window counts differ from the readings produced"
    alerts = [fields for _, fields in db.xrange(keys.alerts)]
    pairs = Counter((alert["alert_id"], alert["state"]) for alert in alerts)
    assert all(n == 1 for n in pairs.values()), "an alert transition was emitted twice"
    counters = db.hgetall(keys.counters)
    assert int(counters["processed"]) == sum(expected.values())
    assert "late" not in counters and "duplicates" not in counters
    assert int(counters.get("missing_seq", 0)) == 0, "a reading went missing"
    seqs: dict[str, list[int]] = {}
    for _, fields in db.xrange(keys.readings):
        seqs.setdefault(fields["sensor"], []).append(int(fields["seq"]))
    for sensor, values in seqs.items():
        assert values == list(range(len(values))), f"{sensor}: seq gap or duplicate"


def wait_until_all_windows_closed(db, keys: Keys, timeout_s: float) -> None:
    expected = expected_windows(db, keys)

    def closed() -> bool:
        return db.xlen(keys.aggregates) >= len(expected) and db.xpending(keys.readings, "aggregators")["pending"] == 0

    wait_for(closed, timeout_s, "every window to close")
