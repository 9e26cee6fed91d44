"""The web page's JSON API, event streams and error pages, without a browser, against a live
pipeline (producer, worker, server: real processes on a private redis-server)."""

from __future__ import annotations

import csv
import io
import json
import socket
import time

import pytest

from analytics.web.live import cut_batch, resume_position
from analytics.web.sensor import BadRequest, TimeRange, latest_revisions, sensor_detail, windows_in
from analytics.web.tracker import FleetState, Latest
from telemetry.embedded import PrivateRedisServer, free_port
from telemetry.keys import Keys
from telemetry.partitions import open_layout
from telemetry.schema import FieldMap, Reading
from tests.aggregation_helpers import START, add_readings, drain, layout_of, make_worker
from tests.conftest import run_cli
from tests.crash_harness import spawn, wait_for
from tests.web_harness import HOT, PIPELINE_FLAGS, SENSORS, fetch, get_json, web_pipeline_in


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    with web_pipeline_in(tmp_path_factory.mktemp("web-api")) as pipeline:
        yield pipeline


def test_fleet_snapshot_has_every_sensor_partition_and_the_csp(web):
    status, headers, body = fetch(f"{web.url}/api/fleet")
    snapshot = json.loads(body)
    assert status == 200
    assert headers["content-security-policy"].startswith("default-src 'self'")
    names = snapshot["sensors"]["names"]
    assert names == sorted([f"web-{n:04d}" for n in range(1, SENSORS + 1)] + [HOT])
    assert len(snapshot["sensors"]["states"]) == len(names) == snapshot["counters"]["sensors"]
    assert [row["index"] for row in snapshot["partitions"]] == [0, 1, 2, 3]
    assert all(row["owner"] != "-" for row in snapshot["partitions"])
    assert set(snapshot["losses"]) == {"missing_seq", "lost_to_trim", "late", "too_late", "revisions", "dead_lettered"}
    assert snapshot["counters"]["reporting"] >= SENSORS
    assert fetch(f"{web.url}/api/fleet", headers={"Host": "rebound.example"})[0] == 400  # bound to loopback


def test_sensor_range_readings_windows_and_errors(web):
    wait_for(lambda: len(get_json(f"{web.url}/api/sensors/web-0001?range=15m")["windows"]["window_start"]) >= 2, 30,
             "two closed windows")
    detail = get_json(f"{web.url}/api/sensors/web-0001?range=15m")
    readings, windows = detail["readings"], detail["windows"]
    assert readings["ts"] == sorted(readings["ts"]) and readings["ts"]
    assert all(detail["since_ms"] <= ts < detail["until_ms"] for ts in readings["ts"])
    assert windows["window_start"] == sorted(set(windows["window_start"]))
    assert [t["rule"] for t in detail["thresholds"]] == ["temperature-high", "humidity-low"]
    assert detail["rolling"]["temperature_c"]["count"] > 0
    bad = fetch(f"{web.url}/api/sensors/web-0001?since=yesterday")
    assert bad[0] == 400 and "since" in json.loads(bad[2])["error"]
    assert fetch(f"{web.url}/api/sensors/web-0001?range=2d")[0] == 400
    assert fetch(f"{web.url}/api/sensors/web-0001?since=-1h&until=-2h")[0] == 400
    missing = fetch(f"{web.url}/api/sensors/nobody")
    assert missing[0] == 404 and "nobody" in json.loads(missing[2])["error"]
    page = fetch(f"{web.url}/sensors/nobody")
    assert page[0] == 404 and b"no sensor named" in page[2] and b"<html" in page[2]
    assert b"Traceback" not in page[2]


def test_csv_download_goes_through_the_export(web):
    status, headers, body = fetch(f"{web.url}/api/sensors/web-0002/export.csv?kind=aggregates&range=15m")
    assert status == 200 and "web-0002-aggregates.csv" in headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert rows and {row["sensor"] for row in rows} == {"web-0002"}
    readings = list(csv.DictReader(io.StringIO(fetch(f"{web.url}/api/sensors/web-0002/export.csv?range=15m")[2].decode())))
    assert readings and {row["sensor"] for row in readings} == {"web-0002"}
    assert fetch(f"{web.url}/api/sensors/web-0002/export.csv?kind=everything")[0] == 400


def read_events(url: str, seconds: float, last_event_id: str | None = None) -> list[dict]:
    """Raw SSE over a socket for `seconds`: each event's id, name and data."""
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    path = "/" + url.removeprefix("http://").split("/", 1)[1]
    with socket.create_connection((host, int(port)), timeout=seconds + 5) as connection:
        resume = f"Last-Event-ID: {last_event_id}\r\n" if last_event_id else ""
        connection.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n{resume}\r\n".encode())
        connection.settimeout(0.5)
        received, deadline = b"", time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                received += connection.recv(65536)
            except TimeoutError:
                continue
    events = []
    for block in received.decode().split("\r\n\r\n", 1)[1].replace("\r\n", "\n").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "data" in fields:
            events.append(fields)
    return events


def test_event_stream_resumes_from_the_last_event_id(web):
    """Readings of one sensor before a disconnect and after a resume with Last-Event-ID: together
    every reading the stream holds in that span, none missing."""
    url = f"{web.url}/api/events/sensors/web-0003"
    first = [event for event in read_events(url, 3) if event.get("event") == "update"]
    assert first, "no update in 3 s"
    time.sleep(2)  # readings written while away
    second = [event for event in read_events(url, 3, first[-1]["id"]) if event.get("event") == "update"]
    seen = {ts for event in first + second for ts, *_ in json.loads(event["data"])["readings"]}
    layout = open_layout(web.db, Keys("webtest"), create=False)
    stream = layout.partition_for("web-0003").readings
    held = [int(fields["ts"]) for _, fields in web.db.xrange(stream, min=first[0]["id"], max=second[-1]["id"])
            if fields["sensor"] == "web-0003"]
    assert len(held) >= 10 and set(held) <= seen


def test_a_resume_from_too_far_back_tells_the_page_to_start_afresh(web):
    """The fleet page resumes up to 30 s behind the newest reading; further back, the page is told
    to reload (a fresh snapshot) and the stream goes on from now, not from an hour of readings."""
    newest = web.db.xrevrange(web.layout.partitions[0].readings, count=1)[0][0]
    behind = f"{int(newest.split('-')[0]) - 120_000}-0"
    events = read_events(f"{web.url}/api/events/fleet", 2, behind)
    assert events[0]["event"] == "reset"
    updates = [event for event in events if event.get("event") == "update"]
    assert updates and all(int(event["id"].split("-")[0]) >= int(newest.split("-")[0]) for event in updates)
    recent = read_events(f"{web.url}/api/events/fleet", 2, newest)
    assert all(event.get("event") != "reset" for event in recent)


def test_alerts_api_filters(web):
    web.write(HOT, 90.0)
    wait_for(lambda: any(a["sensor"] == HOT for a in get_json(f"{web.url}/api/alerts")["firing"]), 10, "the hot alert")
    firing = get_json(f"{web.url}/api/alerts?severity=critical&sensor=web-h*")["firing"]
    assert [a["rule"] for a in firing] == ["temperature-high"] and firing[0]["duration_s"] >= 0
    assert get_json(f"{web.url}/api/alerts?severity=warning&sensor=web-h*")["firing"] == []
    assert get_json(f"{web.url}/api/alerts?state=resolved&sensor=web-hot")["firing"] == []
    assert fetch(f"{web.url}/api/alerts?state=maybe")[0] == 400
    web.write(HOT, 21.0)
    wait_for(lambda: not get_json(f"{web.url}/api/alerts?sensor=web-hot")["firing"], 10, "the resolution")
    events = get_json(f"{web.url}/api/alerts?sensor=web-hot")["recent"]
    assert [e["state"] for e in events[:2]] == ["resolved", "firing"]


def test_windows_keep_only_the_latest_revision(db):
    """Aggregate entries without a revision (written before revisions existed) count as 0; a later
    entry of the same window with a higher revision replaces it, a lower one does not."""
    keys = open_layout(db, Keys("revtest"), 1).groups("aggregators")[0]

    def window(start: int, mean: float, revision: int | None) -> dict:
        fields = {"sensor": "s1", "window_start": start, "window_end": start + 1000, "count": 1,
                  "temperature_c_mean": mean, "temperature_c_min": mean, "temperature_c_max": mean,
                  "temperature_c_std": "", "humidity_pct_mean": 50, "humidity_pct_min": 50, "humidity_pct_max": 50,
                  "humidity_pct_std": "", "first_ts": start, "last_ts": start, "closed_by": "watermark"}
        return fields if revision is None else {**fields, "revision": revision}

    for fields in (window(1000, 1.0, None), window(2000, 2.0, None), window(1000, 1.5, 1), window(2000, 9.0, 0),
                   window(3000, 3.0, 2), window(3000, 3.5, 1), window(1000, 1.7, 2)):
        db.xadd(keys.aggregates, fields)
    span = TimeRange(0, 10_000, None)
    windows = windows_in(db, keys, "s1", span)
    assert windows["window_start"] == [1000, 2000, 3000]
    assert windows["temperature_c_mean"] == [1.7, 9.0, 3.0]
    assert windows["revision"] == [2, 0, 2]
    assert len(latest_revisions(iter([("1-0", {"sensor": "a", "window_start": "5"}),
                                      ("2-0", {"sensor": "b", "window_start": "5"})]))) == 2


def test_ranges_parse_as_the_command_line_does():
    now = 1_000_000_000_000
    assert TimeRange.parse({"range": "15m"}, now) == TimeRange(now - 900_000, now, "15m")
    assert TimeRange.parse({}, now).preset == "1h"
    assert TimeRange.parse({"since": "-2h", "until": str(now - 60_000)}, now) == TimeRange(now - 7_200_000, now - 60_000,
                                                                                          None)
    for bad in ({"range": "3h"}, {"until": "-1h"}, {"since": "-1h", "until": "-2h"}, {"since": "-8d"},
                {"since": "-1h", "range": "1h"}):
        with pytest.raises(BadRequest):
            TimeRange.parse(bad, now)


def test_a_batch_is_cut_where_a_full_stream_stops():
    """A stream that returned a full COUNT may hold more entries below another stream's last id:
    the batch stops at the smallest last id of the full streams, so one id is enough to resume."""
    replies = [("a", [("5-0", {}), ("9-0", {})]), ("b", [("6-0", {}), ("7-0", {}), ("12-0", {})])]
    batch, positions = cut_batch(replies, 2)
    assert [entry_id for _, entry_id, _ in batch] == ["5-0", "6-0", "7-0", "9-0"]
    assert positions == {"a": "9-0", "b": "7-0"}
    assert resume_position("1700-3") == "1699-18446744073709551615" and resume_position("0-5") == "0-0"


def test_redis_unreachable_is_a_page_that_recovers(tmp_path):
    """A server started while Redis is away answers 503 pages that say so, and the fleet once
    Redis answers."""
    (tmp_path / "redis").mkdir()
    server = PrivateRedisServer(tmp_path / "redis")
    port = free_port()
    web = spawn("analytics", "serve", "--port", str(port), "--redis-url", server.url, *PIPELINE_FLAGS,
                stderr=(tmp_path / "server.log").open("w"))
    try:
        def page() -> tuple[int, dict, bytes] | None:
            try:
                return fetch(f"http://127.0.0.1:{port}/", timeout=3)
            except OSError:
                return None

        wait_for(lambda: page() is not None and b"Starting" not in page()[2], 30, "the web server")
        status, _, body = page()
        assert status == 503 and b"Redis unreachable" in body and b'http-equiv="refresh"' in body
        api = fetch(f"http://127.0.0.1:{port}/api/fleet")
        assert api[0] == 503 and "Redis unreachable" in json.loads(api[2])["error"]
        server.start()
        wait_for(lambda: page()[0] == 200, 30, "the fleet page after Redis came back")
        assert b"<canvas" in page()[2]
    finally:
        web.terminate()
        web.wait(timeout=20)
        server.stop()


def test_serve_flags_are_checked(tmp_path):
    result = run_cli("analytics", "serve", "--port", "70000")
    assert result.returncode == 2 and "--port" in result.stderr and "Traceback" not in result.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("analytics", "serve", "--port", str(port), "--redis-url", "redis://127.0.0.1:1/0")
    assert result.returncode == 2 and "in use" in result.stderr and len(result.stderr.strip().splitlines()) <= 2



def test_every_page_answers_on_a_redis_cluster(cluster_url, tmp_path):
    """On a cluster (partitions on three masters, each stream polled, no cross-slot command) the
    snapshot, a sensor's range, the alerts and a live event stream answer as on one server."""
    produced = run_cli("producers", "--fleet", "c-", "12", "--count", "60", "--rate", "1", "--spike-rate", "600",
                       "--start=-20m", "--redis-url", cluster_url)
    assert produced.returncode == 0, produced.stderr
    aggregated = run_cli("consumers", "aggregate", "--drain", "--start", "all", "--window", "10s", "--redis-url",
                         cluster_url)
    assert aggregated.returncode == 0, aggregated.stderr
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    web = spawn("analytics", "serve", "--port", str(port), "--redis-url", cluster_url,
                stderr=(tmp_path / "server.log").open("w"))
    try:
        wait_for(lambda: _answers(f"{base}/api/fleet"), 30, "the web server")
        assert len(get_json(f"{base}/api/fleet")["sensors"]["names"]) == 12
        detail = get_json(f"{base}/api/sensors/c-0001?range=1h")
        assert len(detail["readings"]["ts"]) == 60 and detail["windows"]["window_start"]
        assert get_json(f"{base}/api/alerts")["recent"], "the spikes fired no alert"
        events = read_events(f"{base}/api/events/sensors/c-0001", 2, detail["last_id"])
        assert [event for event in events if event.get("event") == "status"]
    finally:
        web.terminate()
        web.wait(timeout=20)


def _answers(url: str) -> bool:
    try:
        return fetch(url, timeout=2)[0] == 200
    except OSError:
        return False


def test_one_metric_readings_are_null_points_and_the_latest_value_of_each_metric_is_kept(db):
    """A probe without humidity and a split-topic device: the sensor API has nulls where a reading
    lacks a metric (and NaN nowhere, which JSON has not), a window without a metric has null
    statistics, and the fleet's latest values keep each metric's newest."""
    layout = layout_of(db, 1, Keys("onemetric"))
    readings = [reading for i in range(40) for reading in (
        Reading("probe", START + i * 1000, 20.0 + i % 3, None, i),
        Reading("split", START + i * 1000 + 500, None if i % 2 else 21.0, 50.0 if i % 2 else None, i))]
    add_readings(db, layout, readings)
    drain(make_worker(db, layout, window_ms=10_000), START + 10**9)
    keys = layout.groups("aggregators")[0]
    span = TimeRange(START, START + 60_000, None)
    probe = json.loads(json.dumps(sensor_detail(db, keys, "probe", span, FieldMap(), ()), allow_nan=False))
    assert probe["readings"]["humidity_pct"] == [None] * 40 and None not in probe["readings"]["temperature_c"]
    windows = probe["windows"]
    assert windows["window_start"] and set(windows["humidity_pct_mean"]) == {None}
    assert None not in windows["temperature_c_mean"]
    assert probe["rolling"]["humidity_pct"]["count"] == 0 and probe["rolling"]["humidity_pct"]["mean"] is None
    split = sensor_detail(db, keys, "split", span, FieldMap(), ())
    assert split["readings"]["temperature_c"][:3] == [21.0, None, 21.0]
    assert split["readings"]["humidity_pct"][:3] == [None, 50.0, None]
    state = FleetState(layout)
    for index, reading in enumerate(readings):
        state.apply_reading(f"{START + index}-0", reading.encode(), FieldMap())
    assert state.latest["split"] == Latest(START + 39_500, 21.0, 50.0)
    assert state.latest["probe"] == Latest(START + 39_000, 20.0, None)
