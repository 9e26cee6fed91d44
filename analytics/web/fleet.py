"""The fleet snapshot (`GET /api/fleet`): every sensor as a cell, the counters, the top sensors
and the pipeline's partitions, built from the tracker's memory and one `status` read.

Cells go out as parallel arrays (names, states, values), not one object per sensor: 10,000
sensors are then about 400 kB of JSON that the page draws on one canvas.
"""

from __future__ import annotations

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


def cell_states(state: FleetState, names: list[str], silent: np.ndarray) -> np.ndarray:
    """Firing critical beats firing warning beats silent (no reading for the stale time) beats ok."""
    states = np.where(silent, SILENT, OK)
    index = {name: position for position, name in enumerate(names)}
    for tracked in state.firing.values():
        position = index.get(tracked.event.sensor)
        if position is not None:
            level = CRITICAL if tracked.event.severity == "critical" else WARNING
            states[position] = max(states[position], level)
    return states


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


def fleet_snapshot(tracker: FleetTracker, db: Client, *, stale_ms: int) -> dict:
    now = now_ms()
    with tracker.lock:
        state = tracker.state
        names = sorted(state.known)
        latest = [state.latest.get(name) for name in names]
        latest_ts = np.array([-1 if value is None else value.ts for value in latest], dtype=np.int64)
        temperatures = np.array([np.nan if value is None else value.temperature_c for value in latest])
        humidities = np.array([np.nan if value is None else value.humidity_pct for value in latest])
        silent = (latest_ts < 0) | (now - latest_ts > stale_ms)
        states = cell_states(state, names, silent)
        firing = sorted((tracked for tracked in state.firing.values()), key=lambda t: t.event.ts)
        episodes = state.episodes.most_common(TOP)
        last_id, layout = state.last_id, state.layout
    status = collect_status(db, layout, tracker.group, maxlen=0)
    deviation = robust_deviation(temperatures)
    staleness = np.where(latest_ts < 0, np.inf, (now - latest_ts) / 1000)

    def top(order: np.ndarray, values: np.ndarray) -> list[dict]:
        return [{"sensor": names[i], "value": None if not np.isfinite(values[i]) else round(float(values[i]), 2)}
                for i in order[:TOP] if values[i] > 0]

    return {
        "taken_ms": now,
        "last_id": last_id,
        "stale_after_s": stale_ms / 1000,
        "sensors": {"names": names, "states": states.tolist(),
                    "ts": [None if ts < 0 else int(ts) for ts in latest_ts.tolist()],
                    "temperature_c": [None if np.isnan(v) else v for v in temperatures.tolist()],
                    "humidity_pct": [None if np.isnan(v) else v for v in humidities.tolist()]},
        "counters": {"sensors": len(names), "reporting": int((~silent).sum()), "silent": int(silent.sum()),
                     "firing": {"critical": sum(t.event.severity == "critical" for t in firing),
                                "warning": sum(t.event.severity != "critical" for t in firing)},
                     "readings_per_s": round(tracker.readings_per_s(), 1)},
        "firing": [alert_json(tracked.entry_id, tracked.event) for tracked in firing],
        "top": {"alerts": [{"sensor": sensor, "value": count} for sensor, count in episodes],
                "stale": top(np.argsort(-staleness, kind="stable"), staleness),
                "deviation": top(np.argsort(-deviation, kind="stable"), deviation)},
        **pipeline_figures(status),
    }


def pipeline_figures(status: PipelineStatus) -> dict:
    """Per partition owner, epoch, lag, pending; dead letters and what was lost, as `status` reads them."""
    counters = status.counters
    return {
        "partitions": [{"index": row.index, "owner": row.owner, "epoch": row.epoch, "length": row.length,
                        "lag": row.lag_entries, "lag_s": round(row.lag_seconds, 3), "pending": row.pending}
                       for row in status.partitions],
        "dead_letters": status.dead_letter_count,
        "losses": {name: counters.get(name, 0) for name in ("missing_seq", "lost_to_trim", "late", "dead_lettered")},
        "processed": counters.get("processed", 0),
        "warnings": list(status.warnings),
    }


def status_json(db: Client, tracker: FleetTracker) -> dict:
    """`GET /api/status`: what `consumers status --json` prints."""
    with tracker.lock:
        layout = tracker.state.layout
    return asdict(collect_status(db, layout, tracker.group, maxlen=0))
