"""Writes batches of readings into the pipeline's partition streams and never loses one while
Redis comes and goes.

A batch is split by partition (the sensor's) and written in one round trip, most often as one
MULTI/EXEC of plain XADDs fenced by a WATCH on the writer's batch markers
(`transaction_append.py`). Any batch that cannot go that way (its reply lost, on a cluster, with
--wait-replicas, or carrying seqs to save) goes as one call of the `append_readings` script per
partition, pipelined. Each call is atomic and idempotent: it carries the writer's batch number,
and a partition that already holds that batch skips it. So when replies are lost because Redis
restarted, the writer reconnects with backoff and resends the same batch through the script, and
each sensor's seq stays without gaps or duplicates, at a cost per batch, not per sensor.

Where each sensor's seq stands is saved for a restarted producer, but not with every batch (a
hash write per sensor per reading would be a sixth of Redis's work in a 1 Hz fleet): a sensor's
first batch saves it, and then each partition saves the seqs written since, every few seconds or
tens of thousands of entries, and on close, with the stream id it was saved at. A producer that
restarts after a crash reads the saved seqs and then the stream past the oldest of those ids, so
it misses none written in between.
"""

from __future__ import annotations

import os
import queue
import secrets
import socket
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass

from producers.transaction_append import Part, TransactionAppender
from telemetry.connection import Client, is_cluster
from telemetry.keys import PartitionKeys
from telemetry.partitions import Layout
from telemetry.refusals import Retries
from telemetry.schema import FieldMap, entry_layout
from telemetry.scripts import ReplicaWait, load_script, run_until_answered
from telemetry.timeutil import stream_id_key

BATCH_MARKER_TTL_MS = 86_400_000  # a resend comes within seconds; a day is plenty
SEQ_SAVE_EVERY_S = 10.0  # or after this many entries in the partition, whichever comes first:
SEQ_SAVE_EVERY_ENTRIES = 50_000  # what a restart after a crash reads at most, per partition
SCAN_PAGE = 10_000


@dataclass(slots=True)
class UnsavedSeqs:
    """One partition's seqs written since its last save."""

    seqs: dict[str, str]
    entries: int = 0
    due: float = 0.0  # time.monotonic() of the next save


@dataclass(frozen=True, slots=True)
class BatchResult:
    appended: int
    skipped_as_already_written: int


class StreamWriter:
    def __init__(self, db: Client, layout: Layout, field_map: FieldMap, maxlen: int,
                 *, log=None, wait: ReplicaWait | None = None) -> None:
        self.db = db
        self.wait = wait
        self.layout = layout
        self.maxlen = maxlen
        self.fields = entry_layout(field_map)
        self.seq_column = self.fields.index(field_map.seq) if field_map.seq else None
        if self.fields.index(field_map.sensor) != 0:
            raise ValueError("the sensor must be the first field of a row")
        self.append = load_script(db, "append_readings")
        self.producer_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self.transaction = None if is_cluster(db) or wait is not None else TransactionAppender(
            db, [partition.producer_batch(self.producer_id) for partition in layout.partitions], self.fields, maxlen,
            BATCH_MARKER_TTL_MS)
        self.batch_number = 0
        self._partition_of: dict[str, PartitionKeys] = {}
        self._unsaved: dict[PartitionKeys, UnsavedSeqs] = {}
        self._saved: set[str] = set()  # sensors with a saved seq (a restart must find every one)
        self.log = log or sys.stderr
        self.retries = Retries()  # resends after a lost reply at once; a refusal is said once
        self._outbox: queue.Queue[list[str]] = queue.Queue(maxsize=2)
        self._sender: threading.Thread | None = None
        self._sender_error: Exception | None = None

    def submit(self, rows: list[str]) -> None:
        """Queue a batch for a sender thread, so the next batch is built while Redis stores this one.

        The queue holds two batches; `flush` waits until every queued batch is confirmed.
        """
        self._raise_sender_error()
        if self._sender is None:
            self._sender = threading.Thread(target=self._send_loop, name="stream-writer", daemon=True)
            self._sender.start()
        self._outbox.put(rows)

    def flush(self) -> None:
        if self._sender is not None:
            self._outbox.join()
        self._raise_sender_error()

    def close(self) -> None:
        """Flush, then save every seq not saved yet, so a restart reads nothing past it."""
        try:
            self.flush()
            partitions = [partition for partition, unsaved in self._unsaved.items() if unsaved.seqs]
            if partitions:
                self._send(self._calls({partition: ([], {}) for partition in partitions}, save_all=True)[0], 0)
        finally:
            if self.transaction is not None:
                self.transaction.discard()

    def _send_loop(self) -> None:
        while True:
            rows = self._outbox.get()
            try:
                if self._sender_error is None:
                    self.write(rows)
            except Exception as error:  # noqa: BLE001 - handed to the producing thread, which re-raises it
                self._sender_error = error
            finally:
                self._outbox.task_done()

    def _raise_sender_error(self) -> None:
        if self._sender_error is not None:
            error, self._sender_error = self._sender_error, None
            raise error

    def write(self, rows: list[str]) -> BatchResult:
        """Blocks until Redis confirms every partition's part, resending through outages.

        A second stop signal (not the first) ends the process from the signal handler, so a
        flush on shutdown still waits for Redis to come back rather than dropping readings.
        """
        if not rows:
            return BatchResult(0, 0)
        parts = self._by_partition(rows)
        calls, saves_seqs = self._calls(parts, save_all=False)  # a seq save needs the script: it adds the id
        if self.transaction is not None and not saves_seqs and self.transaction.append(
                self.batch_number, [Part(partition.readings, partition.producer_batch(self.producer_id), part_rows)
                                    for partition, (part_rows, _) in parts.items()]):
            return BatchResult(len(rows), 0)
        self._script_only_if_refused()
        if self.transaction is not None:
            self.transaction.discard()  # the script sets markers its WATCH holds: the next one starts afresh
        replies = self._send(calls, len(rows))
        return BatchResult(sum(int(appended) for appended, _ in replies),
                           sum(len(part) for (_, skipped), (part, _) in zip(replies, parts.values()) if skipped))

    def _calls(self, parts: dict[PartitionKeys, tuple[list[str], dict[str, str]]],
               save_all: bool) -> tuple[list, bool]:
        """One script call per partition, under a new batch number, and whether any saves seqs:
        seqs to save ride along when due."""
        self.batch_number += 1
        now = time.monotonic()
        calls, saves_seqs = [], False
        for partition, (part_rows, last_rows) in parts.items():
            unsaved = self._unsaved.get(partition)
            if unsaved is None:
                unsaved = self._unsaved[partition] = UnsavedSeqs({}, due=now + SEQ_SAVE_EVERY_S)
            seqs = self._seqs_of(last_rows)
            unsaved.seqs.update(seqs)
            unsaved.entries += len(part_rows)
            if save_all or now >= unsaved.due or unsaved.entries >= SEQ_SAVE_EVERY_ENTRIES:
                to_save, unsaved.seqs = unsaved.seqs, {}
                unsaved.entries, unsaved.due = 0, now + SEQ_SAVE_EVERY_S
            else:  # a sensor's first seq is saved at once: a restart must find every sensor written
                to_save = {sensor: unsaved.seqs.pop(sensor) for sensor in seqs if sensor not in self._saved}
            self._saved.update(to_save)
            saves_seqs |= bool(to_save)
            calls.append(([partition.readings, partition.producer_batch(self.producer_id), partition.producer_seq],
                          [self.batch_number, BATCH_MARKER_TTL_MS, self.maxlen, len(self.fields), *self.fields,
                           "\n".join(part_rows), *(part for pair in to_save.items() for part in pair)]))
        return calls, saves_seqs

    def _script_only_if_refused(self) -> None:
        if self.transaction is not None and self.transaction.refused:
            print(f"producer: Redis refuses transactions to this user ({self.transaction.refused}); "
                  "writing through the append script only", file=self.log)
            self.transaction = None

    def _send(self, calls: list, readings: int) -> list:
        return run_until_answered(self.db, self.append, calls, self.wait, self.retries,
                                  lambda line: print(f"producer: {line}", file=self.log),
                                  f"{readings} unconfirmed readings")

    def _by_partition(self, rows: list[str]) -> dict[PartitionKeys, tuple[list[str], dict[str, str]]]:
        """Each partition's rows, and each sensor's last row among them (its seq is the one to keep)."""
        parts: dict[PartitionKeys, tuple[list[str], dict[str, str]]] = {}
        cache = self._partition_of
        for row in rows:
            sensor = row[:row.index("\t")]
            partition = cache.get(sensor)
            if partition is None:
                partition = cache[sensor] = self.layout.partition_for(sensor)
            part = parts.get(partition)
            if part is None:
                part = parts[partition] = ([], {})
            part[0].append(row)
            part[1][sensor] = row
        return parts

    def _seqs_of(self, last_rows: dict[str, str]) -> dict[str, str]:
        if self.seq_column is None:
            return {}
        from_end = len(self.fields) - self.seq_column
        return {sensor: row.rsplit("\t", from_end)[1] for sensor, row in last_rows.items()}

    def last_seqs(self, sensors: list[str]) -> list[int | None]:
        """Where each sensor's seq stands, so a restarted producer continues instead of repeating:
        the saved seq, or a later one found in the stream past the id it was saved at."""
        by_partition: dict = defaultdict(list)
        for sensor in sensors:
            by_partition[self.layout.partition_for(sensor)].append(sensor)
        found: dict[str, int | None] = {}
        for partition, names in by_partition.items():
            saved: dict[str, str | None] = {}
            for start in range(0, len(names), 1000):
                chunk = names[start:start + 1000]
                saved.update(zip(chunk, self.db.hmget(partition.producer_seq, chunk)))
            positions = []
            for sensor, value in saved.items():
                seq, _, position = (value or "").partition(" ")
                found[sensor] = int(seq) if seq else None
                positions.append(position or "0-0")  # saved before ids were kept: read the whole stream
            if any(found[sensor] is not None for sensor in names):
                self._scan_later_seqs(partition, min(positions, key=stream_id_key), found)
        return [found[sensor] for sensor in sensors]

    def _scan_later_seqs(self, partition: PartitionKeys, after: str, found: dict[str, int | None]) -> None:
        if self.seq_column is None:
            return
        sensor_field, seq_field = self.fields[0], self.fields[self.seq_column]
        start = f"({after}"
        while True:
            page = self.db.xrange(partition.readings, min=start, max="+", count=SCAN_PAGE)
            for _, fields in page:
                sensor = fields.get(sensor_field)
                if sensor in found and seq_field in fields:
                    seq = int(fields[seq_field])
                    if found[sensor] is None or seq > found[sensor]:
                        found[sensor] = seq
            if len(page) < SCAN_PAGE:
                return
            start = f"({page[-1][0]}"
