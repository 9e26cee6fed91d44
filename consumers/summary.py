"""Running count, mean, variance, min and max of both metrics: the building block of windows and
rolling buckets.

Welford's update adds one reading and Chan's formula merges two summaries; both are exact up to
rounding in any order, so a window built reading by reading and one merged from partials agree,
and neither loses precision the way sums of squares do on values far from zero.

A reading may carry one metric only (a probe without humidity, a device that publishes each
metric on its own topic): each metric's statistics come from the readings that carry it. `n`
counts readings; `t_missing` and `h_missing` count those without the metric, so a summary of
full readings (the common case) packs as before, and an old checkpoint unpacks unchanged. Full
readings into a full summary take the code they always took; anything else takes the
per-metric paths, kept apart so that the common case pays one test for them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

INF = math.inf
# Each metric's fields, for the per-metric paths (readings or summaries that lack a metric).
METRIC_FIELDS = (("t_mean", "t_m2", "t_min", "t_max", "t_missing"), ("h_mean", "h_m2", "h_min", "h_max", "h_missing"))


@dataclass(slots=True)
class Summary:
    n: int = 0  # readings, with either metric
    t_mean: float = 0.0
    t_m2: float = 0.0
    t_min: float = INF
    t_max: float = -INF
    h_mean: float = 0.0
    h_m2: float = 0.0
    h_min: float = INF
    h_max: float = -INF
    t_missing: int = 0  # readings without a temperature
    h_missing: int = 0  # readings without a humidity

    def add(self, temperature_c: float | None, humidity_pct: float | None) -> None:
        """One reading; None for a metric it does not carry."""
        if temperature_c is None or humidity_pct is None or self.t_missing or self.h_missing:
            self._add_per_metric(temperature_c, humidity_pct)
            return
        n = self.n + 1
        self.n = n
        delta = temperature_c - self.t_mean
        self.t_mean += delta / n
        self.t_m2 += delta * (temperature_c - self.t_mean)
        delta = humidity_pct - self.h_mean
        self.h_mean += delta / n
        self.h_m2 += delta * (humidity_pct - self.h_mean)
        # Comparisons, not min()/max(): the same result at a third of the cost, twice per reading.
        if temperature_c < self.t_min:
            self.t_min = temperature_c
        if temperature_c > self.t_max:
            self.t_max = temperature_c
        if humidity_pct < self.h_min:
            self.h_min = humidity_pct
        if humidity_pct > self.h_max:
            self.h_max = humidity_pct

    def _add_per_metric(self, temperature_c: float | None, humidity_pct: float | None) -> None:
        """`add` where a metric is missing, in the reading or in the summary: each metric's
        Welford update over its own count. Apart, so that full readings pay nothing for it."""
        self.n += 1
        for value, (mean, m2, low, high, missing) in zip((temperature_c, humidity_pct), METRIC_FIELDS):
            if value is None:
                setattr(self, missing, getattr(self, missing) + 1)
                continue
            delta = value - getattr(self, mean)
            setattr(self, mean, getattr(self, mean) + delta / (self.n - getattr(self, missing)))
            setattr(self, m2, getattr(self, m2) + delta * (value - getattr(self, mean)))
            setattr(self, low, min(getattr(self, low), value))
            setattr(self, high, max(getattr(self, high), value))

    def merge(self, other: Summary) -> None:
        if other.n == 0:
            return
        if self.n == 0:
            self.copy_from(other)
            return
        if self.t_missing or self.h_missing or other.t_missing or other.h_missing:
            self._merge_per_metric(other)
            return
        na, nb = self.n, other.n
        n = na + nb
        delta = other.t_mean - self.t_mean
        self.t_mean += delta * nb / n
        self.t_m2 += other.t_m2 + delta * delta * na * nb / n
        delta = other.h_mean - self.h_mean
        self.h_mean += delta * nb / n
        self.h_m2 += other.h_m2 + delta * delta * na * nb / n
        self.n = n
        if other.t_min < self.t_min:
            self.t_min = other.t_min
        if other.t_max > self.t_max:
            self.t_max = other.t_max
        if other.h_min < self.h_min:
            self.h_min = other.h_min
        if other.h_max > self.h_max:
            self.h_max = other.h_max

    def _merge_per_metric(self, other: Summary) -> None:
        """`merge` where either side lacks a metric in some reading: Chan's formula per metric over
        its own counts; a metric only one side has is taken from it."""
        for mean, m2, low, high, missing in METRIC_FIELDS:
            na, nb = self.n - getattr(self, missing), other.n - getattr(other, missing)
            if nb == 0:
                continue
            if na == 0:
                setattr(self, mean, getattr(other, mean))
                setattr(self, m2, getattr(other, m2))
            else:
                n = na + nb
                delta = getattr(other, mean) - getattr(self, mean)
                setattr(self, mean, getattr(self, mean) + delta * nb / n)
                setattr(self, m2, getattr(self, m2) + getattr(other, m2) + delta * delta * na * nb / n)
            setattr(self, low, min(getattr(self, low), getattr(other, low)))
            setattr(self, high, max(getattr(self, high), getattr(other, high)))
        self.n += other.n
        self.t_missing += other.t_missing
        self.h_missing += other.h_missing

    def copy_from(self, other: Summary) -> None:
        (self.n, self.t_mean, self.t_m2, self.t_min, self.t_max, self.h_mean, self.h_m2, self.h_min, self.h_max,
         self.t_missing, self.h_missing) = other.all_values()

    def copy(self) -> Summary:
        return Summary(*self.all_values())

    def all_values(self) -> tuple:
        return (self.n, self.t_mean, self.t_m2, self.t_min, self.t_max, self.h_mean, self.h_m2, self.h_min,
                self.h_max, self.t_missing, self.h_missing)

    def core_values(self) -> tuple:
        """Everything but the missing counts: the whole summary of full readings, as packed before
        readings could lack a metric."""
        return (self.n, self.t_mean, self.t_m2, self.t_min, self.t_max,
                self.h_mean, self.h_m2, self.h_min, self.h_max)

    def values(self) -> tuple:
        """The packed form (checkpoints, kept windows): the missing counts only when a reading
        lacked a metric, so `Summary(*values)` reads both forms."""
        if self.t_missing or self.h_missing:
            return self.all_values()
        return self.core_values()

    def count(self, metric: str) -> int:
        """Readings that carried the metric."""
        return self.n - (self.t_missing if metric == "temperature_c" else self.h_missing)

    def std(self, metric: str) -> float | None:
        """Sample standard deviation (ddof 1, as pandas), None below two readings of the metric."""
        temperature = metric == "temperature_c"
        count = self.n - (self.t_missing if temperature else self.h_missing)  # count(), inline: rules call this often
        if count < 2:
            return None
        return math.sqrt(max(self.t_m2 if temperature else self.h_m2, 0.0) / (count - 1))

    def source(self, metric: str, source: str) -> float | None:
        """One statistic (mean, std, min or max) of one metric, None while it has no reading."""
        temperature = metric == "temperature_c"
        if self.n == (self.t_missing if temperature else self.h_missing):
            return None
        if source == "std":
            return self.std(metric)
        if source == "mean":
            return self.t_mean if temperature else self.h_mean
        if source == "min":
            return self.t_min if temperature else self.h_min
        return self.t_max if temperature else self.h_max

    def metric(self, metric: str) -> MetricStats:
        count = self.count(metric)
        if not count:
            return MetricStats(0, None, None, None, None)
        if metric == "temperature_c":
            return MetricStats(count, self.t_mean, self.std(metric), self.t_min, self.t_max)
        return MetricStats(count, self.h_mean, self.std(metric), self.h_min, self.h_max)


@dataclass(frozen=True, slots=True)
class MetricStats:
    """One metric's statistics as alert rules and readers see them."""

    count: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
