"""The fleet as the web page shows it, kept in the server's memory by one thread that follows the
readings and alert streams of every partition.

A fleet snapshot of 10,000 sensors must come back in well under a second, every few seconds, for
every open page. Reading each sensor's latest entry from Redis per request would cost a scan of
every partition's tail each time; following the streams once (one blocking XREAD for all of them)
costs Redis what one more reader costs, and a snapshot is then built from memory. The known
sensors come from the group's checkpoints (every sensor a worker ever applied), so a sensor that
went silent before the server started is still a cell, grey.

Alert state is each alert id's latest event: the alert streams are read whole at start (alerts
are rare; their MAXLEN bounds them) and followed after that.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from redis.exceptions import NoPermissionError

from analytics.streams import as_dict, iter_entries
from telemetry.backoff import RETRYABLE, Backoff
from telemetry.connection import Client, undecoded_replies
from telemetry.errors import RedisUnavailable
from telemetry.keys import GroupKeys
from telemetry.merge import merged_pages
from telemetry.partitions import Layout
from telemetry.records import AlertEvent
from telemetry.refusals import refusal_line
from telemetry.schema import FieldMap, Reading, SchemaError
from telemetry.stream_reads import read_streams
from telemetry.timeutil import stream_id_key

TAIL_PER_SENSOR = 3  # entries read back per known sensor at start, to find each one's latest reading
MIN_TAIL = 1_000  # per partition: enough to find a new pipeline's sensors before any checkpoint names them
MAX_TAIL = 50_000  # per partition: a bound on the start-up read however large the partition
READ_COUNT = 5_000  # entries per stream per XREAD
REFRESH_SENSORS_S = 30.0  # how often the known sensors (and the layout) are read again
RECENT_EVENTS = 2_000  # alert events kept for the alerts page, newest last
RATE_WINDOW_S = 10.0


@dataclass(frozen=True, slots=True)
class Latest:
    """A sensor's newest reading time, and the newest value of each metric: a reading without a
    metric (a split-topic device's other topic) keeps the one before, None until one came."""

    ts: int
    temperature_c: float | None
    humidity_pct: float | None


@dataclass(frozen=True, slots=True)
class TrackedAlert:
    """An alert event with the stream entry that carried it (its id orders events across partitions)."""

    entry_id: str
    event: AlertEvent


@dataclass(slots=True)
class FleetState:
    """What the tracker knows; replaced whole by a reload, mutated only under the tracker's lock."""

    layout: Layout
    known: set[str] = field(default_factory=set)
    latest: dict[str, Latest] = field(default_factory=dict)
    firing: dict[str, TrackedAlert] = field(default_factory=dict)  # alert id -> its firing event
    episodes: Counter = field(default_factory=Counter)  # sensor -> alert episodes seen firing
    recent: deque = field(default_factory=lambda: deque(maxlen=RECENT_EVENTS))
    positions: dict[str, str] = field(default_factory=dict)  # stream -> last entry id applied
    last_id: str = "0-0"  # the largest entry id applied, any stream: where a page's live stream starts

    def apply_alert(self, entry_id: str, fields: dict[str, str]) -> TrackedAlert | None:
        try:
            event = AlertEvent.decode(fields)
        except (KeyError, ValueError):
            return None  # not an alert this build reads: the alerts page leaves it out
        tracked = TrackedAlert(entry_id, event)
        if event.state == "firing":
            if event.alert_id not in self.firing:
                self.episodes[event.sensor] += 1
            self.firing[event.alert_id] = tracked
        else:
            self.firing.pop(event.alert_id, None)
        self.recent.append(tracked)
        return tracked

    def apply_reading(self, entry_id: str, fields: dict[str, str], field_map: FieldMap) -> Reading | None:
        try:
            reading = Reading.decode(fields, entry_id, field_map)
        except SchemaError:
            return None  # the workers dead-letter it; the page shows the dead-letter count
        self.known.add(reading.sensor)
        current = self.latest.get(reading.sensor)
        if current is None:
            self.latest[reading.sensor] = Latest(reading.ts_ms, reading.temperature_c, reading.humidity_pct)
        elif reading.ts_ms >= current.ts:
            self.latest[reading.sensor] = Latest(
                reading.ts_ms, current.temperature_c if reading.temperature_c is None else reading.temperature_c,
                current.humidity_pct if reading.humidity_pct is None else reading.humidity_pct)
        return reading


def known_sensors(db: Client, groups: list[GroupKeys]) -> set[str]:
    """Every sensor a worker of the group has applied a reading of: the checkpoints' sensor fields
    (bucket fields are `sensor#slot`)."""
    names: set[str] = set()
    for reply in undecoded_replies(db, [("HKEYS", keys.state) for keys in groups]):
        names.update(name.decode() for name in reply or () if b"#" not in name)
    return names


class FleetTracker:
    """Follows the streams in a thread of its own; `state` is read under `lock`.

    `open_pipeline` connects and reads the layout (raising RedisUnavailable or a retryable redis
    error while Redis is away): the tracker calls it again after every outage, so a pipeline
    created after the server started, or a Redis restarted empty, is picked up.
    """

    def __init__(self, open_pipeline: Callable[[], tuple[Client, Layout]], group: str, field_map: FieldMap) -> None:
        self.open_pipeline = open_pipeline
        self.group = group
        self.field_map = field_map
        self.lock = threading.Lock()
        self.state: FleetState | None = None
        self.error: str | None = None  # why Redis cannot be read now
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._arrivals: deque[tuple[float, int]] = deque()  # (monotonic s, readings applied)
        self._thread = threading.Thread(target=self._run, name="fleet-tracker", daemon=True)

    def start(self) -> FleetTracker:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def readings_per_s(self) -> float:
        cutoff = time.monotonic() - RATE_WINDOW_S
        with self.lock:
            while self._arrivals and self._arrivals[0][0] < cutoff:
                self._arrivals.popleft()
            total = sum(count for _, count in self._arrivals)
        return total / RATE_WINDOW_S

    def _run(self) -> None:
        backoff = Backoff(max_s=5.0)
        while not self._stop.is_set():
            try:
                db, layout = self.open_pipeline()
                self._load(db, layout)
                backoff.reset()
                self._follow(db, layout)
            except (RedisUnavailable, *RETRYABLE, NoPermissionError) as error:  # the last: until the ACL is fixed
                self.error = refusal_line(error) if isinstance(error, NoPermissionError) else f"Redis unreachable: {error}"
                self._stop.wait(backoff.next_delay() or 0.2)

    def _load(self, db: Client, layout: Layout) -> None:
        groups = layout.groups(self.group)
        state = FleetState(layout, known=known_sensors(db, groups))
        per_partition = Counter(layout.partition_for(name).index for name in state.known)
        pipeline = db.pipeline(transaction=False)
        for partition in layout.partitions:
            pipeline.xrevrange(partition.readings, count=min(MAX_TAIL, max(MIN_TAIL, TAIL_PER_SENSOR
                                                                         * per_partition[partition.index])))
        for partition, entries in zip(layout.partitions, pipeline.execute()):
            state.positions[partition.readings] = entries[0][0] if entries else "0-0"
            for entry_id, fields in reversed(entries):
                state.apply_reading(entry_id, fields, self.field_map)
        alert_keys = [keys.alerts for keys in groups]
        state.positions.update(dict.fromkeys(alert_keys, "0-0"))
        for page in merged_pages([iter_entries(db, key) for key in alert_keys], 1):
            for entry_id, fields in page:
                state.apply_alert(entry_id, as_dict(fields))
        for key in alert_keys:
            last = db.xrevrange(key, count=1)
            state.positions[key] = last[0][0] if last else "0-0"
        state.last_id = max(state.positions.values(), key=stream_id_key, default="0-0")
        with self.lock:
            self.state = state
        self.error = None
        self.ready.set()

    def _follow(self, db: Client, layout: Layout) -> None:
        readings = {partition.readings for partition in layout.partitions}
        next_refresh = time.monotonic() + REFRESH_SENSORS_S
        while not self._stop.is_set():
            if time.monotonic() >= next_refresh:
                if self._layout_changed(db, layout):
                    return  # reloaded by the caller's next turn
                names = known_sensors(db, layout.groups(self.group))
                with self.lock:
                    self.state.known |= names
                next_refresh = time.monotonic() + REFRESH_SENSORS_S
            with self.lock:
                positions = dict(self.state.positions)
            replies = read_streams(db, positions, count=READ_COUNT, block_ms=1000)
            applied = 0
            with self.lock:
                state = self.state
                for stream, entries in replies:
                    is_readings = stream in readings
                    for entry_id, fields in entries:
                        if is_readings:
                            applied += state.apply_reading(entry_id, fields, self.field_map) is not None
                        else:
                            state.apply_alert(entry_id, fields)
                    if entries:
                        state.positions[stream] = entries[-1][0]
                        state.last_id = max(entries[-1][0], state.last_id, key=stream_id_key)
                if applied:
                    self._arrivals.append((time.monotonic(), applied))

    def _layout_changed(self, db: Client, layout: Layout) -> bool:
        _, current = self.open_pipeline()
        return current.partitions != layout.partitions

