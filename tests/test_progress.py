"""Progress: a live line rewritten in place on a terminal, plain periodic lines anywhere else."""

from __future__ import annotations

import io

from telemetry.logstream import LogStream
from telemetry.progress import ProgressLine

ERASE = "\r\x1b[2K"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def advance(progress: ProgressLine, count: int) -> None:
    """As if the next update were due now."""
    progress.next_line = 0
    progress.add(count)


def test_on_a_terminal_one_live_line_stays_below_the_log_lines_and_goes_at_the_end():
    terminal = Terminal()
    stream = LogStream(terminal, as_json=False)
    progress = ProgressLine("producer", "readings", 1000, stream)  # short: the line is cut to the terminal
    progress.started -= 10
    advance(progress, 400)
    print("producer: something to say", file=stream)
    advance(progress, 100)
    progress.close()
    shown = terminal.getvalue()
    status = "producer [########............] 40% eta 0m15s, 400 of 1,000 readings, 40/s"
    assert shown.startswith(status + ERASE)
    assert f"producer: something to say\n{status}{ERASE}producer [##########" in shown
    assert shown.endswith("50% eta 0m10s, 500 of 1,000 readings, 50/s" + ERASE)


def test_elsewhere_plain_lines_and_no_control_codes():
    for out in (io.StringIO(), LogStream(Terminal(), as_json=True), LogStream(io.StringIO(), as_json=False)):
        progress = ProgressLine("aggregator", "entries processed", None, out, details=lambda: "2 of 4 partitions owned")
        progress.started -= 10
        advance(progress, 500)
        progress.close()
        text = (out.target if isinstance(out, LogStream) else out).getvalue()
        assert "\x1b" not in text and "\r" not in text
        assert "500 entries processed, 50/s, 2 of 4 partitions owned" in text
