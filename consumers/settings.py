"""The aggregator's settings: defaults, then flags; validated once with messages naming the field."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass

from consumers.rules import AlertRule
from telemetry.errors import UsageError

# Entries one commit may gather from several reads when behind: the commit script's per-sensor
# work is shared by more readings, while one commit still holds Redis for only tens of ms.
DEFAULT_MAX_COMMIT = 8000


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def flag_of(field_name: str) -> str:
    """The command-line flag that sets a field, so that an error names what the user typed."""
    return "--" + field_name.removesuffix("_ms").replace("_", "-")


@dataclass(frozen=True, slots=True)
class AggregatorSettings:
    group: str = "aggregators"
    consumer: str = ""
    start: str = "new"  # where a new group starts: new ($) or all (0)
    batch: int = 1000
    max_commit: int = DEFAULT_MAX_COMMIT
    block_ms: int = 1000
    window_ms: int = 60_000
    grace_ms: int = 10_000
    rolling_ms: int = 300_000
    idle_ms: int = 60_000  # a silent sensor's window closes this long after end + grace
    max_skew_ms: int = 300_000
    claim_idle_ms: int = 30_000
    claim_every_ms: int = 5_000
    max_deliveries: int = 5
    sweep_every_ms: int = 1_000
    output_maxlen: int = 1_000_000
    rules: tuple[AlertRule, ...] = ()
    count: int | None = None  # stop after this many entries
    duration_ms: int | None = None
    drain: bool = False  # stop once nothing is left to read

    def __post_init__(self) -> None:
        if not self.consumer:
            object.__setattr__(self, "consumer", default_consumer_name())
        if self.start not in ("new", "all"):
            raise UsageError(f"--start {self.start!r}: expected new or all")
        for name in ("batch", "max_commit", "window_ms", "rolling_ms", "max_deliveries", "block_ms"):
            if getattr(self, name) <= 0:
                raise UsageError(f"{flag_of(name)}: must be positive, got {getattr(self, name)}")
        for name in ("grace_ms", "idle_ms", "max_skew_ms", "claim_idle_ms"):
            if getattr(self, name) < 0:
                raise UsageError(f"{flag_of(name)}: must not be negative, got {getattr(self, name)}")
        if self.batch > 10_000:
            raise UsageError(f"--batch {self.batch}: at most 10000")
        if self.max_commit > 50_000:
            raise UsageError(f"--max-commit {self.max_commit}: at most 50000")
        for label in (self.group, self.consumer):
            if not label or any(ch.isspace() for ch in label):
                raise UsageError(f"group/consumer name {label!r}: must be non-empty without spaces")

    @property
    def rolling_bucket_ms(self) -> int:
        """Rolling stats are kept per bucket this wide: the window's edge moving reads one bucket's readings, not all that left."""
        return max(1, self.rolling_ms // 10)

    def lua_config(self) -> str:
        """What the aggregate script needs, as the JSON it decodes once per call."""
        return json.dumps({
            "window_ms": self.window_ms, "grace_ms": self.grace_ms, "rolling_ms": self.rolling_ms,
            "bucket_ms": self.rolling_bucket_ms,
            "idle_ms": self.idle_ms, "output_maxlen": self.output_maxlen,
            "rules": [rule.to_lua() for rule in self.rules],
        })
