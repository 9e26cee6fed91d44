"""Export 1,000,000 readings of a 16-partition pipeline: rows/s and peak RSS against a naive
whole-stream pandas export (every partition read at once, sorted by stream id), same run.

Each export runs in a child process so that its peak RSS is its own.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import walrus
from bench_common import Figure, backfill, bench_redis, parser, print_figures

from telemetry.keys import Keys
from telemetry.partitions import delete_pipeline, open_layout
from telemetry.schema import FieldMap
from telemetry.timeutil import stream_id_key

ROOT = Path(__file__).resolve().parent.parent
KEYS = Keys("bench-export")
PARTITIONS = 16


def child(mode: str, url: str, out: str) -> None:
    """Runs in a fresh process; prints rows, seconds and its own peak RSS."""
    db = walrus.Database.from_url(url, decode_responses=True)
    started = time.perf_counter()
    layout = open_layout(db, KEYS, create=False)
    if mode == "ours":
        from analytics.export import ExportRequest, export
        from analytics.streams import STREAM_KINDS
        from telemetry.gc_tuning import tune_for_batches

        tune_for_batches()  # as python -m analytics does
        rows = export(db, layout.groups("aggregators"), FieldMap(), ExportRequest(STREAM_KINDS["readings"], out))
    else:
        import pandas as pd

        entries = [entry for partition in layout.partitions for entry in db.xrange(partition.readings)]
        entries.sort(key=lambda entry: stream_id_key(entry[0]))  # every stream at once
        frame = pd.DataFrame([{"stream_id": entry_id, **fields} for entry_id, fields in entries])
        frame.to_csv(out, index=False)
        rows = len(frame)
    seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"rows": rows, "seconds": seconds, "peak_mib": peak_kib / 1024}))


def run_child(mode: str, url: str, folder: str) -> dict:
    result = subprocess.run([sys.executable, __file__, "--child", mode, "--redis-url", url, "--out",
                             os.path.join(folder, f"{mode}.csv")], capture_output=True, text=True, check=True,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    arguments = parser(__doc__)
    arguments.add_argument("--readings", type=int, default=1_000_000)
    arguments.add_argument("--child", choices=("ours", "naive"), help=argparse_suppress())
    arguments.add_argument("--out", help=argparse_suppress())
    args = arguments.parse_args()
    if args.child:
        child(args.child, args.redis_url, args.out)
        return
    with bench_redis(args.redis_url) as url, tempfile.TemporaryDirectory(prefix="bench-export-") as folder:
        db = walrus.Database.from_url(url, decode_responses=True)
        layout = open_layout(db, KEYS, PARTITIONS)
        backfill(db, layout, sensors=100, per_sensor=args.readings // 100)
        ours = run_child("ours", url, folder)
        naive = run_child("naive", url, folder)
        delete_pipeline(db, layout)
    assert ours["rows"] == naive["rows"] == args.readings
    print_figures(f"export of {args.readings:,} readings", [
        Figure("export rows/s", ours["rows"] / ours["seconds"], "rows/s", "naive pandas export",
               naive["rows"] / naive["seconds"], ">= 150,000 rows/s"),
        Figure("export peak RSS", ours["peak_mib"], "MiB", "naive pandas export", naive["peak_mib"],
               "<= 1/5 of naive (ratio <= 0.2)"),
    ], args.json)


def argparse_suppress() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
