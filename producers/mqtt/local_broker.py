"""`PrivateMosquitto`: a throwaway Mosquitto on a free port with persistence in its own folder,
for tests and benchmarks; stopped, killed and restarted by its pid, never the broker on 1883."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from telemetry.embedded import free_port
from telemetry.errors import UsageError
from telemetry.private_process import PrivateProcess

MOSQUITTO = "/usr/sbin/mosquitto"
START_TIMEOUT_S = 10.0


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or (MOSQUITTO if Path(MOSQUITTO).exists() else None)


@dataclass
class PrivateMosquitto(PrivateProcess):
    """SIGTERM (`stop`) saves the persistence file as Mosquitto exits; kill -9 (`kill`) loses what
    arrived since the last autosave."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    max_queued_messages: int = 1000  # Mosquitto's default: what it keeps per absent client
    autosave_interval_s: int = 1  # persistence: what a kill -9 loses is at most this old
    listeners: tuple[str, ...] = ()  # more config lines, e.g. a TLS listener with its cafile, certfile, keyfile
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def config(self) -> str:
        return "\n".join([
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.data_dir}/",
            f"autosave_interval {self.autosave_interval_s}",
            f"max_queued_messages {self.max_queued_messages}",
            f"user {getpass.getuser()}",
            f"log_dest file {self.data_dir}/mosquitto.log",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
            *self.listeners,
            "",
        ])

    def start(self) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise UsageError("mosquitto is not installed (Debian: apt-get install -y mosquitto)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "mosquitto.conf"
        config.write_text(self.config())
        self.process = subprocess.Popen([binary, "-c", str(config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        log = self.data_dir / "mosquitto.log"
        self.wait_until_ready(self.accepts, START_TIMEOUT_S, f"mosquitto on port {self.port}",
                              lambda: log.read_text()[-500:] if log.exists() else "no log")

    def accepts(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            return True
        except OSError:
            return False
