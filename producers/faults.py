"""Fault injection: the failures real sensors show, at rates set by flags, reproducible per name.

Rates are probabilities per reading. A spike affects one reading; stuck, dropout and drift start
an episode that lasts a random number of readings. A dropout consumes seq numbers without sending,
as a radio loss would, so downstream gap detection sees it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from producers.noise import uniform

STUCK_READINGS = (30, 300)
DROPOUT_READINGS = (10, 120)
DRIFT_READINGS = (300, 3000)
DRIFT_C_PER_READING = (0.01, 0.05)
SPIKE_C = (8.0, 20.0)


@dataclass(frozen=True, slots=True)
class FaultRates:
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

    def _episode_starts(self, rate: float, left: np.ndarray, seq: np.ndarray, purpose: int,
                        span: tuple[int, int]) -> np.ndarray:
        starts = (left == 0) & (uniform(self.keys, seq, purpose) < rate)
        lengths = span[0] + (uniform(self.keys, seq, purpose + 1) * (span[1] - span[0])).astype(np.int64)
        left[starts] = lengths[starts]
        return starts

    def apply(self, seq: np.ndarray, temperature: np.ndarray, humidity: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (temperature, humidity, sent): `sent` is False where a dropout swallows the reading."""
        rates = self.rates
        if rates.drift:
            starts = self._episode_starts(rates.drift, self.drift_left, seq, 201, DRIFT_READINGS)
            low, high = DRIFT_C_PER_READING
            sign = np.where(uniform(self.keys, seq, 203) < 0.5, -1.0, 1.0)
            self.drift_rate_c[starts] = (sign * (low + (high - low) * uniform(self.keys, seq, 204)))[starts]
            drifting = self.drift_left > 0
            self.drift_offset_c = np.where(drifting, self.drift_offset_c + self.drift_rate_c, 0.0)
            self.drift_left[drifting] -= 1
            temperature = temperature + self.drift_offset_c
        if rates.spike:
            spikes = uniform(self.keys, seq, 211) < rates.spike
            size = SPIKE_C[0] + (SPIKE_C[1] - SPIKE_C[0]) * uniform(self.keys, seq, 212)
            sign = np.where(uniform(self.keys, seq, 213) < 0.5, -1.0, 1.0)
            temperature = np.where(spikes, temperature + sign * size, temperature)
        if rates.stuck:
            self._episode_starts(rates.stuck, self.stuck_left, seq, 221, STUCK_READINGS)
            stuck = (self.stuck_left > 0) & ~np.isnan(self.last_temperature)
            temperature = np.where(stuck, self.last_temperature, temperature)
            humidity = np.where(stuck, self.last_humidity, humidity)
            self.stuck_left[self.stuck_left > 0] -= 1
        sent = np.ones(len(self.keys), dtype=bool)
        if rates.dropout:
            self._episode_starts(rates.dropout, self.dropout_left, seq, 231, DROPOUT_READINGS)
            sent = self.dropout_left == 0
            self.dropout_left[~sent] -= 1
        temperature = np.clip(temperature, -80.0, 150.0)
        self.last_temperature, self.last_humidity = temperature, humidity
        return temperature, humidity, sent
