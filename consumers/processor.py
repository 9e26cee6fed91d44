"""One partition's processing: readings in stream order in, window aggregates, alert events, dead
letters and changed state out. No Redis here: the worker reads and commits; this decides.

Time comes from the data. Each sensor's watermark is its newest event time, and a window closes
once the watermark passes its end plus grace. A silent sensor is judged on the partition's clock:
the newest event time of any of its readings, moved to the wall clock (less a margin) only while
the partition has nothing unread or pending. So a backlog after an outage is replayed with the
decisions of an uninterrupted run: no false silence, no window closed early.

A reading whose window was already emitted (it came late: a gateway's buffer, a producer that
stalled past idle) revises it: the window is reopened from the copy kept when it was emitted,
and emitted again with the next revision when it closes again. Lateness is judged on the
sensor's own watermark, so a sensor silent for hours still revises; only a reading older than
the allowed lateness behind its sensor's newest is dead-lettered. Kept windows live in Redis:
the worker fetches those a batch needs (`windows_to_fetch`, `provide`) before applying it.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections import Counter
from dataclasses import dataclass, field

from consumers.alerting import RuleSet, on_reading, on_rolling, on_silence, silence_deadline
from consumers.batch import CommitBatch
from consumers.rolling import RollingSpec
from consumers.sensor_state import SensorState
from consumers.summary import Summary
from consumers.windows import NONE, Window
from telemetry.records import AlertEvent, DeadLetterRecord, WindowAggregate
from telemetry.schema import FieldMap, Reading

WindowKey = tuple[str, int]  # (sensor, window start)

# While caught up, the partition clock follows the wall clock this far behind, so a reading still
# on its way (or stamped by a producer whose clock runs a little behind) is not judged silent.
WALL_CLOCK_MARGIN_MS = 5_000
# Dead-lettered seqs a sensor keeps until readings pass them; beyond this the oldest are forgotten.
SET_ASIDE_LIMIT = 1_000
# Seq gaps a sensor remembers, so that a reading arriving late is told from a duplicate; past this
# many, the oldest gap stays counted as missing and a reading filling it is taken for a duplicate.
GAP_LIMIT = 100
# The most wall-clock time one read may vouch for: a worker reads at least every block interval
# (0.1 s by default); a read that took longer was held up (Redis paused, the worker frozen).
LONGEST_LOOK_MS = 1_000
LATE_FIELDS = FieldMap(version=None)  # how a reading past the allowed lateness shows in its dead letter


@dataclass(frozen=True, slots=True)
class ProcessingSettings:
    window_ms: int
    grace_ms: int
    idle_ms: int
    rolling: RollingSpec
    rules: RuleSet
    allowed_lateness_ms: int = 3_600_000

    @property
    def kept_windows(self) -> int:
        """Slots of a sensor's ring of emitted windows: every window a reading within the allowed
        lateness may fall in has a slot of its own."""
        return -(-(self.allowed_lateness_ms + self.grace_ms) // self.window_ms) + 1

    def window_slot(self, start_ms: int) -> int:
        return start_ms // self.window_ms % self.kept_windows


@dataclass(slots=True)
class Outputs:
    """What the batches since the last commit produced: written by the next commit, all or nothing."""

    aggregates: list[WindowAggregate] = field(default_factory=list)
    alerts: list[AlertEvent] = field(default_factory=list)
    dead_letters: list[DeadLetterRecord] = field(default_factory=list)
    counters: Counter = field(default_factory=Counter)
    changed_sensors: set[str] = field(default_factory=set)
    changed_buckets: set[tuple[str, int]] = field(default_factory=set)  # older rolling buckets to write
    closed_windows: dict[WindowKey, Window] = field(default_factory=dict)  # emitted: kept for revisions
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
        self._fetched: dict[WindowKey, Window | None] = {}  # kept windows read for this commit's readings
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
        temperatures, humidities = columns.metric_lists()
        for entry_id, sensor, ts_ms, temperature_c, humidity_pct, seq in zip(
                columns.ids, columns.sensors, columns.ts_ms.tolist(), temperatures, humidities, columns.seq.tolist()):
            self.apply_reading(entry_id, sensor, ts_ms, temperature_c, humidity_pct, seq)

    def windows_to_fetch(self, batch: CommitBatch) -> list[WindowKey]:
        """The emitted windows this batch's readings would revise, and that only Redis holds. A
        window that closes while the batch is applied is in `closed_windows`; so only windows
        closed before it are asked for."""
        wanted: dict[WindowKey, None] = {}
        window_ms = self.settings.window_ms
        columns = batch.readings
        for sensor, ts_ms in zip(columns.sensors, columns.ts_ms.tolist()):
            state = self.sensors.get(sensor)
            if state is None:
                continue
            start = ts_ms - ts_ms % window_ms
            key = (sensor, start)
            if (start not in state.windows and self._closed(state, start) and not self._too_late(state, start)
                    and key not in self.outputs.closed_windows and key not in self._fetched):
                wanted[key] = None
        return list(wanted)

    def provide(self, found: dict[WindowKey, Window | None]) -> None:
        """The kept windows asked for: None where none was kept, as the window was never emitted."""
        self._fetched.update(found)

    def _closed(self, state: SensorState, start: int) -> bool:
        settings = self.settings
        return (start + settings.window_ms + settings.grace_ms <= state.max_ts
                or start + settings.window_ms <= state.closed_through)

    def _too_late(self, state: SensorState, start: int) -> bool:
        settings = self.settings
        return start + settings.window_ms + settings.grace_ms + settings.allowed_lateness_ms <= state.max_ts

    def _reopen(self, sensor: str, state: SensorState, start: int) -> Window:
        """The window a late reading revises, from its copy kept at emission, or a new one where
        it was never emitted (no reading had fallen in it)."""
        key = (sensor, start)
        emitted = self.outputs.closed_windows.get(key)
        if emitted is None:
            emitted = self._fetched.get(key)
        window = state.windows[start] = emitted.reopened() if emitted is not None else Window(start)
        return window

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
        """Move the sensor's seq to `seq`, counting a gap as missing; a seq below it is taken only
        where it fills a gap (a reading that came late), which it then no longer counts as missing.
        False if seen before."""
        if state.max_seq != NONE and seq <= state.max_seq:
            return self._fill_gap(state, seq)
        passed = bisect.bisect_right(state.set_aside, seq) if state.set_aside else 0
        if state.max_seq == NONE and seq > 0:
            # Seqs before the first one seen may be late, or from before this group started:
            # awaited, but not counted as missing.
            state.gaps.append([0, seq - 1, 0])
        elif state.max_seq != NONE and seq > state.max_seq + 1:
            dead_lettered = [s for s in state.set_aside[:passed] if s != seq]
            first = state.max_seq + 1
            for skipped in dead_lettered:
                if skipped > first:
                    state.gaps.append([first, skipped - 1, 1])
                first = skipped + 1
            if first < seq:
                state.gaps.append([first, seq - 1, 1])
            gap = seq - state.max_seq - 1 - len(dead_lettered)
            self.outputs.counters["missing_seq"] += gap
            state.missing_seq += gap
        del state.gaps[:-GAP_LIMIT]
        if passed:
            del state.set_aside[:passed]
        state.max_seq = seq
        return True

    def _fill_gap(self, state: SensorState, seq: int) -> bool:
        gaps = state.gaps
        at = bisect.bisect_right(gaps, [seq, math.inf]) - 1  # the last gap starting at or before seq
        if at < 0 or gaps[at][1] < seq:
            return False
        first, last, counted = gaps[at]
        gaps[at:at + 1] = [part for part in ([first, seq - 1, counted], [seq + 1, last, counted]) if part[0] <= part[1]]
        if counted:
            self.outputs.counters["missing_seq"] -= 1
            state.missing_seq -= 1
        return True

    def apply_reading(self, entry_id: str, sensor: str, ts_ms: int, temperature_c: float | None,
                      humidity_pct: float | None, seq: int) -> None:
        """One reading; a metric it does not carry is None (windows, rolling statistics and rules
        on that metric skip it)."""
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
        if self.clock_ms - ts_ms >= settings.idle_ms:
            # A source catching up (a gateway's buffer, a producer resumed): its sensor is not
            # silent while its old readings arrive, nor its windows idle.
            state.heard_ms = self.clock_ms
        start = ts_ms - ts_ms % settings.window_ms
        window = state.windows.get(start)
        late = window is None and self._closed(state, start)
        if late:
            if self._too_late(state, start):
                self._count(state, "too_late")
                out.dead_letters.append(DeadLetterRecord.of(
                    entry_id, f"late: window {start} is past the allowed lateness (watermark {state.max_ts})",
                    Reading(sensor, ts_ms, temperature_c, humidity_pct, seq if seq >= 0 else None).encode(LATE_FIELDS)))
                return
            window = self._reopen(sensor, state, start)
        elif window is None:
            window = state.windows[start] = Window(start)
        if late or window.revision:
            self._count(state, "late")
        rules = settings.rules
        before = self.rolling_stats(state) if rules.needs_rolling_before and state.buckets else None
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
            on_rolling(emit, rules, sensor, state, state.max_ts, self.rolling_stats(state), temperature_c, humidity_pct)
        self._close_by_watermark(sensor, state)
        if sensor not in self._scheduled:
            self._schedule(sensor)

    def _count(self, state: SensorState, counter: str) -> None:
        """A counter of the partition's and of the sensor's own (status, metrics, the report)."""
        self.outputs.counters[counter] += 1
        setattr(state, counter, getattr(state, counter) + 1)

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
        """The next commit writes every window emitted so far to Redis's kept windows: what was
        fetched for these outputs is not needed again."""
        outputs, self.outputs = self.outputs, Outputs()
        self._fetched.clear()
        return outputs

    # -- closing ----------------------------------------------------------------------------

    def _emit_alert(self, event: AlertEvent) -> None:
        self.outputs.alerts.append(event)
        self.outputs.counters["alerts_emitted"] += 1

    def _close(self, sensor: str, state: SensorState, window: Window, closed_by: str) -> None:
        settings = self.settings
        end = window.start_ms + settings.window_ms
        out = self.outputs
        out.aggregates.append(window.aggregate(sensor, settings.window_ms, closed_by))
        out.counters["windows_emitted"] += 1
        if window.revision:
            self._count(state, "revisions")
        out.closed_windows[(sensor, window.start_ms)] = window
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
        if clock_ms - state.last_heard >= settings.idle_ms:
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
        deadlines = [max(start + settings.window_ms + settings.grace_ms, state.last_heard) + settings.idle_ms
                     for start in state.windows]
        silence = silence_deadline(settings.rules, state)
        if silence is not None:
            deadlines.append(silence)
        if not deadlines:
            return
        deadline = max(min(deadlines), self.clock_ms + 1)  # a visit that changed nothing waits for the clock
        self._scheduled[sensor] = deadline
        heapq.heappush(self._due, (deadline, sensor))
