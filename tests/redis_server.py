"""A private redis-server for the tests: a free port, a temporary folder, AOF on, stopped afterwards."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import redis

from telemetry.embedded import free_port, redis_server_binary, server_command, wait_until_ready


@dataclass(slots=True)
class TestRedisServer:
    data_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.port != 6379, "tests never use the shared port"
        command = server_command(redis_server_binary(), self.port, self.data_dir, daemonize=False)
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until_ready(self.url)

    def stop(self) -> None:
        """Graceful: SHUTDOWN writes the AOF out, as an operator's restart would."""
        if self.process is None:
            return
        try:
            redis.Redis.from_url(self.url).shutdown(nosave=False)
        except redis.ConnectionError:
            pass
        self.process.wait(timeout=30)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()
