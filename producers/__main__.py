"""python -m producers NAME [NAME ...]: run simulated sensors until --count, --duration or Ctrl-C;
--from-csv replays an export, --from-mqtt bridges real sensors from a broker."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from producers.csv_replay import load_readings_csv, replay
from producers.faults import FaultRates
from producers.mqtt.cli import add_mqtt_arguments, device_publisher, run_bridge
from producers.simulation import Simulation, SimulationSettings
from producers.trim_guard import TrimGuard
from producers.writer import StreamWriter
from telemetry import logstream
from telemetry.cli import (
    CommandParser,
    PipelineConfig,
    StopSignal,
    add_redis_arguments,
    add_replica_wait_argument,
    connect_with_retry,
    number_type,
    replica_wait,
    run_main,
    until_answered,
)
from telemetry.errors import UsageError
from telemetry.partitions import partition_maxlen
from telemetry.progress import ProgressLine
from telemetry.schema import SchemaError, validate_sensor_name
from telemetry.timeutil import now_ms, parse_duration_ms, parse_time_ms

MAX_FLEET = 100_000


def build_parser() -> CommandParser:
    parser = CommandParser(prog="python -m producers",
                           description="Simulated temperature/humidity sensors writing readings to a Redis stream.")
    parser.add_argument("names", nargs="*", metavar="NAME", help="sensor names (1-64 of [A-Za-z0-9._-])")
    parser.add_argument("--fleet", nargs=2, action="append", default=[], metavar=("PREFIX", "N"),
                        help="add N sensors named PREFIX0001..PREFIXN (repeatable)")
    parser.add_argument("--seed", type=number_type(int), default=0, help="profile seed (default 0)")
    parser.add_argument("--rate", type=number_type(float, above=0), default=1.0, help="readings per second per sensor")
    parser.add_argument("--count", type=number_type(int, minimum=1), help="readings per sensor, then exit")
    parser.add_argument("--duration", help="event time to cover, then exit (e.g. 90, 90s, 5m, 250ms)")
    parser.add_argument("--start", metavar="TIME", help="backfill from TIME (ISO, epoch ms, or relative as --start=-1d) without waiting")
    parser.add_argument("--maxlen", type=number_type(int, minimum=0), default=1_000_000,
                        help="MAXLEN ~ trimming of the whole pipeline, shared by its partitions "
                             "(0 disables; default 1,000,000)")
    parser.add_argument("--batch", type=number_type(int, minimum=1), default=1000, help="readings per write")
    parser.add_argument("--from-csv", type=Path, metavar="FILE", help="replay an exported readings CSV instead")
    for fault in ("spike", "stuck", "dropout", "drift"):
        parser.add_argument(f"--{fault}-rate", type=number_type(float, minimum=0), default=0.0,
                            help=f"{fault} faults per sensor per hour (default 0)")
    parser.add_argument("--faulty", action="append", default=[], metavar="NAME",
                        help="apply the fault rates to this sensor only (repeatable; default: every sensor)")
    parser.add_argument("--json", action="store_true", help="print the final counts as JSON")
    parser.add_argument("--log-json", action="store_true", help="log one JSON object per line (else timestamped text)")
    parser.add_argument("--metrics-port", type=number_type(int, minimum=1, maximum=65535), help="serve Prometheus metrics here")
    add_replica_wait_argument(parser)
    add_mqtt_arguments(parser)
    add_redis_arguments(parser)
    return parser


def sensor_names(names: list[str], fleets: list[list[str]]) -> tuple[str, ...]:
    all_names = list(names)
    for prefix, size in fleets:
        if not size.isdigit() or int(size) < 1:
            raise UsageError(f"--fleet {prefix} {size}: N must be a positive integer")
        width = max(4, len(size))
        all_names += [f"{prefix}{index:0{width}d}" for index in range(1, int(size) + 1)]
    if not all_names:
        raise UsageError("name at least one sensor (NAME ... or --fleet PREFIX N)")
    if len(all_names) > MAX_FLEET:
        raise UsageError(f"{len(all_names)} sensors is more than one process runs ({MAX_FLEET})")
    try:
        for name in all_names:
            validate_sensor_name(name)
    except SchemaError as error:
        raise UsageError(f"sensor name {error.value!r}: {error.problem}") from None
    if len(set(all_names)) != len(all_names):
        raise UsageError("a sensor name is given twice")
    return tuple(all_names)


def duration_s(text: str | None) -> float | None:
    """--duration takes the forms every duration flag takes (a bare number is seconds)."""
    if text is None:
        return None
    milliseconds = parse_duration_ms(text, field="--duration")
    if milliseconds <= 0:
        raise UsageError(f"--duration {text}: must be positive")
    return milliseconds / 1000


def fault_rates(args) -> FaultRates:
    return FaultRates(args.spike_rate, args.stuck_rate, args.dropout_rate, args.drift_rate)


def faulty(args) -> tuple[str, ...]:
    unknown = set(args.faulty) - set(sensor_names(args.names, args.fleet))
    if unknown:
        raise UsageError(f"--faulty {', '.join(sorted(unknown))}: not among the sensors this producer runs")
    return tuple(args.faulty)


def planned_readings(settings: SimulationSettings, start_ms: int, now: int) -> int | None:
    """How many readings this run will write, where its end is known."""
    if settings.count is not None:
        ticks = settings.count
    elif settings.duration_s is not None:
        ticks = int(settings.duration_s * settings.rate_hz)
    elif settings.backfill_start_ms is not None:
        ticks = int(max(0, now - start_ms) / 1000 * settings.rate_hz)
    else:
        return None
    return ticks * len(settings.names)


def report(counts: dict[str, int], as_json: bool, stopped: bool) -> None:
    if as_json:
        print(json.dumps({"stopped_by_signal": stopped, "readings": counts}))
        return
    total = sum(counts.values())
    print(f"producer: wrote {total} readings from {len(counts)} sensors" + (" (stopped by signal)" if stopped else ""))
    for name, count in counts.items():
        print(f"  {name:<24} {count}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = PipelineConfig.from_args(args)
    logstream.install(args.log_json)
    stop = StopSignal().install()
    if args.from_mqtt is not None:
        return run_bridge(args, config, stop)
    if args.from_csv is not None:
        frame = load_readings_csv(args.from_csv)
        db = connect_with_retry(config, stop)
        layout = until_answered("producer", lambda: config.layout(db), stop)
        writer = StreamWriter(db, layout, config.field_map, partition_maxlen(args.maxlen, layout.count),
                          wait=replica_wait(args, "producer"))
        report(replay(frame, writer, config.field_map, args.batch), args.json, stop.requested)
        return 0
    settings = SimulationSettings(
        names=sensor_names(args.names, args.fleet), seed=args.seed, rate_hz=args.rate, count=args.count,
        duration_s=duration_s(args.duration), faults=fault_rates(args), faulty=faulty(args), batch_size=args.batch,
        backfill_start_ms=parse_time_ms(args.start, field="--start") if args.start else None,
    )
    start_ms = settings.backfill_start_ms if settings.backfill_start_ms is not None else now_ms()
    if args.to_mqtt is not None:
        writer, trim_guard = device_publisher(args), None
    else:
        db = connect_with_retry(config, stop)
        layout = until_answered("producer", lambda: config.layout(db), stop)
        writer = StreamWriter(db, layout, config.field_map, partition_maxlen(args.maxlen, layout.count),
                              wait=replica_wait(args, "producer"))
        trim_guard = TrimGuard(db, [partition.readings for partition in layout.partitions],
                               partition_maxlen(args.maxlen, layout.count))
    simulation = Simulation(settings, writer, config.field_map, start_ms,
                            until_answered("producer", lambda: writer.last_seqs(list(settings.names)), stop),
                            trim_guard)
    print(f"producer: {len(settings.names)} sensors at {settings.rate_hz:g} Hz"
          + (" (backfill)" if simulation.backfilling else ""), file=sys.stderr)
    planned = planned_readings(settings, start_ms, now_ms())
    if planned is not None and args.maxlen and planned > args.maxlen and args.to_mqtt is None:
        print(f"producer: WARNING this run writes about {planned:,} readings but the pipeline keeps {args.maxlen:,} "
              f"(--maxlen): the oldest {planned - args.maxlen:,} will be trimmed as it runs; to keep them, pass "
              f"--maxlen {planned} (or 0: no trimming)", file=sys.stderr)
    progress = ProgressLine("producer", "readings written", planned, sys.stderr,
                            every_s=5.0 if simulation.backfilling else 30.0)
    counters = [progress.add]
    if args.metrics_port:
        from telemetry.metrics import start_producer_metrics

        counters.append(start_producer_metrics(args.metrics_port).inc)

    def on_progress(written: int) -> None:
        for count in counters:
            count(written)

    try:
        simulation.run(now_ms, time.sleep, lambda: stop.requested, on_progress)
    finally:
        progress.close()
    report(simulation.counts(), args.json, stop.requested)
    return 0


def entry() -> None:
    """The installed console script."""
    run_main(main)


if __name__ == "__main__":
    entry()
