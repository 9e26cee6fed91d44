"""`PrivateAlertmanager`: a throwaway Prometheus Alertmanager (Debian `prometheus-alertmanager`)
on a free port, clustering off, its data in its own folder, its webhook receiver a URL the caller
gives: for tests and benchmarks, never an Alertmanager someone runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from telemetry.embedded import free_port
from telemetry.errors import UsageError
from telemetry.private_process import PrivateProcess

BINARIES = ("prometheus-alertmanager", "alertmanager")
START_TIMEOUT_S = 20.0


def alertmanager_binary() -> str | None:
    for name in BINARIES:
        found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
        if found:
            return found
    return None


@dataclass
class PrivateAlertmanager(PrivateProcess):
    data_dir: Path
    webhook_url: str
    resolve_timeout: str = "5m"
    group_wait: str = "1s"
    group_interval: str = "1s"
    repeat_interval: str = "1h"
    inhibit_silent: bool = True  # the README's inhibition: a silent sensor mutes its other alerts
    group_by: tuple[str, ...] = ("alertname", "sensor")
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        inhibit = ("inhibit_rules:\n"
                   "  - source_matchers: ['kind=\"silent\"']\n"
                   "    target_matchers: ['kind!=\"silent\"']\n"
                   "    equal: [pipeline, sensor]\n") if self.inhibit_silent else ""
        return (f"global:\n  resolve_timeout: {self.resolve_timeout}\n"
                f"route:\n  receiver: test\n  group_by: [{', '.join(self.group_by)}]\n"
                f"  group_wait: {self.group_wait}\n  group_interval: {self.group_interval}\n"
                f"  repeat_interval: {self.repeat_interval}\n"
                "receivers:\n  - name: test\n    webhook_configs:\n"
                f"      - url: {json.dumps(self.webhook_url)}\n        send_resolved: true\n" + inhibit)

    def start(self) -> None:
        binary = alertmanager_binary()
        if binary is None:
            raise UsageError("Alertmanager is not installed (Debian: apt-get install -y prometheus-alertmanager)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "alertmanager.yml"
        config.write_text(self.config())
        log = self.data_dir / "alertmanager.log"
        with log.open("a") as output:
            self.process = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.path={self.data_dir}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=",
                 f"--web.external-url=http://127.0.0.1:{self.port}"], stdout=output, stderr=output)
        self.wait_until_ready(self.ready, START_TIMEOUT_S, f"alertmanager on port {self.port}",
                              lambda: log.read_text()[-800:])

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def alerts(self) -> list[dict]:
        """GET /api/v2/alerts: what Alertmanager holds now (active, suppressed)."""
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts", timeout=5) as response:
            return json.loads(response.read())
