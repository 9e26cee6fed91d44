"""A line every few seconds from long-running commands: how far, how fast, and anything else the
command adds. Plain lines, so they read the same in a terminal, a log file and a CI run."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO


@dataclass(slots=True)
class ProgressLine:
    label: str  # who speaks: producer, aggregator
    what: str  # what is counted: readings written, entries processed
    planned: int | None
    out: TextIO
    every_s: float = 5.0
    details: Callable[[], str] | None = None  # more to say, e.g. the partitions a worker owns
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    next_line: float = 0.0

    def __post_init__(self) -> None:
        self.next_line = self.started + self.every_s

    def add(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now < self.next_line:
            return
        self.next_line = now + self.every_s
        rate = self.done / max(now - self.started, 1e-9)
        share = f" of {self.planned:,} ({self.done / self.planned:.0%})" if self.planned else ""
        extra = f", {self.details()}" if self.details else ""
        print(f"{self.label}: {self.done:,}{share} {self.what}, {rate:,.0f}/s{extra}", file=self.out, flush=True)
