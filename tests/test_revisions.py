"""Late readings revise their window: the processor alone, no Redis (the real-Redis proofs are in
tests/test_late_readings.py). Every window's latest revision equals pandas over all its
readings, each revision is emitted once and in order, and the outputs depend on the readings only."""

from __future__ import annotations

import json
import random
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest

from consumers.processor import Outputs, PartitionProcessor
from consumers.rules import load_rules
from telemetry.records import WindowAggregate
from telemetry.schema import Reading
from tests.aggregation_helpers import latest_windows
from tests.test_processor import (
    SILENT_RULES,
    START,
    assert_a_checkpoint_anywhere_changes_nothing,
    entries_of,
    expected_windows,
    keep_emitted,
    records,
    run,
    settings,
    watch,
)

WINDOW_MS = 10_000


def latest_revisions(aggregates: list[WindowAggregate]) -> pd.DataFrame:
    """The latest revision of each window; each revision must have come once, in order, from 0."""
    return latest_windows(pd.DataFrame([asdict(a) for a in aggregates])).set_index(
        ["sensor", "window_start"]).sort_index()


def assert_equal_pandas(latest: pd.DataFrame, readings: list[Reading]) -> None:
    expected = expected_windows(readings, WINDOW_MS)
    assert list(latest.index) == list(expected.index)
    for column in expected.columns:
        np.testing.assert_allclose(latest[column].astype(float), expected[column].astype(float), rtol=1e-9)


def delayed(readings: list[Reading], fraction: float, by: int, seed: int = 3) -> list[Reading]:
    """Arrival order with `fraction` of the readings held back `by` positions (late, seq kept)."""
    rng = random.Random(seed)
    arrival = [(index + (by if rng.random() < fraction else 0), index, r) for index, r in enumerate(readings)]
    return [r for _, _, r in sorted(arrival, key=lambda item: item[:2])]


def steady(sensors: int, seconds: int) -> list[Reading]:
    rng = random.Random(sensors * seconds)
    return [Reading(f"s{index}", START + second * 1000 + index, round(20 + rng.gauss(0, 2), 2),
                    round(50 + rng.gauss(0, 5), 2), second)
            for second in range(seconds) for index in range(sensors)]


def close_all(processor: PartitionProcessor) -> list[WindowAggregate]:
    watch(processor, processor.clock_ms + 120_000)
    return processor.take_outputs().aggregates


def test_a_straggler_revises_its_window_once_with_the_next_revision():
    readings = [Reading("a", START + i * 1000, 20.0 + i, 50.0, i) for i in range(40)]
    straggler = Reading("a", START + 4_500, 99.0, 50.0, 40)
    processor = PartitionProcessor(settings().processing())
    out = run(processor, entries_of(readings + [straggler]), 7)
    first = [a for a in out.aggregates if a.window_start == START]
    assert [(a.revision, a.count, a.temperature_c_max) for a in first] == [(0, 10, 29.0), (1, 11, 99.0)]
    assert (out.counters["late"], out.counters["revisions"], out.counters["too_late"]) == (1, 1, 0)
    state = processor.sensors["a"]
    assert (state.late, state.revisions, state.too_late) == (1, 1, 0)
    assert_equal_pandas(latest_revisions(out.aggregates + close_all(processor)), readings + [straggler])


@pytest.mark.parametrize("batch_sizes", [(1, 13, 500)])
def test_late_readings_give_the_same_revisions_whatever_the_batching(batch_sizes):
    readings = steady(sensors=5, seconds=240)
    arrival = delayed(readings, fraction=0.03, by=5 * 40)  # 3% arrive 40 s (4 windows) late
    entries = entries_of(arrival)
    rules = load_rules(None)
    results = []
    for size in batch_sizes:
        processor = PartitionProcessor(settings(rules).processing())
        results.append(records(run(processor, entries, size)))
        assert sum(state.missing_seq for state in processor.sensors.values()) == 0, "a late seq stayed missing"
    assert results[0] == results[1] == results[2]
    aggregates, _, dead_letters, counters = results[0]
    assert not dead_letters and counters["late"] >= 30 and counters["revisions"] >= 20
    assert len(latest_revisions(aggregates)) < len(aggregates)  # each revision once, in order
    assert "duplicates" not in counters and counters["processed"] == len(readings)


def test_a_checkpoint_anywhere_gives_the_revisions_of_an_uninterrupted_run():
    arrival = delayed(steady(sensors=3, seconds=150), fraction=0.05, by=3 * 25)
    assert_a_checkpoint_anywhere_changes_nothing(entries_of(arrival), (1, 170, 301), 40)


def test_a_stalled_source_revises_the_windows_idle_closed_and_its_silence_resolves():
    """A gateway's uplink is down for two minutes while the worker watches the partition caught
    up: the sensor looks silent, its open window closes on idle and the silent rule fires. The
    buffered readings then arrive in order: the window is revised, the alert resolves, and every
    window's latest revision holds all its readings."""
    readings = [Reading("g", START + i * 1000, 20.0 + (i % 7), 50.0, i) for i in range(200)]
    processor = PartitionProcessor(settings(SILENT_RULES).processing())
    kept: dict = {}
    before = run(processor, entries_of(readings[:25]), 10, kept)
    watch(processor, START + 25_000 + 120_000)  # the outage, seen on the wall clock
    stalled = processor.take_outputs()
    keep_emitted(processor, stalled, kept)
    assert [(a.window_start, a.revision, a.closed_by) for a in stalled.aggregates] == [(START + 20_000, 0, "idle")]
    assert [(e.state, e.ts) for e in stalled.alerts] == [("firing", START + 24_000 + 20_000)]
    after = Outputs()
    wall = START + 25_000 + 120_000
    for chunk in range(25, 200, 60):  # the buffer arrives in pieces, the worker caught up between them
        part = run(processor, entries_of(readings[chunk:chunk + 60]), 50, kept)
        wall += 2_000
        watch(processor, wall)
        part.aggregates += processor.outputs.aggregates
        part.alerts += processor.outputs.alerts
        keep_emitted(processor, processor.take_outputs(), kept)
        after.aggregates += part.aggregates
        after.alerts += part.alerts
        after.dead_letters += part.dead_letters
        after.counters += part.counters
    # resolved by the first buffered reading, and not judged silent again while the rest arrive
    assert [(e.state, e.ts) for e in after.alerts] == [("resolved", START + 25_000)]
    assert not after.dead_letters and after.counters["late"] == 5 and after.counters["revisions"] == 1
    aggregates = before.aggregates + stalled.aggregates + after.aggregates + close_all(processor)
    assert_equal_pandas(latest_revisions(aggregates), readings)


def test_readings_past_the_allowed_lateness_are_dead_lettered_and_counted_once():
    readings = [Reading("a", START + i * 1000, 20.0, 50.0, i) for i in range(100)]
    too_old = Reading("a", START + 3_000, 20.0, 50.0, 100)
    processor = PartitionProcessor(settings(allowed_lateness_ms=30_000).processing())
    entries = entries_of(readings + [too_old])
    out = run(processor, entries + entries[-1:], 50)  # the late one, then a resend of it
    assert [letter.reason.split(":")[0] for letter in out.dead_letters] == ["late"]
    assert "allowed lateness" in out.dead_letters[0].reason
    assert (out.counters["too_late"], out.counters["duplicates"], out.counters["late"]) == (1, 1, 0)
    assert processor.sensors["a"].too_late == 1


def test_every_window_within_the_allowed_lateness_has_a_slot_of_its_own():
    """Random delays around the allowed lateness: whatever comes in time revises its own window
    (never another one sharing its slot), whatever comes after is dead-lettered."""
    rng = random.Random(11)
    readings = steady(sensors=2, seconds=300)
    arrival = sorted(enumerate(readings), key=lambda item: item[0] + (rng.randint(0, 2 * 50) if rng.random() < 0.1
                                                                       else 0))
    arrival = [r for _, r in arrival]
    processor = PartitionProcessor(settings(allowed_lateness_ms=35_000).processing())
    out = run(processor, entries_of(arrival), 9)
    dead = {(fields["sensor"], int(fields["ts"])) for fields in (json.loads(d.fields_json) for d in out.dead_letters)}
    assert dead and out.counters["too_late"] == len(dead) and out.counters["revisions"] > 0
    kept = [r for r in readings if (r.sensor, r.ts_ms) not in dead]
    assert_equal_pandas(latest_revisions(out.aggregates + close_all(processor)), kept)


def test_a_sensors_first_reading_arriving_late_is_no_duplicate_and_no_gap_is_counted():
    readings = [Reading("a", START + i * 1000, 20.0, 50.0, i) for i in range(1, 30)]
    first = Reading("a", START, 20.0, 50.0, 0)
    processor = PartitionProcessor(settings().processing())
    out = run(processor, entries_of(readings + [first, first]), 8)  # late, then resent
    assert (out.counters["processed"], out.counters["duplicates"], out.counters.get("missing_seq", 0)) == (30, 1, 0)
    assert processor.sensors["a"].missing_seq == 0
