"""`status` and the demo's live view over the partitioned layout: totals, one row per partition,
other groups, warnings, and each sensor read in its own partition."""

from __future__ import annotations

import io
import json

from rich.console import Console

from analytics.dashboard import collect_snapshot, plain_summary, rates_between, render
from consumers.lease import LeaseClient
from consumers.status import collect_status, render_status
from producers.writer import StreamWriter
from telemetry.keys import Keys
from telemetry.schema import FieldMap, Reading
from telemetry.timeutil import stream_id_ms
from tests.aggregation_helpers import START, add_readings, drain, layout_of, make_worker, rules
from tests.conftest import run_cli


def busy_pipeline(db):
    """Four partitions with ten readings each; the group exists on all, has read partition 0 without
    acknowledging, and partition 2 is leased; another group reads partition 1."""
    layout = layout_of(db, 4)
    sensors = {}
    for number in range(100):
        sensors.setdefault(layout.partition_for(f"s{number}").index, f"s{number}")
    add_readings(db, layout, [Reading(sensors[index], START + i * 1000, 20.0, 50.0, i)
                              for index in range(4) for i in range(10)])
    for partition in layout.partitions:
        db.xgroup_create(partition.readings, "aggregators", id="0")
    db.xreadgroup("aggregators", "w1", {layout.partitions[0].readings: ">"}, count=4)
    db.xgroup_create(layout.partitions[1].readings, "audit", id="$")
    lease = LeaseClient(db, "w1:cafe", 10_000).acquire(layout.partitions[2].group("aggregators"))
    groups = layout.groups("aggregators")
    db.hset(groups[0].counters, mapping={"processed": 3, "missing_seq": 2})
    db.hset(groups[3].counters, mapping={"processed": 4})
    db.xadd(groups[1].dead_letter, {"entry_id": "1-0", "reason": "malformed", "fields": "{}"})
    return layout, lease


def test_status_shows_totals_each_partition_and_other_groups(db):
    layout, lease = busy_pipeline(db)
    oldest_unread = db.xrange(layout.partitions[0].readings, count=5)[4][0]
    now = stream_id_ms(oldest_unread) + 90_000
    status = collect_status(db, layout, "aggregators", maxlen=20, now=now)
    assert (status.length, status.partition_maxlen, status.dead_letter_count) == (40, 5, 1)
    assert status.counters == {"processed": 7, "missing_seq": 2}
    rows = [(row.index, row.owner, row.epoch, row.length, row.lag_entries, row.pending) for row in status.partitions]
    assert rows == [(0, "-", 0, 10, 6, 4), (1, "-", 0, 10, 10, 0), (2, "w1:cafe", lease.epoch, 10, 10, 0),
                    (3, "-", 0, 10, 10, 0)]
    assert (status.totals.lag_entries, status.totals.pending, status.totals.partitions) == (36, 4, 4)
    assert status.partitions[0].lag_seconds == 90.0 and status.totals.lag_seconds >= 90.0
    [audit] = status.other_groups
    assert (audit.group, audit.partitions, audit.lag_entries) == ("audit", 1, 0)
    assert status.warnings[0].startswith("group 'aggregators' lags up to 10 entries on partitions 0, 1, 2, 3")
    assert any("2 readings are missing by seq" in warning for warning in status.warnings)
    text = render_status(status)
    assert "w1:cafe" in text and "other group audit" in text and "MAXLEN 20 in all, 5 each" in text
    assert json.loads(status.as_json())["partitions"][2]["owner"] == "w1:cafe"


def test_status_cli_reads_without_creating_a_pipeline(redis_url, db):
    empty = run_cli("consumers", "status", "--json", "--partitions", "4", "--redis-url", redis_url)
    assert empty.returncode == 0, empty.stderr
    assert len(json.loads(empty.stdout)["partitions"]) == 4 and not db.exists(Keys().pipeline)
    busy_pipeline(db)
    text = run_cli("consumers", "status", "--maxlen", "0", "--redis-url", redis_url)
    assert text.returncode == 0, text.stderr
    assert "group aggregators: lag 36 entries" in text.stdout and "MAXLEN off" in text.stdout
    assert "WARNING: 2 readings are missing by seq" in text.stdout


def test_live_view_reads_each_sensor_in_its_partition(db):
    layout = layout_of(db, 4)
    sensors = ["north", "south", "attic", "cellar"]
    writer = StreamWriter(db, layout, FieldMap(), maxlen=0, log=io.StringIO())
    writer.write(["\t".join(Reading(sensor, START + i * 1000, 20.0 + (sensor == "attic") * 30, 50.0, i)
                            .encode().values()) for i in range(30) for sensor in sensors])
    drain(make_worker(db, layout, rules=rules('[[rule]]\nname="hot"\nkind="threshold"\nabove=40.0')), START + 40_000)
    snapshot = collect_snapshot(db, layout, "aggregators", sensors)
    views = {view.sensor: view for view in snapshot.sensors}
    assert [view.sensor for view in snapshot.sensors] == sensors and snapshot.produced == 120
    assert views["attic"].latest_ts == START + 29_000 and views["attic"].temperature_c == 50.0
    assert views["north"].rolling.count == 30 and views["north"].rolling.temperature_c.mean == 20.0
    assert [(alert.rule, alert.sensor) for alert in snapshot.alerts] == [("hot", "attic")]
    assert snapshot.alert_events == 1 and snapshot.counters["processed"] == 120
    assert len(snapshot.status.partitions) == 4
    console = Console(record=True, width=80, file=io.StringIO())
    console.print(render(snapshot, rates_between(None, snapshot), "demo: 12s of 60s"))
    shown = console.export_text()
    assert "attic" in shown and "partitions of group aggregators" in shown and "hot" in shown
    assert "latest alert events" in shown and "firing" in shown and "demo: 12s of 60s" in shown
    assert max(len(line) for line in shown.splitlines()) <= 80
    assert plain_summary(snapshot, {}).startswith("produced 120 (0/s), processed 120 (0/s), missing by seq 0,")
