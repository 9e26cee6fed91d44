"""Writes batches of readings into the stream and never loses one while Redis comes and goes.

A batch is one call of the `append_readings` script through the walrus Database: atomic (the XADDs
and the producer-seq update land together) and idempotent (rows at or below a sensor's stored seq
are skipped). So when a reply is lost because Redis restarted, the writer reconnects with backoff
and sends the same batch again, and each sensor's seq stays without gaps or duplicates.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from dataclasses import dataclass

import walrus

from telemetry.backoff import RETRYABLE, Backoff
from telemetry.keys import Keys
from telemetry.schema import FieldMap, entry_layout
from telemetry.scripts import load_script


@dataclass(frozen=True, slots=True)
class BatchResult:
    appended: int
    skipped_as_already_written: int


class StreamWriter:
    def __init__(self, db: walrus.Database, keys: Keys, field_map: FieldMap, maxlen: int,
                 *, log=sys.stderr) -> None:
        self.db = db
        self.keys = keys
        self.maxlen = maxlen
        self.layout = entry_layout(field_map)
        self.sensor_column = self.layout.index(field_map.sensor) + 1
        self.seq_column = self.layout.index(field_map.seq) + 1 if field_map.seq else 0
        self.append = load_script(db, "append_readings")
        self.log = log
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
        """Blocks until Redis confirms the batch, retrying through outages.

        A second stop signal (not the first) ends the process from the signal handler, so a
        flush on shutdown still waits for Redis to come back rather than dropping readings.
        """
        if not rows:
            return BatchResult(0, 0)
        args = [self.maxlen, len(self.layout), self.sensor_column, self.seq_column, *self.layout, "\n".join(rows)]
        backoff = Backoff()
        while True:
            try:
                appended, skipped = self.append(keys=[self.keys.readings, self.keys.producer_seq], args=args)
                return BatchResult(appended, skipped)
            except RETRYABLE as error:
                delay = backoff.next_delay()
                print(f"producer: Redis unavailable ({error.__class__.__name__}: {error}); "
                      f"retrying {len(rows)} unconfirmed readings in {delay:.1f}s", file=self.log)
                time.sleep(delay)

    def last_seqs(self, sensors: list[str]) -> list[int | None]:
        """Where each sensor's seq stands, so a restarted producer continues instead of repeating."""
        values = []
        for start in range(0, len(sensors), 1000):
            chunk = sensors[start:start + 1000]
            values += self.db.hmget(self.keys.producer_seq, chunk)
        return [int(value) if value is not None else None for value in values]
