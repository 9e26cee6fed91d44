"""The worker's reads of new entries: taken off the socket whole and fast, parsed later.

Redis sends a large reply a slice (64 KB) per turn of its event loop. Parsed as the slices
arrive, a 4,000-entry read keeps Redis waiting on Python for as long as it took to run; and a
reply still being sent when a commit starts waits for the whole commit. So the bytes are taken
off the socket unparsed, until the echo of a random token sent last comes back, and the worker's
decoder thread parses them while the next commit runs.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import hiredis
import redis
from redis.exceptions import ResponseError

from consumers.batch import Entry, texts

Entries = list[Entry]
RECEIVE_BYTES = 1 << 20


def entries_from_reply(reply) -> Entries:
    """(id, flat fields) pairs from an XREADGROUP reply, RESP3 (a map) or RESP2 (pairs)."""
    if not reply:
        return []
    streams = reply.values() if isinstance(reply, dict) else (entries for _, entries in reply)
    return [(entry_id, fields) for entries in streams for entry_id, fields in entries]


@dataclass(frozen=True, slots=True)
class NewEntries:
    entries: Entries
    handover_epoch: int  # the handover counter just before the read (telemetry/keys.py)


@dataclass(frozen=True, slots=True)
class RawReplies:
    """Replies as Redis sent them: the handover counter, then one per XREADGROUP, then the token's echo."""

    data: bytes
    reads: int

    @property
    def found_entries(self) -> bool:
        """Without parsing a large reply: only a small one can be empty."""
        return len(self.data) > 4096 or bool(self.parse().entries)

    def parse(self) -> NewEntries:
        """Field values stay bytes (consumers/batch.py reads numbers straight from them): hiredis
        decoding every string to str took longer than the rest of a batch's decoding."""
        reader = hiredis.Reader(replyError=ResponseError)
        reader.feed(self.data)
        replies = [reader.gets() for _ in range(self.reads + 1)]
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise reply
        epoch, *reads = replies
        entries = [entry for reply in reads for entry in entries_from_reply(reply)]
        ids = texts([entry_id for entry_id, _ in entries])
        return NewEntries([(entry_id, fields) for entry_id, (_, fields) in zip(ids, entries)], int(epoch or 0))


def _receive(connection: redis.Connection) -> bytes:
    """Raw bytes off the connection's socket (redis-py has no public raw read), with socket errors
    raised as redis-py's own, which the worker rides out with backoff."""
    try:
        return connection._sock.recv(RECEIVE_BYTES)
    except TimeoutError as error:
        raise redis.TimeoutError(f"timeout reading from Redis: {error}") from error
    except OSError as error:
        raise redis.ConnectionError(f"error reading from Redis: {error}") from error


class NewEntryReads:
    """XREADGROUP '>' for up to `max_commit` entries, in reads of `batch`, in one round trip on a
    connection of its own. Only the first read may block; when it comes back short, the others
    find nothing and cost next to nothing. The handover counter is read first, so the commit can
    tell whether any of the entries could have changed hands since."""

    def __init__(self, pool: redis.ConnectionPool, *, group: str, consumer: str, stream: str, handovers: str,
                 batch: int, max_commit: int, block_ms: int) -> None:
        self.pool = pool
        self.connection = pool.get_connection()
        self.reads = max(1, max_commit // batch)

        def xreadgroup(block: bool) -> tuple:
            return ("XREADGROUP", "GROUP", group, consumer, "COUNT", batch, *(("BLOCK", block_ms) if block else ()),
                    "STREAMS", stream, ">")

        self.commands = {block: [("GET", handovers), xreadgroup(block)] + [xreadgroup(False)] * (self.reads - 1)
                         for block in (False, True)}

    def fetch(self, block: bool) -> RawReplies:
        token = secrets.token_hex(16)
        connection = self.connection
        try:
            connection.send_packed_command(connection.pack_commands([*self.commands[block], ("ECHO", token)]))
            end = f"${len(token)}\r\n{token}\r\n".encode()
            data = bytearray()
            while not data.endswith(end):
                chunk = _receive(connection)
                if not chunk:
                    raise redis.ConnectionError("connection closed by the server")
                data += chunk
        except BaseException:
            connection.disconnect()  # a half-read reply must not meet the next command
            raise
        return RawReplies(bytes(data), self.reads)

    def close(self) -> None:
        self.pool.release(self.connection)
