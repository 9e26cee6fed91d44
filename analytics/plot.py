"""One sensor's temperature and humidity over time, with window means and alert episodes marked."""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in CI
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from telemetry.errors import UsageError


@dataclass(frozen=True, slots=True)
class AlertEpisode:
    rule: str
    severity: str
    start_ms: int
    end_ms: int | None  # None: still firing


def alert_episodes(alerts: pd.DataFrame) -> list[AlertEpisode]:
    """Pair each firing event with its resolved event by alert id."""
    episodes = []
    if alerts.empty:
        return episodes
    for alert_id, events in alerts.groupby("alert_id", sort=False):
        firing = events[events["state"] == "firing"]
        resolved = events[events["state"] == "resolved"]
        if firing.empty:
            continue
        first = firing.iloc[0]
        end = int(resolved.iloc[0]["ts"]) if not resolved.empty else None
        episodes.append(AlertEpisode(str(first["rule"]), str(first["severity"]), int(first["ts"]), end))
    return episodes


GAP_FACTOR = 3  # readings further apart than this many typical intervals are drawn with a gap


def with_gaps(ts_ms: pd.Series, values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """The series with a break (NaN) wherever readings stopped for a while: a dropout is a gap on
    the plot, not a straight line across it."""
    order = ts_ms.argsort(kind="stable")
    ts, vals = ts_ms.iloc[order].astype("int64").to_numpy(), values.iloc[order].astype(float).to_numpy()
    if len(ts) < 3:
        return pd.to_datetime(pd.Series(ts), unit="ms"), pd.Series(vals)
    steps = np.diff(ts)
    breaks = np.flatnonzero(steps > GAP_FACTOR * max(np.median(steps), 1))
    ts = np.insert(ts.astype(float), breaks + 1, np.nan)
    vals = np.insert(vals, breaks + 1, np.nan)
    return pd.to_datetime(pd.Series(ts), unit="ms"), pd.Series(vals)


def window_segments(windows: pd.DataFrame, column: str) -> tuple[pd.Series, pd.Series]:
    """Each window's mean as a level from its start to its end, the last window included; windows
    with no readings (not emitted) stay empty."""
    xs: list[float] = []
    ys: list[float] = []
    for start, end, mean in zip(windows["window_start"].astype("int64"), windows["window_end"].astype("int64"),
                                windows[column].astype(float)):
        xs += [start, end, np.nan]
        ys += [mean, mean, np.nan]
    return pd.to_datetime(pd.Series(xs), unit="ms"), pd.Series(ys)


def sensor_figure(sensor: str, readings: pd.DataFrame, windows: pd.DataFrame, episodes: list[AlertEpisode]) -> Figure:
    if readings.empty:
        raise UsageError(f"--sensor {sensor}: no readings for this sensor")
    figure, (temperature_axis, humidity_axis) = plt.subplots(2, 1, figsize=(13, 6), sharex=True)
    for axis, column, colour in ((temperature_axis, "temperature_c", "tab:red"),
                                 (humidity_axis, "humidity_pct", "tab:blue")):
        # Only the readings that carry the metric: a split-topic sensor's alternate readings lack
        # it, and a gap is judged on the metric's own readings.
        carried = readings[readings[column].notna()]
        axis.plot(*with_gaps(carried["ts_ms"], carried[column]), color=colour, linewidth=0.8, label=column)
        if carried.empty:
            axis.text(0.5, 0.5, f"no {column} readings", transform=axis.transAxes, ha="center", color="grey")
        if not windows.empty:
            windows = windows.sort_values("window_start")
            axis.plot(*window_segments(windows, f"{column}_mean"), color="black", linewidth=1.4, label="window mean")
    last_time = pd.to_datetime(readings["ts_ms"].astype("int64").max(), unit="ms")
    rules = sorted({episode.rule for episode in episodes})
    palette = plt.get_cmap("tab10")
    colours = {rule: palette(index % 10) for index, rule in enumerate(rules)}
    labelled: set[str] = set()
    for episode in episodes:
        end = pd.to_datetime(episode.end_ms, unit="ms") if episode.end_ms is not None else last_time
        label = None if episode.rule in labelled else f"alert: {episode.rule} ({episode.severity})"
        labelled.add(episode.rule)
        for axis in (temperature_axis, humidity_axis):
            axis.axvspan(pd.to_datetime(episode.start_ms, unit="ms"), end, color=colours[episode.rule], alpha=0.2,
                         label=label if axis is temperature_axis else None)
    temperature_axis.set_ylabel("°C")
    humidity_axis.set_ylabel("% RH")
    humidity_axis.set_xlabel("time (UTC)")
    temperature_axis.set_title(f"{sensor}: {len(readings)} readings, {len(windows)} windows, "
                               f"{len(episodes)} alert episodes")
    for axis in (temperature_axis, humidity_axis):
        axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, borderaxespad=0)  # off the data
        axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure
