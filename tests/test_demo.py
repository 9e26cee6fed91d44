"""`make demo` end to end, as an operator of a locked-down Redis runs it: every process of the
pipeline under the admin role of `python -m telemetry acl --prefix demo` (URL in REDIS_URL,
password in a file), including the sensors that come over MQTT through a private Mosquitto."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from producers.mqtt.local_broker import mosquitto_binary
from telemetry.embedded import free_port
from tests.acl_helpers import AclServer
from tests.conftest import ROOT

DEMO_SECONDS = "25"  # long enough for a 10 s window of a device over MQTT to close


@pytest.fixture()
def demo_acl(tmp_path):
    server = AclServer(tmp_path / "acl", prefix="demo")
    server.folder.mkdir()
    server.start()
    yield server
    server.stop()


def test_the_demo_runs_every_process_as_the_admin_role_and_writes_its_results(demo_acl, tmp_path):
    if mosquitto_binary() is None and os.environ.get("CI"):
        raise RuntimeError("CI needs mosquitto (.ci/run installs it)")
    out = tmp_path / "out"
    env = {**os.environ, **demo_acl.env("admin"), "PYTHONPATH": str(ROOT), "DEMO_SECONDS": DEMO_SECONDS,
           "DEMO_OUT": str(out), "DEMO_PORT": str(free_port()), "TELEMETRY_HOME": str(tmp_path / "home")}
    demo = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py")], capture_output=True, text=True,
                          check=False, timeout=300, cwd=tmp_path, env=env)
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    assert demo_acl.denials() == [], demo_acl.denials()
    assert "Traceback" not in demo.stderr and demo_acl.password("admin") not in demo.stdout + demo.stderr
    readings = pd.read_csv(out / "readings.csv")
    windows = pd.read_csv(out / "aggregates.csv")
    sensors = set(readings["sensor"])
    assert {"greenhouse-north", "greenhouse-south", "cold-store", "server-room", "attic"} <= sensors
    assert len(readings) > 5 * 3600, "the backfilled hour of five sensors at 2 Hz"
    if mosquitto_binary() is not None:  # the sensors that came through Mosquitto and the bridges
        assert {"kitchen", "porch", "hallway"} <= sensors
        assert {"kitchen", "porch", "hallway"} & set(windows["sensor"]), "a window of a device over MQTT closed"
        hallway = readings[readings["sensor"] == "hallway"]  # Shelly gen1: one metric a message
        assert (hallway["temperature_c"].isna() != hallway["humidity_pct"].isna()).all()
    assert set(windows["sensor"]) >= {"attic", "cold-store"}
    notifications = [json.loads(line) for line in (out / "notifications.jsonl").read_text().splitlines()]
    assert notifications and all(n["version"] == "4" for n in notifications)
    delivered = f"delivered {len(notifications)} alert events to a signed webhook ({len(notifications)} signatures valid)"
    assert delivered in demo.stdout, demo.stdout
    assert (out / "attic.png").stat().st_size > 10_000
