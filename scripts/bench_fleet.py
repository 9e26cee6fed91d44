"""Fleet benchmark: Redis CPU per reading, drain rate and live backlog for a large sensor fleet.

A fleet of many sensors at 1 Hz is the regime where each aggregator commit carries only one or
two readings per sensor, so per-sensor work in Redis (the sensor's state, outputs) is paid
almost once per reading. Redis CPU per reading, not worker speed, then decides how large a fleet
one Redis serves: at 1 core of Redis, 100 us per reading is 10,000 readings/s.

The pipeline is driven only through its command lines (`python -m producers`, `python -m
consumers aggregate`) as subprocesses, each configuration on a fresh private redis-server with
AOF on. The readings streams are found by scanning keys (name contains "readings", type stream),
so the same script measures one stream or P partition streams, one consumer group on each.

1. Drain, 1 and 2 workers: backfill SENSORS x READINGS in event-time order, measuring Redis CPU
   per reading written; then N `--drain` workers: readings/s from the first entry consumed until
   every worker has exited, Redis CPU and worker CPU (rusage) per reading, pending left after.
2. Live: 2 workers running, then SENSORS sensors at 1 Hz for --live-seconds in real time. The
   backlog age (now minus the time of the oldest reading not yet acknowledged, the worst stream)
   is sampled every 200 ms: p50, p99, max, and whether max stayed under 2 s; then readings/s
   processed, and Redis and worker CPU per reading over the whole run.

3. Floor: what Redis itself must spend per reading when no per-sensor work runs in it, measured
   with plain commands on the same fleet: a pipelined XADD of each reading (MAXLEN ~ as the
   producer trims), XREADGROUP of a thousand at a time, XACK of one live commit's ids and an
   HSET of a 160-byte state per sensor. Redis figures compare across machines only against this
   floor: the targets (15 µs per reading where the floor measured 10 µs) are a ratio of 1.5.

Redis CPU is INFO cpu used_cpu_sys + used_cpu_user (the server itself); the CPU of the AOF
rewrites it forks is reported on its own line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import redis

from telemetry.embedded import PrivateRedisServer, free_port
from tests.tls_helpers import make_tls_files

ROOT = Path(__file__).resolve().parent.parent
START_MS = 1_700_000_000_000
DRAIN_TIMEOUT_S = 600.0
LIVE_EXTRA_S = 90.0
CATCH_UP_S = 60.0
WORKER_START_S = 30.0
STOP_GRACE_S = 30.0
POLL_S = 0.02
SAMPLE_S = 0.2
REDISCOVER_S = 5.0
BACKLOG_LIMIT_MS = 2000
LIVE_WORKERS = 2
PAGE = 10_000
LIVE_COMMANDS = 6  # the commands shown, most time first
FLOOR_ROUNDS = 3
FLOOR_READINGS = 10  # per sensor
FLOOR_STREAMS = 16
FLOOR_MAXLEN = 1_000_000 // FLOOR_STREAMS  # the producer's default, split over the partitions
FLOOR_READ = 1000  # XREADGROUP COUNT
FLOOR_ACK = 60  # ids per XACK: about one live commit's worth per partition
FLOOR_STATE = b"s" * 160  # a sensor's checkpointed state
FLOOR_PIPELINE = 1000  # commands per round trip


@dataclass(frozen=True, slots=True)
class Figure:
    name: str
    value: float
    unit: str


class PhaseTimeout(Exception):
    def __init__(self, what: str, seconds: float) -> None:
        super().__init__(f"{what} did not finish within {seconds:.0f} s")
        self.what = what
        self.seconds = seconds


class PhaseFailed(Exception):
    pass


# -- subprocesses ------------------------------------------------------------------------------


@dataclass(slots=True)
class Child:
    """One pipeline command; reaped with wait4 so that its CPU time is known."""

    name: str
    process: subprocess.Popen
    log: Path
    exit_code: int | None = None
    cpu_s: float = 0.0

    def exited(self) -> bool:
        if self.exit_code is None:
            self._reap(os.WNOHANG)
        return self.exit_code is not None

    def _reap(self, options: int) -> None:
        pid, status, usage = os.wait4(self.process.pid, options)
        if pid == 0:
            return
        self.exit_code = os.waitstatus_to_exitcode(status)
        self.process.returncode = self.exit_code
        self.cpu_s = usage.ru_utime + usage.ru_stime

    def kill(self) -> None:
        if self.exit_code is None:
            self.process.kill()
            self._reap(0)

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM (the commands finish their batch), SIGKILL after grace_s."""
        if self.exited():
            return
        self.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while not self.exited() and time.monotonic() < deadline:
            time.sleep(POLL_S)
        self.kill()

    def check(self) -> None:
        """Raise PhaseFailed, with the end of its stderr, if it exited with an error."""
        if self.exited() and self.exit_code != 0:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise PhaseFailed(f"{self.name} exited with {self.exit_code}:\n{tail}")


class Processes:
    """Every child a phase starts; whatever still runs when the phase ends is killed."""

    def __init__(self, folder: Path, url: str) -> None:
        self.folder = folder
        self.url = url
        self.children: list[Child] = []

    def start(self, name: str, args: list[str]) -> Child:
        log = self.folder / f"{name}.log"
        with open(log, "wb") as stderr:
            process = subprocess.Popen([sys.executable, "-m", *args, "--redis-url", self.url], cwd=ROOT,
                                       env={**os.environ, "PYTHONPATH": str(ROOT)},
                                       stdout=subprocess.DEVNULL, stderr=stderr)
        child = Child(name, process, log)
        self.children.append(child)
        return child

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        for child in self.children:
            child.kill()


def start_workers(processes: Processes, count: int, *extra: str) -> list[Child]:
    return [processes.start(f"w{k}", ["consumers", "aggregate", "--start", "all", "--consumer", f"w{k}", *extra])
            for k in range(1, count + 1)]


@contextmanager
def fresh_pipeline(tls: bool = False) -> Iterator[tuple[redis.Redis, Processes]]:
    """A private redis-server (AOF on) in a temporary folder, a client for the samplers, and the
    children; with `tls`, the children connect over TLS with client certificates (a throwaway CA),
    the samplers on the plain port."""
    with tempfile.TemporaryDirectory(prefix="telemetry-fleet-") as folder:
        files = make_tls_files(Path(folder) / "certs") if tls else None
        tls_port = free_port()
        with (PrivateRedisServer(Path(folder), extra_args=files.server_args(tls_port) if files else ()) as server,
              Processes(Path(folder), f"rediss://127.0.0.1:{tls_port}/0?{files.query()}" if files else server.url)
              as processes):
            yield redis.Redis.from_url(server.url, decode_responses=True), processes


# -- what Redis says ---------------------------------------------------------------------------


def readings_streams(db: redis.Redis) -> list[str]:
    return sorted(key for key in db.scan_iter(match="*readings*", count=1000) if db.type(key) == "stream")


def redis_cpu_s(db: redis.Redis) -> float:
    info = db.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def redis_child_cpu_s(db: redis.Redis) -> float:
    """CPU of Redis's forked children: AOF rewrites, which the AOF's growth triggers."""
    info = db.info("cpu")
    return float(info["used_cpu_sys_children"]) + float(info["used_cpu_user_children"])


def command_cpu_s(db: redis.Redis) -> list[tuple[str, float]]:
    """Time in each command, most first (INFO commandstats). A command that a script or a
    transaction runs is counted on its own and also in its EVALSHA or EXEC: the commit script is
    EVALSHA; EXEC holds the producer's batches and the workers' fenced reads."""
    calls = [(name.removeprefix("cmdstat_").upper(), stats["usec"] / 1e6)
             for name, stats in db.info("commandstats").items()]
    return sorted(calls, key=lambda call: -call[1])


def total_length(db: redis.Redis, streams: list[str]) -> int:
    return sum(db.xlen(stream) for stream in streams)


def id_ms(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


def consumption_started(db: redis.Redis, streams: list[str]) -> bool:
    return any(group["last-delivered-id"] != "0-0" or group["pending"] > 0
               for stream in streams for group in db.xinfo_groups(stream))


def consumers_seen(db: redis.Redis, streams: list[str]) -> set[str]:
    """Workers seen as consumers of a group, or holding a partition's lease (a partitioned
    pipeline's workers own partitions before any of them has read an entry)."""
    seen = {consumer["name"] for stream in streams for group in db.xinfo_groups(stream)
            for consumer in db.xinfo_consumers(stream, group["name"])}
    for key in db.scan_iter(match="*:lease", _type="string"):
        token = db.get(key)
        if token:
            seen.add(token.rsplit(":", 1)[0])
    return seen


def oldest_unacked_id(db: redis.Redis, stream: str, group: dict) -> str | None:
    """The oldest pending entry, else the first entry after the group's last-delivered id."""
    if group["pending"]:
        oldest = db.xpending(stream, group["name"])["min"]
        if oldest:
            return oldest
    unread = db.xrange(stream, min=f"({group['last-delivered-id']}", count=1)
    return unread[0][0] if unread else None


def backlog_age_ms(db: redis.Redis, streams: list[str]) -> int:
    """Worst stream: now minus the time of its oldest reading no group has acknowledged yet.
    A stream without a group counts from its first entry."""
    ages = [0]
    for stream in streams:
        groups = db.xinfo_groups(stream)
        if groups:
            oldest = [oldest_unacked_id(db, stream, group) for group in groups]
        else:
            first = db.xrange(stream, count=1)
            oldest = [first[0][0] if first else None]
        now = time.time_ns() // 1_000_000
        ages += [max(0, now - id_ms(entry_id)) for entry_id in oldest if entry_id]
    return max(ages)


def count_after(db: redis.Redis, stream: str, entry_id: str) -> int:
    total, cursor = 0, f"({entry_id}"
    while page := db.xrange(stream, min=cursor, count=PAGE):
        total += len(page)
        cursor = f"({page[-1][0]}"
    return total


@dataclass(frozen=True, slots=True)
class Backlog:
    pending: int
    unread: int


def backlog(db: redis.Redis, streams: list[str]) -> Backlog:
    """Pending and unread entries over every group; a stream without a group is unread whole."""
    pending = unread = 0
    for stream in streams:
        groups = db.xinfo_groups(stream)
        if not groups:
            unread += db.xlen(stream)
        for group in groups:
            pending += group["pending"]
            unread += count_after(db, stream, group["last-delivered-id"])
    return Backlog(pending, unread)


def caught_up(db: redis.Redis, streams: list[str]) -> bool:
    for stream in streams:
        groups = db.xinfo_groups(stream)
        if not groups and db.xlen(stream):
            return False
        if any(oldest_unacked_id(db, stream, group) for group in groups):
            return False
    return True


# -- phases ------------------------------------------------------------------------------------


def per_reading_us(seconds: float, readings: int) -> float:
    return seconds * 1e6 / readings if readings else math.nan


def wait_for_exit(children: list[Child], what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(child.exited() for child in children):
        if time.monotonic() > deadline:
            raise PhaseTimeout(what, timeout_s)
        time.sleep(POLL_S)
    for child in children:
        child.check()


def backfill(db: redis.Redis, processes: Processes, label: str, sensors: int,
             readings: int) -> tuple[list[str], int, float]:
    """Streams, readings written, and Redis CPU seconds spent while the producer backfilled."""
    cpu_before = redis_cpu_s(db)
    producer = processes.start("producer", ["producers", "--fleet", "f-", str(sensors), "--count", str(readings),
                                            "--rate", "1", "--start", str(START_MS)])
    wait_for_exit([producer], f"{label} backfill", DRAIN_TIMEOUT_S)
    streams = readings_streams(db)
    return streams, total_length(db, streams), redis_cpu_s(db) - cpu_before


@dataclass(frozen=True, slots=True)
class DrainRun:
    children: list[Child]
    elapsed_s: float  # from the first entry consumed until every worker exited
    wall_s: float  # from spawning the workers


def drain_with_workers(db: redis.Redis, processes: Processes, streams: list[str], workers: int,
                       label: str) -> DrainRun:
    """`workers` `--drain` workers until every one exited (each checked for a clean exit)."""
    spawned = time.perf_counter()
    children = start_workers(processes, workers, "--drain")
    first_consumed: float | None = None
    while not all(child.exited() for child in children):
        if time.perf_counter() > spawned + DRAIN_TIMEOUT_S:
            raise PhaseTimeout(label, DRAIN_TIMEOUT_S)
        if first_consumed is None and consumption_started(db, streams):
            first_consumed = time.perf_counter()
        time.sleep(POLL_S)
    finished = time.perf_counter()
    for child in children:
        child.check()
    return DrainRun(children, finished - (first_consumed if first_consumed is not None else spawned),
                    finished - spawned)


def drain(workers: int, sensors: int, readings: int, tls: bool = False) -> list[Figure]:
    label = f"{'TLS ' if tls else ''}drain {workers}w"
    with fresh_pipeline(tls) as (db, processes):
        child_cpu_before = redis_child_cpu_s(db)
        streams, written, producer_cpu = backfill(db, processes, label, sensors, readings)
        cpu_before = redis_cpu_s(db)
        run = drain_with_workers(db, processes, streams, workers, label)
        drain_cpu = redis_cpu_s(db) - cpu_before
        child_cpu = redis_child_cpu_s(db) - child_cpu_before
        streams = readings_streams(db)
        left = backlog(db, streams)
    children, elapsed = run.children, run.elapsed_s
    producer_us = per_reading_us(producer_cpu, written)
    drain_us = per_reading_us(drain_cpu, written)
    return [
        Figure(f"{label}: streams", len(streams), "streams"),
        Figure(f"{label}: readings written", written, "readings"),
        Figure(f"{label}: producer Redis CPU", producer_us, "µs/reading"),
        Figure(f"{label}: drain time (first consumed to exit)", elapsed, "s"),
        Figure(f"{label}: drain wall from spawn", run.wall_s, "s"),
        Figure(f"{label}: readings/s", written / elapsed if elapsed > 0 else math.nan, "readings/s"),
        Figure(f"{label}: aggregator Redis CPU", drain_us, "µs/reading"),
        Figure(f"{label}: producer + aggregator Redis CPU", producer_us + drain_us, "µs/reading"),
        Figure(f"{label}: worker CPU", per_reading_us(sum(c.cpu_s for c in children), written), "µs/reading"),
        Figure(f"{label}: Redis AOF-rewrite CPU (backfill + drain)", per_reading_us(child_cpu, written), "µs/reading"),
        Figure(f"{label}: pending after drain", left.pending, "entries"),
        Figure(f"{label}: unread after drain", left.unread, "entries"),
    ]


def wait_for_consumers(db: redis.Redis, children: list[Child], deadline: float) -> list[str]:
    """Until every worker shows as a consumer on some readings stream; returns the streams."""
    names = {child.name for child in children}
    while True:
        streams = readings_streams(db)
        if names <= consumers_seen(db, streams):
            return streams
        for child in children:
            child.check()
        if time.monotonic() > deadline:
            raise PhaseTimeout("live workers starting", WORKER_START_S)
        time.sleep(0.1)


def sample_backlog(db: redis.Redis, producer: Child, workers: list[Child], streams: list[str],
                   deadline: float, timeout_s: float) -> list[int]:
    """Backlog age every SAMPLE_S while the producer runs, finding streams again every REDISCOVER_S."""
    samples: list[int] = []
    discovered = time.monotonic()
    while not producer.exited():
        now = time.monotonic()
        if now > deadline:
            raise PhaseTimeout("live", timeout_s)
        if now - discovered > REDISCOVER_S:
            streams, discovered = readings_streams(db), now
        samples.append(backlog_age_ms(db, streams))
        for worker in workers:
            if worker.exited():
                worker.check()
                raise PhaseFailed(f"live: worker {worker.name} exited while the producer ran")
        time.sleep(max(0.0, SAMPLE_S - (time.monotonic() - now)))
    producer.check()
    return samples


def wait_caught_up(db: redis.Redis, streams: list[str], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not caught_up(db, streams):
        if time.monotonic() > deadline:
            return False
        time.sleep(SAMPLE_S)
    return True


def percentile(values: list[int], q: float) -> float:
    """Nearest rank."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return float(ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)])


def live(sensors: int, seconds: float) -> list[Figure]:
    label = f"live {LIVE_WORKERS}w"
    timeout_s = seconds + LIVE_EXTRA_S
    deadline = time.monotonic() + timeout_s
    with fresh_pipeline() as (db, processes):
        cpu_before, child_cpu_before = redis_cpu_s(db), redis_child_cpu_s(db)
        db.config_resetstat()
        workers = start_workers(processes, LIVE_WORKERS)
        streams = wait_for_consumers(db, workers, min(deadline, time.monotonic() + WORKER_START_S))
        started = time.perf_counter()
        producer = processes.start("producer", ["producers", "--fleet", "live-", str(sensors), "--rate", "1",
                                                "--duration", f"{seconds:g}"])
        samples = sample_backlog(db, producer, workers, streams, deadline, timeout_s)
        produced = time.perf_counter()
        streams = readings_streams(db)
        done = wait_caught_up(db, streams, max(0.0, min(CATCH_UP_S, deadline - time.monotonic())))
        settled = time.perf_counter()
        left = backlog(db, streams)
        for worker in workers:
            worker.stop()
        for worker in workers:
            worker.check()
        written = total_length(db, streams)
        redis_cpu = redis_cpu_s(db) - cpu_before
        child_cpu = redis_child_cpu_s(db) - child_cpu_before
        commands = command_cpu_s(db)
    processed = written - left.pending - left.unread
    peak = max(samples, default=0)
    return [
        Figure(f"{label}: streams", len(streams), "streams"),
        Figure(f"{label}: readings written", written, "readings"),
        Figure(f"{label}: producer wall for {seconds:g} s of readings", produced - started, "s"),
        Figure(f"{label}: backlog samples", len(samples), "samples"),
        Figure(f"{label}: backlog sample interval, mean", (produced - started) * 1000 / max(1, len(samples)), "ms"),
        Figure(f"{label}: backlog age p50", percentile(samples, 50), "ms"),
        Figure(f"{label}: backlog age p99", percentile(samples, 99), "ms"),
        Figure(f"{label}: backlog age max", peak, "ms"),
        Figure(f"{label}: backlog max < {BACKLOG_LIMIT_MS} ms", float(peak < BACKLOG_LIMIT_MS), "yes/no"),
        Figure(f"{label}: caught up within {CATCH_UP_S:.0f} s of producer exit", float(done), "yes/no"),
        Figure(f"{label}: catch-up after producer exit", settled - produced, "s"),
        Figure(f"{label}: unprocessed at end", left.pending + left.unread, "entries"),
        Figure(f"{label}: readings/s processed", processed / (settled - started), "readings/s"),
        Figure(f"{label}: Redis CPU (producer + aggregator)", per_reading_us(redis_cpu, written), "µs/reading"),
        Figure(f"{label}: worker CPU", per_reading_us(sum(w.cpu_s for w in workers), written), "µs/reading"),
        Figure(f"{label}: Redis AOF-rewrite CPU", per_reading_us(child_cpu, written), "µs/reading"),
        *[Figure(f"{label}: Redis in {command}", per_reading_us(seconds, written), "µs/reading")
          for command, seconds in commands[:LIVE_COMMANDS]],
    ]


def floor(sensors: int) -> list[Figure]:
    """Redis CPU per reading of each plain command a reading needs, and their sum: the median of
    FLOOR_ROUNDS rounds, each on a fresh server (one round varies by a quarter on a shared machine)."""
    rounds = sorted((floor_round(sensors) for _ in range(FLOOR_ROUNDS)), key=lambda figures: figures[-1].value)
    return rounds[len(rounds) // 2]


def floor_round(sensors: int) -> list[Figure]:
    streams = [f"floor:{{{k}}}:readings" for k in range(FLOOR_STREAMS)]
    total = sensors * FLOOR_READINGS
    with fresh_pipeline() as (db, _):
        for stream in streams:
            db.xgroup_create(stream, "g", id="0", mkstream=True)
        entry_ids: dict[str, list[str]] = {stream: [] for stream in streams}

        def xadd(pipeline: redis.client.Pipeline, n: int) -> None:
            sensor = n % sensors
            pipeline.xadd(streams[sensor % FLOOR_STREAMS],
                          {"sensor": f"f-{sensor:05d}", "ts": START_MS + n // sensors * 1000,
                           "temperature_c": repr(20.0 + sensor % 997 / 100), "humidity_pct": repr(40.0 + n % 89 / 10),
                           "seq": n // sensors + 1, "v": 1},
                          maxlen=FLOOR_MAXLEN, approximate=True)

        def xreadgroup() -> None:
            for stream in streams:
                while reply := db.xreadgroup("g", "c", {stream: ">"}, count=FLOOR_READ):
                    entry_ids[stream] += [entry_id for entry_id, _ in reply[0][1]]

        def xack(pipeline: redis.client.Pipeline, n: int) -> None:
            stream = streams[n % FLOOR_STREAMS]
            pipeline.xack(stream, "g", *entry_ids[stream][n // FLOOR_STREAMS * FLOOR_ACK:][:FLOOR_ACK])

        def hset(pipeline: redis.client.Pipeline, n: int) -> None:
            first = n * FLOOR_ACK
            pipeline.hset(f"floor:{{{n % FLOOR_STREAMS}}}:state",
                          items=[part for k in range(first, min(first + FLOOR_ACK, total))
                                 for part in (f"f-{k % sensors:05d}", FLOOR_STATE)])

        acks = FLOOR_STREAMS * math.ceil(total / FLOOR_STREAMS / FLOOR_ACK)
        steps = [("XADD, pipelined", lambda: pipelined(db, xadd, total)), ("XREADGROUP", xreadgroup),
                 (f"XACK of {FLOOR_ACK} ids", lambda: pipelined(db, xack, acks)),
                 ("HSET of a 160-byte state per sensor", lambda: pipelined(db, hset, math.ceil(total / FLOOR_ACK)))]
        figures = []
        for name, step in steps:
            before = redis_cpu_s(db)
            step()
            figures.append(Figure(f"floor: {name}", per_reading_us(redis_cpu_s(db) - before, total), "µs/reading"))
        if backlog(db, streams).pending:
            raise PhaseFailed("the floor's XACKs left entries pending")
    return [*figures, Figure("floor: Redis CPU per reading, sum", sum(f.value for f in figures), "µs/reading")]


def pipelined(db: redis.Redis, queue: Callable[[redis.client.Pipeline, int], None], count: int) -> None:
    for first in range(0, count, FLOOR_PIPELINE):
        pipeline = db.pipeline(transaction=False)
        for n in range(first, min(first + FLOOR_PIPELINE, count)):
            queue(pipeline, n)
        pipeline.execute()


def against_floor(figures: list[Figure]) -> list[Figure]:
    """Each Redis CPU figure as a multiple of the floor measured in the same run."""
    by_name = {figure.name: figure.value for figure in figures}
    floor_us = by_name.get("floor: Redis CPU per reading, sum")
    if not floor_us:
        return []
    return [Figure(f"{name} / floor", by_name[name] / floor_us, "x")
            for name in ("drain 2w: producer + aggregator Redis CPU", "live 2w: Redis CPU (producer + aggregator)")
            if name in by_name]


def run_phase(label: str, phase: Callable[..., list[Figure]], *args: float) -> list[Figure]:
    """A phase's figures; a timeout or a failed command becomes a figure instead of ending the run."""
    print(f"bench_fleet: {label} ...", file=sys.stderr, flush=True)
    try:
        return phase(*args)
    except PhaseTimeout as timeout:
        print(f"bench_fleet: {timeout}", file=sys.stderr)
        return [Figure(f"{label}: TIMED OUT ({timeout.what})", timeout.seconds, "s")]
    except PhaseFailed as failure:
        print(f"bench_fleet: {label} failed: {failure}", file=sys.stderr)
        return [Figure(f"{label}: FAILED", 1.0, "yes/no")]


# -- output ------------------------------------------------------------------------------------


COUNT_UNITS = {"streams", "readings", "entries", "samples"}


def render(figure: Figure) -> str:
    if figure.unit == "yes/no":
        return f"  {figure.name:<58} {'yes' if figure.value else 'no':>12}"
    digits = 0 if figure.unit in COUNT_UNITS else 2 if figure.unit == "x" else 1
    value = f"{figure.value:>12,.{digits}f}"
    return f"  {figure.name:<58} {value} {figure.unit}"


def print_table(figures: list[Figure], args: argparse.Namespace) -> None:
    print(f"fleet benchmark: {args.sensors:,} sensors; drain {args.readings} readings each; "
          f"live {args.live_seconds:g} s at 1 Hz ({os.cpu_count()} cores, Python {sys.version.split()[0]})")
    section = ""
    for figure in figures:
        head = figure.name.split(":", 1)[0]
        if head != section:
            print(f"{head}")
            section = head
        print(render(figure))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sensors", type=int, default=10_000, help="fleet size (default 10,000)")
    parser.add_argument("--readings", type=int, default=30, help="readings per sensor in the drain (default 30)")
    parser.add_argument("--live-seconds", type=float, default=60.0, help="live run length (default 60)")
    parser.add_argument("--skip-live", action="store_true", help="only the drain configurations")
    parser.add_argument("--skip-drain", action="store_true", help="only the live run")
    parser.add_argument("--json", action="store_true", help="print a JSON list of {name, value, unit}")
    return parser


def main() -> int:
    args = build_parser().parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the children are killed on the way out
    figures: list[Figure] = []
    for workers in () if args.skip_drain else (1, 2):
        figures += run_phase(f"drain {workers}w", drain, workers, args.sensors, args.readings)
    if not args.skip_live:
        figures += run_phase(f"live {LIVE_WORKERS}w", live, args.sensors, args.live_seconds)
    figures += run_phase("floor", floor, args.sensors)
    figures += against_floor(figures)
    if args.json:
        print(json.dumps([{"name": f.name, "value": None if math.isnan(f.value) else f.value, "unit": f.unit}
                          for f in figures]))
    else:
        print_table(figures, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
