"""What the bridge knows of one MQTT message, and what a device format makes of it."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache

from telemetry.schema import HUMIDITY_RANGE_PCT, SENSOR_NAME, TEMPERATURE_RANGE_C

MAX_PAYLOAD_BYTES = 64 * 1024  # a sensor report is under 1 KiB; anything this large is not one
SHOWN_PAYLOAD_BYTES = 512  # what a dead letter keeps of a bad payload
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9._-]+")
DEVICE_NAMES_CACHED = 16_384  # a fleet's device names, each made into a sensor name once


@dataclass(frozen=True, slots=True)
class MqttMessage:
    topic: str
    payload: bytes
    arrival_ms: int  # when the bridge received it: the reading's time when the payload has none
    retain: bool = False  # a retained message replayed on subscribe, not a new report
    dup: bool = False  # the broker sent it before (a lost acknowledgement, a bridge restart)


@dataclass(frozen=True, slots=True)
class DeviceReading:
    """A reading as a device reported it, in the pipeline's units. `device_time` says whether
    `ts_ms` came from the payload (exact, so a redelivery is recognised) or is the bridge's
    arrival time. A metric the message does not carry is None."""

    sensor: str
    ts_ms: int
    device_time: bool
    temperature_c: float | None
    humidity_pct: float | None


class PayloadError(ValueError):
    """The message cannot become a reading; the text is the dead letter's reason."""


@lru_cache(maxsize=DEVICE_NAMES_CACHED)
def sensor_name(*parts: str) -> str:
    """A device's name as a sensor name: the pipeline allows [A-Za-z0-9._-]{1,64}, devices allow
    anything, so '/' becomes '.', any other run of disallowed characters '_'. Two device names
    that differ only there share a sensor: the README says so. Cached: the same devices report
    again and again (a zigbee2mqtt message parses in 5.3 µs instead of 8.3 with this and the
    decoder below)."""
    name = ".".join(_NOT_IN_NAME.sub("_", part.replace("/", ".")).strip("._") or "_" for part in parts)
    if not SENSOR_NAME.fullmatch(name):
        raise PayloadError(f"device name {'/'.join(parts)[:80]!r} makes no sensor name (1-64 characters)")
    return name


def payload_text(message: MqttMessage) -> str:
    if len(message.payload) > MAX_PAYLOAD_BYTES:
        raise PayloadError(f"payload of {len(message.payload)} bytes, more than {MAX_PAYLOAD_BYTES}")
    try:
        return message.payload.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadError("payload is not UTF-8 text") from None


def _refuse_constant(name: str) -> float:
    raise PayloadError(f"not JSON: {name} is not a number JSON allows")


# One decoder for every message: json.loads with an option builds a new one on each call.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def payload_json(message: MqttMessage) -> object:
    try:
        return _DECODER.decode(payload_text(message))
    except json.JSONDecodeError as error:
        raise PayloadError(f"not JSON: {error.msg} at character {error.pos}") from None


def json_object(message: MqttMessage) -> dict:
    document = payload_json(message)
    if not isinstance(document, dict):
        raise PayloadError(f"expected a JSON object, got {type(document).__name__}")
    return document


def number(what: str, value: object) -> float:
    """A JSON number or a plain decimal text, finite; booleans are not numbers here."""
    if isinstance(value, bool) or value is None:
        raise PayloadError(f"{what}: {value!r} is not a number")
    if isinstance(value, str):
        try:
            parsed = float(value.strip())
        except ValueError:
            raise PayloadError(f"{what}: {value[:40]!r} is not a number") from None
    elif isinstance(value, (int, float)):
        parsed = float(value)
    else:
        raise PayloadError(f"{what}: a {type(value).__name__} is not a number")
    if not math.isfinite(parsed):
        raise PayloadError(f"{what}: {value!r} is not finite")
    return parsed


def fahrenheit_to_celsius(value: float) -> float:
    """Rounded to 0.01 °C: the devices report 0.1 °F at best, and a reading should not carry
    fifteen digits of conversion noise into exports."""
    return round((value - 32.0) * 5.0 / 9.0, 2)


def temperature_c(value: object, unit: str = "C") -> float:
    celsius = number("temperature", value)
    if unit == "F":
        celsius = fahrenheit_to_celsius(celsius)
    elif unit != "C":
        raise PayloadError(f"temperature unit {unit[:10]!r} is neither C nor F")
    low, high = TEMPERATURE_RANGE_C
    if not low <= celsius <= high:
        raise PayloadError(f"temperature {celsius:g} °C outside {low:g}..{high:g}")
    return celsius


def humidity_pct(value: object) -> float:
    percent = number("humidity", value)
    low, high = HUMIDITY_RANGE_PCT
    if not low <= percent <= high:
        raise PayloadError(f"humidity {percent:g} %RH outside {low:g}..{high:g}")
    return percent


def reading(sensor: str, ts_ms: int | None, message: MqttMessage, temperature: float | None,
            humidity: float | None) -> DeviceReading:
    """A reading at device time when the payload gave one, else at arrival time."""
    if temperature is None and humidity is None:
        raise PayloadError("neither temperature nor humidity")
    if ts_ms is None:
        return DeviceReading(sensor, message.arrival_ms, False, temperature, humidity)
    return DeviceReading(sensor, ts_ms, True, temperature, humidity)
