"""Log lines of long-running commands: each stderr line stamped with the time, or written as one
JSON object (--log-json) for log shippers.

Commands keep printing plain lines (`aggregator: ...`); installing this stream in place of
sys.stderr is the only change they need. The part before the first ': ' becomes the JSON
`component` when it is one word.
"""

from __future__ import annotations

import json
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

    def write(self, text: str) -> int:
        with self._lock:
            self._pending += text
            *lines, self._pending = self._pending.split("\n")
            for line in lines:
                self.target.write(self._format(line) + "\n")
            self.target.flush()
        return len(text)

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
        sys.stderr = LogStream(sys.stderr, as_json)
