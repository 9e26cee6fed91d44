"""Readings that carry one metric (a probe without humidity, a device publishing each metric on its
own topic), the processor alone, no Redis: each metric's window statistics equal pandas over the
readings that carry it, a window without a metric carries no value for it, the outputs do not
depend on batching, checkpoints or late readings, and a rule skips readings without its metric.
The path through Redis and the MQTT bridge is proven in tests/test_mqtt_bridge.py."""

from __future__ import annotations

import random
from dataclasses import asdict, replace

import numpy as np
import pandas as pd
import pytest

from consumers.batch import build_batch
from consumers.processor import PartitionProcessor
from consumers.rules import load_rules, parse_rules
from consumers.summary import Summary
from telemetry.records import WindowAggregate
from telemetry.schema import FieldMap, Reading
from tests.test_processor import (
    FAR_FUTURE,
    SILENT_RULES,
    START,
    assert_a_checkpoint_anywhere_changes_nothing,
    entries_of,
    fleet_readings,
    records,
    run,
    settings,
)
from tests.test_revisions import close_all, delayed, latest_revisions

WINDOW_MS = 10_000
METRICS = ("temperature_c", "humidity_pct")


def thinned(readings: list[Reading], seed: int = 5) -> list[Reading]:
    """s0 a temperature probe, s1 a split-topic device (one metric a message, alternating), s2
    missing a metric now and then, the rest whole. s0's humidity never comes, so each of its
    windows lacks a metric; s1's first window may lack one too."""
    rng = random.Random(seed)
    out = []
    for reading in readings:
        if reading.sensor == "s0":
            reading = replace(reading, humidity_pct=None)
        elif reading.sensor == "s1":
            reading = replace(reading, **{METRICS[reading.seq % 2]: None})
        elif reading.sensor == "s2" and rng.random() < 0.3:
            reading = replace(reading, **{rng.choice(METRICS): None})
        out.append(reading)
    return out


def expected_windows(readings: list[Reading], window_ms: int = WINDOW_MS) -> pd.DataFrame:
    """pandas over the values present: its count, mean, std, min and max skip NaN."""
    frame = pd.DataFrame([asdict(r) for r in readings]).astype({metric: float for metric in METRICS})
    frame["window_start"] = frame.ts_ms - frame.ts_ms % window_ms
    aggregations = {"count": ("ts_ms", "size")}
    for metric in METRICS:
        for statistic in ("count", "mean", "std", "min", "max"):
            aggregations[f"{metric}_{statistic}"] = (metric, statistic)
    return frame.groupby(["sensor", "window_start"]).agg(**aggregations)


def assert_equal_pandas(emitted: pd.DataFrame, readings: list[Reading]) -> None:
    expected = expected_windows(readings)
    assert list(emitted.index) == list(expected.index)
    for column in expected.columns:
        np.testing.assert_allclose(emitted[column].astype(float), expected[column].astype(float), rtol=1e-9,
                                   equal_nan=True, err_msg=column)


def test_each_metrics_window_statistics_come_from_its_own_readings():
    readings = thinned(fleet_readings(jitter_ms=1_500))
    processor = PartitionProcessor(settings().processing())
    aggregates = run(processor, entries_of(readings), 37).aggregates + close_all(processor)
    emitted = pd.DataFrame([asdict(a) for a in aggregates]).set_index(["sensor", "window_start"]).sort_index()
    assert_equal_pandas(emitted, readings)
    probe = next(a for a in aggregates if a.sensor == "s0")
    assert (probe.humidity_pct_count, probe.humidity_pct_mean, probe.humidity_pct_std) == (0, None, None)
    fields = dict(zip(probe.fields()[::2], probe.fields()[1::2]))
    assert fields["humidity_pct_count"] == "0" and fields["temperature_c_count"] == str(probe.count)
    assert not {"humidity_pct_mean", "humidity_pct_min", "humidity_pct_max", "humidity_pct_std"} & set(fields)
    assert WindowAggregate.decode(fields).fields() == probe.fields()


def test_an_aggregate_written_before_per_metric_counts_reads_both_counts_as_its_count():
    whole = next(a for a in run(PartitionProcessor(settings().processing()),
                                entries_of(fleet_readings(sensors=1, per_sensor=60)), 10).aggregates)
    fields = dict(zip(whole.fields()[::2], whole.fields()[1::2]))
    old = {name: value for name, value in fields.items() if not name.endswith("_count")}
    assert WindowAggregate.decode(old).fields() == whole.fields()


@pytest.mark.parametrize("batch_sizes", [(1, 500), (7, 64)])
def test_one_metric_readings_give_the_same_outputs_whatever_the_batching(batch_sizes):
    readings = thinned(fleet_readings(jitter_ms=1_500, per_sensor=200))
    spike = readings[300]
    readings[300] = Reading(spike.sensor, spike.ts_ms, 60.0, spike.humidity_pct, spike.seq)
    entries = entries_of(readings)
    rules = load_rules(None)
    results = [records(run(PartitionProcessor(settings(rules).processing()), entries, size)) for size in batch_sizes]
    assert results[0] == results[1]
    assert results[0][0] and not results[0][2]  # windows, no dead letters


def test_a_checkpoint_anywhere_gives_the_one_metric_outputs_of_an_uninterrupted_run():
    """Summaries with missing counts pack and unpack (checkpoint, kept windows) exactly."""
    readings = thinned(fleet_readings(jitter_ms=1_500, per_sensor=150))
    assert_a_checkpoint_anywhere_changes_nothing(entries_of(readings), (1, 199, 333), 50)


def test_late_one_metric_readings_revise_their_windows_whatever_the_batching():
    readings = thinned(fleet_readings(sensors=4, per_sensor=400))
    arrival = delayed(readings, fraction=0.03, by=4 * 80)  # 3% arrive 40 s (4 windows) late
    entries = entries_of(arrival)
    results, latest = [], []
    for size in (1, 13, 500):
        processor = PartitionProcessor(settings(load_rules(None)).processing())
        results.append(records(run(processor, entries, size)))
        latest.append(latest_revisions(results[-1][0] + close_all(processor)))
    assert results[0] == results[1] == results[2]
    assert results[0][3]["revisions"] >= 10 and not results[0][2]
    assert_equal_pandas(latest[0], readings)


def alert_events(readings: list[Reading], rules_toml: str | None, batch_size: int = 3) -> list[tuple]:
    rules = parse_rules(rules_toml, "test") if rules_toml else load_rules(None)
    out = run(PartitionProcessor(settings(rules).processing()), entries_of(readings), batch_size)
    return [(event.rule, event.sensor, event.state, event.ts) for event in out.alerts]


HUMID_RULES = ('[[rule]]\nname = "humid"\nkind = "threshold"\nmetric = "humidity_pct"\nabove = 80.0\n\n'
               '[[rule]]\nname = "hot"\nkind = "threshold"\nabove = 40.0\n')


def test_a_reading_without_a_rules_metric_neither_fires_nor_resolves_it():
    humidities = [90.0, None, None, None, 50.0, None, 95.0]
    temperatures = [20.0, 45.0, 20.0, None, None, 30.0, None]
    readings = [Reading("a", START + i * 1000, t, h, i) for i, (t, h) in enumerate(zip(temperatures, humidities))]
    assert alert_events(readings, HUMID_RULES, 2) == [
        ("humid", "a", "firing", START), ("hot", "a", "firing", START + 1000), ("hot", "a", "resolved", START + 2000),
        ("humid", "a", "resolved", START + 4000), ("humid", "a", "firing", START + 6000)]


def probe_readings(seconds: int, hot_from: int) -> list[Reading]:
    """A temperature-only probe that goes above 40 °C at `hot_from`, and a split-topic device
    with steady values, one metric a second."""
    probe = [Reading("probe", START + i * 1000, 45.0 if i >= hot_from else 21.0 + i % 3 / 10, None, i)
             for i in range(seconds)]
    split = [Reading("split", START + i * 1000 + 500, None if i % 2 else 20.0, 50.0 if i % 2 else None, i)
             for i in range(seconds)]
    return [reading for pair in zip(probe, split) for reading in pair]


def test_built_in_rules_on_a_temperature_probe_and_a_split_topic_device():
    """The probe's temperature rule fires; no humidity rule fires on its absent humidity (a mean
    over no readings is no value, not 0 %RH); the split device's steady values are stuck whatever
    metric each message carries (the run starts once both were seen, at its second message);
    neither is silent while its readings come."""
    events = alert_events(probe_readings(400, hot_from=200), None, 50)
    assert ("temperature-high", "probe", "firing", START + 230_000) in events
    assert not [event for event in events if event[0] in ("humidity-low", "sensor-silent")]
    assert [event for event in events if event[1] == "split"] == [("sensor-stuck", "split", "firing", START + 301_500)]


def test_rate_of_change_and_zscore_measure_only_readings_of_their_metric():
    rules = ('[[rule]]\nname = "jump"\nkind = "rate_of_change"\nmetric = "humidity_pct"\nper_minute = 30.0\n'
             'over = "5s"\n\n[[rule]]\nname = "odd"\nkind = "zscore"\nmetric = "humidity_pct"\nz = 4.0\nmin_count = 10\n')
    readings = [Reading("a", START + i * 1000, 20.0 + i % 2, None if i % 3 else 50.0 + i % 2, i) for i in range(60)]
    assert alert_events(readings, rules) == []
    readings.append(Reading("a", START + 60_000, None, 90.0, 60))
    assert alert_events(readings, rules) == [("jump", "a", "firing", START + 60_000), ("odd", "a", "firing", START + 60_000)]


def test_a_split_topic_device_is_heard_by_either_metric():
    """b reports one metric a second for 30 s, a both for 80 s (carrying the partition clock):
    b is silent only 20 s after its last message, whichever metric that carried."""
    split = [Reading("b", START + i * 1000, None if i % 2 else 20.0, 50.0 if i % 2 else None, i) for i in range(30)]
    whole = [Reading("a", START + i * 1000 + 1, 20.0, 50.0, i) for i in range(80)]
    out = run(PartitionProcessor(settings(SILENT_RULES).processing()), entries_of(sorted(
        split + whole, key=lambda reading: reading.ts_ms)), 4)
    assert [(event.sensor, event.state, event.ts) for event in out.alerts] == [("b", "firing", START + 49_000)]


@pytest.mark.parametrize("metric", METRICS)
def test_rolling_statistics_of_a_metric_count_only_its_readings(metric):
    readings = thinned(fleet_readings(sensors=3, per_sensor=150, jitter_ms=800))
    processor = PartitionProcessor(settings(rolling_ms=20_000).processing())
    rolling = processor.settings.rolling
    for index, (entry, reading) in enumerate(zip(entries_of(readings), readings)):
        processor.apply(build_batch([entry], FieldMap(), FAR_FUTURE, 300_000))
        seen = [r for r in readings[:index + 1] if r.sensor == reading.sensor]
        newest = max(r.ts_ms for r in seen)
        inside = pd.Series([getattr(r, metric) for r in seen if r.ts_ms - r.ts_ms % 2_000 + 2_000 > newest - 20_000],
                           dtype=float)
        stats = rolling.stats(processor.sensors[reading.sensor]).metric(metric)
        want = (inside.count(), inside.mean(), inside.std(), inside.min(), inside.max())
        got = (stats.count, stats.mean, stats.std, stats.min, stats.max)
        np.testing.assert_allclose(np.array(got, dtype=float), np.array(want, dtype=float), rtol=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_a_summary_added_or_merged_from_parts_equals_pandas_over_each_metrics_values(seed):
    """Welford's update and Chan's merge per metric, whatever mix of whole and one-metric readings
    each part holds (a part may lack a metric entirely)."""
    rng = random.Random(seed)
    rows = [(rng.choice([None, round(rng.uniform(-10, 40), 2)]) if rng.random() < 0.4 else round(rng.uniform(-10, 40), 2),
             None if rng.random() < 0.3 else round(rng.uniform(0, 100), 2)) for _ in range(200)]
    rows = [(t, h) if t is not None or h is not None else (1.0, None) for t, h in rows]
    whole = Summary()
    for t, h in rows:
        whole.add(t, h)
    merged = Summary()
    cuts = sorted(rng.sample(range(1, 200), 12))
    for start, end in zip([0, *cuts], [*cuts, 200]):
        part = Summary()
        for t, h in rows[start:end]:
            part.add(t, h)
        merged.merge(part)
    frame = pd.DataFrame(rows, columns=list(METRICS), dtype=float)
    for summary in (whole, merged, Summary(*merged.values())):
        assert summary.n == 200
        for metric in METRICS:
            stats, column = summary.metric(metric), frame[metric]
            np.testing.assert_allclose(
                np.array([stats.count, stats.mean, stats.std, stats.min, stats.max], dtype=float),
                np.array([column.count(), column.mean(), column.std(), column.min(), column.max()]), rtol=1e-9)
