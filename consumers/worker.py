"""The aggregator worker loop: read a batch, sort it, commit it atomically, repeat.

Order of work in each step: claim entries abandoned by dead consumers when due, else finish this
consumer's own pending entries (left by an earlier run under the same name, or by a failed
commit), else read new ones. The commit script does the state changes; this loop only decides
what to hand it, so a `kill -9` anywhere loses nothing: uncommitted entries stay pending.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import redis
import walrus

from consumers.batch import CommitBatch, DecodedBatch, build_batch
from consumers.new_entries import Entries, NewEntryReads, RawReplies, entries_from_reply
from consumers.payload import commit_payload
from consumers.settings import AggregatorSettings
from telemetry.backoff import RETRYABLE, Backoff
from telemetry.keys import Keys
from telemetry.schema import FieldMap
from telemetry.scripts import load_script
from telemetry.timeutil import now_ms


@dataclass(frozen=True, slots=True)
class CommitResult:
    """What one commit (or sweep) did, as the aggregate script reports it."""

    applied: int = 0
    windows: int = 0
    alerts: int = 0
    skipped_as_committed_elsewhere: int = 0
    late: int = 0
    fired: tuple[tuple[str, str], ...] = ()  # (rule, severity) per alert that fired

    @classmethod
    def from_reply(cls, reply: list) -> CommitResult:
        fired = tuple(tuple(label.rsplit(":", 1)) for label in reply[6])
        return cls(reply[1], reply[2], reply[3], reply[4], reply[5], fired)


OnBatch = Callable[[CommitBatch, CommitResult, float], None]


@dataclass(slots=True)
class WorkerStats:
    entries: int = 0
    readings: int = 0
    dead_lettered: int = 0
    lost_to_trim: int = 0
    windows_emitted: int = 0
    alerts_emitted: int = 0
    skipped_as_committed_elsewhere: int = 0
    claimed: int = 0


class AggregatorWorker:
    def __init__(self, db: walrus.Database, keys: Keys, field_map: FieldMap, settings: AggregatorSettings,
                 *, log=sys.stderr, on_batch: OnBatch | None = None) -> None:
        self.db = db
        # Entries as Redis sends them (flat field lists): redis-py's per-entry dicts cost more than
        # the rest of decoding.
        self.raw = redis.Redis(connection_pool=db.connection_pool)
        self.raw.set_response_callback("XREADGROUP", lambda response, **_: response)
        self.keys = keys
        self.field_map = field_map
        self.settings = settings
        self.log = log
        self.on_batch = on_batch
        self.aggregate = load_script(db, "aggregate")
        self.claim = load_script(db, "claim")
        self.lua_config = settings.lua_config()
        self.stats = WorkerStats()
        self.own_pending_done = False
        self.next_claim_ms = 0
        self.claim_cursor = "0-0"
        self.next_sweep_ms = 0
        self.idle_reads = 0
        self.decoder: ThreadPoolExecutor | None = None
        self.decoding: Future[DecodedBatch] | None = None  # the batch read last, being decoded
        self.decoding_found = False  # whether that read found any entries
        self.new_entry_reads: NewEntryReads | None = None

    def ensure_group(self) -> None:
        """Create the group (and stream) idempotently: BUSYGROUP means another worker did it first."""
        try:
            self.db.xgroup_create(self.keys.readings, self.settings.group,
                                  id="$" if self.settings.start == "new" else "0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    # -- reading ---------------------------------------------------------------------------

    def _read(self, entry_id: str, block_ms: int | None) -> Entries:
        return entries_from_reply(self.raw.xreadgroup(self.settings.group, self.settings.consumer,
                                            {self.keys.readings: entry_id}, count=self.settings.batch, block=block_ms))

    def _read_own_pending(self) -> Entries:
        """This consumer's pending entries from the start. They may sit in a batch in hand too, so
        the handover counter is bumped after the read: that batch's commit then acks entry by entry."""
        pipeline = self.raw.pipeline(transaction=False)
        pipeline.xreadgroup(self.settings.group, self.settings.consumer, {self.keys.readings: "0"},
                            count=self.settings.batch)
        pipeline.incr(self.keys.handovers)
        return entries_from_reply(pipeline.execute()[0])

    def _delivery_counts(self, entries: Entries) -> dict[str, int]:
        if not entries:
            return {}
        pending = self.db.xpending_range(self.keys.readings, self.settings.group, min=entries[0][0],
                                         max=entries[-1][0], count=len(entries) + 1000,
                                         consumername=self.settings.consumer)
        return {item["message_id"]: item["times_delivered"] for item in pending}

    def _claim(self) -> Entries:
        next_cursor, claimed, deleted = self.claim(
            keys=[self.keys.readings, self.keys.counters, self.keys.handovers],
            args=[self.settings.group, self.settings.consumer, self.settings.claim_idle_ms, self.claim_cursor,
                  self.settings.batch])
        self.claim_cursor = next_cursor
        if deleted:
            self.stats.lost_to_trim += deleted
            print(f"aggregator: WARNING {deleted} pending readings were trimmed by MAXLEN before they were "
                  f"processed; counted as lost_to_trim", file=self.log)
        entries = [(entry_id, fields or None) for entry_id, fields in claimed]
        self.stats.claimed += len(entries)
        return entries

    # -- committing ------------------------------------------------------------------------

    def commit(self, batch: CommitBatch, now: int, payload: bytes | None = None) -> CommitResult:
        """Apply a batch exactly once: entries another consumer committed first are skipped."""
        if not len(batch):
            return CommitResult()
        if payload is None:
            payload = commit_payload(batch, self.settings.window_ms, self.settings.rolling_bucket_ms)
        result = CommitResult.from_reply(self.aggregate(
            keys=batch.script_keys(self.keys),
            args=["commit", self.settings.group, self.settings.consumer, now, self.lua_config, payload]))
        self.stats.entries += result.applied
        self.stats.readings += len(batch.readings)
        self.stats.dead_lettered += len(batch.dead_letters)
        self.stats.lost_to_trim += len(batch.lost_ids)
        self.stats.windows_emitted += result.windows
        self.stats.alerts_emitted += result.alerts
        self.stats.skipped_as_committed_elsewhere += result.skipped_as_committed_elsewhere
        return result

    def decode(self, entries: Entries, now: int, *, redelivered: bool,
               handover_epoch: int | None = None) -> DecodedBatch:
        started = time.perf_counter()
        counts = self._delivery_counts(entries) if redelivered and entries else None
        batch = build_batch(entries, self.field_map, now, self.settings.max_skew_ms, counts,
                            self.settings.max_deliveries)
        batch.handover_epoch = handover_epoch
        payload = commit_payload(batch, self.settings.window_ms, self.settings.rolling_bucket_ms) if len(batch) else b""
        return DecodedBatch(batch, payload, time.perf_counter() - started)

    def commit_decoded(self, decoded: DecodedBatch, now: int) -> int:
        if not len(decoded.batch):
            return 0
        started = time.perf_counter()
        result = self.commit(decoded.batch, now, decoded.payload)
        if self.on_batch is not None:
            self.on_batch(decoded.batch, result, decoded.decode_seconds + time.perf_counter() - started)
        return len(decoded.batch)

    def process(self, entries: Entries, now: int, *, redelivered: bool) -> int:
        return self.commit_decoded(self.decode(entries, now, redelivered=redelivered), now)

    def sweep(self, now: int) -> None:
        for _ in range(100):  # bounded: at most 100 x 500 sensors per sweep
            reply = self.aggregate(keys=CommitBatch().script_keys(self.keys),
                                   args=["sweep", self.settings.group, self.settings.consumer, now,
                                         self.lua_config, 500])
            result = CommitResult.from_reply(reply)
            self.stats.windows_emitted += result.windows
            self.stats.alerts_emitted += result.alerts
            if self.on_batch is not None and result.alerts:
                self.on_batch(CommitBatch(), result, 0.0)
            if reply[1] < 500:
                return

    # -- the loop --------------------------------------------------------------------------

    def step(self, now: int, *, block: bool = True) -> int:
        """One unit of work at wall-clock `now`; returns the number of entries handled."""
        handled = 0
        if now >= self.next_claim_ms:
            self.next_claim_ms = now + self.settings.claim_every_ms
            handled = self.process(self._claim(), now, redelivered=True)
        elif not self.own_pending_done:
            entries = self._read_own_pending()
            self.own_pending_done = not entries
            handled = self.process(entries, now, redelivered=True)
        elif self.decoder is not None:
            handled = self._read_then_commit_decoded()
        else:
            entries = self._read(">", self.settings.block_ms if block else None)
            self.idle_reads = 0 if entries else self.idle_reads + 1
            handled = self.process(entries, now_ms() if block else now, redelivered=False)
        if now >= self.next_sweep_ms:
            self.next_sweep_ms = now + self.settings.sweep_every_ms
            self.sweep(now)
        return handled

    def drained(self) -> bool:
        return self.own_pending_done and self.idle_reads > 0 and self.claim_cursor == "0-0"

    def _read_new(self, block: bool) -> RawReplies:
        if self.new_entry_reads is None:
            settings = self.settings
            self.new_entry_reads = NewEntryReads(
                self.raw.connection_pool, group=settings.group, consumer=settings.consumer, stream=self.keys.readings,
                handovers=self.keys.handovers, batch=settings.batch, max_commit=settings.max_commit,
                block_ms=settings.block_ms)
        return self.new_entry_reads.fetch(block)

    def _decode_new(self, raw: RawReplies) -> DecodedBatch:
        new = raw.parse()
        return self.decode(new.entries, now_ms(), redelivered=False, handover_epoch=new.handover_epoch)

    def _read_then_commit_decoded(self) -> int:
        """Read the next batch, take the batch the decoder thread has been decoding, hand it the new
        one, and commit. Redis thus alternates read and commit, and Python decodes while Redis
        commits one batch and reads the next.

        The read comes first, and whole (consumers/new_entries.py says why). It blocks for new
        entries only when no batch is in hand, so a batch never waits for the stream to fill.
        """
        in_hand_found = self.decoding is not None and self.decoding_found
        new = self._read_new(block=not in_hand_found)
        in_hand = self.decoding.result() if self.decoding is not None else None
        self.decoding = self.decoder.submit(self._decode_new, new)
        self.decoding_found = new.found_entries
        busy = new.found_entries or (in_hand is not None and len(in_hand.batch))
        self.idle_reads = 0 if busy else self.idle_reads + 1
        return self.commit_decoded(in_hand, now_ms()) if in_hand is not None else 0

    def run(self, stop_requested: Callable[[], bool], clock: Callable[[], int] = now_ms) -> WorkerStats:
        """Loop until stopped or a bound is reached, riding out Redis outages with backoff.

        Once this consumer's own pending entries are done, a decoder thread decodes each new batch
        while the one before it commits. On stop, the batch in hand is committed before returning.
        """
        try:
            return self._run(stop_requested, clock)
        finally:
            if self.decoding is not None:
                self.commit_decoded(self.decoding.result(), now_ms())
                self.decoding = None
            if self.decoder is not None:
                self.decoder.shutdown()
                self.decoder = None
            if self.new_entry_reads is not None:
                self.new_entry_reads.close()
                self.new_entry_reads = None

    def _run(self, stop_requested: Callable[[], bool], clock: Callable[[], int]) -> WorkerStats:
        started = clock()
        backoff = Backoff()
        settings = self.settings
        while not stop_requested():
            if self.own_pending_done and self.decoder is None and settings.count is None:
                self.decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode")
            if settings.count is not None and self.stats.entries >= settings.count:
                break
            if settings.duration_ms is not None and clock() - started >= settings.duration_ms:
                break
            if settings.drain and self.drained():
                break
            try:
                self.step(clock())
                backoff.reset()
            except RETRYABLE as error:
                delay = backoff.next_delay()
                print(f"aggregator: Redis unavailable ({error.__class__.__name__}); retrying in {delay:.1f}s",
                      file=self.log)
                self.own_pending_done = False  # whatever was in flight is still pending: take it again
                self.decoding = None
                time.sleep(delay)
        return self.stats
