"""Turns raw stream entries into one commit: valid readings as columns, dead letters, lost entries.

Nothing here talks to Redis, so the sorting of good from bad input is unit-tested directly.
Entries laid out as the project's producers write them (fields in `entry_layout` order) are
decoded a column at a time with numpy, which is what lets one worker keep up with a fleet;
anything else, and any row the columns flag, goes through `Reading.decode`, which names the bad
field for the dead-letter reason. A reading with one metric (the other field absent) takes the
columns too: its row gets a placeholder for the absent metric, replaced by NaN once the columns
are parsed, so a metric's column is NaN exactly where readings lack it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from telemetry.schema import (
    HUMIDITY_RANGE_PCT,
    MAX_INTEGER,
    SCHEMA_VERSION,
    SENSOR_NAME,
    TEMPERATURE_RANGE_C,
    FieldMap,
    Reading,
    SchemaError,
    entry_layout,
    sensor_and_seq,
)

# (id, flat field list as XREADGROUP returns it, as str or, off the worker's raw reads, as bytes;
# None: trimmed away)
Entry = tuple[str, list[str] | list[bytes] | None]
NO_SEQ = -1


def texts(values: list[bytes]) -> list[str]:
    """Many short byte strings as str in two C calls, not one decode each: a batch has thousands."""
    joined = b"\n".join(values).decode("utf-8", "replace").split("\n")
    if len(joined) == len(values):
        return joined
    return [value.decode("utf-8", "replace") for value in values]  # some value holds a newline


def flat_fields(fields: list | dict | None) -> list | None:
    """An entry's fields as a flat list. A cluster client parses them into a dict on its nodes
    (its response callbacks run after the node's), a single server's raw client does not."""
    if isinstance(fields, dict):
        return [part for pair in fields.items() for part in pair]
    return fields


def _is_raw(fields: list[str] | list[bytes]) -> bool:
    return isinstance(fields[0], bytes)


def _as_text(fields: list[str] | list[bytes]) -> list[str]:
    return texts(fields) if fields and _is_raw(fields) else fields


@dataclass(frozen=True, slots=True)
class DeadLetter:
    entry_id: str
    reason: str
    fields: dict[str, str]
    sensor_seq: tuple[str, int] | None = None  # where it sits in its sensor's sequence, when readable


@dataclass(slots=True)
class ReadingColumns:
    """A batch's valid readings, one array per part, in stream order; `seq` is NO_SEQ where absent,
    a metric NaN where the reading does not carry it."""

    ids: list[str] = field(default_factory=list)
    sensors: list[str] = field(default_factory=list)
    ts_ms: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    temperature_c: np.ndarray = field(default_factory=lambda: np.empty(0))
    humidity_pct: np.ndarray = field(default_factory=lambda: np.empty(0))
    seq: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))

    def __len__(self) -> int:
        return len(self.ids)

    def metric_lists(self) -> tuple[list[float | None], list[float | None]]:
        """Temperatures and humidities as Python lists, None where a reading lacks the metric."""
        return _present(self.temperature_c), _present(self.humidity_pct)

    def take(self, rows: np.ndarray) -> ReadingColumns:
        index = rows.tolist()
        return ReadingColumns([self.ids[i] for i in index], [self.sensors[i] for i in index], self.ts_ms[rows],
                              self.temperature_c[rows], self.humidity_pct[rows], self.seq[rows])


def _present(column: np.ndarray) -> list[float | None]:
    absent = np.isnan(column)
    if not absent.any():
        return column.tolist()
    values = column.astype(object)
    values[absent] = None
    return values.tolist()


@dataclass(slots=True)
class CommitBatch:
    """One batch of entries sorted for the partition processor; entry ids keep stream order."""

    entry_ids: list[str] = field(default_factory=list)
    readings: ReadingColumns = field(default_factory=ReadingColumns)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    lost_ids: list[str] = field(default_factory=list)  # trimmed away while pending

    def __len__(self) -> int:
        return len(self.entry_ids)


def as_dict(fields: list[str]) -> dict[str, str]:
    return dict(zip(fields[::2], fields[1::2]))


def _layout_positions(field_map: FieldMap) -> dict[str, int]:
    """Where each part's value sits in a flat field list written in `entry_layout` order."""
    parts = {"sensor": field_map.sensor, "ts": field_map.ts, "temperature_c": field_map.temperature_c,
             "humidity_pct": field_map.humidity_pct, "seq": field_map.seq, "version": field_map.version}
    layout = entry_layout(field_map)
    return {part: 2 * layout.index(name) + 1 for part, name in parts.items() if name}


# Stands for an absent metric in a row, so that the column parses; the parsed value is then
# replaced by NaN. Plain and inside both ranges, so it flags nothing.
PLACEHOLDER = "0"


def _layout_row(reading: Reading, field_map: FieldMap) -> list[str]:
    """A decoded reading as a flat field list in `entry_layout` order, so every row reads the same
    way; an absent metric holds the placeholder (the caller notes it as absent)."""
    values = {field_map.sensor: reading.sensor, field_map.ts: str(reading.ts_ms),
              field_map.temperature_c: PLACEHOLDER if reading.temperature_c is None else repr(reading.temperature_c),
              field_map.humidity_pct: PLACEHOLDER if reading.humidity_pct is None else repr(reading.humidity_pct),
              field_map.seq: str(NO_SEQ if reading.seq is None else reading.seq),
              field_map.version: str(SCHEMA_VERSION)}
    row: list[str] = []
    for name in entry_layout(field_map):
        row += [name, values[name]]
    return row


def _columns(ids: list[str], rows: list[list[str]] | list[list[bytes]], trusted: np.ndarray,
             at: dict[str, int]) -> tuple[ReadingColumns, np.ndarray]:
    """Typed columns and a mask of untrusted rows that fail a check (decoded one by one for the reason).

    Rows are all str or all bytes; numbers parse from either, and bytes become text only where
    text is kept (sensor names). Raises ValueError when a value is not a number at all."""
    n = len(rows)
    raw = _is_raw(rows[0])
    sensor_values = [row[at["sensor"]] for row in rows]
    names = {value: value.decode("utf-8", "replace") if raw else value for value in set(sensor_values)}
    sensors = [names[value] for value in sensor_values]
    ts_text = ([row[at["ts"]] for row in rows] if "ts" in at
               else [entry_id[:entry_id.index("-")].encode() if raw else entry_id[:entry_id.index("-")]
                     for entry_id in ids])
    t_text = [row[at["temperature_c"]] for row in rows]
    h_text = [row[at["humidity_pct"]] for row in rows]
    seq_text = [row[at["seq"]] for row in rows] if "seq" in at else None
    numbers = (ts_text, t_text, h_text) if seq_text is None else (ts_text, t_text, h_text, seq_text)
    unusual = _unusual_rows(numbers, raw)
    ts = np.fromiter(map(int, ts_text), np.int64, n)
    temperature = np.fromiter(map(float, t_text), np.float64, n)
    humidity = np.fromiter(map(float, h_text), np.float64, n)
    seq = np.full(n, NO_SEQ, np.int64) if seq_text is None else np.fromiter(map(int, seq_text), np.int64, n)
    with np.errstate(invalid="ignore"):  # NaN fails every comparison, which is what is wanted
        ok = ((temperature >= TEMPERATURE_RANGE_C[0]) & (temperature <= TEMPERATURE_RANGE_C[1])
              & (humidity >= HUMIDITY_RANGE_PCT[0]) & (humidity <= HUMIDITY_RANGE_PCT[1])
              & (ts >= 0) & (ts <= MAX_INTEGER))
    if "seq" in at:
        ok &= (seq >= 0) & (seq <= MAX_INTEGER)
    if unusual is not None:
        ok &= ~unusual
    bad_names = {name for name in set(sensors) if not SENSOR_NAME.fullmatch(name)}
    if bad_names:
        ok &= np.array([name not in bad_names for name in sensors])
    if "version" in at:
        versions = [row[at["version"]] for row in rows]
        current = str(SCHEMA_VERSION).encode() if raw else str(SCHEMA_VERSION)
        if set(versions) != {current}:
            ok &= np.array([version == current for version in versions])
    return ReadingColumns(ids, sensors, ts, temperature, humidity, seq), ~ok & ~trusted


_UNUSUAL = re.compile(r"[^0-9.eE+\-]")
_UNUSUAL_BYTES = re.compile(rb"[^0-9.eE+\-]")


def _unusual_rows(columns: tuple[list, ...], raw: bool) -> np.ndarray | None:
    """Rows with a number spelled other than plainly ('4_5.5', ' 45', non-ASCII digits): Python's
    int() and float() read those, other readers would not, so the careful path judges them.
    None when every value is plain, which one scan of the joined text tells."""
    pattern = _UNUSUAL_BYTES if raw else _UNUSUAL
    joiner = b"" if raw else ""
    if not any(pattern.search(joiner.join(column)) for column in columns):
        return None
    return np.array([any(pattern.search(column[row]) for column in columns) for row in range(len(columns[0]))])


@dataclass(slots=True)
class _Rows:
    """A batch's candidate readings as rows in layout order, and what a row's layout form hides:
    the entry's own fields where it was written otherwise (for dead-letter reasons), the readings
    decoded already, and which rows lack a metric."""

    ids: list[str] = field(default_factory=list)
    rows: list[list] = field(default_factory=list)
    originals: dict[int, list] = field(default_factory=dict)
    decoded: dict[int, Reading] = field(default_factory=dict)
    no_temperature: list[int] = field(default_factory=list)
    no_humidity: list[int] = field(default_factory=list)

    def add_one_metric(self, entry_id: str, fields: list, insert_at: int, part: list, humidity: bool) -> None:
        """An entry in layout order but for its absent metric: the placeholder goes in its place."""
        (self.no_humidity if humidity else self.no_temperature).append(len(self.rows))
        self.originals[len(self.rows)] = fields
        self.ids.append(entry_id)
        self.rows.append(fields[:insert_at] + part + fields[insert_at:])

    def add_decoded(self, entry_id: str, reading: Reading, fields: list, field_map: FieldMap, raw: bool) -> None:
        index = len(self.rows)
        if reading.temperature_c is None:
            self.no_temperature.append(index)
        if reading.humidity_pct is None:
            self.no_humidity.append(index)
        self.originals[index] = fields
        self.decoded[index] = reading
        self.ids.append(entry_id)
        row = _layout_row(reading, field_map)
        self.rows.append([value.encode() for value in row] if raw else row)

    def original(self, index: int) -> list:
        return self.originals.get(index, self.rows[index])


def _one_metric_layouts(layout: list, field_map: FieldMap, raw: bool) -> dict[tuple, tuple[int, list, bool]]:
    """Field names of an entry in layout order that lacks one metric -> where that metric's pair
    goes in its row, the pair with the placeholder, and whether it is the humidity."""
    found = {}
    for name, humidity in ((field_map.temperature_c, False), (field_map.humidity_pct, True)):
        key = name.encode() if raw else name
        at = layout.index(key)
        part = [key, PLACEHOLDER.encode() if raw else PLACEHOLDER]
        found[tuple(layout[:at] + layout[at + 1:])] = (2 * at, part, humidity)
    return found


def build_batch(entries: list[Entry], field_map: FieldMap, now_ms: int, max_skew_ms: int,
                delivery_counts: dict[str, int] | None = None, max_deliveries: int = 0) -> CommitBatch:
    """Sort entries into readings, dead letters (with a reason naming the field) and lost ones."""
    batch = CommitBatch(entry_ids=[entry_id for entry_id, _ in entries])
    layout = list(entry_layout(field_map))
    raw = next((_is_raw(fields) for _, fields in entries if fields), False)  # lost entries carry no fields
    if raw:
        layout = [name.encode() for name in layout]
    one_metric = _one_metric_layouts(layout, field_map, raw)
    at = _layout_positions(field_map)
    rows = _Rows()  # every candidate in layout order; entries written otherwise are decoded first
    for entry_id, fields in entries:
        if not fields:
            batch.lost_ids.append(entry_id)
        elif delivery_counts and max_deliveries and delivery_counts.get(entry_id, 1) > max_deliveries:
            entry = as_dict(_as_text(fields))
            batch.dead_letters.append(DeadLetter(entry_id, f"max-deliveries: delivered {delivery_counts[entry_id]} times",
                                                 entry, sensor_and_seq(entry, field_map)))
        elif fields[::2] == layout:
            rows.ids.append(entry_id)
            rows.rows.append(fields)
        elif (absent := one_metric.get(tuple(fields[::2]))) is not None:
            rows.add_one_metric(entry_id, fields, *absent)
        elif (reading := _decode_one(batch, entry_id, _as_text(fields), field_map)) is not None:
            rows.add_decoded(entry_id, reading, fields, field_map, raw)
    if not rows.rows:
        return batch
    trusted = np.zeros(len(rows.rows), bool)
    trusted[list(rows.decoded)] = True
    try:
        readings, suspect = _columns(rows.ids, rows.rows, trusted, at)
    except (ValueError, OverflowError):  # some value is not a number: vet each row, then convert
        vetted = _Rows()
        for index, entry_id in enumerate(rows.ids):
            fields = _as_text(rows.original(index))
            reading = rows.decoded.get(index) or _decode_one(batch, entry_id, fields, field_map)
            if reading is not None:
                vetted.add_decoded(entry_id, reading, fields, field_map, False)
        if not vetted.rows:
            return batch
        rows = vetted
        readings, suspect = _columns(rows.ids, rows.rows, np.ones(len(rows.rows), bool), at)
    readings.temperature_c[rows.no_temperature] = np.nan
    readings.humidity_pct[rows.no_humidity] = np.nan
    ids = rows.ids
    keep = ~suspect
    for row in np.flatnonzero(suspect).tolist():
        keep[row] = _decode_one(batch, ids[row], _as_text(rows.original(row)), field_map) is not None
    future = keep & (readings.ts_ms > now_ms + max_skew_ms)
    for row in np.flatnonzero(future).tolist():
        ts_ms, seq = int(readings.ts_ms[row]), int(readings.seq[row])
        batch.dead_letters.append(DeadLetter(
            ids[row], f"future: ts={ts_ms} is {(ts_ms - now_ms) / 1000:.0f}s ahead of the worker clock "
                      f"(max skew {max_skew_ms / 1000:.0f}s)", as_dict(_as_text(rows.original(row))),
            None if seq == NO_SEQ else (readings.sensors[row], seq)))
    keep &= ~future
    batch.readings = readings if keep.all() else readings.take(np.flatnonzero(keep))
    return batch


def _decode_one(batch: CommitBatch, entry_id: str, fields: list[str], field_map: FieldMap) -> Reading | None:
    """Decode one entry the careful way; a bad one becomes a dead letter naming the field."""
    entry = as_dict(fields)
    try:
        return Reading.decode(entry, entry_id, field_map)
    except SchemaError as error:
        batch.dead_letters.append(DeadLetter(entry_id, f"malformed: {error}", entry, sensor_and_seq(entry, field_map)))
        return None
