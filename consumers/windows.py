"""Tumbling event-time windows: one window's running statistics, its checkpoint form, and the
aggregate it becomes when it closes."""

from __future__ import annotations

from dataclasses import dataclass, field

from consumers.summary import Summary
from telemetry.records import WindowAggregate

NONE = -1  # an int field with no value yet (msgpack is smaller without nil checks everywhere)


@dataclass(slots=True)
class Window:
    start_ms: int
    summary: Summary = field(default_factory=Summary)
    first_ts: int = NONE
    last_ts: int = NONE
    revision: int = 0  # the revision its next emission carries

    def add(self, ts_ms: int, temperature_c: float | None, humidity_pct: float | None) -> None:
        self.summary.add(temperature_c, humidity_pct)
        if self.first_ts == NONE or ts_ms < self.first_ts:
            self.first_ts = ts_ms
        if ts_ms > self.last_ts:
            self.last_ts = ts_ms

    def pack(self) -> list:
        """The summary's missing counts, when it has any, go last: older forms stay readable."""
        summary = self.summary
        packed = [self.start_ms, *summary.core_values(), self.first_ts, self.last_ts, self.revision]
        if summary.t_missing or summary.h_missing:
            packed += (summary.t_missing, summary.h_missing)
        return packed

    @classmethod
    def unpack(cls, values: list) -> Window:
        return cls(values[0], Summary(*values[1:10], *values[13:15]), values[10], values[11],
                   values[12] if len(values) > 12 else 0)

    def reopened(self) -> Window:
        """A copy of this emitted window that a late reading revises: the emitted one stays as it was."""
        return Window(self.start_ms, self.summary.copy(), self.first_ts, self.last_ts, self.revision + 1)

    def aggregate(self, sensor: str, window_ms: int, closed_by: str) -> WindowAggregate:
        """Each metric's statistics from its own readings; None for one no reading carried."""
        temperature, humidity = self.summary.metric("temperature_c"), self.summary.metric("humidity_pct")
        return WindowAggregate(
            sensor, self.start_ms, self.start_ms + window_ms, self.summary.n,
            temperature.count, temperature.mean, temperature.min, temperature.max, temperature.std,
            humidity.count, humidity.mean, humidity.min, humidity.max, humidity.std,
            self.first_ts, self.last_ts, closed_by, self.revision)
