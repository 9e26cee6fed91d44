"""Reading a pipeline's P partition streams as one, in stream-id order.

Ids given by one server compare as (ms, seq), so ordering by id orders entries by when Redis
accepted them, across partitions. Two partitions may hold the same id; the lower partition (the
earlier source) then comes first. Each partition is read page by page and the pages are merged
lazily, so memory holds about one page per partition however long the streams are. Ids are
parsed once per page, in C, and compared as numpy arrays: a Python sort key per entry would cost
an export as much as converting the entries does.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np

Page = list[tuple[str, Any]]  # (entry id, fields), in id order


@dataclass(frozen=True, slots=True)
class _Run:
    """Entries of one partition in id order, with their ids parsed: as arrays to sort a merge by,
    and as one exact Python int each (ms << 64 | seq) to bisect at C speed."""

    entries: Page
    ms: np.ndarray
    seq: np.ndarray
    keys: list[int]

    @classmethod
    def parse(cls, entries: Page) -> _Run:
        ids = " ".join(map(itemgetter(0), entries)).replace("-", " ")
        numbers = np.fromstring(ids, dtype=np.int64, sep=" ")
        ms, seq = numbers[0::2], numbers[1::2]
        return cls(entries, ms, seq, [m << 64 | s for m, s in zip(ms.tolist(), seq.tolist())])

    def split_after(self, bound: int) -> tuple[_Run, _Run]:
        """(the entries up to and including the id whose key is `bound`, the rest)."""
        cut = bisect_right(self.keys, bound)
        return (_Run(self.entries[:cut], self.ms[:cut], self.seq[:cut], self.keys[:cut]),
                _Run(self.entries[cut:], self.ms[cut:], self.seq[cut:], self.keys[cut:]))


def _merge(runs: list[_Run]) -> Page:
    runs = [run for run in runs if run.entries]
    if len(runs) <= 1:
        return runs[0].entries if runs else []
    order = np.lexsort((np.concatenate([run.seq for run in runs]), np.concatenate([run.ms for run in runs])))
    entries = list(chain.from_iterable(run.entries for run in runs))
    return list(itemgetter(*order.tolist())(entries))


def merge_runs(runs: Iterable[Page]) -> Page:
    """Runs each in id order (one per partition) as one page in id order."""
    return _merge([_Run.parse(run) for run in runs if run])


@dataclass(slots=True)
class _Source:
    pages: Iterator[Page]
    buffer: _Run | None = None  # None: drained, read the next page
    finished: bool = False

    def refill(self) -> None:
        if self.buffer is None and not self.finished:
            page = next(self.pages, [])
            self.buffer = _Run.parse(page) if page else None
            self.finished = not page

    def take_through(self, bound: int) -> _Run:
        taken, rest = self.buffer.split_after(bound)
        self.buffer = rest if rest.entries else None
        return taken


def _merged_steps(sources: list[_Source]) -> Iterator[Page]:
    """Each step emits what no unread page can precede: every source's next page starts after
    the last id it has buffered, so everything up to the smallest such id is final."""
    while True:
        for source in sources:
            source.refill()
        live = [source for source in sources if source.buffer is not None]
        if not live:
            return
        bound = min(source.buffer.keys[-1] for source in live)
        yield _merge([source.take_through(bound) for source in live])


def merged_pages(partition_pages: list[Iterator[Page]], min_page: int) -> Iterator[Page]:
    """Pages of several id-ordered page iterators as one id-ordered sequence of pages of at least
    `min_page` entries (but the last): steps can be small, and each page costs its reader a
    fixed overhead."""
    if len(partition_pages) == 1:
        yield from partition_pages[0]
        return
    out: Page = []
    for step in _merged_steps([_Source(pages) for pages in partition_pages]):
        out += step
        if len(out) >= min_page:
            yield out
            out = []
    if out:
        yield out
