"""Per-sensor summary: value statistics, seq gaps and duplicates, dead letters and alerts.

Works page by page (live stream) or chunk by chunk (CSV): each chunk's statistics are computed per
sensor in one grouped pass and merged with Chan's parallel formula; only the (sensor, seq) pairs
are kept in full, to find gaps and duplicates with one sort at the end. A fleet's report costs a
few passes over its readings, not a step per sensor per chunk.
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

    def merge(self, n: int, mean: float, m2: float, low: float, high: float) -> None:
        """Add a chunk's statistics (Chan et al.)."""
        if not n:
            return
        total = self.count + n
        delta = mean - self.mean
        self.m2 += m2 + delta * delta * self.count * n / total
        self.mean += delta * n / total
        self.count = total
        self.min = min(self.min, low)
        self.max = max(self.max, high)

    @property
    def std(self) -> float | None:
        return (self.m2 / (self.count - 1)) ** 0.5 if self.count > 1 else None


NO_SEQ = {"missing": None, "gaps": None, "duplicates": None}


@dataclass(slots=True)
class SensorSummary:
    sensor: str
    count: int = 0
    stats: dict[str, RunningStats] = field(default_factory=lambda: {m: RunningStats() for m in METRICS})
    seq_health: dict = field(default_factory=lambda: dict(NO_SEQ))

    def as_row(self, dead_letters: int | None, alerts: int | None) -> dict:
        """`count` readings, `<metric>_count` of them carrying the metric; a metric's statistics are
        over those only, None (null, '-') when none did."""
        row: dict = {"sensor": self.sensor, "count": self.count}
        for metric, stats in self.stats.items():
            present = stats.count > 0
            row.update({f"{metric}_count": stats.count, f"{metric}_mean": stats.mean if present else None,
                        f"{metric}_min": stats.min, f"{metric}_max": stats.max, f"{metric}_std": stats.std})
        row.update(self.seq_health)
        row["dead_letters"] = dead_letters
        row["alerts"] = alerts
        return row


def seq_health_by_sensor(sensors: np.ndarray, seqs: np.ndarray) -> dict[str, dict]:
    """Per sensor: missing (seq numbers never seen between its first and last), gaps (the runs they
    form) and duplicates; seqs below 0 (none) are left out. Vectorised over the whole fleet: one
    sort by sensor and seq, then differences between neighbours."""
    keep = seqs >= 0
    codes, names = pd.factorize(sensors[keep])
    if not len(codes):
        return {}
    seqs = seqs[keep]
    order = np.lexsort((seqs, codes))
    codes, seqs = codes[order], seqs[order]
    repeated = np.r_[False, (codes[1:] == codes[:-1]) & (seqs[1:] == seqs[:-1])]
    duplicates = np.bincount(codes[repeated], minlength=len(names))
    codes, seqs = codes[~repeated], seqs[~repeated]
    follows = np.r_[False, codes[1:] == codes[:-1]]  # a seq after another of the same sensor
    steps = np.r_[0, np.diff(seqs)]
    missing = np.bincount(codes[follows], weights=(steps - 1)[follows], minlength=len(names))
    gaps = np.bincount(codes[follows & (steps > 1)], minlength=len(names))
    return {name: {"missing": int(missing[i]), "gaps": int(gaps[i]), "duplicates": int(duplicates[i])}
            for i, name in enumerate(names)}


def summarise(frames: Iterator[pd.DataFrame]) -> dict[str, SensorSummary]:
    """Each chunk's statistics per sensor are computed in one grouped pass and merged into the
    sensor's running ones; seqs are kept as two columns and judged once at the end."""
    summaries: dict[str, SensorSummary] = {}
    sensor_chunks: list[np.ndarray] = []
    seq_chunks: list[np.ndarray] = []
    for frame in frames:
        if frame.empty:
            continue
        sensors = frame["sensor"].to_numpy(dtype=object)
        grouped_sizes = pd.Series(sensors).value_counts(sort=False)
        for sensor, size in grouped_sizes.items():
            summaries.setdefault(sensor, SensorSummary(sensor)).count += int(size)
        for metric in METRICS:
            values = pd.Series(frame[metric].to_numpy(dtype=float))
            grouped = values.groupby(sensors, sort=False)
            deviations = values - grouped.transform("mean")
            chunk = pd.DataFrame({"n": grouped.count(), "mean": grouped.mean(),
                                  "m2": (deviations * deviations).groupby(sensors, sort=False).sum(),
                                  "min": grouped.min(), "max": grouped.max()})
            for sensor, n, mean, m2, low, high in chunk.itertuples():
                summaries[sensor].stats[metric].merge(int(n), mean, m2, low, high)
        sensor_chunks.append(sensors)
        seq_chunks.append(pd.to_numeric(frame["seq"], errors="coerce").fillna(-1).to_numpy(dtype=np.int64))
    if seq_chunks:
        for sensor, health in seq_health_by_sensor(np.concatenate(sensor_chunks), np.concatenate(seq_chunks)).items():
            summaries[sensor].seq_health = health
    return dict(sorted(summaries.items()))


LATENESS = ("late", "too_late", "revisions")


@dataclass(frozen=True, slots=True)
class Report:
    rows: list[dict]

    def as_json(self) -> str:
        return json.dumps({"sensors": self.rows}, indent=2)

    def as_table(self) -> str:
        if not self.rows:
            return "no readings"
        headers = ("sensor", "count", "temp n", "mean", "min", "max", "std", "hum n", "mean", "min", "max", "std",
                   "missing", "gaps", "dups", "late", "too late", "revised", "dead", "alerts")

        def cell(value) -> str:
            if value is None:
                return "-"
            return f"{value:.2f}" if isinstance(value, float) else str(value)

        lines = [[cell(row[key]) for key in (
            "sensor", "count", *(f"{metric}_{name}" for metric in METRICS
                                 for name in ("count", "mean", "min", "max", "std")),
            "missing", "gaps", "duplicates", "late", "too_late", "revisions", "dead_letters", "alerts")]
                 for row in self.rows]
        widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]
        out = ["  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(headers, widths)))]
        out += ["  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(line, widths)))
                for line in lines]
        return "\n".join(out)


def build_report(summaries: dict[str, SensorSummary], dead_letters: Counter | None, alerts: Counter | None,
                 group_counts: dict[str, dict[str, int]] | None = None) -> Report:
    """`group_counts`: what the aggregator counted per sensor (consumers: missing by seq, which
    also covers readings trimmed from the stream; late, too_late, revisions); without it (a CSV)
    the gaps in the readings at hand count, and lateness is unknown."""
    rows = [summary.as_row(None if dead_letters is None else dead_letters.get(sensor, 0),
                           None if alerts is None else alerts.get(sensor, 0))
            for sensor, summary in summaries.items()]
    for row in rows:
        counted = (group_counts or {}).get(row["sensor"])
        for name in LATENESS:
            row[name] = None if counted is None else counted[name]
        if counted is not None:
            row["missing"] = max(counted["missing"], row["missing"] or 0)
    return Report([_clean(row) for row in rows])


def _clean(row: dict) -> dict:
    """JSON has no infinity: an empty statistic is null."""
    return {key: (None if isinstance(value, float) and not np.isfinite(value) else value) for key, value in row.items()}
