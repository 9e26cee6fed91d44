"""ESPHome: `<node>/sensor/<object_id>/state`, the value as text. Retained by default, so the
last value is replayed on every subscribe (the bridge skips retained messages). The object id is
the user's: one containing 'temp' is a temperature, 'humid' a humidity, anything else is not a
reading. The unit is the node's configuration (--unit). No time: the arrival time."""

from __future__ import annotations

from producers.mqtt.message import (
    DeviceReading,
    MqttMessage,
    humidity_pct,
    payload_text,
    reading,
    sensor_name,
    temperature_c,
)


def metric_of(object_id: str) -> str | None:
    lowered = object_id.lower()
    if "temp" in lowered:
        return "temperature"
    if "humid" in lowered:
        return "humidity"
    return None


def parse(message: MqttMessage, unit: str) -> list[DeviceReading]:
    levels = message.topic.split("/")
    if len(levels) < 4 or levels[-1] != "state" or levels[-3] != "sensor":
        return []  # status, debug, binary sensors, commands
    metric = metric_of(levels[-2])
    if metric is None:
        return []
    name = sensor_name("/".join(levels[:-3]))
    value = payload_text(message).strip()
    if metric == "temperature":
        return [reading(name, None, message, temperature_c(value, unit), None)]
    return [reading(name, None, message, None, humidity_pct(value))]
