"""Raw replies of the worker's reads, parsed off the main thread."""

from __future__ import annotations

import pytest
from redis.exceptions import ResponseError

from consumers.new_entries import RawReplies

ECHO = b"$4\r\nabcd\r\n"
ENTRY = b"*2\r\n$3\r\n1-0\r\n*2\r\n$6\r\nsensor\r\n$1\r\na\r\n"


def test_replies_parse_into_entries_and_the_handover_epoch():
    data = b"$1\r\n7\r\n" + b"*1\r\n*2\r\n$1\r\nr\r\n*1\r\n" + ENTRY + b"*-1\r\n" + ECHO
    parsed = RawReplies(data, reads=2, encoding="utf-8").parse()
    assert parsed.handover_epoch == 7 and parsed.entries == [("1-0", ["sensor", "a"])]


def test_empty_reads_are_told_apart_without_a_counter_set():
    empty = RawReplies(b"$-1\r\n*-1\r\n*-1\r\n" + ECHO, reads=2, encoding="utf-8")
    assert not empty.found_entries and empty.parse().handover_epoch == 0


def test_an_error_reply_raises():
    with pytest.raises(ResponseError, match="NOGROUP"):
        RawReplies(b"$-1\r\n-NOGROUP no such group\r\n" + ECHO, reads=1, encoding="utf-8").parse()
