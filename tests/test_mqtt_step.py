"""One step of the bridge's loop, without a broker or Redis: messages put in its inbox as paho's
thread would, a sink that records what it was given, acknowledgements recorded in place of
PUBACKs. A step lingers until it holds half the in-flight bound, never takes more than a batch,
and acknowledges in arrival order only after the write returned."""

from __future__ import annotations

import io
import threading
import time

import paho.mqtt.client as mqtt

from producers.mqtt.bridge import MqttBridge
from producers.mqtt.formats import FormatOptions, parser_for
from producers.mqtt.settings import BridgeSettings, BrokerTarget
from producers.mqtt.sink import WriteResult

START_MS = 1_700_000_000_000


class RecordingSink:
    def __init__(self, events: list) -> None:
        self.events = events

    def write(self, readings, dead_letters) -> WriteResult:
        self.events.append(("write", [reading.ts_ms for reading in readings], len(dead_letters)))
        return WriteResult(len(readings), 0)


def step_bridge(*, max_in_flight: int, batch_size: int, linger_s: float) -> tuple[MqttBridge, list]:
    events: list = []
    settings = BridgeSettings(BrokerTarget("127.0.0.1", 1, False), "zigbee2mqtt", FormatOptions(), "step-test",
                              max_in_flight=max_in_flight, batch_size=batch_size, linger_s=linger_s)
    bridge = MqttBridge(settings, RecordingSink(events), parser_for("zigbee2mqtt", FormatOptions()),
                        log=io.StringIO())
    bridge.client.ack_in_order = lambda mids: events.extend(("ack", mid) for mid in mids)
    return bridge, events


def arrive(bridge: MqttBridge, mids: range) -> None:
    """As paho's thread hands messages over."""
    for mid in mids:
        message = mqtt.MQTTMessage(mid, b"zigbee2mqtt/attic")
        message.payload = f'{{"temperature": 20.5, "humidity": 40, "last_seen": {START_MS + mid}}}'.encode()
        message.qos = 1
        bridge._on_message(bridge.client, None, message)


def test_a_step_lingers_until_half_the_bound_arrived_then_acknowledges_in_order_after_the_write():
    bridge, events = step_bridge(max_in_flight=20, batch_size=1000, linger_s=5.0)
    arrive(bridge, range(1, 4))
    threading.Timer(0.1, arrive, (bridge, range(4, 11))).start()
    started = time.monotonic()
    assert bridge.step(1.0) == 10
    assert time.monotonic() - started < 4.0  # it stopped lingering when full, not at the linger's end
    assert events == [("write", [START_MS + mid for mid in range(1, 11)], 0), *(("ack", mid) for mid in range(1, 11))]


def test_a_step_waits_for_a_first_message():
    bridge, events = step_bridge(max_in_flight=20, batch_size=1000, linger_s=0.0)
    assert bridge.step(0.05) == 0
    threading.Timer(0.1, arrive, (bridge, range(1, 2))).start()
    started = time.monotonic()
    assert bridge.step(5.0) == 1
    assert time.monotonic() - started < 4.0  # woken by the message, not by the wait's end
    assert events == [("write", [START_MS + 1], 0), ("ack", 1)]


def test_a_step_takes_what_came_within_the_linger_and_at_most_a_batch():
    bridge, events = step_bridge(max_in_flight=100, batch_size=30, linger_s=0.05)
    arrive(bridge, range(1, 3))
    assert bridge.step(1.0) == 2  # 2 of the 50 it would wait for: the linger ended the wait
    assert bridge.in_flight == 0
    arrive(bridge, range(3, 83))
    assert [bridge.step(1.0) for _ in range(4)] == [30, 30, 20, 0]
    acks = [mid for kind, mid, *_ in events if kind == "ack"]
    assert acks == list(range(1, 83))
    writes = [index for index, event in enumerate(events) if event[0] == "write"]
    assert [events[index + 1] for index in writes] == [("ack", 1), ("ack", 3), ("ack", 33), ("ack", 63)]
