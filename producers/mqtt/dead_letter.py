"""A message the bridge could not turn into readings, as kept in `{prefix}:mqtt:dead-letter`."""

from __future__ import annotations

from dataclasses import dataclass

from producers.mqtt.message import SHOWN_PAYLOAD_BYTES, MqttMessage


@dataclass(frozen=True, slots=True)
class MqttDeadLetter:
    topic: str
    reason: str
    payload: str  # the first SHOWN_PAYLOAD_BYTES, undecodable bytes escaped
    payload_bytes: int  # the whole payload's size
    arrival_ms: int
    bridge: str  # the client id of the bridge that received it

    @classmethod
    def of(cls, message: MqttMessage, reason: str, bridge: str) -> MqttDeadLetter:
        shown = message.payload[:SHOWN_PAYLOAD_BYTES].decode("utf-8", "backslashreplace")
        return cls(message.topic, reason, shown, len(message.payload), message.arrival_ms, bridge)

    def encode(self) -> dict[str, str]:
        return {"topic": self.topic, "reason": self.reason, "payload": self.payload,
                "payload_bytes": str(self.payload_bytes), "arrival_ms": str(self.arrival_ms), "bridge": self.bridge}

    @classmethod
    def decode(cls, fields: dict[str, str]) -> MqttDeadLetter:
        return cls(fields["topic"], fields["reason"], fields["payload"], int(fields["payload_bytes"]),
                   int(fields["arrival_ms"]), fields["bridge"])
