"""Private Mosquitto brokers, QoS 1 publishers and bridge processes for the MQTT tests."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import redis
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from producers.mqtt.device_payloads import device_messages
from telemetry.bridge_status import written_totals
from telemetry.keys import Keys
from telemetry.partitions import open_layout
from tests.crash_harness import spawn

PARTITIONS = 4


@dataclass
class Publisher:
    """A device-side QoS 1 publisher with a persistent session, so that what the broker had not
    acknowledged is sent again after the broker comes back. `confirmed` holds what the broker
    acknowledged (PUBACK), as (sensor, ts_ms)."""

    port: int
    client_id: str = "test-devices"
    sent: list = field(default_factory=list)  # (paho's message info, (sensor, ts_ms))

    def __post_init__(self) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
        self.client.max_queued_messages_set(0)
        self.client.max_inflight_messages_set(100)
        self.client.reconnect_delay_set(0.2, 1)
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", self.port, clean_start=False, properties=properties)
        self.client.loop_start()

    @property
    def confirmed(self) -> set:
        """Read off paho's message infos: an on_publish callback would need a lock that paho's
        own thread may wait on while it holds its message lock."""
        return {key for info, key in list(self.sent) if info.is_published()}

    def publish(self, format_name: str, sensor: str, ts_ms: int, temperature_c: float, humidity_pct: float,
                retain: bool = False) -> None:
        for topic, payload in device_messages(format_name, sensor, ts_ms, temperature_c, humidity_pct):
            self.sent.append((self.client.publish(topic, payload, qos=1, retain=retain), (sensor, ts_ms)))

    def raw(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def wait_confirmed(self, count: int, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.confirmed) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"the broker confirmed {len(self.confirmed)} of {count} messages")
            time.sleep(0.05)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


STARTED: list[subprocess.Popen] = []  # killed after each test (tests/test_mqtt_bridge.py), whatever failed


def start_bridge(broker_url: str, redis_url: str, log: Path, *args: str, format_name: str = "zigbee2mqtt",
                 client_id: str = "test-bridge", env_extra: dict | None = None) -> subprocess.Popen:
    with log.open("a") as out:
        process = spawn("producers", "--from-mqtt", broker_url, "--format", format_name, "--redis-url", redis_url,
                        "--client-id", client_id, "--partitions", str(PARTITIONS), *args, env_extra=env_extra,
                        stderr=out)
    STARTED.append(process)
    return process


def kill_leftovers() -> None:
    while STARTED:
        process = STARTED.pop()
        if process.poll() is None:
            process.kill()
            process.wait()


def stream_readings(redis_url: str) -> list[dict]:
    db = redis.Redis.from_url(redis_url, decode_responses=True)
    layout = open_layout(db, Keys(), PARTITIONS)
    return [fields for partition in layout.partitions for _, fields in db.xrange(partition.readings)]



def redis_counters(redis_url: str) -> dict[str, int]:
    db = redis.Redis.from_url(redis_url, decode_responses=True)
    return written_totals(db, open_layout(db, Keys(), PARTITIONS))


def wait_subscribed(redis_url: str, client_id: str = "test-bridge", timeout_s: float = 20) -> None:
    """Until the bridge says it is connected (it subscribes as it connects), and a moment more."""
    db = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout_s
    while True:
        status = db.get(Keys().mqtt_bridge(client_id))
        if status is not None and b'"connected": true' in status:
            time.sleep(0.3)
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"bridge {client_id} did not connect")
        time.sleep(0.05)
