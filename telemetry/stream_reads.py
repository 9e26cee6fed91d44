"""XREAD across several partition streams, on a single server or a cluster.

On one server this is one XREAD, blocking until any stream has news. On a cluster one command
may not span hash slots, and each partition has a slot of its own: the streams are read without
blocking, one XREAD each in a pipeline that goes node by node, and polled until `block_ms` passes;
a "$" position (only new entries) becomes the stream's last id first, as a non-blocking XREAD
from "$" never returns anything.
"""

from __future__ import annotations

import time

from telemetry.connection import Client, is_cluster

CLUSTER_POLL_S = 0.02


def read_streams(db: Client, positions: dict, *, count: int, block_ms: int | None = None) -> list[tuple]:
    """(stream, entries) for each stream with entries after its position; [] when none came."""
    if not is_cluster(db):
        reply = db.xread(positions, count=count, block=block_ms)
        return list(reply.items() if isinstance(reply, dict) else reply or [])  # RESP3 sends a map
    latest = [stream for stream, position in positions.items() if position == "$"]
    positions = {**positions, **last_ids(db, latest)} if latest else positions
    deadline = time.monotonic() + (block_ms or 0) / 1000
    while True:
        pipeline = db.pipeline(transaction=False)
        for stream, position in positions.items():
            pipeline.xread({stream: position}, count=count)
        found = [item for reply in pipeline.execute()
                 for item in (reply.items() if isinstance(reply, dict) else reply or [])]
        left = deadline - time.monotonic()
        if found or left <= 0:
            return found
        time.sleep(min(CLUSTER_POLL_S, left))


def last_ids(db: Client, streams: list[str]) -> dict[str, str]:
    """Each stream's last entry id now ("0-0" when empty): reading after it gives only new entries."""
    pipeline = db.pipeline(transaction=False)
    for stream in streams:
        pipeline.xrevrange(stream, count=1)
    return {stream: last[0][0] if last else "0-0" for stream, last in zip(streams, pipeline.execute())}
