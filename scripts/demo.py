"""make demo: five named sensors (one faulty), their last hour backfilled first, and two aggregator
workers, each its own process, the live web page (DEMO_PORT, default 8080, else a free port) and a
notifier delivering every alert event to a signed webhook of the demo's own (out/notifications.jsonl);
where Mosquitto is installed, three more sensors publish as real devices do (Tasmota, Zigbee2MQTT,
Shelly gen1 with temperature and humidity on topics of their own) to a private broker that the
MQTT bridge reads; a live view for DEMO_SECONDS (default 60) or until Ctrl-C, then CSV exports
and a plot in out/."""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import nullcontext
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

from rich.console import Console
from rich.live import Live

from analytics.dashboard import collect_snapshot, plain_summary, rates_between, render
from analytics.export import ExportRequest, export
from analytics.plot import alert_episodes, sensor_figure
from analytics.streams import STREAM_KINDS, RowFilter, load_frame
from consumers.notify.signing import parse_secret, signature
from producers.mqtt.local_broker import PrivateMosquitto, mosquitto_binary
from telemetry.cli import StopSignal
from telemetry.connection import connect, resolve_target
from telemetry.embedded import EmbeddedRedis, default_home
from telemetry.keys import Keys
from telemetry.partitions import Layout, delete_pipeline, open_layout
from telemetry.schema import FieldMap

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(os.environ.get("DEMO_OUT", ROOT / "out")).resolve()  # DEMO_OUT puts the results elsewhere
PREFIX = "demo"
SENSORS = ("greenhouse-north", "greenhouse-south", "cold-store", "server-room", "attic")
FAULTY = "attic"
FAULT_FLAGS = ("--spike-rate", "240", "--stuck-rate", "2", "--dropout-rate", "3")  # per hour; drift would dwarf the plot
PARTITIONS = 4  # two workers own two each; the live view shows one row per partition
GROUP = "aggregators"
WORKER_FLAGS = ("--window", "10s", "--grace", "2s", "--rolling", "60s", "--idle", "15s", "--lease", "10s",
                "--settle", "2s", "--start", "all")
MIN_SECONDS = 5  # time for the workers to take their partitions and a window to close
HISTORY = "-1h"  # backfilled first, so windows, rolling stats, alerts and the plot exist at once
DEVICES = {"kitchen": "tasmota", "porch": "zigbee2mqtt", "hallway": "shelly"}  # sensors on the broker, by format;
# a Shelly gen1 H&T sends temperature and humidity on topics of their own: readings of one metric each


def spawn(url: str, log: Path, module: str, *args: str) -> subprocess.Popen:
    """The URL goes in the environment, not the arguments, which `ps` shows: it may hold a password."""
    return subprocess.Popen([sys.executable, "-m", module, *args, "--prefix", PREFIX,
                             "--partitions", str(PARTITIONS), "--group", GROUP],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": url},
                            stdout=subprocess.DEVNULL, stderr=log.open("w"), start_new_session=True)


def web_port() -> int:
    """DEMO_PORT (default 8080) when it is free, else any free port: a demo should not fail for a
    busy 8080."""
    text = os.environ.get("DEMO_PORT", "8080")
    if not text.isdigit() or not 0 < int(text) < 65536:
        print(f"demo: DEMO_PORT={text!r}: give a port, 1-65535", file=sys.stderr)
        raise SystemExit(2)
    wanted = int(text)
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", wanted))
            return wanted
        except OSError:
            probe.bind(("127.0.0.1", 0))
            return probe.getsockname()[1]


class WebhookLog:
    """The demo's webhook receiver: checks each notification's Standard Webhooks signature and
    appends it to a file, one JSON object per line."""

    def __init__(self, secret: str, path: Path) -> None:
        key, self.path, self.received, self.bad = parse_secret(secret, "demo"), path, 0, 0
        self.path.write_text("")
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                given = self.headers.get("webhook-signature", "")
                expected = signature(key, self.headers.get("webhook-id", ""),
                                     int(self.headers.get("webhook-timestamp", "0")), body)
                receiver.received += 1
                receiver.bad += expected not in given.split()
                with receiver.path.open("a") as out:
                    out.write(json.dumps({"webhook-id": self.headers.get("webhook-id"), **json.loads(body)}) + "\n")
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/alerts"


def start_devices(url: str, logs: Path) -> tuple[PrivateMosquitto | None, list[subprocess.Popen]]:
    """The real-sensor path, simulator -> Mosquitto -> bridge -> Redis, where Mosquitto is installed:
    a private broker on a free port (never one already on 1883), a device simulator and a bridge per format."""
    if mosquitto_binary() is None:
        print("demo: mosquitto is not installed, so no sensor comes over MQTT (Debian: apt-get install mosquitto)")
        return None, []
    folder = default_home() / "mosquitto"
    shutil.rmtree(folder, ignore_errors=True)  # a bridge session of an earlier demo would replay its old readings
    broker = PrivateMosquitto(folder)
    broker.start()
    processes = []
    for device, format_name in DEVICES.items():
        processes.append(spawn(url, logs / f"bridge-{format_name}.log", "producers", "--from-mqtt", broker.url,
                               "--format", format_name, "--client-id", f"demo-bridge-{format_name}"))
        # 1 Hz: Tasmota's device time has whole seconds, so two reports in one second are one to the bridge
        processes.append(spawn(url, logs / f"device-{device}.log", "producers", device, "--rate", "1",
                               "--to-mqtt", broker.url, "--format", format_name))
    print(f"demo: {', '.join(f'{device} ({f})' for device, f in DEVICES.items())} publish to a private Mosquitto "
          f"on {broker.url}; the MQTT bridge writes their readings")
    return broker, processes


def stop_all(processes: list[subprocess.Popen]) -> None:
    """SIGTERM: producers flush and workers commit their batch; SIGKILL only after 20 s."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def clear_demo_keys(db) -> None:
    """So that a second `make demo` starts from nothing, not on top of the first: every key of the
    demo pipeline, whatever its partition count was, and its pipeline record, so it starts with ours."""
    delete_pipeline(db, open_layout(db, Keys(PREFIX), create=False))


def write_outputs(db, layout: Layout) -> list[Path]:
    OUT.mkdir(parents=True, exist_ok=True)
    written = []
    groups = layout.groups(GROUP)
    for which in ("readings", "aggregates", "alerts"):
        target = OUT / f"{which}.csv"
        export(db, groups, FieldMap(), ExportRequest(STREAM_KINDS[which], str(target)))
        written.append(target)
    readings, windows, alerts = (load_frame(db, STREAM_KINDS[which], groups, FieldMap(), RowFilter((FAULTY,)))
                                 for which in ("readings", "aggregates", "alerts"))
    plot = OUT / f"{FAULTY}.png"
    sensor_figure(FAULTY, readings, windows, alert_episodes(alerts)).savefig(plot, dpi=110)
    written.append(plot)
    return written


def main() -> int:
    argparse.ArgumentParser(description=__doc__).parse_args()
    text = os.environ.get("DEMO_SECONDS", "60")
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < MIN_SECONDS:
        print(f"demo: DEMO_SECONDS={text!r}: give a number of seconds, at least {MIN_SECONDS}", file=sys.stderr)
        return 2
    embedded = EmbeddedRedis(default_home())
    embedded_was_running = embedded.running_url() is not None
    target = resolve_target(None)
    db = connect(target)
    clear_demo_keys(db)
    layout = open_layout(db, Keys(PREFIX), PARTITIONS)
    logs = OUT / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stop = StopSignal().install()
    print(f"demo: backfilling the last hour of {len(SENSORS)} sensors ...", flush=True)
    # One producer for all sensors, so that their readings move through event time together, as a
    # fleet's do: a partition judges silence on the newest event time among its sensors.
    producer_args = (*SENSORS, "--rate", "2", *FAULT_FLAGS, "--faulty", FAULTY)
    spawn(target.url, logs / "backfill.log", "producers", *producer_args, f"--start={HISTORY}").wait()
    processes = [spawn(target.url, logs / f"worker-{n}.log", "consumers", "aggregate", "--consumer", f"demo-worker-{n}",
                       *WORKER_FLAGS) for n in (1, 2)]
    processes.append(spawn(target.url, logs / "producer.log", "producers", *producer_args))
    broker, device_processes = start_devices(target.url, logs)
    processes += device_processes
    sensors = [*SENSORS, *(DEVICES if broker else ())]
    port = web_port()
    processes.append(spawn(target.url, logs / "web.log", "analytics", "serve", "--port", str(port)))
    print(f"demo: the live web page is at http://127.0.0.1:{port}/ while the demo runs", flush=True)
    os.environ["TELEMETRY_WEBHOOK_SECRET"] = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    webhook = WebhookLog(os.environ["TELEMETRY_WEBHOOK_SECRET"], OUT / "notifications.jsonl")
    processes.append(spawn(target.url, logs / "notify.log", "consumers", "notify", "--webhook", webhook.url,
                           "--start", "all", "--external-url", f"http://127.0.0.1:{port}"))
    console = Console(stderr=False)
    interactive = console.is_terminal
    print(f"demo: {len(sensors)} sensors ({FAULTY} with faults) and 2 workers for {seconds:g}s; Ctrl-C stops early")
    deadline = time.monotonic() + seconds
    previous = None
    try:
        with Live(console=console, refresh_per_second=2, transient=False) if interactive else nullcontext() as live:
            next_plain = time.monotonic() + 10
            while time.monotonic() < deadline and not stop.requested:
                snapshot = collect_snapshot(db, layout, GROUP, sensors)
                rates = rates_between(previous, snapshot)
                previous = snapshot
                if interactive:
                    elapsed = seconds - max(0.0, deadline - time.monotonic())
                    live.update(render(snapshot, rates, f"demo: {elapsed:.0f}s of {seconds:g}s, "
                                                        f"{target.describe()}; Ctrl-C stops"))
                elif time.monotonic() >= next_plain:
                    print(f"demo: {plain_summary(snapshot, rates)}", flush=True)
                    next_plain += 10
                time.sleep(0.5)
    finally:
        stop_all(processes)
        if broker is not None:
            broker.stop()
    time.sleep(0.2)
    final = collect_snapshot(db, layout, GROUP, sensors)
    print(f"demo: stopped. {plain_summary(final, {})}")
    webhook.server.shutdown()
    print(f"demo: the notifier delivered {webhook.received} alert events to a signed webhook "
          f"({webhook.received - webhook.bad} signatures valid): {os.path.relpath(webhook.path)}")
    for path in write_outputs(db, layout):
        print(f"demo: wrote {os.path.relpath(path)}")
    print(f"demo: process logs in {os.path.relpath(logs)}/")
    if target.origin.startswith("embedded") and not embedded_was_running:
        embedded.stop()
        print("demo: stopped the embedded redis-server it started (data stays in .telemetry/)")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:  # Ctrl-C before the demo's own handler is installed
        raise SystemExit(130) from None
