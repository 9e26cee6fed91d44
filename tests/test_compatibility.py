"""Other producers' streams, CSV replay and the alerts tail, end to end through the CLIs."""

from __future__ import annotations

import io
import itertools
import json
import random

import pandas as pd
import walrus

from consumers import alerts_tail
from consumers.rolling_view import rolling_views
from telemetry.keys import Keys
from telemetry.partitions import open_layout
from telemetry.records import AlertEvent
from tests.aggregation_helpers import START
from tests.conftest import run_cli


def test_seed_tutorial_stream_feeds_the_pipeline_without_code_changes(redis_url, db):
    """The seed's producer: walrus Stream.add of sensor_id/temp/humidity into app:event."""
    stream = walrus.Database.from_url(redis_url).Stream("app:event")
    rng = random.Random(1)
    for index in range(300):
        stream.add({"sensor_id": f"sensor{index % 3 + 1}", "temp": rng.random(), "humidity": rng.random()})
    result = run_cli("consumers", "aggregate", "--fields", "seed", "--stream", "app:event", "--start", "all",
                     "--drain", "--redis-url", redis_url)
    assert result.returncode == 0, result.stderr
    [partition] = open_layout(db, Keys(readings_override="app:event")).partitions
    keys = partition.group("aggregators")
    assert partition.readings == "app:event" and keys.counters.startswith("{app:event}:")
    assert db.hget(keys.counters, "processed") == "300"
    assert db.xlen(keys.dead_letter) == 0
    assert rolling_views(db, [(keys, ["sensor1"])])["sensor1"].count == 100
    export = run_cli("analytics", "export", "--fields", "seed", "--stream", "app:event", "--out", "-",
                     "--redis-url", redis_url)
    assert export.returncode == 0 and len(export.stdout.strip().splitlines()) == 301
    status = run_cli("consumers", "status", "--json", "--stream", "app:event", "--redis-url", redis_url)
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert [(row["stream"], row["lag_entries"], row["pending"]) for row in report["partitions"]] == [("app:event", 0, 0)]
    assert report["length"] == 300 and report["counters"]["processed"] == 300


def test_exported_csv_replays_into_another_prefix_identically(redis_url, db, tmp_path):
    assert run_cli("producers", "r1", "r2", "--count", "200", "--start", str(START), "--dropout-rate", "36",
                   "--redis-url", redis_url).returncode == 0
    exported = tmp_path / "readings.csv"
    assert run_cli("analytics", "export", "--out", str(exported), "--redis-url", redis_url).returncode == 0
    shuffled = pd.read_csv(exported).sample(frac=1, random_state=3)
    shuffled.to_csv(exported, index=False)  # replay must restore event-time order
    result = run_cli("producers", "--from-csv", str(exported), "--prefix", "replayed", "--json",
                     "--redis-url", redis_url)
    assert result.returncode == 0, result.stderr
    original = pd.read_csv(exported).sort_values(["ts_ms", "sensor"])
    copy = run_cli("analytics", "export", "--prefix", "replayed", "--out", "-", "--redis-url", redis_url)
    replayed = pd.read_csv(io.StringIO(copy.stdout))
    for _, rows in replayed.groupby("sensor"):
        assert rows["ts_ms"].is_monotonic_increasing  # a sensor's partition keeps its event-time order
    columns = ["sensor", "ts_ms", "temperature_c", "humidity_pct", "seq"]
    replayed = replayed.sort_values(["ts_ms", "sensor"])  # partitions interleave by arrival, not event time
    assert replayed[columns].reset_index(drop=True).equals(original[columns].reset_index(drop=True))
    assert json.loads(result.stdout)["readings"] == original.groupby("sensor").size().to_dict()


def add_alerts(db, layout, sensors: list[str], first: int = 0) -> list[str]:
    """One firing alert per sensor, each in its sensor's partition's alert stream, one millisecond
    apart (within one millisecond, ids of different streams do not say which came first)."""
    ids = []
    for number, sensor in enumerate(sensors, start=first):
        partition = layout.partition_for(sensor)
        event = AlertEvent(f"hot:{sensor}:{number}", "hot", "threshold", sensor, "critical", "firing", 41.0 + number,
                           40.0, START + number, "°C", {"mean": 39.5})
        meta = ["partition", str(partition.index), "epoch", "1", "batch", str(number + 1), "emitted_ms", str(START)]
        fields = event.fields() + meta
        ids.append(db.xadd(partition.group("aggregators").alerts, dict(zip(fields[::2], fields[1::2])),
                           id=f"{START + number}-0"))
    return ids


def test_alerts_tail_prints_existing_alerts_of_every_partition_in_id_order(redis_url, db):
    layout = open_layout(db, Keys(), 4)
    sensors = ["a1", "b2", "c3", "d4", "a1", "e5"]
    assert len({layout.partition_for(sensor).index for sensor in sensors}) > 1
    add_alerts(db, layout, sensors)
    as_json = run_cli("consumers", "alerts", "--no-follow", "--json", "--redis-url", redis_url)
    assert as_json.returncode == 0, as_json.stderr
    printed = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [alert["alert_id"] for alert in printed] == [f"hot:{s}:{n}" for n, s in enumerate(sensors)]
    assert printed[0]["partition"] == str(layout.partition_for("a1").index)
    as_text = run_cli("consumers", "alerts", "--no-follow", "--redis-url", redis_url)
    assert "FIRING" in as_text.stdout and "hot" in as_text.stdout and "2023-11-14T22:13:20.000Z" in as_text.stdout


def test_alerts_tail_follows_new_alerts_of_every_partition(db):
    layout = open_layout(db, Keys(), 4)
    add_alerts(db, layout, ["old-1", "old-2"])
    streams = [keys.alerts for keys in layout.groups("aggregators")]
    start = alerts_tail.start_ids(db, streams, from_start=False)
    new = ["n1", "n2", "n3", "n4", "n5"]
    add_alerts(db, layout, new, first=2)
    followed = alerts_tail.follow(db, start, lambda: False, block_ms=100)
    assert [fields["sensor"] for _, fields in itertools.islice(followed, len(new))] == new
