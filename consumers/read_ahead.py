"""Reads and decodes the next batch of new entries while the current one commits."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

from consumers.batch import DecodedBatch
from telemetry.backoff import RETRYABLE, Backoff


class ReadAhead:
    """A thread that reads and decodes the next batch of new entries while the current one commits.

    It holds at most one decoded batch (plus the one it is reading). Entries it has read are
    pending to this consumer, so if the process dies they are claimed like any others; and a
    batch committed twice (after an outage made the main loop re-read its pending entries) is
    harmless, because the commit skips entries already acknowledged.
    """

    def __init__(self, read: Callable[[], DecodedBatch], log) -> None:
        self.read = read
        self.log = log
        self.outbox: queue.Queue[DecodedBatch | Exception] = queue.Queue(maxsize=1)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="read-ahead", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        backoff = Backoff()
        while not self.stopping.is_set():
            try:
                decoded = self.read()
                backoff.reset()
            except RETRYABLE as error:
                delay = backoff.next_delay()
                print(f"aggregator: read-ahead: Redis unavailable ({error.__class__.__name__}); "
                      f"retrying in {delay:.1f}s", file=self.log)
                time.sleep(delay)
                continue
            except Exception as error:  # noqa: BLE001 - handed to the main loop, which re-raises it
                self.outbox.put(error)
                return
            self.outbox.put(decoded)

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
