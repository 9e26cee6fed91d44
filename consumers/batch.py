"""Turns raw stream entries into one commit: valid readings per sensor, dead letters, lost entries.

Nothing here talks to Redis, so the sorting of good from bad input is unit-tested directly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from telemetry.keys import Keys
from telemetry.schema import FieldMap, Reading, SchemaError


@dataclass(frozen=True, slots=True)
class DeadLetter:
    entry_id: str
    reason: str
    fields: dict[str, str]


@dataclass(slots=True)
class CommitBatch:
    """One batch as the aggregate script's commit mode takes it; entry ids keep stream order."""

    entry_ids: list[str] = field(default_factory=list)
    readings: dict[str, list[tuple[str, Reading]]] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    lost_ids: list[str] = field(default_factory=list)  # trimmed away while pending

    def __len__(self) -> int:
        return len(self.entry_ids)

    def script_keys(self, keys: Keys) -> list[str]:
        base = [keys.readings, keys.dead_letter, keys.aggregates, keys.alerts, keys.sensor_state,
                keys.counters, keys.sensor_due]
        for sensor in self.readings:
            base += [keys.recent(sensor), keys.rolling(sensor)]
        return base

    def script_args(self) -> list:
        args: list = [self.entry_ids[0], self.entry_ids[-1], len(self.readings)]
        for sensor, items in self.readings.items():
            args += [sensor, len(items)]
            for entry_id, reading in items:
                args += [entry_id, reading.ts_ms, repr(reading.temperature_c), repr(reading.humidity_pct),
                         "-" if reading.seq is None else reading.seq]
        args.append(len(self.dead_letters))
        for dead in self.dead_letters:
            args += [dead.entry_id, dead.reason, json.dumps(dead.fields, sort_keys=True)]
        args.append(len(self.lost_ids))
        args += self.lost_ids
        return args


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """A batch ready to commit, and how long decoding it took (part of the batch-time metric)."""

    batch: CommitBatch
    decode_seconds: float


def build_batch(entries: list[tuple[str, dict[str, str] | None]], field_map: FieldMap, now_ms: int,
                max_skew_ms: int, delivery_counts: dict[str, int] | None = None,
                max_deliveries: int = 0) -> CommitBatch:
    """Sort entries into readings, dead letters (with a reason naming the field) and lost ones."""
    batch = CommitBatch()
    for entry_id, fields in entries:
        batch.entry_ids.append(entry_id)
        if not fields:
            batch.lost_ids.append(entry_id)
            continue
        deliveries = (delivery_counts or {}).get(entry_id, 1)
        if max_deliveries and deliveries > max_deliveries:
            batch.dead_letters.append(DeadLetter(entry_id, f"max-deliveries: delivered {deliveries} times", fields))
            continue
        try:
            reading = Reading.decode(fields, entry_id, field_map)
        except SchemaError as error:
            batch.dead_letters.append(DeadLetter(entry_id, f"malformed: {error}", fields))
            continue
        if reading.ts_ms > now_ms + max_skew_ms:
            batch.dead_letters.append(DeadLetter(
                entry_id, f"future: ts={reading.ts_ms} is {(reading.ts_ms - now_ms) / 1000:.0f}s ahead of the "
                          f"worker clock (max skew {max_skew_ms / 1000:.0f}s)", fields))
            continue
        batch.readings.setdefault(reading.sensor, []).append((entry_id, reading))
    return batch
