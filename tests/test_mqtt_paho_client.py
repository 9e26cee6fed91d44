"""producers/mqtt/paho_client.py against a private Mosquitto: its shortcuts through paho's private
methods read every message as paho would, and its PUBACKs settle exactly what they name. Fails if
a paho upgrade renames or reshapes what it overrides."""

from __future__ import annotations

import inspect
import time
from collections import deque

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from producers.mqtt.local_broker import PrivateMosquitto
from producers.mqtt.paho_client import BridgeClient
from tests.crash_harness import wait_for
from tests.mqtt_helpers import Publisher


@pytest.fixture()
def broker(tmp_path):
    with PrivateMosquitto(tmp_path / "mosquitto", max_queued_messages=10_000) as server:
        yield server


def test_the_private_methods_it_overrides_are_still_paho_s():
    for name in ("_sock_recv", "_handle_publish", "_packet_queue", "_handle_on_message", "loop_read"):
        assert name in vars(mqtt.Client), name
    assert list(inspect.signature(mqtt.Client._packet_queue).parameters) == [
        "self", "command", "packet", "mid", "qos", "info"]
    assert list(inspect.signature(mqtt.Client._sock_recv).parameters) == ["self", "bufsize"]
    assert callable(mqtt.time_func)


def subscriber(port: int, received: deque) -> BridgeClient:
    """As the bridge connects: MQTT 5, manual acknowledgement, persistent session, QoS 1."""
    client = BridgeClient(CallbackAPIVersion.VERSION2, client_id="lean", protocol=mqtt.MQTTv5, manual_ack=True)
    client.on_message = lambda client, userdata, message: received.append(message)
    client.on_connect = lambda client, *args: client.subscribe("t/#", qos=1)
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 600
    properties.ReceiveMaximum = 5000  # all of them in flight at once: acknowledged at the end
    client.connect("127.0.0.1", port, clean_start=False, properties=properties)
    client.loop_start()
    wait_for(client.is_connected, 10, "connected")
    time.sleep(0.2)  # subscribed
    return client


def test_messages_read_as_paho_reads_them_and_acknowledged_in_one_write(broker):
    publisher = Publisher(broker.port)
    received: deque = deque()
    client = subscriber(broker.port, received)
    client.disconnect()
    client.loop_stop()
    # queued while away: the broker sends them back to back, many to one read
    payloads = [f"reading {index} ".encode() * (1 + index % 300) for index in range(2000)]
    for index, payload in enumerate(payloads):
        publisher.client.publish(f"t/{index % 7}/x", payload, qos=1)
    tagged = Properties(PacketTypes.PUBLISH)
    tagged.UserProperty = ("device", "probe")
    publisher.client.publish("t/tagged", b"with properties", qos=1, properties=tagged)
    publisher.raw("t/retained", b"kept", retain=True)  # queued, then replayed on the next subscribe
    client = subscriber(broker.port, received)
    wait_for(lambda: len(received) >= 2003, 20, "every message")
    plain = [message for message in received if message.topic[2].isdigit()]
    assert [message.payload for message in plain] == payloads
    assert [message.topic for message in plain] == [f"t/{index % 7}/x" for index in range(2000)]
    assert all(message.qos == 1 and not message.dup and not message.retain and message.properties is None
               for message in plain)  # the shortcut decoded them
    assert sorted(message.retain for message in received if message.topic == "t/retained") == [False, True]
    tagged_message = next(message for message in received if message.topic == "t/tagged")
    assert tagged_message.properties.UserProperty == [("device", "probe")]  # paho decoded it
    assert len({message.mid for message in received}) == len(received) == 2003
    unacknowledged = plain[1000]
    client.ack_in_order([message.mid for message in received if message is not unacknowledged])
    time.sleep(0.5)
    client.disconnect()
    client.loop_stop()
    received.clear()
    client = subscriber(broker.port, received)  # the session resumed: only what was not acknowledged
    wait_for(lambda: any(not message.retain for message in received), 10, "the redelivery")
    time.sleep(0.5)
    assert [(message.topic, message.payload, message.dup) for message in received if not message.retain] == [
        (unacknowledged.topic, unacknowledged.payload, True)]
    client.disconnect()
    client.loop_stop()
    publisher.close()
