"""What each page's event stream carries, and the alert lists of `GET /api/alerts`: stream
entries turned into the small JSON the pages apply."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping

from analytics.web.live import Entry, LiveSource
from analytics.web.sensor import window_row
from analytics.web.tracker import FleetTracker, TrackedAlert
from telemetry.keys import GroupKeys
from telemetry.partitions import Layout
from telemetry.records import AlertEvent
from telemetry.schema import FieldMap, Reading, SchemaError
from telemetry.timeutil import now_ms

MAX_ALERTS = 2000
DEFAULT_ALERTS = 200


def alert_json(entry_id: str, event: AlertEvent) -> dict:
    return {"id": entry_id, "alert_id": event.alert_id, "rule": event.rule, "kind": event.kind,
            "sensor": event.sensor, "severity": event.severity, "state": event.state, "value": event.value,
            "threshold": event.threshold, "unit": event.unit, "ts": event.ts}


def _alerts(batch: list[Entry], streams: set[str], sensor: str | None = None) -> list[dict]:
    found = []
    for stream, entry_id, fields in batch:
        if stream in streams and (sensor is None or fields.get("sensor") == sensor):
            try:
                found.append(alert_json(entry_id, AlertEvent.decode(fields)))
            except (KeyError, ValueError):
                continue
    return found


def _readings(batch: list[Entry], streams: set[str], field_map: FieldMap) -> list[Reading]:
    found = []
    for stream, entry_id, fields in batch:
        if stream in streams:
            try:
                found.append(Reading.decode(fields, entry_id, field_map))
            except SchemaError:
                continue
    return found


def fleet_source(layout: Layout, group: str, field_map: FieldMap, status) -> LiveSource:
    """Readings, each sensor's latest of the batch only (the grid shows nothing else), and alerts."""
    readings = {partition.readings for partition in layout.partitions}
    alerts = {keys.alerts for keys in layout.groups(group)}

    def encode(batch: list[Entry]) -> dict:
        latest: dict[str, Reading] = {}
        for reading in _readings(batch, readings, field_map):
            current = latest.get(reading.sensor)
            if current is None or reading.ts_ms >= current.ts_ms:
                latest[reading.sensor] = reading
        return {"readings": [[r.sensor, r.ts_ms, r.temperature_c, r.humidity_pct] for r in latest.values()],
                "alerts": _alerts(batch, alerts)}

    # a fleet's last 30 s of readings are 300,000 entries at 10,000 sensors: a fresh snapshot is cheaper
    return LiveSource(sorted(readings) + sorted(alerts), encode, status, max_replay_ms=30_000)


def sensor_source(keys: GroupKeys, sensor: str, field_map: FieldMap, status) -> LiveSource:
    """The sensor's readings, windows (with their revision: a revised window replaces its
    predecessor on the page) and alert events, from its partition."""

    def encode(batch: list[Entry]) -> dict | None:
        readings = [r for r in _readings(batch, {keys.readings}, field_map) if r.sensor == sensor]
        windows = [window_row(fields) for stream, _, fields in batch
                   if stream == keys.aggregates and fields.get("sensor") == sensor]
        alerts = _alerts(batch, {keys.alerts}, sensor)
        if not (readings or windows or alerts):
            return None
        return {"readings": [[r.ts_ms, r.temperature_c, r.humidity_pct] for r in readings],
                "windows": windows, "alerts": alerts}

    # the sensor's partition is read whole to find its entries: two minutes of it at most
    return LiveSource([keys.readings, keys.aggregates, keys.alerts], encode, status, max_replay_ms=120_000)


def alerts_source(layout: Layout, group: str) -> LiveSource:
    alerts = {keys.alerts for keys in layout.groups(group)}
    return LiveSource(sorted(alerts), lambda batch: {"alerts": _alerts(batch, alerts)})


def _matches(event: AlertEvent, filters: Mapping[str, str]) -> bool:
    return ((not filters.get("state") or event.state == filters["state"])
            and (not filters.get("severity") or event.severity == filters["severity"])
            and (not filters.get("rule") or event.rule == filters["rule"])
            and (not filters.get("sensor") or fnmatch.fnmatchcase(event.sensor, filters["sensor"])))


def alert_lists(tracker: FleetTracker, filters: Mapping[str, str], limit: int) -> dict:
    """Firing now (oldest first, with how long), and the latest events (newest first), filtered;
    `last_id` is where the page's event stream starts."""
    now = now_ms()
    with tracker.lock:
        state = tracker.state
        firing: list[TrackedAlert] = sorted(state.firing.values(), key=lambda tracked: tracked.event.ts)
        recent = list(state.recent)
        last_id = state.last_id
    rules = sorted({tracked.event.rule for tracked in recent} | {tracked.event.rule for tracked in firing})
    firing_filters = {**filters, "state": ""}
    return {
        "taken_ms": now, "last_id": last_id, "rules": rules,
        "firing": [{**alert_json(t.entry_id, t.event), "duration_s": max(0, now - t.event.ts) / 1000}
                   for t in firing if _matches(t.event, firing_filters)
                   and filters.get("state", "firing") in ("", "firing")],
        "recent": [alert_json(t.entry_id, t.event) for t in reversed(recent) if _matches(t.event, filters)][:limit],
    }
