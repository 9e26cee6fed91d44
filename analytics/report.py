"""Per-sensor summary: value statistics, seq gaps and duplicates, dead letters and alerts.

Works page by page (live stream) or chunk by chunk (CSV): statistics merge with Chan's parallel
formula, and only each sensor's seq numbers are kept in full, to find gaps and duplicates.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

METRICS = ("temperature_c", "humidity_pct")


@dataclass(slots=True)
class RunningStats:
    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    min: float = float("inf")
    max: float = float("-inf")

    def merge(self, values: np.ndarray) -> None:
        if not len(values):
            return
        n, mean = len(values), float(values.mean())
        m2 = float(((values - mean) ** 2).sum())
        total = self.count + n
        delta = mean - self.mean
        self.m2 += m2 + delta * delta * self.count * n / total
        self.mean += delta * n / total
        self.count = total
        self.min = min(self.min, float(values.min()))
        self.max = max(self.max, float(values.max()))

    @property
    def std(self) -> float | None:
        return (self.m2 / (self.count - 1)) ** 0.5 if self.count > 1 else None


@dataclass(slots=True)
class SensorSummary:
    sensor: str
    count: int = 0
    stats: dict[str, RunningStats] = field(default_factory=lambda: {m: RunningStats() for m in METRICS})
    seq_chunks: list[np.ndarray] = field(default_factory=list)

    def as_row(self, dead_letters: int | None, alerts: int | None) -> dict:
        row: dict = {"sensor": self.sensor, "count": self.count}
        for metric, stats in self.stats.items():
            row.update({f"{metric}_mean": stats.mean, f"{metric}_min": stats.min, f"{metric}_max": stats.max,
                        f"{metric}_std": stats.std})
        row.update(seq_health(np.concatenate(self.seq_chunks) if self.seq_chunks else np.array([], dtype=np.int64)))
        row["dead_letters"] = dead_letters
        row["alerts"] = alerts
        return row


def seq_health(seqs: np.ndarray) -> dict:
    """missing: seq numbers never seen between the first and last; gaps: how many runs they form."""
    seqs = seqs[seqs >= 0]
    if not len(seqs):
        return {"missing": None, "gaps": None, "duplicates": None}
    unique = np.unique(seqs)
    steps = np.diff(unique)
    return {"missing": int((steps - 1).sum()), "gaps": int((steps > 1).sum()),
            "duplicates": int(len(seqs) - len(unique))}


def summarise(frames: Iterator[pd.DataFrame]) -> dict[str, SensorSummary]:
    summaries: dict[str, SensorSummary] = {}
    for frame in frames:
        if frame.empty:
            continue
        for sensor, group in frame.groupby("sensor", sort=False):
            summary = summaries.setdefault(sensor, SensorSummary(sensor))
            summary.count += len(group)
            for metric in METRICS:
                summary.stats[metric].merge(group[metric].to_numpy(dtype=float))
            seqs = pd.to_numeric(group["seq"], errors="coerce").fillna(-1).to_numpy(dtype=np.int64)
            summary.seq_chunks.append(seqs)
    return dict(sorted(summaries.items()))


@dataclass(frozen=True, slots=True)
class Report:
    rows: list[dict]

    def as_json(self) -> str:
        return json.dumps({"sensors": self.rows}, indent=2)

    def as_table(self) -> str:
        if not self.rows:
            return "no readings"
        headers = ("sensor", "count", "temp mean", "min", "max", "std", "hum mean", "min", "max", "std",
                   "missing", "gaps", "dups", "dead", "alerts")

        def cell(value) -> str:
            if value is None:
                return "-"
            return f"{value:.2f}" if isinstance(value, float) else str(value)

        lines = [[cell(row[key]) for key in (
            "sensor", "count", "temperature_c_mean", "temperature_c_min", "temperature_c_max", "temperature_c_std",
            "humidity_pct_mean", "humidity_pct_min", "humidity_pct_max", "humidity_pct_std",
            "missing", "gaps", "duplicates", "dead_letters", "alerts")] for row in self.rows]
        widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]
        out = ["  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(headers, widths)))]
        out += ["  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(line, widths)))
                for line in lines]
        return "\n".join(out)


def build_report(summaries: dict[str, SensorSummary], dead_letters: Counter | None, alerts: Counter | None,
                 missing: dict[str, int] | None = None) -> Report:
    """`missing`: the aggregator's per-sensor count of readings missing by seq, which also covers
    readings trimmed from the stream; without it (a CSV) the gaps in the readings at hand count."""
    rows = [summary.as_row(None if dead_letters is None else dead_letters.get(sensor, 0),
                           None if alerts is None else alerts.get(sensor, 0))
            for sensor, summary in summaries.items()]
    for row in rows:
        if missing and row["sensor"] in missing:
            row["missing"] = max(missing[row["sensor"]], row["missing"] or 0)
    return Report([_clean(row) for row in rows])


def _clean(row: dict) -> dict:
    """JSON has no infinity: an empty statistic is null."""
    return {key: (None if isinstance(value, float) and not np.isfinite(value) else value) for key, value in row.items()}
