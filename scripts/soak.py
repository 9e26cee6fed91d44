"""Soak: a producer fleet and three workers run for SOAK_MINUTES (default 60) while faults are
injected at random, and the results are checked against the readings themselves.

Faults: kill -9 and SIGSTOP/SIGCONT of workers and of the producer, kill -9 and restart of
redis-server (AOF on), Redis paused (SIGSTOP), a proxy between every process and Redis losing
10% of replies and closing the connection, workers added and removed. Every few minutes (faults
paused) and at the end: every emitted window equal to pandas over its readings and emitted once
(with revisions: each revision once, the latest equal to pandas), no reading counted twice, every
seq gap in the streams counted as `missing_seq`, and at the end every window emitted, alerts equal
to one uninterrupted worker's over the same readings, worker and Redis memory flat after warm-up.
Prints a table of faults and checks; exits 1 on any violation.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import redis

from consumers.rules import parse_rules
from telemetry.embedded import PrivateRedisServer
from tests.aggregation_helpers import counters, outputs, pending
from tests.crash_harness import (
    ALERT_FIELDS,
    HARNESS_RULES,
    PARTITIONS,
    WINDOW_MS,
    Fleet,
    arrivals_of,
    fleet_on,
    readings_of,
    reference_alerts,
    spawn,
    wait_for,
)
from tests.lossy_proxy import LossyProxy

SENSORS, RATE_HZ = 20, 5  # 100 readings/s: 360,000 an hour
PRODUCER_ARGS = ("--fleet", "soak-", str(SENSORS), "--rate", str(RATE_HZ), "--spike-rate", "60",
                 "--partitions", str(PARTITIONS))
# Pauses short of what would make a sensor look silent on the wall clock (idle 3 s, the event
# clock 5 s behind): a longer one would make later readings late, which is not a fault of the pipeline.
LONGEST_PAUSE_S = 3.0
AGGREGATE_COLUMNS = ["count", "temperature_c_mean", "temperature_c_min", "temperature_c_max",
                     "humidity_pct_mean", "humidity_pct_min", "humidity_pct_max"]
FAULTS = ("worker kill -9", "worker SIGSTOP", "producer kill -9", "producer SIGSTOP", "redis kill -9", "redis SIGSTOP",
          "lossy proxy", "worker added", "worker removed")
WARM_UP_S = 90  # memory is compared with its first sample after this
# Silent rules' `after`, by rule name: their events are compared apart (`unexplained_silences`).
SILENT_AFTER_MS = {rule.name: rule.after_ms for rule in parse_rules(HARNESS_RULES, "harness rules")
                   if rule.kind == "silent"}


def unexplained_silences(mine: pd.DataFrame, theirs: pd.DataFrame, every_event: pd.DataFrame,
                         readings: pd.DataFrame) -> list[str]:
    """Silent-rule events that the readings do not account for.

    A silent rule is judged on the partition clock, which follows the wall clock while a worker
    has read everything: when the producer is frozen, killed or cannot reach Redis for longer than
    `after`, the live workers rightly fire, and the reference, which reads the buffered readings
    afterwards with no gap in their event times, does not. So these events cannot equal the
    reference's; what the readings do determine is checked instead: every silent event of the
    reference is in the live run, and each episode only the live run has fired while the sensor's
    readings had stopped arriving: at a time F at least `after` past the event time of one reading,
    and no later than the next reading of that sensor reached Redis (entry ids are arrival times,
    and the partition clock stays behind the wall clock)."""
    silent_mine, silent_theirs = (frame[frame.rule.isin(SILENT_AFTER_MS)] for frame in (mine, theirs))
    merged = silent_mine.merge(silent_theirs, how="outer", indicator=True)
    problems = [f"{row.alert_id} {row.state} of the reference not in the live run"
                for row in merged[merged._merge == "right_only"].itertuples()]
    firing = every_event[every_event.state == "firing"].drop_duplicates("alert_id").set_index("alert_id").ts
    by_sensor = {sensor: frame for sensor, frame in readings.groupby("sensor")}  # each in stream order
    for row in merged[merged._merge == "left_only"].drop_duplicates("alert_id").itertuples():
        fired_ms = int(firing[row.alert_id]) if row.alert_id in firing.index else None
        sensor = by_sensor.get(row.sensor)
        if fired_ms is None or sensor is None:
            problems.append(f"{row.alert_id}: no firing event or no readings of {row.sensor}")
            continue
        silent_from = sensor.ts.to_numpy() + SILENT_AFTER_MS[row.rule]
        next_arrival = pd.concat([sensor.arrival_ms.iloc[1:], pd.Series([float("inf")])]).to_numpy()
        if not ((silent_from <= fired_ms) & (fired_ms <= next_arrival)).any():
            problems.append(f"{row.alert_id}: fired at {fired_ms} while {row.sensor}'s readings kept arriving")
    return problems


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@dataclass
class Soak:
    server: PrivateRedisServer
    proxy: LossyProxy
    fleet: Fleet
    rng: random.Random
    producer: object = None
    faults: Counter = field(default_factory=Counter)
    checks: Counter = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    memory: list[tuple[float, float, float]] = field(default_factory=list)  # (s, worker RSS MiB, Redis MiB)
    started: float = field(default_factory=time.monotonic)
    deck: list[str] = field(default_factory=list)

    # -- processes ---------------------------------------------------------------------------

    def start_producer(self) -> None:
        with open(self.fleet.log_dir / "producer.log", "a") as log:
            self.producer = spawn("producers", *PRODUCER_ARGS, "--redis-url", self.proxy.url, stderr=log)

    def heal(self) -> None:
        """Every fault undone: the proxy passes everything, Redis and every process run."""
        self.proxy.drop_rate = 0.0
        if self.server.process is None:
            self.server.start()
        self.server.process.send_signal(signal.SIGCONT)
        for process in [*self.fleet.workers.values(), self.producer]:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
        if self.producer.poll() is not None:
            self.start_producer()
        while len(self.fleet.workers) < 2:
            self.fleet.start_worker(f"w{self.fleet.started}")

    # -- faults ------------------------------------------------------------------------------

    def inject(self) -> None:
        if not self.deck:  # every kind once, in a random order, then again: a short run sees each
            self.deck = list(FAULTS)
            self.rng.shuffle(self.deck)
        kind = self.deck.pop()
        pause = self.rng.uniform(0.3, LONGEST_PAUSE_S)
        workers = self.fleet.workers
        if kind == "worker kill -9":
            self.fleet.kill_worker(self.rng.choice(sorted(workers)))
            self.fleet.start_worker(f"w{self.fleet.started}")
        elif kind == "worker SIGSTOP":  # past the lease (1.5 s) too: the zombie must be fenced
            self._freeze(workers[self.rng.choice(sorted(workers))], pause)
        elif kind == "producer kill -9":
            self.producer.kill()
            self.producer.wait()
            self.start_producer()
        elif kind == "producer SIGSTOP":
            self._freeze(self.producer, pause)
        elif kind == "redis kill -9":
            self.server.kill()
            time.sleep(pause)
            self.server.start()
        elif kind == "redis SIGSTOP":
            self._freeze(self.server.process, pause)
        elif kind == "lossy proxy":
            self.proxy.drop_rate = 0.10
            time.sleep(self.rng.uniform(5, 15))
            self.proxy.drop_rate = 0.0
        elif kind == "worker added":
            if len(workers) >= 4:  # stays between 2 and 4 workers
                workers.pop(self.rng.choice(sorted(workers))).send_signal(signal.SIGTERM)
            self.fleet.start_worker(f"w{self.fleet.started}")
        elif kind == "worker removed":
            if len(workers) <= 2:
                self.fleet.start_worker(f"w{self.fleet.started}")
            workers.pop(self.rng.choice(sorted(workers))).send_signal(signal.SIGTERM)
        self.faults[kind] += 1

    @staticmethod
    def _freeze(process, seconds: float) -> None:
        process.send_signal(signal.SIGSTOP)
        time.sleep(seconds)
        process.send_signal(signal.SIGCONT)

    # -- checks ------------------------------------------------------------------------------

    def violated(self, check: str, ok: bool, detail: str) -> None:
        self.checks[check] += 1
        if not ok:
            self.violations.append(f"{check}: {detail}")
            print(f"soak: VIOLATION {check}: {detail}", file=sys.stderr, flush=True)

    def check(self, final: bool) -> None:
        db, layout = self.fleet.db, self.fleet.layout
        # outputs before readings: the producer goes on, and readings only grow, so every reading
        # an output covers is in the later snapshot
        aggregates = outputs(db, layout, "aggregates")
        totals = counters(db, layout)
        readings = pd.DataFrame([(r.sensor, r.ts_ms, r.temperature_c, r.humidity_pct, r.seq, arrival_ms)
                                 for r, arrival_ms in arrivals_of(db, layout)],
                                columns=["sensor", "ts", "temperature_c", "humidity_pct", "seq", "arrival_ms"])
        readings["window_start"] = readings.ts - readings.ts % WINDOW_MS
        expected = readings.groupby(["sensor", "window_start"]).agg(
            count=("ts", "size"), temperature_c_mean=("temperature_c", "mean"),
            temperature_c_min=("temperature_c", "min"), temperature_c_max=("temperature_c", "max"),
            humidity_pct_mean=("humidity_pct", "mean"), humidity_pct_min=("humidity_pct", "min"),
            humidity_pct_max=("humidity_pct", "max"))
        if aggregates.empty:
            self.violated("windows emitted", not final, "no window emitted at all")
            return
        once = ["sensor", "window_start"] + (["revision"] if "revision" in aggregates else [])
        doubled = aggregates[aggregates.duplicated(once, keep=False)]
        self.violated("windows emitted once", doubled.empty, f"{len(doubled)} emitted twice, e.g. "
                      f"{doubled[once].head(3).to_dict('records')}")
        if "revision" in aggregates:  # the latest revision of each window is the one that counts
            aggregates = aggregates.assign(revision=aggregates.revision.astype(int)).sort_values("revision")
        latest = aggregates.drop_duplicates(["sensor", "window_start"], keep="last")
        emitted = latest.assign(window_start=latest.window_start.astype(int)).set_index(
            ["sensor", "window_start"])[AGGREGATE_COLUMNS].astype(float)
        wanted = expected.reindex(emitted.index).astype(float)
        differing = ~((emitted - wanted).abs() <= 1e-9 * (1 + wanted.abs())).all(axis=1)
        self.violated("windows equal to pandas", not differing.any(),
                      f"{int(differing.sum())} differ, e.g. {emitted[differing].head(2).to_dict('index')} "
                      f"against {wanted[differing].head(2).to_dict('index')}")
        seqs = readings.sort_values(["sensor", "seq"])
        repeated = int(seqs.duplicated(["sensor", "seq"]).sum())
        gaps = int((seqs.groupby("sensor").seq.diff().fillna(1) - 1).clip(lower=0).sum())
        self.violated("no reading counted twice", repeated == 0 and totals.get("processed", 0) <= len(readings)
                      and totals.get("too_late", 0) == 0,
                      f"{repeated} seqs written twice; processed {totals.get('processed')} of {len(readings)}; "
                      f"past the allowed lateness {totals.get('too_late', 0)}")
        self.violated("seq gaps accounted", totals.get("missing_seq", 0) <= gaps if not final
                      else totals.get("missing_seq", 0) == gaps,
                      f"{gaps} seqs missing in the streams, missing_seq counts {totals.get('missing_seq', 0)}")
        self.sample_memory()
        if not final:
            return
        self.violated("every reading processed", totals.get("processed", 0) == len(readings),
                      f"processed {totals.get('processed')} of {len(readings)}")
        self.violated("every window emitted", len(latest) == len(expected),
                      f"{len(latest)} windows emitted of {len(expected)}")
        data_end = int(readings.ts.max())
        alerts = outputs(db, layout, "alerts")
        reference = reference_alerts(db, layout)
        key = ["sensor", "ts", "alert_id", "state"]

        def events(frame: pd.DataFrame) -> pd.DataFrame:
            frame = frame[frame.ts.astype(int) <= data_end]
            return frame[ALERT_FIELDS].sort_values(key).reset_index(drop=True)

        mine, theirs = events(alerts), events(reference)
        judged = list(SILENT_AFTER_MS)
        mine_judged = mine[~mine.rule.isin(judged)].reset_index(drop=True)
        theirs_judged = theirs[~theirs.rule.isin(judged)].reset_index(drop=True)
        differing = mine_judged.merge(theirs_judged, how="outer", indicator=True).query("_merge != 'both'")
        self.violated("alerts equal to a clean run's", not theirs_judged.empty and mine_judged.equals(theirs_judged),
                      f"{len(mine_judged)} events against {len(theirs_judged)} of one uninterrupted worker "
                      f"(silent rules apart); differing by rule and side: "
                      f"{differing.groupby(['rule', '_merge'], observed=True).size().to_dict()}")
        unexplained = unexplained_silences(mine, theirs, alerts, readings)
        self.violated("silent alerts explained by the readings", not unexplained,
                      f"{len(unexplained)}, e.g. {unexplained[:3]}")
        self.check_memory()

    def sample_memory(self) -> None:
        workers = [rss for process in self.fleet.workers.values() if (rss := rss_mib(process.pid)) is not None]
        try:
            info = redis.Redis.from_url(self.server.url).info("memory")
            overhead = info["used_memory_overhead"] / 2**20
        except redis.RedisError:
            return
        self.memory.append((time.monotonic() - self.started, max(workers, default=0.0), overhead))

    def check_memory(self) -> None:
        after = [sample for sample in self.memory if sample[0] >= WARM_UP_S]
        if len(after) < 2:
            return
        first, last = after[0], after[-1]
        self.violated("worker memory flat", last[1] <= first[1] * 1.25 + 20,
                      f"largest worker RSS {first[1]:.0f} -> {last[1]:.0f} MiB")
        self.violated("Redis memory flat", last[2] <= first[2] * 1.5 + 16,
                      f"Redis memory besides data {first[2]:.1f} -> {last[2]:.1f} MiB")

    # -- the run -----------------------------------------------------------------------------

    def run(self, minutes: float, check_every_s: float) -> None:
        for name in range(3):
            self.fleet.start_worker(f"w{name}")
        self.start_producer()
        end = self.started + minutes * 60
        next_check = self.started + check_every_s
        next_sample = self.started + 30
        while time.monotonic() < end:
            time.sleep(self.rng.uniform(1, 5))
            self.inject()
            if time.monotonic() >= next_sample:
                self.sample_memory()
                next_sample += 30
            if time.monotonic() >= next_check and time.monotonic() < end - 30:
                self.heal()
                self.settle_a_moment()
                self.check(final=False)
                self.report_progress()
                next_check = time.monotonic() + check_every_s
        self.heal()
        self.producer.send_signal(signal.SIGTERM)
        self.producer.wait(timeout=60)
        self.settle_at_end()
        self.check(final=True)

    def settle_a_moment(self) -> None:
        """Once faults stop, the backlog drains: wait for nothing pending (or say it did not)."""
        db, layout = self.fleet.db, self.fleet.layout
        try:
            wait_for(lambda: pending(db, layout) == 0, 60, "the backlog to drain")
        except AssertionError as error:
            self.violated("settles after faults", False, str(error))

    def settle_at_end(self) -> None:
        db, layout = self.fleet.db, self.fleet.layout
        readings = readings_of(db, layout)
        windows = {(r.sensor, r.ts_ms - r.ts_ms % WINDOW_MS) for r in readings}
        began = time.monotonic()
        try:
            wait_for(lambda: counters(db, layout).get("windows_emitted", 0) >= len(windows)
                     and pending(db, layout) == 0, 120, "every window to close")
            self.violated("settles after faults", True, "")
        except AssertionError as error:
            self.violated("settles after faults", False, str(error))
        print(f"soak: settled {time.monotonic() - began:.1f} s after the producer stopped", file=sys.stderr)

    def report_progress(self) -> None:
        minutes = (time.monotonic() - self.started) / 60
        print(f"soak: {minutes:.1f} min, faults {sum(self.faults.values())}, checks {sum(self.checks.values())}, "
              f"violations {len(self.violations)}", file=sys.stderr, flush=True)

    def table(self) -> str:
        lines = ["| fault injected | times |", "|---|---|"]
        lines += [f"| {kind} | {count} |" for kind, count in sorted(self.faults.items())]
        lines += [f"| replies lost by the proxy | {self.proxy.dropped} |", "", "| invariant | checks | violations |",
                  "|---|---|---|"]
        for check, count in sorted(self.checks.items()):
            failed = sum(violation.startswith(f"{check}:") for violation in self.violations)
            lines.append(f"| {check} | {count} | {failed} |")
        after = [sample for sample in self.memory if sample[0] >= WARM_UP_S] or self.memory
        if after:
            lines += ["", "| memory | after warm-up | at the end |", "|---|---|---|",
                      f"| largest worker RSS | {after[0][1]:.0f} MiB | {after[-1][1]:.0f} MiB |",
                      f"| Redis memory besides data | {after[0][2]:.1f} MiB | {after[-1][2]:.1f} MiB |"]
        return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES", "60")),
                        help="how long faults are injected (default SOAK_MINUTES, else 60)")
    parser.add_argument("--check-every", type=float, default=None, metavar="S",
                        help="seconds between checks while running (default: a fifth of the run, at most 300)")
    parser.add_argument("--seed", type=int, default=int(time.time()), help="fault schedule seed (default: the time)")
    args = parser.parse_args()
    if args.minutes <= 0:
        parser.error("--minutes must be above 0")
    check_every = args.check_every or min(300.0, args.minutes * 12)
    print(f"soak: {args.minutes:g} min, seed {args.seed}", file=sys.stderr, flush=True)
    folder = tempfile.mkdtemp(prefix="telemetry-soak-")  # kept, with every process's log, on a violation
    try:
        server = PrivateRedisServer(Path(folder))
        server.start()
        proxy = LossyProxy(server.port, 0.0, seed=args.seed, kinds="all").start()
        try:
            with fleet_on(server.url, Path(folder)) as fleet:
                fleet.worker_url = proxy.url
                soak = Soak(server, proxy, fleet, random.Random(args.seed))
                try:
                    soak.run(args.minutes, check_every)
                finally:
                    if soak.producer is not None and soak.producer.poll() is None:
                        soak.producer.kill()
                print(soak.table())
        finally:
            proxy.stop()
            server.kill()
    except BaseException:
        print(f"soak: logs in {folder}", file=sys.stderr)
        raise
    if soak.violations:
        sys.exit(f"soak: {len(soak.violations)} violations; logs in {folder}")
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
