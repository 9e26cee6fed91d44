"""The partitioned aggregator against a real redis-server: results, bad input, takeover, fencing,
idempotent commits, groups and streams of other producers."""

from __future__ import annotations

import json
import time
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest
import redis

from consumers.assignment import assign
from consumers.batch import build_batch
from consumers.checkpoint import commit_request
from consumers.lease import LeaseClient
from consumers.rolling_view import rolling_views
from telemetry.errors import UsageError
from telemetry.keys import Keys
from telemetry.partitions import open_layout, partition_of
from telemetry.schema import FieldMap, Reading
from tests.aggregation_helpers import (
    START,
    add_readings,
    counters,
    drain,
    layout_of,
    make_worker,
    outputs,
    pending,
    watch_idle,
)
from tests.conftest import run_cli

LATER = START + 10**9  # a wall clock far past the data: nothing is "future"


def random_readings(sensors=("a", "b", "c", "d", "e"), per_sensor=300, seed=1) -> list[Reading]:
    rng = np.random.default_rng(seed)
    out = []
    for seq in range(per_sensor):
        for index, sensor in enumerate(sensors):
            ts = START + seq * 1000 + int(rng.integers(0, 900))
            out.append(Reading(sensor, ts, round(float(rng.normal(20 + index, 2)), 1),
                               round(float(np.clip(rng.normal(50, 10), 0, 100)), 1), seq))
    return out


def test_windows_equal_pandas_and_every_entry_is_acknowledged(db):
    layout = layout_of(db)
    readings = random_readings()
    add_readings(db, layout, readings)
    worker = make_worker(db, layout, window_ms=10_000, grace_ms=1_000, batch=64)
    drain(worker, LATER)
    watch_idle(worker, LATER, 90)  # caught up: the wall clock closes the last windows
    frame = pd.DataFrame([asdict(reading) for reading in readings])
    frame["window_start"] = frame.ts_ms - frame.ts_ms % 10_000
    expected = frame.groupby(["sensor", "window_start"]).temperature_c.agg(["size", "mean", "std"])
    emitted = outputs(db, layout, "aggregates").astype({"window_start": int, "count": int})
    emitted = emitted.set_index(["sensor", "window_start"]).sort_index()
    assert list(emitted.index) == list(expected.index)
    assert (emitted["count"] == expected["size"]).all()
    np.testing.assert_allclose(emitted.temperature_c_mean.astype(float), expected["mean"], rtol=1e-10)
    np.testing.assert_allclose(emitted.temperature_c_std.astype(float), expected["std"], rtol=1e-10)
    assert pending(db, layout) == 0
    assert counters(db, layout)["processed"] == len(readings)
    for keys in layout.groups("aggregators"):  # each sensor's outputs sit in its own partition
        sensors = {fields["sensor"] for _, fields in db.xrange(keys.aggregates)}
        assert all(partition_of(sensor, layout.count) == keys.partition.index for sensor in sensors)
    rolling = rolling_views(db, [(layout.partition_for("a").group("aggregators"), ["a"])])["a"]
    assert rolling.count > 0 and rolling.as_of_ts == max(r.ts_ms for r in readings if r.sensor == "a")


def test_a_drain_longer_than_the_lease_reads_everything(db):
    """The soak's reference worker (issue 23) drains in-process: its leases must be renewed as a
    running worker's are, else a drain outlasting a lease loses every partition at a commit and
    stops early, looking drained."""
    layout = layout_of(db, 2)
    readings = random_readings(per_sensor=40)
    add_readings(db, layout, readings)
    worker = make_worker(db, layout, batch=4, lease_ms=1000)
    apply = worker._apply  # processing slowed between read and commit: ~30 steps, 1.5 s, past the 1 s lease
    worker._apply = lambda owned, entries: time.sleep(0.05) or apply(owned, entries)
    drain(worker, LATER)
    assert counters(db, layout)["processed"] == len(readings) and pending(db, layout) == 0
    assert "lapsed" not in worker.log.getvalue()


def test_malformed_entries_are_dead_lettered_and_the_batch_goes_on(db):
    layout = layout_of(db, 1)
    good = Reading("ok", START, 20.0, 50.0, 0).encode()
    bad = [({k: v for k, v in good.items() if k not in ("temperature_c", "humidity_pct")},
            "temperature_c/humidity_pct=None: both missing"),
           (dict(good, temperature_c="4_5.5"), "not a plain number"),
           (dict(good, ts=str(2**63)), "above 2^53"),
           (dict(good, temperature_c="1e308"), "outside -80..150"),
           (dict(good, sensor="no spaces"), "sensor=")]
    stream = layout.partitions[0].readings
    for fields, _ in bad:
        db.xadd(stream, fields)
    for seq in range(3):
        db.xadd(stream, dict(good, seq=str(seq), ts=str(START + seq)))
    drain(make_worker(db, layout), LATER)
    dead = outputs(db, layout, "dead-letter")
    assert len(dead) == len(bad)
    for (fields, reason), row in zip(bad, dead.itertuples()):
        assert reason in row.reason and row.reason.startswith("malformed:")
        assert json.loads(row.fields) == fields
    assert counters(db, layout)["processed"] == 3 and pending(db, layout) == 0


def test_previous_owners_pending_entries_are_taken_over_in_order_and_poison_dead_lettered(db):
    layout = layout_of(db, 1)
    readings = [Reading("s", START + i * 1000, 20.0, 50.0, i) for i in range(30)]
    add_readings(db, layout, readings)
    crashed = make_worker(db, layout, consumer="crashed")
    crashed.ensure_group(layout.partitions[0].group("aggregators"))
    db.xreadgroup("aggregators", "crashed", {layout.partitions[0].readings: ">"}, count=10)  # read, never committed
    survivor = make_worker(db, layout, consumer="survivor", window_ms=5_000)
    drain(survivor, LATER)
    watch_idle(survivor, LATER, 90)
    survivor.release_all()
    assert counters(db, layout)["processed"] == 30 and pending(db, layout) == 0
    windows = outputs(db, layout, "aggregates")
    assert windows["count"].astype(int).tolist() == [5] * 6, "the taken-over entries were not applied in order"
    # A poison entry: delivered again and again to workers that die before committing it.
    add_readings(db, layout, [Reading("s", START + 40_000, 20.0, 50.0, 30)])
    for attempt in range(6):
        db.xreadgroup("aggregators", f"dies-{attempt}", {layout.partitions[0].readings: ">"}, count=1)
        if attempt:
            db.xclaim(layout.partitions[0].readings, "aggregators", f"dies-{attempt}", 0,
                      [db.xpending_range(layout.partitions[0].readings, "aggregators", "-", "+", 1)[0]["message_id"]])
    drain(make_worker(db, layout, consumer="last", max_deliveries=5), LATER)
    dead = outputs(db, layout, "dead-letter")
    assert dead.reason.tolist() == ["max-deliveries: delivered 7 times"]


def test_a_fenced_worker_writes_nothing_and_drops_the_partition(db):
    layout = layout_of(db, 1)
    add_readings(db, layout, [Reading("s", START + i * 1000, 20.0, 50.0, i) for i in range(10)])
    zombie = make_worker(db, layout, consumer="zombie", window_ms=2_000, grace_ms=0)
    zombie.step(LATER)  # takes the partition and commits the first entries
    keys = layout.partitions[0].group("aggregators")
    before = (db.xlen(keys.aggregates), db.hgetall(keys.counters), db.hgetall(keys.checkpoint))
    db.delete(keys.lease)  # its lease lapsed while it was paused
    assert LeaseClient(db, "usurper", 10_000).acquire(keys).epoch == 2
    add_readings(db, layout, [Reading("s", START + i * 1000, 20.0, 50.0, i) for i in range(10, 20)])
    zombie.step(LATER)
    assert 0 not in zombie.owned and zombie.stats.fenced == 1
    assert (db.xlen(keys.aggregates), db.hgetall(keys.counters), db.hgetall(keys.checkpoint)) == before
    assert db.xpending(keys.readings, "aggregators")["pending"] == 0, "a fenced worker's read took entries"


def test_a_read_at_the_owners_epoch_under_another_token_takes_nothing(db):
    """Two owners with one epoch number, as after a failover lost an increment: the lease's token
    fences the read, so the stale one cannot hide new entries in its pending list."""
    layout = layout_of(db, 1)
    keys = layout.groups("aggregators")[0]
    add_readings(db, layout, [Reading("s", START + i * 1000, 20.0, 50.0, i) for i in range(10)])
    worker = make_worker(db, layout)
    worker.step(LATER)
    assert 0 in worker.owned and pending(db, layout) == 0
    db.set(keys.lease, "successor:0000", px=60_000)  # the epoch stays the worker's
    add_readings(db, layout, [Reading("s", START + i * 1000, 20.0, 50.0, i) for i in range(10, 20)])
    worker.step(LATER)
    assert 0 not in worker.owned and worker.stats.fenced == 1
    assert pending(db, layout) == 0 and counters(db, layout)["processed"] == 10


def test_a_resent_commit_is_a_duplicate_and_a_bad_key_stops_it_before_any_write(db):
    layout = layout_of(db, 1)
    add_readings(db, layout, [Reading("s", START + i * 1000, 20.0, 50.0, i) for i in range(10)])
    worker = make_worker(db, layout, window_ms=2_000, grace_ms=0)
    worker.step(LATER)
    owned = worker.owned[0]
    owned.processor.apply(build_batch(
        [("9999999999999-0", [part for item in Reading("s", START + 20_000, 21.0, 50.0, 10).encode().items()
                               for part in item])], FieldMap(), LATER, 300_000))
    request = commit_request(owned.keys, worker.token, owned.lease.epoch, owned.commit + 1, owned.processor,
                             owned.processor.take_outputs(), {"batch": str(owned.commit + 1)}, 1000)
    keys = owned.keys
    db.set(keys.alerts, "not a stream")
    state_before = worker.raw.hgetall(keys.state)
    script_keys, args = request.script_call()
    assert worker.commit_script(keys=script_keys, args=args)[0] == b"WRONGTYPE"
    assert worker.raw.hgetall(keys.state) == state_before and db.hget(keys.checkpoint, "commit") == str(owned.commit)
    db.delete(keys.alerts)
    assert worker.commit_script(keys=script_keys, args=args)[0] == b"OK"
    written = (db.xlen(keys.aggregates), db.hgetall(keys.counters))
    assert worker.commit_script(keys=script_keys, args=args)[0] == b"DUPLICATE"
    assert (db.xlen(keys.aggregates), db.hgetall(keys.counters)) == written


def test_two_groups_are_independent_pipelines(db):
    layout = layout_of(db, 2)
    readings = random_readings(per_sensor=40)
    add_readings(db, layout, readings)
    drain(make_worker(db, layout, group="first", window_ms=5_000), LATER)
    drain(make_worker(db, layout, group="second", window_ms=5_000), LATER)
    assert counters(db, layout, "first") == counters(db, layout, "second")
    assert counters(db, layout, "first")["processed"] == len(readings)
    assert "late" not in counters(db, layout, "second")


def test_seed_stream_without_seq_counts_identical_readings_by_entry_id(db, redis_url):
    """50 identical readings of a stuck sensor in one millisecond are 50 readings, not one."""
    pipe = db.pipeline(transaction=False)
    for index in range(50):
        pipe.xadd("app:event", {"sensor_id": "stuck1", "temp": "21.5", "humidity": "40"}, id=f"{START}-{index}")
    pipe.execute()
    result = run_cli("consumers", "aggregate", "--fields", "seed", "--stream", "app:event", "--start", "all",
                     "--drain", "--redis-url", redis_url)
    assert result.returncode == 0, result.stderr
    layout = open_layout(db, Keys(readings_override="app:event"))
    assert layout.count == 1 and layout.partitions[0].readings == "app:event"
    assert counters(db, layout)["processed"] == 50
    assert all(key.startswith(("{app:event}:", "app:event")) for key in db.keys("*"))


def test_partition_count_is_fixed_when_the_pipeline_is_created(db):
    assert open_layout(db, Keys(), 8).count == 8
    assert open_layout(db, Keys()).count == 8
    with pytest.raises(UsageError, match="has 8 partitions"):
        open_layout(db, Keys(), 4)


def test_leases_fence_by_epoch_and_release_at_once(db):
    keys = layout_of(db, 1).partitions[0].group("g")
    first, second = LeaseClient(db, "first", 5_000), LeaseClient(db, "second", 5_000)
    lease = first.acquire(keys)
    assert lease.epoch == 1 and second.acquire(keys) is None
    assert first.renew(lease) and 4_000 < db.pttl(keys.lease) <= 5_000
    first.release(lease)
    taken = second.acquire(keys)
    assert taken.epoch == 2 and not first.renew(lease)


def test_assignment_is_balanced_deterministic_and_sticky():
    members = ["w1", "w2", "w3"]
    owned = assign(members, 16)
    assert sorted(index for parts in owned.values() for index in parts) == list(range(16))
    assert max(map(len, owned.values())) - min(map(len, owned.values())) <= 1
    assert assign(list(reversed(members)), 16) == owned
    grown = assign(members + ["w4"], 16)
    moved = sum(1 for member in members for index in owned[member] if index not in grown[member])
    assert moved <= 6, f"{moved} partitions moved when one worker joined"


def test_pending_entries_trimmed_away_are_counted_lost_once(db):
    layout = layout_of(db, 1)
    stream = layout.partitions[0].readings
    add_readings(db, layout, [Reading("s", START + i * 1000, 20.0, 50.0, i) for i in range(10)])
    make_worker(db, layout).ensure_group(layout.partitions[0].group("aggregators"))
    db.xreadgroup("aggregators", "crashed", {stream: ">"}, count=10)
    db.xtrim(stream, maxlen=3, approximate=False)
    drain(make_worker(db, layout, consumer="survivor"), LATER)
    totals = counters(db, layout)
    assert totals["lost_to_trim"] == 7 and totals["processed"] == 3 and pending(db, layout) == 0


def test_handing_partitions_over_mid_stream_changes_no_output(db):
    """A worker that stops after some batches and one that takes over from the checkpoints give
    the aggregates, alerts and rolling stats of one worker that read everything."""
    from consumers.rules import load_rules

    layout = layout_of(db, 2)
    add_readings(db, layout, random_readings(per_sensor=200))
    common = {"window_ms": 10_000, "grace_ms": 1_000, "rolling_ms": 60_000, "rules": load_rules(None), "batch": 37}
    drain(make_worker(db, layout, group="whole", **common), LATER)
    first = make_worker(db, layout, group="split", consumer="first", **common)
    first.clock = lambda: LATER
    for _ in range(12):  # most readings: the ~31 s left per sensor are less than the rolling window,
        # so the final rolling views need the buckets the checkpoint kept
        first.step(LATER)
    first.release_all()
    drain(make_worker(db, layout, group="split", consumer="second", **common), LATER)
    for kind, columns in (("aggregates", ["sensor", "window_start", "count", "temperature_c_mean",
                                          "temperature_c_std", "humidity_pct_max"]),
                          ("alerts", ["alert_id", "state", "ts", "value"])):
        whole, split = (outputs(db, layout, kind, group)[columns].sort_values(columns[:3]).reset_index(drop=True)
                        for group in ("whole", "split"))
        assert len(whole) > 10
        pd.testing.assert_frame_equal(whole, split)
    whole, split = (rolling_views(db, [(keys, None) for keys in layout.groups(group)]) for group in ("whole", "split"))
    assert len(whole) == 5 and whole == split


def test_readings_trimmed_before_the_group_read_them_are_counted_once_where_status_and_report_show_them(
        db, redis_url):
    layout = layout_of(db, 1)
    stream = layout.partitions[0].readings
    add_readings(db, layout, [Reading("s", START + i * 1000, 20.0, 50.0, i) for i in range(50)])
    drain(make_worker(db, layout), LATER)
    add_readings(db, layout, [Reading("s", START + i * 1000, 20.0, 50.0, i) for i in range(50, 150)])
    db.xtrim(stream, maxlen=20, approximate=False)  # 80 unread readings gone
    drain(make_worker(db, layout), LATER)
    totals = counters(db, layout)
    assert totals["missing_seq"] == 80 and "lost_to_trim" not in totals
    status = json.loads(run_cli("consumers", "status", "--json", "--redis-url", redis_url).stdout)
    loss_lines = [warning for warning in status["warnings"] if "trimmed" in warning or "missing" in warning]
    assert len(loss_lines) == 1 and "80 readings are missing by seq" in loss_lines[0]
    assert status["totals"]["lag_entries"] == 0, "a group that caught up after trimming still shows lag"
    report = json.loads(run_cli("analytics", "report", "--json", "--redis-url", redis_url).stdout)
    assert [(row["sensor"], row["missing"]) for row in report["sensors"]] == [("s", 80)]


def test_group_commands_list_reset_delete_and_prune(db, redis_url):
    layout = layout_of(db, 2)
    readings = random_readings(per_sensor=20)
    add_readings(db, layout, readings)
    drain(make_worker(db, layout, group="g1"), LATER)
    db.xreadgroup("g1", "gone", {layout.partitions[0].readings: "0"}, count=1)  # an idle consumer holding nothing new
    listed = json.loads(run_cli("consumers", "group", "list", "--json", "--redis-url", redis_url).stdout)
    assert [(row["name"], row["partitions"], row["pending"]) for row in listed] == [("g1", 2, 0)]
    worker = make_worker(db, layout, group="g1")
    worker.step(LATER)  # owns the partitions: reset and delete must refuse
    refused = run_cli("consumers", "group", "reset", "--to", "start", "--group", "g1", "--redis-url", redis_url)
    assert refused.returncode == 2 and "stop them first" in refused.stderr
    worker.release_all()
    epochs = [int(db.get(keys.epoch)) for keys in layout.groups("g1")]
    reset = run_cli("consumers", "group", "reset", "--to", "start", "--group", "g1", "--redis-url", redis_url)
    assert reset.returncode == 0, reset.stderr
    assert counters(db, layout, "g1") == {}
    drain(make_worker(db, layout, group="g1"), LATER)
    assert counters(db, layout, "g1")["processed"] == len(readings), "a reset group did not start over"
    assert all(int(db.get(keys.epoch)) > epoch for keys, epoch in zip(layout.groups("g1"), epochs)), \
        "epochs must only grow: a worker paused since before the reset could match a new owner's"
    pruned = run_cli("consumers", "group", "prune", "--group", "g1", "--redis-url", redis_url)
    assert pruned.returncode == 0 and "idle consumers deleted" in pruned.stdout
    deleted = run_cli("consumers", "group", "delete", "--group", "g1", "--redis-url", redis_url)
    assert deleted.returncode == 0, deleted.stderr
    assert db.xinfo_groups(layout.partitions[0].readings) == []
    assert set(db.keys("*:g1:*")) == {keys.epoch for keys in layout.groups("g1")}


def test_a_connection_lost_while_watching_the_epochs_is_retried_not_raised(db):
    """redis-py reports a connection lost between WATCH and MULTI as a WatchError; to the worker
    it is a transport error like any other: back off, reload, go on (a Redis restart did this).
    The read as a cluster makes it, through redis-py's pipeline (one server sends its own)."""
    layout = layout_of(db, 2)
    worker = make_worker(db, layout)
    worker.watched_read = None
    worker.step(START)  # takes the partitions
    assert worker.owned
    real_pipeline = worker.raw.pipeline

    def pipeline_losing_its_connection(*args, **kwargs):
        pipeline = real_pipeline(*args, **kwargs)

        def get(*_, **__):
            raise redis.WatchError("A ConnectionError occurred while watching one or more keys")

        pipeline.get = get
        return pipeline

    worker.raw.pipeline = pipeline_losing_its_connection
    with pytest.raises(redis.ConnectionError):
        worker.step(START)
    worker.raw.pipeline = real_pipeline
    worker.step(START)  # and on the next try it reads again
