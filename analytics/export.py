"""Streams one kind of a pipeline's streams (all partitions, merged in stream-id order) to CSV or
JSON Lines (either optionally gzipped) or Parquet in constant memory.

The output is written to a temporary file beside the target and renamed over it only when
complete, so a crash or Ctrl-C never leaves a half-written file under the target's name.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO

import pandas as pd
import redis

from analytics.streams import RowFilter, StreamKind, latest_only, merged_entries, readings_csv_text, stream_keys
from telemetry.errors import UsageError
from telemetry.keys import GroupKeys
from telemetry.logstream import LogStream
from telemetry.progress import ProgressLine
from telemetry.schema import FieldMap


@dataclass(frozen=True, slots=True)
class ExportRequest:
    kind: StreamKind
    out: str  # a path, or "-" for stdout
    row_filter: RowFilter = field(default_factory=RowFilter)
    file_format: str = "csv"  # csv, jsonl (one JSON object per line) or parquet
    all_revisions: bool = False  # aggregates: every revision of a window, not only its latest


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _writable_temp_beside(target: Path) -> tuple[int, str]:
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise UsageError(f"--out {target}: directory {directory} does not exist")
    try:
        return tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=directory)
    except OSError as error:
        raise UsageError(f"--out {target}: cannot write there ({error.strerror})") from None


def _metric_text(value: float) -> str:
    return "" if math.isnan(value) else repr(value)


def readings_csv_lines(frame: pd.DataFrame) -> str:
    """CSV text for a frame of validated readings (the general path, for mixed pages): no field of
    a valid reading needs quoting, and repr keeps every float exact. A metric the reading does not
    carry is an empty cell."""
    seq = ["" if value is None else str(value) for value in frame["seq"].astype(object).where(frame["seq"].notna(), None)]
    columns = (frame["stream_id"].tolist(), frame["sensor"].tolist(), frame["time"].tolist(),
               map(str, frame["ts_ms"].tolist()), map(_metric_text, frame["temperature_c"].tolist()),
               map(_metric_text, frame["humidity_pct"].tolist()), seq)
    return "".join(line + "\n" for line in map(",".join, zip(*columns)))


def page_csv(kind: StreamKind, page, field_map: FieldMap, row_filter: RowFilter) -> tuple[str, int]:
    """One XRANGE page as CSV text and its row count."""
    if kind.name == "readings":
        fast = readings_csv_text(page, field_map, row_filter)
        if fast is not None:
            return fast
        frame = row_filter.apply(kind.to_frame(page, field_map), kind.time_column)
        return readings_csv_lines(frame), len(frame)
    frame = row_filter.apply(kind.to_frame(page, field_map), kind.time_column)
    return frame.to_csv(header=False, index=False, lineterminator="\n"), len(frame)


def _write_csv(stream: IO[str], request: ExportRequest, pages: Iterator, field_map: FieldMap,
               progress: ProgressLine) -> int:
    stream.write(",".join(request.kind.columns) + "\n")
    written = 0
    for page in pages:
        text, rows = page_csv(request.kind, page, field_map, request.row_filter)
        stream.write(text)
        written += rows
        progress.add(len(page))
    return written


def _write_jsonl(stream: IO[str], request: ExportRequest, pages: Iterator, field_map: FieldMap,
                 progress: ProgressLine) -> int:
    written = 0
    for page in pages:
        progress.add(len(page))
        frame = request.row_filter.apply(request.kind.to_frame(page, field_map), request.kind.time_column)
        if frame.empty:
            continue
        text = frame.to_json(orient="records", lines=True, force_ascii=False)
        stream.write(text if text.endswith("\n") else text + "\n")
        written += len(frame)
    return written


def _write_parquet(path: str, request: ExportRequest, pages: Iterator, field_map: FieldMap,
                   progress: ProgressLine) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    kind, columns = request.kind, request.kind.columns
    writer, schema, written = None, None, 0
    try:
        for page in pages:
            progress.add(len(page))
            frame = request.row_filter.apply(kind.to_frame(page, field_map), kind.time_column)
            if frame.empty:
                continue
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if writer is None:
                schema = table.schema
                writer = pq.ParquetWriter(path, schema)
            writer.write_table(table.cast(schema))
            written += len(frame)
        if writer is None:
            pq.write_table(pa.table({column: pa.array([], pa.string()) for column in columns}), path)
    finally:
        if writer is not None:
            writer.close()
    return written


def export(db: redis.Redis, groups: Sequence[GroupKeys], field_map: FieldMap, request: ExportRequest) -> int:
    """Write the export and return the number of rows written. `groups`: the layout's partitions
    as one consumer group sees them (whose outputs these are)."""
    if not request.all_revisions:
        request = replace(request, row_filter=latest_only(db, request.kind, groups, request.row_filter))
    keys = stream_keys(request.kind, groups, request.row_filter)
    pages = merged_entries(db, keys)
    # The live line on a terminal only: a one-shot command prints no periodic lines elsewhere.
    progress = ProgressLine("export", "entries", sum(db.xlen(key) for key in keys), LogStream(sys.stderr, False),
                            every_s=math.inf)
    if request.out == "-":
        if request.file_format == "parquet":
            raise UsageError("--out -: Parquet cannot go to stdout (CSV or JSON Lines can)")
        write_text = _write_jsonl if request.file_format == "jsonl" else _write_csv
        try:
            return write_text(sys.stdout, request, pages, field_map, progress)
        finally:
            progress.close()
    target = Path(request.out)
    descriptor, temporary = _writable_temp_beside(target)
    try:
        if request.file_format == "parquet":
            os.close(descriptor)
            written = _write_parquet(temporary, request, pages, field_map, progress)
        else:
            raw = os.fdopen(descriptor, "wb")
            binary = gzip.GzipFile(fileobj=raw, mode="wb") if target.name.endswith(".gz") else raw
            write_text = _write_jsonl if request.file_format == "jsonl" else _write_csv
            with raw, binary, io.TextIOWrapper(binary, encoding="utf-8", newline="") as text:
                written = write_text(text, request, pages, field_map, progress)
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it 0600; an export is the user's file
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    finally:
        progress.close()
    return written
