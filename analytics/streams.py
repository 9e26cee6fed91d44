"""The exportable streams: which key each lives under, its CSV columns, and the event time to filter on.

Rows are flat dicts in column order. Readings are decoded through the schema, so the export of a
stream written by another producer (configured --fields) comes out in the canonical columns.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import redis

from telemetry.keys import Keys
from telemetry.schema import FieldMap, Reading, SchemaError
from telemetry.timeutil import iso_utc, stream_id_ms

PAGE_SIZE = 10_000

READING_COLUMNS = ("stream_id", "sensor", "time", "ts_ms", "temperature_c", "humidity_pct", "seq")
AGGREGATE_COLUMNS = ("stream_id", "sensor", "window_start_time", "window_start", "window_end", "count",
                     "temperature_c_mean", "temperature_c_min", "temperature_c_max", "temperature_c_std",
                     "humidity_pct_mean", "humidity_pct_min", "humidity_pct_max", "humidity_pct_std",
                     "first_ts", "last_ts", "closed_by")
ALERT_COLUMNS = ("stream_id", "time", "ts", "alert_id", "rule", "kind", "sensor", "severity", "state", "value",
                 "threshold")
DEAD_LETTER_COLUMNS = ("stream_id", "time", "dead_lettered_ms", "entry_id", "sensor", "reason", "consumer", "fields")


@dataclass(frozen=True, slots=True)
class StreamKind:
    name: str
    columns: tuple[str, ...]
    key: Callable[[Keys], str]
    # (entry id, fields) -> row, or None for an entry this export cannot show (a malformed reading)
    to_row: Callable[[str, dict[str, str], FieldMap], dict | None]
    time_column: str  # epoch-ms column that --since/--until filter on


def _reading_row(entry_id: str, fields: dict[str, str], field_map: FieldMap) -> dict | None:
    try:
        reading = Reading.decode(fields, entry_id, field_map)
    except SchemaError:
        return None  # the aggregator dead-letters these; the export shows readings
    return {"stream_id": entry_id, "sensor": reading.sensor, "time": iso_utc(reading.ts_ms), "ts_ms": reading.ts_ms,
            "temperature_c": reading.temperature_c, "humidity_pct": reading.humidity_pct,
            "seq": "" if reading.seq is None else reading.seq}


def _aggregate_row(entry_id: str, fields: dict[str, str], _: FieldMap) -> dict:
    row = {column: fields.get(column, "") for column in AGGREGATE_COLUMNS}
    row["stream_id"] = entry_id
    row["window_start_time"] = iso_utc(int(fields.get("window_start") or 0))
    return row


def _alert_row(entry_id: str, fields: dict[str, str], _: FieldMap) -> dict:
    row = {column: fields.get(column, "") for column in ALERT_COLUMNS}
    row["stream_id"] = entry_id
    row["time"] = iso_utc(int(fields.get("ts") or 0))
    return row


def _dead_letter_row(entry_id: str, fields: dict[str, str], _: FieldMap) -> dict:
    row = {column: fields.get(column, "") for column in DEAD_LETTER_COLUMNS}
    row["stream_id"] = entry_id
    row["time"] = iso_utc(int(fields.get("dead_lettered_ms") or stream_id_ms(entry_id)))
    try:
        original = json.loads(fields.get("fields", "{}"))
        row["sensor"] = original.get("sensor", original.get("sensor_id", "")) if isinstance(original, dict) else ""
    except ValueError:
        row["sensor"] = ""
    return row


STREAM_KINDS = {
    "readings": StreamKind("readings", READING_COLUMNS, lambda keys: keys.readings, _reading_row, "ts_ms"),
    "aggregates": StreamKind("aggregates", AGGREGATE_COLUMNS, lambda keys: keys.aggregates, _aggregate_row,
                             "window_start"),
    "alerts": StreamKind("alerts", ALERT_COLUMNS, lambda keys: keys.alerts, _alert_row, "ts"),
    "dead-letter": StreamKind("dead-letter", DEAD_LETTER_COLUMNS, lambda keys: keys.dead_letter, _dead_letter_row,
                              "dead_lettered_ms"),
}


@dataclass(frozen=True, slots=True)
class RowFilter:
    sensor_patterns: tuple[str, ...] = ()
    since_ms: int | None = None
    until_ms: int | None = None

    def compiled(self, time_column: str) -> Callable[[dict], bool]:
        pattern = re.compile("|".join(fnmatch.translate(p) for p in self.sensor_patterns)) if self.sensor_patterns else None
        since, until = self.since_ms, self.until_ms

        def keep(row: dict) -> bool:
            if pattern is not None and not pattern.match(str(row.get("sensor", ""))):
                return False
            if since is not None or until is not None:
                moment = int(row.get(time_column) or 0)
                if since is not None and moment < since:
                    return False
                if until is not None and moment >= until:
                    return False
            return True

        return keep


def iter_entries(db: redis.Redis, key: str, page_size: int = PAGE_SIZE) -> Iterator[list[tuple[str, dict]]]:
    """Pages of XRANGE: memory stays at one page whatever the stream's length."""
    cursor = "-"
    while True:
        page = db.xrange(key, min=cursor, count=page_size)
        if not page:
            return
        yield page
        if len(page) < page_size:
            return
        cursor = f"({page[-1][0]}"


def iter_rows(db: redis.Redis, kind: StreamKind, keys: Keys, field_map: FieldMap, row_filter: RowFilter
              ) -> Iterator[list[dict]]:
    keep = row_filter.compiled(kind.time_column)
    for page in iter_entries(db, kind.key(keys)):
        rows = [row for row in (kind.to_row(entry_id, fields, field_map) for entry_id, fields in page)
                if row is not None and keep(row)]
        yield rows
