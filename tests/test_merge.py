"""Partition streams read as one: the lazy page merge, without Redis."""

from __future__ import annotations

import random

from telemetry.merge import merge_runs, merged_pages
from telemetry.timeutil import stream_id_key


def partition_ids(rng: random.Random, count: int) -> list[str]:
    """Ids as one stream gives them: (ms, seq) increasing, several per millisecond at times."""
    ids, ms, seq = [], 1_700_000_000_000, 0
    for _ in range(count):
        if rng.random() < 0.6:
            ms, seq = ms + rng.randint(1, 3), 0
        else:
            seq += 1
        ids.append(f"{ms}-{seq}")
    return ids


def pages_of(entries: list, size: int):
    return iter([entries[start:start + size] for start in range(0, len(entries), size)])


def test_merged_pages_give_every_entry_once_in_id_order_with_ties_by_partition():
    rng = random.Random(7)
    partitions = [[(entry_id, {"p": index}) for entry_id in partition_ids(rng, rng.randint(0, 900))]
                  for index in range(5)]
    partitions.append([])  # a partition with no stream yet
    pages = list(merged_pages([pages_of(entries, rng.randint(1, 200)) for entries in partitions], min_page=300))
    merged = [entry for page in pages for entry in page]
    expected = sorted((entry for entries in partitions for entry in entries),
                      key=lambda entry: (stream_id_key(entry[0]), entry[1]["p"]))
    assert merged == expected
    assert all(len(page) >= 300 for page in pages[:-1])
    assert any(merged[i][0] == merged[i + 1][0] for i in range(len(merged) - 1))  # ties were exercised


def test_seq_compares_as_a_number_not_as_text():
    assert [entry_id for entry_id, _ in merge_runs([[("5-10", 0)], [("5-9", 1)], [("4-100", 2)]])] == [
        "4-100", "5-9", "5-10"]


def test_one_partition_passes_its_pages_through():
    pages = [[("1-0", {})], [("2-0", {})]]
    assert list(merged_pages([iter(pages)], min_page=100)) == pages
