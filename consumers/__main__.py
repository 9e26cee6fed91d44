"""python -m consumers {aggregate,alerts,notify,status,group}: run workers, follow alerts, deliver
them to people, inspect the pipeline, manage consumer groups."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import redis

from consumers import alerts_tail, groups
from consumers.notify import cli as notify_cli
from consumers.rules import load_rules
from consumers.settings import AggregatorSettings
from consumers.status import collect_status, render_status
from consumers.worker import AggregatorWorker
from telemetry import logstream
from telemetry.cli import (
    CommandParser,
    PipelineConfig,
    StopSignal,
    add_redis_arguments,
    add_replica_wait_argument,
    connect_with_retry,
    number_type,
    run_main,
    until_answered,
)
from telemetry.connection import connect
from telemetry.errors import RedisUnavailable
from telemetry.gc_tuning import tune_for_batches
from telemetry.timeutil import parse_duration_ms


def build_parser() -> CommandParser:
    parser = CommandParser(prog="python -m consumers", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=CommandParser)

    aggregate = commands.add_parser("aggregate", help="run an aggregator worker in a consumer group",
                                    description="Aggregate readings into windows, rolling stats and alerts.")
    aggregate.add_argument("--consumer", default="", help="consumer name (default HOST-PID)")
    aggregate.add_argument("--start", choices=("new", "all"), default="new",
                           help="where a new group starts reading (default new)")
    aggregate.add_argument("--batch", type=number_type(int, minimum=1), default=1000,
                           help="most entries read from one partition at a time (default 1000)")
    for flag, default, text in (("window", "60s", "tumbling window length"),
                                ("grace", "10s", "how long after its end a window waits for stragglers"),
                                ("allowed-lateness", "1h", "a reading up to this late revises its emitted window"),
                                ("rolling", "300s", "rolling stats horizon"),
                                ("idle", "60s", "silent sensor: close its window this long after end + grace"),
                                ("max-skew", "5m", "readings further ahead of this clock are dead-lettered"),
                                ("lease", "10s", "a dead worker's partitions move to others after this long"),
                                ("settle", "2s", "membership must stay unchanged this long before partitions move"),
                                ("linger", "0ms", "once entries arrive, wait this long for more (producers writing piecemeal)")):
        aggregate.add_argument(f"--{flag}", default=default, help=f"{text} (default {default})")
    aggregate.add_argument("--max-deliveries", type=number_type(int, minimum=1), default=5,
                           help="dead-letter an entry delivered more often than this (default 5)")
    aggregate.add_argument("--rules", type=Path, help="alert rules TOML (default: built-in rules)")
    aggregate.add_argument("--output-maxlen", type=number_type(int, minimum=0), default=1_000_000,
                           help="MAXLEN ~ of the aggregates, alerts and dead-letter streams")
    aggregate.add_argument("--count", type=number_type(int, minimum=1), help="stop after this many entries")
    aggregate.add_argument("--duration", help="stop after this long (e.g. 30s)")
    aggregate.add_argument("--drain", action="store_true", help="stop when nothing is left to read")
    aggregate.add_argument("--log-json", action="store_true", help="log one JSON object per line (else timestamped text)")
    aggregate.add_argument("--metrics-port", type=number_type(int, minimum=1, maximum=65535), help="serve Prometheus metrics here")
    add_replica_wait_argument(aggregate)
    add_redis_arguments(aggregate)

    alerts = commands.add_parser("alerts", help="follow the alerts of every partition",
                                 description="Follow the alerts of every partition, in the order Redis took them.")
    alerts.add_argument("--json", action="store_true", help="one JSON object per line")
    alerts.add_argument("--from-start", action="store_true", help="print existing alerts first")
    alerts.add_argument("--no-follow", action="store_true", help="print existing alerts and exit")
    add_redis_arguments(alerts)

    notify_cli.add_parser(commands)

    status = commands.add_parser("status", help="partitions, owners, lag, pending and dead letters",
                                 description="Show totals, then each partition's owner, epoch, length, lag and "
                                             "pending for the group, other groups, dead letters and counters.")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--maxlen", type=number_type(int, minimum=0), default=1_000_000,
                        help="the producers' --maxlen, the pipeline's total (each partition keeps its share), "
                             "to warn when a partition's lag approaches it (default 1,000,000)")
    add_redis_arguments(status)

    group = commands.add_parser("group", help="list, reset, delete or prune consumer groups",
                                description="Manage the pipeline's consumer groups (the group is --group).")
    actions = group.add_subparsers(dest="action", required=True, parser_class=CommandParser)
    listing = actions.add_parser("list", help="every group on the partition streams, with lag and pending")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    create = actions.add_parser("create", help="create the pipeline (--partitions) and --group on every partition, "
                                               "as the admin role does before producers and workers start")
    create.add_argument("--to", default="end", metavar="POSITION",
                        help="where a new group starts: start, end (default) or a stream id")
    reset = actions.add_parser("reset", help="start --group over from a position: its state and outputs go")
    reset.add_argument("--to", required=True, metavar="POSITION", help="start, end, or a stream id")
    actions.add_parser("delete", help="delete --group: the consumer group, its state, outputs, counters, "
                                      "leases and members (epochs stay: they only grow)")
    actions.add_parser("prune", help="delete --group's consumers that hold nothing pending")
    for action in actions.choices.values():
        add_redis_arguments(action)
    return parser


def aggregator_settings(args) -> AggregatorSettings:
    return AggregatorSettings(
        group=args.group, consumer=args.consumer, start=args.start, batch=args.batch, partitions=args.partitions,
        window_ms=parse_duration_ms(args.window, field="--window"),
        grace_ms=parse_duration_ms(args.grace, field="--grace"),
        allowed_lateness_ms=parse_duration_ms(args.allowed_lateness, field="--allowed-lateness"),
        rolling_ms=parse_duration_ms(args.rolling, field="--rolling"),
        idle_ms=parse_duration_ms(args.idle, field="--idle"),
        max_skew_ms=parse_duration_ms(args.max_skew, field="--max-skew"),
        lease_ms=parse_duration_ms(args.lease, field="--lease"),
        settle_ms=parse_duration_ms(args.settle, field="--settle"),
        linger_ms=parse_duration_ms(args.linger, field="--linger"),
        max_deliveries=args.max_deliveries, output_maxlen=args.output_maxlen, rules=load_rules(args.rules),
        count=args.count, drain=args.drain, wait_replicas=args.wait_replicas,
        duration_ms=parse_duration_ms(args.duration, field="--duration") if args.duration else None,
    )


def run_aggregate(args, config: PipelineConfig, stop: StopSignal) -> int:
    logstream.install(args.log_json)
    settings = aggregator_settings(args)
    db = connect_with_retry(config, stop)
    layout = until_answered("aggregator", lambda: config.layout(db), stop)
    worker = AggregatorWorker(db, layout, config.field_map, settings)
    if args.metrics_port:
        from telemetry.metrics import start_worker_metrics

        worker.on_commit = start_worker_metrics(args.metrics_port, db, layout, settings.group)
    tune_for_batches()
    print(f"aggregator: worker {settings.consumer} in group {settings.group} over {layout.count} partitions "
          f"of {config.keys.namespace_tag}; {len(settings.rules)} alert rules", file=sys.stderr)
    stats = worker.run(lambda: stop.requested)
    print(f"aggregator: {stats.entries} entries ({stats.readings} readings, {stats.dead_lettered} dead-lettered, "
          f"{stats.lost_to_trim} lost to trimming), {stats.windows_emitted} windows, {stats.alerts_emitted} alerts, "
          f"{stats.commits} commits, {stats.takeovers} takeovers, {stats.fenced} fenced", file=sys.stderr)
    return 0


def run_alerts(args, config: PipelineConfig, stop: StopSignal) -> int:
    db = connect_with_retry(config, stop)
    streams = [keys.alerts for keys in config.layout(db, create=False).groups(config.group)]
    start = alerts_tail.start_ids(db, streams, from_start=args.from_start or args.no_follow)
    try:
        for entry_id, fields in alerts_tail.follow(db, start, lambda: stop.requested, follow_new=not args.no_follow):
            print(alerts_tail.render(entry_id, fields, args.json), flush=True)
    except redis.ConnectionError as error:
        raise RedisUnavailable(f"lost Redis while following alerts: {error}") from None
    return 0


def run_status(args, config: PipelineConfig) -> int:
    db = connect(config.target(), announce=not args.json)
    status = collect_status(db, config.layout(db, create=False), config.group, args.maxlen)
    print(status.as_json() if args.json else render_status(status))
    return 0


def run_group(args, config: PipelineConfig) -> int:
    db = connect(config.target(), announce=not getattr(args, "json", False))
    layout = config.layout(db, create=args.action == "create")
    if args.action == "list":
        rows = groups.list_groups(db, layout)
        if args.json:
            print(json.dumps([asdict(row) for row in rows], indent=2))
        for row in [] if args.json else rows:
            lag = "?" if row.lag is None else row.lag
            print(f"{row.name}: {row.partitions} partitions, {row.workers} workers, {row.consumers} consumers, "
                  f"lag {lag}, pending {row.pending}")
        return 0
    if args.action == "create":
        count = groups.create_group(db, layout, config.group, args.to)
        print(f"pipeline {config.keys.namespace_tag}: {layout.count} partitions; group {config.group}: "
              f"created on {count} partitions (from {args.to}), {layout.count - count} had it")
    elif args.action == "reset":
        count = groups.reset_group(db, layout, config.group, args.to)
        print(f"group {config.group}: starts over from {args.to} on {count} partitions (state and outputs deleted)")
    elif args.action == "delete":
        count = groups.delete_group(db, layout, config.group)
        print(f"group {config.group}: deleted from {count} partitions")
    else:
        print(f"group {config.group}: {groups.prune_consumers(db, layout, config.group)} idle consumers deleted")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = PipelineConfig.from_args(args)
    if args.command == "status":
        return run_status(args, config)
    if args.command == "group":
        return run_group(args, config)
    stop = StopSignal().install()
    if args.command == "alerts":
        return run_alerts(args, config, stop)
    if args.command == "notify":
        return notify_cli.run(args, config, stop)
    return run_aggregate(args, config, stop)


def entry() -> None:
    """The installed console script."""
    run_main(main)


if __name__ == "__main__":
    entry()
