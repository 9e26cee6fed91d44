"""paho's Client with the bridge's hot path made cheaper: reads, PUBLISHes without properties and
PUBACKs, which paho handles one small piece at a time.

Per QoS 1 message, paho 2.2 made about five recv() calls (the fixed header a byte at a time, the
remaining length a byte at a time, the rest), a select() on the way back into its loop, built an
empty MQTT 5 Properties object for the property section (a third of its Python time), and each
`ack()` from the bridge's thread wrote a wake-up byte to paho's socket pair and left a send() of
four bytes to paho's thread. This subclass:

- reads the socket 64 KiB at a time and hands paho's packet reader slices of that buffer, reading
  on while whole packets are buffered (so one select() and one recv() serve many messages);
- decodes a QoS 1 PUBLISH whose property section is empty, on a manual-ack MQTT 5 client, without
  building Properties (`message.properties` is None then); anything else goes through paho;
- acknowledges a step's messages with `ack_in_order(mids)`: their PUBACKs in arrival order as one
  queued write and one wake-up.

What each message guarantees is unchanged: the same packets go out in the same order; only how
they are read from and written to the socket differs. The overrides use paho's private methods
(`_sock_recv`, `_handle_publish`, `_packet_queue`, `_in_packet`), checked against paho-mqtt 2.2.0
and pinned in requirements.txt; tests/test_mqtt_paho_client.py fails if an upgrade changes them.
"""

from __future__ import annotations

import struct

import paho.mqtt.client as mqtt
from paho.mqtt.client import MQTTErrorCode, MQTTMessage

READ_CHUNK = 65_536
PUBACK_FRAME = struct.Struct("!BBH")  # fixed header, remaining length 2, message id: reason Success implied
PUBACK = 0x40


class BridgeClient(mqtt.Client):
    """paho's Client for the bridge (MQTT 5, manual acknowledgement); see the module docstring."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._read_from = None  # the socket the buffer was read from: a reconnection starts afresh
        self._read_buffer = b""
        self._read_at = 0

    def _buffered(self) -> int:
        return len(self._read_buffer) - self._read_at if self._read_from is self._sock else 0

    def _sock_recv(self, bufsize: int) -> bytes:
        if not self._buffered():
            chunk = super()._sock_recv(READ_CHUNK)  # raises BlockingIOError when nothing is there
            if not chunk:
                return chunk  # the broker closed the connection
            self._read_from, self._read_buffer, self._read_at = self._sock, chunk, 0
        start = self._read_at
        self._read_at = min(start + bufsize, len(self._read_buffer))
        return self._read_buffer[start:self._read_at]

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """paho reads one packet per select(); go on while the buffer holds more."""
        rc = super().loop_read(max_packets)
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._sock is not None and self._buffered():
            rc = super().loop_read(max_packets)
        return rc

    def _handle_publish(self) -> MQTTErrorCode:
        header, packet = self._in_packet["command"], self._in_packet["packet"]
        if header & 0x06 != 0x02 or not self._manual_ack or self._protocol != mqtt.MQTTv5:
            return super()._handle_publish()
        topic_end = 2 + int.from_bytes(packet[0:2], "big")
        if topic_end == 2 or len(packet) <= topic_end + 2 or packet[topic_end + 2] != 0:
            return super()._handle_publish()  # a topic alias, properties, or a malformed packet: paho decides
        message = MQTTMessage(int.from_bytes(packet[topic_end:topic_end + 2], "big"), bytes(packet[2:topic_end]))
        message.dup = bool(header & 0x08)
        message.qos = 1
        message.retain = bool(header & 0x01)
        message.payload = bytes(packet[topic_end + 3:])
        message.timestamp = mqtt.time_func()
        self._handle_on_message(message)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def ack_in_order(self, mids: list[int]) -> None:
        """PUBACK (Success) for each QoS 1 message id, in the order given, as one write: paho's
        writer sends a queued packet whole, and does nothing more after a PUBACK."""
        if mids:
            frames = b"".join([PUBACK_FRAME.pack(PUBACK, 2, mid) for mid in mids])
            self._packet_queue(PUBACK, frames, mids[-1], 1)
