"""Replays a CSV written by `python -m analytics export` back into a stream, in event-time order."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from producers.writer import StreamWriter
from telemetry.errors import UsageError
from telemetry.schema import FieldMap, SchemaError, row_template, validate_sensor_name

REQUIRED_COLUMNS = ("sensor", "ts_ms", "temperature_c", "humidity_pct", "seq")


def load_readings_csv(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, usecols=lambda column: column in REQUIRED_COLUMNS,
                            dtype={"sensor": str}, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise UsageError(f"--from-csv {path}: cannot read ({error.__class__.__name__}: {error})") from None
    missing = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
    if missing:
        raise UsageError(f"--from-csv {path}: missing column(s) {', '.join(missing)}")
    one_metric = int(((frame["temperature_c"] == "") | (frame["humidity_pct"] == "")).sum())
    if one_metric:  # the producer's writer sends every field of every row
        raise UsageError(f"--from-csv {path}: {one_metric} readings carry one metric (an empty cell), "
                         "which a replay cannot write yet")
    try:
        for sensor in frame["sensor"].unique():
            validate_sensor_name(sensor)
        frame = frame.astype({"ts_ms": "int64", "temperature_c": "float64", "humidity_pct": "float64",
                              "seq": "int64"})
    except (SchemaError, ValueError) as error:
        raise UsageError(f"--from-csv {path}: {error}") from None
    return frame.sort_values(["ts_ms", "sensor", "seq"], kind="stable")


def replay(frame: pd.DataFrame, writer: StreamWriter, field_map: FieldMap, batch_size: int = 1000) -> dict[str, int]:
    row_format = row_template(field_map).format
    rows = [row_format(sensor, ts, temperature, humidity, seq)
            for sensor, ts, temperature, humidity, seq in frame[list(REQUIRED_COLUMNS)].itertuples(index=False)]
    for start in range(0, len(rows), batch_size):
        writer.write(rows[start:start + batch_size])
    writer.close()
    return frame.groupby("sensor").size().astype(int).to_dict()
