"""Commits a worker's step as plain writes in one MULTI/EXEC, checked under WATCH, so that Redis
runs no Lua for them.

The commit script (telemetry/lua/commit.lua) costs Redis more CPU turning its arguments into Lua
strings and back than its writes do: about 1 µs per reading where a live commit holds one reading
per sensor. A transaction writes the same, with the same checks made first:

1. One round trip: WATCH each partition's epoch and every key its commit writes, then read the
   lease, the epoch, the checkpoint's commit number, those keys' types and the group's pending
   list. The commit goes on only if each lease and epoch are the owner's, each commit number the
   one before, each key of its type or absent and the group there. The lease is read but not
   watched (renewals would abort the transaction): it tells owners with the same epoch apart,
   after a failover lost an increment. The readings stream cannot be watched either (producers
   write it); a group destroyed in between makes XACK acknowledge nothing, as there is nothing
   left to acknowledge in.
2. MULTI, the writes in the script's order (state fields, kept windows, counters, outputs, XACK, checkpoint),
   EXEC. A watched key changed since step 1 (a new owner's epoch, a resend's checkpoint, a key
   replaced by another type) makes EXEC write nothing.

Whenever the outcome is anything but "applied" (a check failed, EXEC aborted, the reply was lost,
Redis refused a command), the caller sends the same commits through the script, which
answers each exactly: applied, DUPLICATE (the transaction did run) or FENCED. A transaction that
had not run yet when its reply was given up (held in a paused server's input, or late on the
network) finds its WATCH dirty when it does run, because the script wrote the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from consumers.checkpoint import CommitRequest
from consumers.lease import still_held
from telemetry.backoff import RETRYABLE
from telemetry.connection import as_text
from telemetry.keys import GroupKeys
from telemetry.resp import HeldConnection, command


def written_keys(keys: GroupKeys) -> list[tuple[str, str]]:
    """Each key a commit writes but the stream it acknowledges, with the type it must have."""
    return [(keys.checkpoint, "hash"), (keys.state, "hash"), (keys.windows, "hash"), (keys.counters, "hash"),
            (keys.aggregates, "stream"), (keys.alerts, "stream"), (keys.dead_letter, "stream")]


@dataclass(frozen=True, slots=True)
class Transaction:
    payload: bytes
    replies: int  # how many replies the payload gets
    acks: list[int | None]  # per commit, the index of its XACK's reply in EXEC's


def transaction(requests: list[CommitRequest]) -> Transaction:
    chunks = [command("MULTI")]
    acks: list[int | None] = []
    for request in requests:
        keys = request.keys
        writes = []
        if request.state:
            writes.append(command("HSET", keys.state, *request.state))
        if request.windows:
            writes.append(command("HSET", keys.windows, *request.windows))
        counters = request.counters
        writes += [command("HINCRBY", keys.counters, counters[i], counters[i + 1]) for i in range(0, len(counters), 2)]
        writes += [command("XADD", keys.output(kind), "MAXLEN", "~", request.output_maxlen, "*", *fields)
                   for kind, fields in request.outputs]
        acks.append(len(chunks) - 1 + len(writes) if request.ack else None)
        if request.ack:
            writes.append(command("XACK", keys.readings, keys.group, *request.ack))
        writes.append(command("HSET", keys.checkpoint, *request.checkpoint_fields()))
        chunks += writes
    chunks.append(command("EXEC"))
    return Transaction(b"".join(chunks), len(chunks), acks)


class TransactionCommitter(HeldConnection):
    def commit(self, requests: list[CommitRequest]) -> list[int] | None:
        """The entries each commit acknowledged, once Redis applied them all; None when it cannot
        say so: the caller then sends them through the script. An error inside an applied
        transaction is raised: resending would not change it."""
        planned = transaction(requests)  # built first: nothing can fail between the WATCH and the EXEC
        try:
            self.held()
            if not self._checked(requests):
                self.discard()  # and with it the WATCH
                return None
            replies = self.exchange(planned.payload, planned.replies)
        except (*RETRYABLE, redis.ResponseError):  # EXECABORT, or a refusal before EXEC
            return None
        applied = self.executed(replies[-1])  # None: a watched key changed, the script settles it
        return None if applied is None else [0 if at is None else int(applied[at]) for at in planned.acks]

    def _checked(self, requests: list[CommitRequest]) -> bool:
        """WATCH, then what the commit script checks before its first write."""
        written = [written_keys(request.keys) for request in requests]
        watched = [key for request, keys in zip(requests, written) for key in (request.keys.epoch, *dict(keys))]
        reads = []
        for request, keys in zip(requests, written):
            group = request.keys
            # XPENDING fails unless the stream and the group exist: the exchange raises, the script settles it
            reads += [command("GET", group.lease), command("GET", group.epoch),
                      command("HGET", group.checkpoint, "commit"),
                      command("XPENDING", group.readings, group.group, "-", "+", 1),
                      *(command("TYPE", key) for key, _ in keys)]
        replies = self.exchange(b"".join([command("WATCH", *watched), *reads]), len(reads) + 1)
        at = 1
        for request, expected in zip(requests, written):
            lease, epoch, committed, _, *types = replies[at:at + 4 + len(expected)]
            at += 4 + len(expected)
            # compared as bytes: a corrupted value must not raise between the WATCH and its release
            if (not still_held(request.token, request.epoch, epoch, lease)
                    or (committed or b"0") != str(request.commit - 1).encode()):
                return False
            if any(as_text(found) not in (kind, "none") for found, (_, kind) in zip(types, expected)):
                return False
        return True
