"""Consumer groups as an operator manages them: list, start over from a position, delete, prune.

A group is more than the Redis consumer group on each partition stream: it owns per-partition
state, outputs, counters, leases and epochs (telemetry/keys.py). Resetting the read position alone
would replay readings into state that has already counted them, so `reset` starts the group over:
it deletes the group's state, outputs and counters with the position. Both `reset` and `delete`
refuse while a worker holds a partition's lease: stop the workers first. Epochs stay, even on
`delete`: they only grow.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from telemetry.errors import UsageError
from telemetry.keys import GroupKeys
from telemetry.partitions import Layout


@dataclass(frozen=True, slots=True)
class GroupSummary:
    name: str
    partitions: int  # partitions whose stream has this group
    consumers: int
    pending: int
    lag: int | None  # None where Redis cannot tell (it cannot after deletions in the unread range)
    workers: int  # live members


def list_groups(db: redis.Redis, layout: Layout) -> list[GroupSummary]:
    found: dict[str, dict] = {}
    for partition in layout.partitions:
        try:
            groups = db.xinfo_groups(partition.readings)
        except redis.ResponseError:
            continue  # no stream yet
        for group in groups:
            totals = found.setdefault(group["name"], {"partitions": 0, "consumers": 0, "pending": 0, "lag": 0})
            totals["partitions"] += 1
            totals["consumers"] += group["consumers"]
            totals["pending"] += group["pending"]
            lag = group.get("lag")
            totals["lag"] = None if lag is None or totals["lag"] is None else totals["lag"] + lag
    return [GroupSummary(name, totals["partitions"], totals["consumers"], totals["pending"], totals["lag"],
                         db.zcard(layout.keys.members(name)))
            for name, totals in sorted(found.items())]


def _refuse_while_owned(db: redis.Redis, groups: list[GroupKeys], action: str) -> None:
    owners = {db.get(keys.lease) for keys in groups} - {None}
    if owners:
        raise UsageError(f"cannot {action} group {groups[0].group!r} while workers own partitions "
                         f"({', '.join(sorted(owner.rsplit(':', 1)[0] for owner in owners))}): stop them first")


def _group_keys(keys: GroupKeys) -> list[str]:
    """All but the epoch: it only grows, so that a worker of the group before, paused past its
    lease, can never present the epoch of an owner after the reset."""
    return [keys.lease, keys.checkpoint, keys.state, keys.windows, keys.aggregates, keys.alerts, keys.dead_letter,
            keys.counters]


def create_group(db: redis.Redis, layout: Layout, group: str, position: str) -> int:
    """Create the group at `position` on every partition stream where it is missing (the stream
    too); an existing group keeps its position. Returns the partitions where it was created."""
    stream_id = {"start": "0", "end": "$"}.get(position, position)
    created = 0
    for keys in layout.groups(group):
        try:
            db.xgroup_create(keys.readings, group, id=stream_id, mkstream=True)
            created += 1
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise UsageError(f"--to {position}: {error}") from None
    return created


def reset_group(db: redis.Redis, layout: Layout, group: str, position: str) -> int:
    """Start the group over from `position` (`start`, `end`, or a stream id) on every partition;
    its state, outputs and counters go. Returns the partitions reset."""
    stream_id = {"start": "0", "end": "$"}.get(position, position)
    groups = layout.groups(group)
    _refuse_while_owned(db, groups, "reset")
    reset = 0
    for keys in groups:
        db.delete(*_group_keys(keys))
        try:
            try:
                db.xgroup_setid(keys.readings, group, stream_id)
            except redis.ResponseError as error:
                if "NOGROUP" not in str(error) and "no such key" not in str(error).lower():
                    raise
                db.xgroup_create(keys.readings, group, id=stream_id, mkstream=True)
        except redis.ResponseError as error:
            raise UsageError(f"--to {position}: {error}") from None
        reset += 1
    return reset


def delete_group(db: redis.Redis, layout: Layout, group: str) -> int:
    """Destroy the group on every partition stream and delete its keys; returns the partitions it was on."""
    groups = layout.groups(group)
    _refuse_while_owned(db, groups, "delete")
    destroyed = 0
    for keys in groups:
        db.delete(*_group_keys(keys))
        if db.exists(keys.readings):
            destroyed += int(db.xgroup_destroy(keys.readings, group))
    db.delete(layout.keys.members(group))
    return destroyed


def prune_consumers(db: redis.Redis, layout: Layout, group: str) -> int:
    """Delete the group's consumers that hold nothing pending (dead workers' names); returns how many."""
    pruned = 0
    for partition in layout.partitions:
        try:
            consumers = db.xinfo_consumers(partition.readings, group)
        except redis.ResponseError:
            continue
        for consumer in consumers:
            if consumer["pending"] == 0:
                db.xgroup_delconsumer(partition.readings, group, consumer["name"])
                pruned += 1
    return pruned
