"""Each sensor's rolling statistics for readers (dashboard, report), computed from its partition's
checkpoint.

The owner's commit writes a sensor's state (with its rolling buckets) and nothing more: a second
copy of the statistics, formatted for dashboards, would double the fields a commit writes per
reading, and Redis's CPU per reading decides how large a fleet it serves. Readers rebuild the view
from the same buckets, merged in the same order, so it equals what the owner's alert rules saw
after the sensor's newest committed reading.
"""

from __future__ import annotations

from dataclasses import dataclass

from consumers.checkpoint import restore_sensors
from consumers.rolling import RollingSpec
from consumers.sensor_state import bucket_field
from consumers.settings import DEFAULT_ROLLING_MS
from consumers.summary import MetricStats
from telemetry.connection import Client, undecoded_replies
from telemetry.keys import GroupKeys


@dataclass(frozen=True, slots=True)
class RollingView:
    sensor: str
    as_of_ts: int  # the sensor's newest reading applied
    window_s: float
    missing_seq: int  # readings lost before this group applied them (seq gaps)
    late: int  # readings that revised a window already emitted
    too_late: int  # readings past the allowed lateness, dead-lettered
    revisions: int  # windows emitted again
    count: int  # readings in the rolling window, with either metric (each metric's own count in its stats)
    temperature_c: MetricStats
    humidity_pct: MetricStats


def rolling_views(db: Client, wanted: list[tuple[GroupKeys, list[str] | None]]) -> dict[str, RollingView]:
    """The views of the sensors each partition is asked for (None: all of its sensors); a sensor no
    commit has written yet has none. Two round trips per server: the windows, then the fields."""
    windows = undecoded_replies(db, [("HGET", keys.checkpoint, "rolling_ms") for keys, _ in wanted])
    # a checkpoint written before commits recorded their window had the default one
    specs = [RollingSpec(int(window) if window else DEFAULT_ROLLING_MS) for window in windows]
    requests = [("HGETALL", keys.state) if sensors is None else ("HMGET", keys.state, *_fields(sensors, spec))
                for (keys, sensors), spec in zip(wanted, specs)]
    views: dict[str, RollingView] = {}
    for request, spec, reply in zip(requests, specs, undecoded_replies(db, requests)):
        fields = reply if isinstance(reply, dict) else dict(zip(request[2:], reply))
        for sensor, state in restore_sensors(fields, spec).items():
            stats = spec.stats(state)
            views[sensor] = RollingView(sensor, state.max_ts, spec.rolling_ms / 1000, state.missing_seq,
                                        state.late, state.too_late, state.revisions, stats.n,
                                        stats.metric("temperature_c"), stats.metric("humidity_pct"))
    return views


def _fields(sensors: list[str], spec: RollingSpec) -> list[str]:
    return [name for sensor in sensors for name in (sensor, *(bucket_field(sensor, slot) for slot in range(spec.slots)))]
