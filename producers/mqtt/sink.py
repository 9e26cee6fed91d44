"""Writes the readings of a run of MQTT messages into the partition streams, so that the bridge
may acknowledge those messages: nothing is acknowledged that is not in Redis, and nothing that is
in Redis is written again when the broker sends it a second time.

Two things can bring a reading back. Redis may run a write whose reply is lost: the writer
resends the same calls under the same batch number, and the batch marker (the producer's
mechanism, `append_readings.lua`) makes the resend a no-op. And the broker resends every message
the bridge had not acknowledged when it died or lost its connection (DUP set), though the bridge
may have written its reading: a new process has a new batch number, so the marker cannot know
it. The reading's identity can: a sensor, its device time and the metrics it carries (a device
that publishes each metric on its own topic sends two readings with one time). `mqtt_append.lua`
keeps each sensor's newest identities (`mqtt-seen:<sensor>`, the last SEEN_TIMES_KEPT) and writes
a reading only if its identity is not among them, in the same atomic call as the XADD, with the
seq given in Redis. A reading at arrival time (the payload has no time) cannot be recognised: it is written
as it comes, and the bridge counts the redelivered ones (README, "Real sensors over MQTT").
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from dataclasses import dataclass

from redis.exceptions import NoPermissionError

from producers.mqtt.dead_letter import MqttDeadLetter
from producers.mqtt.message import DeviceReading
from telemetry.backoff import RETRYABLE
from telemetry.connection import Client
from telemetry.errors import UsageError
from telemetry.keys import Keys
from telemetry.partitions import Layout
from telemetry.refusals import Retries
from telemetry.schema import SCHEMA_VERSION, FieldMap
from telemetry.scripts import ReplicaWait, load_script, run_until_answered

BATCH_MARKER_TTL_MS = 86_400_000
SEEN_TIMES_KEPT = 256  # per sensor: a redelivery comes within the bridge's in-flight bound of the newest
DEAD_LETTER_MAXLEN = 100_000
TIME_SOURCE_FIELD = "time"  # 'broker' on readings stamped with the arrival time; absent: device time


def metric_text(value: float | None) -> str:
    """As the script takes a metric: '' for one the reading does not carry (left out of the entry)."""
    return "" if value is None else repr(value)


@dataclass(frozen=True, slots=True)
class WriteResult:
    written: int
    duplicates: int


class ReadingSink:
    def __init__(self, db: Client, layout: Layout, keys: Keys, field_map: FieldMap, maxlen: int, bridge: str,
                 *, wait: ReplicaWait | None = None, log=None) -> None:
        if field_map.ts is None:
            raise UsageError("--fields: the MQTT bridge writes device times, so the entry needs a ts field")
        self.db, self.layout, self.keys, self.maxlen, self.wait = db, layout, keys, maxlen, wait
        self.names = [field_map.sensor, field_map.ts, field_map.temperature_c, field_map.humidity_pct,
                      field_map.seq or "", field_map.version or "", TIME_SOURCE_FIELD]
        self.script = load_script(db, "mqtt_append")
        self.process_id = f"mqtt-{bridge}-{os.getpid()}-{secrets.token_hex(4)}"  # batch numbers restart with it
        self.batch_number = 0
        self.log = log or sys.stderr
        self.retries = Retries()  # one policy for the readings and the dead letters: a refusal is said once

    def write(self, readings: list[DeviceReading], dead_letters: list[MqttDeadLetter]) -> WriteResult:
        """Blocks until Redis holds every reading and dead letter, resending through outages."""
        result = self._write_readings(readings) if readings else WriteResult(0, 0)
        if dead_letters:
            self._write_dead_letters(dead_letters)
        return result

    def _write_readings(self, readings: list[DeviceReading]) -> WriteResult:
        self.batch_number += 1
        by_partition: dict = {}
        for reading in readings:  # arrival order is kept within each partition
            by_partition.setdefault(self.layout.partition_for(reading.sensor), []).append(reading)
        calls = []
        for partition, part in by_partition.items():
            keys = [partition.readings, partition.producer_batch(self.process_id), partition.mqtt_seq,
                    partition.mqtt_counters, *(partition.mqtt_seen(reading.sensor) for reading in part)]
            args: list = [self.batch_number, BATCH_MARKER_TTL_MS, self.maxlen, SEEN_TIMES_KEPT, *self.names,
                          SCHEMA_VERSION]
            for reading in part:
                args += [reading.sensor, reading.ts_ms, metric_text(reading.temperature_c),
                         metric_text(reading.humidity_pct), "1" if reading.device_time else "0"]
            calls.append((keys, args))

        replies = run_until_answered(self.db, self.script, calls, self.wait, self.retries, self._say,
                                     f"{len(readings)} unacknowledged readings")
        return WriteResult(sum(int(reply[0]) for reply in replies), sum(int(reply[1]) for reply in replies))

    def _write_dead_letters(self, dead_letters: list[MqttDeadLetter]) -> None:
        """At least once: a resend after a lost reply may keep a dead letter twice."""
        while True:
            try:
                pipeline = self.db.pipeline(transaction=False)
                for letter in dead_letters:
                    pipeline.xadd(self.keys.mqtt_dead_letter, letter.encode(), maxlen=DEAD_LETTER_MAXLEN,
                                  approximate=True)
                pipeline.execute()
                if (ended := self.retries.went_through()) is not None:
                    self._say(ended)
                return
            except (*RETRYABLE, NoPermissionError) as error:  # the last: until an operator fixes the ACL
                delay, line = self.retries.failed(error, f"{len(dead_letters)} dead letters")
                if line is not None:
                    self._say(line)
                time.sleep(delay)

    def _say(self, line: str) -> None:
        print(f"bridge: {line}", file=self.log)
