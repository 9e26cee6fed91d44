"""Shared helpers for aggregator tests: write readings, run workers, read outputs back."""

from __future__ import annotations

import io
from dataclasses import replace

import pandas as pd

from consumers.rules import parse_rules
from consumers.settings import AggregatorSettings
from consumers.worker import AggregatorWorker
from telemetry.schema import FieldMap, Reading

START = 1_700_000_000_000
NO_RULES = AggregatorSettings(consumer="test", start="all", rules=(), block_ms=50, claim_every_ms=10**12,
                              sweep_every_ms=10**12)


def add_readings(db, keys, readings: list[Reading]) -> list[str]:
    pipe = db.pipeline(transaction=False)
    for reading in readings:
        pipe.xadd(keys.readings, reading.encode())
    return pipe.execute()


def make_worker(db, keys, **overrides) -> AggregatorWorker:
    worker = AggregatorWorker(db, keys, FieldMap(), replace(NO_RULES, **overrides), log=io.StringIO())
    worker.ensure_group()
    return worker


def drain(worker: AggregatorWorker, now: int, steps: int = 10_000) -> None:
    """Step until a read finds nothing new; `now` is the injected wall clock."""
    for _ in range(steps):
        if worker.step(now, block=False) == 0 and worker.own_pending_done and worker.idle_reads:
            return
    raise AssertionError("worker did not drain")


def stream_frame(db, key: str) -> pd.DataFrame:
    rows = [{"id": entry_id, **fields} for entry_id, fields in db.xrange(key)]
    return pd.DataFrame(rows)


def rules(text: str):
    return parse_rules(text, "test rules")
