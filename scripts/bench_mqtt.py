"""MQTT bridge throughput: readings per second from Mosquitto through the bridge into Redis, QoS 1,
each message acknowledged after its reading is written, 1,000 sensors; against a plain paho
subscriber that acknowledges on receipt and writes nothing (the floor), in the same run.

Both drain the same backlog: the messages are published while the subscriber's persistent session
is away, so the broker queues them and the measurement is the subscriber's alone, not the
publisher's. Also the bridge's CPU (all its threads) per message, and Redis's CPU per reading
while the bridge drains (INFO cpu: the server is private, so it is the bridge's writes alone).
"""

from __future__ import annotations

import io
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import redis
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from producers.mqtt.bridge import MqttBridge
from producers.mqtt.device_payloads import device_messages
from producers.mqtt.formats import FormatOptions, parser_for
from producers.mqtt.local_broker import PrivateMosquitto
from producers.mqtt.settings import DEFAULT_MAX_IN_FLIGHT, BridgeSettings, BrokerTarget
from producers.mqtt.sink import ReadingSink
from scripts.bench_common import START_MS, Figure, bench_redis, parser, print_figures
from scripts.bench_fleet import per_reading_us, redis_cpu_s
from telemetry.keys import Keys
from telemetry.partitions import open_layout
from telemetry.schema import FieldMap

SENSORS = 1000
FORMAT = "zigbee2mqtt"


def session_properties() -> Properties:
    """As the bridge connects by default: the same in-flight bound (Receive Maximum)."""
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 3600
    properties.ReceiveMaximum = DEFAULT_MAX_IN_FLIGHT
    return properties


def plain_subscriber(port: int, client_id: str) -> tuple[mqtt.Client, list[int]]:
    """Acknowledges on receipt (paho's default, on paho's own thread), counts, writes nothing: the
    same client, MQTT 5, persistent session, QoS 1 and in-flight bound as the bridge."""
    received = [0]
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)

    def on_message(client, userdata, message) -> None:
        received[0] += 1

    client.on_message = on_message
    client.on_connect = lambda client, *args: client.subscribe(f"{FORMAT}/#", qos=1)
    client.connect("127.0.0.1", port, clean_start=False, properties=session_properties())
    return client, received


def enqueue(port: int, per_sensor: int) -> int:
    """Publish the backlog at QoS 1 and wait until the broker has all of it."""
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-devices", protocol=mqtt.MQTTv5)
    publisher.max_inflight_messages_set(1000)
    publisher.max_queued_messages_set(0)
    publisher.connect("127.0.0.1", port)
    publisher.loop_start()
    infos = []
    for tick in range(per_sensor):
        for sensor in range(SENSORS):
            for topic, payload in device_messages(FORMAT, f"bench-{sensor:04d}", START_MS + tick * 1000 + sensor,
                                                  20.0 + tick % 10 / 10, 50.0):
                infos.append(publisher.publish(topic, payload, qos=1))
    for info in infos:
        info.wait_for_publish(60)
    publisher.disconnect()
    publisher.loop_stop()
    return len(infos)


def measure_plain(broker: PrivateMosquitto, per_sensor: int) -> float:
    client, received = plain_subscriber(broker.port, "bench-plain")
    client.loop_start()
    while not client.is_connected():
        time.sleep(0.01)
    time.sleep(0.3)
    client.disconnect()  # the session stays; the backlog queues for it
    client.loop_stop()
    total = enqueue(broker.port, per_sensor)
    client, received = plain_subscriber(broker.port, "bench-plain")
    started = time.perf_counter()
    client.loop_start()
    while received[0] < total:
        time.sleep(0.001)
    seconds = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    return total / seconds


def bridge_of(broker: PrivateMosquitto, redis_url: str) -> MqttBridge:
    db = redis.Redis.from_url(redis_url, decode_responses=True)
    layout = open_layout(db, Keys(), 16)
    options = FormatOptions()
    settings = BridgeSettings(BrokerTarget("127.0.0.1", broker.port, False), FORMAT, options, "bench-bridge")
    return MqttBridge(settings, ReadingSink(db, layout, Keys(), FieldMap(), 0, "bench-bridge"),
                      parser_for(FORMAT, options), log=io.StringIO())


@dataclass(frozen=True, slots=True)
class BridgeRun:
    readings_per_s: float
    cpu_us_per_message: float
    redis_us_per_reading: float
    written: int


def measure_bridge(broker: PrivateMosquitto, redis_url: str, per_sensor: int) -> BridgeRun:
    bridge = bridge_of(broker, redis_url)
    bridge.start()
    while not bridge.connected:
        time.sleep(0.01)
    time.sleep(0.3)
    bridge.close()
    total = enqueue(broker.port, per_sensor)
    bridge = bridge_of(broker, redis_url)
    redis_before = redis_cpu_s(bridge.sink.db)
    started, cpu_started = time.perf_counter(), time.process_time()
    bridge.start()
    while bridge.counts.written + bridge.counts.duplicates < total:
        bridge.step(0.05)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    redis_cpu = redis_cpu_s(bridge.sink.db) - redis_before
    bridge.close()
    written = bridge.counts.written
    return BridgeRun(total / seconds, cpu / total * 1e6, per_reading_us(redis_cpu, written), written)


def main() -> None:
    command = parser(__doc__)
    command.add_argument("--per-sensor", type=int, default=30, help="readings per sensor (default 30)")
    args = command.parse_args()
    per_sensor = args.per_sensor
    with tempfile.TemporaryDirectory(prefix="telemetry-bench-mqtt-") as folder, \
            PrivateMosquitto(Path(folder) / "broker", max_queued_messages=0, autosave_interval_s=3600) as broker, \
            bench_redis(args.redis_url) as redis_url:
        plain = measure_plain(broker, per_sensor)
        run = measure_bridge(broker, redis_url, per_sensor)
    if run.written != SENSORS * per_sensor:
        sys.exit(f"bench_mqtt: the bridge wrote {run.written} of {SENSORS * per_sensor} readings")
    print_figures(f"mqtt bridge, {SENSORS:,} sensors", [
        Figure("bridge readings/s (QoS 1, ack after write)", run.readings_per_s, "readings/s",
               "plain paho subscriber, ack on receipt", plain, ">= 20,000/s and >= 0.5x"),
        Figure("bridge CPU per message", run.cpu_us_per_message, "µs"),
        Figure("Redis CPU per reading (bridge's writes)", run.redis_us_per_reading, "µs"),
    ], args.json)


if __name__ == "__main__":
    main()
