"""The least each kind of process needs of Redis: one ACL role per process, for one pipeline
(prefix) and one consumer group. The one place that says who may do what; `python -m telemetry
acl` turns it into ACL users, and tests/test_acl.py checks every role against a real server.

Each class of keys gets its own selector (Redis 7.0), holding only the commands used on that
class: a user's commands and key patterns combine in every way within one selector, so one list
for all keys would let a producer that SETs its batch markers also SET over a readings stream.
EVAL/EVALSHA need read and write on every key they are passed, and Redis checks each call a
script makes against the caller's permissions again: a worker may run the commit script over a
readings stream, yet the script cannot XADD there, because no selector of the worker allows
XADD on readings. Keys are named through telemetry/keys.py with a glob for the partition tag,
so a key renamed there is renamed here.

What ACLs cannot express: a consumer group's name is no key, so a worker may XACK or XCLAIM
readings for another group (it still cannot touch another group's state or outputs); SCAN and
KEYS ignore key patterns, so no role but admin gets them (readers name keys from the pipeline
record instead of listing).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from telemetry.keys import GroupKeys, Keys, PartitionKeys

# Every role: commands without keys. CLUSTER INFO/SLOTS/SHARDS and COMMAND let a client find a
# cluster and its slots (INFO, the usual way, is @dangerous); SCRIPT LOAD and MULTI/EXEC carry
# commands that are checked one by one.
CONNECTION = ("ping", "echo", "hello", "select", "readonly", "readwrite", "time", "cluster|info", "cluster|slots",
              "cluster|shards", "cluster|myid", "command", "command|info", "command|docs", "command|count")
TRANSACTIONS = ("multi", "exec", "discard", "unwatch")
SCRIPTS = ("eval", "evalsha", "script|load", "script|exists")
STREAM_READ = ("xrange", "xrevrange", "xread", "xlen", "xinfo|stream", "xinfo|groups", "xinfo|consumers", "xpending")
CONSUMER = ("type", "xreadgroup", "xack", "xclaim", "xautoclaim", "xgroup|create", "xgroup|createconsumer", "xpending",
            "xrange", "xrevrange", "xread", "xlen", "xinfo|stream", "xinfo|groups", "xinfo|consumers")
KEY_READ = ("exists", "type", "ttl", "pttl", "get", "mget", "hget", "hmget", "hgetall", "hkeys", "hlen", "hexists",
            "smembers", "scard", "sismember", "zcard", "zrange", "zrangebyscore", "zscore", "zcount")

# The notifier (python -m consumers notify) reads alerts through a consumer group of its own on
# the alert streams and keeps its keys under {prefix}:notify:<notify group>: (telemetry/keys.py,
# NotifyKeys); any notifier group of the pipeline may run under this role.
NOTIFIER_OWN = "{{{prefix}}}:notify:*"

ROLE_NAMES = ("producer", "bridge", "worker", "notifier", "reader", "admin")


@dataclass(frozen=True, slots=True)
class Grant:
    """Some commands on the keys of some patterns: one ACL selector."""

    patterns: tuple[str, ...]
    commands: tuple[str, ...]  # a command, command|subcommand or @category; "-..." takes away

    def rule(self) -> str:
        return "(" + " ".join([*(f"~{pattern}" for pattern in self.patterns),
                               *(command if command.startswith("-") else f"+{command}"
                                 for command in self.commands)]) + ")"


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    purpose: str
    commands: tuple[str, ...]  # without keys
    grants: tuple[Grant, ...]

    def rules(self) -> list[str]:
        """ACL SETUSER rules, after `reset`: keyless commands at the root, each grant a selector."""
        return ["resetchannels", "-@all", *(f"+{command}" for command in self.commands),
                *(grant.rule() for grant in self.grants)]


def _glob(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


@dataclass(frozen=True, slots=True)
class KeyPatterns:
    """The pipeline's keys as ACL globs: any partition's tag becomes `<prefix>:p*`."""

    keys: Keys
    group: str

    @property
    def partition(self) -> PartitionKeys:
        if self.keys.readings_override:
            tag = _glob(self.keys.namespace_tag)
            return PartitionKeys(0, tag, _glob(self.keys.readings_override))
        tag = f"{self.keys.prefix}:p*"
        return PartitionKeys(0, tag, f"{{{tag}}}:readings")

    @property
    def of_group(self) -> GroupKeys:
        return self.partition.group(self.group)

    @property
    def namespace(self) -> str:
        return _glob(self.keys.namespace_tag)

    @property
    def layout(self) -> tuple[str, ...]:
        """What every process reads first: the pipeline record, and the old layout's stream it looks for."""
        return (self.keys.pipeline,) if self.keys.readings_override else (self.keys.pipeline, self.keys.legacy_readings)

    @property
    def producer_markers(self) -> tuple[str, ...]:
        return (self.partition.producer_batch("*"), self.partition.producer_seq)

    @property
    def mqtt_partition(self) -> tuple[str, ...]:
        partition = self.partition
        return (partition.producer_batch("*"), partition.mqtt_seq, partition.mqtt_seen("*"), partition.mqtt_counters)

    @property
    def mqtt_pipeline(self) -> tuple[str, ...]:
        return (self.keys.mqtt_dead_letter, self.keys.mqtt_bridges, self.keys.mqtt_bridge("*"))

    @property
    def group_state(self) -> tuple[str, ...]:
        """The group's keys that are not streams: every key the commit script is passed (so a key
        added to the commit is granted with it), less the readings and the outputs."""
        group = self.of_group
        return tuple(key for key in group.commit_keys() if key not in (group.readings, *self.group_outputs))

    @property
    def group_outputs(self) -> tuple[str, ...]:
        group = self.of_group
        return (group.aggregates, group.alerts, group.dead_letter)

    @property
    def notifier_own(self) -> tuple[str, ...]:
        return (NOTIFIER_OWN.format(prefix=self.namespace),)

    @property
    def everything(self) -> tuple[str, ...]:
        """Every key of the pipeline, any group's."""
        found = (f"{{{self.namespace}}}:*", f"{{{self.partition.tag}}}:*")
        return (*found, self.partition.readings) if self.keys.readings_override else found


def roles(keys: Keys, group: str) -> tuple[Role, ...]:
    """The roles of one pipeline and group, in the order the ACL file lists them."""
    at = KeyPatterns(keys, group)
    layout = Grant(at.layout, ("hgetall", "exists"))
    readings = (at.partition.readings,)
    members = (keys.members(group),)
    producer = Role(
        "producer", "simulators and CSV replays (python -m producers): append readings, keep their own batch "
                    "markers and seqs; read back only the readings (to continue seqs after a restart, to warn "
                    "before trimming); never trim, delete or read outputs",
        (*CONNECTION, *TRANSACTIONS, "script|load", "script|exists", "wait"),
        (layout,
         Grant(readings, ("xadd", "xrange", "xrevrange", "xlen", "xinfo|stream", "xinfo|groups", "xinfo|consumers")),
         Grant(at.producer_markers, ("get", "set", "hmget", "hset", "watch")),
         Grant((*readings, *at.producer_markers), ("evalsha", "eval"))))
    bridge = Role(
        "bridge", "the MQTT bridge (python -m producers --from-mqtt): append readings through its script, "
                  "keep its seqs, seen times, counters, dead letters and status; read nothing of the readings",
        (*CONNECTION, "script|load", "script|exists", "wait"),
        (layout,
         Grant(readings, ("xadd",)),
         Grant(at.mqtt_partition, ("get", "set", "hincrby", "zadd", "zremrangebyrank", "zscore")),
         Grant(at.mqtt_pipeline, ("xadd", "sadd", "set")),
         Grant((*readings, *at.mqtt_partition), ("evalsha", "eval"))))
    worker = Role(
        "worker", f"aggregator workers of group {group!r} (python -m consumers aggregate): consume, claim and "
                   "acknowledge readings, keep the group's leases, checkpoints, state and outputs; never append "
                   "to readings, never touch another group's keys",
        (*CONNECTION, *TRANSACTIONS, "script|load", "script|exists", "wait"),
        (layout,
         Grant(readings, CONSUMER),
         Grant(members, ("zadd", "zrem", "zrange", "zrangebyscore", "zremrangebyscore", "zcard", "zscore")),
         Grant(at.group_state, ("get", "mget", "set", "del", "exists", "incr", "pexpire", "pttl", "type", "hget", "hmget",
                                "hgetall", "hset", "hincrby", "hexists", "hlen")),
         Grant(at.group_outputs, ("xadd", "xrange", "xrevrange", "xlen", "xinfo|stream", "type", "exists")),
         # a commit's WATCH and script span all three classes; the script's calls are checked again
         Grant((*readings, *at.group_state, *at.group_outputs), ("evalsha", "eval", "watch"))))
    notifier = Role(
        "notifier", f"alert notifiers of group {group!r}'s alerts (python -m consumers notify): their own consumer "
                    "group on the alerts streams, read the dead letters, keep their own keys under `notify`",
        (*CONNECTION, *TRANSACTIONS, "script|load", "script|exists"),
        (layout,
         Grant((at.of_group.alerts,), CONSUMER),
         Grant((at.of_group.dead_letter,), STREAM_READ),
         Grant(at.notifier_own, ("@read", "@write", "@transaction", "@scripting", "-@dangerous"))))
    reader = Role(
        "reader", "status, alerts, analytics export|report|plot, the web page: read every key of the pipeline, "
                  "write none, run no script, list no keys",
        CONNECTION,
        (Grant(at.everything, (*STREAM_READ, *KEY_READ)),))
    admin = Role(
        "admin", "operators (python -m consumers group create|reset|delete|prune): everything on the pipeline's "
                 "keys, nothing that is @dangerous (FLUSHALL, CONFIG, KEYS, ...), no other keys",
        (*CONNECTION, *TRANSACTIONS, "scan"),
        (Grant(at.everything, ("@all", "-@dangerous")),))
    return producer, bridge, worker, notifier, reader, admin
