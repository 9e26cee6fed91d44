"""Follows the alerts of every partition, like `tail -f`, for people (one line each) or scripts (--json).

One XREAD covers all P alert streams (they live on one server), with the last id seen in each;
what one read returns is printed in stream-id order, so alerts of different partitions interleave
as Redis accepted them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import redis

from telemetry.merge import merge_runs
from telemetry.stream_reads import last_ids, read_streams
from telemetry.timeutil import iso_utc

_MARKERS = {"firing": "FIRING  ", "resolved": "resolved", "flapping": "FLAPPING", "flapping_stopped": "flap end"}


def format_alert(entry_id: str, fields: dict[str, str]) -> str:
    when = iso_utc(int(fields.get("ts", "0") or 0))
    marker = _MARKERS.get(fields.get("state", ""), fields.get("state", ""))
    return (f"{when} {marker} {fields.get('severity', ''):<8} {fields.get('rule', '')} "
            f"sensor={fields.get('sensor', '')} value={fields.get('value', '')}{fields.get('unit', '')} "
            f"threshold={fields.get('threshold', '')}{fields.get('unit', '')} id={fields.get('alert_id', '')}")


def start_ids(db: redis.Redis, streams: list[str], from_start: bool) -> dict[str, str]:
    """Where to start in each stream: its beginning, or its current last entry. A literal "$" would
    skip whatever arrives between two reads."""
    return dict.fromkeys(streams, "0-0") if from_start else last_ids(db, streams)


def follow(db: redis.Redis, last_ids: dict[str, str], stop_requested: Callable[[], bool],
           block_ms: int = 1000, follow_new: bool = True) -> Iterator[tuple[str, dict[str, str]]]:
    """Entries after `last_ids` (stream -> id), until stopped; without follow_new, until none are left."""
    last_ids = dict(last_ids)
    while not stop_requested():
        streams = read_streams(db, last_ids, count=500, block_ms=block_ms if follow_new else None)
        if not streams:
            if not follow_new:
                return
            continue
        for stream, entries in streams:
            last_ids[stream] = entries[-1][0]
        yield from merge_runs(entries for _, entries in streams)


def render(entry_id: str, fields: dict[str, str], as_json: bool) -> str:
    return json.dumps({"id": entry_id, **fields}) if as_json else format_alert(entry_id, fields)
