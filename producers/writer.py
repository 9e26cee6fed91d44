"""Writes batches of readings into the pipeline's partition streams and never loses one while
Redis comes and goes.

A batch is split by partition (the sensor's), and each part is one call of the `append_readings`
script, all parts pipelined in one round trip. Each call is atomic and idempotent: it carries the
writer's batch number, and a partition that already holds that batch skips it. So when replies
are lost because Redis restarted, the writer reconnects with backoff and resends the same batch,
and each sensor's seq stays without gaps or duplicates, at a cost per batch, not per sensor.
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

import redis
import walrus

from telemetry.backoff import RETRYABLE, Backoff
from telemetry.keys import PartitionKeys
from telemetry.partitions import Layout
from telemetry.schema import FieldMap, entry_layout
from telemetry.scripts import load_script

BATCH_MARKER_TTL_MS = 86_400_000  # a resend comes within seconds; a day is plenty


@dataclass(frozen=True, slots=True)
class BatchResult:
    appended: int
    skipped_as_already_written: int


class StreamWriter:
    def __init__(self, db: walrus.Database, layout: Layout, field_map: FieldMap, maxlen: int,
                 *, log=None) -> None:
        self.db = db
        self.layout = layout
        self.maxlen = maxlen
        self.fields = entry_layout(field_map)
        self.seq_column = self.fields.index(field_map.seq) if field_map.seq else None
        if self.fields.index(field_map.sensor) != 0:
            raise ValueError("the sensor must be the first field of a row")
        self.append = load_script(db, "append_readings")
        self.producer_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self.batch_number = 0
        self._partition_of: dict[str, PartitionKeys] = {}
        self.log = log or sys.stderr
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
        self.batch_number += 1
        parts = self._by_partition(rows)
        calls = [([partition.readings, partition.producer_batch(self.producer_id), partition.producer_seq],
                  self._arguments(part_rows, last_rows)) for partition, (part_rows, last_rows) in parts.items()]
        backoff = Backoff()
        while True:
            try:
                pipeline = self.db.pipeline(transaction=False)
                for keys, args in calls:
                    self.append(keys=keys, args=args, client=pipeline)
                replies = pipeline.execute()
                return BatchResult(sum(int(appended) for appended, _ in replies),
                                   sum(len(part) for (_, skipped), (part, _) in zip(replies, parts.values()) if skipped))
            except (*RETRYABLE, redis.exceptions.NoScriptError) as error:
                delay = backoff.next_delay()
                print(f"producer: Redis unavailable ({error.__class__.__name__}: {error}); "
                      f"retrying {len(rows)} unconfirmed readings in {delay:.1f}s", file=self.log)
                time.sleep(delay)

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

    def _arguments(self, rows: list[str], last_rows: dict[str, str]) -> list:
        pairs: list[str] = []
        if self.seq_column is not None:
            from_end = len(self.fields) - self.seq_column
            for sensor, row in last_rows.items():
                pairs += (sensor, row.rsplit("\t", from_end)[1])
        return [self.batch_number, BATCH_MARKER_TTL_MS, self.maxlen, len(self.fields), *self.fields, "\n".join(rows),
                *pairs]

    def last_seqs(self, sensors: list[str]) -> list[int | None]:
        """Where each sensor's seq stands, so a restarted producer continues instead of repeating."""
        by_partition: dict = defaultdict(list)
        for sensor in sensors:
            by_partition[self.layout.partition_for(sensor)].append(sensor)
        found: dict[str, str | None] = {}
        for partition, names in by_partition.items():
            for start in range(0, len(names), 1000):
                chunk = names[start:start + 1000]
                found.update(zip(chunk, self.db.hmget(partition.producer_seq, chunk)))
        return [int(found[sensor]) if found[sensor] is not None else None for sensor in sensors]
