"""What a person sees on the web page, in Debian's Chromium driven by Playwright, against a live
pipeline (producer, worker and server as real processes on a private redis-server). Screenshots
of each page go to artifacts/web/ (TELEMETRY_ARTIFACTS to move it)."""

from __future__ import annotations

import io
import time

import pandas as pd
import pytest
from playwright.sync_api import Page, sync_playwright

from analytics.web.fleet import STATE_NAMES
from analytics.web.headless import launch_chromium
from telemetry.timeutil import now_ms
from tests.conftest import run_cli
from tests.crash_harness import wait_for
from tests.web_harness import ARTIFACTS, HOT, PIPELINE_FLAGS, SENSORS, fetch, web_pipeline_in

RED, GREEN = "#d93025", "#2e9d57"  # the grid's critical and ok colours (static/fleet.js)


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    with web_pipeline_in(tmp_path_factory.mktemp("web-browser")) as pipeline:
        yield pipeline


@pytest.fixture(scope="module")
def browser():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)  # no skip: .ci/run installs chromium
        yield chromium
        chromium.close()


def open_page(browser, url: str) -> Page:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]", timeout=15_000)
    return page


def shoot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_the_grid_has_one_cell_per_sensor(web, browser):
    page = open_page(browser, web.url + "/")
    assert page.locator("#grid").get_attribute("data-cells") == str(SENSORS + 1)
    assert page.evaluate("fleet.names.length") == SENSORS + 1
    assert page.evaluate("fleet.colourOf('web-0001')") == GREEN
    assert page.locator("#partitions tbody tr").count() == 4
    page.wait_for_function("() => document.querySelector('#counters').textContent.includes('readings / s')")
    x, y = page.evaluate("() => fleet.cellAt(fleet.index.get('web-0003')).map((v) => v + fleet.cell / 2)")
    box = page.locator("#grid").bounding_box()
    page.mouse.move(box["x"] + x, box["y"] + y)
    tooltip = page.locator("#tooltip")
    tooltip.wait_for(state="visible")
    assert tooltip.inner_text().startswith("web-0003: ") and "°C" in tooltip.inner_text()
    shoot(page, "fleet")
    page.fill("#goto input", "web-0002")
    page.press("#goto input", "Enter")
    page.wait_for_url("**/sensors/web-0002")
    page.wait_for_selector("body[data-ready=true]")
    assert page.errors == []
    page.close()


def test_an_out_of_range_reading_turns_its_cell_red_and_adds_an_alert_row_within_3s(web, browser):
    fleet = open_page(browser, web.url + "/")
    alerts = open_page(browser, web.url + "/alerts")
    fleet.wait_for_function("() => document.body.dataset.live === 'open'", timeout=10_000)
    alerts.wait_for_function("() => document.body.dataset.live === 'open'", timeout=10_000)
    assert fleet.evaluate(f"fleet.colourOf('{HOT}')") != RED
    written = time.monotonic()
    web.write(HOT, 95.0)
    fleet.wait_for_function(f"() => fleet.colourOf('{HOT}') === '{RED}'", timeout=3_000, polling=50)
    row = alerts.locator("#firing tbody tr", has_text=HOT)
    row.wait_for(timeout=max(1, 3_000 - (time.monotonic() - written) * 1000))
    elapsed = time.monotonic() - written
    assert elapsed < 3.0
    assert "temperature-high" in row.inner_text() and "critical" in row.inner_text()
    assert alerts.locator("#events tbody tr", has_text=HOT).first.inner_text().count("firing") == 1
    shoot(fleet, "fleet-alert")
    shoot(alerts, "alerts")
    alerts.select_option("#filters select[name=severity]", "warning")
    assert alerts.locator("#firing tbody tr", has_text=HOT).count() == 0
    alerts.select_option("#filters select[name=severity]", "critical")
    alerts.fill("#filters input[name=sensor]", "web-h*")
    assert alerts.locator("#firing tbody tr", has_text=HOT).count() == 1
    assert "severity=critical" in alerts.url and "sensor=web-h" in alerts.url  # a filtered view can be shared
    cell = fleet.evaluate(f"fleet.states[fleet.index.get('{HOT}')]")
    assert STATE_NAMES[cell] == "critical"
    web.write(HOT, 21.0)  # resolved again for the tests after this one
    alerts.locator("#firing tbody tr", has_text=HOT).wait_for(state="detached", timeout=5_000)
    sensor = open_page(browser, f"{web.url}/sensors/{HOT}?range=15m")
    assert "temperature-high" in sensor.locator("#episodes").inner_text()
    shoot(sensor, "sensor-alert")
    assert fleet.errors == [] and alerts.errors == [] and sensor.errors == []
    for page in (fleet, alerts, sensor):
        page.close()


def latest_windows(csv_text: str) -> pd.DataFrame:
    """The export's windows, the latest revision of each (an export before revisions has none)."""
    frame = pd.read_csv(io.StringIO(csv_text))
    frame["revision"] = frame["revision"].fillna(0) if "revision" in frame else 0
    frame["order"] = range(len(frame))
    return frame.sort_values(["revision", "order"]).drop_duplicates(["sensor", "window_start"], keep="last")


def exported_windows(web, sensor: str, at_least: int, timeout_s: float = 30.0) -> pd.DataFrame:
    """The sensor's windows as the export gives them, once the worker has closed `at_least` of them
    (a test run first on a busy machine may come before the pipeline's first few 2 s windows)."""
    deadline = time.monotonic() + timeout_s
    while True:
        exported = run_cli("analytics", "export", "--kind", "aggregates", "--sensor", sensor, "--since=-15m",
                           "--out", "-", "--redis-url", web.redis_url, *PIPELINE_FLAGS)
        assert exported.returncode == 0, exported.stderr
        windows = latest_windows(exported.stdout)
        if len(windows) >= at_least:
            return windows
        assert time.monotonic() < deadline, f"the worker closed {len(windows)} 2 s windows in {timeout_s:.0f} s"
        time.sleep(1.0)


def test_the_sensor_chart_holds_the_window_means_the_export_gives(web, browser):
    sensor = "web-0004"
    windows = exported_windows(web, sensor, at_least=3)
    page = open_page(browser, f"{web.url}/sensors/{sensor}?range=15m")
    for metric in ("temperature_c", "humidity_pct"):
        # (x in ms, window mean) of each point the chart's 'window mean' series draws
        points = page.evaluate(f"""(() => {{
            const chart = sensorView.charts.{metric};
            const series = chart.series.findIndex((s) => s.label === 'window mean');
            return chart.data[0].map((x, i) => [Math.round(x * 1000), chart.data[series][i]])
                                .filter(([, y]) => y !== null && y !== undefined);
        }})()""")
        drawn = dict(points)
        for start, mean in zip(windows["window_start"], windows[f"{metric}_mean"]):
            assert drawn.get(int(start)) == pytest.approx(float(mean), abs=1e-9), (metric, start)
    assert page.locator("#thresholds tr").count() == 2
    assert "/export.csv?" in page.locator("#csv").get_attribute("href")
    shoot(page, "sensor")
    assert page.errors == []
    page.close()


def test_a_split_topic_sensor_is_drawn_through_the_readings_of_each_metric(web, browser):
    """Readings of one metric each, alternating (a Shelly gen1 publishes temperature and humidity
    on separate topics): each chart's line goes through the readings that carry its metric, the
    others are no points, and nothing fails."""
    sensor = "split-1"
    first = now_ms() // 1000 * 1000 - 20_000
    for i in range(20):
        web.write(sensor, None if i % 2 else 20.0 + i % 3, 50.0 + i % 4 if i % 2 else None, ts_ms=first + i * 1000)
    wait_for(lambda: fetch(f"{web.url}/api/sensors/{sensor}?range=15m")[0] == 200, 20, "the worker knows the sensor")
    page = open_page(browser, f"{web.url}/sensors/{sensor}?range=15m")
    for metric, wanted in (("temperature_c", [20.0 + i % 3 for i in range(0, 20, 2)]),
                           ("humidity_pct", [50.0 + i % 4 for i in range(1, 20, 2)])):
        # the series' values, and its explicit nulls: each a break in the line (undefined is spanned)
        drawn, breaks = page.evaluate(f"""(() => {{
            const chart = sensorView.charts.{metric};
            const values = chart.data[chart.series.findIndex((s) => s.label === 'reading')];
            return [values.filter((y) => y !== null && y !== undefined), values.filter((y) => y === null).length];
        }})()""")
        assert (drawn, breaks) == (wanted, 0), metric
    assert page.errors == []
    page.close()


def test_a_late_reading_revises_the_window_the_sensor_page_draws(web, browser):
    """A reading for a window already emitted makes the worker emit that window again with the next
    revision; the open page replaces the window it drew by the new revision's mean."""
    sensor = "web-0005"
    page = open_page(browser, f"{web.url}/sensors/{sensor}?range=15m")
    page.wait_for_function("() => document.body.dataset.live === 'open'", timeout=10_000)
    windows = page.evaluate("() => sensorView.data.windows")
    position = len(windows["window_start"]) - 3
    start, count = windows["window_start"][position], windows["count"][position]
    mean = windows["temperature_c_mean"][position]
    web.write(sensor, 40.0, ts_ms=start + 1)
    expected = (mean * count + 40.0) / (count + 1)
    page.wait_for_function(f"""() => {{
        const w = sensorView.data.windows, i = w.window_start.indexOf({start});
        return i >= 0 && w.revision[i] === 1 && Math.abs(w.temperature_c_mean[i] - {expected}) < 1e-6;
    }}""", timeout=10_000)
    page.wait_for_timeout(700)  # the chart redraws at most every 500 ms
    drawn = page.evaluate(f"""() => {{
        const chart = sensorView.charts.temperature_c, i = chart.data[0].indexOf({start} / 1000);
        return chart.data[2][i];
    }}""")
    assert drawn == pytest.approx(expected, abs=1e-9)
    assert page.errors == []
    page.close()


def test_a_server_restart_shows_the_lost_connection_then_live_data_again(web, browser):
    page = open_page(browser, web.url + "/")
    page.wait_for_function("() => document.body.dataset.live === 'open'", timeout=10_000)
    web.stop_server()
    notice = page.locator("#connection")
    page.wait_for_function("() => document.body.dataset.live === 'lost'", timeout=10_000)
    assert notice.is_visible() and "Lost the connection" in notice.inner_text()
    shoot(page, "fleet-lost-connection")
    web.start_server()
    page.wait_for_function("() => document.body.dataset.live === 'open'", timeout=20_000)
    assert "again" in notice.inner_text()
    events = int(page.evaluate("document.body.dataset.events"))
    page.wait_for_function(f"() => Number(document.body.dataset.events) > {events} + 2", timeout=10_000)
    before = page.evaluate("fleet.ts[fleet.index.get('web-0001')]")
    page.wait_for_function(f"() => fleet.ts[fleet.index.get('web-0001')] > {before}", timeout=5_000)
    assert page.errors == []
    page.close()


def test_redis_going_away_is_said_on_the_page_which_recovers_when_it_returns(web, browser):
    page = open_page(browser, web.url + "/alerts")
    page.wait_for_function("() => document.body.dataset.live === 'open'", timeout=10_000)
    web.redis_server.stop()
    notice = page.locator("#connection")
    page.wait_for_function("() => document.getElementById('connection').textContent.includes('Redis unreachable')",
                           timeout=20_000)
    shoot(page, "alerts-redis-away")
    web.redis_server.start()  # the same port and data (AOF)
    page.wait_for_function("() => document.body.dataset.live === 'open'", timeout=30_000)
    assert "again" in notice.inner_text()
    assert page.errors == []
    page.close()
