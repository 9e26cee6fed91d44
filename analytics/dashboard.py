"""A snapshot of the running pipeline, and two ways to show it: a rich live view or plain text.

Each sensor is read where it lives, in its partition: its latest readings, its producer's seq and
its rolling stats (rebuilt from the group's checkpoint). Alerts come from every partition's alert
stream, merged in id order; lag, owners and counters from `status`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import redis
from rich.console import Group
from rich.table import Table
from rich.text import Text

from analytics.streams import as_dict, iter_entries
from consumers.rolling_view import RollingView, rolling_views
from consumers.status import PipelineStatus, collect_status
from telemetry.merge import merged_pages
from telemetry.partitions import Layout
from telemetry.records import AlertEvent
from telemetry.timeutil import iso_utc, now_ms

LATEST_PER_SENSOR = 50  # entries read back per sensor to find its latest reading


@dataclass(frozen=True, slots=True)
class SensorView:
    sensor: str
    latest_ts: int | None
    temperature_c: float | None
    humidity_pct: float | None
    rolling: RollingView | None  # None until a commit has applied one of its readings
    produced: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    taken_ms: int
    sensors: tuple[SensorView, ...]
    alerts: tuple[AlertEvent, ...]  # firing now
    alert_events: int
    recent: tuple[AlertEvent, ...]  # the latest events, fired and resolved, newest last
    status: PipelineStatus

    @property
    def produced(self) -> int:
        return sum(view.produced for view in self.sensors)

    @property
    def counters(self) -> dict[str, int]:
        return self.status.counters


def _sensor_views(db: redis.Redis, layout: Layout, group: str, sensors: list[str]) -> list[SensorView]:
    """Per partition, its latest readings and producer seqs in one pipelined round trip; then the
    rolling views. A metric shows its newest value, from a reading before the newest where that
    one lacks it (a split-topic device)."""
    by_partition: dict[int, list[str]] = defaultdict(list)
    for sensor in sensors:
        by_partition[layout.partition_for(sensor).index].append(sensor)
    pipeline = db.pipeline(transaction=False)
    for index, names in by_partition.items():
        partition = layout.partitions[index]
        pipeline.xrevrange(partition.readings, count=LATEST_PER_SENSOR * len(names))
        pipeline.hmget(partition.producer_seq, names)
    replies = iter(pipeline.execute())
    rolling = rolling_views(db, [(layout.partitions[index].group(group), names)
                                 for index, names in by_partition.items()])
    views = {}
    for names in by_partition.values():
        latest: dict[str, dict] = {}
        for _, fields in next(replies):  # newest first: each field from the newest entry that has it
            merged = latest.setdefault(fields.get("sensor", ""), {})
            for name, value in fields.items():
                merged.setdefault(name, value)
        for sensor, seq in zip(names, next(replies)):
            views[sensor] = _sensor_view(sensor, latest.get(sensor, {}), seq, rolling.get(sensor))
    return [views[sensor] for sensor in sensors]


def _sensor_view(sensor: str, fields: dict[str, str], seq: str | None, rolling: RollingView | None) -> SensorView:
    return SensorView(sensor, int(fields["ts"]) if "ts" in fields else None,
                      float(fields["temperature_c"]) if "temperature_c" in fields else None,
                      float(fields["humidity_pct"]) if "humidity_pct" in fields else None,
                      rolling, _produced(fields, seq))


def _produced(latest: dict[str, str], saved: str | None) -> int:
    """Readings a sensor's producer has made (seq + 1): its latest reading's seq, else the one the
    producer saved last ("seq stream-id", saved every few seconds)."""
    seq = latest.get("seq") or (saved.partition(" ")[0] if saved else None)
    return int(seq) + 1 if seq else 0


RECENT_EVENTS = 6


def _alerts(db: redis.Redis, layout: Layout, group: str) -> tuple[list[AlertEvent], int, list[AlertEvent]]:
    """The firing alerts (each alert id's latest event), how many alert events there are, and the
    latest few events in the order Redis took them."""
    latest: dict[str, AlertEvent] = {}
    recent: list[AlertEvent] = []
    events = 0
    streams = [iter_entries(db, keys.alerts) for keys in layout.groups(group)]
    for page in merged_pages(streams, 1):
        events += len(page)
        for _, fields in page:
            event = AlertEvent.decode(as_dict(fields))
            latest[event.alert_id] = event
            recent = [*recent[-(RECENT_EVENTS - 1):], event]
    return [event for event in latest.values() if event.state == "firing"], events, recent


def collect_snapshot(db: redis.Redis, layout: Layout, group: str, sensors: list[str]) -> Snapshot:
    alerts, events, recent = _alerts(db, layout, group)
    return Snapshot(now_ms(), tuple(_sensor_views(db, layout, group, sensors)), tuple(alerts), events, tuple(recent),
                    collect_status(db, layout, group, maxlen=0))


def _number(value: str | float | None, digits: int = 1) -> str:
    if value in (None, ""):
        return "-"
    return f"{float(value):.{digits}f}"


def render(snapshot: Snapshot, rates: dict[str, float], heading: str = "") -> Group:
    """Narrow columns, so that the view stays readable in an 80-column terminal."""
    sensors = Table(title="sensors: latest reading | rolling window", expand=True, pad_edge=False)
    sensors.add_column("sensor", no_wrap=True, overflow="ellipsis", max_width=16)
    for column in ("time", "°C", "%RH", "n", "mean", "std", "min", "max"):
        sensors.add_column(column, justify="right", no_wrap=True)
    for view in snapshot.sensors:
        stats = view.rolling.temperature_c if view.rolling else None
        sensors.add_row(
            view.sensor, iso_utc(view.latest_ts)[11:19] if view.latest_ts else "-", _number(view.temperature_c),
            _number(view.humidity_pct), str(stats.count) if stats else "-", _number(stats and stats.mean),
            _number(stats and stats.std, 2), _number(stats and stats.min), _number(stats and stats.max))
    recent = Table(title="latest alert events", expand=True, pad_edge=False)
    for column in ("time", "event", "rule", "sensor", "value"):
        recent.add_column(column, no_wrap=True, overflow="ellipsis")
    for event in snapshot.recent:
        style = ("bold red" if event.severity == "critical" else "yellow") if event.state == "firing" else "green"
        recent.add_row(iso_utc(event.ts)[11:19], Text(event.state, style=style), event.rule, event.sensor,
                       f"{event.value:.3g} {event.unit}")
    alerts = Table(title=f"active alerts ({snapshot.alert_events} alert events so far)", expand=True)
    for column in ("severity", "rule", "sensor", "since", "value"):
        alerts.add_column(column)
    for alert in sorted(snapshot.alerts, key=lambda a: a.ts):
        style = "bold red" if alert.severity == "critical" else "yellow"
        alerts.add_row(Text(alert.severity, style=style), alert.rule, alert.sensor, iso_utc(alert.ts)[11:19],
                       f"{alert.value:g}")
    status = snapshot.status
    partitions = Table(title=f"partitions of group {status.group}", expand=True)
    for column in ("partition", "owner", "epoch", "lag", "lag s", "pending"):
        partitions.add_column(column)
    for row in status.partitions:
        partitions.add_row(str(row.index), row.owner, str(row.epoch), "-" if row.lag_entries is None else
                           str(row.lag_entries), f"{row.lag_seconds:.1f}", str(row.pending))
    counters = snapshot.counters
    throughput = Text(f"produced {rates.get('produced', 0):,.0f}/s   processed {rates.get('processed', 0):,.0f}/s   "
                      f"windows {counters.get('windows_emitted', 0)}   "
                      f"dead letters {counters.get('dead_lettered', 0)}   "
                      f"late {counters.get('late', 0)}   lost to trim {counters.get('lost_to_trim', 0)}   "
                      f"missing by seq {counters.get('missing_seq', 0)}")
    return Group(*([Text(heading, style="bold")] if heading else []), sensors, recent, alerts, partitions, throughput)


def plain_summary(snapshot: Snapshot, rates: dict[str, float]) -> str:
    """One line per refresh where there is no terminal; what produced and processed differ by
    (readings a sensor dropped, or trimming) is on it, so the gap does not look like a loss."""
    totals = snapshot.status.totals
    owners = len({row.owner for row in snapshot.status.partitions} - {"-"})
    counters = snapshot.counters
    return (f"produced {snapshot.produced} ({rates.get('produced', 0):.0f}/s), processed "
            f"{counters.get('processed', 0)} ({rates.get('processed', 0):.0f}/s), "
            f"missing by seq {counters.get('missing_seq', 0)}, windows {counters.get('windows_emitted', 0)}, "
            f"alerts active {len(snapshot.alerts)} of {snapshot.alert_events} events, "
            f"dead letters {counters.get('dead_lettered', 0)}; "
            f"{totals.group} lag {totals.lag_entries} pending {totals.pending}, {owners} workers own partitions")


def rates_between(before: Snapshot | None, after: Snapshot) -> dict[str, float]:
    if before is None or after.taken_ms <= before.taken_ms:
        return {}
    seconds = (after.taken_ms - before.taken_ms) / 1000
    return {"produced": (after.produced - before.produced) / seconds,
            "processed": (after.counters.get("processed", 0) - before.counters.get("processed", 0)) / seconds}
