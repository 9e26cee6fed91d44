"""Other producers' streams, CSV replay and the alerts tail, end to end through the CLIs."""

from __future__ import annotations

import json
import random

import pandas as pd
import walrus

from telemetry.keys import Keys
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
    keys = Keys()
    assert db.hget(keys.counters, "processed") == "300"
    assert db.xlen(keys.dead_letter) == 0
    assert int(db.hget(keys.rolling("sensor1"), "count")) == 100
    export = run_cli("analytics", "export", "--fields", "seed", "--readings-stream", "app:event", "--out", "-",
                     "--redis-url", redis_url)
    assert export.returncode == 0 and len(export.stdout.strip().splitlines()) == 301


def test_exported_csv_replays_into_another_prefix_identically(redis_url, db, tmp_path):
    assert run_cli("producers", "r1", "r2", "--count", "200", "--start", str(START), "--dropout-rate", "0.01",
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
    replayed = pd.read_csv(__import__("io").StringIO(copy.stdout))
    columns = ["sensor", "ts_ms", "temperature_c", "humidity_pct", "seq"]
    assert replayed[columns].reset_index(drop=True).equals(original[columns].reset_index(drop=True))
    assert json.loads(result.stdout)["readings"] == original.groupby("sensor").size().to_dict()


def test_alerts_tail_prints_existing_alerts_as_json_and_text(redis_url, db):
    keys = Keys()
    db.xadd(keys.alerts, {"alert_id": "hot:s:1", "rule": "hot", "sensor": "s", "severity": "critical",
                          "state": "firing", "value": "41", "threshold": "40", "ts": str(START)})
    as_json = run_cli("consumers", "alerts", "--no-follow", "--json", "--redis-url", redis_url)
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["alert_id"] == "hot:s:1"
    as_text = run_cli("consumers", "alerts", "--no-follow", "--redis-url", redis_url)
    assert "FIRING" in as_text.stdout and "hot" in as_text.stdout and "2023-11-14T22:13:20.000Z" in as_text.stdout
