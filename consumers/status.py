"""What an operator asks first: how long are the streams, who owns each partition, who is behind,
what is stuck, what was lost. Totals first, then one row per partition for the configured group,
then any other group found on the partition streams."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass

import redis

from telemetry.bridge_status import bridge_statuses, written_totals
from telemetry.connection import Client, is_cluster
from telemetry.keys import GroupKeys
from telemetry.lag import ConsumerInfo, GroupLag, PartitionLag, partition_lags
from telemetry.notify_status import NotifyGroupStatus, notify_statuses, render_notify
from telemetry.partitions import Layout, partition_maxlen
from telemetry.timeutil import now_ms, stream_id_key, stream_id_ms

IDLE_WARNING_MS = 60_000


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    index: int
    stream: str
    owner: str  # the lease's token (consumer:hex); "-" when no worker holds the partition
    epoch: int  # bumped by every takeover; 0 when never owned
    length: int
    lag_entries: int | None  # None: the group does not exist on this stream yet
    lag_seconds: float
    lag_estimated: bool
    pending: int
    master: str | None = None  # on a cluster, the master (host:port) that holds the partition's slot


@dataclass(frozen=True, slots=True)
class GroupTotals:
    """A group over every partition stream it exists on."""

    group: str
    partitions: int
    lag_entries: int
    lag_seconds: float  # age of the oldest unread entry of any partition
    pending: int
    lag_estimated: bool

    @classmethod
    def of(cls, group: str, lags: list[GroupLag]) -> GroupTotals:
        return cls(group, len(lags), sum(lag.lag_entries for lag in lags),
                   max((lag.lag_seconds for lag in lags), default=0.0), sum(lag.pending for lag in lags),
                   any(lag.lag_estimated for lag in lags))


@dataclass(frozen=True, slots=True)
class PipelineStatus:
    namespace: str
    group: str
    length: int
    first_entry_age_s: float | None
    last_entry_age_s: float | None
    maxlen: int  # the pipeline's total, as the producers are given it
    partition_maxlen: int  # what each partition stream keeps
    totals: GroupTotals
    partitions: tuple[PartitionStatus, ...]
    other_groups: tuple[GroupTotals, ...]
    dead_letter_count: int
    counters: dict[str, int]
    warnings: tuple[str, ...]
    mqtt_bridges: tuple[dict, ...] = ()  # each MQTT bridge's last status (telemetry/bridge_status.py)
    mqtt_totals: dict[str, int] | None = None  # what the bridges wrote, exactly; None: no bridge ran
    notify: tuple[NotifyGroupStatus, ...] = ()  # the notifier groups on the alert streams, per sink

    def as_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


@dataclass(frozen=True, slots=True)
class _GroupState:
    """What the group keeps per partition besides the stream: owner, epoch, counters, dead letters."""

    owner: str
    epoch: int
    counters: dict[str, str]
    dead_letters: int


def _group_states(db: redis.Redis, groups: list[GroupKeys]) -> list[_GroupState]:
    """One round trip for every partition (keys of several slots: a pipeline, not MGET)."""
    pipeline = db.pipeline(transaction=False)
    for keys in groups:
        pipeline.get(keys.lease).get(keys.epoch).hgetall(keys.counters).xlen(keys.dead_letter)
    replies = pipeline.execute()
    return [_GroupState(lease or "-", int(epoch or 0), counters, dead)
            for lease, epoch, counters, dead in zip(*[iter(replies)] * 4)]


def _partition_row(lag: PartitionLag, group: str, state: _GroupState, master: str | None) -> PartitionStatus:
    found = lag.group(group)
    length = lag.info.length if lag.info else 0
    if found is None:
        return PartitionStatus(lag.index, lag.stream, state.owner, state.epoch, length, None, 0.0, False, 0, master)
    return PartitionStatus(lag.index, lag.stream, state.owner, state.epoch, length, found.lag_entries,
                           found.lag_seconds, found.lag_estimated, found.pending, master)


def _master_of(db: Client, key: str) -> str | None:
    return db.get_node_from_key(key).name if is_cluster(db) else None


def _indexes(indexes: list[int]) -> str:
    return ("partition " if len(indexes) == 1 else "partitions ") + ", ".join(map(str, indexes))


def _trim_warnings(lags: list[PartitionLag], limit: int) -> list[str]:
    """Per group, the partitions whose lag passes half of a partition's MAXLEN."""
    over: dict[str, list[tuple[int, int]]] = {}  # group -> (partition, lag)
    for partition in lags:
        for lag in partition.groups:
            if limit and lag.lag_entries > limit // 2:
                over.setdefault(lag.group, []).append((partition.index, lag.lag_entries))
    return [f"group {group!r} lags up to {max(n for _, n in found)} entries on {_indexes([i for i, _ in found])}, "
            f"over half of a partition's MAXLEN {limit}: trimming will delete readings it has not read"
            for group, found in over.items()]


def _idle_warnings(lags: list[PartitionLag]) -> list[str]:
    """A consumer that holds pending entries and has not read for a minute is probably dead."""
    held: dict[tuple[str, str], list[tuple[int, ConsumerInfo]]] = {}  # (group, consumer) -> (partition, info)
    for partition in lags:
        for lag in partition.groups:
            for consumer in lag.consumers:
                if consumer.pending and consumer.idle_ms > IDLE_WARNING_MS:
                    held.setdefault((lag.group, consumer.name), []).append((partition.index, consumer))
    return [f"consumer {name!r} in {group!r} holds {sum(c.pending for _, c in found)} pending entries on "
            f"{_indexes([i for i, _ in found])} and has been idle {max(c.idle_ms for _, c in found) / 1000:.0f}s "
            "(dead? the worker that takes its partitions over processes them)"
            for (group, name), found in held.items()]


def _counter_warnings(counters: dict[str, int]) -> list[str]:
    """One line per loss, each lost reading counted once: readings with a seq are counted by the gaps
    they leave (`missing_seq`, per sensor in `analytics report`), whether a sensor dropped them or
    MAXLEN trimmed them before or after the group read them; entries trimmed while pending
    (`lost_to_trim`) are named as the cause, not added again."""
    warnings = []
    missing, trimmed = counters.get("missing_seq", 0), counters.get("lost_to_trim", 0)
    if missing > 0:
        cause = f"; {trimmed} entries were trimmed by MAXLEN while pending" if trimmed else ""
        warnings.append(f"{missing} readings are missing by seq: dropped before Redis, or trimmed by MAXLEN before "
                        f"the group processed them{cause} (analytics report shows which sensors)")
    elif trimmed:
        warnings.append(f"{trimmed} readings were trimmed by MAXLEN while pending, before the group processed them")
    too_late = counters.get("too_late", 0)
    if too_late:
        warnings.append(f"{too_late} readings came later than --allowed-lateness behind their sensor's newest and "
                        "were dead-lettered, not counted in their windows (analytics report shows which sensors)")
    return warnings


def _sum_counters(states: list[_GroupState]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for state in states:
        total.update({name: int(value) for name, value in state.counters.items()})
    return dict(total)


def collect_status(db: redis.Redis, layout: Layout, group: str, maxlen: int, *, now: int | None = None
                   ) -> PipelineStatus:
    """`maxlen`: the producers' --maxlen, the pipeline's total; each partition keeps its share."""
    reference = now_ms() if now is None else now
    lags = partition_lags(db, layout.partitions, now=reference)
    states = _group_states(db, layout.groups(group))
    limit = partition_maxlen(maxlen, layout.count)
    counters = _sum_counters(states)
    others = sorted({lag.group for partition in lags for lag in partition.groups} - {group})
    infos = [partition.info for partition in lags if partition.info and partition.info.first_id]

    def age(entry_id: str | None) -> float | None:
        return None if entry_id is None else round((reference - stream_id_ms(entry_id)) / 1000, 3)

    def totals(name: str) -> GroupTotals:
        return GroupTotals.of(name, [lag for partition in lags if (lag := partition.group(name))])

    return PipelineStatus(
        namespace=layout.keys.namespace_tag, group=group,
        length=sum(partition.info.length for partition in lags if partition.info),
        first_entry_age_s=age(min((i.first_id for i in infos), key=stream_id_key, default=None)),
        last_entry_age_s=age(max((i.last_id for i in infos), key=stream_id_key, default=None)),
        maxlen=maxlen, partition_maxlen=limit, totals=totals(group),
        partitions=tuple(_partition_row(lag, group, state, _master_of(db, lag.stream))
                         for lag, state in zip(lags, states)),
        other_groups=tuple(totals(name) for name in others),
        dead_letter_count=sum(state.dead_letters for state in states), counters=counters,
        warnings=tuple(_trim_warnings(lags, limit) + _idle_warnings(lags) + _counter_warnings(counters)),
        notify=tuple(notify_statuses(db, layout.keys, [keys.alerts for keys in layout.groups(group)])),
        **_mqtt_status(db, layout))


def _mqtt_status(db: redis.Redis, layout: Layout) -> dict:
    bridges = tuple(bridge_statuses(db, layout.keys))
    return {"mqtt_bridges": bridges, "mqtt_totals": written_totals(db, layout) if bridges else None}


def _bridge_line(bridge: dict) -> str:
    if "received" not in bridge:
        return f"mqtt bridge {bridge['client_id']}: no status (stopped without a word, or away from Redis)"
    state = "stopped" if not bridge["running"] else "connected" if bridge["connected"] else "DISCONNECTED"
    return (f"mqtt bridge {bridge['client_id']} ({bridge['broker']}): {state}, received {bridge['received']}, "
            f"written {bridge['written']}, duplicates {bridge['duplicates']}, retained skipped "
            f"{bridge['retained_skipped']}, dead-lettered {bridge['dead_lettered']}, in flight "
            f"{bridge['in_flight']} of {bridge['max_in_flight']}")


def _age(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s ago"


def _totals_line(label: str, totals: GroupTotals, partitions: int) -> str:
    if not totals.partitions:
        return f"{label} {totals.group}: not on any partition stream yet (no worker has started)"
    estimated = " (estimated)" if totals.lag_estimated else ""
    return (f"{label} {totals.group}: lag {totals.lag_entries} entries{estimated} / {totals.lag_seconds:.1f}s, "
            f"pending {totals.pending}, on {totals.partitions} of {partitions} partitions")


def _partition_line(row: PartitionStatus) -> str:
    lag = "-" if row.lag_entries is None else f"{row.lag_entries}{'~' if row.lag_estimated else ''}"
    master = f"  {row.master}" if row.master else ""
    return (f"  {row.index:>9}  {row.owner:<32} {row.epoch:>6} {row.length:>9} {lag:>9} {row.lag_seconds:>8.1f} "
            f"{row.pending:>8}{master}")


def render_status(status: PipelineStatus) -> str:
    count = len(status.partitions)
    maxlen = f"MAXLEN {status.maxlen} in all, {status.partition_maxlen} each" if status.maxlen else "MAXLEN off"
    lines = [(f"pipeline {status.namespace}: {count} partitions, {status.length} entries ({maxlen}), "
              f"first {_age(status.first_entry_age_s)}, last {_age(status.last_entry_age_s)}"),
             _totals_line("group", status.totals, count),
             f"  {'partition':>9}  {'owner':<32} {'epoch':>6} {'length':>9} {'lag':>9} {'lag s':>8} {'pending':>8}"
             + ("  master" if status.partitions and status.partitions[0].master else "")]
    lines += [_partition_line(row) for row in status.partitions]
    lines += [_totals_line("other group", totals, count) for totals in status.other_groups]
    lines.append(f"dead letters: {status.dead_letter_count}")
    if status.counters:
        lines.append("counters: " + ", ".join(f"{name} {value}" for name, value in sorted(status.counters.items())))
    lines += [_bridge_line(bridge) for bridge in status.mqtt_bridges]
    if status.mqtt_totals is not None:
        lines.append(f"mqtt, all bridges: written {status.mqtt_totals['written']}, "
                     f"duplicates skipped {status.mqtt_totals['duplicates']}")
    lines += [line for notify in status.notify for line in render_notify(notify)]
    lines += [f"WARNING: {warning}" for warning in status.warnings]
    return "\n".join(lines)
