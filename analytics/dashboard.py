"""A snapshot of the running pipeline, and two ways to show it: a rich live view or plain text."""

from __future__ import annotations

from dataclasses import dataclass, field

import redis
from rich.console import Group
from rich.table import Table
from rich.text import Text

from telemetry.keys import Keys
from telemetry.lag import GroupLag, group_lags
from telemetry.timeutil import iso_utc, now_ms


@dataclass(frozen=True, slots=True)
class SensorView:
    sensor: str
    latest_ts: int | None
    temperature_c: float | None
    humidity_pct: float | None
    rolling: dict[str, str]
    produced: int


@dataclass(frozen=True, slots=True)
class ActiveAlert:
    alert_id: str
    rule: str
    sensor: str
    severity: str
    since_ms: int
    value: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    taken_ms: int
    sensors: tuple[SensorView, ...]
    alerts: tuple[ActiveAlert, ...]
    alert_events: int
    groups: tuple[GroupLag, ...]
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def produced(self) -> int:
        return sum(view.produced for view in self.sensors)


def collect_snapshot(db: redis.Redis, keys: Keys, sensors: list[str]) -> Snapshot:
    latest: dict[str, dict] = {}
    for _, fields in db.xrevrange(keys.readings, count=50 * len(sensors)):
        latest.setdefault(fields.get("sensor", ""), fields)
    produced = db.hmget(keys.producer_seq, sensors) if sensors else []
    views = []
    for sensor, seq in zip(sensors, produced):
        fields = latest.get(sensor, {})
        views.append(SensorView(
            sensor, int(fields["ts"]) if "ts" in fields else None,
            float(fields["temperature_c"]) if "temperature_c" in fields else None,
            float(fields["humidity_pct"]) if "humidity_pct" in fields else None,
            db.hgetall(keys.rolling(sensor)), int(seq) + 1 if seq is not None else 0))
    state: dict[str, dict] = {}
    events = db.xrange(keys.alerts)
    for _, fields in events:
        state[fields["alert_id"]] = fields
    active = tuple(ActiveAlert(a["alert_id"], a["rule"], a["sensor"], a["severity"], int(a["ts"]), a["value"])
                   for a in state.values() if a["state"] == "firing")
    counters = {name: int(value) for name, value in db.hgetall(keys.counters).items()}
    return Snapshot(now_ms(), tuple(views), active, len(events), tuple(group_lags(db, keys.readings)), counters)


def _number(value: str | float | None, digits: int = 1) -> str:
    if value in (None, ""):
        return "-"
    return f"{float(value):.{digits}f}"


def render(snapshot: Snapshot, rates: dict[str, float]) -> Group:
    sensors = Table(title="sensors: latest reading | rolling window", expand=True)
    sensors.add_column("sensor", no_wrap=True)
    for column in ("time", "°C", "%RH", "n", "°C mean", "std", "min", "max", "%RH mean", "sent"):
        sensors.add_column(column, justify="right", no_wrap=True)
    for view in snapshot.sensors:
        rolling = view.rolling
        sensors.add_row(
            view.sensor, iso_utc(view.latest_ts)[11:19] if view.latest_ts else "-", _number(view.temperature_c),
            _number(view.humidity_pct), rolling.get("count", "-"), _number(rolling.get("temperature_c_mean"), 2),
            _number(rolling.get("temperature_c_std"), 2), _number(rolling.get("temperature_c_min")),
            _number(rolling.get("temperature_c_max")), _number(rolling.get("humidity_pct_mean")), str(view.produced))
    alerts = Table(title=f"active alerts ({snapshot.alert_events} alert events so far)", expand=True)
    for column in ("severity", "rule", "sensor", "since", "value"):
        alerts.add_column(column)
    for alert in sorted(snapshot.alerts, key=lambda a: a.since_ms):
        style = "bold red" if alert.severity == "critical" else "yellow"
        alerts.add_row(Text(alert.severity, style=style), alert.rule, alert.sensor, iso_utc(alert.since_ms)[11:19],
                       alert.value)
    groups = Table(title="consumer groups", expand=True)
    for column in ("group", "lag", "lag s", "pending", "consumers"):
        groups.add_column(column)
    for lag in snapshot.groups:
        groups.add_row(lag.group, str(lag.lag_entries), f"{lag.lag_seconds:.1f}", str(lag.pending),
                       ", ".join(f"{c.name} ({c.pending})" for c in lag.consumers))
    throughput = Text(f"produced {rates.get('produced', 0):,.0f}/s   processed {rates.get('processed', 0):,.0f}/s   "
                      f"windows {snapshot.counters.get('windows_emitted', 0)}   "
                      f"dead letters {snapshot.counters.get('dead_lettered', 0)}   "
                      f"late {snapshot.counters.get('late', 0)}   lost to trim {snapshot.counters.get('lost_to_trim', 0)}   "
                      f"missing by seq {snapshot.counters.get('missing_seq', 0)}")
    return Group(sensors, alerts, groups, throughput)


def plain_summary(snapshot: Snapshot, rates: dict[str, float]) -> str:
    groups = "; ".join(f"{lag.group} lag {lag.lag_entries} pending {lag.pending}" for lag in snapshot.groups)
    return (f"produced {snapshot.produced} ({rates.get('produced', 0):.0f}/s), processed "
            f"{snapshot.counters.get('processed', 0)} ({rates.get('processed', 0):.0f}/s), "
            f"windows {snapshot.counters.get('windows_emitted', 0)}, alerts active {len(snapshot.alerts)} "
            f"of {snapshot.alert_events} events, dead letters {snapshot.counters.get('dead_lettered', 0)}; {groups}")


def rates_between(before: Snapshot | None, after: Snapshot) -> dict[str, float]:
    if before is None or after.taken_ms <= before.taken_ms:
        return {}
    seconds = (after.taken_ms - before.taken_ms) / 1000
    return {"produced": (after.produced - before.produced) / seconds,
            "processed": (after.counters.get("processed", 0) - before.counters.get("processed", 0)) / seconds}
