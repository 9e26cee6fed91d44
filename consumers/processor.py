"""One partition's processing: readings in stream order in, window aggregates, alert events, dead
letters and changed state out. No Redis here: the worker reads and commits; this decides.

Time comes from the data. Each sensor's watermark is its newest event time, and a window closes
once the watermark passes its end plus grace. A silent sensor is judged on the partition's clock:
the newest event time of any of its readings, moved to the wall clock (less a margin) only while
the partition has nothing unread or pending. So a backlog after an outage is replayed with the
decisions of an uninterrupted run: no false silence, no window closed early.
"""

from __future__ import annotations

import bisect
import heapq
from collections import Counter
from dataclasses import dataclass, field

from consumers.alerting import RuleSet, on_reading, on_rolling, on_silence, silence_deadline
from consumers.batch import CommitBatch
from consumers.rolling import RollingSpec
from consumers.sensor_state import SensorState
from consumers.summary import Summary
from consumers.windows import NONE, Window
from telemetry.records import AlertEvent, DeadLetterRecord, WindowAggregate

# While caught up, the partition clock follows the wall clock this far behind, so a reading still
# on its way (or stamped by a producer whose clock runs a little behind) is not judged silent.
WALL_CLOCK_MARGIN_MS = 5_000
# Dead-lettered seqs a sensor keeps until readings pass them; beyond this the oldest are forgotten.
SET_ASIDE_LIMIT = 1_000
# The most wall-clock time one read may vouch for: a worker reads at least every block interval
# (0.1 s by default); a read that took longer was held up (Redis paused, the worker frozen).
LONGEST_LOOK_MS = 1_000


@dataclass(frozen=True, slots=True)
class ProcessingSettings:
    window_ms: int
    grace_ms: int
    idle_ms: int
    rolling: RollingSpec
    rules: RuleSet


@dataclass(slots=True)
class Outputs:
    """What the batches since the last commit produced: written by the next commit, all or nothing."""

    aggregates: list[WindowAggregate] = field(default_factory=list)
    alerts: list[AlertEvent] = field(default_factory=list)
    dead_letters: list[DeadLetterRecord] = field(default_factory=list)
    counters: Counter = field(default_factory=Counter)
    changed_sensors: set[str] = field(default_factory=set)
    changed_buckets: set[tuple[str, int]] = field(default_factory=set)  # older rolling buckets to write
    entry_ids: list[str] = field(default_factory=list)  # to acknowledge

    def __bool__(self) -> bool:
        return bool(self.entry_ids or self.changed_sensors or self.counters or self.aggregates or self.alerts)


class PartitionProcessor:
    def __init__(self, settings: ProcessingSettings, sensors: dict[str, SensorState] | None = None,
                 clock_ms: int = NONE) -> None:
        self.settings = settings
        self.sensors: dict[str, SensorState] = sensors if sensors is not None else {}
        self.clock_ms = clock_ms
        self.outputs = Outputs()
        self._due: list[tuple[int, str]] = []
        self._watched_since: int | None = None  # wall time of the last read of this partition
        self._scheduled: dict[str, int] = {}
        for sensor in self.sensors:
            self._schedule(sensor)

    # -- input ------------------------------------------------------------------------------

    def apply(self, batch: CommitBatch) -> None:
        out = self.outputs
        out.entry_ids += batch.entry_ids
        out.dead_letters += [DeadLetterRecord.of(d.entry_id, d.reason, d.fields) for d in batch.dead_letters]
        if batch.dead_letters:
            out.counters["dead_lettered"] += len(batch.dead_letters)
        if batch.lost_ids:
            out.counters["lost_to_trim"] += len(batch.lost_ids)
        for letter in batch.dead_letters:
            if letter.sensor_seq is not None:
                self._set_aside(*letter.sensor_seq)
        columns = batch.readings
        for entry_id, sensor, ts_ms, temperature_c, humidity_pct, seq in zip(
                columns.ids, columns.sensors, columns.ts_ms.tolist(), columns.temperature_c.tolist(),
                columns.humidity_pct.tolist(), columns.seq.tolist()):
            self.apply_reading(entry_id, sensor, ts_ms, temperature_c, humidity_pct, seq)

    def _set_aside(self, sensor: str, seq: int) -> None:
        """A dead-lettered reading's seq, so the gap it leaves is not counted again as missing. It
        does not count as seen: a corrected resend with that seq is still applied."""
        state = self.sensors.get(sensor)
        if state is None:
            state = self.sensors[sensor] = SensorState()
        if (state.max_seq == NONE or seq > state.max_seq) and seq not in state.set_aside:
            bisect.insort(state.set_aside, seq)
            del state.set_aside[:-SET_ASIDE_LIMIT]
            self.outputs.changed_sensors.add(sensor)

    def _take_seq(self, state: SensorState, seq: int) -> bool:
        """Move the sensor's seq to `seq`, counting a gap as missing; False if seen before."""
        if state.max_seq != NONE and seq <= state.max_seq:
            return False
        passed = bisect.bisect_right(state.set_aside, seq) if state.set_aside else 0
        if state.max_seq != NONE and seq > state.max_seq + 1:
            gap = seq - state.max_seq - 1 - sum(1 for s in state.set_aside[:passed] if s != seq)
            self.outputs.counters["missing_seq"] += gap
            state.missing_seq += gap
        if passed:
            del state.set_aside[:passed]
        state.max_seq = seq
        return True

    def apply_reading(self, entry_id: str, sensor: str, ts_ms: int, temperature_c: float, humidity_pct: float,
                      seq: int) -> None:
        out = self.outputs
        state = self.sensors.get(sensor)
        if state is None:
            state = self.sensors[sensor] = SensorState()
        if seq >= 0:
            if not self._take_seq(state, seq):
                out.counters["duplicates"] += 1
                return
            out.changed_sensors.add(sensor)
        if ts_ms > self.clock_ms:
            self.advance_clock(ts_ms)
        settings = self.settings
        start = ts_ms - ts_ms % settings.window_ms
        if (start + settings.window_ms + settings.grace_ms <= state.max_ts
                or start + settings.window_ms <= state.closed_through):
            out.counters["late"] += 1
            out.dead_letters.append(DeadLetterRecord.of(
                entry_id, f"late: window {start} already closed (watermark {state.max_ts})",
                {"sensor": sensor, "ts": str(ts_ms), "temperature_c": repr(temperature_c),
                 "humidity_pct": repr(humidity_pct), **({"seq": str(seq)} if seq >= 0 else {})}))
            return
        rules = settings.rules
        before = self.rolling_stats(state) if rules.needs_rolling_before and state.buckets else None
        window = state.windows.get(start)
        if window is None:
            window = state.windows[start] = Window(start)
        window.add(ts_ms, temperature_c, humidity_pct)
        if ts_ms > state.max_ts:
            state.max_ts = ts_ms
        older = settings.rolling.add(state, ts_ms, temperature_c, humidity_pct)
        if older is not None:
            out.changed_buckets.add((sensor, older))
        out.counters["processed"] += 1
        out.changed_sensors.add(sensor)
        emit = self._emit_alert
        on_reading(emit, rules, sensor, state, ts_ms, temperature_c, humidity_pct, before)
        if rules.on_rolling:
            on_rolling(emit, rules, sensor, state, state.max_ts, self.rolling_stats(state))
        self._close_by_watermark(sensor, state)
        if sensor not in self._scheduled:
            self._schedule(sensor)

    def advance_clock(self, clock_ms: int) -> None:
        """Move the partition clock (never back) and act on every sensor deadline it passes."""
        if clock_ms <= self.clock_ms:
            return
        self.clock_ms = clock_ms
        self._visit_due(clock_ms)

    def _visit_due(self, clock_ms: int) -> None:
        due = self._due
        while due and due[0][0] <= clock_ms:
            deadline, sensor = heapq.heappop(due)
            if self._scheduled.get(sensor) != deadline:
                continue  # superseded
            del self._scheduled[sensor]
            self._visit(sensor, clock_ms)

    def observe(self, wall_ms: int, caught_up: bool) -> None:
        """After each read. While the partition has nothing unread or pending, silence is judged on
        the wall clock, but the clock moves only by the time this owner has watched it caught up:
        a first look after a takeover, an outage or a backlog moves nothing, so readings that a
        producer is still resending after Redis came back are not taken for silence."""
        watched_since, self._watched_since = self._watched_since, wall_ms
        if caught_up and watched_since is not None and self.clock_ms != NONE:
            watched = min(wall_ms - watched_since, LONGEST_LOOK_MS)  # a read that hung through a pause saw nothing
            self.advance_clock(min(wall_ms - WALL_CLOCK_MARGIN_MS, self.clock_ms + watched))

    def rolling_stats(self, state: SensorState) -> Summary:
        """As of the sensor's newest reading; computed once per change."""
        if state.rolling_now is None:
            state.rolling_now = self.settings.rolling.stats(state)
        return state.rolling_now

    def take_outputs(self) -> Outputs:
        outputs, self.outputs = self.outputs, Outputs()
        return outputs

    # -- closing ----------------------------------------------------------------------------

    def _emit_alert(self, event: AlertEvent) -> None:
        self.outputs.alerts.append(event)
        self.outputs.counters["alerts_emitted"] += 1

    def _close(self, sensor: str, state: SensorState, window: Window, closed_by: str) -> None:
        settings = self.settings
        end = window.start_ms + settings.window_ms
        self.outputs.aggregates.append(window.aggregate(sensor, settings.window_ms, closed_by))
        self.outputs.counters["windows_emitted"] += 1
        del state.windows[window.start_ms]
        state.closed_through = max(state.closed_through, end)
        self.outputs.changed_sensors.add(sensor)

    def _close_by_watermark(self, sensor: str, state: SensorState) -> None:
        lag = self.settings.window_ms + self.settings.grace_ms
        if min(state.windows) + lag > state.max_ts:
            return  # the usual case: the oldest open window is not due
        for start in sorted(state.windows):
            if start + lag <= state.max_ts:
                self._close(sensor, state, state.windows[start], "watermark")

    def _visit(self, sensor: str, clock_ms: int) -> None:
        """A deadline passed: close the windows of a sensor silent for `idle`, fire silent rules."""
        state = self.sensors[sensor]
        settings = self.settings
        if clock_ms - state.max_ts >= settings.idle_ms:
            for start in sorted(state.windows):
                if clock_ms >= start + settings.window_ms + settings.grace_ms + settings.idle_ms:
                    self._close(sensor, state, state.windows[start], "idle")
        if on_silence(self._emit_alert, settings.rules, sensor, state, clock_ms):
            self.outputs.changed_sensors.add(sensor)
        self._schedule(sensor)

    def _schedule(self, sensor: str) -> None:
        state = self.sensors[sensor]
        if state.max_ts == NONE:
            return  # only dead letters so far: nothing to close, no silence to judge
        settings = self.settings
        deadlines = [max(start + settings.window_ms + settings.grace_ms, state.max_ts) + settings.idle_ms
                     for start in state.windows]
        silence = silence_deadline(settings.rules, state)
        if silence is not None:
            deadlines.append(silence)
        if not deadlines:
            return
        deadline = max(min(deadlines), self.clock_ms + 1)  # a visit that changed nothing waits for the clock
        self._scheduled[sensor] = deadline
        heapq.heappush(self._due, (deadline, sensor))
