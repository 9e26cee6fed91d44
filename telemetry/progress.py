"""Progress of long-running commands: how far, how fast, and anything else the command adds.

On a terminal (a LogStream with a live line) it is one line rewritten a few times a second, with
a bar and an ETA when the total is known; elsewhere a plain line every few seconds, so it reads
the same in a log file and a CI run."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

LIVE_EVERY_S = 0.25
BAR_WIDTH = 20


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
    live: bool = False

    def __post_init__(self) -> None:
        self.live = bool(getattr(self.out, "live", False))
        self.next_line = self.started + (LIVE_EVERY_S if self.live else self.every_s)

    def add(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now < self.next_line:
            return
        self.next_line = now + (LIVE_EVERY_S if self.live else self.every_s)
        rate = self.done / max(now - self.started, 1e-9)
        extra = f", {self.details()}" if self.details else ""
        if self.live:
            self.out.show_status(f"{self.label} {self._bar(rate)}{self.done:,}{self._of()} {self.what}, "
                                 f"{rate:,.0f}/s{extra}")
            return
        share = f" ({self.done / self.planned:.0%})" if self.planned else ""
        print(f"{self.label}: {self.done:,}{self._of()}{share} {self.what}, {rate:,.0f}/s{extra}", file=self.out,
              flush=True)

    def _of(self) -> str:
        return f" of {self.planned:,}" if self.planned else ""

    def _bar(self, rate: float) -> str:
        if not self.planned:
            return ""
        share = min(1.0, self.done / self.planned)
        filled = round(share * BAR_WIDTH)
        eta = int((self.planned - self.done) / rate) if rate > 0 else 0
        return f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {share:.0%} eta {eta // 60}m{eta % 60:02d}s, "

    def close(self) -> None:
        """Take the live line down before the command's last words."""
        if self.live:
            self.out.clear_status()
