"""MQTT bridge throughput: readings per second from Mosquitto through the bridge into Redis, QoS 1,
each message acknowledged after its reading is written, 1,000 sensors; against a plain paho
subscriber that acknowledges on receipt and writes nothing (the floor), in the same run.

Both drain the same backlog: the messages are published while the subscriber's persistent session
is away, so the broker queues them and the measurement is the subscriber's alone, not the
publisher's. Also the bridge's CPU (all its threads) per message, and Redis's CPU per reading
while the bridge drains (INFO cpu: the server is private, so it is the bridge's writes alone).

Scaling out as users would (--share): --shared N bridge processes (default 2) drain the backlog
through an MQTT 5 shared subscription, against N plain subscriber processes sharing it the same way.
"""

from __future__ import annotations

import io
import multiprocessing
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
SHARE = "bench"
DEFAULT_KEYS = Keys()
SHARED_PREFIX = "bench-shared"  # the shared bridges write under their own prefix: their readings are new


def session_properties() -> Properties:
    """As the bridge connects by default: the same in-flight bound (Receive Maximum)."""
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 3600
    properties.ReceiveMaximum = DEFAULT_MAX_IN_FLIGHT
    return properties


def plain_subscriber(port: int, client_id: str, share: str | None = None) -> tuple[mqtt.Client, list[int]]:
    """Acknowledges on receipt (paho's default, on paho's own thread), counts, writes nothing: the
    same client, MQTT 5, persistent session, QoS 1 and in-flight bound as the bridge."""
    received = [0]
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)

    def on_message(client, userdata, message) -> None:
        received[0] += 1

    client.on_message = on_message
    topic = f"{FORMAT}/#" if share is None else f"$share/{share}/{FORMAT}/#"
    client.on_connect = lambda client, *args: client.subscribe(topic, qos=1)
    client.connect("127.0.0.1", port, clean_start=False, properties=session_properties())
    return client, received


def forget_session(port: int, client_id: str) -> None:
    """So the broker stops queueing the next measurement's backlog for a subscriber done with."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port, clean_start=True)
    client.loop_start()
    while not client.is_connected():
        time.sleep(0.01)
    client.disconnect()
    client.loop_stop()


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


def open_session(client: mqtt.Client) -> None:
    """Connect and subscribe, then leave: the session stays, and the backlog queues for it."""
    client.loop_start()
    while not client.is_connected():
        time.sleep(0.01)
    time.sleep(0.3)
    client.disconnect()
    client.loop_stop()


def measure_plain(broker: PrivateMosquitto, per_sensor: int) -> float:
    open_session(plain_subscriber(broker.port, "bench-plain")[0])
    total = enqueue(broker.port, per_sensor)
    client, received = plain_subscriber(broker.port, "bench-plain")
    started = time.perf_counter()
    client.loop_start()
    while received[0] < total:
        time.sleep(0.001)
    seconds = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    forget_session(broker.port, "bench-plain")
    return total / seconds


def bridge_of(port: int, redis_url: str, client_id: str = "bench-bridge", share: str | None = None,
              keys: Keys = DEFAULT_KEYS) -> MqttBridge:
    db = redis.Redis.from_url(redis_url, decode_responses=True)
    layout = open_layout(db, keys, 16)
    options = FormatOptions()
    settings = BridgeSettings(BrokerTarget("127.0.0.1", port, False), FORMAT, options, client_id, share_group=share)
    return MqttBridge(settings, ReadingSink(db, layout, keys, FieldMap(), 0, client_id),
                      parser_for(FORMAT, options), log=io.StringIO())


@dataclass(frozen=True, slots=True)
class BridgeRun:
    readings_per_s: float
    cpu_us_per_message: float
    redis_us_per_reading: float
    written: int


def measure_bridge(broker: PrivateMosquitto, redis_url: str, per_sensor: int) -> BridgeRun:
    bridge = bridge_of(broker.port, redis_url)
    bridge.start()
    while not bridge.connected:
        time.sleep(0.01)
    time.sleep(0.3)
    bridge.close()
    total = enqueue(broker.port, per_sensor)
    bridge = bridge_of(broker.port, redis_url)
    redis_before = redis_cpu_s(bridge.sink.db)
    started, cpu_started = time.perf_counter(), time.process_time()
    bridge.start()
    while bridge.counts.written + bridge.counts.duplicates < total:
        bridge.step(0.05)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    redis_cpu = redis_cpu_s(bridge.sink.db) - redis_before
    bridge.close()
    forget_session(broker.port, "bench-bridge")
    written = bridge.counts.written
    return BridgeRun(total / seconds, cpu / total * 1e6, per_reading_us(redis_cpu, written), written)


@dataclass(frozen=True, slots=True)
class SharedDrain:
    """One process of a shared subscription: started together, stopped once all drained."""

    index: int
    port: int
    redis_url: str | None  # a bridge writes there; None: a plain subscriber

    @property
    def client_id(self) -> str:
        return f"bench-{'bridge' if self.redis_url else 'plain'}-shared-{self.index}"

    def open(self) -> None:
        if self.redis_url:
            bridge = self.bridge()
            bridge.start()
            while not bridge.connected:
                time.sleep(0.01)
            time.sleep(0.3)
            bridge.close()
        else:
            open_session(plain_subscriber(self.port, self.client_id, SHARE)[0])

    def bridge(self) -> MqttBridge:
        return bridge_of(self.port, self.redis_url, self.client_id, SHARE, Keys(SHARED_PREFIX))

    def run(self, go, stop, handled, cpu_s) -> None:
        """In its own process: until told to stop, counting messages handled (a bridge: written
        or recognised as duplicates) and, at the end, its CPU time."""
        go.wait()
        cpu_started = time.process_time()
        if self.redis_url:
            bridge = self.bridge()
            bridge.start()
            while not stop.is_set():
                bridge.step(0.05)
                handled.value = bridge.counts.written + bridge.counts.duplicates
            bridge.close()
        else:
            client, received = plain_subscriber(self.port, self.client_id, SHARE)
            client.loop_start()
            while not stop.wait(0.001):
                handled.value = received[0]
            client.disconnect()
            client.loop_stop()
        cpu_s.value = time.process_time() - cpu_started


def measure_shared(broker: PrivateMosquitto, redis_url: str | None, per_sensor: int,
                   processes: int) -> tuple[float, float]:
    """Readings (or messages) per second and CPU µs per message, all processes together."""
    drains = [SharedDrain(index, broker.port, redis_url) for index in range(processes)]
    for drain in drains:
        drain.open()
    total = enqueue(broker.port, per_sensor)
    context = multiprocessing.get_context("spawn")
    go, stop = context.Event(), context.Event()
    handled = [context.Value("q", 0) for _ in drains]
    cpu_s = [context.Value("d", 0.0) for _ in drains]
    workers = [context.Process(target=drain.run, args=(go, stop, handled[drain.index], cpu_s[drain.index]))
               for drain in drains]
    for worker in workers:
        worker.start()
    time.sleep(1.0)  # the interpreters started and imported
    started = time.perf_counter()
    go.set()
    while sum(value.value for value in handled) < total:
        time.sleep(0.001)
    seconds = time.perf_counter() - started
    stop.set()
    for worker in workers:
        worker.join(30)
    for drain in drains:
        forget_session(broker.port, drain.client_id)
    return total / seconds, sum(value.value for value in cpu_s) / total * 1e6


def main() -> None:
    command = parser(__doc__)
    command.add_argument("--per-sensor", type=int, default=30, help="readings per sensor (default 30)")
    command.add_argument("--shared", type=int, default=2, metavar="N",
                         help="bridges (and plain subscribers) sharing the load, each its own process (default 2; "
                              "0: none)")
    args = command.parse_args()
    per_sensor, shared = args.per_sensor, args.shared
    with tempfile.TemporaryDirectory(prefix="telemetry-bench-mqtt-") as folder, \
            PrivateMosquitto(Path(folder) / "broker", max_queued_messages=0, autosave_interval_s=3600) as broker, \
            bench_redis(args.redis_url) as redis_url:
        plain = measure_plain(broker, per_sensor)
        run = measure_bridge(broker, redis_url, per_sensor)
        if shared:
            plain_shared, _ = measure_shared(broker, None, per_sensor, shared)
            bridges_shared, bridges_cpu_us = measure_shared(broker, redis_url, per_sensor, shared)
    if run.written != SENSORS * per_sensor:
        sys.exit(f"bench_mqtt: the bridge wrote {run.written} of {SENSORS * per_sensor} readings")
    figures = [
        Figure("bridge readings/s (QoS 1, ack after write)", run.readings_per_s, "readings/s",
               "plain paho subscriber, ack on receipt", plain, ">= 20,000/s and >= 0.5x"),
        Figure("bridge CPU per message", run.cpu_us_per_message, "µs"),
        Figure("Redis CPU per reading (bridge's writes)", run.redis_us_per_reading, "µs"),
    ]
    if shared:
        figures += [
            Figure(f"{shared} bridges sharing (--share), readings/s", bridges_shared, "readings/s",
                   "one plain paho subscriber", plain),
            Figure(f"{shared} bridges sharing, readings/s", bridges_shared, "readings/s",
                   f"{shared} plain subscribers sharing", plain_shared),
            Figure(f"{shared} bridges sharing, CPU per message (all processes)", bridges_cpu_us, "µs"),
        ]
    print_figures(f"mqtt bridge, {SENSORS:,} sensors", figures, args.json)


if __name__ == "__main__":
    main()
