"""Zigbee2MQTT: `<base>/<friendly name>` with a JSON object of the device's attributes.

The friendly name may itself contain '/'. The bridge's own topics (`<base>/bridge/...`) and a
device's `/availability`, `/set` and `/get` topics carry no reading. Time only where the user
enabled `last_seen` (ISO 8601 with an offset, or epoch ms); else the arrival time."""

from __future__ import annotations

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
from producers.mqtt.timefields import epoch_ms, iso_ms

NOT_A_DEVICE_STATE = ("availability", "set", "get")


def device_name(topic: str) -> str | None:
    """The friendly name, or None for a topic that is not a device's state."""
    _, _, name = topic.partition("/")
    if not name or name == "bridge" or name.startswith("bridge/"):
        return None
    levels = name.split("/")
    if any(level in NOT_A_DEVICE_STATE for level in levels[-2:]):
        return None
    return name


def last_seen_ms(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, str):
        return iso_ms("last_seen", value)
    return epoch_ms("last_seen", value, 1)


def parse(message: MqttMessage) -> list[DeviceReading]:
    name = device_name(message.topic)
    if name is None:
        return []
    state = json_object(message)
    if "temperature" not in state and "humidity" not in state:
        return []  # a light, a switch, a button: not a thermometer
    temperature = temperature_c(state["temperature"]) if state.get("temperature") is not None else None
    humidity = humidity_pct(state["humidity"]) if state.get("humidity") is not None else None
    if temperature is None and humidity is None:
        raise PayloadError("temperature and humidity are both null")
    return [reading(sensor_name(name), last_seen_ms(state.get("last_seen")), message, temperature, humidity)]
