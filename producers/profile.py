"""Each sensor's physical character, derived from its name and --seed alone."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from producers.noise import normal, sensor_key, uniform

DAY_MS = 86_400_000
NOISE_MEMORY = 0.9  # AR(1) coefficient: consecutive readings' noise is correlated, as real sensors' is


@dataclass(frozen=True, slots=True)
class FleetProfile:
    """Per-sensor constants as arrays, index-aligned with `names`, so a tick is a few numpy ops."""

    names: tuple[str, ...]
    keys: np.ndarray  # uint64
    base_temperature_c: np.ndarray
    daily_amplitude_c: np.ndarray
    peak_hour: np.ndarray
    base_humidity_pct: np.ndarray
    humidity_per_degree: np.ndarray  # humidity falls as temperature rises
    temperature_noise_c: np.ndarray
    humidity_noise_pct: np.ndarray
    drift_c_per_day: np.ndarray

    @classmethod
    def build(cls, names: list[str], seed: int) -> FleetProfile:
        keys = np.array([sensor_key(name, seed) for name in names], dtype=np.uint64)

        def draw(purpose: int, low: float, high: float) -> np.ndarray:
            return low + (high - low) * uniform(keys, 0, purpose)

        return cls(
            names=tuple(names),
            keys=keys,
            base_temperature_c=draw(101, 12.0, 26.0),
            daily_amplitude_c=draw(102, 1.5, 5.5),
            peak_hour=draw(103, 13.0, 16.0),
            base_humidity_pct=draw(104, 40.0, 70.0),
            humidity_per_degree=draw(105, 1.5, 3.0),
            temperature_noise_c=draw(106, 0.05, 0.25),
            humidity_noise_pct=draw(107, 0.3, 1.2),
            drift_c_per_day=draw(108, -0.3, 0.3),
        )


@dataclass(slots=True)
class FleetModel:
    """Clean (fault-free) signal; holds the AR(1) noise state between ticks."""

    profile: FleetProfile
    epoch_ms: int  # drift is measured from here, so a replay with the same --start matches
    temperature_noise: np.ndarray | None = None
    humidity_noise: np.ndarray | None = None

    def step(self, seq: np.ndarray, ts_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = self.profile
        fresh_t = normal(p.keys, seq, 1)
        fresh_h = normal(p.keys, seq, 3)
        scale = np.sqrt(1.0 - NOISE_MEMORY**2)
        if self.temperature_noise is None:
            self.temperature_noise, self.humidity_noise = fresh_t, fresh_h
        else:
            self.temperature_noise = NOISE_MEMORY * self.temperature_noise + scale * fresh_t
            self.humidity_noise = NOISE_MEMORY * self.humidity_noise + scale * fresh_h
        hour = (ts_ms % DAY_MS) / 3_600_000.0
        daily = p.daily_amplitude_c * np.cos(2.0 * np.pi * (hour - p.peak_hour) / 24.0)
        drift = p.drift_c_per_day * (ts_ms - self.epoch_ms) / DAY_MS
        temperature = p.base_temperature_c + daily + drift + p.temperature_noise_c * self.temperature_noise
        humidity = (p.base_humidity_pct - p.humidity_per_degree * (temperature - p.base_temperature_c)
                    + p.humidity_noise_pct * self.humidity_noise)
        return temperature, np.clip(humidity, 0.0, 100.0)
