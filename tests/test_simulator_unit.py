"""Pure simulator logic: profiles, noise, faults and the rate scheduler (no Redis)."""

import numpy as np
import pytest

from producers.faults import FaultInjector, FaultRates
from producers.profile import FleetModel, FleetProfile
from producers.scheduler import RateScheduler
from producers.simulation import SEND_INTERVAL_S, Simulation, SimulationSettings, sensor_phases_ms
from telemetry.schema import FieldMap

START = 1_700_000_000_000


def series(names, seed, ticks=200, faults=None, interval_ms=1000):
    profile = FleetProfile.build(names, seed)
    model = FleetModel(profile, START)
    injector = FaultInjector(faults, profile.keys, interval_ms) if faults else None
    temps, hums, sent_all = [], [], []
    for tick in range(ticks):
        seq = np.full(len(names), tick, dtype=np.uint64)
        t, h = model.step(seq, np.full(len(names), START + tick * interval_ms))
        sent = np.ones(len(names), dtype=bool)
        if injector:
            t, h, sent = injector.apply(seq, t, h)
        temps.append(t)
        hums.append(h)
        sent_all.append(sent)
    return np.array(temps), np.array(hums), np.array(sent_all)


def test_same_name_and_seed_give_the_same_series_in_any_fleet():
    alone, _, _ = series(["kitchen"], seed=3)
    in_fleet, _, _ = series(["attic", "kitchen", "cellar"], seed=3)
    np.testing.assert_array_equal(alone[:, 0], in_fleet[:, 1])


def test_other_seed_or_name_gives_another_series():
    base, _, _ = series(["kitchen"], seed=3)
    reseeded, _, _ = series(["kitchen"], seed=4)
    renamed, _, _ = series(["kitchen2"], seed=3)
    assert not np.allclose(base, reseeded)
    assert not np.allclose(base, renamed)


def test_humidity_moves_against_temperature_and_stays_in_range():
    temps, hums, _ = series(["s1", "s2"], seed=1, ticks=1440, interval_ms=60_000)
    for column in range(2):
        assert np.corrcoef(temps[:, column], hums[:, column])[0, 1] < -0.5
    assert hums.min() >= 0 and hums.max() <= 100


def test_noise_is_correlated_between_consecutive_readings():
    profile = FleetProfile.build(["s"], 0)
    model = FleetModel(profile, START)
    noise = []
    for tick in range(2000):
        model.step(np.array([tick], dtype=np.uint64), np.array([START]))
        noise.append(model.temperature_noise[0])
    noise = np.array(noise)
    assert np.corrcoef(noise[:-1], noise[1:])[0, 1] > 0.8


def test_fault_rates_are_honoured():
    names = [f"s{i}" for i in range(200)]
    clean, _, _ = series(names, seed=0, ticks=100)
    spiked, _, _ = series(names, seed=0, ticks=100, faults=FaultRates(spike=180))  # 5% at 1 Hz
    spike_share = (np.abs(spiked - clean) >= 8).mean()
    assert 0.04 < spike_share < 0.06
    _, _, sent = series(names, seed=0, ticks=400, faults=FaultRates(dropout=2))
    assert 0.0 < 1 - sent.mean() < 0.3


def test_stuck_sensor_repeats_its_value():
    temps, hums, _ = series(["s"], seed=0, ticks=1800, faults=FaultRates(stuck=20))
    repeats = (np.diff(temps[:, 0]) == 0) & (np.diff(hums[:, 0]) == 0)
    assert repeats.sum() >= 6 * 60 - 1  # an episode lasts 6 minutes at least


def test_drift_moves_the_level_away():
    clean, _, _ = series(["s"], seed=0, ticks=1800)
    drifted, _, _ = series(["s"], seed=0, ticks=1800, faults=FaultRates(drift=20))
    assert (drifted - clean).max() > 40.0  # 2 degrees a minute for 20 minutes at least


def test_scheduler_holds_its_rate_over_an_hour_without_drift():
    scheduler = RateScheduler(rate_hz=3.0, start_ms=START)
    ticks = [scheduler.take()[1] for _ in range(3 * 3600 + 1)]
    assert ticks[-1] - ticks[0] == 3_600_000
    assert max(np.diff(ticks)) - min(np.diff(ticks)) <= 1


class RecordingWriter:
    """Stands in for StreamWriter: keeps each write's rows."""

    def __init__(self):
        self.writes: list[list[str]] = []

    def submit(self, rows):
        self.writes.append(rows)

    def flush(self):
        pass

    def close(self):
        pass


def simulation(names, writer, **settings):
    start = settings.pop("start", START)
    return Simulation(SimulationSettings(tuple(names), **settings), writer, FieldMap(), start, [None] * len(names))


def ts_of(row):
    return int(row.split("\t")[1])


def test_sensors_sample_at_their_own_phase_and_keep_their_rate():
    writer = RecordingWriter()
    simulation(["a", "b", "c"], writer, rate_hz=2.0, count=50, backfill_start_ms=START).run(
        lambda: START + 10**9, lambda _: None, lambda: False)
    rows = [row for write in writer.writes for row in write]
    by_sensor = {name: [ts_of(row) for row in rows if row.startswith(name + "\t")] for name in "abc"}
    for stamps in by_sensor.values():
        assert len(stamps) == 50 and START <= stamps[0] < START + 500
        assert set(np.diff(stamps)) == {500}
    assert len({stamps[0] for stamps in by_sensor.values()}) == 3  # three phases, not one
    assert [ts_of(row) for row in rows] == sorted(ts_of(row) for row in rows)  # event-time order


def test_phases_depend_on_name_and_seed_not_on_the_fleet():
    keys = FleetProfile.build(["attic", "kitchen"], 5).keys
    alone = FleetProfile.build(["kitchen"], 5).keys
    assert sensor_phases_ms(keys, 1000.0)[1] == sensor_phases_ms(alone, 1000.0)[0]


def test_a_live_fleet_arrives_spread_over_the_period_not_in_one_burst():
    writer = RecordingWriter()
    live = simulation([f"s{i}" for i in range(2000)], writer, count=1)
    for now in range(START, START + 1001, 50):
        written = live.step(now)
        assert written == 0 or max(ts_of(row) for row in writer.writes[-1]) <= now
    sizes = [len(write) for write in writer.writes]
    assert sum(sizes) == 2000 and len(sizes) >= 20
    assert max(sizes) < 2000 * 0.1  # 5% expected in each 50 ms


def test_a_live_run_sleeps_until_the_next_reading_is_due_and_writes_many_at_a_time():
    live = simulation([f"s{i}" for i in range(50)], RecordingWriter(), count=3)
    first_due = START + int(live.phase_ms.min())
    assert live.wait_s(first_due - 150, first_due - 150) == 0.15
    assert live.wait_s(first_due - 1, first_due - 30) == pytest.approx(SEND_INTERVAL_S - 0.029)  # not one by one
    assert live.wait_s(START + 5_000, START + 4_000) == 0.0  # behind


def test_fast_sensors_are_written_every_period_not_every_send_interval():
    fast = simulation(["s"], RecordingWriter(), rate_hz=100.0, count=3)
    first_due = START + int(fast.phase_ms.min())
    assert fast.wait_s(first_due - 1, first_due - 5) == pytest.approx(0.006)  # 10 ms after the last step


def test_a_live_run_behind_writes_everything_due_at_once():
    writer = RecordingWriter()
    live = simulation([f"s{i}" for i in range(50)], writer, count=3)
    live.run(lambda: START + 5_000, lambda _: None, lambda: False)
    assert len(writer.writes) == 1 and sum(live.counts().values()) == 50 * 3


def test_a_backfill_to_now_writes_no_reading_from_the_future():
    writer = RecordingWriter()
    now = START + 10_500
    simulation([f"s{i}" for i in range(100)], writer, backfill_start_ms=START).run(
        lambda: now, lambda _: None, lambda: False)
    stamps = [ts_of(row) for write in writer.writes for row in write]
    assert stamps and max(stamps) <= now
    assert len(stamps) >= 100 * 9
