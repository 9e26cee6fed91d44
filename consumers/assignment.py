"""Which worker should own which partition: live members from heartbeats, and a balanced,
sticky, deterministic assignment every member computes alike.

Each partition ranks the members by a hash of (member, partition), rendezvous style, and goes to
the best-ranked member that still has room: every member takes floor(P / members), and the first
P mod members to fill up may take one more. Every worker computing this
from the same member list gets the same answer, a join or leave moves about P / members
partitions, and no member holds more than its share. The answer is only a wish: ownership is
the lease (consumers/lease.py); a worker takes a wished-for partition once its lease is free.
A worker acts on a new member list only after it has stayed the same for the settle delay, so
workers starting one by one do not reshuffle the partitions at every arrival.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import redis

from telemetry.connection import as_text


def _score(member: str, index: int) -> int:
    return zlib.crc32(f"{member}/{index}".encode())


def assign(members: list[str], partitions: int) -> dict[str, list[int]]:
    """Each partition goes to its best-ranked member; members over their quota (floor(P/N), plus
    one for the members that wanted most) give away the partitions they rank lowest, each to its
    best-ranked member with room."""
    ordered = sorted(set(members))
    if not ordered:
        return {}
    ranked = {index: sorted(ordered, key=lambda member: (-_score(member, index), member))
              for index in range(partitions)}
    wanted: dict[str, list[int]] = {member: [] for member in ordered}
    for index in range(partitions):
        wanted[ranked[index][0]].append(index)
    share, extra = divmod(partitions, len(ordered))
    by_demand = sorted(ordered, key=lambda member: (-len(wanted[member]), member))
    quota = {member: share + (position < extra) for position, member in enumerate(by_demand)}
    owned: dict[str, list[int]] = {}
    surplus: list[int] = []
    for member in ordered:
        keep = sorted(wanted[member], key=lambda index: -_score(member, index))
        owned[member] = keep[:quota[member]]
        surplus += keep[quota[member]:]
    for index in sorted(surplus):
        owner = next(member for member in ranked[index] if len(owned[member]) < quota[member])
        owned[owner].append(index)
    return {member: sorted(indexes) for member, indexes in owned.items()}


@dataclass(slots=True)
class Membership:
    """This worker's heartbeat in the group's member set, and the settled view of the others."""

    db: redis.Redis
    key: str
    member: str
    ttl_ms: int
    settle_ms: int
    seen: tuple[str, ...] = ()
    seen_since_ms: int = 0  # workers starting together wait one settle delay, then share at once
    settled: tuple[str, ...] = field(default=())

    def beat(self, now_ms: int) -> tuple[str, ...]:
        """Heartbeat, prune members whose heartbeat lapsed, and return the settled member list."""
        pipeline = self.db.pipeline(transaction=False)
        pipeline.zadd(self.key, {self.member: now_ms + self.ttl_ms})
        pipeline.zremrangebyscore(self.key, "-inf", now_ms)
        pipeline.zrange(self.key, 0, -1)
        members = tuple(sorted(as_text(member) for member in pipeline.execute()[2]))
        if members != self.seen:
            self.seen, self.seen_since_ms = members, now_ms
        if members != self.settled and now_ms - self.seen_since_ms >= self.settle_ms:
            self.settled = members
        return self.settled

    def leave(self) -> None:
        self.db.zrem(self.key, self.member)

