"""Device formats: each turns one MQTT message into readings, or raises PayloadError with the
reason, or returns nothing for a topic that carries no reading (a device's availability, a
bridge's own state). Pure functions of the message and the options: no I/O, no state.

A new format is a new module here with its fixtures in tests/fixtures/mqtt/, not a branch in the
bridge's loop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, tzinfo

from producers.mqtt.formats import esphome, json_mapping, shelly, shelly_gen2, tasmota, zigbee2mqtt
from producers.mqtt.message import DeviceReading, MqttMessage


@dataclass(frozen=True, slots=True)
class FormatOptions:
    zone: tzinfo = UTC  # for device times written without an offset (Tasmota)
    unit: str = "C"  # for payloads that do not say their unit (Shelly gen1, ESPHome, json)
    mapping: json_mapping.JsonMapping | None = None  # json only


Parser = Callable[[MqttMessage], list[DeviceReading]]

FORMATS: dict[str, Callable[[FormatOptions], Parser]] = {
    "zigbee2mqtt": lambda options: zigbee2mqtt.parse,
    "tasmota": lambda options: lambda message: tasmota.parse(message, options.zone),
    "shelly": lambda options: lambda message: shelly.parse(message, options.unit),
    "shelly-gen2": lambda options: shelly_gen2.parse,
    "esphome": lambda options: lambda message: esphome.parse(message, options.unit),
    "json": lambda options: lambda message: json_mapping.parse(message, options.mapping, options.zone),
}

# The topic filter a format's devices publish under, when --topic is not given.
DEFAULT_TOPICS = {
    "zigbee2mqtt": "zigbee2mqtt/#",
    "tasmota": "tele/+/SENSOR",
    "shelly": "shellies/+/sensor/+",
    "shelly-gen2": "+/events/rpc",
    "esphome": "+/sensor/+/state",
}


def parser_for(name: str, options: FormatOptions) -> Parser:
    return FORMATS[name](options)
