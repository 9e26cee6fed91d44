"""Generic JSON: the user says where each part of a reading is (`--map`).

    --map sensor=topic:1,temperature=temp,humidity=env.rh,time=ts:epoch_s,unit=F

`sensor` is a topic level (`topic:N`, 0-based; `topic:N-` for level N to the end) or a field;
fields are dotted paths into the object; `time` is FIELD:iso|epoch_s|epoch_ms (ISO without an
offset is read in --tz), absent: the arrival time; `unit` C (default) or F. At least one of
temperature and humidity. A message may lack one of the mapped metrics (a device publishing each
metric on its own topic, under one mapping): its reading carries the other; one lacking both is
refused."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import tzinfo

from producers.mqtt.message import (
    DeviceReading,
    MqttMessage,
    PayloadError,
    humidity_pct,
    json_object,
    reading,
    sensor_name,
    temperature_c,
)
from producers.mqtt.timefields import TIME_FORMATS
from telemetry.errors import UsageError

PARTS = ("sensor", "temperature", "humidity", "time", "unit")


@dataclass(frozen=True, slots=True)
class JsonMapping:
    sensor: str  # "topic:N", "topic:N-" or a field path
    temperature: str | None = None
    humidity: str | None = None
    time: str | None = None
    time_format: str = "iso"
    unit: str = "C"

    @classmethod
    def parse(cls, spec: str) -> JsonMapping:
        """From 'part=value,...'; UsageError naming the bad part."""
        values: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            part, sep, value = item.partition("=")
            if not sep or part not in PARTS or not value:
                raise UsageError(f"--map: {item!r} is not PART=VALUE with PART one of {', '.join(PARTS)}")
            values[part] = value
        if "sensor" not in values:
            raise UsageError("--map: say where the sensor's name is (sensor=topic:N or sensor=FIELD)")
        if "temperature" not in values and "humidity" not in values:
            raise UsageError("--map: map temperature=FIELD, humidity=FIELD or both")
        sensor = values["sensor"]
        if sensor.startswith("topic:") and not sensor[6:].rstrip("-").isdigit():
            raise UsageError(f"--map: sensor={sensor}: a topic level is topic:N or topic:N- (N from 0)")
        time, time_format = None, "iso"
        if "time" in values:
            time, _, time_format = values["time"].partition(":")
            time_format = time_format or "iso"
            if time_format not in TIME_FORMATS:
                raise UsageError(f"--map: time={values['time']}: the format is one of {', '.join(TIME_FORMATS)}")
        unit = values.get("unit", "C")
        if unit not in ("C", "F"):
            raise UsageError(f"--map: unit={unit}: C or F")
        return cls(sensor, values.get("temperature"), values.get("humidity"), time, time_format, unit)


ABSENT = object()


def field_value(document: dict, path: str, missing: object = None) -> object:
    """The value at a dotted path; a PayloadError where there is none, unless `missing` is given."""
    value: object = document
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            if missing is not None:
                return missing
            raise PayloadError(f"no field {path}")
        value = value[key]
    return value


def metric_value(document: dict, path: str | None, convert) -> float | None:
    """A mapped metric, None where the message does not carry it (present but not a number is an error)."""
    value = ABSENT if path is None else field_value(document, path, ABSENT)
    return None if value is ABSENT else convert(value)


def device_of(mapping: JsonMapping, topic: str, document: dict) -> str:
    if not mapping.sensor.startswith("topic:"):
        value = field_value(document, mapping.sensor)
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise PayloadError(f"{mapping.sensor}: {value!r} is not a name")
        return sensor_name(str(value))
    spec = mapping.sensor[6:]
    levels = topic.split("/")
    first = int(spec.rstrip("-"))
    if first >= len(levels):
        raise PayloadError(f"topic {topic[:80]!r} has no level {first}")
    return sensor_name("/".join(levels[first:]) if spec.endswith("-") else levels[first])


def parse(message: MqttMessage, mapping: JsonMapping | None, zone: tzinfo) -> list[DeviceReading]:
    if mapping is None:
        raise UsageError("--format json needs --map")
    document = json_object(message)
    sensor = device_of(mapping, message.topic, document)
    temperature = metric_value(document, mapping.temperature, lambda value: temperature_c(value, mapping.unit))
    humidity = metric_value(document, mapping.humidity, humidity_pct)
    ts_ms = (TIME_FORMATS[mapping.time_format](mapping.time, field_value(document, mapping.time), zone)
             if mapping.time else None)
    return [reading(sensor, ts_ms, message, temperature, humidity)]
