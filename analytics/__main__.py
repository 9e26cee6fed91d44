"""python -m analytics {export,report,plot,serve}: CSV, JSON Lines or Parquet export, per-sensor
report, plots, and the live web page."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from analytics.export import ExportRequest, export
from analytics.plot import alert_episodes, sensor_figure
from analytics.report import build_report, summarise
from analytics.streams import STREAM_KINDS, RowFilter, iter_frames, load_frame
from consumers.rolling_view import rolling_views
from consumers.rules import load_rules
from telemetry.cli import CommandParser, PipelineConfig, add_redis_arguments, number_type, run_main
from telemetry.connection import connect
from telemetry.errors import UsageError
from telemetry.gc_tuning import tune_for_batches
from telemetry.keys import GroupKeys
from telemetry.timeutil import parse_duration_ms, parse_time_ms

CSV_CHUNK_ROWS = 200_000


EXPORT_SUFFIXES = (".csv", ".csv.gz", ".jsonl", ".jsonl.gz", ".parquet")
FORMAT_BY_SUFFIX = {".parquet": "parquet", ".jsonl": "jsonl", ".jsonl.gz": "jsonl"}
PLOT_SUFFIXES = (".png", ".svg", ".pdf")

def add_filters(parser) -> None:
    parser.add_argument("--sensor", action="append", default=[], metavar="GLOB",
                        help="only these sensors (repeatable; glob patterns like 'greenhouse-*')")
    parser.add_argument("--since", help="from this time: ISO-8601, epoch ms, or relative as --since=-15m")
    parser.add_argument("--until", help="before this time (same forms as --since)")


def build_parser() -> CommandParser:
    parser = CommandParser(prog="python -m analytics", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=CommandParser)
    exporter = commands.add_parser("export", help="stream a stream to CSV, JSON Lines or Parquet",
                                   description="Export a stream of every partition, merged in stream-id order, "
                                               "in constant memory; atomic rename at the end.")
    exporter.add_argument("--out", required=True, help="target file (.csv, .csv.gz, .jsonl, .jsonl.gz, .parquet) or - for stdout")
    exporter.add_argument("--kind", dest="which", choices=sorted(STREAM_KINDS), default="readings",
                          help="what to export (default readings); --stream is the readings key, as everywhere")
    exporter.add_argument("--format", choices=("csv", "jsonl", "parquet"), help="default: from the file name, else csv")
    exporter.add_argument("--all-revisions", action="store_true",
                          help="aggregates: every revision of a window a late reading revised (default: the latest)")
    add_filters(exporter)
    add_redis_arguments(exporter)

    report = commands.add_parser("report", help="per-sensor statistics, gaps, duplicates, dead letters, alerts",
                                 description="One row per sensor from the live stream or a CSV export.")
    report.add_argument("--csv", type=Path, help="read an exported readings CSV instead of Redis")
    report.add_argument("--json", action="store_true", help="machine-readable output")
    add_filters(report)
    add_redis_arguments(report)

    plot = commands.add_parser("plot", help="plot one sensor with window means and alert episodes",
                               description="Temperature and humidity over time, window means, alert episodes.")
    plot.add_argument("--sensor", required=True, help="sensor name")
    plot.add_argument("--out", required=True, type=Path, help="image to write (.png, .svg or .pdf)")
    plot.add_argument("--since", help="from this time")
    plot.add_argument("--until", help="before this time")
    plot.add_argument("--csv", type=Path, help="read readings from an exported CSV instead of Redis")
    add_redis_arguments(plot)

    serve = commands.add_parser("serve", help="the live web page of the fleet (read-only)",
                                description="Serve the fleet, sensor and alerts pages, their JSON API and live "
                                            "event streams; reads the pipeline, writes nothing.")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=number_type(int, minimum=0, maximum=65535), default=8080,
                       help="port (default 8080; 0 picks a free one)")
    serve.add_argument("--rules", type=Path, help="the workers' rules file, for the thresholds drawn on the "
                                                  "charts (default: the built-in rules)")
    serve.add_argument("--stale", default="30s", help="a sensor with no reading this long is drawn silent "
                                                      "(default 30s)")
    add_redis_arguments(serve)
    return parser


def row_filter(args, sensors: list[str]) -> RowFilter:
    return RowFilter(tuple(sensors),
                     parse_time_ms(args.since, field="--since") if args.since else None,
                     parse_time_ms(args.until, field="--until") if args.until else None)


def partition_groups(db, config: PipelineConfig) -> list[GroupKeys]:
    """The pipeline's partitions as the configured group sees them; a reader creates no pipeline."""
    return config.layout(db, create=False).groups(config.group)


def redis_frames(db, groups: list[GroupKeys], config: PipelineConfig, which: str, selection: RowFilter
                 ) -> Iterator[pd.DataFrame]:
    for _, frame in iter_frames(db, STREAM_KINDS[which], groups, config.field_map, selection):
        yield frame


def csv_frames(path: Path, selection: RowFilter) -> Iterator[pd.DataFrame]:
    try:
        for chunk in pd.read_csv(path, chunksize=CSV_CHUNK_ROWS, dtype={"sensor": str}):
            if "sensor" not in chunk or "ts_ms" not in chunk:
                raise UsageError(f"--csv {path}: not a readings export (needs sensor and ts_ms columns)")
            yield selection.apply(chunk, "ts_ms")
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise UsageError(f"--csv {path}: cannot read ({error.__class__.__name__})") from None


def checked_out(text: str, suffixes: tuple[str, ...]) -> str:
    """--out names a file this command can write: not empty, not a folder, a known extension."""
    if not text.strip():
        raise UsageError("--out: give a file name (or - for stdout)")
    if text == "-":
        return text
    path = Path(text)
    if path.is_dir():
        raise UsageError(f"--out {text}: is a folder; give a file name in it")
    if not text.lower().endswith(suffixes):
        raise UsageError(f"--out {text}: the extension must be one of {', '.join(suffixes)}")
    return text


def run_export(args, config: PipelineConfig) -> int:
    checked_out(args.out, EXPORT_SUFFIXES)
    file_format = args.format or next((kind for suffix, kind in FORMAT_BY_SUFFIX.items() if args.out.endswith(suffix)),
                                      "csv")
    if args.all_revisions and args.which != "aggregates":
        raise UsageError(f"--all-revisions: only aggregates have revisions, not {args.which}")
    request = ExportRequest(STREAM_KINDS[args.which], args.out, row_filter(args, args.sensor), file_format,
                            args.all_revisions)
    db = connect(config.target(), announce=args.out != "-")
    written = export(db, partition_groups(db, config), config.field_map, request)
    where = "stdout" if args.out == "-" else args.out
    print(f"export: wrote {written} {args.which} rows to {where}", file=sys.stderr)
    return 0


def counts_by_sensor(db, groups: list[GroupKeys]) -> dict[str, dict[str, int]]:
    """What the group counted per sensor, from its checkpoint: readings missing by seq (trimmed
    ones included: the stream itself no longer holds what MAXLEN trimmed), late readings, those
    past the allowed lateness, and window revisions."""
    return {sensor: {"missing": view.missing_seq, "late": view.late, "too_late": view.too_late,
                     "revisions": view.revisions}
            for sensor, view in rolling_views(db, [(keys, None) for keys in groups]).items()}


def run_report(args, config: PipelineConfig) -> int:
    selection = row_filter(args, args.sensor)
    if args.csv:
        report = build_report(summarise(csv_frames(args.csv, selection)), None, None)
    else:
        db = connect(config.target(), announce=not args.json)
        groups = partition_groups(db, config)
        sensors = RowFilter(selection.sensor_patterns)  # outputs of the sensors shown, at any time
        summaries = summarise(redis_frames(db, groups, config, "readings", selection))
        dead = Counter(sensor for frame in redis_frames(db, groups, config, "dead-letter", sensors)
                       for sensor in frame["sensor"])
        alerts = Counter(sensor for frame in redis_frames(db, groups, config, "alerts", sensors)
                         for sensor in frame.loc[frame["state"] == "firing", "sensor"])
        report = build_report(summaries, dead, alerts, counts_by_sensor(db, groups))
    print(report.as_json() if args.json else report.as_table())
    return 0


def run_plot(args, config: PipelineConfig) -> int:
    checked_out(str(args.out), PLOT_SUFFIXES)
    selection = row_filter(args, [args.sensor])
    windows = alerts = pd.DataFrame()
    if args.csv:
        readings = pd.concat(list(csv_frames(args.csv, selection)) or [pd.DataFrame()])
    else:
        db = connect(config.target())
        groups = partition_groups(db, config)
        readings = load_frame(db, STREAM_KINDS["readings"], groups, config.field_map, selection)
        windows, alerts = (load_frame(db, STREAM_KINDS[which], groups, config.field_map,
                                      RowFilter(selection.sensor_patterns)) for which in ("aggregates", "alerts"))
    figure = sensor_figure(args.sensor, readings, windows, alert_episodes(alerts))
    try:
        figure.savefig(args.out, dpi=110)
    except OSError as error:
        raise UsageError(f"--out {args.out}: cannot write ({error.strerror})") from None
    print(f"plot: wrote {args.out}", file=sys.stderr)
    return 0


def run_serve(args, config: PipelineConfig) -> int:
    from analytics.web.serve import serve  # the web stack loads only for this command

    return serve(config, host=args.host, port=args.port, rules=load_rules(args.rules),
                 stale_ms=parse_duration_ms(args.stale, field="--stale"))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = PipelineConfig.from_args(args)
    tune_for_batches()  # merged pages outlive young collections: default thresholds cost a third of an export
    commands = {"export": run_export, "report": run_report, "plot": run_plot, "serve": run_serve}
    return commands[args.command](args, config)


def entry() -> None:
    """The installed console script."""
    run_main(main)


if __name__ == "__main__":
    entry()
