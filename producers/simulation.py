"""The simulation loop: one tick produces a reading for every sensor in the fleet.

`step(now_ms)` does all the work that is due at `now_ms` and returns; `run` only adds the clock,
sleeping and the stop flag, so tests drive `step` with a fake clock and no threads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from producers.faults import FaultInjector, FaultRates
from producers.profile import FleetModel, FleetProfile
from producers.scheduler import RateScheduler
from producers.trim_guard import TrimGuard
from producers.writer import StreamWriter
from telemetry.schema import FieldMap, row_template


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
        self.seq = np.array([0 if s is None else s + 1 for s in first_seq], dtype=np.int64)
        self.sent = np.zeros(len(self.names), dtype=np.int64)
        self.trim_guard = trim_guard
        self.end_ms = None if settings.duration_s is None else start_ms + int(settings.duration_s * 1000)

    @property
    def backfilling(self) -> bool:
        return self.settings.backfill_start_ms is not None

    def finished(self, now_ms: int) -> bool:
        tick = self.scheduler.next_tick
        due = self.scheduler.due_ms(tick)
        if self.settings.count is not None and tick >= self.settings.count:
            return True
        if self.end_ms is not None and due >= self.end_ms:
            return True
        return self.backfilling and self.settings.count is None and self.end_ms is None and due > now_ms

    def _tick_rows(self, ts_ms: int) -> tuple[list[str], np.ndarray]:
        seq = self.seq
        temperature, humidity = self.model.step(seq.astype(np.uint64), np.full(len(seq), ts_ms, dtype=np.int64))
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
        seqs = seq.tolist()
        names, row_format = self.names, self.row_format
        rows = [row_format(names[i], ts_ms, temperatures[i], humidities[i], seqs[i])
                for i in np.flatnonzero(sent).tolist()]
        self.seq = seq + 1
        return rows, sent

    def step(self, now_ms: int) -> int:
        """Produce every tick due by now_ms (backfill: up to one batch); returns readings written."""
        rows: list[str] = []
        sent_now = np.zeros(len(self.names), dtype=np.int64)
        while not self.finished(now_ms) and len(rows) < self.settings.batch_size:
            if not self.backfilling and self.scheduler.due_ms(self.scheduler.next_tick) > now_ms:
                break
            _, ts_ms = self.scheduler.take()
            tick_rows, sent = self._tick_rows(ts_ms)
            rows += tick_rows
            sent_now += sent
        for start in range(0, len(rows), self.settings.batch_size):
            self.writer.submit(rows[start:start + self.settings.batch_size])
        if not self.backfilling:
            self.writer.flush()  # live readings go out now, not when the next tick fills a batch
        self.sent += sent_now
        if self.trim_guard is not None:
            self.trim_guard.step(now_ms)
        return len(rows)

    def run(self, clock_ms: Callable[[], int], sleep: Callable[[float], None],
            stop_requested: Callable[[], bool], on_progress: Callable[[int], None] | None = None) -> None:
        while not stop_requested() and not self.finished(clock_ms()):
            written = self.step(clock_ms())
            if on_progress is not None and written:
                on_progress(written)
            if not self.backfilling:
                sleep(min(0.2, self.scheduler.wait_s(clock_ms())))
        self.writer.close()

    def counts(self) -> dict[str, int]:
        """Readings per sensor handed to the writer; confirmed by Redis once `writer.flush()` returned."""
        return dict(zip(self.names, self.sent.tolist()))
