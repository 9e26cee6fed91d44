"""What `consumers status` shows of the MQTT bridges (producers/mqtt/): each bridge's own status
(counts, in flight, broker connection), and what the bridges wrote, summed from the partitions.
Read here, in the core, so that status needs nothing of the bridge's package."""

from __future__ import annotations

import json

from telemetry.keys import Keys
from telemetry.partitions import Layout


def written_totals(db, layout: Layout) -> dict[str, int]:
    """Readings the bridges wrote and duplicates they skipped, exact across crashes: counted in
    the same atomic call as the writes."""
    pipeline = db.pipeline(transaction=False)
    for partition in layout.partitions:
        pipeline.hgetall(partition.mqtt_counters)
    totals = {"written": 0, "duplicates": 0}
    for counters in pipeline.execute():
        for name, value in counters.items():
            name = name.decode() if isinstance(name, bytes) else name
            totals[name] = totals.get(name, 0) + int(value)
    return totals


def bridge_statuses(db, keys: Keys) -> list[dict]:
    """The status each bridge last wrote; one that stopped, or whose status expired (killed, or
    away from Redis), shows as not running."""
    client_ids = sorted(value.decode() if isinstance(value, bytes) else value
                        for value in db.smembers(keys.mqtt_bridges))
    statuses = []
    for client_id, raw in zip(client_ids, db.mget([keys.mqtt_bridge(client_id) for client_id in client_ids])
                              if client_ids else []):
        status = {"client_id": client_id, "stopped": True} if raw is None else json.loads(raw)
        statuses.append({**status, "running": not status.get("stopped", False)})
    return statuses
