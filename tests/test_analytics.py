"""Export, report and plot over every partition: round trips, merge order, filters, bad input and
the picture."""

from __future__ import annotations

import gzip
import json

import pandas as pd
import pytest

from analytics.plot import alert_episodes, sensor_figure
from analytics.report import seq_health_by_sensor
from analytics.streams import RowFilter
from telemetry.errors import UsageError
from telemetry.keys import Keys
from telemetry.partitions import open_layout, partition_of
from telemetry.schema import Reading
from telemetry.timeutil import parse_time_ms, stream_id_key
from tests.aggregation_helpers import START, add_readings, drain, layout_of, make_worker, outputs, rules
from tests.conftest import run_cli


def produce(redis_url, *args):
    result = run_cli("producers", *args, "--redis-url", redis_url)
    assert result.returncode == 0, result.stderr


def merged_source(db, streams: list[str]) -> list[tuple[str, dict]]:
    """Every entry of `streams`, sorted as the readers merge them: by id, then by partition."""
    entries = [(entry_id, fields) for stream in streams for entry_id, fields in db.xrange(stream)]
    return sorted(entries, key=lambda entry: stream_id_key(entry[0]))


def in_id_order(ids) -> bool:
    keys = [stream_id_key(entry_id) for entry_id in ids]
    return keys == sorted(keys)


def test_export_round_trip_is_exact_and_merges_partitions_in_id_order(redis_url, db, tmp_path):
    produce(redis_url, "--fleet", "rt-", "5", "--count", "400", "--start", str(START), "--spike-rate", "180",
            "--batch", "70")
    layout = open_layout(db, Keys())
    out = tmp_path / "readings.csv"
    result = run_cli("analytics", "export", "--out", str(out), "--redis-url", redis_url)
    assert result.returncode == 0, result.stderr
    assert "wrote 2000 readings rows" in result.stderr
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["stream_id", "sensor", "time", "ts_ms", "temperature_c", "humidity_pct", "seq"]
    streams = [partition.readings for partition in layout.partitions]
    assert sum(db.exists(stream) for stream in streams) > 1  # the fleet spans partitions
    source = [Reading.decode(fields, entry_id) for entry_id, fields in merged_source(db, streams)]
    assert len(frame) == len(source) and in_id_order(frame["stream_id"])
    assert not frame[["sensor", "stream_id"]].duplicated().any()  # an id is unique within a partition
    for row, reading in zip(frame.itertuples(), source):
        assert (row.sensor, row.ts_ms, row.temperature_c, row.humidity_pct, row.seq) == (
            reading.sensor, reading.ts_ms, reading.temperature_c, reading.humidity_pct, reading.seq)
    assert frame["time"].iloc[0].endswith("Z") and pd.to_datetime(frame["time"]).dt.tz is not None


def test_export_filters_gzip_and_stdout(redis_url, tmp_path):
    produce(redis_url, "green-1", "green-2", "red-1", "--count", "120", "--start", str(START))
    out = tmp_path / "green.csv.gz"
    result = run_cli("analytics", "export", "--out", str(out), "--sensor", "green-*",
                     "--since", str(START + 30_000), "--until", str(START + 60_000), "--redis-url", redis_url)
    assert result.returncode == 0, result.stderr
    with gzip.open(out, "rt") as handle:
        frame = pd.read_csv(handle)
    assert set(frame["sensor"]) == {"green-1", "green-2"} and len(frame) == 60
    assert frame["ts_ms"].min() >= START + 30_000 and frame["ts_ms"].max() < START + 60_000
    piped = run_cli("analytics", "export", "--out", "-", "--sensor", "red-1", "--redis-url", redis_url)
    assert piped.returncode == 0 and len(piped.stdout.strip().splitlines()) == 121


def hot_pipeline(db, sensors=("s", "t", "u")):
    """Readings of several sensors in four partitions, one malformed entry, aggregated with a 'hot' rule."""
    layout = layout_of(db, 4)
    add_readings(db, layout, [Reading(sensor, START + i * 1000, 20.0 + (i > 50) * 20, 50.0, i)
                              for i in range(130) for sensor in sensors])
    db.xadd(layout.partition_for("s").readings, {"sensor": "s", "ts": "1", "temperature_c": "hot", "humidity_pct": "1"})
    drain(make_worker(db, layout, rules=rules('[[rule]]\nname="hot"\nkind="threshold"\nabove=30.0')), START + 10**9)
    return layout


def test_export_other_streams_and_parquet(redis_url, db, tmp_path):
    layout = hot_pipeline(db)
    assert len({layout.partition_for(sensor).index for sensor in ("s", "t", "u")}) > 1
    for which, column in (("aggregates", "window_start"), ("alerts", "alert_id"), ("dead-letter", "reason")):
        out = tmp_path / f"{which}.csv"
        result = run_cli("analytics", "export", "--kind", which, "--out", str(out), "--redis-url", redis_url)
        assert result.returncode == 0, result.stderr
        frame = pd.read_csv(out, dtype={"stream_id": str})
        expected = outputs(db, layout, which)
        assert len(frame) == len(expected) >= 1 and column in frame.columns
        assert in_id_order(frame["stream_id"]) and set(frame["stream_id"]) == set(expected["id"])
        assert {"partition", "epoch", "batch", "emitted_ms"} <= set(frame.columns)
    dead = pd.read_csv(tmp_path / "dead-letter.csv")
    assert dead["sensor"].tolist() == ["s"] and dead["time"].iloc[0].endswith("Z")
    parquet = tmp_path / "readings.parquet"
    assert run_cli("analytics", "export", "--out", str(parquet), "--redis-url", redis_url).returncode == 0
    assert len(pd.read_parquet(parquet)) == 390  # the malformed entry is not a reading


def test_a_filter_of_plain_names_reads_only_their_partitions():
    assert RowFilter(("a", "b")).partitions(8) == sorted({partition_of("a", 8), partition_of("b", 8)})
    assert RowFilter(("green-*",)).partitions(8) == list(range(8))
    assert RowFilter().partitions(3) == [0, 1, 2]


def test_relative_and_iso_times():
    now = 1_700_000_000_000
    assert parse_time_ms("-15m", now=now) == now - 900_000
    assert parse_time_ms("2023-11-14T22:13:20Z") == 1_700_000_000_000
    assert parse_time_ms("2023-11-14T22:13:20") == 1_700_000_000_000
    assert parse_time_ms("1700000000000") == now
    with pytest.raises(UsageError, match="not a time"):
        parse_time_ms("last tuesday")


@pytest.mark.parametrize("args", [
    ("--kind", "nonsense"),
    ("--since", "yesterday-ish"),
    ("--all-revisions",),  # readings have none
])
def test_bad_input_exits_2_and_leaves_the_target_untouched(redis_url, tmp_path, args):
    out = tmp_path / "keep.csv"
    out.write_text("precious\n")
    result = run_cli("analytics", "export", "--out", str(out), *args, "--redis-url", redis_url)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if not line.startswith("redis:")]) == 1
    assert out.read_text() == "precious\n"


def test_unwritable_path_exits_2(redis_url, tmp_path):
    result = run_cli("analytics", "export", "--out", str(tmp_path / "missing" / "x.csv"), "--redis-url", redis_url)
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_gap_and_duplicate_detection_per_sensor():
    import numpy as np

    sensors = np.array(["a"] * 7 + ["b"] * 10 + ["c"] * 2, dtype=object)
    seqs = np.r_[[9, 0, 6, 1, 2, 5, 6], np.arange(10)[::-1], [-1, -1]]
    shuffled = np.random.default_rng(3).permutation(len(seqs))
    assert seq_health_by_sensor(sensors[shuffled], seqs[shuffled]) == {
        "a": {"missing": 4, "gaps": 2, "duplicates": 1}, "b": {"missing": 0, "gaps": 0, "duplicates": 0}}


def test_report_finds_dropouts_and_counts_dead_letters_and_alerts(redis_url, db):
    produce(redis_url, "d", "e", "--count", "600", "--start", str(START), "--dropout-rate", "36")
    layout = open_layout(db, Keys())
    stream = layout.partition_for("d").readings
    db.xadd(stream, {"sensor": "d", "ts": "1", "temperature_c": "nan", "humidity_pct": "1"})
    drain(make_worker(db, layout, rules=rules('[[rule]]\nname="cold"\nkind="threshold"\nbelow=100.0')),
          START + 10**9)
    result = run_cli("analytics", "report", "--json", "--sensor", "d", "--redis-url", redis_url)
    assert result.returncode == 0, result.stderr
    [row] = json.loads(result.stdout)["sensors"]
    produced = [int(f["seq"]) for _, f in db.xrange(stream) if f.get("sensor") == "d" and "seq" in f]
    assert row["sensor"] == "d" and row["count"] == len(produced) < 600
    assert row["missing"] == 600 - len(produced) - (599 - max(produced)) and row["gaps"] >= 1
    assert row["dead_letters"] == 1 and row["alerts"] == 1
    everyone = json.loads(run_cli("analytics", "report", "--json", "--redis-url", redis_url).stdout)["sensors"]
    assert [row["sensor"] for row in everyone] == ["d", "e"] and everyone[1]["dead_letters"] == 0


def test_plot_is_a_png_with_the_expected_series(redis_url, db, tmp_path):
    layout = layout_of(db, 4)
    temps = [20.0] * 100 + [45.0] * 60 + [20.0] * 100
    add_readings(db, layout, [Reading("p", START + i * 1000, t, 50.0, i) for i, t in enumerate(temps)])
    drain(make_worker(db, layout, rules=rules(
        '[[rule]]\nname="hot"\nkind="threshold"\nabove=40.0\nseverity="critical"')), START + 10**9)
    out = tmp_path / "p.png"
    result = run_cli("analytics", "plot", "--sensor", "p", "--out", str(out), "--redis-url", redis_url)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    readings = pd.DataFrame({"ts_ms": [START + i * 1000 for i in range(260)], "temperature_c": temps,
                             "humidity_pct": [50.0] * 260})
    figure = sensor_figure("p", readings, outputs(db, layout, "aggregates"), alert_episodes(outputs(db, layout, "alerts")))
    labels = [line.get_label() for line in figure.axes[0].get_lines()]
    assert labels == ["temperature_c", "window mean"]
    assert [line.get_label() for line in figure.axes[1].get_lines()] == ["humidity_pct", "window mean"]
    assert len(figure.axes[0].patches) == 1  # one alert episode shaded


def test_fast_and_general_csv_paths_write_the_same_text():
    from analytics.export import readings_csv_lines
    from analytics.streams import RowFilter, readings_csv_text, readings_frame
    from telemetry.schema import FieldMap

    page = []
    for i in range(50):
        fields = Reading(f"s{i % 4}", START + i * 1000, 20.0 + i / 10, 40.0 + i / 7, i).encode()
        page.append((f"{START + i}-0", [value for pair in fields.items() for value in pair]))
    page[6][1][5] = "150.5"  # temperature out of range: left out by both paths
    selection = RowFilter(("s[12]",), START + 5_000, START + 45_000)
    fast_text, fast_rows = readings_csv_text(page, FieldMap(), selection)
    frame = selection.apply(readings_frame(page, FieldMap()), "ts_ms")
    assert fast_text == readings_csv_lines(frame)
    assert fast_rows == len(frame) == 19


def test_exports_are_written_with_the_users_umask_and_iso_window_times(redis_url, tmp_path):
    import os
    import stat

    assert run_cli("producers", "u", "--count", "200", "--start", str(START), "--redis-url", redis_url).returncode == 0
    assert run_cli("consumers", "aggregate", "--start", "all", "--drain", "--window", "10s",
                   "--redis-url", redis_url).returncode == 0
    previous = os.umask(0o022)
    try:
        out = tmp_path / "aggregates.csv"
        result = run_cli("analytics", "export", "--kind", "aggregates", "--out", str(out), "--redis-url", redis_url)
    finally:
        os.umask(previous)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    frame = pd.read_csv(out)
    assert frame.window_start_time.iloc[0].endswith("Z") and frame.window_end_time.iloc[0] > frame.window_start_time.iloc[0]


def test_plot_draws_dropouts_as_gaps_and_every_window_to_its_end():
    from analytics.plot import window_segments, with_gaps

    ts = pd.Series([0, 1000, 2000, 60_000, 61_000])  # a dropout between 2 s and 60 s
    _, values = with_gaps(ts, pd.Series([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert values.isna().sum() == 1 and values.isna().tolist().index(True) == 3
    windows = pd.DataFrame({"window_start": [0, 20_000], "window_end": [10_000, 30_000],
                            "temperature_c_mean": [1.5, 2.5]})
    xs, ys = window_segments(windows, "temperature_c_mean")
    assert xs.iloc[4] == pd.Timestamp(30_000, unit="ms") and ys.iloc[4] == 2.5  # the last window reaches its end
    assert ys.isna().tolist() == [False, False, True, False, False, True]  # no line across the empty window


def test_export_writes_json_lines_for_jsonl(redis_url, tmp_path):
    assert run_cli("producers", "j", "--count", "50", "--start", str(START), "--redis-url", redis_url).returncode == 0
    out = tmp_path / "readings.jsonl"
    result = run_cli("analytics", "export", "--out", str(out), "--redis-url", redis_url)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 50 and rows[0]["sensor"] == "j" and rows[-1]["seq"] == 49


def one_metric_pipeline(db):
    """A temperature probe, a split-topic device (one metric a reading) and a whole sensor, each a
    reading a second for 60 s, aggregated in 10 s windows by a worker with a humidity rule that an
    absent humidity read as 0 would fire."""
    layout = layout_of(db, 4)
    readings = []
    for i in range(60):
        readings += [Reading("probe", START + i * 1000, 20.0 + i % 5, None, i),
                     Reading("split", START + i * 1000, None if i % 2 else 21.0 + i % 3, 55.0 + i % 4 if i % 2 else None, i),
                     Reading("whole", START + i * 1000, 22.0, 45.0 + i % 2, i)]
    add_readings(db, layout, readings)
    drain(make_worker(db, layout, window_ms=10_000, rules=rules(
        '[[rule]]\nname="dry"\nkind="threshold"\nmetric="humidity_pct"\nbelow=10.0')), START + 10**9)
    frame = pd.DataFrame([(r.sensor, r.ts_ms, r.temperature_c, r.humidity_pct, r.seq) for r in readings],
                         columns=["sensor", "ts_ms", "temperature_c", "humidity_pct", "seq"])
    return layout, frame.astype({"temperature_c": float, "humidity_pct": float})


def test_one_metric_readings_export_with_empty_cells_nulls_and_absent_window_statistics(redis_url, db, tmp_path):
    layout, readings = one_metric_pipeline(db)
    assert outputs(db, layout, "alerts").empty  # nothing is dry: absent humidity is no value
    csv_out, jsonl_out, parquet_out = tmp_path / "r.csv", tmp_path / "r.jsonl", tmp_path / "r.parquet"
    for out in (csv_out, jsonl_out, parquet_out):
        result = run_cli("analytics", "export", "--out", str(out), "--redis-url", redis_url)
        assert result.returncode == 0, result.stderr
    probe_line = next(line for line in csv_out.read_text().splitlines() if ",probe," in line)
    assert probe_line.split(",")[4:6] == ["20.0", ""]  # an empty cell, not nan
    for frame in (pd.read_csv(csv_out), pd.read_json(jsonl_out, lines=True), pd.read_parquet(parquet_out)):
        frame = frame.sort_values(["sensor", "ts_ms"]).reset_index(drop=True)
        expected = readings.sort_values(["sensor", "ts_ms"]).reset_index(drop=True)
        pd.testing.assert_frame_equal(frame[list(expected.columns)], expected, check_dtype=False)
    assert [json.loads(line)["humidity_pct"] for line in jsonl_out.read_text().splitlines()
            if '"probe"' in line][:1] == [None]
    replay = run_cli("producers", "--from-csv", str(csv_out), "--prefix", "replayed", "--redis-url", redis_url)
    assert replay.returncode == 2 and "carry one metric" in replay.stderr  # said, not half-written
    aggregates = tmp_path / "a.csv"
    assert run_cli("analytics", "export", "--kind", "aggregates", "--out", str(aggregates),
                   "--redis-url", redis_url).returncode == 0
    windows = pd.read_csv(aggregates).set_index("sensor")
    assert (windows.loc["probe", "humidity_pct_count"] == 0).all() and windows.loc["probe", "humidity_pct_mean"].isna().all()
    assert (windows.loc["split", "temperature_c_count"] == 5).all() and (windows.loc["split", "count"] == 10).all()


def test_report_and_plot_take_each_metric_over_its_own_readings(redis_url, db, tmp_path):
    _, readings = one_metric_pipeline(db)
    result = run_cli("analytics", "report", "--json", "--redis-url", redis_url)
    assert result.returncode == 0, result.stderr
    rows = {row["sensor"]: row for row in json.loads(result.stdout)["sensors"]}
    for sensor, values in readings.groupby("sensor"):
        row = rows[sensor]
        assert row["count"] == 60
        for metric in ("temperature_c", "humidity_pct"):
            present = values[metric].dropna()
            assert row[f"{metric}_count"] == len(present)
            assert row[f"{metric}_mean"] == (pytest.approx(present.mean()) if len(present) else None)
    assert rows["probe"]["humidity_pct_min"] is None and rows["probe"]["humidity_pct_std"] is None
    table = run_cli("analytics", "report", "--redis-url", redis_url).stdout
    assert "hum n" in table and "probe" in table
    out = tmp_path / "split.png"
    assert run_cli("analytics", "plot", "--sensor", "split", "--out", str(out), "--redis-url", redis_url).returncode == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    split = readings[readings.sensor == "split"]
    figure = sensor_figure("split", split, pd.DataFrame(), [])
    for axis, metric in zip(figure.axes, ("temperature_c", "humidity_pct")):
        drawn = axis.get_lines()[0].get_ydata()
        assert list(pd.Series(drawn).dropna()) == list(split[metric].dropna())  # a line through its own readings
