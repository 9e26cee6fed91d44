"""The aggregator against a real redis-server: numbers, bad input, claims, alerts, exactly-once."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from consumers.batch import DecodedBatch
from telemetry.keys import Keys
from telemetry.schema import Reading
from telemetry.timeutil import now_ms
from tests.aggregation_helpers import START, add_readings, drain, make_worker, rules, stream_frame
from tests.conftest import run_cli

LATER = START + 10**9  # a wall clock far past the data: nothing is "future"


def random_readings(sensors=("a", "b", "c"), per_sensor=900, seed=1) -> list[Reading]:
    rng = np.random.default_rng(seed)
    out = []
    for seq in range(per_sensor):
        for index, sensor in enumerate(sensors):
            ts = START + seq * 1000 + int(rng.integers(0, 900))
            out.append(Reading(sensor, ts, round(float(rng.normal(20 + index, 2)), 1),
                               round(float(np.clip(rng.normal(50, 10), 0, 100)), 1), seq))
    return out


def test_windows_and_rolling_stats_equal_pandas(db, keys):
    readings = random_readings()
    add_readings(db, keys, readings)
    worker = make_worker(db, keys, window_ms=60_000, grace_ms=5_000, rolling_ms=300_000, batch=250)
    drain(worker, LATER)

    frame = pd.DataFrame([{"sensor": r.sensor, "time": pd.to_datetime(r.ts_ms, unit="ms"),
                           "temperature_c": r.temperature_c, "humidity_pct": r.humidity_pct} for r in readings])
    expected = (frame.groupby(["sensor", pd.Grouper(key="time", freq="60s")])[["temperature_c", "humidity_pct"]]
                .agg(["count", "mean", "min", "max", "std"]))
    emitted = stream_frame(db, keys.aggregates)
    assert not emitted.duplicated(["sensor", "window_start"]).any()
    max_ts = frame.groupby("sensor")["time"].max()
    closing = [(sensor, start) for sensor, start in expected.index
               if start + pd.Timedelta("65s") <= max_ts[sensor]]  # end + grace <= watermark
    assert len(closing) == 45 and len(emitted) == len(closing)
    for row in emitted.itertuples():
        want = expected.loc[[(row.sensor, pd.to_datetime(int(row.window_start), unit="ms"))]].iloc[0]
        assert int(row.count) == want[("temperature_c", "count")]
        for metric in ("temperature_c", "humidity_pct"):
            for stat in ("mean", "min", "max", "std"):
                assert float(getattr(row, f"{metric}_{stat}")) == pytest.approx(want[(metric, stat)], rel=1e-9)

    for sensor, group in frame.sort_values("time").groupby("sensor"):
        rolled = group.set_index("time")[["temperature_c", "humidity_pct"]].rolling("300s")
        live = db.hgetall(keys.rolling(sensor))
        assert int(live["count"]) == int(rolled.count().iloc[-1]["temperature_c"])
        for metric in ("temperature_c", "humidity_pct"):
            assert float(live[f"{metric}_mean"]) == pytest.approx(rolled.mean().iloc[-1][metric], rel=1e-9)
            assert float(live[f"{metric}_std"]) == pytest.approx(rolled.std().iloc[-1][metric], rel=1e-9)
            assert float(live[f"{metric}_min"]) == rolled.min().iloc[-1][metric]
            assert float(live[f"{metric}_max"]) == rolled.max().iloc[-1][metric]


def coarse_readings(count=1500, seed=7) -> list[Reading]:
    """Two sensors on a coarse value grid (extremes held by many readings at once), with gaps from
    0.2 s to longer than a 200 s rolling window, each chunk of eight readings shuffled (out of order)."""
    rng = np.random.default_rng(seed)
    out, ts, seqs = [], START, {"a": 0, "b": 0}
    for index in range(count):
        ts += int(rng.choice([200, 1000, 4000, 250_000], p=[0.35, 0.55, 0.095, 0.005]))
        sensor = "a" if index % 3 else "b"
        out.append(Reading(sensor, ts, float(round(rng.normal(20, 1.5))), float(round(rng.normal(50, 3)) / 2),
                           seqs[sensor]))
        seqs[sensor] += 1
    chunks = [out[i:i + 8] for i in range(0, len(out), 8)]
    for chunk in chunks:
        rng.shuffle(chunk)
    return [reading for chunk in chunks for reading in chunk]


def expected_rolling(readings: list[Reading], rolling: str) -> dict[str, pd.Series]:
    """pandas' rolling window at each sensor's latest reading."""
    frame = pd.DataFrame([{"sensor": r.sensor, "time": pd.to_datetime(r.ts_ms, unit="ms"),
                           "temperature_c": r.temperature_c, "humidity_pct": r.humidity_pct} for r in readings])
    result = {}
    for sensor, group in frame.sort_values("time", kind="stable").groupby("sensor"):
        rolled = group.set_index("time")[["temperature_c", "humidity_pct"]].rolling(rolling)
        result[sensor] = pd.concat({stat: getattr(rolled, stat)().iloc[-1]
                                    for stat in ("count", "mean", "std", "min", "max")})
    return result


def window_stats(values: np.ndarray) -> dict[str, float]:
    """What pandas' rolling gives for the readings in one window."""
    return {"count": len(values), "mean": values.mean(), "min": values.min(), "max": values.max(),
            "std": values.std(ddof=1) if len(values) > 1 else np.nan}


def assert_rolling_equal(live: dict[str, str], want: dict) -> None:
    """`want[(stat, metric)]`: pandas' figure."""
    assert int(live["count"]) == int(want[("count", "temperature_c")])
    for metric in ("temperature_c", "humidity_pct"):
        for stat in ("mean", "min", "max"):
            assert float(live[f"{metric}_{stat}"]) == pytest.approx(want[(stat, metric)], rel=1e-9)
        if np.isnan(want[("std", metric)]):
            assert live[f"{metric}_std"] == ""
        else:
            assert float(live[f"{metric}_std"]) == pytest.approx(want[("std", metric)], rel=1e-9, abs=1e-9)


def test_rolling_stats_equal_pandas_after_every_commit(db, keys):
    """Small commits move the window's edge within a bucket and across buckets, and past a gap
    longer than the window. After every commit each sensor's rolling hash holds the stats of its
    readings in (latest - 200 s, latest]; at the end they equal pandas' rolling('200s')."""
    readings = coarse_readings()
    ids = add_readings(db, keys, readings)
    position = {entry_id: index for index, entry_id in enumerate(ids)}
    columns = {name: np.array([getattr(r, name) for r in readings])
               for name in ("sensor", "ts_ms", "temperature_c", "humidity_pct")}
    worker = make_worker(db, keys, rolling_ms=200_000, grace_ms=300_000, batch=5)
    checked = []

    def check(batch, _result, _elapsed) -> None:
        committed = max(position[entry_id] for entry_id in batch.entry_ids) + 1
        for sensor in set(batch.readings.sensors):
            mine = columns["sensor"][:committed] == sensor
            ts = columns["ts_ms"][:committed][mine]
            inside = ts > ts.max() - 200_000
            want = {(stat, metric): value for metric in ("temperature_c", "humidity_pct")
                    for stat, value in window_stats(columns[metric][:committed][mine][inside]).items()}
            assert_rolling_equal(db.hgetall(keys.rolling(sensor)), want)
        checked.append(len(batch))

    worker.on_batch = check
    drain(worker, LATER)
    assert sum(checked) == len(readings) and db.hget(keys.counters, "late") is None
    for sensor, want in expected_rolling(readings, "200s").items():
        assert_rolling_equal(db.hgetall(keys.rolling(sensor)), want)


def test_rolling_state_from_before_bucket_sums_is_rebuilt(db, keys):
    """A sensor state written by an earlier version (buckets without sums) is rebuilt from the
    readings still in the window, on the first commit that touches it."""
    readings = random_readings(per_sensor=600)
    add_readings(db, keys, readings[:900])
    drain(make_worker(db, keys, batch=100), LATER)
    db.eval("""
        local all = redis.call('HGETALL', KEYS[1])
        for i = 1, #all, 2 do
          local st = cmsgpack.unpack(all[i + 1])
          st.v = nil
          st.rs.n, st.rs.t, st.rs.tmin_n = 12345, 1e9, 1
          for _, bucket in pairs(st.rb) do
            for at = 10, 14 do bucket[at] = nil end
          end
          redis.call('HSET', KEYS[1], all[i], cmsgpack.pack(st))
        end""", 1, keys.sensor_state)
    add_readings(db, keys, readings[900:])
    drain(make_worker(db, keys, batch=100), LATER)
    expected = expected_rolling(readings, "300s")
    for sensor in ("a", "b", "c"):
        assert_rolling_equal(db.hgetall(keys.rolling(sensor)), expected[sensor])


def test_summaries_and_reading_by_reading_agree(db):
    """The script's short way (merging the worker's per-sensor summaries) and its long way (one
    reading at a time, taken here because a rule breaches on every reading) give the same
    windows and rolling stats."""
    readings = random_readings(per_sensor=400)
    always = '[[rule]]\nname="always"\nkind="threshold"\nmetric="temperature_c"\nabove=-50.0\nfor="10d"\n'
    outputs = {}
    for prefix, rule_set in (("short", ()), ("long", rules(always))):
        keys = Keys(prefix)
        add_readings(db, keys, readings)
        drain(make_worker(db, keys, batch=250, rolling_ms=120_000, rules=rule_set), LATER)
        windows = stream_frame(db, keys.aggregates).drop(columns=["id", "emitted_ms", "sensor", "closed_by"])
        windows = windows.astype(float)
        rolling = pd.DataFrame([db.hgetall(keys.rolling(sensor)) for sensor in ("a", "b", "c")])
        outputs[prefix] = (windows, rolling.drop(columns=["updated_ms"]).astype(float))
    assert len(outputs["short"][0]) == 18 and db.xlen(Keys("long").alerts) == 0
    for short, long in zip(outputs["short"], outputs["long"]):
        pd.testing.assert_frame_equal(short, long, rtol=1e-9)


def test_malformed_entries_are_dead_lettered_with_the_field_named(db, keys):
    good = Reading("ok", START, 20.0, 50.0, 0).encode()
    bad = [
        ({k: v for k, v in good.items() if k != "humidity_pct"}, "humidity_pct=None: missing"),
        (dict(good, temperature_c="warm"), "not a number"),
        (dict(good, temperature_c="nan"), "not finite"),
        (dict(good, humidity_pct="inf"), "not finite"),
        (dict(good, temperature_c="151"), "outside -80..150"),
        (dict(good, humidity_pct="-1"), "outside 0..100"),
        (dict(good, sensor="no spaces"), "sensor="),
    ]
    for fields, _ in bad:
        db.xadd(keys.readings, fields)
    db.xadd(keys.readings, good)
    worker = make_worker(db, keys)
    drain(worker, LATER)
    dead = stream_frame(db, keys.dead_letter)
    assert len(dead) == len(bad)
    for (fields, reason), row in zip(bad, dead.itertuples()):
        assert reason in row.reason and row.reason.startswith("malformed:")
        assert eval(row.fields.replace("null", "None")) == fields  # original fields kept
    assert db.hget(keys.counters, "processed") == "1"
    assert db.xpending(keys.readings, "aggregators")["pending"] == 0


def test_late_reading_is_dead_lettered_and_counted(db, keys):
    add_readings(db, keys, [Reading("s", START + i * 10_000, 20.0, 50.0, i) for i in range(20)])
    add_readings(db, keys, [Reading("s", START + 5_000, 99.0, 50.0, 20)])  # its window closed long ago
    worker = make_worker(db, keys, window_ms=60_000, grace_ms=5_000)
    drain(worker, LATER)
    dead = stream_frame(db, keys.dead_letter)
    assert list(dead["reason"].str.split(":").str[0]) == ["late"]
    assert db.hget(keys.counters, "late") == "1"
    first_window = stream_frame(db, keys.aggregates).iloc[0]
    assert first_window["count"] == "4" and float(first_window["temperature_c_max"]) == 20.0


def test_future_reading_is_dead_lettered_and_does_not_move_the_watermark(db, keys):
    now = START + 100_000
    add_readings(db, keys, [Reading("s", START + i * 1000, 20.0, 50.0, i) for i in range(10)])
    add_readings(db, keys, [Reading("s", now + 3_600_000, 20.0, 50.0, 10)])
    add_readings(db, keys, [Reading("s", START + 11_000, 21.0, 50.0, 11)])
    worker = make_worker(db, keys, max_skew_ms=300_000)
    drain(worker, now)
    dead = stream_frame(db, keys.dead_letter)
    assert len(dead) == 1 and dead.iloc[0]["reason"].startswith("future:")
    assert "late" not in db.hgetall(keys.counters)
    assert db.hget(keys.counters, "processed") == "11"


def test_duplicate_readings_are_not_counted_twice(db, keys):
    readings = [Reading("s", START + i * 1000, 20.0 + i, 50.0, i) for i in range(120)]
    add_readings(db, keys, readings)
    add_readings(db, keys, readings[110:115])  # a producer resending after a lost reply
    worker = make_worker(db, keys, window_ms=60_000, grace_ms=0)
    drain(worker, LATER)
    assert db.hget(keys.counters, "duplicates") == "5"
    add_readings(db, keys, [Reading("s", START + 200_000, 20.0, 50.0, 200)])
    drain(worker, LATER)
    assert list(stream_frame(db, keys.aggregates)["count"]) == ["40", "60", "20"]


def test_dead_consumer_entries_are_claimed_and_poison_is_dead_lettered(db, keys):
    add_readings(db, keys, [Reading("s", START + i * 1000, 20.0, 50.0, i) for i in range(5)])
    crashed = make_worker(db, keys, consumer="crashed")
    crashed._read(">", None)  # read, then "die" before committing
    time.sleep(0.01)
    survivor = make_worker(db, keys, consumer="survivor", claim_idle_ms=1, claim_every_ms=0, max_deliveries=3)
    survivor.step(LATER, block=False)
    assert db.hget(keys.counters, "processed") == "5"
    assert survivor.stats.claimed == 5

    db.xadd(keys.readings, Reading("p", START, 20.0, 50.0, 0).encode())
    for name in ("c1", "c2", "c3"):  # three consumers each die holding the same entry
        victim = make_worker(db, keys, consumer=name, claim_idle_ms=1, claim_every_ms=0)
        victim._read(">", None) if name == "c1" else victim._claim()
        time.sleep(0.01)
    survivor.step(LATER, block=False)
    dead = stream_frame(db, keys.dead_letter)
    assert len(dead) == 1 and dead.iloc[0]["reason"].startswith("max-deliveries: delivered 4 times")
    assert db.xpending(keys.readings, "aggregators")["pending"] == 0


def pipelined_batch(worker) -> DecodedBatch:
    """One batch as the worker's pipelined loop reads it: with the handover counter read just before."""
    return worker._decode_new(worker._read_new(block=False))


@pytest.mark.parametrize("read_by", ["plain-read", "pipelined"])
@pytest.mark.parametrize("first", ["slow", "fast"])
def test_batch_claimed_away_before_commit_is_applied_once(db, keys, first, read_by):
    """A stalled worker's batch is claimed by another; whichever commits first applies it, once."""
    add_readings(db, keys, [Reading("s", START + i * 1000, 20.0, 50.0, i) for i in range(10)])
    slow = make_worker(db, keys, consumer="slow")
    decoded = (pipelined_batch(slow) if read_by == "pipelined"
               else slow.decode(slow._read(">", None), LATER, redelivered=False))
    fast = make_worker(db, keys, consumer="fast", claim_idle_ms=0, claim_every_ms=0)
    claimed = fast._claim()
    assert len(claimed) == 10
    commits = {"slow": lambda: slow.commit_decoded(decoded, LATER),
               "fast": lambda: fast.process(claimed, LATER, redelivered=True)}
    second = "fast" if first == "slow" else "slow"
    commits[first]()
    commits[second]()
    assert db.hget(keys.counters, "processed") == "10"
    loser = fast if first == "slow" else slow
    assert loser.stats.skipped_as_committed_elsewhere == 10 and loser.stats.entries == 0
    assert db.xpending(keys.readings, "aggregators")["pending"] == 0


def test_batch_in_hand_when_its_owner_rereads_its_pending_entries_is_applied_once(db, keys):
    """After an outage the main loop re-reads its own pending entries, which its pipelined loop may hold too."""
    add_readings(db, keys, [Reading("s", START + i * 1000, 20.0, 50.0, i) for i in range(10)])
    worker = make_worker(db, keys, consumer="w")
    held = pipelined_batch(worker)
    while not worker.own_pending_done:  # own pending first: the same 10 entries, committed
        worker.step(LATER, block=False)
    assert worker.commit_decoded(held, LATER) == 10
    assert db.hget(keys.counters, "processed") == "10"
    assert worker.stats.skipped_as_committed_elsewhere == 10


def test_batch_read_while_nothing_changed_hands_is_acked_in_one_call(db, keys):
    add_readings(db, keys, [Reading("s", START + i * 1000, 20.0, 50.0, i) for i in range(300)])
    worker = make_worker(db, keys, consumer="w", batch=100, max_commit=300)
    worker.own_pending_done = True
    held = pipelined_batch(worker)
    assert len(held.batch) == 300
    db.config_resetstat()
    worker.commit_decoded(held, LATER)
    assert db.info("commandstats")["cmdstat_xack"]["calls"] == 1
    assert db.hget(keys.counters, "processed") == "300" and worker.stats.skipped_as_committed_elsewhere == 0
    assert db.xpending(keys.readings, "aggregators")["pending"] == 0


def test_silent_sensor_closes_its_window_on_the_wall_clock_and_fires_once(db, keys):
    base = now_ms() // 60_000 * 60_000  # arrival times (stream ids) and the injected clock must agree
    add_readings(db, keys, [Reading("quiet", base + i * 1000, 20.0 + i % 3, 50.0, i) for i in range(30)])
    worker = make_worker(db, keys, window_ms=60_000, grace_ms=5_000, idle_ms=20_000, sweep_every_ms=0,
                         max_skew_ms=10**9,
                         rules=rules('[[rule]]\nname="gone"\nkind="silent"\nafter="45s"\nseverity="critical"'))
    drain(worker, base + 31_000)
    assert db.xlen(keys.aggregates) == 0
    worker.step(base + 84_000, block=False)
    assert db.xlen(keys.aggregates) == 0  # wall clock not yet past end + grace + idle
    for now in (base + 86_000, base + 120_000):
        worker.step(now, block=False)
    windows = stream_frame(db, keys.aggregates)
    assert list(windows["closed_by"]) == ["idle"] and windows.iloc[0]["count"] == "30"
    alerts = stream_frame(db, keys.alerts)
    assert list(zip(alerts["rule"], alerts["state"])) == [("gone", "firing")]
    add_readings(db, keys, [Reading("quiet", base + 130_000, 20.0, 50.0, 30)])
    drain(worker, base + 131_000)
    alerts = stream_frame(db, keys.alerts)
    assert list(alerts["state"]) == ["firing", "resolved"]
    assert alerts["alert_id"].nunique() == 1


THRESHOLD = '[[rule]]\nname="hot"\nkind="threshold"\nabove=30.0\nfor="5s"\nhysteresis=2.0\nseverity="critical"'


def test_threshold_alert_fires_once_and_resolves_once_across_a_restart(db, keys):
    temps = [20.0] * 10 + [35.0] * 20 + [29.0] * 5 + [20.0] * 10  # 29 is inside the hysteresis band
    readings = [Reading("s", START + i * 1000, t, 50.0, i) for i, t in enumerate(temps)]
    add_readings(db, keys, readings[:18])
    first = make_worker(db, keys, consumer="w", rules=rules(THRESHOLD))
    drain(first, LATER)
    add_readings(db, keys, readings[18:])
    restarted = make_worker(db, keys, consumer="w", rules=rules(THRESHOLD))
    drain(restarted, LATER)
    alerts = stream_frame(db, keys.alerts)
    assert list(alerts["state"]) == ["firing", "resolved"]
    assert list(alerts["ts"].astype(int)) == [START + 15_000, START + 35_000]
    assert alerts["alert_id"].nunique() == 1 and alerts.iloc[0]["severity"] == "critical"


def test_rate_zscore_and_stuck_rules(db, keys):
    rng = np.random.default_rng(0)
    temps = list(np.round(20 + rng.normal(0, 0.3, 100), 1)) + [40.0] + [20.0] * 80
    readings = [Reading("s", START + i * 1000, float(t), 50.0, i) for i, t in enumerate(temps)]
    add_readings(db, keys, readings)
    text = ('[[rule]]\nname="jump"\nkind="rate_of_change"\nper_minute=300.0\n'
            '[[rule]]\nname="odd"\nkind="zscore"\nz=5.0\nmin_count=30\n'
            '[[rule]]\nname="flat"\nkind="stuck"\nmin_count=10\n')
    drain(make_worker(db, keys, rules=rules(text), window_ms=30_000, grace_ms=0, batch=1), LATER)
    alerts = stream_frame(db, keys.alerts)
    pairs = list(zip(alerts["rule"], alerts["state"]))
    assert pairs.count(("jump", "firing")) == 1 and pairs.count(("jump", "resolved")) == 1
    assert ("odd", "firing") in pairs and ("odd", "resolved") in pairs
    assert ("flat", "firing") in pairs


@pytest.mark.parametrize(("text", "message"), [
    ('[[rule]]\nname="x"\nkind="threshold"\nabove="hot"', "rule #1 (x): above = 'hot' is not a number"),
    ('[[rule]]\nname="x"\nkind="bogus"', "kind = 'bogus'"),
    ('[[rule]]\nname="x"\nkind="silent"', "after is required"),
    ('[[rule]]\nname="x"\nkind="stuck"\ncolour=1', "unknown field(s) for kind stuck: colour"),
    ('[[rule]\nname="x"', "line 1"),
])
def test_bad_rules_file_exits_2_naming_the_problem(tmp_path, redis_url, text, message):
    path = tmp_path / "rules.toml"
    path.write_text(text)
    result = run_cli("consumers", "aggregate", "--rules", str(path), "--redis-url", redis_url, "--drain")
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_pending_entries_lost_to_trimming_are_counted(db, keys):
    add_readings(db, keys, [Reading("s", START + i * 1000, 20.0, 50.0, i) for i in range(10)])
    crashed = make_worker(db, keys, consumer="crashed")
    crashed._read(">", None)
    db.xtrim(keys.readings, maxlen=3, approximate=False)
    survivor = make_worker(db, keys, consumer="survivor", claim_idle_ms=0, claim_every_ms=0)
    survivor.step(LATER, block=False)
    assert db.hget(keys.counters, "lost_to_trim") == "7"
    assert db.hget(keys.counters, "processed") == "3"
    assert db.xpending(keys.readings, "aggregators")["pending"] == 0


def test_status_reports_lag_pending_and_dead_letters(db, keys, redis_url):
    import json

    add_readings(db, keys, [Reading("s", START + i * 1000, 20.0, 50.0, i) for i in range(70)])
    db.xadd(keys.readings, {"sensor": "s"})
    worker = make_worker(db, keys, batch=20)
    for _ in range(4):  # claim, own pending, then two batches of new entries
        worker.step(LATER, block=False)
    worker._read(">", None)  # 20 more delivered, never committed
    result = run_cli("consumers", "status", "--json", "--maxlen", "40", "--redis-url", redis_url)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    group = status["groups"][0]
    assert status["length"] == 71 and group["pending"] == 20 and group["lag_entries"] == 11
    assert group["consumers"][0]["pending"] == 20
    assert status["dead_letter_count"] == 0
    assert not status["warnings"]
    result = run_cli("consumers", "status", "--json", "--maxlen", "20", "--redis-url", redis_url)
    assert "over half of MAXLEN" in json.loads(result.stdout)["warnings"][0]


def test_readings_trimmed_before_the_group_read_them_are_counted_missing(db, keys, redis_url):
    import json

    add_readings(db, keys, [Reading("s", START + i * 1000, 20.0, 50.0, i) for i in range(50)])
    worker = make_worker(db, keys)
    drain(worker, LATER)
    add_readings(db, keys, [Reading("s", START + i * 1000, 20.0, 50.0, i) for i in range(50, 150)])
    db.xtrim(keys.readings, maxlen=20, approximate=False)  # 80 unread readings gone
    drain(worker, LATER)
    assert db.hget(keys.counters, "missing_seq") == "80"
    status = json.loads(run_cli("consumers", "status", "--json", "--redis-url", redis_url).stdout)
    assert any("80 readings are missing by seq" in warning for warning in status["warnings"])


def test_out_of_order_reading_fills_its_gap(db, keys):
    add_readings(db, keys, [Reading("s", START + i * 1000, 20.0, 50.0, i) for i in (0, 1, 3, 4)])
    add_readings(db, keys, [Reading("s", START + 2000, 20.0, 50.0, 2)])
    drain(make_worker(db, keys), LATER)
    assert db.hget(keys.counters, "missing_seq") == "0"


def test_readings_committed_newest_first_leave_nothing_missing(db, keys):
    add_readings(db, keys, [Reading("s", START + i * 1000, 20.0, 50.0, i) for i in (5, 6, 7, 0, 1, 2, 3, 4)])
    drain(make_worker(db, keys), LATER)
    assert db.hget(keys.counters, "missing_seq") in (None, "0")


def test_an_active_sensors_sweep_deadline_is_not_rewritten_on_every_commit(db, keys):
    """Each reading moves a sensor's sweep deadline later; it is rewritten only once the stored one
    has passed, when the sweep visits and writes the later one."""
    worker = make_worker(db, keys, rules=rules('[[rule]]\nname="quiet"\nkind="silent"\nafter="30s"\n'))
    t0 = now_ms()
    db.xadd(keys.readings, Reading("a", t0, 20.0, 50.0, 0).encode(), id=f"{t0}-0")
    drain(worker, t0)
    first = db.zscore(keys.sensor_due, "a")
    db.xadd(keys.readings, Reading("a", t0 + 5000, 20.0, 50.0, 1).encode(), id=f"{t0 + 5000}-0")
    drain(worker, t0 + 5000)
    assert db.zscore(keys.sensor_due, "a") == first
    worker.sweep(int(first))  # the sensor last reported 25 s before: not silent yet
    assert db.zscore(keys.sensor_due, "a") == first + 5000 and db.xlen(keys.alerts) == 0
