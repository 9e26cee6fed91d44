"""Fault injection: the failures real sensors show, at rates set by flags, reproducible per name.

Rates and durations are in time, not in readings, so a fault looks the same to the alert rules
at 0.1 Hz and at 100 Hz: each rate is the expected number of fault starts per sensor per hour.
A spike affects one reading; stuck, dropout and drift start an episode of a random duration,
long enough for the built-in rule that should notice it (sensor-stuck after 5 minutes
unchanged, sensor-silent after 30 s, temperature-high above 40 °C). A dropout consumes seq
numbers without sending, as a radio loss would, so downstream gap detection sees it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from producers.noise import uniform

HOUR_MS = 3_600_000
MINUTE_MS = 60_000
STUCK_MINUTES = (6.0, 20.0)
DROPOUT_MINUTES = (1.0, 5.0)
DRIFT_MINUTES = (20.0, 40.0)
DRIFT_C_PER_MINUTE = (2.0, 3.0)  # upward, as a failing element or a sensor in the sun would
SPIKE_C = (8.0, 20.0)


@dataclass(frozen=True, slots=True)
class FaultRates:
    """Expected fault starts per sensor per hour."""

    spike: float = 0.0
    stuck: float = 0.0
    dropout: float = 0.0
    drift: float = 0.0

    def any(self) -> bool:
        return any((self.spike, self.stuck, self.dropout, self.drift))


@dataclass(slots=True)
class FaultInjector:
    rates: FaultRates
    keys: np.ndarray
    interval_ms: float  # between a sensor's readings
    stuck_left: np.ndarray = field(init=False)
    dropout_left: np.ndarray = field(init=False)
    drift_left: np.ndarray = field(init=False)
    drift_rate_c: np.ndarray = field(init=False)
    drift_offset_c: np.ndarray = field(init=False)
    last_temperature: np.ndarray = field(init=False)
    last_humidity: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        size = len(self.keys)
        self.stuck_left = np.zeros(size, dtype=np.int64)
        self.dropout_left = np.zeros(size, dtype=np.int64)
        self.drift_left = np.zeros(size, dtype=np.int64)
        self.drift_rate_c = np.zeros(size)
        self.drift_offset_c = np.zeros(size)
        self.last_temperature = np.full(size, np.nan)
        self.last_humidity = np.full(size, np.nan)

    def _chance(self, per_hour: float) -> float:
        """The probability per reading of a fault that starts `per_hour` times an hour."""
        return min(1.0, per_hour * self.interval_ms / HOUR_MS)

    def _readings(self, minutes: float) -> int:
        return max(1, round(minutes * MINUTE_MS / self.interval_ms))

    def _episode_starts(self, per_hour: float, left: np.ndarray, seq: np.ndarray, purpose: int,
                        minutes: tuple[float, float]) -> np.ndarray:
        shortest, longest = self._readings(minutes[0]), self._readings(minutes[1])
        starts = (left == 0) & (uniform(self.keys, seq, purpose) < self._chance(per_hour))
        lengths = shortest + (uniform(self.keys, seq, purpose + 1) * (longest - shortest)).astype(np.int64)
        left[starts] = lengths[starts]
        return starts

    def apply(self, seq: np.ndarray, temperature: np.ndarray, humidity: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (temperature, humidity, sent): `sent` is False where a dropout swallows the reading."""
        rates = self.rates
        if rates.drift:
            starts = self._episode_starts(rates.drift, self.drift_left, seq, 201, DRIFT_MINUTES)
            low, high = (c * self.interval_ms / MINUTE_MS for c in DRIFT_C_PER_MINUTE)
            self.drift_rate_c[starts] = (low + (high - low) * uniform(self.keys, seq, 204))[starts]
            drifting = self.drift_left > 0
            self.drift_offset_c = np.where(drifting, self.drift_offset_c + self.drift_rate_c, 0.0)
            self.drift_left[drifting] -= 1
            temperature = temperature + self.drift_offset_c
        if rates.spike:
            spikes = uniform(self.keys, seq, 211) < self._chance(rates.spike)
            size = SPIKE_C[0] + (SPIKE_C[1] - SPIKE_C[0]) * uniform(self.keys, seq, 212)
            sign = np.where(uniform(self.keys, seq, 213) < 0.5, -1.0, 1.0)
            temperature = np.where(spikes, temperature + sign * size, temperature)
        if rates.stuck:
            self._episode_starts(rates.stuck, self.stuck_left, seq, 221, STUCK_MINUTES)
            stuck = (self.stuck_left > 0) & ~np.isnan(self.last_temperature)
            temperature = np.where(stuck, self.last_temperature, temperature)
            humidity = np.where(stuck, self.last_humidity, humidity)
            self.stuck_left[self.stuck_left > 0] -= 1
        sent = np.ones(len(self.keys), dtype=bool)
        if rates.dropout:
            self._episode_starts(rates.dropout, self.dropout_left, seq, 231, DROPOUT_MINUTES)
            sent = self.dropout_left == 0
            self.dropout_left[~sent] -= 1
        temperature = np.clip(temperature, -80.0, 150.0)
        self.last_temperature, self.last_humidity = temperature, humidity
        return temperature, humidity, sent
