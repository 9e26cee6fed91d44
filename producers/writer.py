"""Writes batches of readings into the stream and never loses one while Redis comes and goes.

A batch is one call of the `append_readings` script through the walrus Database: atomic (the XADDs
and the producer-seq update land together) and idempotent (rows at or below a sensor's stored seq
are skipped). So when a reply is lost because Redis restarted, the writer reconnects with backoff
and sends the same batch again, and each sensor's seq stays without gaps or duplicates.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
import walrus

from telemetry.backoff import Backoff
from telemetry.keys import Keys
from telemetry.schema import FieldMap, entry_layout
from telemetry.scripts import load_script

RETRYABLE = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)


@dataclass(frozen=True, slots=True)
class BatchResult:
    appended: int
    skipped_as_already_written: int


class StreamWriter:
    def __init__(self, db: walrus.Database, keys: Keys, field_map: FieldMap, maxlen: int,
                 *, is_stopping: Callable[[], bool] = lambda: False, log=sys.stderr) -> None:
        self.db = db
        self.keys = keys
        self.maxlen = maxlen
        self.layout = entry_layout(field_map)
        self.sensor_column = self.layout.index(field_map.sensor) + 1
        self.seq_column = self.layout.index(field_map.seq) + 1 if field_map.seq else 0
        self.append = load_script(db, "append_readings")
        self.is_stopping = is_stopping
        self.log = log
        self.reconnects = 0

    def write(self, rows: list[list[str]]) -> BatchResult:
        """Blocks until Redis confirms the batch, retrying through outages.

        A second stop signal (not the first) ends the process from the signal handler, so a
        flush on shutdown still waits for Redis to come back rather than dropping readings.
        """
        if not rows:
            return BatchResult(0, 0)
        header = [self.maxlen, len(self.layout), self.sensor_column, self.seq_column, *self.layout]
        args = header + [value for row in rows for value in row]
        backoff = Backoff()
        while True:
            try:
                appended, skipped = self.append(keys=[self.keys.readings, self.keys.producer_seq], args=args)
                return BatchResult(appended, skipped)
            except RETRYABLE as error:
                delay = backoff.next_delay()
                self.reconnects += 1
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
