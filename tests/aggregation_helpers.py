"""Shared helpers for aggregator tests: write readings, run workers in-process, read outputs back."""

from __future__ import annotations

import io
from dataclasses import replace

import pandas as pd

from consumers.rules import parse_rules
from consumers.settings import AggregatorSettings
from consumers.worker import AggregatorWorker
from telemetry.keys import Keys
from telemetry.partitions import Layout, open_layout
from telemetry.schema import FieldMap, Reading
from telemetry.timeutil import stream_id_key

START = 1_700_000_000_000
NO_RULES = AggregatorSettings(consumer="test", start="all", rules=(), block_ms=10, settle_ms=0)


def layout_of(db, partitions: int = 4, keys: Keys | None = None) -> Layout:
    return open_layout(db, keys or Keys(), partitions)


def add_readings(db, layout: Layout, readings: list[Reading], field_map: FieldMap | None = None) -> list[str]:
    """XADD each reading to its sensor's partition, in the order given."""
    field_map = field_map or FieldMap()
    pipe = db.pipeline(transaction=False)
    for reading in readings:
        pipe.xadd(layout.partition_for(reading.sensor).readings, reading.encode(field_map))
    return pipe.execute()


def make_worker(db, layout: Layout, **overrides) -> AggregatorWorker:
    return AggregatorWorker(db, layout, overrides.pop("field_map", FieldMap()), replace(NO_RULES, **overrides),
                            log=io.StringIO())


def drain(worker: AggregatorWorker, now: int, steps: int = 10_000) -> None:
    """Step until nothing is read, then hand the partitions back, as a stopping worker does;
    `now` is the injected wall clock. The worker's leases are renewed meanwhile, as `run` does:
    without it a drain longer than a lease lost every partition at a commit, read nothing more
    and passed for drained, so a reference worker silently covered only part of the readings
    (the 60-minute soak of issue 23). A drain that leaves anything unread or pending fails."""
    worker.clock = lambda: now
    worker.renewer.start()
    try:
        worker.step(now)  # takes the partitions
        for _ in range(steps):
            if worker.step(now) == 0:
                break
        else:
            raise AssertionError("worker did not drain")
    finally:
        worker.renewer.stop()
    assert worker.drained(), f"worker {worker.settings.consumer} stopped reading before the end: {worker.log.getvalue()}"
    worker.release_all()


def watch_idle(worker: AggregatorWorker, start_ms: int, seconds: int) -> None:
    """Keep reading an idle pipeline for `seconds` of injected wall-clock time, a read a second:
    the partition clock follows it, and windows of silent sensors close."""
    for second in range(seconds + 1):
        worker.step(start_ms + second * 1000)


def outputs(db, layout: Layout, kind: str, group: str = "aggregators") -> pd.DataFrame:
    """Every partition's output stream of `kind`, merged in entry-id order."""
    rows = [{"id": entry_id, **fields} for keys in layout.groups(group)
            for entry_id, fields in db.xrange(keys.output(kind))]
    rows.sort(key=lambda row: stream_id_key(row["id"]))
    return pd.DataFrame(rows)


def latest_windows(aggregates: pd.DataFrame) -> pd.DataFrame:
    """Each window's latest revision, after checking that its revisions were emitted once each,
    in order, from 0 (entries from before revisions count as revision 0)."""
    if aggregates.empty:
        return aggregates
    revision = (aggregates["revision"] if "revision" in aggregates else pd.Series(0, index=aggregates.index))
    revision = revision.fillna(0).astype(int)
    order = revision.groupby([aggregates["sensor"], aggregates["window_start"]]).cumcount()
    assert (revision == order).all(), (
        f"a revision emitted twice, skipped or out of order: {aggregates[revision != order].head(5).to_dict('records')}")
    return aggregates.drop_duplicates(["sensor", "window_start"], keep="last")


def counters(db, layout: Layout, group: str = "aggregators") -> dict[str, int]:
    total: dict[str, int] = {}
    for keys in layout.groups(group):
        for name, value in db.hgetall(keys.counters).items():
            total[name] = total.get(name, 0) + int(value)
    return total


def pending(db, layout: Layout, group: str = "aggregators") -> int:
    return sum(db.xpending(partition.readings, group)["pending"] for partition in layout.partitions)


def rules(text: str):
    return parse_rules(text, "test rules")
