"""The aggregator's settings: defaults, then flags; validated once with messages naming the field."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from consumers.alerting import RuleSet
from consumers.processor import ProcessingSettings
from consumers.rolling import RollingSpec
from consumers.rules import AlertRule
from telemetry.errors import UsageError
from telemetry.keys import validate_name


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def flag_of(field_name: str) -> str:
    """The command-line flag that sets a field, so that an error names what the user typed."""
    return "--" + field_name.removesuffix("_ms").replace("_", "-")


DEFAULT_ROLLING_MS = 300_000


@dataclass(frozen=True, slots=True)
class AggregatorSettings:
    group: str = "aggregators"
    consumer: str = ""
    start: str = "new"  # where a new group starts: new ($) or all (0)
    batch: int = 1000  # entries per partition per read
    block_ms: int = 100  # longest wait for new entries when every owned partition is caught up
    linger_ms: int = 0  # once new entries arrive, wait this long for the rest of a write that lands in pieces
    window_ms: int = 60_000
    grace_ms: int = 10_000
    allowed_lateness_ms: int = 3_600_000  # behind the sensor's newest reading; its windows stay in Redis that long
    rolling_ms: int = DEFAULT_ROLLING_MS
    idle_ms: int = 60_000  # a silent sensor's window closes this long after end + grace
    max_skew_ms: int = 300_000
    lease_ms: int = 10_000  # a dead worker's partitions move after at most this long
    settle_ms: int = 2_000  # membership must stay unchanged this long before partitions move
    partitions: int | None = None  # --partitions: None takes the pipeline's (or the default, new)
    max_deliveries: int = 5
    output_maxlen: int = 1_000_000
    rules: tuple[AlertRule, ...] = ()
    count: int | None = None  # stop after this many entries
    duration_ms: int | None = None
    drain: bool = False  # stop once nothing is left to read
    wait_replicas: int = 0  # --wait-replicas: WAIT after each commit until this many replicas have it

    def __post_init__(self) -> None:
        if not self.consumer:
            object.__setattr__(self, "consumer", default_consumer_name())
        if self.start not in ("new", "all"):
            raise UsageError(f"--start {self.start!r}: expected new or all")
        for name in ("batch", "window_ms", "rolling_ms", "max_deliveries", "block_ms", "lease_ms", "output_maxlen"):
            if getattr(self, name) <= 0:
                raise UsageError(f"{flag_of(name)}: must be positive, got {getattr(self, name)}")
        for name in ("grace_ms", "allowed_lateness_ms", "idle_ms", "max_skew_ms", "settle_ms", "linger_ms"):
            if getattr(self, name) < 0:
                raise UsageError(f"{flag_of(name)}: must not be negative, got {getattr(self, name)}")
        if self.batch > 10_000:
            raise UsageError(f"--batch {self.batch}: at most 10000")
        if self.lease_ms < 1000:
            raise UsageError(f"--lease {self.lease_ms}ms: at least 1s (a lease is renewed every third of it)")
        validate_name("--group", self.group)
        validate_name("--consumer", self.consumer)

    def processing(self) -> ProcessingSettings:
        return ProcessingSettings(self.window_ms, self.grace_ms, self.idle_ms, RollingSpec(self.rolling_ms),
                                  RuleSet.of(self.rules), self.allowed_lateness_ms)
