"""The aggregator's output records, defined once for the worker that writes them and every reader.

Each output entry also carries `partition`, `epoch` and `batch` (the commit that wrote it), so a
reader could drop a duplicate should a bug ever write outside the fenced commit, and
`emitted_ms`, the wall-clock time of that commit. Numbers are written with 12 significant
digits: far more than any sensor resolves, and no float noise (0.1, not 0.0999999999999996).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

COMMIT_FIELDS = ("partition", "epoch", "batch", "emitted_ms")


def number_text(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, int):
        return str(value)
    return f"{value:.12g}"


def _float(text: str | None) -> float | None:
    return float(text) if text not in (None, "") else None


METRIC_PREFIXES = ("temperature_c_", "humidity_pct_")


@dataclass(frozen=True, slots=True)
class WindowAggregate:
    """One closed window of one sensor. Each metric's statistics come from the readings that
    carried it (`<metric>_count` of the window's `count`); a metric no reading carried has
    count 0 and its mean, min, max and std are None, left out of the entry."""

    sensor: str
    window_start: int
    window_end: int
    count: int
    temperature_c_count: int
    temperature_c_mean: float | None
    temperature_c_min: float | None
    temperature_c_max: float | None
    temperature_c_std: float | None
    humidity_pct_count: int
    humidity_pct_mean: float | None
    humidity_pct_min: float | None
    humidity_pct_max: float | None
    humidity_pct_std: float | None
    first_ts: int
    last_ts: int
    closed_by: str  # watermark | idle
    # 0 when first emitted; a late reading re-emits the window with the next number. The latest
    # revision of (sensor, window_start) replaces every earlier one (SCHEMAS.md).
    revision: int = 0

    def fields(self) -> list[str]:
        absent = () if self.temperature_c_count and self.humidity_pct_count else tuple(
            prefix for prefix in METRIC_PREFIXES if not getattr(self, prefix + "count"))
        out: list[str] = []
        for name in self.__slots__:
            if absent and name.startswith(absent) and not name.endswith("_count"):
                continue
            value = getattr(self, name)
            out += [name, value if isinstance(value, str) else number_text(value)]
        return out

    @classmethod
    def decode(cls, entry: dict[str, str]) -> WindowAggregate:
        """Entries written before per-metric counts had every reading carry both metrics."""
        ints = {"window_start", "window_end", "count", "first_ts", "last_ts", "revision", "temperature_c_count",
                "humidity_pct_count"}
        defaults = {"revision": "0", "temperature_c_count": entry.get("count", ""),
                    "humidity_pct_count": entry.get("count", "")}
        values = {}
        for name in cls.__slots__:
            text = entry.get(name, defaults.get(name, ""))
            values[name] = text if name in ("sensor", "closed_by") else int(text) if name in ints else _float(text)
        return cls(**values)


@dataclass(frozen=True, slots=True)
class AlertEvent:
    alert_id: str
    rule: str
    kind: str
    sensor: str
    severity: str
    state: str  # firing | resolved
    value: float
    threshold: float | None
    ts: int  # event time of the reading (or silence) that changed the state
    unit: str = ""  # of value and threshold: °C, %RH, °C/min, %RH/min, sigma, s
    stats: dict[str, float | int | None] = field(default_factory=dict)  # the metric's rolling stats

    def fields(self) -> list[str]:
        out = ["alert_id", self.alert_id, "rule", self.rule, "kind", self.kind, "sensor", self.sensor,
               "severity", self.severity, "state", self.state, "value", number_text(self.value),
               "threshold", number_text(self.threshold), "unit", self.unit, "ts", str(self.ts)]
        for name, value in self.stats.items():
            if value is not None:
                out += [f"stats_{name}", number_text(value)]
        return out

    @classmethod
    def decode(cls, entry: dict[str, str]) -> AlertEvent:
        stats = {name.removeprefix("stats_"): float(value) for name, value in entry.items()
                 if name.startswith("stats_") and value != ""}
        return cls(entry["alert_id"], entry["rule"], entry["kind"], entry["sensor"], entry["severity"],
                   entry["state"], float(entry["value"]), _float(entry.get("threshold")), int(entry["ts"]),
                   entry.get("unit", ""), stats)


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    entry_id: str
    reason: str
    fields_json: str  # the entry's fields as JSON, as they were

    @classmethod
    def of(cls, entry_id: str, reason: str, entry_fields: dict[str, str]) -> DeadLetterRecord:
        return cls(entry_id, reason, json.dumps(entry_fields, ensure_ascii=False))

    def fields(self) -> list[str]:
        return ["entry_id", self.entry_id, "reason", self.reason, "fields", self.fields_json]

    @classmethod
    def decode(cls, entry: dict[str, str]) -> DeadLetterRecord:
        return cls(entry["entry_id"], entry["reason"], entry.get("fields", "{}"))
