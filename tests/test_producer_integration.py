"""The producer against a real redis-server: partitions, trimming, fleets, restarts and signals."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from itertools import pairwise

import redis
import walrus

from producers.faults import FaultRates
from producers.simulation import Simulation, SimulationSettings
from producers.transaction_append import Part
from producers.trim_guard import TrimGuard
from producers.writer import StreamWriter
from telemetry.keys import Keys
from telemetry.partitions import Layout, open_layout
from telemetry.schema import FieldMap, Reading
from tests.conftest import ROOT, run_cli

START = 1_700_000_000_000


def readings_by_sensor(db) -> dict[str, list[Reading]]:
    """Each sensor's readings, from the partition they must all be in."""
    layout = open_layout(db, Keys())
    grouped = defaultdict(list)
    for partition in layout.partitions:
        for entry_id, fields in db.xrange(partition.readings):
            reading = Reading.decode(fields, entry_id)
            assert layout.partition_for(reading.sensor) == partition
            grouped[reading.sensor].append(reading)
    return grouped


def total_length(db, layout: Layout) -> int:
    return sum(db.xlen(partition.readings) for partition in layout.partitions)


def rows_of(readings: list[Reading]) -> list[str]:
    return ["\t".join(reading.encode().values()) for reading in readings]


def assert_no_seq_gap(grouped):
    for sensor, readings in grouped.items():
        seqs = [r.seq for r in readings]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"{sensor} has a gap or duplicate"


def test_backfill_writes_count_per_sensor_spaced_one_over_rate(redis_url, db):
    result = run_cli("producers", "a", "b", "--count", "50", "--rate", "2", "--start", str(START),
                     "--redis-url", redis_url, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["readings"] == {"a": 50, "b": 50}
    grouped = readings_by_sensor(db)
    first = grouped["a"][0].ts_ms
    assert START <= first < START + 500  # the sensor's own phase within the period
    assert [r.ts_ms for r in grouped["a"]] == [first + 500 * i for i in range(50)]
    assert_no_seq_gap(grouped)


def test_same_name_and_seed_write_the_same_values(redis_url, db):
    args = ("kitchen", "--count", "20", "--start", str(START), "--seed", "9", "--redis-url", redis_url)
    assert run_cli("producers", *args).returncode == 0
    first = [(r.temperature_c, r.humidity_pct) for r in readings_by_sensor(db)["kitchen"]]
    db.flushall()
    assert run_cli("producers", *args).returncode == 0
    second = [(r.temperature_c, r.humidity_pct) for r in readings_by_sensor(db)["kitchen"]]
    assert first == second and len(first) == 20


def test_maxlen_is_the_pipelines_total_shared_by_its_partitions(redis_url, db):
    result = run_cli("producers", "--fleet", "t-", "12", "--count", "500", "--start", str(START),
                     "--maxlen", "1000", "--partitions", "4", "--redis-url", redis_url)
    assert result.returncode == 0, result.stderr
    lengths = [db.xlen(partition.readings) for partition in open_layout(db, Keys()).partitions]
    assert all(250 <= length < 250 + 200 for length in lengths), lengths  # MAXLEN ~ trims whole nodes


def test_a_fleet_of_ten_thousand_sensors_runs_in_one_process(redis_url, db):
    result = run_cli("producers", "--fleet", "greenhouse-", "10000", "--count", "3", "--start", str(START),
                     "--redis-url", redis_url, "--json")
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout)["readings"]
    assert len(counts) == 10_000 and set(counts.values()) == {3}
    layout = open_layout(db, Keys())
    assert total_length(db, layout) == 30_000 and all(db.xlen(p.readings) for p in layout.partitions)
    assert db.hget(layout.partition_for("greenhouse-10000").producer_seq, "greenhouse-10000").split()[0] == "2"


def test_restarted_producer_continues_seq(redis_url, db):
    for start in (START, START + 60_000):
        assert run_cli("producers", "s", "--count", "5", "--start", str(start), "--redis-url", redis_url).returncode == 0
    seqs = [r.seq for r in readings_by_sensor(db)["s"]]
    assert seqs == list(range(10))


def test_a_producer_killed_between_seq_saves_restarts_without_a_gap_or_a_repeat(redis_url, db):
    """Seqs are saved every few seconds, not per batch: the restart reads the stream past the save."""
    args = ("--fleet", "c-", "20", "--rate", "50", "--redis-url", redis_url)
    producer = subprocess.Popen([sys.executable, "-m", "producers", *args], cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.DEVNULL)
    layout = open_layout(db, Keys())
    deadline = time.monotonic() + 20
    while total_length(db, layout) < 1000 and time.monotonic() < deadline:
        time.sleep(0.05)
    producer.kill()
    producer.wait()
    killed_at = {sensor: len(readings) for sensor, readings in readings_by_sensor(db).items()}
    assert min(killed_at.values()) >= 40, "the producer did not write past its first save"
    assert run_cli("producers", *args, "--duration", "1").returncode == 0
    grouped = readings_by_sensor(db)
    assert_no_seq_gap(grouped)
    assert all(len(grouped[sensor]) > count for sensor, count in killed_at.items())


class LostReplies:
    """A client whose pipelines run their commands but lose the reply, `times` times."""

    def __init__(self, db, times: int) -> None:
        self.db, self.times = db, times

    def pipeline(self, **kwargs):
        pipeline = self.db.pipeline(**kwargs)
        execute = pipeline.execute

        def execute_and_lose_reply(*args, **kw):
            replies = execute(*args, **kw)
            if self.times:
                self.times -= 1
                raise redis.ConnectionError("reply lost")
            return replies

        pipeline.execute = execute_and_lose_reply
        return pipeline


def test_resend_after_lost_reply_writes_nothing_twice(db):
    layout = open_layout(db, Keys(), 4)
    rows = rows_of([Reading(f"s{i % 5}", START + i, 20.0, 50.0, i // 5) for i in range(40)])
    assert len({layout.partition_for(f"s{i}") for i in range(5)}) > 1
    writer = StreamWriter(db, layout, FieldMap(), maxlen=0, log=io.StringIO())
    writer.db = LostReplies(db, times=1)
    resent = writer.write(rows)
    assert (resent.appended, resent.skipped_as_already_written) == (0, 40)  # the first send had written them all
    assert total_length(db, layout) == 40 and "retrying 40 unconfirmed readings" in writer.log.getvalue()
    assert writer.write(rows[:5]).appended == 5  # the same rows in a new batch are new readings
    assert total_length(db, layout) == 45


class TransactionRunsReplyLost:
    """In place of the writer's watching connection: the transaction reaches Redis and runs, then
    the connection drops before its reply is read."""

    def __init__(self, connection, db, marker: str, batch: int) -> None:
        self.connection, self.db, self.marker, self.batch = connection, db, marker, batch
        self._sock = connection._sock

    def send_packed_command(self, payload, check_health=True) -> None:
        self.connection.send_packed_command(payload, check_health=check_health)
        deadline = time.monotonic() + 10
        while self.db.get(self.marker) != str(self.batch) and time.monotonic() < deadline:
            time.sleep(0.01)

    def read_response(self):
        raise redis.ConnectionError("connection dropped before the reply")

    def disconnect(self) -> None:
        self.connection.disconnect()


def fleet_rows(batch: int, sensors: int = 20) -> list[str]:
    return rows_of([Reading(f"s{i}", START + batch * 1000 + i, 20.0, 50.0, batch) for i in range(sensors)])


def watching_writer(db) -> tuple[StreamWriter, Layout]:
    """A writer past its first batch (which saves every sensor's seq through the script), so the
    next batch goes as a watched transaction."""
    layout = open_layout(db, Keys(), 4)
    writer = StreamWriter(db, layout, FieldMap(), maxlen=0, log=io.StringIO())
    writer.write(fleet_rows(0))
    assert writer.write(fleet_rows(1)).appended == 20 and writer.transaction.connection is not None
    return writer, layout


def test_a_transaction_whose_reply_is_lost_is_resent_through_the_script_and_written_once(db):
    writer, layout = watching_writer(db)
    marker = layout.partition_for("s0").producer_batch(writer.producer_id)
    writer.transaction.connection = TransactionRunsReplyLost(writer.transaction.connection, db, marker, 3)
    resent = writer.write(fleet_rows(2))
    assert (resent.appended, resent.skipped_as_already_written) == (0, 20)  # the transaction had written them
    assert total_length(db, layout) == 60
    assert writer.write(fleet_rows(3)).appended == 20 and total_length(db, layout) == 80
    assert_no_seq_gap(readings_by_sensor(db))


def test_a_transaction_that_reaches_redis_after_its_resend_writes_nothing(db):
    """What a paused Redis or a slow network allows: the writer gave up on a transaction and resent
    its batch through the script, and then the transaction arrives. Its WATCH stops it."""
    writer, layout = watching_writer(db)
    held = writer.transaction.connection
    rows = fleet_rows(2)
    parts = writer._by_partition(rows)
    calls, _ = writer._calls(parts, save_all=False)
    late = writer.transaction.transaction(writer.batch_number, [
        Part(partition.readings, partition.producer_batch(writer.producer_id), part_rows)
        for partition, (part_rows, _) in parts.items()])
    writer.transaction.connection = None  # given up on, as after a timeout...
    writer._send(calls, len(rows))  # ... and the batch resent through the script
    held.send_packed_command([late.payload])
    replies = [held.read_response() for _ in range(late.replies)]
    assert replies[-2] is None  # EXEC refused: a watched marker moved
    assert total_length(db, layout) == 60
    assert_no_seq_gap(readings_by_sensor(db))


def test_a_batch_through_the_script_leaves_the_next_transaction_unhindered(db):
    """A script batch (here a new sensor's first seq to save) sets markers the transaction's
    connection WATCHes: the next batch must still go as a transaction, not abort and resend."""
    writer, layout = watching_writer(db)
    assert writer.write(rows_of([Reading("newcomer", START, 20.0, 50.0, 0)])).appended == 1
    scripted = []
    send = writer._send
    writer._send = lambda calls, readings: scripted.append(readings) or send(calls, readings)
    assert writer.write(fleet_rows(2)).appended == 20
    assert scripted == [] and total_length(db, layout) == 61


def test_an_acl_user_without_transactions_writes_through_the_script(redis_url, db):
    admin = redis.Redis.from_url(redis_url)
    admin.acl_setuser("writer", enabled=True, passwords=["+w-secret"], categories=["+@all", "-@transaction"],
                      keys=["*"])
    try:
        limited = walrus.Database.from_url(redis_url.replace("redis://", "redis://writer:w-secret@"),
                                           decode_responses=True)
        layout = open_layout(limited, Keys(), 4)
        writer = StreamWriter(limited, layout, FieldMap(), maxlen=0, log=io.StringIO())
        for batch in range(4):
            assert writer.write(fleet_rows(batch)).appended == 20
        assert writer.transaction is None and writer.log.getvalue().count("refuses transactions") == 1
        assert total_length(db, layout) == 80
        assert_no_seq_gap(readings_by_sensor(db))
    finally:
        admin.acl_deluser("writer")


def test_redis_restart_mid_run_leaves_no_seq_gap(redis_server, redis_url):
    producer = subprocess.Popen(
        [sys.executable, "-m", "producers", "--fleet", "r-", "20", "--rate", "50", "--duration", "6",
         "--redis-url", redis_url], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = walrus.Database.from_url(redis_url, decode_responses=True)
    layout = open_layout(client, Keys())
    deadline = time.monotonic() + 20
    while total_length(client, layout) < 500 and time.monotonic() < deadline:
        time.sleep(0.05)
    redis_server.restart()
    _, err = producer.communicate(timeout=60)
    assert producer.returncode == 0, err
    assert "retrying" in err  # the outage was seen, not dodged
    grouped = readings_by_sensor(walrus.Database.from_url(redis_url, decode_responses=True))
    assert len(grouped) == 20
    assert_no_seq_gap(grouped)
    assert all(r[0].seq == 0 for r in grouped.values())


def test_sigterm_flushes_and_prints_counts(redis_url):
    producer = subprocess.Popen(
        [sys.executable, "-m", "producers", "x", "y", "--rate", "20", "--redis-url", redis_url, "--json"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    client = walrus.Database.from_url(redis_url, decode_responses=True)
    layout = open_layout(client, Keys())
    deadline = time.monotonic() + 20
    while total_length(client, layout) < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    producer.send_signal(signal.SIGTERM)
    out, err = producer.communicate(timeout=20)
    assert producer.returncode == 0, err
    report = json.loads(out)
    assert report["stopped_by_signal"] is True
    assert sum(report["readings"].values()) == total_length(client, layout)


def test_trim_guard_warns_once_per_interval_naming_the_group(db):
    layout = open_layout(db, Keys(), 4)
    writer = StreamWriter(db, layout, FieldMap(), maxlen=0)
    db.xgroup_create(layout.partition_for("s").readings, "slow", id="0", mkstream=True)
    guard = TrimGuard(db, [partition.readings for partition in layout.partitions], maxlen=100, check_every_ms=0,
                      warn_every_ms=60_000, log=io.StringIO())
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
        ("s", "--spike-rate", "-1"),
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


def test_a_backfill_that_will_pass_maxlen_says_so_first_with_the_numbers(redis_url):
    result = run_cli("producers", "--fleet", "b-", "10", "--start=-1h", "--maxlen", "1000", "--redis-url", redis_url)
    assert result.returncode == 0, result.stderr
    warning = next(line for line in result.stderr.splitlines() if "WARNING" in line)
    assert "36,000 readings" in warning and "keeps 1,000" in warning and "--maxlen 36000" in warning


def test_faults_apply_only_to_the_sensors_named_faulty(redis_url, db):
    result = run_cli("producers", "calm", "wild", "--count", "300", "--start", str(START), "--spike-rate", "720",
                     "--dropout-rate", "30", "--faulty", "wild", "--redis-url", redis_url)
    assert result.returncode == 0, result.stderr
    by_sensor = readings_by_sensor(db)
    calm = [reading.temperature_c for reading in by_sensor["calm"]]
    wild = [reading.temperature_c for reading in by_sensor["wild"]]
    assert len(calm) == 300 and max(abs(b - a) for a, b in pairwise(calm)) < 2.0
    assert len(wild) < 300 and max(abs(b - a) for a, b in pairwise(wild)) > 5.0
    bad = run_cli("producers", "calm", "--faulty", "nobody", "--redis-url", redis_url)
    assert bad.returncode == 2 and "--faulty nobody" in bad.stderr
