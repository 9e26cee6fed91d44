"""The exportable streams: which key each lives under in a partition, its columns, and the event
time to filter on.

A kind is read from every partition, each page by page, merged in stream-id order
(telemetry/merge.py). Each merged page becomes one DataFrame, converted and filtered
column-wise: per-row Python would cap an export near 50,000 rows/s. Readings are validated with the schema's rules, so an
export of a stream written by another producer (configured --fields) comes out in canonical
columns, and malformed entries, which the aggregator dead-letters, are left out.
"""

from __future__ import annotations

import fnmatch
import glob
import json
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import redis

from telemetry.connection import server_for
from telemetry.keys import GroupKeys
from telemetry.merge import Page, merged_pages
from telemetry.partitions import partition_of
from telemetry.records import COMMIT_FIELDS, WindowAggregate
from telemetry.schema import HUMIDITY_RANGE_PCT, SCHEMA_VERSION, SENSOR_NAME, TEMPERATURE_RANGE_C, FieldMap

PAGE_SIZE = 10_000
MIN_PARTITION_PAGE = 500  # XRANGE COUNT per partition: P of them are buffered while merging

READING_COLUMNS = ("stream_id", "sensor", "time", "ts_ms", "temperature_c", "humidity_pct", "seq")
# Outputs end with the commit that wrote them (partition, epoch, batch, emitted_ms).
AGGREGATE_COLUMNS = ("stream_id", "sensor", "window_start_time", "window_end_time", *WindowAggregate.__slots__[1:],
                     *COMMIT_FIELDS)
ALERT_COLUMNS = ("stream_id", "time", "ts", "alert_id", "rule", "kind", "sensor", "severity", "state", "value",
                 "threshold", "unit", *COMMIT_FIELDS)
DEAD_LETTER_COLUMNS = ("stream_id", "time", "entry_id", "sensor", "reason", "fields", *COMMIT_FIELDS)


def iso_utc_column(epoch_ms: pd.Series | np.ndarray) -> np.ndarray:
    """ISO-8601 UTC with milliseconds and Z, vectorised (the same text as timeutil.iso_utc).
    Formatted once per distinct time: a fleet shares each tick's timestamp."""
    distinct, positions = np.unique(np.asarray(epoch_ms, dtype="int64"), return_inverse=True)
    stamps = np.datetime_as_string(distinct.astype("datetime64[ms]"), unit="ms")
    return np.char.add(stamps.astype(str), "Z")[positions]


def as_dict(fields: dict | list) -> dict:
    """Pages come raw (flat [name, value, ...] lists) from `iter_entries`; dict them where needed."""
    return fields if isinstance(fields, dict) else dict(zip(fields[::2], fields[1::2]))


def _fields_frame(page: Page, columns: tuple[str, ...]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records([as_dict(fields) for _, fields in page])
    frame["stream_id"] = [entry_id for entry_id, _ in page]
    return frame.reindex(columns=[c for c in dict.fromkeys(("stream_id", *frame.columns, *columns))])


def _numeric(frame: pd.DataFrame, name: str | None) -> pd.Series:
    if not name or name not in frame:
        return pd.Series(np.nan, index=frame.index)
    column = frame[name]
    try:
        return pd.Series(column.to_numpy(dtype=object).astype(float), index=frame.index)
    except (TypeError, ValueError):  # some entry is malformed: the slow path marks it NaN
        return pd.to_numeric(column, errors="coerce")


def _present(frame: pd.DataFrame, name: str) -> pd.Series:
    """Where the entry has the field at all (pages of mixed entries hold NaN where one has not)."""
    if name not in frame:
        return pd.Series(False, index=frame.index)
    return frame[name].notna()


def uniform_columns(page: Page) -> dict[str, np.ndarray] | None:
    """When every entry has the same fields in the same order (one producer), slice the columns
    out of one matrix instead of building a dict per entry; None when the page is mixed."""
    first = page[0][1]
    width = len(first)
    values = [fields for _, fields in page]
    if width == 0 or width % 2 or any(len(fields) != width for fields in values):
        return None
    matrix = np.array(values, dtype=object)
    names = first[::2]
    if len(set(names)) != len(names) or any((matrix[:, 2 * i] != name).any() for i, name in enumerate(names)):
        return None
    columns = {name: matrix[:, 2 * i + 1] for i, name in enumerate(names)}
    columns["stream_id"] = np.array([entry_id for entry_id, _ in page], dtype=object)
    return columns


def _uniform_frame(page: Page) -> pd.DataFrame | None:
    columns = uniform_columns(page)
    return None if columns is None else pd.DataFrame(columns)


def readings_frame(page: Page, field_map: FieldMap) -> pd.DataFrame:
    raw = _uniform_frame(page)
    if raw is None:
        raw = _fields_frame(page, ())
    sensor = raw[field_map.sensor] if field_map.sensor in raw else pd.Series("", index=raw.index)
    if field_map.ts:
        ts = _numeric(raw, field_map.ts)
    else:
        ts = pd.to_numeric(raw["stream_id"].str.split("-").str[0])
    temperature = _numeric(raw, field_map.temperature_c)
    humidity = _numeric(raw, field_map.humidity_pct)
    # A metric the reading does not carry is an absent field (NaN here); one present must be valid.
    has_temperature, has_humidity = _present(raw, field_map.temperature_c), _present(raw, field_map.humidity_pct)
    valid = (sensor.fillna("").str.fullmatch(SENSOR_NAME.pattern) & ts.notna() & (ts >= 0)
             & (has_temperature | has_humidity)
             & (~has_temperature | temperature.between(*TEMPERATURE_RANGE_C))
             & (~has_humidity | humidity.between(*HUMIDITY_RANGE_PCT)))
    frame = pd.DataFrame({"stream_id": raw["stream_id"], "sensor": sensor, "ts_ms": ts,
                          "temperature_c": temperature, "humidity_pct": humidity,
                          "seq": _numeric(raw, field_map.seq)})[valid]
    frame["ts_ms"] = frame["ts_ms"].astype("int64")
    frame["seq"] = frame["seq"].astype("Int64")
    frame["sensor"] = frame["sensor"].astype(str)
    frame["time"] = iso_utc_column(frame["ts_ms"]) if len(frame) else []
    return frame[list(READING_COLUMNS)]


def aggregates_frame(page: Page, _: FieldMap) -> pd.DataFrame:
    """A metric no reading of the window carried has no statistics (NaN: an empty cell, null)."""
    frame = _fields_frame(page, AGGREGATE_COLUMNS)
    frame["revision"] = pd.to_numeric(frame["revision"]).fillna(0).astype("int64")  # absent before revisions
    for metric in ("temperature_c", "humidity_pct"):  # absent before per-metric counts: every reading had both
        frame[f"{metric}_count"] = frame[f"{metric}_count"].fillna(frame["count"])
    for edge in ("start", "end"):
        frame[f"window_{edge}_time"] = iso_utc_column(pd.to_numeric(frame[f"window_{edge}"]).fillna(0))
    return frame[list(AGGREGATE_COLUMNS)]


def alerts_frame(page: Page, _: FieldMap) -> pd.DataFrame:
    frame = _fields_frame(page, ALERT_COLUMNS)
    frame["time"] = iso_utc_column(pd.to_numeric(frame["ts"]).fillna(0))
    return frame[list(ALERT_COLUMNS)]


def _original_sensor(fields_json: object) -> str:
    try:
        original = json.loads(str(fields_json))
    except ValueError:
        return ""
    return str(original.get("sensor", original.get("sensor_id", ""))) if isinstance(original, dict) else ""


def dead_letter_frame(page: Page, _: FieldMap) -> pd.DataFrame:
    frame = _fields_frame(page, DEAD_LETTER_COLUMNS)
    frame["time"] = iso_utc_column(pd.to_numeric(frame["emitted_ms"]).fillna(0))
    frame["sensor"] = [_original_sensor(value) for value in frame["fields"]]
    return frame[list(DEAD_LETTER_COLUMNS)]


@dataclass(frozen=True, slots=True)
class StreamKind:
    name: str
    columns: tuple[str, ...]
    key: Callable[[GroupKeys], str]  # the kind's stream in one partition
    to_frame: Callable[[Page, FieldMap], pd.DataFrame]
    time_column: str  # epoch-ms column that --since/--until filter on


STREAM_KINDS = {
    "readings": StreamKind("readings", READING_COLUMNS, lambda keys: keys.readings, readings_frame, "ts_ms"),
    "aggregates": StreamKind("aggregates", AGGREGATE_COLUMNS, lambda keys: keys.aggregates, aggregates_frame,
                             "window_start"),
    "alerts": StreamKind("alerts", ALERT_COLUMNS, lambda keys: keys.alerts, alerts_frame, "ts"),
    "dead-letter": StreamKind("dead-letter", DEAD_LETTER_COLUMNS, lambda keys: keys.dead_letter,
                              dead_letter_frame, "emitted_ms"),
}


@dataclass(frozen=True, slots=True)
class RowFilter:
    sensor_patterns: tuple[str, ...] = ()
    since_ms: int | None = None
    until_ms: int | None = None
    # aggregates: (sensor, window_start) -> its latest revision, where above 0; rows of earlier
    # revisions are left out (None: every revision is kept)
    latest_revisions: dict[tuple[str, int], int] | None = None

    def sensor_mask(self, sensors: np.ndarray) -> np.ndarray:
        """Glob matching once per distinct name, not once per row."""
        if not self.sensor_patterns:
            return np.ones(len(sensors), dtype=bool)
        verdicts = {name: any(fnmatch.fnmatchcase(str(name), p) for p in self.sensor_patterns)
                    for name in set(sensors.tolist())}
        return np.array([verdicts[name] for name in sensors.tolist()], dtype=bool)

    def time_mask(self, epoch_ms: np.ndarray) -> np.ndarray:
        keep = np.ones(len(epoch_ms), dtype=bool)
        if self.since_ms is not None:
            keep &= epoch_ms >= self.since_ms
        if self.until_ms is not None:
            keep &= epoch_ms < self.until_ms
        return keep

    def partitions(self, count: int) -> list[int]:
        """The partitions that can hold the rows kept: a sensor's readings and outputs all live in its
        partition, so a filter of plain names (no glob) reads only theirs."""
        if not self.sensor_patterns or any(glob.has_magic(p) for p in self.sensor_patterns):
            return list(range(count))
        return sorted({partition_of(name, count) for name in self.sensor_patterns})

    def apply(self, frame: pd.DataFrame, time_column: str) -> pd.DataFrame:
        if frame.empty:
            return frame
        keep = self.sensor_mask(frame["sensor"].astype(str).to_numpy())
        if self.since_ms is not None or self.until_ms is not None:
            moment = pd.to_numeric(frame[time_column], errors="coerce").to_numpy()
            keep &= self.time_mask(moment)
        if self.latest_revisions is not None:
            keep &= self.revision_mask(frame)
        return frame[keep]

    def revision_mask(self, frame: pd.DataFrame) -> np.ndarray:
        latest = self.latest_revisions or {}
        wanted = [latest.get((sensor, start), 0) for sensor, start in
                  zip(frame["sensor"].astype(str).tolist(), pd.to_numeric(frame["window_start"]).tolist())]
        return frame["revision"].to_numpy() == np.array(wanted, dtype="int64")


def raw_xrange(db: redis.Redis, key: str, start: str, count: int) -> Page:
    """XRANGE without redis-py's reply callback, which builds a dict per entry."""
    pool = server_for(db, key).connection_pool
    connection = pool.get_connection()
    try:
        connection.send_command("XRANGE", key, start, "+", "COUNT", count)
        return connection.read_response()
    finally:
        pool.release(connection)


def iter_entries(db: redis.Redis, key: str, page_size: int = PAGE_SIZE, start: str = "-") -> Iterator[Page]:
    """Pages of XRANGE from `start` (an id, inclusive), each entry as (id, [name, value, ...]):
    memory stays at one page whatever the stream's length, and skipping redis-py's per-entry dict
    building doubles the read rate."""
    cursor = start
    while True:
        page = raw_xrange(db, key, cursor, page_size)
        if not page:
            return
        yield page
        if len(page) < page_size:
            return
        cursor = f"({page[-1][0]}"


def prefetched(pages: Iterator[Page], depth: int = 2) -> Iterator[Page]:
    """Read the next pages in a thread while this one is converted: Redis serves XRANGE on the
    other core in the meantime. At most `depth` pages wait, so memory stays bounded."""
    outbox: queue.Queue = queue.Queue(maxsize=depth)
    finished = object()

    def read() -> None:
        try:
            for page in pages:
                outbox.put(page)
            outbox.put(finished)
        except Exception as error:  # noqa: BLE001 - handed to the consuming thread, which re-raises it
            outbox.put(error)

    threading.Thread(target=read, name="xrange-prefetch", daemon=True).start()
    while True:
        item = outbox.get()
        if item is finished:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def stream_keys(kind: StreamKind, groups: Sequence[GroupKeys], row_filter: RowFilter) -> list[str]:
    """The kind's stream in each partition (`groups`: the layout's, for one consumer group) that
    can hold rows the filter keeps."""
    return [kind.key(groups[index]) for index in row_filter.partitions(len(groups))]


def merged_entries(db: redis.Redis, keys: list[str]) -> Iterator[Page]:
    """Pages of all `keys` merged in id order, read ahead in a thread. Each partition's XRANGE
    page shrinks as partitions grow, so what waits in memory stays near one export page."""
    per_partition = max(MIN_PARTITION_PAGE, PAGE_SIZE // max(1, len(keys)))
    return prefetched(merged_pages([iter_entries(db, key, per_partition) for key in keys], PAGE_SIZE))


def latest_revision_map(db: redis.Redis, keys: list[str]) -> dict[tuple[str, int], int]:
    """The latest revision of every window revised at least once: a first pass over the aggregate
    streams, whose memory grows with the windows revised, not with the stream."""
    latest: dict[tuple[str, int], int] = {}
    for page in merged_entries(db, keys):
        frame = aggregates_frame(page, FieldMap())
        revised = frame[frame["revision"] > 0]
        for sensor, start, revision in zip(revised["sensor"].astype(str).tolist(),
                                           pd.to_numeric(revised["window_start"]).tolist(), revised["revision"].tolist()):
            latest[(sensor, start)] = max(revision, latest.get((sensor, start), 0))
    return latest


def latest_only(db: redis.Redis, kind: StreamKind, groups: Sequence[GroupKeys], row_filter: RowFilter) -> RowFilter:
    """The filter that keeps only each window's latest revision, for a kind that has revisions."""
    if kind.name != "aggregates":
        return row_filter
    return replace(row_filter, latest_revisions=latest_revision_map(db, stream_keys(kind, groups, row_filter)))


def iter_frames(db: redis.Redis, kind: StreamKind, groups: Sequence[GroupKeys], field_map: FieldMap,
                row_filter: RowFilter) -> Iterator[tuple[int, pd.DataFrame]]:
    """(entries read, rows kept) per merged page."""
    for page in merged_entries(db, stream_keys(kind, groups, row_filter)):
        yield len(page), row_filter.apply(kind.to_frame(page, field_map), kind.time_column)


def readings_csv_text(page: Page, field_map: FieldMap, row_filter: RowFilter) -> tuple[str, int] | None:
    """CSV rows for a page of readings written by one producer, or None to take the general path.

    Values are the text stored in Redis, already exact; validity follows the schema's rules
    (name, ranges, finite numbers, non-negative integers), checked with numpy over whole columns.
    """
    columns = uniform_columns(page)
    parts = (field_map.sensor, field_map.ts, field_map.temperature_c, field_map.humidity_pct)
    if columns is None or not field_map.ts or any(part not in columns for part in parts):
        return None
    try:
        ts = columns[field_map.ts].astype(np.int64)
        temperature = columns[field_map.temperature_c].astype(np.float64)
        humidity = columns[field_map.humidity_pct].astype(np.float64)
        seq_text = columns.get(field_map.seq) if field_map.seq else None
        seq = seq_text.astype(np.int64) if seq_text is not None else np.zeros(len(ts), dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        return None
    sensors = columns[field_map.sensor]
    names_ok = {name: bool(SENSOR_NAME.fullmatch(str(name))) for name in set(sensors.tolist())}
    keep = np.array([names_ok[name] for name in sensors.tolist()], dtype=bool)
    keep &= (ts >= 0) & (seq >= 0)
    keep &= (temperature >= TEMPERATURE_RANGE_C[0]) & (temperature <= TEMPERATURE_RANGE_C[1])
    keep &= (humidity >= HUMIDITY_RANGE_PCT[0]) & (humidity <= HUMIDITY_RANGE_PCT[1])
    if field_map.version and field_map.version in columns:
        keep &= columns[field_map.version] == str(SCHEMA_VERSION)
    keep &= row_filter.sensor_mask(sensors) & row_filter.time_mask(ts)
    if seq_text is None:
        seq_text = np.full(len(ts), "", dtype=object)
    times = iso_utc_column(ts[keep]).tolist()
    rows = zip(columns["stream_id"][keep].tolist(), sensors[keep].tolist(), times,
               columns[field_map.ts][keep].tolist(), columns[field_map.temperature_c][keep].tolist(),
               columns[field_map.humidity_pct][keep].tolist(), seq_text[keep].tolist())
    return "".join(f"{a},{b},{c},{d},{e},{f},{g}\n" for a, b, c, d, e, f, g in rows), len(times)


def load_frame(db: redis.Redis, kind: StreamKind, groups: Sequence[GroupKeys], field_map: FieldMap,
               row_filter: RowFilter) -> pd.DataFrame:
    """A whole (filtered) kind in memory, for plots of one sensor (the latest revision of each
    window); empty with the kind's columns."""
    row_filter = latest_only(db, kind, groups, row_filter)
    frames = [frame for _, frame in iter_frames(db, kind, groups, field_map, row_filter)]
    return pd.concat(frames) if frames else pd.DataFrame(columns=list(kind.columns))
