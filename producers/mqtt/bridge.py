"""The bridge's loop: messages from the broker, readings into Redis, acknowledgements back.

paho's network thread only queues what arrives (`on_message`); the loop takes what is queued
(lingering up to linger_s for half the in-flight bound, so a step is worth its round trip),
parses it (formats/), writes the readings and dead letters (sink.py, which blocks and resends
until Redis has them) and only then acknowledges the messages, in the order they arrived. So a
message is acknowledged only once its reading is in Redis, and what is in flight is bounded by
the broker itself: the bridge connects with MQTT 5 Receive Maximum = --max-in-flight, so the
broker sends no more until some are acknowledged, and a slow or absent Redis stops the flow
instead of filling memory.

The session is persistent (fixed client id, clean start off, a session expiry), so the broker
keeps what arrives while the bridge is away, and resends what it had sent without an
acknowledgement. After a reconnection that resumed the session, messages still queued from the
old connection are dropped unwritten (the broker resends them); if the session was lost, they
are written, having nowhere else to come from.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from producers.mqtt.dead_letter import MqttDeadLetter
from producers.mqtt.formats import Parser
from producers.mqtt.message import DeviceReading, MqttMessage, PayloadError
from producers.mqtt.paho_client import BridgeClient
from producers.mqtt.settings import BridgeSettings
from producers.mqtt.sink import ReadingSink
from telemetry.timeutil import now_ms

TAKE_WAIT_S = 0.2  # how long a step waits for a first message
LINGER_POLL_S = 0.001  # how often a lingering step looks whether it is full


@dataclass(frozen=True, slots=True)
class Inbound:
    message: MqttMessage
    mid: int
    qos: int
    connection: int  # which connection it came on: acknowledgements go back only on that one


@dataclass(slots=True)
class BridgeCounts:
    """What the bridge did since it started; `written` and `duplicates` are also kept exactly in
    Redis (`mqtt-counters`), across crashes."""

    received: int = 0
    written: int = 0
    duplicates: int = 0  # device time already in Redis: a redelivery, or the device repeating itself
    retained_skipped: int = 0  # retained messages replayed on subscribe
    dead_lettered: int = 0
    ignored: int = 0  # topics that carry no reading (availability, a bridge's own state, other devices)
    redelivered_at_arrival_time: int = 0  # DUP messages without device time, written: maybe twice
    dropped_for_redelivery: int = 0  # queued from a connection whose session the broker resumed
    connects: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(slots=True)
class Parsed:
    """A step's messages, sorted: readings to write, dead letters, and what to acknowledge."""

    readings: list[DeviceReading] = field(default_factory=list)
    dead_letters: list[MqttDeadLetter] = field(default_factory=list)
    redelivered_at_arrival_time: int = 0


def sort_messages(batch: list[Inbound], parse: Parser, bridge: str, counts: BridgeCounts) -> Parsed:
    """Parse, then decide: retained replays skipped, bad payloads dead-lettered, readings kept (a
    message with one metric, as split-topic devices send, is a reading of that metric: topics are
    never merged by guessing which messages belong together)."""
    parsed = Parsed()
    for inbound in batch:
        message = inbound.message
        if message.retain:
            counts.retained_skipped += 1
            continue
        try:
            readings = parse(message)
        except PayloadError as error:
            parsed.dead_letters.append(MqttDeadLetter.of(message, str(error), bridge))
            continue
        if not readings:
            counts.ignored += 1
        for reading in readings:
            parsed.readings.append(reading)
            if message.dup and not reading.device_time:
                parsed.redelivered_at_arrival_time += 1
    return parsed


class MqttBridge:
    def __init__(self, settings: BridgeSettings, sink: ReadingSink, parse: Parser, *, log=None,
                 clock_ms: Callable[[], int] = now_ms) -> None:
        self.settings = settings
        self.sink = sink
        self.parse = parse
        self.log = log or sys.stderr
        self.clock_ms = clock_ms
        self.counts = BridgeCounts()
        # paho's thread appends, the loop pops: a deque needs no lock for that, and the event wakes
        # a loop waiting for a first message (set only when clear, so it costs nothing under load)
        self.inbox: deque[Inbound] = deque()
        self._arrived = threading.Event()
        self.connection = 0
        self.resumed = False  # whether the current connection resumed the broker's session
        self.connected = False
        self.in_hand = 0  # taken from the inbox, not yet acknowledged
        self._lock = threading.Lock()
        self.client = self._client()

    def _client(self) -> BridgeClient:
        settings, broker = self.settings, self.settings.broker
        client = BridgeClient(CallbackAPIVersion.VERSION2, client_id=settings.client_id, protocol=mqtt.MQTTv5,
                             manual_ack=True)
        if broker.username is not None:
            client.username_pw_set(broker.username, broker.password)
        if broker.tls:
            client.tls_set(ca_certs=str(broker.ca_file) if broker.ca_file else None,
                           certfile=str(broker.cert_file) if broker.cert_file else None,
                           keyfile=str(broker.key_file) if broker.key_file else None)
        client.reconnect_delay_set(1, 30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def start(self) -> None:
        """Connect in the background: paho's thread retries with backoff until the broker answers."""
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = self.settings.session_expiry_s
        properties.ReceiveMaximum = self.settings.max_in_flight
        broker = self.settings.broker
        self.client.connect_async(broker.host, broker.port, keepalive=self.settings.keepalive_s, clean_start=False,
                                  properties=properties)
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            print(f"bridge: broker {self.settings.broker!r} refused the connection: {reason_code}", file=self.log)
            return
        with self._lock:
            self.connection += 1
            self.resumed = bool(flags.session_present)
            self.connected = True
            self.counts.connects += 1
        print(f"bridge: connected to {self.settings.broker!r} as {self.settings.client_id} "
              f"({'session resumed' if flags.session_present else 'new session'})", file=self.log)
        client.subscribe([(topic, SubscribeOptions(qos=1)) for topic in self.settings.subscribed()])

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._lock:
            self.connected = False
        print(f"bridge: disconnected from the broker ({reason_code})", file=self.log)

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        self.inbox.append(Inbound(MqttMessage(message.topic, message.payload, self.clock_ms(), bool(message.retain),
                                              bool(message.dup)), message.mid, message.qos, self.connection))
        if not self._arrived.is_set():
            self._arrived.set()

    @property
    def in_flight(self) -> int:
        return len(self.inbox) + self.in_hand

    def _wait_for_first(self, wait_s: float) -> bool:
        """Cleared, then the inbox looked at again, so a message appended in between is seen."""
        if not self.inbox:
            self._arrived.clear()
            if not self.inbox:
                self._arrived.wait(wait_s)
        return bool(self.inbox)

    def _take(self, wait_s: float) -> list[Inbound]:
        """Up to batch_size queued messages, waiting up to wait_s for the first, then up to
        linger_s for the step to fill: while messages keep coming, a step that took only what
        had arrived would pay its Redis round trip and its script calls for a handful of
        messages, and spend the time paho's thread needs to receive the next ones."""
        if not self._wait_for_first(wait_s):
            return []
        settings = self.settings
        fill = min(settings.batch_size, settings.step_fill)
        deadline = time.monotonic() + settings.linger_s
        while len(self.inbox) < fill and time.monotonic() < deadline:
            time.sleep(LINGER_POLL_S)
        batch = [self.inbox.popleft() for _ in range(min(len(self.inbox), settings.batch_size))]
        with self._lock:
            current, resumed = self.connection, self.resumed
        if resumed:
            stale = sum(1 for inbound in batch if inbound.connection != current)
            if stale:
                self.counts.dropped_for_redelivery += stale
                batch = [inbound for inbound in batch if inbound.connection == current]
        return batch

    def step(self, wait_s: float = TAKE_WAIT_S) -> int:
        """Take what arrived, write it, acknowledge it in arrival order; returns messages handled."""
        batch = self._take(wait_s)
        if not batch:
            return 0
        self.in_hand = len(batch)
        self.counts.received += len(batch)
        parsed = sort_messages(batch, self.parse, self.settings.client_id, self.counts)
        result = self.sink.write(parsed.readings, parsed.dead_letters)
        self.counts.written += result.written
        self.counts.duplicates += result.duplicates
        self.counts.dead_lettered += len(parsed.dead_letters)
        self.counts.redelivered_at_arrival_time += parsed.redelivered_at_arrival_time
        with self._lock:
            current = self.connection
        # QoS 1 at most: the subscriptions ask for no more
        self.client.ack_in_order([inbound.mid for inbound in batch if inbound.qos == 1 and inbound.connection == current])
        self.in_hand = 0
        return len(batch)

    def status(self) -> dict:
        return {"client_id": self.settings.client_id, "broker": repr(self.settings.broker),
                "connected": self.connected, "in_flight": self.in_flight,
                "max_in_flight": self.settings.max_in_flight, "updated_ms": self.clock_ms(),
                **self.counts.as_dict()}

    def run(self, stop_requested: Callable[[], bool], on_step: Callable[[int], None] = lambda handled: None) -> None:
        """Until stopped or --duration passes. A stop finishes the step in hand; messages still
        queued are left unacknowledged, for the broker to send again."""
        end = None if self.settings.duration_s is None else time.monotonic() + self.settings.duration_s
        while not stop_requested() and (end is None or time.monotonic() < end):
            on_step(self.step())
