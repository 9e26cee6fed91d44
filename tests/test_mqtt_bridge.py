"""The MQTT bridge against a private Mosquitto and a private redis-server: every reading a device
published at QoS 1 lands in the stream exactly once (device time present) through bridge crashes,
a broker crash and a Redis outage; retained replays and redeliveries are not new readings."""

from __future__ import annotations

import io
import json
import random
import signal
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest
import redis

from consumers.rules import DEFAULT_RULES_TOML
from producers.mqtt.bridge import MqttBridge
from producers.mqtt.formats import FormatOptions, parser_for
from producers.mqtt.formats.json_mapping import JsonMapping
from producers.mqtt.local_broker import PrivateMosquitto
from producers.mqtt.message import MqttMessage
from producers.mqtt.settings import BridgeSettings, BrokerTarget
from producers.mqtt.sink import ReadingSink
from telemetry.embedded import PrivateRedisServer, free_port
from telemetry.keys import Keys
from telemetry.partitions import open_layout
from telemetry.schema import FieldMap
from tests.aggregation_helpers import START, counters, latest_windows, outputs
from tests.conftest import run_cli
from tests.crash_harness import WINDOW_MS, WORKER_FLAGS, spawn, wait_for
from tests.mqtt_helpers import (
    PARTITIONS,
    Publisher,
    kill_leftovers,
    redis_counters,
    start_bridge,
    stream_readings,
    wait_subscribed,
)

SENSORS = [f"dev-{index}" for index in range(5)]


@pytest.fixture()
def broker(tmp_path):
    try:
        with PrivateMosquitto(tmp_path / "mosquitto", max_queued_messages=100_000) as server:
            yield server
    finally:
        kill_leftovers()


def keyed(readings: list[dict]) -> Counter:
    return Counter((fields["sensor"], int(fields["ts"])) for fields in readings)


def publish_steadily(publisher: Publisher, count: int, per_second: float, format_name: str = "zigbee2mqtt",
                     stop: threading.Event | None = None) -> threading.Thread:
    """Publish `count` readings per sensor in the background, at device times one second apart."""

    def run() -> None:
        for tick in range(count):
            for index, sensor in enumerate(SENSORS):
                publisher.publish(format_name, sensor, START + tick * 1000 + index, 20 + tick % 7, 40 + index)
            time.sleep(len(SENSORS) / per_second)
            if stop is not None and stop.is_set():
                return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def assert_exactly_once(redis_url: str, expected: set) -> Counter:
    readings = stream_readings(redis_url)
    seen = keyed(readings)
    doubled = {key: n for key, n in seen.items() if n > 1}
    assert not doubled, f"written twice: {sorted(doubled)[:10]}"
    assert set(seen) == expected, f"missing {sorted(expected - set(seen))[:10]}, extra {sorted(set(seen) - expected)[:10]}"
    for sensor in SENSORS:  # seqs given in Redis, with the write: no gap, no repeat
        seqs = sorted(int(fields["seq"]) for fields in readings if fields["sensor"] == sensor)
        assert seqs == list(range(len(seqs)))
    return seen


def test_bridge_killed_ten_times_writes_every_reading_once(broker, redis_url, tmp_path):
    publisher = Publisher(broker.port)
    log = tmp_path / "bridge.log"
    rng = random.Random(19)
    bridge = start_bridge(broker.url, redis_url, log, "--batch", "50")
    wait_subscribed(redis_url)
    publishing = publish_steadily(publisher, 60, per_second=250)
    kills = 0
    while kills < 10:
        time.sleep(rng.uniform(0.6, 1.6))  # the bridge starts in about half a second: some kills hit mid-run
        bridge.send_signal(signal.SIGKILL)
        bridge.wait()
        kills += 1
        bridge = start_bridge(broker.url, redis_url, log, "--batch", "50")
    publishing.join(timeout=60)
    publisher.wait_confirmed(60 * len(SENSORS))
    expected = set(publisher.confirmed)
    wait_for(lambda: len(stream_readings(redis_url)) >= len(expected), 30, "every reading in the stream")
    bridge.terminate()
    bridge.wait(timeout=20)
    assert_exactly_once(redis_url, expected)
    totals = redis_counters(redis_url)
    assert totals["written"] == len(expected)
    print(f"10 kills -9: {len(expected)} readings once each; {totals['duplicates']} redeliveries recognised")
    publisher.close()


def test_bridges_sharing_the_load_killed_in_turn_write_every_reading_once(broker, redis_url, tmp_path):
    """Two bridges split the messages through an MQTT 5 shared subscription (--share); each is killed
    with -9 in turn and restarted under its own client id, which resumes its session: what it had
    not acknowledged comes back to it (DUP), and each reading is in the stream once."""
    publisher = Publisher(broker.port)
    rng = random.Random(23)
    client_ids = ["shared-0", "shared-1"]

    def start(client_id: str):
        return start_bridge(broker.url, redis_url, tmp_path / f"{client_id}.log", "--batch", "50", "--share", "g",
                            client_id=client_id)

    bridges = {client_id: start(client_id) for client_id in client_ids}
    for client_id in client_ids:
        wait_subscribed(redis_url, client_id)
    publishing = publish_steadily(publisher, 60, per_second=50)  # 6 s: the kills land while devices publish
    for kill in range(6):
        time.sleep(rng.uniform(0.6, 1.6))
        victim = client_ids[kill % 2]
        bridges[victim].send_signal(signal.SIGKILL)
        bridges[victim].wait()
        bridges[victim] = start(victim)
    publishing.join(timeout=60)
    publisher.wait_confirmed(60 * len(SENSORS))
    expected = set(publisher.confirmed)
    wait_for(lambda: len(stream_readings(redis_url)) >= len(expected), 30, "every reading in the stream")
    for process in bridges.values():
        process.terminate()
        process.wait(timeout=20)
    assert_exactly_once(redis_url, expected)
    assert redis_counters(redis_url)["written"] == len(expected)
    publisher.close()


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


OUTAGE_S = 10  # the issue says 30 s; 10 s keeps the suite's time down and fills the bound as surely


def test_redis_outage_holds_acknowledgements_within_the_bound(broker, tmp_path):
    (tmp_path / "redis").mkdir()
    server = PrivateRedisServer(tmp_path / "redis")
    server.start()
    metrics_port = free_port()
    publisher = Publisher(broker.port)
    bridge = start_bridge(broker.url, server.url, tmp_path / "bridge.log", "--max-in-flight", "20",
                          "--batch", "10", "--metrics-port", str(metrics_port))
    try:
        wait_subscribed(server.url)
        for tick in range(5):
            for sensor in SENSORS:
                publisher.publish("zigbee2mqtt", sensor, START + tick * 1000, 21.0, 40.0)
        wait_for(lambda: len(stream_readings(server.url)) == 5 * len(SENSORS), 20, "the first readings")
        server.stop()
        publishing = publish_steadily_from(publisher, first_tick=5, ticks=40)
        in_flight = []
        deadline = time.monotonic() + OUTAGE_S
        while time.monotonic() < deadline:
            in_flight.append(metric(metrics_port, "telemetry_mqtt_in_flight"))
            time.sleep(0.2)
        publishing.join(timeout=30)
        assert max(in_flight) <= 20, f"in flight went past the bound: {max(in_flight)}"
        assert max(in_flight) == 20, f"the broker never filled the bound ({max(in_flight)}): the test proves nothing"
        assert metric(metrics_port, "telemetry_mqtt_written_total") == 5 * len(SENSORS)
        server.start()
        publisher.wait_confirmed(45 * len(SENSORS))
        wait_for(lambda: len(stream_readings(server.url)) >= 45 * len(SENSORS), 30, "the backlog written")
        assert_exactly_once(server.url, set(publisher.confirmed))
    finally:
        bridge.terminate()
        bridge.wait(timeout=20)
        publisher.close()
        server.stop()


def publish_steadily_from(publisher: Publisher, first_tick: int, ticks: int) -> threading.Thread:
    def run() -> None:
        for tick in range(first_tick, first_tick + ticks):
            for sensor in SENSORS:
                publisher.publish("zigbee2mqtt", sensor, START + tick * 1000, 22.0, 41.0)
            time.sleep(0.1)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_broker_killed_and_restarted(broker, redis_url, tmp_path):
    """What the broker acknowledged after its last autosave is gone with a kill -9 (Mosquitto
    saves every autosave_interval, 1 s here): the test reports it, and checks that everything
    the bridge saw is written once and that its count matches the stream."""
    publisher = Publisher(broker.port)
    bridge = start_bridge(broker.url, redis_url, tmp_path / "bridge.log", "--batch", "20")
    wait_subscribed(redis_url)
    publishing = publish_steadily(publisher, 40, per_second=100)
    time.sleep(1.5)
    broker.kill()
    time.sleep(1.0)
    broker.start()
    publishing.join(timeout=60)
    time.sleep(3)  # publishers and bridge reconnect; the publisher resends what the broker never confirmed
    published = {(sensor, START + tick * 1000 + index) for tick in range(40) for index, sensor in enumerate(SENSORS)}
    readings = stream_readings(redis_url)
    wait_for(lambda: len(stream_readings(redis_url)) == redis_counters(redis_url)["written"], 10, "quiet")
    seen = keyed(stream_readings(redis_url))
    assert all(n == 1 for n in seen.values()), "a reading written twice"
    assert redis_counters(redis_url)["written"] == len(seen)
    lost = published - set(seen)
    print(f"broker kill -9: {len(published)} published at QoS 1, {len(seen)} in the stream, {len(lost)} lost "
          f"at the broker (acknowledged to the publisher, not yet saved)")
    assert len(readings) > 0 and len(lost) < len(published) / 2
    bridge.terminate()
    bridge.wait(timeout=20)
    publisher.close()


def test_retained_replays_are_not_readings(broker, redis_url, tmp_path):
    publisher = Publisher(broker.port)
    for index, sensor in enumerate(SENSORS[:3]):
        publisher.publish("zigbee2mqtt", sensor, START + index, 19.0, 45.0, retain=True)
    publisher.wait_confirmed(3)
    log = tmp_path / "bridge.log"
    for run in range(2):  # every subscribe replays the retained messages
        bridge = start_bridge(broker.url, redis_url, log)
        wait_subscribed(redis_url)
        publisher.publish("zigbee2mqtt", SENSORS[3], START + 10_000 + run, 20.0, 50.0)
        wait_for(lambda expected=run + 1: len(stream_readings(redis_url)) == expected, 20, "the live reading")
        time.sleep(0.5)
        bridge.send_signal(signal.SIGTERM)
        bridge.wait(timeout=20)
    assert keyed(stream_readings(redis_url)) == Counter({(SENSORS[3], START + 10_000): 1, (SENSORS[3], START + 10_001): 1})
    status = json.loads(redis.Redis.from_url(redis_url).get(Keys().mqtt_bridge("test-bridge")))
    assert status["retained_skipped"] == 3
    publisher.close()


def in_process_bridge(broker: PrivateMosquitto, redis_url: str, format_name: str, mapping: str | None = None
                      ) -> MqttBridge:
    db = redis.Redis.from_url(redis_url, decode_responses=True)
    layout = open_layout(db, Keys(), PARTITIONS)
    options = FormatOptions(mapping=JsonMapping.parse(mapping) if mapping else None)
    settings = BridgeSettings(BrokerTarget("127.0.0.1", broker.port, False), format_name, options, "dup-test",
                              topics=("sensors/#",) if format_name == "json" else ())
    bridge = MqttBridge(settings, ReadingSink(db, layout, Keys(), FieldMap(), 0, "dup-test"),
                        parser_for(format_name, options), log=io.StringIO())
    bridge.start()
    wait_for(lambda: bridge.connected, 10, "the bridge connected")
    time.sleep(0.2)  # the subscription in place
    return bridge


def write_and_die_before_acknowledging(broker, redis_url, format_name, mapping, publish) -> MqttBridge:
    """A bridge writes five readings and dies before its acknowledgements; a second one with the
    same client id takes the session over and is sent the five again, with DUP set."""
    first = in_process_bridge(broker, redis_url, format_name, mapping)
    first.client.ack_in_order = lambda mids: None
    publish()
    wait_for(lambda: first.step(0.1) == 0 and first.counts.received == 5, 10, "five messages written")
    first.client.loop_stop()
    second = in_process_bridge(broker, redis_url, format_name, mapping)
    wait_for(lambda: second.step(0.1) == 0 and second.counts.received == 5, 10, "five redelivered")
    second.close()
    first.client.disconnect()
    return second


def test_redelivered_messages_with_device_time_are_recognised(broker, redis_url):
    publisher = Publisher(broker.port)
    second = write_and_die_before_acknowledging(
        broker, redis_url, "zigbee2mqtt", None,
        lambda: [publisher.publish("zigbee2mqtt", "attic", START + tick, 20.0, 40.0) for tick in range(5)])
    assert (second.counts.written, second.counts.duplicates) == (0, 5)
    assert len(stream_readings(redis_url)) == 5
    publisher.close()


def test_redelivered_messages_at_arrival_time_are_written_and_counted(broker, redis_url):
    """Without device time a redelivery cannot be told from a new reading: written, and counted."""
    publisher = Publisher(broker.port)
    second = write_and_die_before_acknowledging(
        broker, redis_url, "json", "sensor=topic:1,temperature=t,humidity=h",
        lambda: [publisher.raw("sensors/attic", json.dumps({"t": 20.0 + tick, "h": 40}).encode()) for tick in range(5)])
    assert (second.counts.written, second.counts.redelivered_at_arrival_time) == (5, 5)
    readings = stream_readings(redis_url)
    assert len(readings) == 10 and all(fields["time"] == "broker" for fields in readings)
    publisher.close()


def test_split_topics_at_one_device_time_are_two_readings_and_redeliveries_of_each_are_recognised(broker, redis_url):
    """A json device with device time publishes temperature and humidity on separate topics with
    the same time: each is a reading of its metric (neither the other's duplicate), and a DUP
    redelivery of either is recognised."""
    publisher = Publisher(broker.port)
    messages = [(f"sensors/attic/{topic}", {key: value + tick, "ts": START + tick * 1000})
                for tick in range(3) for topic, key, value in (("temperature", "t", 20.0), ("humidity", "h", 40.0))][:5]
    second = write_and_die_before_acknowledging(
        broker, redis_url, "json", "sensor=topic:1,temperature=t,humidity=h,time=ts:epoch_ms",
        lambda: [publisher.raw(topic, json.dumps(payload).encode()) for topic, payload in messages])
    assert (second.counts.written, second.counts.duplicates, second.counts.dead_lettered) == (0, 5, 0)
    readings = stream_readings(redis_url)
    assert [(int(fields["ts"]), fields.get("temperature_c"), fields.get("humidity_pct")) for fields in readings] == [
        (START, "20.0", None), (START, None, "40.0"), (START + 1000, "21.0", None), (START + 1000, None, "41.0"),
        (START + 2000, "22.0", None)]
    publisher.close()


def test_bad_payloads_are_dead_lettered_and_acknowledged(broker, redis_url, tmp_path):
    publisher = Publisher(broker.port)
    bridge = start_bridge(broker.url, redis_url, tmp_path / "bridge.log")
    wait_subscribed(redis_url)
    publisher.raw("zigbee2mqtt/attic", b"not json")
    publisher.raw("zigbee2mqtt/attic", json.dumps({"temperature": "warm", "humidity": 40}).encode())
    publisher.raw("zigbee2mqtt/attic", b"{" + b" " * 70_000 + b"}")
    publisher.publish("zigbee2mqtt", "attic", START, 20.0, 40.0)
    wait_for(lambda: len(stream_readings(redis_url)) == 1, 20, "the good reading")
    letters = redis.Redis.from_url(redis_url, decode_responses=True).xrange(Keys().mqtt_dead_letter)
    assert [fields["reason"] for _, fields in letters] == [
        "not JSON: Expecting value at character 0", "temperature: 'warm' is not a number",
        "payload of 70002 bytes, more than 65536"]
    assert all(fields["topic"] == "zigbee2mqtt/attic" for _, fields in letters)
    assert len(letters[2][1]["payload"]) == 512
    bridge.terminate()
    bridge.wait(timeout=20)
    status = json.loads(run_cli("consumers", "status", "--json", "--redis-url", redis_url).stdout)
    assert status["mqtt_totals"] == {"written": 1, "duplicates": 0}
    [shown] = status["mqtt_bridges"]
    assert (shown["client_id"], shown["running"], shown["received"], shown["dead_lettered"]) == (
        "test-bridge", False, 4, 3)
    text = run_cli("consumers", "status", "--redis-url", redis_url).stdout
    assert "mqtt bridge test-bridge (mqtt://127.0.0.1:" in text and "stopped, received 4, written 1" in text
    assert "mqtt, all bridges: written 1, duplicates skipped 0" in text
    restarted = start_bridge(broker.url, redis_url, tmp_path / "bridge.log")  # nothing left unacknowledged
    time.sleep(2)
    restarted.terminate()
    restarted.wait(timeout=20)
    assert len(redis.Redis.from_url(redis_url).xrange(Keys().mqtt_dead_letter)) == 3
    publisher.close()


@pytest.mark.parametrize(("args", "env", "problem"), [
    (["--from-mqtt", "mqtt://bob:secret@127.0.0.1", "--format", "tasmota"], {}, "not in the URL"),
    (["--from-mqtt", "mqtt://127.0.0.1", "--format", "tasmota"], {"MQTT_PASSWORD": "x"}, "names no user"),
    (["--from-mqtt", "mqtt://127.0.0.1", "--format", "json"], {}, "needs --map"),
    (["--from-mqtt", "mqtt://127.0.0.1", "--format", "tasmota", "--topic", "a/#/b"], {}, "not an MQTT topic filter"),
    (["--from-mqtt", "mqtt://127.0.0.1", "--format", "tasmota", "--tz", "Mars/Base"], {}, "not a time zone"),
    (["--from-mqtt", "mqtt://127.0.0.1", "--format", "tasmota", "--mqtt-ca", "ca.pem"], {}, "only with mqtts://"),
    (["--from-mqtt", "http://127.0.0.1", "--format", "tasmota"], {}, "expected mqtt://"),
    (["--from-mqtt", "mqtt://127.0.0.1"], {}, "needs --format"),
    (["kitchen", "--from-mqtt", "mqtt://127.0.0.1", "--format", "tasmota"], {}, "name no simulated ones"),
])
def test_bad_bridge_flags_exit_2_with_one_line(args, env, problem, redis_url):
    result = run_cli("producers", *args, "--redis-url", redis_url, env_extra=env, timeout=30)
    assert result.returncode == 2
    assert problem in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


E2E_FORMATS = {"tasmota": ("kitchen", "attic", "cellar"), "zigbee2mqtt": ("porch", "garage", "shed", "loft"),
               "shelly-gen2": ("office", "bath", "hall")}


def test_simulators_through_mosquitto_and_bridges_to_workers(broker, redis_url, tmp_path):
    """10 simulated sensors in 3 formats publish through Mosquitto; 3 bridges and 2 workers run;
    each window's count and mean equal pandas' on the values the devices published."""
    observed = []
    observer = Publisher(broker.port, client_id="observer")
    observer.client.on_message = lambda client, userdata, message: observed.append(
        MqttMessage(message.topic, message.payload, 0))
    observer.client.subscribe("#", qos=1)
    bridges = [start_bridge(broker.url, redis_url, tmp_path / f"{name}.log", format_name=name, client_id=f"in-{name}")
               for name in E2E_FORMATS]
    for name in E2E_FORMATS:
        wait_subscribed(redis_url, f"in-{name}")
    flags = [flag if flag != "6" else str(PARTITIONS) for flag in WORKER_FLAGS]
    workers = [spawn("consumers", "aggregate", "--consumer", f"w{index}", "--redis-url", redis_url, *flags,
                     stderr=(tmp_path / f"w{index}.log").open("w")) for index in range(2)]
    try:
        # Live, as devices report: a backfill through a bridge would arrive in bursts, and between
        # them the partitions' event clocks follow the wall clock (see the lead's notes on issue 19).
        simulators = [spawn("producers", *sensors, "--to-mqtt", broker.url, "--format", name, "--count", "8",
                            "--seed", "19") for name, sensors in E2E_FORMATS.items()]
        assert [simulator.wait(timeout=60) for simulator in simulators] == [0, 0, 0]
        time.sleep(1)  # the observer's last messages
        published = pd.DataFrame([asdict(reading) for message in observed
                                  for reading in parser_for(FORMAT_OF[message.topic.split("/")[0]],
                                                            FormatOptions())(message)])
        assert len(published) == 80 and published.device_time.all()
        published["window_start"] = published.ts_ms - published.ts_ms % WINDOW_MS
        expected = published.groupby(["sensor", "window_start"]).temperature_c.agg(["count", "mean"])
        db = redis.Redis.from_url(redis_url, decode_responses=True)
        layout = open_layout(db, Keys(), PARTITIONS)
        wait_for(lambda: counters(db, layout).get("windows_emitted", 0) >= len(expected), 60, "every window")
        windows = outputs(db, layout, "aggregates")
        windows = windows.astype({"window_start": int, "count": int, "temperature_c_mean": float})
        windows = windows.set_index(["sensor", "window_start"]).sort_index()
        assert len(windows) == len(expected)
        differing = windows["count"].compare(expected["count"])
        assert differing.empty, f"{differing}\n{counters(db, layout)}"
        assert ((windows.temperature_c_mean - expected["mean"]).abs() < 1e-9).all()
    finally:
        for process in bridges + workers:
            process.terminate()
            process.wait(timeout=20)
        observer.close()


FORMAT_OF = {"tele": "tasmota", "zigbee2mqtt": "zigbee2mqtt", **{sensor: "shelly-gen2" for sensor in E2E_FORMATS["shelly-gen2"]}}


# The built-in temperature-high (its `for` shortened) and humidity-low (on the rolling mean), and a
# humidity threshold on each reading: an absent humidity taken for 0 %RH would fire both of these.
PROBE_RULES = "".join(f"[[rule]]{block}" for block in DEFAULT_RULES_TOML.split("[[rule]]")
                      if '"temperature-high"' in block or '"humidity-low"' in block).replace('"30s"', '"2s"') + """
[[rule]]
name = "humidity-dry"
kind = "threshold"
metric = "humidity_pct"
below = 5.0
"""
PROBE_TEMPERATURES = [21.0, 22.5, 45.0, 46.0, 47.5, 46.0, 45.0, 30.0, 21.0]


def publish_probe_live(publisher: Publisher) -> list[tuple[int, float]]:
    """A DS18B20 on a Tasmota board, one reading a second at device time (whole seconds, UTC)."""
    published = []
    first_s = int(time.time()) + 1
    for tick, temperature in enumerate(PROBE_TEMPERATURES):
        time.sleep(max(0.0, first_s + tick - time.time()))
        ts_ms = (first_s + tick) * 1000
        payload = {"Time": pd.Timestamp(ts_ms, unit="ms").strftime("%Y-%m-%dT%H:%M:%S"),
                   "DS18B20": {"Id": "01144A0CB2AA", "Temperature": temperature}, "TempUnit": "C"}
        publisher.raw("tele/probe/SENSOR", json.dumps(payload).encode())
        published.append((ts_ms, temperature))
    return published


def per_metric_windows(readings: pd.DataFrame) -> pd.DataFrame:
    """pandas over the values present: count, mean and min of each metric skip NaN."""
    readings = readings.assign(window_start=readings.ts_ms - readings.ts_ms % WINDOW_MS)
    return readings.groupby(["sensor", "window_start"]).agg(
        count=("ts_ms", "size"), temperature_c_count=("temperature_c", "count"),
        temperature_c_mean=("temperature_c", "mean"), temperature_c_min=("temperature_c", "min"),
        humidity_pct_count=("humidity_pct", "count"), humidity_pct_mean=("humidity_pct", "mean"))


def test_a_temperature_probe_and_a_split_topic_device_through_mosquitto_a_bridge_and_a_worker(
        broker, redis_url, tmp_path):
    """A temperature-only probe (Tasmota, DS18B20, device time) and a Shelly gen1 H&T simulator
    (temperature and humidity on separate topics, arrival time) publish through Mosquitto; a
    bridge per format and a worker run. Each message becomes one reading of the metrics it
    carries, exactly as published; each window's per-metric statistics equal pandas over those
    readings; the probe's temperature rule fires and resolves, and no humidity rule fires on the
    probe's absent humidity."""
    rules = tmp_path / "rules.toml"
    rules.write_text(PROBE_RULES)
    bridges = [start_bridge(broker.url, redis_url, tmp_path / f"{name}.log", *args, format_name=name,
                            client_id=f"in-{name}") for name, args in (("tasmota", ("--tz", "UTC")), ("shelly", ()))]
    for name in ("tasmota", "shelly"):
        wait_subscribed(redis_url, f"in-{name}")
    flags = [flag if flag != "6" else str(PARTITIONS) for flag in WORKER_FLAGS]
    worker = spawn("consumers", "aggregate", "--consumer", "w0", "--redis-url", redis_url, *flags, "--rules", str(rules),
                   stderr=(tmp_path / "w0.log").open("w"))
    publisher = Publisher(broker.port)
    try:
        simulator = spawn("producers", "hall", "--to-mqtt", broker.url, "--format", "shelly", "--count", "8",
                          "--seed", "19")
        probe = publish_probe_live(publisher)
        assert simulator.wait(timeout=60) == 0
        db = redis.Redis.from_url(redis_url, decode_responses=True)
        wait_for(lambda: len(stream_readings(redis_url)) == len(probe) + 16, 20, "every message written")
        written = pd.DataFrame(stream_readings(redis_url)).astype({"ts": int, "temperature_c": float,
                                                                   "humidity_pct": float})
        written = written.rename(columns={"ts": "ts_ms"})
        by_sensor = dict(tuple(written.groupby("sensor")))
        assert list(zip(by_sensor["probe"].ts_ms, by_sensor["probe"].temperature_c)) == probe
        assert by_sensor["probe"].humidity_pct.isna().all()
        hall = by_sensor["hall"]
        assert (hall.temperature_c.isna() != hall.humidity_pct.isna()).all()  # one metric a reading
        assert (hall.temperature_c.count(), hall.humidity_pct.count()) == (8, 8)
        expected = per_metric_windows(written)
        layout = open_layout(db, Keys(), PARTITIONS)

        def emitted() -> pd.DataFrame:
            windows = outputs(db, layout, "aggregates")
            if windows.empty:
                return windows
            return latest_windows(windows.astype({"window_start": int})).set_index(["sensor", "window_start"])

        wait_for(lambda: set(expected.index) <= set(emitted().index), 60, "every window")
        windows = emitted().sort_index()
        assert list(windows.index) == list(expected.index)
        for column in expected.columns:
            np.testing.assert_allclose(windows[column].astype(float), expected[column].astype(float), rtol=1e-9,
                                       equal_nan=True, err_msg=column)
        assert windows.loc["probe"].humidity_pct_mean.isna().all()  # absent from the entries
        wait_for(lambda: len(outputs(db, layout, "alerts")) >= 2, 20, "the probe's alert resolved")
        time.sleep(1)  # any alert that should not be there
        alerts = outputs(db, layout, "alerts")
        assert list(zip(alerts.rule, alerts.sensor, alerts.state)) == [
            ("temperature-high", "probe", "firing"), ("temperature-high", "probe", "resolved")]
    finally:
        for process in [*bridges, worker]:
            process.terminate()
            process.wait(timeout=20)
        publisher.close()
