"""Simulated devices on a broker (`python -m producers NAME ... --to-mqtt URL --format F`): the
simulation's rows published as each device format would, at QoS 1, so the demo, the tests and
the benchmark exercise the real path: simulator -> broker -> bridge -> Redis -> workers.

It stands in for the StreamWriter the simulation writes to: `submit` publishes a batch, `flush`
waits until the broker acknowledged all of it, `close` disconnects."""

from __future__ import annotations

import secrets
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from producers.mqtt.device_payloads import device_messages
from producers.mqtt.settings import BrokerTarget
from telemetry.errors import UsageError

CONNECT_TIMEOUT_S = 10.0


class DevicePublisher:
    def __init__(self, broker: BrokerTarget, format_name: str, *, max_in_flight: int = 1000) -> None:
        self.format_name = format_name
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"telemetry-sim-{secrets.token_hex(4)}",
                                  protocol=mqtt.MQTTv5)
        if broker.username is not None:
            self.client.username_pw_set(broker.username, broker.password)
        if broker.tls:
            self.client.tls_set(ca_certs=str(broker.ca_file) if broker.ca_file else None,
                                certfile=str(broker.cert_file) if broker.cert_file else None,
                                keyfile=str(broker.key_file) if broker.key_file else None)
        self.client.max_inflight_messages_set(max_in_flight)
        self.client.max_queued_messages_set(0)
        try:
            self.client.connect(broker.host, broker.port)
        except OSError as error:
            raise UsageError(f"--to-mqtt {broker!r}: cannot connect ({error})") from None
        self.client.loop_start()
        self.pending: list[mqtt.MQTTMessageInfo] = []
        self.published = 0

    def submit(self, rows: list[str]) -> None:
        """Rows as the simulation formats them: sensor, ts, temperature, humidity first."""
        for row in rows:
            sensor, ts, temperature, humidity = row.split("\t", 4)[:4]
            for topic, payload in device_messages(self.format_name, sensor, int(ts), float(temperature),
                                                  float(humidity)):
                self.pending.append(self.client.publish(topic, payload, qos=1))
        self.published += len(rows)

    def flush(self) -> None:
        """Until the broker acknowledged every message (paho reconnects and resends meanwhile)."""
        for info in self.pending:
            while not info.is_published():
                time.sleep(0.001)
        self.pending.clear()

    def close(self) -> None:
        self.flush()
        self.client.disconnect()
        self.client.loop_stop()

    def last_seqs(self, sensors: list[str]) -> list[int | None]:
        """Devices have no seq to continue: the bridge gives seqs in Redis."""
        return [None] * len(sensors)
