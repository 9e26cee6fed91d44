"""What `consumers status` shows of the notifiers (consumers/notify/): per notifier group and
sink, what was delivered, retried and dead-lettered (counters every notifier adds to), and the
age of the oldest alert event the sink has not finished: the oldest of the group's unread
events, the events held by a notifier that no longer reports (dead: claimed after
--claim-idle), and what each live notifier reports for the sink. Read here, in the core, so that
status needs nothing of the notifier's package."""

from __future__ import annotations

import json
from dataclasses import dataclass

import redis

from telemetry.connection import as_text
from telemetry.keys import Keys
from telemetry.timeutil import now_ms, stream_id_ms

COUNTERS = ("delivered", "retried", "dead_lettered", "resent", "resend_failed")


@dataclass(frozen=True, slots=True)
class SinkStatus:
    group: str
    kind: str
    url: str
    delivered: int
    retried: int
    dead_lettered: int
    resent: int
    oldest_undelivered_s: float | None  # None: nothing waits for this sink


@dataclass(frozen=True, slots=True)
class NotifyGroupStatus:
    group: str
    notifiers: tuple[str, ...]  # live ones
    unread: int
    pending: int
    dead_letters: int
    sinks: tuple[SinkStatus, ...]


def _group_backlog(db: redis.Redis, streams: list[str], group: str, live: set[str]
                   ) -> tuple[int, int, int | None]:
    """(unread, pending, oldest entry time no live notifier holds or that nobody read yet)."""
    unread = pending = 0
    oldest: int | None = None

    def older(entry_id: str) -> None:
        nonlocal oldest
        moment = stream_id_ms(entry_id)
        oldest = moment if oldest is None else min(oldest, moment)

    for stream in streams:
        try:
            info = next((g for g in db.xinfo_groups(stream) if as_text(g["name"]) == group), None)
        except redis.ResponseError:
            continue  # no alert stream yet
        if info is None:
            continue
        pending += info["pending"]
        unread += info.get("lag") or 0
        first_unread = db.xrange(stream, f"({as_text(info['last-delivered-id'])}", "+", count=1)
        if first_unread:
            older(as_text(first_unread[0][0]))
        if info["pending"]:
            for consumer in db.xinfo_consumers(stream, group):
                if as_text(consumer["name"]) not in live and consumer["pending"]:
                    held = db.xpending_range(stream, group, "-", "+", 1, consumername=as_text(consumer["name"]))
                    if held:
                        older(as_text(held[0]["message_id"]))
    return unread, pending, oldest


def notify_statuses(db: redis.Redis, keys: Keys, alert_streams: list[str]) -> list[NotifyGroupStatus]:
    """Every notifier group found on the alert streams."""
    groups: set[str] = set()
    for stream in alert_streams:
        try:
            groups |= {as_text(g["name"]) for g in db.xinfo_groups(stream)}
        except redis.ResponseError:
            continue
    now = now_ms()
    found = []
    for group in sorted(groups):
        notify = keys.notify(group)
        reports = [json.loads(raw) for raw in (db.mget([notify.notifier(as_text(name))
                                                        for name in db.smembers(notify.notifiers)]) or [])
                   if raw is not None]
        live = [report for report in reports if not report.get("stopped")]
        unread, pending, backlog_ms = _group_backlog(db, alert_streams, group, {r["consumer"] for r in live})
        sinks = []
        for ident in sorted(as_text(value) for value in db.smembers(notify.sinks)):
            values = {as_text(k): as_text(v) for k, v in db.hgetall(notify.sink(ident)).items()}
            ages = [row["oldest_undelivered_s"] for report in live for row in report["sinks"]
                    if row["id"] == ident and row["oldest_undelivered_s"] is not None]
            if backlog_ms is not None:
                ages.append(round((now - backlog_ms) / 1000, 3))
            sinks.append(SinkStatus(group, values.get("kind", "?"), values.get("url", "?"),
                                    *(int(values.get(name, 0)) for name in COUNTERS[:4]),
                                    oldest_undelivered_s=max(ages) if ages else None))
        found.append(NotifyGroupStatus(group, tuple(sorted(r["consumer"] for r in live)), unread, pending,
                                       db.xlen(notify.dead_letter), tuple(sinks)))
    return found


def render_notify(status: NotifyGroupStatus) -> list[str]:
    lines = [(f"notify group {status.group}: {len(status.notifiers)} notifiers running, {status.unread} events "
             f"unread, {status.pending} in delivery, {status.dead_letters} dead letters")]
    for sink in status.sinks:
        age = "-" if sink.oldest_undelivered_s is None else f"{sink.oldest_undelivered_s:.1f}s"
        lines.append(f"  {sink.kind} {sink.url}: delivered {sink.delivered}, retried {sink.retried}, "
                     f"dead-lettered {sink.dead_lettered}, oldest undelivered {age}"
                     + (f", re-sent {sink.resent}" if sink.kind == "alertmanager" else ""))
    return lines
