"""The web page with 10,000 sensors: the fleet snapshot's time (GET /api/fleet, p50 and p99), the
fleet page's load in headless Chromium until its grid is drawn, and the delay from a reading's
XADD (its stream id's time, Redis's clock) to the browser's receipt of the event carrying it,
while a producer writes 10,000 readings/s; and what one snapshot costs Redis (INFO commandstats
over snapshots taken with nothing else running but the server's own follower).

Everything runs on this machine: a private redis-server, the producer, one worker (drained
before the measurements, so the checkpoints name every sensor), the server and Chromium.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import redis
from playwright.sync_api import sync_playwright

from analytics.web.headless import launch_chromium
from consumers.status import collect_status
from scripts.bench_common import Figure, bench_redis, parser, print_figures
from telemetry.embedded import free_port
from telemetry.keys import Keys
from telemetry.partitions import open_layout

ROOT = Path(__file__).resolve().parent.parent
SENSORS = 10_000
SNAPSHOTS = 60
PAGE_LOADS = 3
DELAY_SECONDS = 20
FLAGS = ("--prefix", "benchweb", "--partitions", "16")
ARTIFACTS = Path(os.environ.get("TELEMETRY_ARTIFACTS", ROOT / "artifacts")) / "web"
# Records each event's id and arrival time (installed over the page's own EventSource, so the
# figure is what the page itself receives).
RECORD_EVENTS = """
window.__arrivals = [];
const Original = window.EventSource;
window.EventSource = function (url) {
  const source = new Original(url);
  source.addEventListener('update', (event) => window.__arrivals.push([event.lastEventId, Date.now()]));
  return source;
};
window.EventSource.CLOSED = Original.CLOSED;
"""


def run(module: str, *args: str, folder: Path, name: str, wait: bool = False) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=(folder / f"{name}.log").open("w"), env={**os.environ, "PYTHONPATH": str(ROOT)})
    if wait and process.wait() != 0:
        sys.exit(f"bench_web: {module} {' '.join(args)} failed: {(folder / f'{name}.log').read_text()[-500:]}")
    return process


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


def wait_for_fleet(url: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if len(json.loads(get(url + "/api/fleet"))["sensors"]["names"]) >= SENSORS:
                return
        except OSError:
            pass
        time.sleep(0.5)
    sys.exit("bench_web: the server did not show every sensor in time")


def snapshot_times(url: str) -> np.ndarray:
    times = []
    for _ in range(SNAPSHOTS):
        started = time.perf_counter()
        get(url + "/api/fleet")
        times.append((time.perf_counter() - started) * 1000)
    return np.array(times)


def command_stats(db: redis.Redis) -> tuple[int, int]:
    """(calls, µs) of every command Redis has run so far, INFO itself excluded."""
    entries = {name: e for name, e in db.info("commandstats").items() if name != "cmdstat_info"}
    return sum(e["calls"] for e in entries.values()), sum(e["usec"] for e in entries.values())


def redis_cost(db: redis.Redis, url: str) -> tuple[float, float, float, float]:
    """(commands, Redis µs) of one status read (owners, lags, counters: what a snapshot reads of
    Redis, at most every 2 s however many pages ask), and per snapshot over SNAPSHOTS requests in
    a row, less what the server's follower spends in the same time without requests."""
    layout = open_layout(db, Keys("benchweb"), create=False)
    calls0, usec0 = command_stats(db)
    collect_status(db, layout, "aggregators", maxlen=0)
    calls1, usec1 = command_stats(db)
    started = time.monotonic()
    for _ in range(SNAPSHOTS):
        get(url + "/api/fleet")
    span = time.monotonic() - started
    calls2, usec2 = command_stats(db)
    time.sleep(span)
    calls3, usec3 = command_stats(db)
    return (calls1 - calls0, usec1 - usec0, max(0.0, (calls2 - calls1 - (calls3 - calls2)) / SNAPSHOTS),
            max(0.0, (usec2 - usec1 - (usec3 - usec2)) / SNAPSHOTS))


def page_loads(browser, url: str) -> list[float]:
    times = []
    for _ in range(PAGE_LOADS):
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        started = time.perf_counter()
        page.goto(url + "/")
        page.wait_for_selector("body[data-ready=true]", timeout=30_000)
        times.append((time.perf_counter() - started) * 1000)
        cells = page.locator("#grid").get_attribute("data-cells")
        if int(cells) < SENSORS:
            sys.exit(f"bench_web: the grid drew {cells} cells")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"fleet-{SENSORS}.png"), full_page=True)
        page.close()
    return times


def event_delays(browser, url: str) -> np.ndarray:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.add_init_script(RECORD_EVENTS)
    page.goto(url + "/")
    page.wait_for_selector("body[data-ready=true]", timeout=30_000)
    time.sleep(3)  # past the catch-up from the snapshot's position
    page.evaluate("() => { window.__arrivals = []; }")
    time.sleep(DELAY_SECONDS)
    arrivals = page.evaluate("() => window.__arrivals")
    page.close()
    return np.array([received - int(event_id.split("-")[0]) for event_id, received in arrivals if event_id])


def main() -> None:
    args = parser(__doc__).parse_args()
    with tempfile.TemporaryDirectory(prefix="telemetry-bench-web-") as name, bench_redis(args.redis_url) as redis_url:
        folder = Path(name)
        common = ("--redis-url", redis_url, *FLAGS)
        fleet = ("--fleet", "bench-", str(SENSORS), "--rate", "1")
        run("producers", *fleet, "--start=-10s", *common, folder=folder, name="backfill", wait=True)
        run("consumers", "aggregate", "--start", "all", "--drain", *common, folder=folder, name="worker", wait=True)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = run("analytics", "serve", "--port", str(port), *common, folder=folder, name="server")
        producer = None
        try:
            wait_for_fleet(url)
            db = redis.Redis.from_url(redis_url, decode_responses=True)
            status_calls, status_us, commands, redis_us = redis_cost(db, url)
            producer = run("producers", *fleet, *common, folder=folder, name="producer")
            time.sleep(5)
            snapshots = snapshot_times(url)
            with sync_playwright() as playwright:
                browser = launch_chromium(playwright)
                loads = page_loads(browser, url)
                delays = event_delays(browser, url)
                browser.close()
        finally:
            for process in (producer, server):
                if process is not None:
                    process.send_signal(signal.SIGTERM)
                    process.wait(timeout=30)
    if not len(delays):
        sys.exit("bench_web: the page received no events")
    print_figures(f"web page, {SENSORS:,} sensors", [
        Figure("fleet snapshot p50", float(np.percentile(snapshots, 50)), "ms"),
        Figure("fleet snapshot p99", float(np.percentile(snapshots, 99)), "ms", target="< 250 ms"),
        Figure("fleet page drawn (median of 3)", float(np.median(loads)), "ms", target="< 2,000 ms"),
        Figure("fleet page drawn (slowest of 3)", float(max(loads)), "ms"),
        Figure("XADD to browser event p50 at 10,000/s", float(np.percentile(delays, 50)), "ms"),
        Figure("XADD to browser event p99 at 10,000/s", float(np.percentile(delays, 99)), "ms", target="< 1,000 ms"),
        Figure("one status read (every 2 s at most): commands", status_calls, "commands"),
        Figure("one status read (every 2 s at most): Redis time", status_us, "µs"),
        Figure("per snapshot, 60 in a row: Redis commands", commands, "commands"),
        Figure("per snapshot, 60 in a row: Redis time", redis_us, "µs"),
    ], args.json)


if __name__ == "__main__":
    main()
