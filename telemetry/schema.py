"""The reading record: the one place that knows how a reading looks inside a stream entry.

Field names are configurable (`FieldMap`) so that streams written by other producers, such as the
seed tutorial's `sensor_id`/`temp`/`humidity`, feed the pipeline without code changes. A field
mapped to None is absent from the entry: a missing `ts` is taken from the stream id, a missing
`seq` leaves gap detection to the fields that exist.

A reading carries at least one metric. A metric the sensor did not measure (a probe without
humidity, a device that publishes each metric on its own topic) is an absent field, never an
empty or placeholder value: an entry with neither metric, or with a metric present but not a
plain number in range, is refused (dead-lettered, naming the field).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from typing import ClassVar

from telemetry.errors import UsageError
from telemetry.timeutil import stream_id_ms

SCHEMA_VERSION = 1
SENSOR_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
TEMPERATURE_RANGE_C = (-80.0, 150.0)
HUMIDITY_RANGE_PCT = (0.0, 100.0)


class SchemaError(ValueError):
    """A field is missing or out of range; `field` and `value` say which, for the dead-letter reason."""

    def __init__(self, field: str, value: object, problem: str) -> None:
        self.field = field
        self.value = value
        self.problem = problem
        super().__init__(f"{field}={value!r}: {problem}")


@dataclass(frozen=True, slots=True)
class FieldMap:
    """Names of the entry fields that carry each part of a reading."""

    sensor: str = "sensor"
    ts: str | None = "ts"
    temperature_c: str = "temperature_c"
    humidity_pct: str = "humidity_pct"
    seq: str | None = "seq"
    version: str | None = "v"

    PRESETS: ClassVar[dict[str, FieldMap]] = {}  # filled below

    @classmethod
    def parse(cls, spec: str) -> FieldMap:
        """Build from a preset name ('default', 'seed') or 'part=name,...'; 'part=' drops an optional part."""
        if spec in cls.PRESETS:
            return cls.PRESETS[spec]
        known = {f.name for f in fields(cls)}
        overrides: dict[str, str | None] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            part, sep, name = item.partition("=")
            if not sep or part not in known:
                raise UsageError(
                    f"fields: {item!r} is not PART=NAME with PART one of {', '.join(sorted(known))}"
                    f" (or a preset: {', '.join(cls.PRESETS)})"
                )
            if not name and part in ("sensor", "temperature_c", "humidity_pct"):
                raise UsageError(f"fields: {part} is required and cannot be dropped")
            overrides[part] = name or None
        return cls(**overrides)


FieldMap.PRESETS.update(
    {
        "default": FieldMap(),
        "seed": FieldMap(sensor="sensor_id", ts=None, temperature_c="temp", humidity_pct="humidity",
                         seq=None, version=None),
    }
)


def validate_sensor_name(name: str) -> str:
    if not SENSOR_NAME.fullmatch(name):
        raise SchemaError("sensor", name, "must be 1-64 characters from [A-Za-z0-9._-]")
    return name


# What every reader of a stream (Python, Lua, pandas, a spreadsheet) takes for the same number:
# Python alone would also accept digit separators ('4_5.5') and surrounding spaces.
PLAIN_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
PLAIN_INTEGER = re.compile(r"[0-9]+")
MAX_INTEGER = 2**53  # beyond this a double (Lua, JSON, pandas) no longer holds every integer
SHOWN_VALUE_CHARS = 64


def _shown(raw: object) -> object:
    """A value as an error message quotes it: long ones cut, so a 1 MB field makes a short reason."""
    if isinstance(raw, str) and len(raw) > SHOWN_VALUE_CHARS:
        return raw[:SHOWN_VALUE_CHARS] + f"...({len(raw)} chars)"
    return raw


def _refuse_unplain(field: str, raw: str, kind: type, problem: str) -> None:
    """Say why a value that is not a plain number is refused; lets through only what the caller's
    own checks name better (a negative integer, NaN or infinity)."""
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        raise SchemaError(field, _shown(raw), problem) from None
    if raw.strip().startswith("-") or (kind is float and not math.isfinite(value)):
        return
    raise SchemaError(field, _shown(raw), "not a plain number (digit separators, spaces or other digits)")


def _finite(field: str, raw: object, low: float, high: float) -> float:
    if raw is None:
        raise SchemaError(field, None, "missing")
    if isinstance(raw, str) and not PLAIN_NUMBER.fullmatch(raw):
        _refuse_unplain(field, raw, float, "not a number")
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise SchemaError(field, raw, "not a number") from None
    if not math.isfinite(value):
        raise SchemaError(field, raw, "not finite")
    if not low <= value <= high:
        raise SchemaError(field, raw, f"outside {low:g}..{high:g}")
    return value


def _integer(field: str, raw: object) -> int:
    if raw is None:
        raise SchemaError(field, None, "missing")
    if isinstance(raw, str) and not PLAIN_INTEGER.fullmatch(raw):
        _refuse_unplain(field, raw, int, "not an integer")
    try:
        value = int(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise SchemaError(field, _shown(raw), "not an integer") from None
    if value < 0:
        raise SchemaError(field, raw, "negative")
    if value > MAX_INTEGER:
        raise SchemaError(field, _shown(raw), f"above 2^53 ({MAX_INTEGER})")
    return value


@dataclass(frozen=True, slots=True)
class Reading:
    """One measurement of one sensor; `ts_ms` is event time (when measured), not arrival time.
    A metric the reading does not carry is None (at least one is not)."""

    sensor: str
    ts_ms: int
    temperature_c: float | None
    humidity_pct: float | None
    seq: int | None = None

    def encode(self, field_map: FieldMap = FieldMap()) -> dict[str, str]:
        """The entry's fields; a part that is None or mapped to None is left out. Floats use repr,
        as `row_template` does, to read back exactly."""
        parts = ((field_map.sensor, self.sensor), (field_map.ts, self.ts_ms),
                 (field_map.temperature_c, self.temperature_c), (field_map.humidity_pct, self.humidity_pct),
                 (field_map.seq, self.seq), (field_map.version, SCHEMA_VERSION))
        return {name: repr(value) if isinstance(value, float) else str(value)
                for name, value in parts if name and value is not None}

    @classmethod
    def decode(cls, entry: dict[str, str], entry_id: str, field_map: FieldMap = FieldMap()) -> Reading:
        """Validate and convert; raises SchemaError naming the first bad field."""
        sensor = entry.get(field_map.sensor)
        if sensor is None:
            raise SchemaError(field_map.sensor, None, "missing")
        if not SENSOR_NAME.fullmatch(sensor):
            raise SchemaError("sensor", _shown(sensor), "must be 1-64 characters from [A-Za-z0-9._-]")
        ts_ms = _integer(field_map.ts, entry.get(field_map.ts)) if field_map.ts else stream_id_ms(entry_id)
        seq = None
        if field_map.seq and field_map.seq in entry:
            seq = _integer(field_map.seq, entry[field_map.seq])
        version = entry.get(field_map.version, str(SCHEMA_VERSION)) if field_map.version else str(SCHEMA_VERSION)
        if version != str(SCHEMA_VERSION):
            raise SchemaError(field_map.version or "v", version, f"unsupported (this build reads {SCHEMA_VERSION})")
        temperature, humidity = entry.get(field_map.temperature_c), entry.get(field_map.humidity_pct)
        if temperature is None and humidity is None:
            raise SchemaError(f"{field_map.temperature_c}/{field_map.humidity_pct}", None,
                              "both missing: a reading carries at least one metric")
        return cls(
            sensor=sensor,
            ts_ms=ts_ms,
            temperature_c=None if temperature is None else _finite(field_map.temperature_c, temperature,
                                                                   *TEMPERATURE_RANGE_C),
            humidity_pct=None if humidity is None else _finite(field_map.humidity_pct, humidity, *HUMIDITY_RANGE_PCT),
            seq=seq,
        )


def sensor_and_seq(entry: dict[str, str], field_map: FieldMap) -> tuple[str, int] | None:
    """The sensor and seq of an entry that is dead-lettered for another reason, when both read
    cleanly: its place in the sensor's sequence is then known, and the gap it leaves is not
    counted again as missing."""
    sensor = entry.get(field_map.sensor)
    seq = entry.get(field_map.seq) if field_map.seq else None
    if sensor is None or seq is None or not SENSOR_NAME.fullmatch(sensor):
        return None
    try:
        return sensor, _integer(field_map.seq, seq)
    except SchemaError:
        return None


def entry_layout(field_map: FieldMap) -> tuple[str, ...]:
    """Field names in the order `row_template` fills them; parts mapped to None are left out."""
    names = (field_map.sensor, field_map.ts, field_map.temperature_c, field_map.humidity_pct,
             field_map.seq, field_map.version)
    return tuple(name for name in names if name)


def row_template(field_map: FieldMap) -> str:
    """A str.format template for one tab-separated row in `entry_layout` order.

    Producers send batches as one text blob (one row a line) because packing thousands of
    separate arguments costs more than the XADDs themselves; floats use repr to read back exactly.
    """
    parts = ["{0}", "{1}" if field_map.ts else None, "{2!r}", "{3!r}", "{4}" if field_map.seq else None,
             str(SCHEMA_VERSION) if field_map.version else None]
    return "\t".join(part for part in parts if part)
