"""One sensor's state in its partition's owner: open windows, rolling buckets, watermark, seq and
alert episodes, and how it is checkpointed.

The checkpoint is one hash per partition (and group). A sensor's core state (windows, watermark,
seq, alert episodes and the newest rolling bucket, the one readings go to) is one field of 200-300
bytes of msgpack; each older rolling bucket is a field of its own, `sensor#slot`, in a ring of
slots, written when it stops being the newest (or a late reading changes it). So a commit
writes one field per sensor it touched, not the whole rolling window. Bounded: at most a
window's worth of buckets, and the windows still inside the grace period.

Windows already emitted live in a hash of their own (GroupKeys.windows), one field per sensor and
slot of a ring that spans the allowed lateness, so a late reading can revise its window; a
takeover never reads them, a late reading reads the one it needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgpack

from consumers.summary import Summary
from consumers.windows import NONE, Window

STATE_VERSION = 1
_packer = msgpack.Packer()  # reused: packb builds a Packer per call


@dataclass(slots=True)
class AlertEpisode:
    """A rule's episode under way on one sensor: 'pending' (breached, waiting out `for`) or 'firing'."""

    state: str
    since_ms: int

    def alert_id(self, rule: str, sensor: str) -> str:
        """Stable across workers, restarts and batching: it derives from the readings only."""
        return f"{rule}:{sensor}:{self.since_ms}"


@dataclass(slots=True)
class SensorState:
    max_ts: int = NONE  # the sensor's watermark: newest event time applied
    closed_through: int = NONE  # end of the newest window emitted
    max_seq: int = NONE
    missing_seq: int = 0  # seq numbers skipped so far: readings lost before this group applied them
    windows: dict[int, Window] = field(default_factory=dict)
    alerts: dict[str, AlertEpisode] = field(default_factory=dict)
    rule_memory: dict[str, list] = field(default_factory=dict)  # rule -> past readings it measures from
    set_aside: list[int] = field(default_factory=list)  # dead-lettered seqs above max_seq, sorted
    # seqs skipped and still awaited, sorted: [first, last, 1 if counted as missing else 0]
    gaps: list[list[int]] = field(default_factory=list)
    buckets: dict[int, Summary] = field(default_factory=dict)  # rolling: bucket start -> summary
    late: int = 0  # readings applied to a window already emitted
    too_late: int = 0  # readings past the allowed lateness, dead-lettered
    revisions: int = 0  # windows emitted again
    # The partition clock when a reading far behind it last arrived (NONE: none did): a source
    # catching up on its buffer is heard from, though its readings are old (`last_heard`).
    heard_ms: int = NONE
    # Not checkpointed: the merge of every rolling bucket but the newest, and the (newest bucket,
    # bucket count) it was made for (consumers/rolling.py).
    older_buckets: tuple[tuple[int, int], Summary] | None = None
    rolling_now: Summary | None = None  # the rolling stats as of the newest reading, once computed

    @property
    def last_heard(self) -> int:
        """When the sensor was last heard from, on the partition clock: silence and idle are judged
        from here."""
        return max(self.max_ts, self.heard_ms)

    def pack_core(self) -> bytes:
        newest = max(self.buckets) if self.buckets else None
        return _packer.pack([STATE_VERSION, self.max_ts, self.closed_through, self.max_seq, self.missing_seq,
                             [window.pack() for window in self.windows.values()],
                             [[rule, episode.state, episode.since_ms] for rule, episode in self.alerts.items()],
                             None if newest is None else [newest, *self.buckets[newest].values()],
                             self.rule_memory, self.set_aside, [self.late, self.too_late, self.revisions],
                             self.gaps, self.heard_ms])

    @classmethod
    def unpack_core(cls, packed: bytes) -> SensorState:
        (version, max_ts, closed_through, max_seq, missing_seq, windows, alerts, newest,
         rule_memory, *later) = msgpack.unpackb(packed)  # later: fields added since version 1
        if version != STATE_VERSION:
            raise ValueError(f"sensor state version {version}, this build reads {STATE_VERSION}")
        late, too_late, revisions = later[1] if len(later) > 1 else (0, 0, 0)
        return cls(max_ts, closed_through, max_seq, missing_seq,
                   windows={values[0]: Window.unpack(values) for values in windows},
                   alerts={rule: AlertEpisode(state, since) for rule, state, since in alerts},
                   rule_memory=rule_memory, set_aside=later[0] if later else [],
                   buckets={} if newest is None else {newest[0]: Summary(*newest[1:])},
                   late=late, too_late=too_late, revisions=revisions, gaps=later[2] if len(later) > 2 else [],
                   heard_ms=later[3] if len(later) > 3 else NONE)


def pack_bucket(start_ms: int, summary: Summary) -> bytes:
    return _packer.pack([start_ms, *summary.values()])


def unpack_bucket(packed: bytes) -> tuple[int, Summary]:
    values = msgpack.unpackb(packed)
    return values[0], Summary(*values[1:])


def bucket_field(sensor: str, slot: int) -> str:
    return f"{sensor}#{slot}"


def pack_window(window: Window) -> bytes:
    return _packer.pack(window.pack())


def unpack_window(packed: bytes) -> Window:
    return Window.unpack(msgpack.unpackb(packed))
