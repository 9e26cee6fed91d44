"""The partition processor alone, no Redis: windows and rolling stats against pandas, and the
same readings giving the same outputs whatever the batching or where a checkpoint fell."""

from __future__ import annotations

import random
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest

from consumers.batch import build_batch
from consumers.processor import WALL_CLOCK_MARGIN_MS, Outputs, PartitionProcessor
from consumers.rules import load_rules, parse_rules
from consumers.sensor_state import SensorState, pack_bucket, pack_window, unpack_bucket, unpack_window
from consumers.settings import AggregatorSettings
from consumers.windows import Window
from producers.faults import FaultInjector, FaultRates
from producers.profile import FleetModel, FleetProfile
from telemetry.schema import FieldMap, Reading

START = 1_700_000_000_000
FAR_FUTURE = START + 10**9


def settings(rules=(), **overrides) -> AggregatorSettings:
    base = {"consumer": "test", "window_ms": 10_000, "grace_ms": 2_000, "idle_ms": 15_000, "rolling_ms": 30_000,
            "rules": rules}
    return AggregatorSettings(**{**base, **overrides})


def fleet_readings(sensors: int = 4, per_sensor: int = 120, seed: int = 1, jitter_ms: int = 0) -> list[Reading]:
    """Readings at about 2 Hz per sensor in arrival order; with jitter, some arrive out of event order."""
    rng = random.Random(seed)
    readings = []
    for tick in range(per_sensor):
        for index in range(sensors):
            ts = START + tick * 500 + index * 7 + (rng.randint(-jitter_ms, 0) if jitter_ms else 0)
            readings.append(Reading(f"s{index}", ts, round(20 + rng.gauss(0, 2), 1), round(50 + rng.gauss(0, 5), 1),
                                    tick))
    return readings


def entries_of(readings: list[Reading]) -> list:
    return [(f"{START + i}-0", [part for item in reading.encode().items() for part in item])
            for i, reading in enumerate(readings)]


def run(processor: PartitionProcessor, entries: list, batch_size: int,
        kept: dict[tuple[str, int], Window] | None = None) -> Outputs:
    """Feed entries in batches; return every output of every batch, in order, and the counters.
    `kept` stands for Redis's hash of emitted windows (sensor, slot) -> window, as the worker
    reads and commits it."""
    kept = {} if kept is None else kept
    settings = processor.settings
    total = Outputs()
    for start in range(0, len(entries), batch_size):
        batch = build_batch(entries[start:start + batch_size], FieldMap(), FAR_FUTURE, 300_000)
        found = {(sensor, start): kept.get((sensor, settings.window_slot(start)))
                 for sensor, start in processor.windows_to_fetch(batch)}
        processor.provide({key: window if window is not None and window.start_ms == key[1] else None
                           for key, window in found.items()})
        processor.apply(batch)
        outputs = processor.take_outputs()
        keep_emitted(processor, outputs, kept)
        total.aggregates += outputs.aggregates
        total.alerts += outputs.alerts
        total.dead_letters += outputs.dead_letters
        total.counters += outputs.counters
    return total


def keep_emitted(processor: PartitionProcessor, outputs: Outputs, kept: dict[tuple[str, int], Window]) -> None:
    """What a commit writes to the kept windows."""
    for (sensor, start), window in outputs.closed_windows.items():
        kept[(sensor, processor.settings.window_slot(start))] = unpack_window(pack_window(window))


def records(outputs: Outputs) -> tuple:
    return outputs.aggregates, outputs.alerts, outputs.dead_letters, dict(outputs.counters)


def expected_windows(readings: list[Reading], window_ms: int) -> pd.DataFrame:
    frame = pd.DataFrame([asdict(r) for r in readings])
    frame["window_start"] = frame.ts_ms - frame.ts_ms % window_ms
    grouped = frame.groupby(["sensor", "window_start"])
    return grouped.agg(count=("ts_ms", "size"), temperature_c_mean=("temperature_c", "mean"),
                       temperature_c_std=("temperature_c", "std"), temperature_c_min=("temperature_c", "min"),
                       humidity_pct_max=("humidity_pct", "max"), humidity_pct_std=("humidity_pct", "std"))


def test_windows_equal_pandas_with_out_of_order_readings_within_grace():
    readings = fleet_readings(jitter_ms=1_500)
    processor = PartitionProcessor(settings().processing())
    outputs = run(processor, entries_of(readings), 37).aggregates
    watch(processor, processor.clock_ms + 60_000)  # closes the last windows on the (wall) clock
    outputs += processor.take_outputs().aggregates
    emitted = pd.DataFrame([asdict(o) for o in outputs])
    emitted = emitted.set_index(["sensor", "window_start"]).sort_index()
    expected = expected_windows(readings, 10_000)
    assert list(emitted.index) == list(expected.index)
    for column in expected.columns:
        np.testing.assert_allclose(emitted[column].astype(float), expected[column].astype(float), rtol=1e-12)
    last_of_each = emitted.groupby(level="sensor").tail(1)
    assert set(last_of_each.closed_by) == {"idle"}
    assert set(emitted.drop(last_of_each.index).closed_by) == {"watermark"}


@pytest.mark.parametrize("batch_sizes", [(1, 500), (7, 64), (3, 1000)])
def test_the_same_readings_give_the_same_outputs_whatever_the_batching(batch_sizes):
    readings = fleet_readings(jitter_ms=1_500, per_sensor=200)
    readings[300] = Reading(readings[300].sensor, readings[300].ts_ms, 60.0, 50.0, readings[300].seq)  # a spike
    entries = entries_of(readings)
    rules = load_rules(None)
    results = [records(run(PartitionProcessor(settings(rules).processing()), entries, size)) for size in batch_sizes]
    assert results[0] == results[1]
    assert any(event.kind == "zscore" for event in results[0][1]), "the spike fired no alert"


def checkpoint_round_trip(processor: PartitionProcessor) -> PartitionProcessor:
    """What a new owner gets: every sensor's packed core (with its newest bucket), its older
    buckets, and the clock."""
    sensors = {}
    for name, state in processor.sensors.items():
        restored = SensorState.unpack_core(state.pack_core())
        newest = max(state.buckets)
        assert restored.buckets[newest] == state.buckets[newest]
        for start in sorted(state.buckets)[:-1]:
            bucket_start, summary = unpack_bucket(pack_bucket(start, state.buckets[start]))
            restored.buckets[bucket_start] = summary
        sensors[name] = restored
    return PartitionProcessor(processor.settings, sensors, processor.clock_ms)


def assert_a_checkpoint_anywhere_changes_nothing(entries: list, cuts: tuple[int, ...], batch_size: int) -> None:
    """With the built-in rules, a new owner taking over from a checkpoint after each cut gives the
    outputs of an uninterrupted run."""
    rules = load_rules(None)
    uninterrupted = records(run(PartitionProcessor(settings(rules).processing()), entries, batch_size))
    for cut in cuts:
        first = PartitionProcessor(settings(rules).processing())
        kept: dict = {}
        before = run(first, entries[:cut], batch_size, kept)
        after = run(checkpoint_round_trip(first), entries[cut:], batch_size, kept)
        resumed = tuple(a + b for a, b in zip(records(before)[:3], records(after)[:3]))
        assert resumed == uninterrupted[:3], f"checkpoint after {cut} entries changed the outputs"


def test_a_checkpoint_anywhere_gives_the_outputs_of_an_uninterrupted_run():
    assert_a_checkpoint_anywhere_changes_nothing(entries_of(fleet_readings(jitter_ms=1_500, per_sensor=150)),
                                                 (1, 199, 333), 50)


def rolling_expected(readings: list[Reading], rolling_ms: int) -> list[tuple[int, float, float, float, float]]:
    """Per reading: count, mean, std, min, max of temperature over the buckets overlapping (T - rolling, T]."""
    bucket_ms = rolling_ms // 10
    rows = []
    for i, reading in enumerate(readings):
        seen = [r for r in readings[:i + 1] if r.sensor == reading.sensor]
        newest = max(r.ts_ms for r in seen)
        inside = pd.Series([r.temperature_c for r in seen
                            if r.ts_ms - r.ts_ms % bucket_ms + bucket_ms > newest - rolling_ms])
        rows.append((len(inside), inside.mean(), inside.std(), inside.min(), inside.max()))
    return rows


def test_rolling_stats_equal_pandas_over_whole_buckets_after_every_reading():
    readings = fleet_readings(sensors=2, per_sensor=150, jitter_ms=800)
    processor = PartitionProcessor(settings(rolling_ms=20_000).processing())
    rolling = processor.settings.rolling
    expected = rolling_expected(readings, 20_000)
    for entry, reading, want in zip(entries_of(readings), readings, expected):
        processor.apply(build_batch([entry], FieldMap(), FAR_FUTURE, 300_000))
        stats = rolling.stats(processor.sensors[reading.sensor]).metric("temperature_c")
        got = (stats.count, stats.mean, stats.std, stats.min, stats.max)
        np.testing.assert_allclose(np.array(got, dtype=float), np.array(want, dtype=float), rtol=1e-9)
        assert len(processor.sensors[reading.sensor].buckets) <= 11


def test_late_duplicate_and_missing_readings_are_told_apart():
    processor = PartitionProcessor(settings().processing())
    readings = [Reading("a", START + i * 1000, 20.0, 50.0, i) for i in range(30)]
    readings += [Reading("a", START + 1000, 20.0, 50.0, 1),  # a resent copy
                 Reading("a", START + 2000, 20.0, 50.0, 40),  # seq 30..39 never came; window long emitted
                 Reading("a", START + 31_000, 20.0, 50.0, 41)]
    out = run(processor, entries_of(readings), 100)
    counters = out.counters
    assert (counters["duplicates"], counters["missing_seq"], counters["late"]) == (1, 10, 1)
    assert counters["processed"] == 32 and counters["dead_lettered"] == 0 and not out.dead_letters
    revised = [aggregate for aggregate in out.aggregates if aggregate.window_start == START]
    assert [(a.revision, a.count) for a in revised] == [(0, 10), (1, 11)]


def test_a_dead_lettered_reading_is_counted_once_not_again_as_missing():
    """Each lost reading once: dead-lettered readings whose sensor and seq are readable take their
    place in the sequence; only seq numbers that never came count as missing."""
    readings = [Reading("a", START + i * 1000, 20.0, 50.0, i) for i in range(12) if i != 10]
    entries = entries_of(readings)
    entries[5] = (entries[5][0], [value.replace("20.0", "2_0.0") for value in entries[5][1]])
    entries[7] = (entries[7][0], [value.replace(str(START + 7000), str(FAR_FUTURE + 10**9)) for value in entries[7][1]])
    deliveries = {entry_id: 1 for entry_id, _ in entries} | {entries[3][0]: 6}
    processor = PartitionProcessor(settings().processing())
    processor.apply(build_batch(entries, FieldMap(), FAR_FUTURE, 300_000, deliveries, max_deliveries=5))
    out = processor.take_outputs()
    assert sorted(letter.reason.split(":")[0] for letter in out.dead_letters) == ["future", "malformed",
                                                                                 "max-deliveries"]
    assert (out.counters["dead_lettered"], out.counters["missing_seq"], out.counters["processed"]) == (3, 1, 8)
    assert processor.sensors["a"].max_seq == 11 and processor.sensors["a"].missing_seq == 1


SILENT_RULES = parse_rules('[[rule]]\nname = "quiet"\nkind = "silent"\nafter = "20s"\n', "test")


def test_a_sensor_seen_only_in_dead_letters_is_never_judged_silent():
    bad = entries_of([Reading("b", START, 20.0, 50.0, 0)])
    bad = [(bad[0][0], [value.replace("20.0", "2_0.0") for value in bad[0][1]])]
    first = PartitionProcessor(settings(SILENT_RULES).processing())
    first.apply(build_batch(bad, FieldMap(), FAR_FUTURE, 300_000))
    assert first.sensors["b"].set_aside == [0]
    restored = {"b": SensorState.unpack_core(first.sensors["b"].pack_core())}  # as the next owner loads it
    second = PartitionProcessor(settings(SILENT_RULES).processing(), restored, first.clock_ms)
    out = run(second, entries_of([Reading("a", START + i * 10_000, 20.0, 50.0, i) for i in range(12)]), 5)
    assert out.counters["processed"] == 12 and out.alerts == []


def test_silence_is_judged_on_the_partitions_event_clock_not_on_arrival():
    """Sensor b stops while a keeps going: b's window closes and its silent alert fires when a's
    readings carry the clock past the deadlines, stamped at the deadline itself."""
    processor = PartitionProcessor(settings(SILENT_RULES).processing())
    readings = [Reading("a", START + i * 1000, 20.0, 50.0, i) for i in range(60)]
    readings.insert(3, Reading("b", START + 2500, 21.0, 50.0, 0))
    out = run(processor, entries_of(readings), 1000)
    fired = [o for o in out.alerts if o.state == "firing"]
    assert [(o.sensor, o.ts) for o in fired] == [("b", START + 2500 + 20_000)]
    idle = [o for o in out.aggregates if o.closed_by == "idle"]
    assert [(o.sensor, o.window_start) for o in idle] == [("b", START)]


def watch(processor: PartitionProcessor, until_ms: int, step_ms: int = 500) -> None:
    """Reads that find the partition caught up, every `step_ms`, from its clock until `until_ms`."""
    for wall in range(processor.clock_ms, until_ms + step_ms, step_ms):
        processor.observe(min(wall, until_ms), caught_up=True)


def test_the_wall_clock_moves_silence_only_when_caught_up_and_gives_the_same_events():
    readings = [Reading("b", START + 2500, 21.0, 50.0, 0)]
    by_wall = PartitionProcessor(settings(SILENT_RULES).processing())
    run(by_wall, entries_of(readings), 10)
    watch(by_wall, START + 2500 + 20_000 + WALL_CLOCK_MARGIN_MS - 1)
    assert not by_wall.outputs.alerts, "fired before the deadline plus the margin"
    watch(by_wall, START + 60_000 + WALL_CLOCK_MARGIN_MS)
    by_data = PartitionProcessor(settings(SILENT_RULES).processing())
    data = run(by_data, entries_of(readings + [Reading("a", START + 60_000, 20.0, 50.0, 0)]), 10)
    wall_events = [(e.alert_id, e.state, e.ts, e.value) for e in by_wall.outputs.alerts]
    data_events = [(e.alert_id, e.state, e.ts, e.value) for e in data.alerts]
    assert wall_events == data_events == [(f"quiet:b:{START + 22_500}", "firing", START + 22_500, 20.0)]
    assert [a.window_start for a in by_wall.outputs.aggregates] == [START]


def test_threshold_episode_fires_after_for_and_resolves_past_hysteresis_once():
    rules = parse_rules('[[rule]]\nname = "hot"\nkind = "threshold"\nabove = 40.0\nfor = "2s"\nhysteresis = 1.0\n',
                        "test")
    temperatures = [30, 41, 42, 43, 44, 39.5, 40.5, 38, 38, 41]
    readings = [Reading("a", START + i * 1000, t, 50.0, i) for i, t in enumerate(temperatures)]
    out = run(PartitionProcessor(settings(rules).processing()), entries_of(readings), 3)
    events = [(o.state, o.ts, o.alert_id) for o in out.alerts]
    assert events == [("firing", START + 3000, f"hot:a:{START + 1000}"),
                      ("resolved", START + 7000, f"hot:a:{START + 1000}")]


def test_stuck_and_rate_of_change_rules():
    rules = parse_rules('[[rule]]\nname = "stuck"\nkind = "stuck"\nmin_count = 5\nover = "5s"\n\n'
                        '[[rule]]\nname = "jump"\nkind = "rate_of_change"\nper_minute = 30.0\nover = "5s"\n', "test")
    readings = [Reading("a", START + i * 1000, 25.0, 50.0, i) for i in range(12)]
    readings.append(Reading("a", START + 12_000, 30.0, 50.0, 12))  # 5 degrees in a second: 300/min
    out = run(PartitionProcessor(settings(rules).processing()), entries_of(readings), 4)
    fired = {(o.rule, o.state) for o in out.alerts}
    assert fired == {("stuck", "firing"), ("stuck", "resolved"), ("jump", "firing")}  # the change ends it


def test_a_first_look_after_an_outage_moves_no_clock():
    """Redis paused for minutes: the first reads after it find nothing yet (the producer is still
    resending), which must not make every sensor look silent; watching for real does."""
    processor = PartitionProcessor(settings(SILENT_RULES).processing())
    run(processor, entries_of([Reading("b", START, 21.0, 50.0, 0)]), 10)
    processor.observe(START + 1_000, caught_up=True)
    processor.observe(START + 180_000, caught_up=True)  # the outage: no look in between
    assert not processor.outputs.alerts and processor.clock_ms <= START + 2_000
    processor.observe(START + 190_000, caught_up=False)  # a backlog arrives
    watch(processor, START + 190_000 + 30_000)
    assert [event.ts for event in processor.outputs.alerts] == [START + 20_000]


def simulated(names: list[str], rate_hz: float, seconds: int, faults: FaultRates | None = None) -> list:
    """What `python -m producers` would write: the simulator's series, rounded as it rounds them."""
    profile = FleetProfile.build(names, 0)
    model = FleetModel(profile, START)
    injector = FaultInjector(faults, profile.keys, 1000 / rate_hz) if faults else None
    readings = []
    for tick in range(int(seconds * rate_hz)):
        seq = np.full(len(names), tick, dtype=np.uint64)
        ts = START + round(tick * 1000 / rate_hz)
        temperature, humidity = model.step(seq, np.full(len(names), ts))
        sent = [True] * len(names)
        if injector:
            temperature, humidity, sent = injector.apply(seq, temperature, humidity)
        readings += [Reading(name, ts, round(float(t), 1), round(float(h), 1), tick)
                     for name, t, h, was_sent in zip(names, temperature, humidity, sent) if was_sent]
    return readings


@pytest.mark.parametrize("rate_hz", [0.1, 1, 10, 100])
def test_no_built_in_rule_fires_on_healthy_sensors_at_any_sample_rate(rate_hz):
    readings = simulated(["h1", "h2"], rate_hz, seconds=900)
    out = run(PartitionProcessor(settings(load_rules(None), window_ms=60_000, rolling_ms=300_000).processing()),
              entries_of(readings), 5000)
    assert [(event.rule, event.sensor, event.value) for event in out.alerts] == []


FAULT_RULES = {"spike": "temperature-jump", "stuck": "sensor-stuck", "dropout": "sensor-silent",
               "drift": "temperature-high"}


@pytest.mark.parametrize("rate_hz", [0.1, 1, 10])  # 100 Hz too, but the simulator takes minutes to write it
@pytest.mark.parametrize("fault", sorted(FAULT_RULES))
def test_each_injected_fault_kind_fires_its_rule_at_any_sample_rate(fault, rate_hz):
    """Faults last minutes, not readings, so the built-in rule meant for each notices it at every rate."""
    per_hour = 60 if fault == "spike" else 10  # a spike is one reading; the others last minutes
    readings = simulated(["f1"], rate_hz, seconds=1800, faults=FaultRates(**{fault: per_hour}))
    out = run(PartitionProcessor(settings(load_rules(None), window_ms=60_000, rolling_ms=300_000).processing()),
              entries_of(readings), 5000)
    assert FAULT_RULES[fault] in {event.rule for event in out.alerts if event.state == "firing"}
