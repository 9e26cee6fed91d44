"""Late readings against a real Redis and real processes: a producer frozen past the idle time, a
backfill whose writes stall, workers killed while late readings revise windows, and the readers
taking each window's latest revision."""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from collections import Counter

import pandas as pd
import pytest

from analytics.streams import STREAM_KINDS, RowFilter, load_frame
from telemetry.schema import FieldMap, Reading
from telemetry.timeutil import now_ms
from tests.aggregation_helpers import (
    START,
    add_readings,
    counters,
    drain,
    latest_windows,
    layout_of,
    make_worker,
    outputs,
)
from tests.conftest import run_cli
from tests.crash_harness import (
    PARTITIONS,
    WINDOW_MS,
    assert_reconciles,
    readings_of,
    run_kill_loop,
    spawn,
    wait_for,
    wait_until_settled,
)
from tests.lossy_proxy import LossyProxy


def test_export_and_plot_take_each_windows_latest_revision(redis_url, db, tmp_path):
    layout = layout_of(db)
    readings = [Reading("s", START + i * 1000, 20.0 + i % 5, 50.0, i) for i in range(40)]
    straggler = Reading("s", START + 3_000, 30.0, 50.0, 40)
    other = [Reading("t", START + i * 1000, 20.0, 50.0, i) for i in range(100)]
    too_old = Reading("t", START + 1_000, 20.0, 50.0, 100)  # 99 s behind t's newest: past 30 s
    add_readings(db, layout, readings + [straggler] + other + [too_old])
    drain(make_worker(db, layout, window_ms=10_000, grace_ms=1_000, allowed_lateness_ms=30_000), START + 10**7)
    latest, every = tmp_path / "latest.csv", tmp_path / "every.csv"
    for out, extra in ((latest, ()), (every, ("--all-revisions",))):
        result = run_cli("analytics", "export", "--kind", "aggregates", "--out", str(out), "--sensor", "s", *extra,
                         "--redis-url", redis_url)
        assert result.returncode == 0, result.stderr
    latest_rows, every_rows = pd.read_csv(latest), pd.read_csv(every)
    assert len(every_rows) == len(latest_rows) + 1 == 4  # the last window is still open
    assert latest_rows.set_index("window_start")["count"].to_dict() == {
        START: 11, START + 10_000: 10, START + 20_000: 10}
    assert latest_rows.loc[latest_rows.window_start == START, "revision"].tolist() == [1]
    plotted = load_frame(db, STREAM_KINDS["aggregates"], layout.groups("aggregators"), FieldMap(), RowFilter(("s",)))
    assert plotted.sort_values("window_start")["count"].astype(int).tolist() == [11, 10, 10]
    report = run_cli("analytics", "report", "--json", "--redis-url", redis_url)
    rows = {row["sensor"]: row for row in json.loads(report.stdout)["sensors"]}
    assert [(rows[name]["late"], rows[name]["too_late"], rows[name]["revisions"]) for name in "st"] == [
        (1, 0, 1), (0, 1, 0)]
    status = run_cli("consumers", "status", "--redis-url", redis_url)
    assert "1 readings came later than --allowed-lateness" in status.stdout, status.stdout


def assert_exact_latest_windows(db, layout) -> None:
    readings = readings_of(db, layout)
    expected = Counter((r.sensor, r.ts_ms - r.ts_ms % WINDOW_MS) for r in readings)
    latest = latest_windows(outputs(db, layout, "aggregates"))
    assert {(row.sensor, int(row.window_start)): int(row.count) for row in latest.itertuples()} == dict(expected)


@pytest.mark.slow
def test_a_producer_frozen_past_the_idle_time_loses_no_reading(redis_url, fleet):
    """The gateway whose uplink is down: frozen (SIGSTOP) for longer than grace + idle and the
    silent rule, then resumed, it writes the readings that fell due with their own times."""
    fleet.start_worker("w1")
    producer = spawn("producers", "--fleet", "f-", "6", "--rate", "20", "--spike-rate", "432", "--duration", "16",
                     "--partitions", str(PARTITIONS), "--redis-url", redis_url)
    db, layout = fleet.db, fleet.layout
    # frozen once the worker has processed its first seconds (a loaded machine starts processes slowly)
    wait_for(lambda: counters(db, layout).get("processed", 0) >= 6 * 20 * 3, 60, "3 s of readings processed")
    producer.send_signal(signal.SIGSTOP)
    time.sleep(15)  # the clock's margin of 5 s behind the wall clock, + window 2 s, grace 1 s, idle 3 s
    producer.send_signal(signal.SIGCONT)
    assert producer.wait(timeout=60) == 0, producer.stderr.read()
    wait_until_settled(fleet, timeout_s=60)
    fleet.stop_all()
    totals = counters(db, layout)
    print(f"frozen producer: {totals}")
    # a sensor whose window ended with the last batch before the freeze has nothing to revise
    # (one in twenty, with batches every 100 ms and 2 s windows): most have
    assert totals.get("revisions", 0) >= 3, "few windows were closed by the freeze: the test proves little"
    assert_reconciles(db, layout, late=True, other_than=("sensor-silent",))
    silent = outputs(db, layout, "alerts")
    silent = silent[silent.rule == "sensor-silent"]
    for sensor in {r.sensor for r in readings_of(db, layout)}:
        states = silent[silent.sensor == sensor].state.tolist()
        # fired while frozen, resolved by the first buffered reading, not again while the rest
        # arrived (at most once more: after the producer ended)
        assert states[:2] == ["firing", "resolved"] and states[2:] in ([], ["firing"]), f"{sensor}: {states}"


@pytest.mark.slow
def test_a_backfill_whose_writes_stall_gives_exact_windows(redis_server, redis_url, fleet, tmp_path):
    """The producer writes through a proxy that loses 30% of its script replies (it resends, at
    once since issue 23, so its stalls are short), while a worker with a short idle time keeps
    reading: whatever the stalls close early is revised."""
    proxy = LossyProxy(redis_server.port, drop_rate=0.3, seed=9).start()
    try:
        fleet.start_worker("w1")
        producer = spawn("producers", "--fleet", "b-", "10", "--rate", "1", "--start=-20m", "--duration", "600",
                         "--batch", "50", "--partitions", str(PARTITIONS), "--redis-url", proxy.url)
        assert producer.wait(timeout=240) == 0, producer.stderr.read()
        wait_until_settled(fleet, timeout_s=90)
        fleet.stop_all()
    finally:
        proxy.stop()
    db, layout = fleet.db, fleet.layout
    totals = counters(db, layout)
    print(f"backfill: {proxy.dropped} replies lost; {totals}")
    assert proxy.dropped >= 5
    assert_exact_latest_windows(db, layout)
    assert totals["processed"] == len(readings_of(db, layout)) == 6000
    assert not {"too_late", "duplicates", "dead_lettered"} & set(totals) and totals.get("missing_seq", 0) == 0


class LateWriter:
    """Writes live readings of a few sensors at 40 Hz, holding some back three windows (a
    gateway's retransmissions), in a thread; `poll` tells the kill loop whether it still runs."""

    def __init__(self, db, layout, seconds: float, seed: int) -> None:
        self.db, self.layout, self.seconds = db, layout, seconds
        self.rng = random.Random(seed)
        self.thread = threading.Thread(target=self._write, daemon=True)
        self.late = 0

    def start(self) -> LateWriter:
        self.thread.start()
        return self

    def poll(self) -> int | None:
        return None if self.thread.is_alive() else 0

    def _write(self) -> None:
        started, tick, held = time.monotonic(), 0, []
        seqs: Counter = Counter()
        while time.monotonic() - started < self.seconds:
            now, due = now_ms(), []
            for index in range(6):
                sensor = f"late-{index}"
                spike = self.rng.random() < 0.004  # so that rules fire, to compare with an uninterrupted run
                temperature = 60.0 if spike else round(20 + self.rng.gauss(0, 1), 2)
                reading = Reading(sensor, now, temperature, 50.0, seqs[sensor])
                seqs[sensor] += 1
                if self.rng.random() < 0.03:
                    held.append((tick + 3 * WINDOW_MS // 25, reading))
                    self.late += 1
                else:
                    due.append(reading)
            due += [reading for release, reading in held if release <= tick]
            held = [(release, reading) for release, reading in held if release > tick]
            add_readings(self.db, self.layout, due)
            tick += 1
            time.sleep(0.025)
        add_readings(self.db, self.layout, [reading for _, reading in held])


@pytest.mark.slow
def test_revisions_under_kill_9_are_emitted_once_and_end_exact(redis_url, fleet):
    fleet.start_worker("w0")
    writer = LateWriter(fleet.db, fleet.layout, seconds=12, seed=4).start()
    run_kill_loop(fleet, writer, random.Random(21), sizes=(1, 2, 3, 3, 2, 1), min_kills=12)
    if not fleet.workers:
        fleet.start_worker("last")
    wait_until_settled(fleet, timeout_s=60)
    fleet.stop_all()
    totals = counters(fleet.db, fleet.layout)
    print(f"kills: {fleet.kills} ({fleet.kills_with_uncommitted_batch} with an uncommitted batch), "
          f"late readings written: {writer.late}; {totals}")
    assert writer.late >= 20 and totals.get("revisions", 0) >= 10
    assert fleet.kills >= 12
    assert_reconciles(fleet.db, fleet.layout, late=True)
