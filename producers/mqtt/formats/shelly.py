"""Shelly gen1 (H&T): `shellies/<id>/sensor/temperature` and `.../humidity`, a bare number each.

The unit is the device's configuration, not in the payload (--unit). No time: the arrival time.
Each message carries one metric; the other is None."""

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


def parse(message: MqttMessage, unit: str) -> list[DeviceReading]:
    levels = message.topic.split("/")
    if len(levels) < 4 or levels[-2] != "sensor" or levels[-1] not in ("temperature", "humidity"):
        return []  # battery, announce, online, other sensors
    name = sensor_name("/".join(levels[1:-2]))
    value = payload_text(message).strip()
    if levels[-1] == "temperature":
        return [reading(name, None, message, temperature_c(value, unit), None)]
    return [reading(name, None, message, None, humidity_pct(value))]
