"""Alert events as the receivers want them, pure functions: an Alertmanager alert (labels are its
identity), the Alertmanager webhook body (version 4) that receivers written for Alertmanager
read, the Standard Webhooks message id, and Alertmanager's own fingerprint of a label set."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote

from telemetry.records import AlertEvent
from telemetry.timeutil import iso_utc

ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of an alert still firing, in its webhooks
ENDING_STATES = ("resolved", "flapping_stopped")
_FNV_OFFSET, _FNV_PRIME, _MASK = 14695981039346656037, 1099511628211, (1 << 64) - 1
_SEPARATOR = 0xFF


@dataclass(frozen=True, slots=True)
class Notice:
    """One alert event as read from a partition's alert stream, with what every sink needs."""

    stream: str
    entry_id: str
    event: AlertEvent
    fields: dict[str, str]  # the entry as written, for the dead-letter stream
    inhibited_by: str | None = None  # the sensor's silent alert firing as this event came

    @property
    def key(self) -> tuple[str, str]:
        return self.stream, self.entry_id

    @property
    def message_id(self) -> str:
        """The webhook-id: the same for every attempt and every resend, by any notifier, even for
        the same event rewritten under a new entry id after a failover: it derives from the
        event (its alert id and state), not from where it was read."""
        digest = hashlib.sha256(f"{self.event.alert_id}|{self.event.state}".encode()).hexdigest()
        return f"msg_{digest[:32]}"

    @property
    def ending(self) -> bool:
        return self.event.state in ENDING_STATES


def started_ms(event: AlertEvent) -> int:
    """When the episode's breach (or the flapping) began: the time in its alert id
    (`rule:sensor:time`, `:flapping` after it for a flapping notice); ValueError if it has none."""
    parts = event.alert_id.split(":")
    if len(parts) not in (3, 4) or not parts[2].isdigit():
        raise ValueError(f"alert_id {event.alert_id!r} is not rule:sensor:time")
    return int(parts[2])


def labels(event: AlertEvent, pipeline: str) -> dict[str, str]:
    found = {"alertname": event.rule, "sensor": event.sensor, "severity": event.severity, "kind": event.kind,
             "pipeline": pipeline}
    if event.alert_id.endswith(":flapping"):
        found["flapping"] = "true"  # a flapping notice is an alert of its own beside the rule's episodes
    return found


def _with_unit(value: float | None, unit: str) -> str:
    if value is None:
        return ""
    text = f"{value:.6g}"
    return f"{text} {unit}" if unit else text


def annotations(event: AlertEvent, inhibited_by: str | None = None) -> dict[str, str]:
    value, threshold = _with_unit(event.value, event.unit), _with_unit(event.threshold, event.unit)
    if event.state.startswith("flapping"):
        what = "started flapping" if event.state == "flapping" else "stopped flapping"
        summary = f"{event.rule} on {event.sensor} {what}: {value} state change (limit {threshold})"
    else:
        summary = f"{event.rule} on {event.sensor}: {value} (threshold {threshold})"
    found = {"summary": summary, "value": value, "threshold": threshold, "alert_id": event.alert_id,
             "event": event.state, "event_time": iso_utc(event.ts)}
    if inhibited_by:
        found["inhibited_by"] = inhibited_by  # the sensor is silent: this alert is about stale readings
    return found


def generator_url(external_url: str, sensor: str) -> str:
    return f"{external_url.rstrip('/')}/sensors/{quote(sensor)}"


def alertmanager_alert(event: AlertEvent, pipeline: str, external_url: str, now_ms: int, horizon_ms: int) -> dict:
    """POST /api/v2/alerts item. A firing alert ends `horizon_ms` from now unless re-sent (as
    Prometheus does); an ending one ends at its event time (never in the future)."""
    started = started_ms(event)
    ends = min(event.ts, now_ms) if event.state in ENDING_STATES else now_ms + horizon_ms
    # A sensor clock ahead of this one (up to the aggregator's --max-skew) must not make endsAt
    # precede startsAt, which Alertmanager refuses.
    return {"labels": labels(event, pipeline), "annotations": annotations(event),
            "startsAt": iso_utc(started), "endsAt": iso_utc(max(ends, started)),
            "generatorURL": generator_url(external_url, event.sensor)}


def fingerprint(label_set: dict[str, str]) -> str:
    """Alertmanager's fingerprint of a label set (prometheus/common model: FNV-1a 64 over the
    sorted names and values, each followed by 0xff), as its webhooks carry it."""
    return _fingerprint(tuple(sorted(label_set.items())))


@lru_cache(maxsize=65_536)  # a sensor's alerts repeat their label sets
def _fingerprint(pairs: tuple[tuple[str, str], ...]) -> str:
    value = _FNV_OFFSET
    for pair in pairs:
        for part in pair:
            for byte in part.encode():
                value = ((value ^ byte) * _FNV_PRIME) & _MASK
            value = ((value ^ _SEPARATOR) * _FNV_PRIME) & _MASK
    return f"{value:016x}"


def webhook_body(notice: Notice, pipeline: str, external_url: str, receiver: str) -> bytes:
    """Alertmanager's webhook payload, version 4, carrying this one event."""
    event = notice.event
    status = "resolved" if notice.ending else "firing"
    alert_labels = labels(event, pipeline)
    alert_annotations = annotations(event, notice.inhibited_by)
    alert = {"status": status, "labels": alert_labels, "annotations": alert_annotations,
             "startsAt": iso_utc(started_ms(event)), "endsAt": iso_utc(event.ts) if notice.ending else ZERO_TIME,
             "generatorURL": generator_url(external_url, event.sensor), "fingerprint": fingerprint(alert_labels)}
    group_labels = {"alertname": event.rule, "sensor": event.sensor}
    body = {"version": "4", "groupKey": f'{{}}:{{alertname="{event.rule}", sensor="{event.sensor}"}}',
            "truncatedAlerts": 0, "status": status, "receiver": receiver, "groupLabels": group_labels,
            "commonLabels": alert_labels, "commonAnnotations": alert_annotations, "externalURL": external_url,
            "alerts": [alert]}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
