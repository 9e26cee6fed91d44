"""A live pipeline for the web page's tests: a producer, a worker and `python -m analytics serve`,
each a real process, on the session's private redis-server; a server can be stopped and started
again on its port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from telemetry.embedded import PrivateRedisServer, free_port
from telemetry.keys import Keys
from telemetry.partitions import Layout, open_layout
from telemetry.schema import Reading
from telemetry.timeutil import now_ms
from tests.conftest import ROOT
from tests.crash_harness import spawn, wait_for

PREFIX = "webtest"
PARTITIONS = 4
SENSORS = 30  # web-0001 .. web-0030
HOT = "web-hot"  # written by the test itself: a cell that turns red on demand
RULES = """
[[rule]]
name = "temperature-high"
kind = "threshold"
metric = "temperature_c"
above = 60.0
severity = "critical"

[[rule]]
name = "humidity-low"
kind = "threshold"
metric = "humidity_pct"
below = 5.0
severity = "warning"
"""
PIPELINE_FLAGS = ("--prefix", PREFIX, "--partitions", str(PARTITIONS))
ARTIFACTS = Path(os.environ.get("TELEMETRY_ARTIFACTS", ROOT / "artifacts")) / "web"


def fetch(url: str, headers: dict | None = None, timeout: float = 10) -> tuple[int, dict, bytes]:
    """(status, headers, body) of a GET, error statuses included."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def get_json(url: str) -> dict:
    status, _, body = fetch(url)
    assert status == 200, (status, body[:300])
    return json.loads(body)


@dataclass
class WebPipeline:
    redis_url: str
    folder: Path
    port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    redis_server: PrivateRedisServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, decode_responses=True)

    @property
    def layout(self) -> Layout:
        return open_layout(self.db, Keys(PREFIX), create=False)

    def start(self) -> None:
        rules = self.folder / "rules.toml"
        rules.write_text(RULES)
        common = ("--redis-url", self.redis_url, *PIPELINE_FLAGS)
        self.processes["worker"] = spawn("consumers", "aggregate", "--window", "2s", "--grace", "1s", "--start", "all",
                                         "--settle", "200ms", "--rules", str(rules), *common,
                                         stderr=(self.folder / "worker.log").open("w"))
        self.processes["producer"] = spawn("producers", "--fleet", "web-", str(SENSORS), "--rate", "2", *common,
                                           stderr=(self.folder / "producer.log").open("w"))
        wait_for(lambda: self.db.exists(Keys(PREFIX).pipeline), 30, "the pipeline record")
        self.write(HOT, 21.0)  # a cell before the page opens
        self.start_server()
        wait_for(self.running, 60, "every sensor reporting and every partition owned in the fleet snapshot")

    def running(self) -> bool:
        """The pipeline as the tests expect to find it: a loaded machine starts processes slowly."""
        snapshot = get_json(f"{self.url}/api/fleet")
        return (len(snapshot["sensors"]["names"]) == SENSORS + 1 and snapshot["counters"]["reporting"] >= SENSORS
                and all(row["owner"] != "-" for row in snapshot["partitions"]))

    def start_server(self) -> None:
        rules = self.folder / "rules.toml"
        self.processes["server"] = spawn("analytics", "serve", "--port", str(self.port), "--redis-url", self.redis_url,
                                         "--rules", str(rules), *PIPELINE_FLAGS,
                                         stderr=(self.folder / "server.log").open("a"))
        wait_for(self.answers, 30, "the web server")

    def answers(self) -> bool:
        try:
            return fetch(f"{self.url}/api/fleet", timeout=2)[0] == 200
        except OSError:
            return False

    def stop_server(self) -> None:
        server = self.processes.pop("server")
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)

    def write(self, sensor: str, temperature_c: float | None, humidity_pct: float | None = 50.0,
              ts_ms: int | None = None) -> str:
        """One reading as a producer would write it (taken now, unless `ts_ms` says when; None for a
        metric it does not carry); returns its stream id."""
        reading = Reading(sensor, now_ms() if ts_ms is None else ts_ms, temperature_c, humidity_pct)
        return self.db.xadd(self.layout.partition_for(sensor).readings, reading.encode())

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def web_pipeline_in(folder: Path) -> Iterator[WebPipeline]:
    """A redis-server of its own (the module's processes write for its whole run, which the
    per-test flush of the shared one would cut short), and the pipeline on it."""
    (folder / "redis").mkdir(parents=True, exist_ok=True)
    with PrivateRedisServer(folder / "redis") as server:
        pipeline = WebPipeline(server.url, folder, redis_server=server)
        try:
            pipeline.start()
            yield pipeline
        finally:
            pipeline.stop()
