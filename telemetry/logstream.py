"""Log lines of long-running commands: each stderr line stamped with the time, or written as one
JSON object (--log-json) for log shippers.

Commands keep printing plain lines (`aggregator: ...`); installing this stream in place of
sys.stderr is the only change they need. The part before the first ': ' becomes the JSON
`component` when it is one word. On a terminal, the stream also keeps one live status line at the
bottom (progress, rewritten in place); log lines scroll above it.
"""

from __future__ import annotations

import atexit
import json
import shutil
import sys
import threading
from typing import TextIO

from telemetry.timeutil import iso_utc, now_ms


class LogStream:
    def __init__(self, target: TextIO, as_json: bool) -> None:
        self.target = target
        self.as_json = as_json
        self._pending = ""
        self._lock = threading.Lock()  # the worker's renewal thread may log too
        self.live = not as_json and self.target.isatty()
        self._status = ""

    def write(self, text: str) -> int:
        with self._lock:
            self._pending += text
            *lines, self._pending = self._pending.split("\n")
            if lines:
                self._erase_status()
                for line in lines:
                    self.target.write(self._format(line) + "\n")
                self.target.write(self._status)
            self.target.flush()
        return len(text)

    def show_status(self, text: str) -> None:
        """Rewrite the live line; nothing where there is none (not a terminal, or JSON logs)."""
        if not self.live:
            return
        with self._lock:
            self._erase_status()
            self._status = text[:shutil.get_terminal_size().columns - 1]
            self.target.write(self._status)
            self.target.flush()

    def clear_status(self) -> None:
        with self._lock:
            self._erase_status()
            self._status = ""
            self.target.flush()

    def _erase_status(self) -> None:
        if self._status:
            self.target.write("\r\x1b[2K")

    def flush(self) -> None:
        self.target.flush()

    def isatty(self) -> bool:
        return self.target.isatty()

    def _format(self, line: str) -> str:
        stamp = iso_utc(now_ms())
        if not self.as_json:
            return f"{stamp} {line}"
        component, separator, message = line.partition(": ")
        if not separator or " " in component:
            component, message = "", line
        return json.dumps({"ts": stamp, "component": component, "message": message}, ensure_ascii=False)


def install(as_json: bool) -> None:
    """Stamp every later stderr line of this process (call once, early in a command)."""
    if not isinstance(sys.stderr, LogStream):
        sys.stderr = stream = LogStream(sys.stderr, as_json)
        atexit.register(stream.clear_status)  # leave no half line behind for the shell prompt
