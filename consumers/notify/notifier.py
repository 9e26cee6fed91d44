"""The notifier's loop: every partition's alert stream read as one consumer group (the notifier
group), each notice handed to every sink, and acknowledged once every sink accepted it or gave
it up (dead-lettered). So a notifier killed at any moment loses nothing: what it read and did not
acknowledge stays pending in the group, and is read again by it after a restart (its own pending
entries first) or claimed by another notifier once idle for --claim-idle. A live notifier keeps
its unfinished entries from looking idle. Receivers may see a notice twice; its webhook-id is
the same each time.

Alertmanager forgets an alert it stops hearing about, so the alerts still firing are kept in
Redis (the group's `firing` hash, written before the notice is handed to the sinks) and re-sent
every --resend by one notifier of the group, across restarts."""

from __future__ import annotations

import hashlib
import json
import queue
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace

import redis
from redis.exceptions import NoPermissionError

from consumers.notify.messages import ENDING_STATES, Notice, alertmanager_alert, started_ms
from consumers.notify.sinks import AlertmanagerSink, GiveUp, Sink
from telemetry.backoff import RETRYABLE, Backoff
from telemetry.connection import Client, as_text, is_cluster
from telemetry.keys import NotifyKeys
from telemetry.records import AlertEvent
from telemetry.refusals import Retries
from telemetry.timeutil import now_ms

STATUS_EVERY_S = 1.0
STATUS_TTL_S = 15
RESOLVED_RETENTION_MS = 15 * 60_000  # re-sent resolutions, as Prometheus keeps resolved alerts
RESEND_CHUNK = 500
DEAD_LETTER_MAXLEN = 100_000


@dataclass(slots=True)
class NotifyStats:
    read: int = 0
    acknowledged: int = 0
    malformed: int = 0
    claimed: int = 0


def sink_id(sink: Sink) -> str:
    return f"{sink.kind}-{hashlib.sha1(sink.url.encode()).hexdigest()[:12]}"


class Notifier:
    def __init__(self, db: Client, streams: list[str], keys: NotifyKeys, consumer: str, sinks: list[Sink], *,
                 start: str = "new", max_in_flight: int = 20_000, max_queued: int = 1000,
                 claim_idle_ms: int = 30_000,
                 resend_ms: int = 60_000, horizon_ms: int = 240_000, pipeline: str = "telemetry",
                 external_url: str = "http://localhost:8080", block_ms: int = 100, drain: bool = False,
                 duration_ms: int | None = None) -> None:
        self.db, self.streams, self.keys, self.consumer, self.sinks = db, streams, keys, consumer, sinks
        self.start, self.max_in_flight, self.claim_idle_ms = start, max_in_flight, claim_idle_ms
        self.max_queued = max_queued
        self.resend_ms, self.horizon_ms, self.pipeline, self.external_url = resend_ms, horizon_ms, pipeline, external_url
        self.block_ms, self.drain, self.duration_ms = block_ms, drain, duration_ms
        self.retries = Retries(transport=Backoff(max_s=5.0))  # the loop's: a refusal is said once
        self.group = keys.group
        self.stats = NotifyStats()
        self.in_flight: dict[tuple[str, str], int] = {}  # (stream, entry id) -> sinks still delivering
        self.read_at: dict[tuple[str, str], float] = {}  # monotonic time it was read or last refreshed
        self._done: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self._acks: dict[str, list[str]] = defaultdict(list)
        self._history = dict.fromkeys(streams, "0")  # own pending entries first (after a crash)
        self._claim_cursor = dict.fromkeys(streams, "0-0")
        self._next_claim = self._next_refresh = self._next_status = self._next_resend = 0.0
        self._published: dict[str, dict[str, int]] = {}  # sink id -> counts already added in Redis
        self._stop_requested: Callable[[], bool] = lambda: False
        for sink in sinks:
            sink.bind(self._on_done, self._dead_letter)

    # -- setup --------------------------------------------------------------------------------

    def ensure_groups(self) -> None:
        """The notifier group on every alert stream (MKSTREAM: the aggregator may not have written
        yet). BUSYGROUP means it exists, and keeps its position. Notifiers whose status expired
        are forgotten from the group's list of notifiers."""
        names = sorted(self.db.smembers(self.keys.notifiers))
        if names:
            gone = [name for name, status in zip(names, self.db.mget([self.keys.notifier(n) for n in names]))
                    if status is None]
            if gone:
                self.db.srem(self.keys.notifiers, *gone)
        for stream in self.streams:
            try:
                self.db.xgroup_create(stream, self.group, id="$" if self.start == "new" else "0", mkstream=True)
            except redis.ResponseError as error:
                if "BUSYGROUP" not in str(error):
                    raise

    # -- the loop -----------------------------------------------------------------------------

    def run(self, stop_requested: Callable[[], bool], grace_s: float = 10.0) -> NotifyStats:
        self._stop_requested = stop_requested
        for sink in self.sinks:
            sink.start()
        deadline = None if self.duration_ms is None else time.monotonic() + self.duration_ms / 1000
        self._retry(self.ensure_groups)
        while not stop_requested() and (deadline is None or time.monotonic() < deadline):
            try:
                if not self.step():
                    break
                self._went_through(self.retries)
            except (*RETRYABLE, NoPermissionError) as error:  # the last: until an operator fixes the ACL
                time.sleep(self._retry_delay(self.retries, error))
            except redis.ResponseError as error:
                if "NOGROUP" not in str(error):
                    raise
                self.ensure_groups()  # the alert streams were deleted (group reset or delete)
        self._finish(grace_s)
        return self.stats

    def step(self) -> bool:
        """One round: acknowledge what ended, housekeeping, read and hand out. False: drained."""
        self._collect_done()
        self._flush_acks()
        now = time.monotonic()
        if now >= self._next_status:
            self._next_status = now + STATUS_EVERY_S
            self.publish_status()
        if now >= self._next_refresh:
            self._next_refresh = now + self.claim_idle_ms / 3000
            self._refresh_in_flight(now)
        if now >= self._next_claim:
            self._next_claim = now + self.claim_idle_ms / 2000
            self._claim()
        if now >= self._next_resend:
            self._next_resend = now + self.resend_ms / 1000
            self.resend_firing()
        room = self.room()
        if room <= 0:
            self._wait_done(self.block_ms / 1000)
            return True
        reading_new = not self._history
        entries = self._read(room)
        if entries:
            self._dispatch(entries)
        elif self.drain and reading_new and not self.in_flight:
            return False
        return True

    def room(self) -> int:
        """How many more events to read: while the least busy sink has fewer than `max_queued`
        waiting, up to `max_in_flight` unacknowledged in all. So a slow sink falls behind alone,
        the others keep up, until it holds `max_in_flight` events."""
        least_queued = min(sink.queued() for sink in self.sinks)
        return min(self.max_queued - least_queued, self.max_in_flight - len(self.in_flight))

    def _read(self, room: int) -> list[tuple[str, str, dict | None]]:
        count = max(1, room // len(self.streams))
        if self._history:  # own pending entries first: no BLOCK, they are there
            positions = dict(self._history)
        else:
            positions = dict.fromkeys(self.streams, ">")
        block = None if self._history or is_cluster(self.db) else self.block_ms
        reply = self._xreadgroup(positions, count, block)
        entries = []
        for stream, found in reply:
            stream = as_text(stream)
            if stream in self._history:
                if len(found) < count:
                    del self._history[stream]
                else:
                    self._history[stream] = found[-1][0]
            entries += [(stream, as_text(entry_id), fields) for entry_id, fields in found]
        for stream in [s for s in self._history if s not in {as_text(r[0]) for r in reply}]:
            del self._history[stream]
        return entries

    def _xreadgroup(self, positions: dict[str, str], count: int, block: int | None) -> list:
        if not is_cluster(self.db):
            reply = self.db.xreadgroup(self.group, self.consumer, positions, count=count, block=block)
            return list(reply.items() if isinstance(reply, dict) else reply or [])
        found = []  # a cluster: one stream per call (each partition has its own slot)
        for stream, position in positions.items():
            reply = self.db.xreadgroup(self.group, self.consumer, {stream: position}, count=count)
            found += list(reply.items() if isinstance(reply, dict) else reply or [])
        if not found and block:
            time.sleep(block / 1000)
        return found

    def _dispatch(self, entries: list[tuple[str, str, dict | None]]) -> None:
        notices: list[Notice] = []
        for stream, entry_id, fields in entries:
            key = (stream, entry_id)
            if key in self.in_flight:
                continue  # read again (own history, a claim): already being delivered
            self.stats.read += 1
            if not fields:  # trimmed or deleted while pending: nothing left to send
                self._acks[stream].append(entry_id)
                continue
            try:
                event = AlertEvent.decode(fields)
                started_ms(event)  # every sink needs it
            except (KeyError, ValueError) as error:
                self.stats.malformed += 1
                self._write_dead_letter({"sink": "-", "reason": f"malformed alert entry: {error!r}",
                                         "stream": stream, "entry_id": entry_id,
                                         "event": json.dumps(fields, ensure_ascii=False)})
                self._acks[stream].append(entry_id)
                continue
            notices.append(Notice(stream, entry_id, event, fields))
        if not notices:
            return
        notices = self._remember_firing(notices)
        now = time.monotonic()
        for notice in notices:
            self.in_flight[notice.key] = len(self.sinks)
            self.read_at[notice.key] = now
        for sink in self.sinks:
            sink.submit(notices)

    def _remember_firing(self, notices: list[Notice]) -> list[Notice]:
        """Before any sink sends: firing alerts are added unless already known (a resolution that
        overtook its firing event, read by another notifier, wins); endings replace them. The
        sensors' silent alerts are followed too (`silent:<sensor>`), and each other notice of a
        sensor whose silent alert fires is marked inhibited by it, in stream order."""
        sensors = sorted({notice.event.sensor for notice in notices})
        silent = dict(zip(sensors, self.db.hmget(self.keys.firing, [f"silent:{sensor}" for sensor in sensors])))
        pipeline = self.db.pipeline(transaction=False)
        marked = []
        for notice in notices:
            event = notice.event
            value = json.dumps(notice.fields, ensure_ascii=False)
            ending = event.state in ENDING_STATES
            if ending:
                pipeline.hset(self.keys.firing, event.alert_id, value)
            else:
                pipeline.hsetnx(self.keys.firing, event.alert_id, value)
            if event.kind == "silent" and not event.alert_id.endswith(":flapping"):
                silent[event.sensor] = None if ending else event.alert_id
                if ending:
                    pipeline.hdel(self.keys.firing, f"silent:{event.sensor}")
                else:
                    pipeline.hset(self.keys.firing, f"silent:{event.sensor}", event.alert_id)
            elif silent.get(event.sensor):
                notice = replace(notice, inhibited_by=silent[event.sensor])
            marked.append(notice)
        pipeline.execute()
        return marked

    # -- completion ---------------------------------------------------------------------------

    def _on_done(self, notice: Notice) -> None:
        self._done.put(notice.key)  # from a sink's thread; the loop acknowledges

    def _wait_done(self, timeout_s: float) -> None:
        try:
            key = self._done.get(timeout=timeout_s)
        except queue.Empty:
            return
        self._done.put(key)
        self._collect_done()

    def _collect_done(self) -> None:
        while True:
            try:
                key = self._done.get_nowait()
            except queue.Empty:
                return
            left = self.in_flight.get(key)
            if left is None:
                continue
            if left > 1:
                self.in_flight[key] = left - 1
                continue
            del self.in_flight[key]
            self.read_at.pop(key, None)
            self._acks[key[0]].append(key[1])

    def _flush_acks(self) -> None:
        if not self._acks:
            return
        pipeline = self.db.pipeline(transaction=False)
        for stream, ids in self._acks.items():
            pipeline.xack(stream, self.group, *ids)
        pipeline.execute()
        self.stats.acknowledged += sum(len(ids) for ids in self._acks.values())
        self._acks.clear()

    def _dead_letter(self, give_up: GiveUp) -> bool:
        """From a sink's thread: the dead letters are written before the notices may be
        acknowledged; while Redis does not answer, retried until it does or the notifier stops."""
        retries = Retries(transport=Backoff(max_s=5.0))  # a sink's thread: a policy of its own
        while True:
            try:
                for notice in give_up.notices:
                    self._write_dead_letter({
                        "sink": give_up.sink.name, "reason": give_up.reason,
                        "status": "" if give_up.result.status is None else str(give_up.result.status),
                        "response": give_up.result.detail, "attempts": str(give_up.attempts),
                        "message_id": notice.message_id, "stream": notice.stream, "entry_id": notice.entry_id,
                        "alert_id": notice.event.alert_id, "state": notice.event.state,
                        "sensor": notice.event.sensor, "event": json.dumps(notice.fields, ensure_ascii=False)})
                self._went_through(retries)
                return True
            except (*RETRYABLE, NoPermissionError) as error:
                if self._stop_requested():
                    return False
                time.sleep(self._retry_delay(retries, error, "the dead letters of a sink"))

    def _write_dead_letter(self, fields: dict[str, str]) -> None:
        self.db.xadd(self.keys.dead_letter, {**fields, "at_ms": str(now_ms())}, maxlen=DEAD_LETTER_MAXLEN,
                     approximate=True)

    # -- keeping unfinished entries, claiming a dead notifier's ------------------------------

    def _refresh_in_flight(self, now: float) -> None:
        """Entries still being delivered (a receiver retried for minutes) are claimed again by
        this notifier (JUSTID), which resets their idle time: others claim only the dead's."""
        stale = now - self.claim_idle_ms / 3000
        by_stream: dict[str, list[str]] = defaultdict(list)
        for key, read_at in self.read_at.items():
            if read_at <= stale:
                by_stream[key[0]].append(key[1])
        for stream, ids in by_stream.items():
            self.db.xclaim(stream, self.group, self.consumer, 0, ids, justid=True)
            for entry_id in ids:
                self.read_at[(stream, entry_id)] = now

    def _claim(self) -> None:
        """Entries a notifier read and did not finish for --claim-idle: it died."""
        for stream in self.streams:
            room = self.room()
            if room <= 0:
                return
            cursor, claimed, *_ = self.db.xautoclaim(stream, self.group, self.consumer, self.claim_idle_ms,
                                                     self._claim_cursor[stream], count=min(room, 500))
            self._claim_cursor[stream] = as_text(cursor)
            fresh = [(stream, as_text(entry_id), fields) for entry_id, fields in claimed
                     if (stream, as_text(entry_id)) not in self.in_flight]
            if fresh:
                self.stats.claimed += len(fresh)
                self._dispatch(fresh)

    # -- Alertmanager re-sends ----------------------------------------------------------------

    def resend_firing(self) -> None:
        """Every alert still firing, to every Alertmanager, with endsAt a horizon ahead, and the
        recent resolutions with their end; by one notifier of the group per interval, which also
        forgets resolutions older than the retention (with or without an Alertmanager)."""
        if not self.db.set(self.keys.resend_lock, self.consumer, nx=True, px=max(1, int(self.resend_ms * 0.8))):
            return
        managers = [sink for sink in self.sinks if isinstance(sink, AlertmanagerSink)]
        now = now_ms()
        alerts, expired = [], []
        for alert_id, value in self.db.hgetall(self.keys.firing).items():
            if alert_id.count(":") == 1:
                continue  # silent:<sensor>, not an alert (alert ids have three or four parts)
            event = AlertEvent.decode(json.loads(value))
            if event.state in ENDING_STATES and now - event.ts > RESOLVED_RETENTION_MS:
                expired.append(alert_id)
            elif managers:
                alerts.append(alertmanager_alert(event, self.pipeline, self.external_url, now, self.horizon_ms))
        if expired:
            self.db.hdel(self.keys.firing, *expired)
        for start in range(0, len(alerts), RESEND_CHUNK):
            for sink in managers:
                sink.resend(alerts[start:start + RESEND_CHUNK])

    # -- status -------------------------------------------------------------------------------

    def sink_status(self) -> list[dict]:
        now = now_ms()
        rows = []
        for sink in self.sinks:
            oldest = sink.oldest_undelivered_ms()
            rows.append({"id": sink_id(sink), "kind": sink.kind, "url": sink.name.split(" ", 1)[1],
                         "queued": sink.queued(),
                         "oldest_undelivered_s": None if oldest is None else round((now - oldest) / 1000, 3)})
        return rows

    def publish_status(self, stopped: bool = False) -> None:
        """Counter increments since the last publish (so sums over notifiers are right), and this
        notifier's view: per sink, what waits and the oldest undelivered notice's age."""
        pipeline = self.db.pipeline(transaction=False)
        for sink in self.sinks:
            ident = sink_id(sink)
            counts = {name: getattr(sink.counts, name) for name in sink.counts.__slots__}
            published = self._published.setdefault(ident, dict.fromkeys(counts, 0))
            pipeline.sadd(self.keys.sinks, ident)
            pipeline.hset(self.keys.sink(ident), mapping={"kind": sink.kind, "url": sink.name.split(" ", 1)[1]})
            for name, value in counts.items():
                if value != published[name]:
                    pipeline.hincrby(self.keys.sink(ident), name, value - published[name])
            self._published[ident] = counts
        status = {"consumer": self.consumer, "stopped": stopped, "in_flight": len(self.in_flight),
                  "read": self.stats.read, "acknowledged": self.stats.acknowledged, "sinks": self.sink_status(),
                  "at_ms": now_ms()}
        pipeline.sadd(self.keys.notifiers, self.consumer)
        pipeline.set(self.keys.notifier(self.consumer), json.dumps(status), ex=STATUS_TTL_S)
        pipeline.execute()

    def _finish(self, grace_s: float) -> None:
        """Graceful stop: wait up to `grace_s` for what is in flight, acknowledge it, then stop
        the sinks; anything left stays pending and is sent again by the next notifier."""
        deadline = time.monotonic() + grace_s
        while self.in_flight and time.monotonic() < deadline:
            self._wait_done(0.05)
            self._collect_done()
        for sink in self.sinks:
            sink.stop(timeout_s=1.0)
        self._collect_done()
        try:
            self._flush_acks()
            self.publish_status(stopped=True)
        except RETRYABLE:
            pass  # left pending: sent again after a restart

    def _retry(self, call: Callable[[], None]) -> None:
        while True:
            try:
                call()
                self._went_through(self.retries)
                return
            except (*RETRYABLE, NoPermissionError) as error:
                if self._stop_requested():
                    raise
                time.sleep(self._retry_delay(self.retries, error))

    @staticmethod
    def _retry_delay(retries: Retries, error: Exception, retrying: str = "") -> float:
        delay, line = retries.failed(error, retrying)
        if line is not None:
            print(f"notify: {line}", file=sys.stderr)
        return delay

    @staticmethod
    def _went_through(retries: Retries) -> None:
        if (ended := retries.went_through()) is not None:
            print(f"notify: {ended}", file=sys.stderr)
