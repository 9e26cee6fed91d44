"""Tick timing that holds its rate: tick k is due at start + k/rate, never at "last tick + period".

Sleeping a period after each tick accumulates the time spent working; computing every due time
from the start instead keeps an hour at 1 Hz at 3,600 ticks, whatever each tick cost.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class RateScheduler:
    rate_hz: float
    start_ms: int
    next_tick: int = 0

    def due_ms(self, tick: int) -> int:
        return self.start_ms + round(tick * 1000.0 / self.rate_hz)

    def take(self) -> tuple[int, int]:
        """The next tick number and its event time; advances the schedule."""
        tick = self.next_tick
        self.next_tick += 1
        return tick, self.due_ms(tick)
