"""The fleet snapshot (`GET /api/fleet`): every sensor as a cell, the counters, the top sensors
and the pipeline's partitions, built from the tracker's memory and one `status` read.

Cells go out as parallel arrays (names, states, values), not one object per sensor: 10,000
sensors are then about 400 kB of JSON that the page draws on one canvas.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict

import numpy as np

from analytics.web.feeds import alert_json
from analytics.web.tracker import FleetState, FleetTracker
from consumers.status import PipelineStatus, collect_status
from telemetry.connection import Client
from telemetry.timeutil import now_ms

# Cell states, in the order of precedence the grid colours by.
OK, SILENT, WARNING, CRITICAL = 0, 1, 2, 3
STATE_NAMES = ("ok", "silent", "warning", "critical")
TOP = 10


def firing_levels(state: FleetState) -> dict[str, int]:
    """Each sensor with a firing alert, and the highest severity firing: critical beats warning
    beats silent (no reading for the stale time) beats ok."""
    levels: dict[str, int] = {}
    for tracked in state.firing.values():
        level = CRITICAL if tracked.event.severity == "critical" else WARNING
        levels[tracked.event.sensor] = max(levels.get(tracked.event.sensor, OK), level)
    return levels


def robust_deviation(values: np.ndarray) -> np.ndarray:
    """How far each value sits from the fleet's median, in units of the fleet's spread (MAD scaled
    to a normal sigma): a sensor reading unlike the rest of its fleet stands out whatever the
    season, and one broken sensor does not move the yardstick."""
    finite = values[np.isfinite(values)]
    if len(finite) < 3:
        return np.zeros(len(values))
    median = float(np.median(finite))
    spread = 1.4826 * float(np.median(np.abs(finite - median))) or 1e-9
    return np.nan_to_num(np.abs(values - median) / spread, nan=0.0)


class StatusCache:
    """The pipeline's status (owners, lags, counters: some 130 commands for 16 partitions) read at
    most every `max_age_s`, in a thread of its own, whatever the number of pages open: a request
    takes the last one read and, when it is older than that, asks for a new read without waiting
    for it. Only the first request waits."""

    def __init__(self, read: Callable[[], PipelineStatus], max_age_s: float = 2.0) -> None:
        self.read = read
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        self._value: PipelineStatus | None = None
        self._taken = 0.0
        self._reading = False

    def get(self) -> PipelineStatus:
        with self._lock:
            value, stale = self._value, time.monotonic() - self._taken > self.max_age_s
            start = stale and value is not None and not self._reading
            self._reading |= start
        if value is None:
            return self._refresh()
        if start:
            threading.Thread(target=self._refresh_quietly, name="status-read", daemon=True).start()
        return value

    def _refresh(self) -> PipelineStatus:
        value = self.read()
        with self._lock:
            self._value, self._taken, self._reading = value, time.monotonic(), False
        return value

    def _refresh_quietly(self) -> None:
        try:
            self._refresh()
        except Exception:  # noqa: BLE001 - Redis away: the next request tries again
            with self._lock:
                self._reading = False


def fleet_snapshot(tracker: FleetTracker, status: StatusCache, *, stale_ms: int) -> dict:
    now = now_ms()
    with tracker.lock:
        state = tracker.state
        names = sorted(state.known)
        latest = [state.latest.get(name) for name in names]
        firing = sorted((tracked for tracked in state.firing.values()), key=lambda t: t.event.ts)
        episodes = state.episodes.most_common(TOP)
        last_id = state.last_id
        levels = firing_levels(state)
    ts = [None if value is None else value.ts for value in latest]
    temperatures = [None if value is None else value.temperature_c for value in latest]
    humidities = [None if value is None else value.humidity_pct for value in latest]
    latest_ts = np.array([-1 if value is None else value for value in ts], dtype=np.int64)
    silent = (latest_ts < 0) | (now - latest_ts > stale_ms)
    states = np.where(silent, SILENT, OK)
    for position, name in enumerate(names):
        if name in levels:
            states[position] = max(states[position], levels[name])
    deviation = robust_deviation(np.array(temperatures, dtype=float))
    staleness = np.where(latest_ts < 0, np.inf, (now - latest_ts) / 1000)

    def top(order: np.ndarray, values: np.ndarray) -> list[dict]:
        return [{"sensor": names[i], "value": None if not np.isfinite(values[i]) else round(float(values[i]), 2)}
                for i in order[:TOP] if values[i] > 0]

    return {
        "taken_ms": now,
        "last_id": last_id,
        "stale_after_s": stale_ms / 1000,
        "sensors": {"names": names, "states": states.tolist(), "ts": ts, "temperature_c": temperatures,
                    "humidity_pct": humidities},
        "counters": {"sensors": len(names), "reporting": int((~silent).sum()), "silent": int(silent.sum()),
                     "firing": {"critical": sum(t.event.severity == "critical" for t in firing),
                                "warning": sum(t.event.severity != "critical" for t in firing)},
                     "readings_per_s": round(tracker.readings_per_s(), 1)},
        "firing": [alert_json(tracked.entry_id, tracked.event) for tracked in firing],
        "top": {"alerts": [{"sensor": sensor, "value": count} for sensor, count in episodes],
                "stale": top(np.argsort(-staleness, kind="stable"), staleness),
                "deviation": top(np.argsort(-deviation, kind="stable"), deviation)},
        **pipeline_figures(status.get()),
    }


def pipeline_figures(status: PipelineStatus) -> dict:
    """Per partition owner, epoch, lag, pending; dead letters and what was lost, as `status` reads them."""
    counters = status.counters
    return {
        "partitions": [{"index": row.index, "owner": row.owner, "epoch": row.epoch, "length": row.length,
                        "lag": row.lag_entries, "lag_s": round(row.lag_seconds, 3), "pending": row.pending}
                       for row in status.partitions],
        "dead_letters": status.dead_letter_count,
        "losses": {name: counters.get(name, 0)
                   for name in ("missing_seq", "lost_to_trim", "late", "too_late", "revisions", "dead_lettered")},
        "processed": counters.get("processed", 0),
        "warnings": list(status.warnings),
    }


def status_json(db: Client, tracker: FleetTracker) -> dict:
    """`GET /api/status`: what `consumers status --json` prints."""
    with tracker.lock:
        layout = tracker.state.layout
    return asdict(collect_status(db, layout, tracker.group, maxlen=0))
