"""`PrivateProcess`: what every throwaway server of the tests, benchmarks and demo shares (a
private redis-server, Mosquitto, Alertmanager): started on a free port of its own, stopped
gracefully or killed by its pid, never a server someone else runs."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Self

from telemetry.errors import UsageError

STOP_TIMEOUT_S = 10.0


class PrivateProcess:
    """A subclass starts its server in `start` (setting `process`) and may refine `stop`:
    Redis shuts down through a command so that its AOF is written out."""

    process: subprocess.Popen | None

    def start(self) -> None:
        raise NotImplementedError

    def wait_until_ready(self, ready: Callable[[], bool], timeout_s: float, what: str,
                         log: Callable[[], str]) -> None:
        """Polls `ready` until it holds; a server that exits or stays deaf is stopped and named
        with the end of its log, so a failed start says why."""
        deadline = time.monotonic() + timeout_s
        while not ready():
            if self.process is None or self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise UsageError(f"{what} did not start: {log()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM, which lets the server save its state; SIGKILL if it has not exited in 10 s."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """kill -9: no chance to save; what it acknowledged and had not written out is gone."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()
