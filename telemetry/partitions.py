"""Which partition a sensor's readings go to, and the pipeline record that fixes it.

A sensor goes to partition CRC32(UTF-8 name) mod P, the same in every process and language
(Python's `hash()` of a str is salted per process). P and the hash are stored in Redis when a
pipeline is created; a process asked for another P refuses to start, because moving sensors
between partitions would split their state. Each partition's hash tag is chosen so that its
cluster slot falls in the partition's share of the 16,384 slots: P partitions then spread
evenly over masters whose slot ranges are even, as `redis-cli --cluster create` makes them.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import redis

from telemetry.connection import as_text
from telemetry.errors import UsageError
from telemetry.keys import GroupKeys, Keys, PartitionKeys
from telemetry.refusals import AclRefusal

HASH_NAME = "crc32"
DEFAULT_PARTITIONS = 16
MAX_PARTITIONS = 1024
CLUSTER_SLOTS = 16384


def crc16(data: bytes) -> int:
    """CRC16-XMODEM, as Redis Cluster hashes keys to slots."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def key_slot(tag: str) -> int:
    return crc16(tag.encode()) % CLUSTER_SLOTS


def partition_of(sensor: str, partitions: int) -> int:
    return zlib.crc32(sensor.encode()) % partitions


def spread_tag(prefix: str, index: int, partitions: int) -> str:
    """`prefix:pN` plus the first suffix that puts the tag's slot in partition N's share of slots."""
    low, high = index * CLUSTER_SLOTS // partitions, (index + 1) * CLUSTER_SLOTS // partitions
    base = f"{prefix}:p{index}"
    for suffix in range(100_000):
        tag = f"{base}.{suffix}"
        if low <= key_slot(tag) < high:
            return tag
    raise AssertionError("no tag found for a slot range")  # 16,384 / P slots are always reachable


@dataclass(frozen=True, slots=True)
class Layout:
    """A pipeline's partitions, as stored in its pipeline record."""

    keys: Keys
    partitions: tuple[PartitionKeys, ...]

    @property
    def count(self) -> int:
        return len(self.partitions)

    def partition_for(self, sensor: str) -> PartitionKeys:
        return self.partitions[partition_of(sensor, len(self.partitions))]

    def groups(self, group: str) -> list[GroupKeys]:
        return [partition.group(group) for partition in self.partitions]


def _layout_from_record(keys: Keys, record: dict[str, str]) -> Layout:
    count = int(record["partitions"])
    tags = record["tags"].split(",")
    if record.get("hash") != HASH_NAME or len(tags) != count:
        raise UsageError(f"pipeline record {keys.pipeline} is not one this version reads "
                         f"(hash {record.get('hash')!r}, {len(tags)} tags for {count} partitions)")
    return Layout(keys, tuple(keys.partition(index, tag) for index, tag in enumerate(tags)))


def new_layout(keys: Keys, partitions: int) -> Layout:
    if keys.readings_override:
        if partitions != 1:
            raise UsageError(f"--partitions {partitions}: a stream given with --stream is one partition")
        return Layout(keys, (keys.partition(0, keys.namespace_tag),))
    if not 1 <= partitions <= MAX_PARTITIONS:
        raise UsageError(f"--partitions {partitions}: expected 1..{MAX_PARTITIONS}")
    return Layout(keys, tuple(keys.partition(index, spread_tag(keys.prefix, index, partitions))
                              for index in range(partitions)))


_CREATE_IF_ABSENT = """
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('HSET', KEYS[1], unpack(ARGV)) end
return redis.call('HGETALL', KEYS[1])
"""


def open_layout(db: redis.Redis, keys: Keys, requested: int | None = None, *, create: bool = True) -> Layout:
    """The stored layout, created on first use in one atomic step, so processes starting at once agree.

    `requested` is --partitions: None takes whatever is stored (or the default for a new
    pipeline); a number that differs from the stored one is refused. Readers pass create=False:
    with no pipeline yet they get the layout a writer would create, and store nothing, so a
    `status` run first does not fix the partition count for the producers that follow.
    """
    default = 1 if keys.readings_override else DEFAULT_PARTITIONS
    layout = new_layout(keys, requested if requested is not None else default)
    stored = {as_text(name): as_text(value) for name, value in db.hgetall(keys.pipeline).items()}
    if not stored:
        if not create:
            return layout
        stored = _create_record(db, keys, layout)
    existing = _layout_from_record(keys, stored)
    if requested is not None and existing.count != requested:
        raise UsageError(f"--partitions {requested}: pipeline {keys.namespace_tag!r} has {existing.count} partitions; "
                         "changing it is an offline migration (use another --prefix for a new pipeline)")
    return existing


def _create_record(db: redis.Redis, keys: Keys, layout: Layout) -> dict[str, str]:
    """The record as stored: this one, or the one another process created first. Only users
    allowed to write the record create it (the `admin` role: telemetry/roles.py); the others
    read it, so a producer cannot rewrite a pipeline."""
    record = ["partitions", str(layout.count), "hash", HASH_NAME,
              "tags", ",".join(partition.tag for partition in layout.partitions)]
    try:
        flat = db.eval(_CREATE_IF_ABSENT, 1, keys.pipeline, *record)
    except redis.exceptions.NoPermissionError:
        raise AclRefusal(f"pipeline {keys.namespace_tag!r} does not exist yet (no {keys.pipeline}), and this Redis "
                         "user may not create it: create it as the admin role (`python -m consumers group create`)"
                         ) from None
    return {as_text(name): as_text(value) for name, value in zip(flat[::2], flat[1::2])}


def legacy_layout_note(db: redis.Redis, keys: Keys) -> str | None:
    """One line when data of the single-stream layout is found; it is not migrated."""
    if keys.readings_override or not db.exists(keys.legacy_readings):
        return None
    return (f"note: {keys.legacy_readings} holds readings of the layout before partitions; this version does "
            "not read or migrate them (export them with an older version, or delete the key)")


def partition_maxlen(maxlen: int, partitions: int) -> int:
    """--maxlen is the pipeline's total; each partition stream keeps its share, rounded up."""
    return -(-maxlen // partitions) if maxlen else 0


def pipeline_keys(db: redis.Redis, layout: Layout) -> list[str]:
    """Every key of the pipeline: those under its partitions' hash tags and its namespace's. A
    stream given verbatim with --stream is the user's, outside the tags, and not listed."""
    tags = dict.fromkeys([layout.keys.namespace_tag, *(partition.tag for partition in layout.partitions)])
    return [as_text(key) for tag in tags for key in db.scan_iter(match=f"{{{_glob_escape(tag)}}}:*", count=1000)]


def _glob_escape(text: str) -> str:
    """A tag from --stream may hold characters that SCAN MATCH reads as a pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def delete_pipeline(db: redis.Redis, layout: Layout) -> int:
    """Delete every key `pipeline_keys` finds; returns how many were deleted."""
    found = pipeline_keys(db, layout)
    return sum(db.delete(*found[start:start + 1000]) for start in range(0, len(found), 1000))
