"""A partition's checkpoint: loaded by a new owner, and a batch's changes turned into a commit
request (the commit script's call, or the writes of a checked transaction).

The commit carries only what changed since the last one: the core state of each sensor the batch
touched and the rolling buckets it added to, the windows it emitted (kept for late readings), the outputs, counter increments and the entry ids to
acknowledge, and the rolling window's length (readers compute a sensor's rolling view from its
checkpoint: consumers/rolling_view.py). Every value is text or msgpack built here, so Redis
parses nothing it could misread.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from consumers.processor import Outputs, PartitionProcessor, ProcessingSettings
from consumers.rolling import RollingSpec
from consumers.sensor_state import SensorState, bucket_field, pack_bucket, pack_window, unpack_bucket
from consumers.windows import NONE
from telemetry.connection import as_text
from telemetry.keys import GroupKeys

_OUTPUT_KEY_INDEX = {"aggregates": "5", "alerts": "6", "dead-letter": "7"}  # KEYS positions in commit.lua


@dataclass(frozen=True, slots=True)
class Checkpoint:
    commit: int  # number of the last commit applied
    position: str | None  # last stream id it covered
    clock_ms: int
    sensors: dict[str, SensorState]



def load_checkpoint(db: redis.Redis, keys: GroupKeys, rolling: RollingSpec) -> Checkpoint:
    """Read with a bytes client (the state hash holds msgpack)."""
    pipeline = db.pipeline(transaction=True)  # one snapshot: no commit lands between the two reads
    pipeline.hgetall(keys.checkpoint)
    pipeline.hgetall(keys.state)
    meta_raw, state_raw = pipeline.execute()
    meta = {as_text(name): as_text(value) for name, value in meta_raw.items()}
    return Checkpoint(int(meta.get("commit", 0)), meta.get("position"), int(meta.get("clock", NONE)),
                      restore_sensors(state_raw, rolling))


def restore_sensors(fields: dict, rolling: RollingSpec) -> dict[str, SensorState]:
    """Sensor states from state-hash fields: each sensor's core, and such of its bucket fields
    (`sensor#slot`) as are given; a sensor whose core is absent is left out."""
    sensors: dict[str, SensorState] = {}
    buckets: list[tuple[str, bytes]] = []
    for name, packed in fields.items():
        if packed is None:
            continue
        sensor, hash_mark, _ = as_text(name).partition("#")
        if hash_mark:
            buckets.append((sensor, packed))
        else:
            sensors[sensor] = SensorState.unpack_core(packed)
    for sensor, packed in buckets:
        state = sensors.get(sensor)
        if state is not None:
            start, summary = unpack_bucket(packed)
            if not state.buckets or start < max(state.buckets):  # the core's newest bucket is the latest copy
                state.buckets[start] = summary
    for state in sensors.values():
        rolling.drop_stale(state)
    return sensors


@dataclass(frozen=True, slots=True)
class CommitRequest:
    """One commit, kept unchanged until Redis answers, so a resend is the same commit. Sent as the
    commit script's call, or as a plain transaction (consumers/commit_transaction.py)."""

    keys: GroupKeys
    token: str
    epoch: int
    commit: int
    position: str  # the last entry id covered, '' if none
    clock_ms: int
    rolling_ms: int
    output_maxlen: int
    state: list[str | bytes]  # field, value, ...
    windows: list[str | bytes]  # kept windows: field, value, ...
    counters: list[str]  # name, increment, ...
    ack: list[str]  # entry ids
    outputs: list[tuple[str, list[str]]]  # (kind: aggregates, alerts or dead-letter; fields)

    def script_call(self) -> tuple[list[str], list[str | bytes]]:
        """KEYS and ARGV of telemetry/lua/commit.lua."""
        keys = self.keys
        output_args: list[str] = []
        for kind, fields in self.outputs:
            output_args += [_OUTPUT_KEY_INDEX[kind], str(len(fields)), *fields]
        header = [self.token, str(self.epoch), str(self.commit), self.position, str(self.clock_ms), keys.group,
                  str(self.output_maxlen), str(self.rolling_ms), str(len(self.state)), str(len(self.windows)),
                  str(len(self.counters)), str(len(self.ack)), str(len(output_args))]
        return keys.commit_keys(), [*header, *self.state, *self.windows, *self.counters, *self.ack, *output_args]

    def checkpoint_fields(self) -> list[str]:
        position = ["position", self.position] if self.position else []
        return ["commit", str(self.commit), *position, "clock", str(self.clock_ms), "rolling_ms", str(self.rolling_ms)]


def commit_request(keys: GroupKeys, token: str, epoch: int, commit: int, processor: PartitionProcessor,
                   outputs: Outputs, meta: dict[str, str], output_maxlen: int) -> CommitRequest:
    """`meta`: fields every output entry carries (partition, epoch, batch, emitted_ms)."""
    settings: ProcessingSettings = processor.settings
    sensors = processor.sensors
    state_args: list[str | bytes] = []
    for sensor in outputs.changed_sensors:
        state_args += [sensor, sensors[sensor].pack_core()]
    for sensor, start in sorted(outputs.changed_buckets):
        buckets = sensors[sensor].buckets
        if start in buckets and start != max(buckets):  # else it left the window, or the core holds it
            state_args += [bucket_field(sensor, settings.rolling.slot(start)), pack_bucket(start, buckets[start])]
    window_args: list[str | bytes] = []
    for (sensor, start), window in outputs.closed_windows.items():
        window_args += [bucket_field(sensor, settings.window_slot(start)), pack_window(window)]
    counter_args: list[str] = []
    for name, value in sorted(outputs.counters.items()):
        if value:
            counter_args += [name, str(int(value))]
    meta_fields = [part for item in meta.items() for part in item]
    output_entries = [(kind, record.fields() + meta_fields)
                      for kind, records in (("aggregates", outputs.aggregates), ("alerts", outputs.alerts),
                                            ("dead-letter", outputs.dead_letters))
                      for record in records]
    position = outputs.entry_ids[-1] if outputs.entry_ids else ""  # ids are kept in stream order
    return CommitRequest(keys, token, epoch, commit, position, processor.clock_ms, settings.rolling.rolling_ms,
                         output_maxlen, state_args, window_args, counter_args, outputs.entry_ids, output_entries)
