"""What one round trip says of the partitions a worker holds, after a doubt: a lost reply, a
dropped connection, a lease whose renewals went unanswered.

For each partition: whether the epoch and the lease token are still the worker's (or the lease
lapsed while nobody took the partition: the epoch is still the worker's), whether the checkpoint's
commit number is the worker's last (its commits are resent until answered, so anything else means
the stored state moved: a rollback of Redis), and which entries a read whose reply was lost
delivered to the worker (pending to it past the last entry it saw). Where the partition is still
the worker's and its commit stands, the in-memory state is exact and the worker goes on with it.
"""

from __future__ import annotations

from dataclasses import dataclass

from consumers.lease import still_held
from telemetry.connection import Client, as_text
from telemetry.keys import GroupKeys


@dataclass(frozen=True, slots=True)
class Held:
    """What the worker believes of one partition it holds."""

    index: int
    keys: GroupKeys
    epoch: int
    commit: int
    position: str | None  # last entry id it read


@dataclass(frozen=True, slots=True)
class Standing:
    index: int
    held: bool  # epoch and lease token are the worker's
    lapsed: bool  # the lease key is gone but the epoch is the worker's: nobody took the partition
    commit_stands: bool  # the checkpoint's commit number is the worker's last
    unseen: list[str]  # entries pending to the worker past its position, in id order
    more_unseen: bool  # the page of unseen entries was full: look again


def standings(db: Client, token: str, consumer: str, held: list[Held], page: int) -> list[Standing]:
    """One pipelined round trip: per partition GET epoch, GET lease, HGET the commit number and
    XPENDING of this consumer past its position."""
    pipeline = db.pipeline(transaction=False)
    for partition in held:
        keys = partition.keys
        pipeline.get(keys.epoch)
        pipeline.get(keys.lease)
        pipeline.hget(keys.checkpoint, "commit")
        pipeline.xpending_range(keys.readings, keys.group, min=f"({partition.position}" if partition.position else "-",
                                max="+", count=page, consumername=consumer)
    replies = pipeline.execute()
    found = []
    for at, partition in enumerate(held):
        epoch, lease, commit, pending = replies[4 * at:4 * at + 4]
        mine = str(partition.epoch).encode()
        found.append(Standing(
            partition.index,
            held=still_held(token, partition.epoch, as_bytes(epoch), as_bytes(lease)),
            lapsed=as_bytes(epoch) == mine and lease is None,
            commit_stands=int(commit or 0) == partition.commit,
            unseen=[as_text(item["message_id"]) for item in pending],
            more_unseen=len(pending) >= page))
    return found


def as_bytes(value: str | bytes | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value
