"""Pure simulator logic: profiles, noise, faults and the rate scheduler (no Redis)."""

import numpy as np

from producers.faults import FaultInjector, FaultRates
from producers.profile import FleetModel, FleetProfile
from producers.scheduler import RateScheduler

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


def test_scheduler_catches_up_instead_of_waiting_when_behind():
    scheduler = RateScheduler(rate_hz=10.0, start_ms=START)
    scheduler.take()
    assert scheduler.wait_s(START + 5_000) == 0.0
    assert scheduler.wait_s(START) == 0.1
