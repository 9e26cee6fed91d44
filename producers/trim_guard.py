"""Warns before MAXLEN trimming deletes readings a consumer group has not read yet.

Redis trims by length whatever the groups have read, even entries still pending. Once the slowest
group's lag on a partition stream passes half of that stream's MAXLEN, the writer's trimming is
that close to cutting into unread data, so say so, naming the group and its lag, at most once per
interval.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import redis

from telemetry.lag import group_lags


@dataclass(slots=True)
class TrimGuard:
    db: redis.Redis
    streams: list[str]
    maxlen: int  # per stream
    check_every_ms: int = 1_000  # a backfill fills MAXLEN in seconds
    warn_every_ms: int = 60_000
    log: object = field(default_factory=lambda: sys.stderr)  # looked up when built: stderr may be replaced
    next_check_ms: int = 0
    last_warning_ms: int = field(default=-(10**15))
    warnings: int = 0

    def step(self, now_ms: int) -> str | None:
        """Check if due; return the warning text when one was printed."""
        if self.maxlen <= 0 or now_ms < self.next_check_ms:
            return None
        self.next_check_ms = now_ms + self.check_every_ms
        try:
            lags = [lag for stream in self.streams for lag in group_lags(self.db, stream, now=now_ms)]
        except (redis.ConnectionError, redis.TimeoutError):
            return None  # the writer reports outages; this check just skips a turn
        if not lags:
            return None
        slowest = max(lags, key=lambda lag: lag.lag_entries)
        if slowest.lag_entries <= self.maxlen // 2 or now_ms - self.last_warning_ms < self.warn_every_ms:
            return None
        self.last_warning_ms = now_ms
        self.warnings += 1
        text = (f"producer: WARNING group {slowest.group!r} lags {slowest.lag_entries} entries "
                f"({slowest.lag_seconds:.0f}s), on one partition, over half of its MAXLEN {self.maxlen}: trimming will delete "
                f"readings it has not read")
        print(text, file=self.log)
        return text
