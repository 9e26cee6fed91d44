"""A reading as each kind of device would publish it: what the simulators send with --to-mqtt,
so the demo and the tests go through the real path (device format -> broker -> bridge)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

# What --format json reads of the simulators' own payloads.
SIMULATOR_JSON_MAP = "sensor=sensor,temperature=temperature,humidity=humidity,time=ts:epoch_ms"


def _iso(ts_ms: int, *, milliseconds: bool, offset: bool) -> str:
    moment = datetime.fromtimestamp(ts_ms / 1000, UTC)
    text = moment.isoformat(timespec="milliseconds" if milliseconds else "seconds")
    return text if offset else text.removesuffix("+00:00")


def device_messages(format_name: str, sensor: str, ts_ms: int, temperature_c: float,
                    humidity_pct: float) -> list[tuple[str, bytes]]:
    """(topic, payload) pairs; two for the formats that send each metric on its own topic.
    Tasmota's time has whole seconds and no offset (read with --tz UTC)."""
    if format_name == "tasmota":
        return [(f"tele/{sensor}/SENSOR", json.dumps({
            "Time": _iso(ts_ms, milliseconds=False, offset=False),
            "AM2301": {"Temperature": temperature_c, "Humidity": humidity_pct}, "TempUnit": "C"}).encode())]
    if format_name == "zigbee2mqtt":
        return [(f"zigbee2mqtt/{sensor}", json.dumps({
            "battery": 100, "humidity": humidity_pct, "linkquality": 120, "temperature": temperature_c,
            "last_seen": _iso(ts_ms, milliseconds=True, offset=True)}).encode())]
    if format_name == "shelly-gen2":
        return [(f"{sensor}/events/rpc", json.dumps({
            "src": sensor, "dst": f"{sensor}/events", "method": "NotifyStatus",
            "params": {"ts": ts_ms / 1000, "temperature:0": {"id": 0, "tC": temperature_c,
                                                           "tF": round(temperature_c * 9 / 5 + 32, 1)},
                       "humidity:0": {"id": 0, "rh": humidity_pct}}}).encode())]
    if format_name == "shelly":
        return [(f"shellies/{sensor}/sensor/temperature", repr(temperature_c).encode()),
                (f"shellies/{sensor}/sensor/humidity", repr(humidity_pct).encode())]
    if format_name == "esphome":
        return [(f"{sensor}/sensor/temperature/state", repr(temperature_c).encode()),
                (f"{sensor}/sensor/humidity/state", repr(humidity_pct).encode())]
    if format_name == "json":
        return [(f"sensors/{sensor}", json.dumps({"sensor": sensor, "ts": ts_ms, "temperature": temperature_c,
                                                  "humidity": humidity_pct}).encode())]
    raise ValueError(f"no device format {format_name!r}")
