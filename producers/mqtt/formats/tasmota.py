"""Tasmota: `tele/<topic>/SENSOR` every TelePeriod, a JSON object with `Time` (the device's local
time, with no offset unless SetOption52), `TempUnit`, and one object per attached sensor
(`AM2301`, `DS18B20-1`, `SHT3X`, ...) holding `Temperature` and/or `Humidity`.

One sensor attached: the reading is named after the device's topic; several: `<topic>.<key>`.
The ESP32's own chip temperature is not a room's and is skipped."""

from __future__ import annotations

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
from producers.mqtt.timefields import iso_ms

NOT_AMBIENT = {"ESP32"}


def device_topic(topic: str) -> str | None:
    levels = topic.split("/")
    if len(levels) < 3 or levels[-1] != "SENSOR":
        return None  # STATE, LWT, INFO...: no reading
    return "/".join(levels[1:-1])


def parse(message: MqttMessage, zone: tzinfo) -> list[DeviceReading]:
    device = device_topic(message.topic)
    if device is None:
        return []
    report = json_object(message)
    unit = report.get("TempUnit", "C")
    if not isinstance(unit, str):
        raise PayloadError(f"TempUnit {unit!r} is not text")
    if "Time" not in report:
        raise PayloadError("no Time field")
    ts_ms = iso_ms("Time", report["Time"], zone)
    sensors = {key: value for key, value in report.items()
               if isinstance(value, dict) and key not in NOT_AMBIENT
               and ("Temperature" in value or "Humidity" in value)}
    if not sensors:
        raise PayloadError("no sensor object with Temperature or Humidity")
    readings = []
    for key, values in sensors.items():
        name = sensor_name(device) if len(sensors) == 1 else sensor_name(device, key)
        temperature = temperature_c(values["Temperature"], unit) if "Temperature" in values else None
        humidity = humidity_pct(values["Humidity"]) if "Humidity" in values else None
        readings.append(reading(name, ts_ms, message, temperature, humidity))
    return readings
