"""Follows the alerts stream, like `tail -f`, for people (one line each) or scripts (--json)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import redis

from telemetry.timeutil import iso_utc


def format_alert(entry_id: str, fields: dict[str, str]) -> str:
    when = iso_utc(int(fields.get("ts", "0") or 0))
    marker = "FIRING  " if fields.get("state") == "firing" else "resolved"
    return (f"{when} {marker} {fields.get('severity', ''):<8} {fields.get('rule', '')} "
            f"sensor={fields.get('sensor', '')} value={fields.get('value', '')} "
            f"threshold={fields.get('threshold', '')} id={fields.get('alert_id', '')}")


def follow(db: redis.Redis, stream: str, start_id: str, stop_requested: Callable[[], bool],
           block_ms: int = 1000, follow_new: bool = True) -> Iterator[tuple[str, dict[str, str]]]:
    last_id = start_id
    while not stop_requested():
        reply = db.xread({stream: last_id}, count=500, block=block_ms if follow_new else None)
        if not reply:
            if not follow_new:
                return
            continue
        for entry_id, fields in reply[0][1]:
            last_id = entry_id
            yield entry_id, fields


def render(entry_id: str, fields: dict[str, str], as_json: bool) -> str:
    return json.dumps({"id": entry_id, **fields}) if as_json else format_alert(entry_id, fields)
