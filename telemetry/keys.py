"""Key names. A pipeline's readings live in P partition streams; every key a partition's commit or
takeover touches carries that partition's hash tag, so each script stays in one cluster slot and
partitions can spread over Redis Cluster masters. Keys of one consumer group are separate from
another's, so two groups on one stream are two independent pipelines."""

from __future__ import annotations

import re
from dataclasses import dataclass

from telemetry.errors import UsageError

_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


def validate_name(what: str, name: str) -> str:
    """Prefixes and group names end up inside keys and hash tags: no braces, spaces or colons."""
    if not _NAME.fullmatch(name):
        raise UsageError(f"{what}: {name!r} must be 1-64 characters from [A-Za-z0-9._-]")
    return name


def hash_tag(key: str) -> str:
    """The part of a key that Redis Cluster hashes: the first non-empty {...}, else the whole key."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1:end]
    return key


@dataclass(frozen=True, slots=True)
class Keys:
    """Where a pipeline lives: `prefix` names it; `readings_override` is a stream given verbatim
    (--stream KEY, e.g. the seed tutorial's app:event), a one-partition pipeline of its own."""

    prefix: str = "telemetry"
    readings_override: str | None = None

    def __post_init__(self) -> None:
        validate_name("prefix", self.prefix)
        if self.readings_override is not None and not self.readings_override.strip():
            raise UsageError("--stream: the key must not be empty")

    @property
    def namespace_tag(self) -> str:
        return hash_tag(self.readings_override) if self.readings_override else self.prefix

    def _key(self, name: str) -> str:
        return f"{{{self.namespace_tag}}}:{name}"

    @property
    def pipeline(self) -> str:
        """Hash: partitions, hash function and each partition's hash tag, fixed when the pipeline is created."""
        return self._key("pipeline")

    @property
    def legacy_readings(self) -> str:
        """The single stream of the layout before partitions; found, it is reported, never migrated."""
        return f"{{{self.prefix}}}:readings"

    def members(self, group: str) -> str:
        """Sorted set: worker id -> heartbeat deadline (ms); the basis of partition assignment."""
        return self._key(f"{group}:members")

    @property
    def mqtt_dead_letter(self) -> str:
        """Stream: MQTT messages the bridge could not turn into readings (topic, payload, reason)."""
        return self._key("mqtt:dead-letter")

    @property
    def mqtt_bridges(self) -> str:
        """Set: client ids of the MQTT bridges that ran on this pipeline (their status keys expire)."""
        return self._key("mqtt:bridges")

    def mqtt_bridge(self, client_id: str) -> str:
        """String with a TTL: a running bridge's status as JSON, rewritten every second."""
        return self._key(f"mqtt:bridge:{client_id}")

    def notify(self, group: str) -> NotifyKeys:
        """The keys of a notifier group (python -m consumers notify), under the namespace's tag."""
        return NotifyKeys(self, validate_name("--notify-group", group))

    def partition(self, index: int, tag: str) -> PartitionKeys:
        readings = self.readings_override if self.readings_override else f"{{{tag}}}:readings"
        return PartitionKeys(index, tag, readings)


@dataclass(frozen=True, slots=True)
class PartitionKeys:
    index: int
    tag: str
    readings: str

    def _key(self, name: str) -> str:
        return f"{{{self.tag}}}:{name}"

    def producer_batch(self, producer_id: str) -> str:
        """String with a TTL: the number of the producer's last batch written here (a resend is skipped)."""
        return self._key(f"producer-batch:{producer_id}")

    @property
    def producer_seq(self) -> str:
        """Hash: sensor -> "seq stream-id", saved now and then, so a restarted producer continues its
        sensors' seq (producers/writer.py)."""
        return self._key("producer-seq")

    @property
    def mqtt_seq(self) -> str:
        """Hash: sensor -> the last seq the MQTT bridges gave it (assigned in Redis, with the write)."""
        return self._key("mqtt-seq")

    def mqtt_seen(self, sensor: str) -> str:
        """Sorted set: the sensor's newest device times written from MQTT, so a redelivered
        message is recognised (producers/mqtt/sink.py)."""
        return self._key(f"mqtt-seen:{sensor}")

    @property
    def mqtt_counters(self) -> str:
        """Hash: written, duplicates: what the MQTT bridges' writes did here, exact across crashes."""
        return self._key("mqtt-counters")

    def group(self, group: str) -> GroupKeys:
        return GroupKeys(self, group)


@dataclass(frozen=True, slots=True)
class GroupKeys:
    """One consumer group's keys for one partition: its lease, checkpoint and outputs."""

    partition: PartitionKeys
    group: str

    def _key(self, name: str) -> str:
        return self.partition._key(f"{self.group}:{name}")

    @property
    def readings(self) -> str:
        return self.partition.readings

    @property
    def lease(self) -> str:
        """String: the owning worker's token, with a TTL (the lease)."""
        return self._key("lease")

    @property
    def epoch(self) -> str:
        """Counter bumped by every acquisition: the fencing token a commit must present."""
        return self._key("epoch")

    @property
    def checkpoint(self) -> str:
        """Hash: commit (number of the last commit), position (last stream id it covered), clock,
        rolling_ms (the rolling window the state's buckets cover)."""
        return self._key("checkpoint")

    @property
    def state(self) -> str:
        """Hash: sensor -> packed state; 'sensor#slot' -> one rolling bucket."""
        return self._key("state")

    @property
    def windows(self) -> str:
        """Hash: 'sensor#slot' -> a window already emitted, kept while late readings may revise it."""
        return self._key("windows")

    @property
    def aggregates(self) -> str:
        return self._key("aggregates")

    @property
    def alerts(self) -> str:
        return self._key("alerts")

    @property
    def dead_letter(self) -> str:
        return self._key("dead-letter")

    @property
    def counters(self) -> str:
        """Hash of this partition's counters (processed, late, lost_to_trim, ...); readers sum partitions."""
        return self._key("counters")

    def output(self, kind: str) -> str:
        return {"aggregates": self.aggregates, "alerts": self.alerts, "dead-letter": self.dead_letter}[kind]

    def commit_keys(self) -> list[str]:
        """KEYS of the commit script, in its order (telemetry/lua/commit.lua)."""
        return [self.lease, self.epoch, self.checkpoint, self.state, self.aggregates, self.alerts, self.dead_letter,
                self.counters, self.readings, self.windows]


@dataclass(frozen=True, slots=True)
class NotifyKeys:
    """One notifier group's keys. The group is also the consumer group its notifiers share on every
    partition's alert stream."""

    keys: Keys
    group: str

    def _key(self, name: str) -> str:
        return self.keys._key(f"notify:{self.group}:{name}")

    @property
    def firing(self) -> str:
        """Hash: alert id -> the event's fields as JSON: the alerts firing (re-sent to Alertmanager
        every interval, across restarts) and, for a while, the ones resolved (a tombstone: a late
        redelivery of their firing event does not bring them back)."""
        return self._key("firing")

    @property
    def resend_lock(self) -> str:
        """String with a TTL: one notifier of the group re-sends per interval."""
        return self._key("resend-lock")

    @property
    def dead_letter(self) -> str:
        """Stream: notices a sink gave up on (4xx, retries exhausted), with reason and response."""
        return self._key("dead-letter")

    @property
    def sinks(self) -> str:
        """Set: the ids of the sinks the group's notifiers delivered to."""
        return self._key("sinks")

    def sink(self, sink_id: str) -> str:
        """Hash: one sink's kind, url and counters (delivered, retried, dead_lettered, resent, ...)."""
        return self._key(f"sink:{sink_id}")

    @property
    def notifiers(self) -> str:
        """Set: consumer names of the group's notifiers (their status keys expire)."""
        return self._key("notifiers")

    def notifier(self, consumer: str) -> str:
        """String with a TTL: a running notifier's status as JSON (per sink: queued, oldest undelivered)."""
        return self._key(f"notifier:{consumer}")
