"""One sensor over a time range (`GET /api/sensors/<name>`): its readings, its window aggregates
(the latest revision of each window), its alert episodes, the thresholds of the rules that apply,
and its rolling statistics.

Streams have no index by sensor or by event time, so a range is read from the sensor's own
partition, starting at the stream id of the range's start less the workers' largest accepted
clock skew: an entry is appended no earlier than its reading was taken, less that skew (a
backfill is appended later, never earlier), so nothing in the range is skipped.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from dataclasses import fields as dataclass_fields

from analytics.streams import as_dict, iter_entries
from consumers.rolling_view import rolling_views
from consumers.rules import AlertRule
from consumers.settings import AggregatorSettings
from telemetry.connection import Client
from telemetry.errors import UsageError
from telemetry.keys import GroupKeys
from telemetry.records import AlertEvent, WindowAggregate
from telemetry.schema import FieldMap, Reading, SchemaError
from telemetry.stream_reads import last_ids
from telemetry.timeutil import now_ms, parse_time_ms, stream_id_key

PRESETS_MS = {"15m": 15 * 60_000, "1h": 3_600_000, "6h": 6 * 3_600_000, "24h": 24 * 3_600_000}
DEFAULT_PRESET = "1h"
MAX_RANGE_MS = 7 * 24 * 3_600_000
# readings further ahead of the worker's clock than the default --max-skew are dead-lettered
SKEW_MS = next(spec.default for spec in dataclass_fields(AggregatorSettings) if spec.name == "max_skew_ms")


class BadRequest(ValueError):
    """A parameter the page or a script got wrong: answered 400 with this message."""


@dataclass(frozen=True, slots=True)
class TimeRange:
    since_ms: int
    until_ms: int
    preset: str | None  # 15m, 1h, 6h, 24h; None: custom

    @classmethod
    def parse(cls, params: Mapping[str, str], now: int | None = None) -> TimeRange:
        """`range=15m|1h|6h|24h` (the last so long, up to now), or `since` and optional `until` in
        any form the command line takes (ISO-8601, epoch ms, -15m)."""
        now = now_ms() if now is None else now
        since_text, until_text = params.get("since"), params.get("until")
        preset = params.get("range")
        if since_text or until_text:
            if preset:
                raise BadRequest("give either range or since/until, not both")
            if not since_text:
                raise BadRequest("until needs since")
            try:
                since = parse_time_ms(since_text, now=now, field="since")
                until = parse_time_ms(until_text, now=now, field="until") if until_text else now
            except UsageError as error:
                raise BadRequest(str(error)) from None
            if until <= since:
                raise BadRequest(f"until ({until_text or 'now'}) must be after since ({since_text})")
            if until - since > MAX_RANGE_MS:
                raise BadRequest("a range of at most 7 days")
            return cls(since, until, None)
        preset = preset or DEFAULT_PRESET
        if preset not in PRESETS_MS:
            raise BadRequest(f"range {preset!r}: expected one of {', '.join(PRESETS_MS)}")
        return cls(now - PRESETS_MS[preset], now, preset)

    def holds(self, ts: int) -> bool:
        return self.since_ms <= ts < self.until_ms

    @property
    def first_id(self) -> str:
        """The stream id to start reading at (inclusive)."""
        return f"{max(0, self.since_ms - SKEW_MS)}-0"


def _entries_of(db: Client, key: str, sensor: str, start: str = "-") -> Iterator[tuple[str, dict[str, str]]]:
    """The sensor's entries of a stream its whole partition shares; the name is compared before
    a dict is built, since most entries are other sensors'."""
    for page in iter_entries(db, key, start=start):
        for entry_id, fields in page:
            if sensor in fields:
                entry = as_dict(fields)
                if entry.get("sensor") == sensor:
                    yield entry_id, entry


def readings_in(db: Client, keys: GroupKeys, sensor: str, span: TimeRange, field_map: FieldMap) -> dict:
    found = []
    for page in iter_entries(db, keys.readings, start=span.first_id):
        for entry_id, fields in page:
            if sensor not in fields:
                continue
            try:
                reading = Reading.decode(as_dict(fields), entry_id, field_map)
            except SchemaError:
                continue
            if reading.sensor == sensor and span.holds(reading.ts_ms):
                found.append(reading)
    found.sort(key=lambda reading: reading.ts_ms)
    return {"ts": [r.ts_ms for r in found], "temperature_c": [r.temperature_c for r in found],
            "humidity_pct": [r.humidity_pct for r in found]}


def revision_of(entry: Mapping[str, str]) -> int:
    """A window's revision: entries written before revisions existed carry none, and count as 0."""
    text = entry.get("revision") or "0"
    return int(text) if text.isdigit() else 0


def latest_revisions(entries: Iterator[tuple[str, Mapping[str, str]]]) -> dict[tuple[str, int], Mapping[str, str]]:
    """(sensor, window_start) -> the entry of its highest revision; of equal revisions the later
    entry (a window written again after a failover carries the same content)."""
    kept: dict[tuple[str, int], Mapping[str, str]] = {}
    for _, entry in entries:
        key = (entry.get("sensor", ""), int(entry.get("window_start") or 0))
        current = kept.get(key)
        if current is None or revision_of(entry) >= revision_of(current):
            kept[key] = entry
    return kept


WINDOW_COLUMNS = ("window_start", "window_end", "count", "temperature_c_mean", "temperature_c_min",
                  "temperature_c_max", "humidity_pct_mean", "humidity_pct_min", "humidity_pct_max")


def window_row(entry: Mapping[str, str]) -> dict:
    window = WindowAggregate.decode(dict(entry))
    return {**{name: getattr(window, name) for name in WINDOW_COLUMNS}, "revision": revision_of(entry)}


def windows_in(db: Client, keys: GroupKeys, sensor: str, span: TimeRange) -> dict:
    kept = latest_revisions(_entries_of(db, keys.aggregates, sensor, span.first_id))
    rows = sorted((window_row(entry) for (_, start), entry in kept.items() if span.holds(start)),
                  key=lambda row: row["window_start"])
    return {name: [row[name] for row in rows] for name in (*WINDOW_COLUMNS, "revision")}


def episodes_of(db: Client, keys: GroupKeys, sensor: str, span: TimeRange) -> list[dict]:
    """Each alert episode (firing, then resolved or still firing) that overlaps the range. Alerts
    are few: the partition's alert stream is read whole, so an episode that began long ago and
    still fires is found."""
    episodes: dict[str, dict] = {}
    for _, entry in _entries_of(db, keys.alerts, sensor):
        event = AlertEvent.decode(entry)
        if event.state == "firing":
            episodes.setdefault(event.alert_id, {
                "alert_id": event.alert_id, "rule": event.rule, "severity": event.severity, "start": event.ts,
                "end": None, "value": event.value, "threshold": event.threshold, "unit": event.unit})
        elif event.alert_id in episodes:
            episodes[event.alert_id]["end"] = event.ts
    return [episode for episode in episodes.values()
            if episode["start"] < span.until_ms and (episode["end"] is None or episode["end"] >= span.since_ms)]


def thresholds(rules: tuple[AlertRule, ...]) -> list[dict]:
    """The threshold rules (every rule applies to every sensor): what the chart draws as lines."""
    return [{"rule": rule.name, "metric": rule.metric, "source": rule.source, "severity": rule.severity,
             "above": rule.above, "below": rule.below, "unit": rule.unit}
            for rule in rules if rule.kind == "threshold"]


def rolling_of(db: Client, keys: GroupKeys, sensor: str) -> dict | None:
    view = rolling_views(db, [(keys, [sensor])]).get(sensor)
    if view is None:
        return None
    return {"as_of_ts": view.as_of_ts, "window_s": view.window_s, "missing_seq": view.missing_seq,
            "temperature_c": asdict(view.temperature_c), "humidity_pct": asdict(view.humidity_pct)}


def sensor_detail(db: Client, keys: GroupKeys, sensor: str, span: TimeRange, field_map: FieldMap,
                  rules: tuple[AlertRule, ...]) -> dict:
    """`last_id`, taken before the reads, is where the page's event stream starts: what is written
    meanwhile comes in both, and the page applies it once."""
    positions = last_ids(db, [keys.readings, keys.aggregates, keys.alerts])
    return {"sensor": sensor, "partition": keys.partition.index, "since_ms": span.since_ms,
            "until_ms": span.until_ms, "range": span.preset,
            "last_id": max(positions.values(), key=stream_id_key),
            "readings": readings_in(db, keys, sensor, span, field_map),
            "windows": windows_in(db, keys, sensor, span), "episodes": episodes_of(db, keys, sensor, span),
            "thresholds": thresholds(rules), "rolling": rolling_of(db, keys, sensor)}
