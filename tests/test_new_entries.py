"""Raw replies of the worker's reads, parsed off the main thread."""

from __future__ import annotations

import pytest
import redis
from redis.exceptions import ResponseError

from consumers.new_entries import NewEntryReads, RawReplies

ECHO = b"$4\r\nabcd\r\n"
ENTRY = b"*2\r\n$3\r\n1-0\r\n*2\r\n$6\r\nsensor\r\n$1\r\na\r\n"


def test_replies_parse_into_entries_and_the_handover_epoch():
    data = b"$1\r\n7\r\n" + b"*1\r\n*2\r\n$1\r\nr\r\n*1\r\n" + ENTRY + b"*-1\r\n" + ECHO
    parsed = RawReplies(data, reads=2).parse()
    assert parsed.handover_epoch == 7 and parsed.entries == [("1-0", [b"sensor", b"a"])]


def test_empty_reads_are_told_apart_without_a_counter_set():
    empty = RawReplies(b"$-1\r\n*-1\r\n*-1\r\n" + ECHO, reads=2)
    assert not empty.found_entries and empty.parse().handover_epoch == 0


def test_an_error_reply_raises():
    with pytest.raises(ResponseError, match="NOGROUP"):
        RawReplies(b"$-1\r\n-NOGROUP no such group\r\n" + ECHO, reads=1).parse()


def test_a_dropped_connection_raises_redis_error_then_reconnects(db, keys):
    """The worker rides out redis-py's connection errors with backoff, so raw socket errors must become those."""
    db.xgroup_create(keys.readings, "g", id="0", mkstream=True)
    db.xadd(keys.readings, {"sensor": "a"})
    reads = NewEntryReads(db.connection_pool, group="g", consumer="c", stream=keys.readings,
                          handovers=keys.handovers, batch=10, max_commit=10, block_ms=10)
    assert reads.fetch(block=False).parse().entries[0][1] == [b"sensor", b"a"]
    db.client_kill_filter(_type="normal", skipme=True)
    with pytest.raises(redis.ConnectionError):
        reads.fetch(block=False)
    assert reads.fetch(block=False).parse().entries == []  # reconnected; nothing new
    reads.close()
