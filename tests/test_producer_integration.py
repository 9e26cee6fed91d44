"""The producer against a real redis-server: trimming, fleets, restarts and signals."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict

import walrus

from producers.faults import FaultRates
from producers.simulation import Simulation, SimulationSettings
from producers.trim_guard import TrimGuard
from producers.writer import StreamWriter
from telemetry.schema import FieldMap, Reading
from tests.conftest import ROOT, run_cli

START = 1_700_000_000_000


def readings_by_sensor(db, keys) -> dict[str, list[Reading]]:
    grouped = defaultdict(list)
    for entry_id, fields in db.xrange(keys.readings):
        reading = Reading.decode(fields, entry_id)
        grouped[reading.sensor].append(reading)
    return grouped


def assert_no_seq_gap(grouped):
    for sensor, readings in grouped.items():
        seqs = [r.seq for r in readings]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"{sensor} has a gap or duplicate"


def test_backfill_writes_count_per_sensor_spaced_one_over_rate(redis_url, db, keys):
    result = run_cli("producers", "a", "b", "--count", "50", "--rate", "2", "--start", str(START),
                     "--redis-url", redis_url, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["readings"] == {"a": 50, "b": 50}
    grouped = readings_by_sensor(db, keys)
    assert [r.ts_ms for r in grouped["a"]] == [START + 500 * i for i in range(50)]
    assert_no_seq_gap(grouped)


def test_same_name_and_seed_write_the_same_values(redis_url, db, keys):
    args = ("kitchen", "--count", "20", "--start", str(START), "--seed", "9", "--redis-url", redis_url)
    assert run_cli("producers", *args).returncode == 0
    first = [(r.temperature_c, r.humidity_pct) for r in readings_by_sensor(db, keys)["kitchen"]]
    db.flushall()
    assert run_cli("producers", *args).returncode == 0
    second = [(r.temperature_c, r.humidity_pct) for r in readings_by_sensor(db, keys)["kitchen"]]
    assert first == second and len(first) == 20


def test_maxlen_trims_approximately(redis_url, db, keys):
    result = run_cli("producers", "--fleet", "t-", "10", "--count", "500", "--start", str(START),
                     "--maxlen", "1000", "--redis-url", redis_url)
    assert result.returncode == 0, result.stderr
    length = db.xlen(keys.readings)
    assert 1000 <= length < 5000 - 1000


def test_a_fleet_of_ten_thousand_sensors_runs_in_one_process(redis_url, db, keys):
    result = run_cli("producers", "--fleet", "greenhouse-", "10000", "--count", "3", "--start", str(START),
                     "--redis-url", redis_url, "--json")
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout)["readings"]
    assert len(counts) == 10_000 and set(counts.values()) == {3}
    assert db.xlen(keys.readings) == 30_000
    assert db.hget(keys.producer_seq, "greenhouse-10000") == "2"


def test_restarted_producer_continues_seq(redis_url, db, keys):
    for start in (START, START + 60_000):
        assert run_cli("producers", "s", "--count", "5", "--start", str(start), "--redis-url", redis_url).returncode == 0
    seqs = [r.seq for r in readings_by_sensor(db, keys)["s"]]
    assert seqs == list(range(10))


def test_resend_after_lost_reply_writes_nothing_twice(db, keys):
    writer = StreamWriter(db, keys, FieldMap(), maxlen=0)
    rows = ["\t".join(Reading("s", START + i, 20.0, 50.0, i).encode().values()) for i in range(6)]
    assert writer.write(rows[:5]).appended == 5
    again = writer.write(rows)
    assert (again.appended, again.skipped_as_already_written) == (1, 5)
    assert db.xlen(keys.readings) == 6


def test_redis_restart_mid_run_leaves_no_seq_gap(redis_server, redis_url, keys):
    producer = subprocess.Popen(
        [sys.executable, "-m", "producers", "--fleet", "r-", "20", "--rate", "50", "--duration", "6",
         "--redis-url", redis_url], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = walrus.Database.from_url(redis_url, decode_responses=True)
    deadline = time.monotonic() + 20
    while client.xlen(keys.readings) < 500 and time.monotonic() < deadline:
        time.sleep(0.05)
    redis_server.restart()
    _, err = producer.communicate(timeout=60)
    assert producer.returncode == 0, err
    assert "retrying" in err  # the outage was seen, not dodged
    grouped = readings_by_sensor(walrus.Database.from_url(redis_url, decode_responses=True), keys)
    assert len(grouped) == 20
    assert_no_seq_gap(grouped)
    assert all(r[0].seq == 0 for r in grouped.values())


def test_sigterm_flushes_and_prints_counts(redis_url, keys):
    producer = subprocess.Popen(
        [sys.executable, "-m", "producers", "x", "y", "--rate", "20", "--redis-url", redis_url, "--json"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    client = walrus.Database.from_url(redis_url, decode_responses=True)
    deadline = time.monotonic() + 20
    while client.xlen(keys.readings) < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    producer.send_signal(signal.SIGTERM)
    out, err = producer.communicate(timeout=20)
    assert producer.returncode == 0, err
    report = json.loads(out)
    assert report["stopped_by_signal"] is True
    assert sum(report["readings"].values()) == client.xlen(keys.readings)


def test_trim_guard_warns_once_per_interval_naming_the_group(db, keys):
    writer = StreamWriter(db, keys, FieldMap(), maxlen=0)
    db.xgroup_create(keys.readings, "slow", id="0", mkstream=True)
    guard = TrimGuard(db, keys.readings, maxlen=100, check_every_ms=0, warn_every_ms=60_000, log=io.StringIO())
    simulation = Simulation(SimulationSettings(("s",), count=80, backfill_start_ms=START, faults=FaultRates()),
                            writer, FieldMap(), START, [None])
    simulation.step(START + 10**9)
    writer.flush()
    warning = guard.step(START + 10**9)
    assert warning is not None and "'slow'" in warning and "80 entries" in warning
    assert guard.step(START + 10**9 + 1000) is None
    assert guard.step(START + 10**9 + 61_000) is not None


def test_bad_input_exits_2_with_one_line(redis_url, tmp_path):
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("sensor,ts_ms\nx,1\n")
    cases = [
        ("bad name!",),
        ("s", "--rate", "-2"),
        ("s", "--count", "zero"),
        ("s", "--spike-rate", "1.5"),
        ("s", "--start", "yesterday-ish"),
        ("--from-csv", str(tmp_path / "missing.csv")),
        ("--from-csv", str(bad_csv)),
        ("s", "--redis-url", "http://nope"),
    ]
    for args in cases:
        result = run_cli("producers", *args, "--redis-url", redis_url) if "--redis-url" not in args else run_cli(
            "producers", *args)
        assert result.returncode == 2, (args, result.stderr)
        lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("redis:")]
        assert len(lines) == 1 and "Traceback" not in result.stderr, (args, result.stderr)
