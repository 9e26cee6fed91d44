"""Appends a producer batch as plain XADDs in one MULTI/EXEC, fenced by a WATCH on the writer's
batch markers, so that Redis runs no Lua for it.

Redis spends about as much CPU running the append script's loop of XADDs as on the XADDs
themselves, and the producer is a third of Redis's work per reading. But a plain transaction
cannot check anything, while a resend must never apply a batch twice. So the check comes first:
the connection WATCHes every partition's batch marker of this writer, and that WATCH is confirmed
(its reply read) before a transaction is sent; each transaction sets the markers of the
partitions it writes and, in the same round trip, WATCHes them again for the next batch.

When a transaction's reply is lost, the writer resends the batch through the script
(`append_readings.lua`), which checks the marker and sets it when it writes. If the lost
transaction had not run yet (held in a paused server's input, or late on the network), the
script's write makes its WATCH dirty and its EXEC writes nothing; if it had run, the script finds
the markers at this batch and writes nothing. Either way the batch lands once.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from telemetry.backoff import RETRYABLE
from telemetry.resp import HeldConnection, bulk, command


@dataclass(frozen=True, slots=True)
class Part:
    """One partition's share of a batch: its stream, this writer's marker there, its rows."""

    stream: str
    marker: str
    rows: list[str]


@dataclass(frozen=True, slots=True)
class Transaction:
    payload: bytes
    replies: int  # how many replies the payload gets


class TransactionAppender(HeldConnection):
    def __init__(self, db: redis.Redis, markers: list[str], fields: list[str], maxlen: int, ttl_ms: int) -> None:
        super().__init__(db)
        self.watch = command("WATCH", *markers)
        self.field_names = [bulk(name.encode()) for name in fields]
        self.trimming = ["MAXLEN", "~", str(maxlen)] if maxlen else []
        self.ttl_ms = ttl_ms
        self.refused: str | None = None  # why Redis refuses transactions to this user, once it did
        self._prefixes: dict[str, bytes] = {}

    def append(self, batch: int, parts: list[Part]) -> bool:
        """True once Redis applied the whole batch. False when it cannot say so (connection lost,
        WATCH broken, transaction refused): the caller resends through the script, which applies
        what is missing, once. An error inside an applied transaction is raised: resending would
        not change it."""
        transaction = self.transaction(batch, parts)
        try:
            self._watching()
            replies = self.exchange(transaction.payload, transaction.replies)
        except redis.exceptions.NoPermissionError as error:  # an ACL user without MULTI/EXEC/WATCH
            self.refused = str(error)
            return False
        except (*RETRYABLE, redis.ResponseError):  # EXECABORT, or a refusal before EXEC
            return False
        return self.executed(replies[-2]) is not None  # None: a marker moved, the script settles it

    def transaction(self, batch: int, parts: list[Part]) -> Transaction:
        """MULTI, each row's XADD, each partition's marker SET, EXEC, then the WATCH for the next."""
        chunks = [command("MULTI")]
        queued, width = 0, len(self.field_names)
        for part in parts:
            prefix = self._prefix(part.stream)
            for row in part.rows:
                values = row.encode().split(b"\t")
                if len(values) != width:  # the announced argument count must hold, or Redis reads on
                    raise ValueError(f"a row of {len(values)} fields where the entry has {width}: {row[:80]!r}")
                chunks.append(prefix + b"".join(name + bulk(value) for name, value in zip(self.field_names, values)))
            chunks.append(command("SET", part.marker, batch, "PX", self.ttl_ms))
            queued += len(part.rows) + 1
        chunks += [command("EXEC"), self.watch]
        return Transaction(b"".join(chunks), queued + 3)

    def _watching(self) -> None:
        if self.held()[1]:  # new: WATCH, and read that it is in place
            self.exchange(self.watch, 1)

    def _prefix(self, stream: str) -> bytes:
        prefix = self._prefixes.get(stream)
        if prefix is None:
            args = ["XADD", stream, *self.trimming, "*"]
            prefix = self._prefixes[stream] = (b"*%d\r\n" % (len(args) + 2 * len(self.field_names))
                                               + b"".join(bulk(arg.encode()) for arg in args))
        return prefix
