"""Flap detection: Nagios' weights checked by hand, hysteresis, and the events of a sensor
oscillating around a threshold, the same whatever the batching or where a checkpoint fell."""

from __future__ import annotations

import pytest

from consumers.flapping import FlapLimits, history_of, percent_change, verdict
from consumers.processor import PartitionProcessor
from consumers.rules import parse_rules
from telemetry.errors import UsageError
from telemetry.schema import Reading
from tests.test_processor import START, checkpoint_round_trip, entries_of, records, run, settings


def states_with_changes_at(positions: set[int]) -> list[bool]:
    """21 states, oldest first, changing between position x - 1 and x for each x in `positions` (1..20)."""
    states, state = [False], False
    for x in range(1, 21):
        state = state != (x in positions)
        states.append(state)
    return states


def test_weights_run_from_oldest_to_newest_by_hand():
    # Nagios: the change at position x (1 = between the two oldest states, 20 = the newest change)
    # weighs 0.75 + (x - 1) * 0.5 / 19, and percent = 100 * sum / 20.
    assert percent_change(history_of(states_with_changes_at({20}))) == pytest.approx(1.25 * 5)  # 6.25
    assert percent_change(history_of(states_with_changes_at({1}))) == pytest.approx(0.75 * 5)  # 3.75
    # Eight old changes, x = 1..8: 8 * 0.75 + (0 + 1 + ... + 7) / 38 = 6 + 28/38 = 6.736842...
    old = percent_change(history_of(states_with_changes_at(set(range(1, 9)))))
    assert old == pytest.approx((6 + 28 / 38) * 5) == pytest.approx(33.6842105)
    # The same eight changes, but the newest ones, x = 13..20: 6 + (12 + ... + 19) / 38 = 9.263157...
    new = percent_change(history_of(states_with_changes_at(set(range(13, 21)))))
    assert new == pytest.approx((6 + 124 / 38) * 5) == pytest.approx(46.3157895)
    # With limits 35/40, recent changes mean flapping and old ones do not: inverted weights
    # (Kapacitor's, sensu-go 3346's) would give the opposite verdicts.
    limits = FlapLimits(low=35, high=40)
    assert verdict(False, new, limits) and not verdict(True, old, limits)
    # Every one of the 20 possible changes: sum = 20 * 1.0 = 20, 100 %.
    assert percent_change(history_of([i % 2 == 1 for i in range(21)])) == pytest.approx(100.0)
    assert percent_change(history_of([True] * 21)) == 0.0


def test_hysteresis_keeps_the_verdict_between_the_limits():
    limits = FlapLimits(low=20, high=30)
    assert verdict(False, 30.0, limits) and not verdict(False, 29.9, limits)
    assert verdict(True, 25.0, limits) and not verdict(False, 25.0, limits)
    assert not verdict(True, 20.0, limits) and verdict(True, 20.1, limits)


def test_flapping_limits_in_rules_toml():
    base = '[[rule]]\nname = "hot"\nkind = "threshold"\nabove = 40.0\n'
    assert parse_rules(base, "t")[0].flapping == FlapLimits(20.0, 30.0)  # on by default, Nagios' limits
    assert parse_rules(base + "flapping = false\n", "t")[0].flapping is None
    assert parse_rules(base + "flapping = { low = 10, high = 50 }\n", "t")[0].flapping == FlapLimits(10.0, 50.0)
    for bad, says in (("flapping = { low = 40, high = 30 }", "0 <= low < high <= 100"),
                      ("flapping = 3", "expected true, false"), ('flapping = { hi = 3 }', "expected true, false")):
        with pytest.raises(UsageError, match=says):
            parse_rules(base + bad + "\n", "t")


RULES = parse_rules('[[rule]]\nname = "hot"\nkind = "threshold"\nabove = 40.0\nseverity = "critical"\n', "t")


def oscillating() -> list[Reading]:
    """Steady, then 40 readings around the threshold every other second, then steady hot, then steady
    cool: one sensor at 1 Hz, and a calm second sensor beside it."""
    temperatures = [35.0] * 10 + [41.0 if i % 2 else 39.0 for i in range(40)] + [45.0] * 40 + [30.0] * 40
    readings = []
    for i, temperature in enumerate(temperatures):
        readings.append(Reading("osc", START + i * 1000, temperature, 50.0, i))
        readings.append(Reading("calm", START + i * 1000 + 3, 21.0, 50.0, i))
    return readings


def test_an_oscillating_sensor_gives_one_flapping_start_and_stop_and_no_storm():
    out = run(PartitionProcessor(settings(RULES).processing()), entries_of(oscillating()), 1000)
    events = [(event.state, event.ts - START) for event in out.alerts]
    flapping = [event for event in out.alerts if event.state.startswith("flapping")]
    assert [event.state for event in flapping] == ["flapping", "flapping_stopped"]
    start, stop = flapping
    assert start.alert_id == stop.alert_id == f"hot:osc:{start.ts}:flapping"
    assert start.value >= 30 and start.threshold == 30 and stop.value <= 20 and stop.unit == "%"
    between = [e for e in out.alerts if start.ts < e.ts < stop.ts and e.state in ("firing", "resolved")]
    assert between == []
    before = [state for state, ts in events if ts < start.ts - START]
    assert before and len(before) <= 6, "flapping started late"  # 20 changes happened, these were notified
    # When it stops, the sensor is steady hot: the episode notified before flapping (if any) is
    # resolved, the one firing now is notified once, and it resolves once when the sensor cools.
    after = [(e.state, e.alert_id) for e in out.alerts if e.ts >= stop.ts and not e.state.startswith("flapping")]
    firing_now = [alert_id for state, alert_id in after if state == "firing"]
    assert len(firing_now) == 1 and after[-1] == ("resolved", firing_now[0])
    assert {e.sensor for e in out.alerts} == {"osc"}
    # Downstream sees every episode it was told of as firing resolved in the end.
    told = {}
    for event in out.alerts:
        if event.state in ("firing", "resolved"):
            told[event.alert_id] = event.state
    assert set(told.values()) == {"resolved"}


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_flapping_events_are_the_same_whatever_the_batching_or_the_checkpoint(batch_size):
    entries = entries_of(oscillating())
    whole = records(run(PartitionProcessor(settings(RULES).processing()), entries, 1000))
    assert records(run(PartitionProcessor(settings(RULES).processing()), entries, batch_size)) == whole
    for cut in (25, 61, 101, 150):  # before, while and after flapping
        first = PartitionProcessor(settings(RULES).processing())
        before = run(first, entries[:cut], batch_size)
        after = run(checkpoint_round_trip(first), entries[cut:], batch_size)
        assert before.alerts + after.alerts == whole[1], f"checkpoint after {cut} entries changed the events"


def test_without_flap_detection_every_change_is_notified():
    rules = parse_rules('[[rule]]\nname = "hot"\nkind = "threshold"\nabove = 40.0\nflapping = false\n', "t")
    out = run(PartitionProcessor(settings(rules).processing()), entries_of(oscillating()), 1000)
    assert [e.state for e in out.alerts].count("firing") == 20 and not any(
        e.state.startswith("flapping") for e in out.alerts)


def test_real_workers_give_the_same_flapping_events_with_two_workers_and_another_batch_size(db):
    """Against a real redis-server: one worker reading 1000 entries at a time, and two workers of
    another group reading 7 at a time and splitting the partitions, give the same events."""
    from tests.aggregation_helpers import add_readings, drain, layout_of, make_worker, outputs

    layout = layout_of(db, 4)
    readings = []
    for index in range(6):  # six sensors over the partitions, oscillating at different phases
        for reading in oscillating():
            if reading.sensor == "osc":
                readings.append(Reading(f"osc-{index}", reading.ts_ms + index * 100, reading.temperature_c, 50.0,
                                        reading.seq))
    readings.sort(key=lambda reading: reading.ts_ms)
    add_readings(db, layout, readings)
    later = START + 10**7
    common = {"window_ms": 10_000, "grace_ms": 2_000, "rules": RULES}
    drain(make_worker(db, layout, group="one", batch=1000, **common), later)
    pair = [make_worker(db, layout, group="two", consumer=name, batch=7, **common) for name in ("a", "b")]
    quiet_rounds = 0
    for worker in pair:
        worker.clock = lambda: later
        worker.membership.beat(later)  # both members before either takes partitions
    while quiet_rounds < 5:
        handled = sum(worker.step(later) for worker in pair)
        quiet_rounds = 0 if handled else quiet_rounds + 1
    for worker in pair:
        assert worker.owned, "a worker of the pair owned no partition"
        worker.release_all()
    columns = ["alert_id", "state", "ts", "value", "threshold"]
    one, two = (outputs(db, layout, "alerts", group)[columns].sort_values(columns[:3]).reset_index(drop=True)
                for group in ("one", "two"))
    assert (one.state == "flapping").sum() == 6 and (one.state == "flapping_stopped").sum() == 6
    assert one.equals(two)
