"""Server-Sent Events: one stream per page, each event a batch of stream entries whose `id:` is the
largest entry id in it, so a reconnecting browser (which sends it back as Last-Event-ID) resumes
where it left off.

A page follows several streams (P partitions, and readings beside alerts) with one XREAD. Two
rules make one id enough to resume from:
- a batch never holds an entry past an entry it leaves out: when a stream returns a full COUNT,
  the batch is cut at the smallest last id of such streams, and the rest is read again;
- entries in different streams may share a millisecond and are not ordered within it (each
  stream numbers its own), so a resume starts at the millisecond of the id it was given,
  inclusive. Entries of that millisecond may come twice; the page applies every event
  idempotently (a latest value, a window by its start and revision, an alert by id and state).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass

import anyio
from sse_starlette.event import ServerSentEvent

from telemetry.backoff import RETRYABLE
from telemetry.connection import Client
from telemetry.stream_reads import last_ids, read_streams
from telemetry.timeutil import stream_id_key

MAX_SEQ = 18446744073709551615
BLOCK_MS = 1000
READ_COUNT = 2000
STATUS_EVERY_S = 5.0
KEEPALIVE_S = 15
RETRY_MS = 2000  # the browser's wait before it reconnects

Entry = tuple[str, str, dict[str, str]]  # (stream, entry id, fields)


def resume_position(last_event_id: str) -> str:
    """The position to XREAD after, so that every entry of the given id's millisecond comes again."""
    ms, _ = stream_id_key(last_event_id)
    return f"{ms - 1}-{MAX_SEQ}" if ms > 0 else "0-0"


def valid_id(text: str) -> bool:
    ms, dash, seq = text.partition("-")
    return ms.isdigit() and (not dash or seq.isdigit()) and len(text) <= 41


def cut_batch(replies: list[tuple[str, list]], count: int) -> tuple[list[Entry], dict[str, str]]:
    """The entries safe to send (none past an entry left unread) and each stream's new position."""
    full = [entries[-1][0] for _, entries in replies if len(entries) >= count]
    bound = min(full, key=stream_id_key) if full else None
    batch: list[Entry] = []
    positions: dict[str, str] = {}
    for stream, entries in replies:
        kept = [entry for entry in entries
                if bound is None or stream_id_key(entry[0]) <= stream_id_key(bound)]
        batch += [(stream, entry_id, fields) for entry_id, fields in kept]
        if kept:
            positions[stream] = kept[-1][0]
    batch.sort(key=lambda entry: stream_id_key(entry[1]))
    return batch, positions


@dataclass(frozen=True, slots=True)
class LiveSource:
    """What one page follows: its streams, how a batch becomes the event's data (None: nothing
    for this page in it), and an optional periodic status event (counters, rolling stats)."""

    streams: list[str]
    encode: Callable[[list[Entry]], dict | None]
    status: Callable[[], dict] | None = None
    # A resume further behind the streams' newest entry than this replays too much to be worth it:
    # the page is told to reload (a fresh snapshot) instead.
    max_replay_ms: int = 3_600_000


async def events(db: Client, source: LiveSource, start_after: str | None,
                 is_disconnected: Callable[[], object]) -> AsyncIterator[ServerSentEvent]:
    """`start_after`: a Last-Event-ID (or a snapshot's last_id) to resume from; None: from now.
    Redis going away ends the stream: the browser reconnects with its last id, and while Redis
    stays away the page is told so (503) and tries again."""
    try:
        async for event in _events(db, source, start_after, is_disconnected):
            yield event
    except RETRYABLE:
        return


async def _events(db: Client, source: LiveSource, start_after: str | None,
                  is_disconnected: Callable[[], object]) -> AsyncIterator[ServerSentEvent]:
    newest = await anyio.to_thread.run_sync(last_ids, db, source.streams)
    yield ServerSentEvent(comment="connected", retry=RETRY_MS)
    if start_after is None:
        positions = newest
    elif max(stream_id_key(i)[0] for i in newest.values()) - stream_id_key(start_after)[0] > source.max_replay_ms:
        yield ServerSentEvent("{}", event="reset")
        positions = newest
    else:
        positions = dict.fromkeys(source.streams, resume_position(start_after))
    next_status = next_progress = anyio.current_time()
    while not await is_disconnected():
        if source.status is not None and anyio.current_time() >= next_status:
            status = await anyio.to_thread.run_sync(source.status)
            yield ServerSentEvent(json.dumps(status), event="status")
            next_status = anyio.current_time() + STATUS_EVERY_S
        replies = await anyio.to_thread.run_sync(_read, db, positions)
        batch, moved = cut_batch(replies, READ_COUNT)
        positions.update(moved)
        if not batch:
            continue
        data = source.encode(batch)
        if data is not None:
            yield ServerSentEvent(json.dumps(data), event="update", id=batch[-1][1])
        elif anyio.current_time() >= next_progress:
            # nothing for this page, but the position moved: a reconnect need not read it again
            yield ServerSentEvent("{}", event="progress", id=batch[-1][1])
            next_progress = anyio.current_time() + STATUS_EVERY_S


def _read(db: Client, positions: dict[str, str]) -> list[tuple[str, list]]:
    return read_streams(db, positions, count=READ_COUNT, block_ms=BLOCK_MS)


def by_stream(batch: Iterable[Entry], streams: set[str]) -> list[Entry]:
    return [entry for entry in batch if entry[0] in streams]
