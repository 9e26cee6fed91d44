"""Reads and decodes the next batches of new entries while the current one commits."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from consumers.batch import DecodedBatch, Entry
from telemetry.backoff import RETRYABLE, Backoff

Entries = list[Entry]


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


class NewEntryReads:
    """XREADGROUP '>' for up to `max_commit` entries, in reads of `batch`, on a connection of its own.

    Sending and receiving are separate calls so that the read-ahead thread can put the next read
    into Redis's queue before it hands over the batch it just received: the main thread's commit
    of that batch then queues behind the read, and Redis alternates read, commit, read, commit
    without waiting on Python. Only the first read blocks; when it comes back short, the others
    find nothing and cost next to nothing. The handover counter is read first, in the same round
    trip, so the commit can tell whether any of the entries could have changed hands since.
    """

    def __init__(self, pool: redis.ConnectionPool, group: str, consumer: str, stream: str, handovers: str,
                 batch: int, max_commit: int, block_ms: int) -> None:
        self.pool = pool
        self.connection = pool.get_connection()
        self.reads = max(1, max_commit // batch)
        commands = [("GET", handovers)] + [
            ("XREADGROUP", "GROUP", group, consumer, "COUNT", batch, *(("BLOCK", block_ms) if read == 0 else ()),
             "STREAMS", stream, ">") for read in range(self.reads)]
        self.packed = self.connection.pack_commands(commands)

    def send(self) -> None:
        self.connection.send_packed_command(self.packed)

    def receive(self) -> NewEntries:
        """Every reply of the last send, or, on any error, a dropped connection: a half-read reply must not be reused."""
        try:
            epoch = int(self.connection.read_response() or 0)
            entries = [entry for _ in range(self.reads) for entry in entries_from_reply(self.connection.read_response())]
            return NewEntries(entries, epoch)
        except BaseException:
            self.connection.disconnect()
            raise

    def close(self) -> None:
        self.pool.release(self.connection)


class ReadAhead:
    """A thread that reads and decodes new entries while the main thread commits.

    It holds at most one decoded batch for the main thread, one it is decoding and one read in
    flight. Entries it has read are pending to this consumer, so if the process dies they are
    claimed like any others; and a batch committed twice (after an outage made the main loop
    re-read its pending entries) is harmless, because the commit skips entries already
    acknowledged. On stop, the read in flight is received and handed back with the rest.
    """

    def __init__(self, reads: NewEntryReads, decode: Callable[[NewEntries], DecodedBatch], log) -> None:
        self.reads = reads
        self.decode = decode
        self.log = log
        self.outbox: queue.Queue[DecodedBatch | Exception] = queue.Queue(maxsize=1)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="read-ahead", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        backoff = Backoff()
        in_flight = False
        try:
            while in_flight or not self.stopping.is_set():
                try:
                    if not in_flight:
                        self.reads.send()
                        in_flight = True
                    received = self.reads.receive()
                    in_flight = False
                    if not self.stopping.is_set():
                        self.reads.send()  # queued in Redis ahead of the commit of what was received
                        in_flight = True
                    decoded = self.decode(received)
                    backoff.reset()
                except RETRYABLE as error:
                    in_flight = False
                    delay = backoff.next_delay()
                    print(f"aggregator: read-ahead: Redis unavailable ({error.__class__.__name__}); "
                          f"retrying in {delay:.1f}s", file=self.log)
                    time.sleep(delay)
                    continue
                self.outbox.put(decoded)
        except Exception as error:  # noqa: BLE001 - handed to the main loop, which re-raises it
            self.outbox.put(error)
        finally:
            self.reads.close()

    def take(self, timeout_s: float) -> DecodedBatch | None:
        """The next batch read (empty when a read found nothing new), or None if no read finished in time."""
        try:
            item = self.outbox.get(timeout=timeout_s)
        except queue.Empty:
            return None
        if isinstance(item, Exception):
            raise item
        return item

    def stop(self) -> list[DecodedBatch]:
        """Stop reading and hand back what was read but not committed yet."""
        self.stopping.set()
        left: list[DecodedBatch] = []
        while self.thread.is_alive() or not self.outbox.empty():
            try:
                item = self.outbox.get(timeout=0.05)
            except queue.Empty:
                continue
            if isinstance(item, DecodedBatch) and len(item.batch):
                left.append(item)
        return left
