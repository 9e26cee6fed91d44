"""Rolling statistics per sensor, kept in buckets a tenth of the rolling window wide.

The rolling window as of a sensor's newest reading (time T) is every bucket that overlaps
(T - rolling, T]: all readings of the last `rolling`, plus those of the oldest bucket's part
before it, rounded out to whole buckets. That keeps a sensor's rolling state bounded (at most
eleven bucket summaries, whatever the sample rate), each bucket checkpointed on its own, and the
statistics exact: they equal pandas over the same buckets (tests/test_rolling.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from consumers.sensor_state import SensorState
from consumers.summary import Summary

BUCKETS_PER_WINDOW = 10


@dataclass(frozen=True, slots=True)
class RollingSpec:
    """The rolling window's geometry, and its statistics for one sensor.

    Totals always merge the buckets in time order, so they come out bit for bit the same
    whether a state was built reading by reading or restored from a checkpoint. The merge of
    every bucket but the newest is cached in the sensor's state (in memory only) and redone when
    that set of buckets changes: a reading then costs one merge, not ten.
    """

    rolling_ms: int
    bucket_ms: int = field(init=False)
    # Checkpoint slots per sensor: more than the buckets a window can overlap, so a bucket entering
    # the window never reuses the slot of one still in it.
    slots: int = field(init=False)

    def __post_init__(self) -> None:
        bucket_ms = max(1, self.rolling_ms // BUCKETS_PER_WINDOW)
        object.__setattr__(self, "bucket_ms", bucket_ms)
        object.__setattr__(self, "slots", -(-self.rolling_ms // bucket_ms) + 2)

    def bucket_start(self, ts_ms: int) -> int:
        return ts_ms - ts_ms % self.bucket_ms

    def slot(self, bucket_start: int) -> int:
        return (bucket_start // self.bucket_ms) % self.slots

    def in_window(self, bucket_start: int, as_of_ms: int) -> bool:
        return bucket_start + self.bucket_ms > as_of_ms - self.rolling_ms

    def add(self, state: SensorState, ts_ms: int, temperature_c: float | None, humidity_pct: float | None
            ) -> int | None:
        """Add a reading (state.max_ts already includes it). Returns the older bucket the checkpoint
        must now write on its own (consumers/sensor_state.py): the one the reading went to, when it
        is not the newest, or the newest before this reading started a newer one; else None."""
        start = ts_ms - ts_ms % self.bucket_ms
        edge = state.max_ts - self.rolling_ms - self.bucket_ms
        if start <= edge:
            return None
        buckets = state.buckets
        newest = max(buckets) if buckets else None
        bucket = buckets.get(start)
        if bucket is None:
            bucket = buckets[start] = Summary()
        bucket.add(temperature_c, humidity_pct)
        if newest is not None and start < newest:
            state.older_buckets = None  # an older bucket changed
            written = start
        else:
            written = newest if newest is not None and start > newest else None
        if min(buckets) <= edge:
            for stale in [s for s in buckets if s <= edge]:
                del buckets[stale]
        state.rolling_now = None
        return written if written in buckets else None

    def drop_stale(self, state: SensorState) -> None:
        """After loading: slots may hold buckets that left the window since they were written."""
        edge = state.max_ts - self.rolling_ms - self.bucket_ms
        for stale in [start for start in state.buckets if start <= edge]:
            del state.buckets[stale]

    def stats(self, state: SensorState) -> Summary:
        buckets = state.buckets
        if not buckets:
            return Summary()
        newest = max(buckets)
        # The older buckets change only as the newest moves on, as stale ones drop out (fewer
        # buckets) or as a late reading lands in one (`add` then clears the cache).
        key = (newest, len(buckets))
        cached = state.older_buckets
        if cached is None or cached[0] != key:
            older = Summary()
            for start in sorted(buckets)[:-1]:
                older.merge(buckets[start])
            cached = state.older_buckets = (key, older)
        total = cached[1].copy()
        total.merge(buckets[newest])
        return total
