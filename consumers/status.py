"""What an operator asks first: how long is the stream, who is behind, what is stuck, what was lost."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import redis

from telemetry.keys import Keys
from telemetry.lag import GroupLag, group_lags, stream_info
from telemetry.timeutil import now_ms, stream_id_ms


@dataclass(frozen=True, slots=True)
class PipelineStatus:
    stream: str
    length: int
    first_entry_age_s: float | None
    last_entry_age_s: float | None
    maxlen: int
    groups: tuple[GroupLag, ...]
    dead_letter_count: int
    counters: dict[str, int]
    warnings: tuple[str, ...]

    def as_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def collect_status(db: redis.Redis, keys: Keys, maxlen: int, *, now: int | None = None) -> PipelineStatus:
    reference = now_ms() if now is None else now
    info = stream_info(db, keys.readings)
    lags = tuple(group_lags(db, keys.readings, now=reference)) if info else ()
    counters = {name: int(value) for name, value in db.hgetall(keys.counters).items()}
    warnings = []
    for lag in lags:
        if maxlen and lag.lag_entries > maxlen // 2:
            warnings.append(f"group {lag.group!r} lags {lag.lag_entries} entries, over half of MAXLEN {maxlen}: "
                            "trimming will delete readings it has not read")
        for consumer in lag.consumers:
            if consumer.pending and consumer.idle_ms > 60_000:
                warnings.append(f"consumer {consumer.name!r} in {lag.group!r} holds {consumer.pending} pending "
                                f"entries and has been idle {consumer.idle_ms / 1000:.0f}s (dead? they will be claimed)")
    if counters.get("lost_to_trim"):
        warnings.append(f"{counters['lost_to_trim']} readings were trimmed by MAXLEN while pending, before a group "
                        "processed them")
    if counters.get("missing_seq", 0) > 0:
        warnings.append(f"{counters['missing_seq']} readings are missing by seq: dropped before Redis, or trimmed by "
                        "MAXLEN before the group read them (analytics report shows which sensors)")

    def age(entry_id: str | None) -> float | None:
        return None if entry_id is None else round((reference - stream_id_ms(entry_id)) / 1000, 3)

    return PipelineStatus(
        stream=keys.readings, length=info.length if info else 0,
        first_entry_age_s=age(info.first_id) if info else None, last_entry_age_s=age(info.last_id) if info else None,
        maxlen=maxlen, groups=lags, dead_letter_count=db.xlen(keys.dead_letter), counters=counters,
        warnings=tuple(warnings))


def render_status(status: PipelineStatus) -> str:
    def age(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}s ago"

    lines = [(f"stream {status.stream}: {status.length} entries (MAXLEN {status.maxlen or 'off'}), "
              f"first {age(status.first_entry_age_s)}, last {age(status.last_entry_age_s)}")]
    if not status.groups:
        lines.append("  no consumer groups")
    for lag in status.groups:
        estimated = " (estimated)" if lag.lag_estimated else ""
        lines.append(f"  group {lag.group}: lag {lag.lag_entries} entries{estimated} / {lag.lag_seconds:.1f}s, "
                     f"pending {lag.pending}, last delivered {lag.last_delivered_id}")
        for consumer in lag.consumers:
            lines.append(f"    consumer {consumer.name:<28} pending {consumer.pending:<7} idle {consumer.idle_ms / 1000:.1f}s")
    lines.append(f"dead letters: {status.dead_letter_count}")
    if status.counters:
        lines.append("counters: " + ", ".join(f"{name} {value}" for name, value in sorted(status.counters.items())))
    lines += [f"WARNING: {warning}" for warning in status.warnings]
    return "\n".join(lines)
