"""Rolling statistics per sensor, kept in buckets a tenth of the rolling window wide.

The rolling window as of a sensor's newest reading (time T) is every bucket that overlaps
(T - rolling, T]: all readings of the last `rolling`, plus those of the oldest bucket's part
before it, rounded out to whole buckets. That keeps a sensor's rolling state bounded (at most
eleven bucket summaries, whatever the sample rate), each bucket checkpointed on its own, and the
statistics exact: they equal pandas over the same buckets (tests/test_rolling.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from consumers.sensor_state import SensorState
from consumers.summary import Summary

BUCKETS_PER_WINDOW = 10


@dataclass(frozen=True, slots=True)
class RollingSpec:
    rolling_ms: int

    @property
    def bucket_ms(self) -> int:
        return max(1, self.rolling_ms // BUCKETS_PER_WINDOW)

    @property
    def slots(self) -> int:
        """Checkpoint slots per sensor: more than the buckets a window can overlap, so a bucket
        entering the window never reuses the slot of one still in it."""
        return -(-self.rolling_ms // self.bucket_ms) + 2

    def bucket_start(self, ts_ms: int) -> int:
        return ts_ms - ts_ms % self.bucket_ms

    def slot(self, bucket_start: int) -> int:
        return (bucket_start // self.bucket_ms) % self.slots

    def in_window(self, bucket_start: int, as_of_ms: int) -> bool:
        return bucket_start + self.bucket_ms > as_of_ms - self.rolling_ms

    def add(self, state: SensorState, ts_ms: int, temperature_c: float, humidity_pct: float) -> int | None:
        """Add a reading (state.max_ts already includes it); returns its bucket, None if it is too old."""
        start = self.bucket_start(ts_ms)
        if not self.in_window(start, state.max_ts):
            return None
        bucket = state.buckets.get(start)
        if bucket is None:
            bucket = state.buckets[start] = Summary()
        bucket.add(temperature_c, humidity_pct)
        self.evict(state)
        return start

    def evict(self, state: SensorState) -> None:
        stale = [start for start in state.buckets if not self.in_window(start, state.max_ts)]
        for start in stale:
            del state.buckets[start]

    def stats(self, state: SensorState) -> Summary:
        total = Summary()
        for start, bucket in state.buckets.items():
            if self.in_window(start, state.max_ts):
                total.merge(bucket)
        return total
