"""Key names. Every key carries the same hash tag, `{prefix}`, so that the worker's commit script,
which touches the readings stream, state, outputs and per-sensor keys at once, stays in one slot
when the project moves to Redis Cluster."""

from __future__ import annotations

import re
from dataclasses import dataclass

from telemetry.errors import UsageError

_PREFIX = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "telemetry"
    readings_override: str | None = None

    def __post_init__(self) -> None:
        if not _PREFIX.fullmatch(self.prefix):
            raise UsageError(f"prefix: {self.prefix!r} must be 1-64 characters from [A-Za-z0-9._-]")

    def _key(self, name: str) -> str:
        return f"{{{self.prefix}}}:{name}"

    @property
    def readings(self) -> str:
        """The readings stream; --stream names another key verbatim (e.g. the seed's app:event)."""
        return self.readings_override or self._key("readings")

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
    def sensor_state(self) -> str:
        """Hash: sensor -> packed worker state (open windows, watermark, alert states)."""
        return self._key("sensor-state")

    @property
    def sensor_due(self) -> str:
        """Sorted set: sensor -> wall-clock ms of its next sweep deadline (idle close, silence)."""
        return self._key("sensor-due")

    @property
    def handovers(self) -> str:
        """Counter bumped whenever pending entries may change hands: claimed, or re-read by their owner.

        A batch read while it stood still cannot have been committed by anyone else, so its
        commit acknowledges it in bulk instead of entry by entry (telemetry/lua/aggregate.lua).
        """
        return self._key("handovers")

    @property
    def producer_seq(self) -> str:
        """Hash: sensor -> last seq a producer wrote, updated in the same MULTI as the XADDs."""
        return self._key("producer-seq")

    @property
    def counters(self) -> str:
        """Hash of pipeline-wide counters (processed, late, dead_lettered, lost_to_trim, ...)."""
        return self._key("counters")

    def recent(self, sensor: str) -> str:
        """Sorted set of a sensor's readings in the rolling horizon, scored by event time."""
        return self._key(f"recent:{sensor}")

    def rolling(self, sensor: str) -> str:
        """Hash of a sensor's live rolling stats, for dashboards (HGETALL)."""
        return self._key(f"rolling:{sensor}")
