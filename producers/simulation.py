"""The simulation loop: one tick produces a reading for every sensor in the fleet.

Each sensor samples at its own phase within the period (a fixed offset drawn from its name and
seed), as a real fleet does: devices switched on at different moments do not tick together. So a
tick's readings are computed at once, vectorised, but released as their times come; 10,000
sensors at 1 Hz arrive as a steady stream, not as a burst of 10,000 in one millisecond that every
worker must clear before the next second.

`step(now_ms)` does all the work that is due at `now_ms` and returns; `run` only adds the clock,
sleeping and the stop flag, so tests drive `step` with a fake clock and no threads.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from producers.faults import FaultInjector, FaultRates
from producers.noise import uniform
from producers.profile import FleetModel, FleetProfile
from producers.scheduler import RateScheduler
from producers.trim_guard import TrimGuard
from producers.writer import StreamWriter
from telemetry.schema import FieldMap, row_template

PHASE_PURPOSE = 109  # the noise stream a sensor's phase is drawn from
SEND_INTERVAL_S = 0.1  # live readings due within this long go out in one write (at most one period)


@dataclass(frozen=True, slots=True)
class SimulationSettings:
    names: tuple[str, ...]
    seed: int = 0
    rate_hz: float = 1.0
    count: int | None = None  # readings (ticks) per sensor, then stop
    duration_s: float | None = None  # event-time span, then stop
    backfill_start_ms: int | None = None  # write history from here as fast as Redis takes it
    faults: FaultRates = field(default_factory=FaultRates)
    faulty: tuple[str, ...] = ()  # the sensors faults apply to; empty: all
    batch_size: int = 1000


@dataclass(slots=True)
class TickRows:
    """One tick's readings in the order they fall due; `released` of them are written. Rows are
    formatted as they are released, so a live producer's work spreads over the period too."""

    sensors: list[int]  # index into the fleet, per row
    ts_ms: list[int]  # per row
    values: Callable[[int], str]  # the row of a sensor
    released: int = 0

    def left(self) -> int:
        return len(self.sensors) - self.released

    def release(self, end: int) -> list[str]:
        values = self.values
        rows = [values(sensor) for sensor in self.sensors[self.released:end]]
        self.released = end
        return rows


def sensor_phases_ms(keys: np.ndarray, period_ms: float) -> np.ndarray:
    """Each sensor's offset within the period, in [0, period): stable for a name and seed."""
    return np.floor(uniform(keys, 0, PHASE_PURPOSE) * period_ms).astype(np.int64)


class Simulation:
    def __init__(self, settings: SimulationSettings, writer: StreamWriter, field_map: FieldMap,
                 start_ms: int, first_seq: list[int | None], trim_guard: TrimGuard | None = None) -> None:
        self.settings = settings
        self.writer = writer
        self.row_format = row_template(field_map).format
        self.names = list(settings.names)
        profile = FleetProfile.build(self.names, settings.seed)
        self.model = FleetModel(profile, epoch_ms=start_ms)
        self.faults = FaultInjector(settings.faults, profile.keys, 1000 / settings.rate_hz) if settings.faults.any() else None
        self.faulty = np.isin(self.names, settings.faulty) if settings.faulty else None
        self.scheduler = RateScheduler(settings.rate_hz, start_ms)
        self.phase_ms = sensor_phases_ms(profile.keys, 1000.0 / settings.rate_hz)
        self.by_phase = np.argsort(self.phase_ms, kind="stable")
        self.first_phase_ms, self.last_phase_ms = (int(self.phase_ms.min()), int(self.phase_ms.max())) \
            if len(self.phase_ms) else (0, 0)
        self.send_interval_ms = min(SEND_INTERVAL_S * 1000, 1000 / settings.rate_hz)
        self.tick = TickRows([], [], str)
        self.seq = np.array([0 if s is None else s + 1 for s in first_seq], dtype=np.int64)
        self.sent = np.zeros(len(self.names), dtype=np.int64)
        self.trim_guard = trim_guard
        self.end_ms = None if settings.duration_s is None else start_ms + int(settings.duration_s * 1000)

    @property
    def backfilling(self) -> bool:
        return self.settings.backfill_start_ms is not None

    def finished(self, now_ms: int) -> bool:
        return not self.tick.left() and self._ends_before_next_tick(now_ms)

    def _ends_before_next_tick(self, now_ms: int) -> bool:
        """The run's count or duration is reached, or a backfill without either has caught up:
        it writes only ticks whose every reading is in the past."""
        tick = self.scheduler.next_tick
        due = self.scheduler.due_ms(tick)
        if self.settings.count is not None and tick >= self.settings.count:
            return True
        if self.end_ms is not None and due >= self.end_ms:
            return True
        return (self.backfilling and self.settings.count is None and self.end_ms is None
                and due + self.last_phase_ms > now_ms)

    def _release_horizon_ms(self, now_ms: int) -> float:
        """Readings due by this time may be written now: live, those whose time has come."""
        return now_ms if not self.backfilling else float("inf")

    def _next_due_ms(self) -> int:
        if self.tick.left():
            return self.tick.ts_ms[self.tick.released]
        return self.scheduler.due_ms(self.scheduler.next_tick) + self.first_phase_ms

    def _tick_rows(self, tick_start_ms: int) -> TickRows:
        seq = self.seq
        ts = tick_start_ms + self.phase_ms
        temperature, humidity = self.model.step(seq.astype(np.uint64), ts)
        sent = np.ones(len(seq), dtype=bool)
        if self.faults is not None:
            faulty_t, faulty_h, faulty_sent = self.faults.apply(seq.astype(np.uint64), temperature, humidity)
            if self.faulty is None:
                temperature, humidity, sent = faulty_t, faulty_h, faulty_sent
            else:  # the others stay healthy
                temperature = np.where(self.faulty, faulty_t, temperature)
                humidity = np.where(self.faulty, faulty_h, humidity)
                sent = np.where(self.faulty, faulty_sent, sent)
        temperatures = np.round(temperature, 1).tolist()
        humidities = np.round(humidity, 1).tolist()
        seqs, stamps = seq.tolist(), ts.tolist()
        names, row_format = self.names, self.row_format
        indexes = self.by_phase[sent[self.by_phase]].tolist()
        self.seq = seq + 1
        return TickRows(indexes, [stamps[i] for i in indexes],
                        lambda i: row_format(names[i], stamps[i], temperatures[i], humidities[i], seqs[i]))

    def _release(self, horizon_ms: float, limit: int) -> list[str]:
        """Up to `limit` rows of the current tick that are due by `horizon_ms`."""
        tick = self.tick
        end = min(bisect_right(tick.ts_ms, horizon_ms, lo=tick.released), tick.released + limit)
        self.sent[tick.sensors[tick.released:end]] += 1  # a sensor appears once per tick
        return tick.release(end)

    def step(self, now_ms: int) -> int:
        """Write every reading due by now_ms (backfill: about one batch); returns readings written."""
        rows: list[str] = []
        horizon = self._release_horizon_ms(now_ms)
        while len(rows) < self.settings.batch_size:
            if not self.tick.left():
                if self._ends_before_next_tick(now_ms) or self._next_due_ms() > horizon:
                    break
                _, tick_start_ms = self.scheduler.take()
                self.tick = self._tick_rows(tick_start_ms)
            released = self._release(horizon, self.settings.batch_size - len(rows))
            if not released:
                break
            rows += released
        for start in range(0, len(rows), self.settings.batch_size):
            self.writer.submit(rows[start:start + self.settings.batch_size])
        if not self.backfilling:
            self.writer.flush()  # live readings go out now, not when the next tick fills a batch
        if self.trim_guard is not None:
            self.trim_guard.step(now_ms)
        return len(rows)

    def wait_s(self, now_ms: int, last_step_ms: int) -> float:
        """How long a live run sleeps: until the next reading is due, but at least until
        SEND_INTERVAL_S (or one period, if shorter) after the last step began, so readings go out
        many to a write; not at all when readings due a whole interval ago still wait (behind)."""
        interval_ms = self.send_interval_ms
        next_due_ms = self._next_due_ms()
        if next_due_ms <= now_ms - interval_ms:
            return 0.0
        return min(0.2, max(0.0, (max(next_due_ms, last_step_ms + interval_ms) - now_ms) / 1000.0))

    def run(self, clock_ms: Callable[[], int], sleep: Callable[[float], None],
            stop_requested: Callable[[], bool], on_progress: Callable[[int], None] | None = None) -> None:
        while not stop_requested() and not self.finished(clock_ms()):
            step_ms = clock_ms()
            written = self.step(step_ms)
            if on_progress is not None and written:
                on_progress(written)
            if not self.backfilling:
                sleep(self.wait_s(clock_ms(), step_ms))
        self.writer.close()

    def counts(self) -> dict[str, int]:
        """Readings per sensor handed to the writer; confirmed by Redis once `writer.flush()` returned."""
        return dict(zip(self.names, self.sent.tolist()))
