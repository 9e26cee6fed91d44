"""One sensor's temperature and humidity over time, with window means and alert episodes marked."""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in CI
import matplotlib.pyplot as plt
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


def sensor_figure(sensor: str, readings: pd.DataFrame, windows: pd.DataFrame, episodes: list[AlertEpisode]) -> Figure:
    if readings.empty:
        raise UsageError(f"--sensor {sensor}: no readings for this sensor")
    times = pd.to_datetime(readings["ts_ms"], unit="ms")
    figure, (temperature_axis, humidity_axis) = plt.subplots(2, 1, figsize=(11, 6), sharex=True)
    temperature_axis.plot(times, readings["temperature_c"], color="tab:red", linewidth=0.8, label="temperature_c")
    humidity_axis.plot(times, readings["humidity_pct"], color="tab:blue", linewidth=0.8, label="humidity_pct")
    if not windows.empty:
        starts = pd.to_datetime(windows["window_start"].astype("int64"), unit="ms")
        temperature_axis.step(starts, windows["temperature_c_mean"].astype(float), where="post", color="black",
                              linewidth=1.4, label="window mean")
        humidity_axis.step(starts, windows["humidity_pct_mean"].astype(float), where="post", color="black",
                           linewidth=1.4, label="window mean")
    last_time = times.max()
    labelled: set[str] = set()
    for episode in episodes:
        end = pd.to_datetime(episode.end_ms, unit="ms") if episode.end_ms is not None else last_time
        colour = "tab:red" if episode.severity == "critical" else "tab:orange"
        label = None if episode.rule in labelled else f"alert: {episode.rule} ({episode.severity})"
        labelled.add(episode.rule)
        temperature_axis.axvspan(pd.to_datetime(episode.start_ms, unit="ms"), end, color=colour, alpha=0.18,
                                 label=label)
        humidity_axis.axvspan(pd.to_datetime(episode.start_ms, unit="ms"), end, color=colour, alpha=0.18)
    temperature_axis.set_ylabel("°C")
    humidity_axis.set_ylabel("% RH")
    humidity_axis.set_xlabel("time (UTC)")
    temperature_axis.set_title(f"{sensor}: {len(readings)} readings, {len(windows)} windows, "
                               f"{len(episodes)} alert episodes")
    for axis in (temperature_axis, humidity_axis):
        axis.legend(loc="upper right", fontsize=8)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure
