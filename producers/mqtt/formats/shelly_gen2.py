"""Shelly gen2/gen3: `<id>/events/rpc` with NotifyStatus (or NotifyFullStatus) JSON-RPC
notifications. `params.ts` is Unix UTC seconds; components `temperature:N` ({"tC", "tF"}) and
`humidity:N` ({"rh"}). Component 0 is named after the device, component N as `<id>.N`.
Notifications that carry neither (switches, the system) carry no reading."""

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
from producers.mqtt.timefields import epoch_ms

NOTIFICATIONS = ("NotifyStatus", "NotifyFullStatus")


def _component(key: str) -> tuple[str, str] | None:
    kind, _, index = key.partition(":")
    if kind in ("temperature", "humidity") and index.isdigit():
        return kind, index
    return None


def parse(message: MqttMessage) -> list[DeviceReading]:
    if not message.topic.endswith("/events/rpc"):
        return []
    device = message.topic[:-len("/events/rpc")]
    notification = json_object(message)
    if notification.get("method") not in NOTIFICATIONS:
        return []
    params = notification.get("params")
    if not isinstance(params, dict):
        raise PayloadError("params is not an object")
    by_index: dict[str, dict[str, float]] = {}
    for key, value in params.items():
        component = _component(key)
        if component is None:
            continue
        kind, index = component
        if not isinstance(value, dict):
            raise PayloadError(f"{key} is not an object")
        metrics = by_index.setdefault(index, {})
        if kind == "temperature":
            metrics["temperature"] = temperature_c(value.get("tC"))
        else:
            metrics["humidity"] = humidity_pct(value.get("rh"))
    if not by_index:
        return []
    if "ts" not in params:
        raise PayloadError("no params.ts")
    ts_ms = epoch_ms("params.ts", params["ts"], 1000)
    return [reading(sensor_name(device) if index == "0" else sensor_name(device, index), ts_ms, message,
                    metrics.get("temperature"), metrics.get("humidity"))
            for index, metrics in sorted(by_index.items(), key=lambda item: int(item[0]))]
