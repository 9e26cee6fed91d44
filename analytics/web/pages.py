"""The pages' HTML: a shell each, filled in the browser from the JSON API and the event stream.
No inline script or style (the Content-Security-Policy allows only files of this origin); what a
script needs to know comes in data- attributes of <body>."""

from __future__ import annotations

from html import escape

NAV = ('<nav><a href="/" class="brand">telemetry</a><a href="/">Fleet</a><a href="/alerts">Alerts</a>'
       '<a href="/api/status">Status (JSON)</a><form id="goto" class="goto"><input name="sensor" '
       'placeholder="go to sensor…" aria-label="sensor name"></form></nav>')
NOTICE = '<div id="connection" class="notice" role="status" hidden></div>'


def _page(title: str, body: str, scripts: tuple[str, ...] = (), data: dict[str, str] | None = None,
          refresh_s: int | None = None) -> str:
    attributes = "".join(f' data-{name}="{escape(value)}"' for name, value in (data or {}).items())
    tags = "".join(f'<script src="/static/{name}"></script>' for name in scripts)
    refresh = f'<meta http-equiv="refresh" content="{refresh_s}">' if refresh_s else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">{refresh}'
            f'<title>{escape(title)}</title><link rel="stylesheet" href="/static/vendor/uPlot.min.css">'
            f'<link rel="stylesheet" href="/static/style.css"></head>'
            f'<body{attributes}>{NAV}{NOTICE}<main>{body}</main>{tags}</body></html>')


def fleet_page() -> str:
    body = """
<h1>Fleet</h1>
<section class="counters" id="counters"></section>
<section class="grid-panel">
  <div class="legend"><span class="swatch ok"></span>ok <span class="swatch silent"></span>silent
    <span class="swatch warning"></span>warning firing <span class="swatch critical"></span>critical firing
    <span id="grid-caption"></span></div>
  <canvas id="grid" aria-label="one cell per sensor"></canvas>
  <div id="tooltip" class="tooltip" hidden></div>
</section>
<section class="columns">
  <div><h2>Most alert episodes</h2><table id="top-alerts"></table></div>
  <div><h2>Stalest</h2><table id="top-stale"></table></div>
  <div><h2>Farthest from the fleet</h2><table id="top-deviation"></table></div>
</section>
<section><h2>Partitions</h2><table id="partitions"><thead><tr><th class="num">partition</th><th>owner</th>
  <th class="num">epoch</th><th class="num">length</th><th class="num">lag</th><th class="num">lag s</th>
  <th class="num">pending</th></tr></thead><tbody></tbody></table></section>
<section><h2>Dead letters and losses</h2><dl id="losses" class="figures"></dl><ul id="warnings"></ul></section>
"""
    return _page("Fleet · telemetry", body, ("live.js", "fleet.js"))


def sensor_page(sensor: str) -> str:
    name = escape(sensor)
    body = f"""
<h1>Sensor <span class="sensor-name">{name}</span></h1>
<form id="range" class="range">
  <span class="presets"><button type="button" data-range="15m">15 min</button><button type="button" data-range="1h">1 h</button>
  <button type="button" data-range="6h">6 h</button><button type="button" data-range="24h">24 h</button></span>
  <label>since <input name="since" placeholder="-2h or 2026-01-01T00:00"></label>
  <label>until <input name="until" placeholder="now"></label><button type="submit">Show</button>
  <a id="csv" class="download" href="#">Download CSV</a>
  <select id="csv-kind" aria-label="what to download"><option value="readings">readings</option>
    <option value="aggregates">windows</option><option value="alerts">alerts</option></select>
</form>
<p id="summary" class="summary"></p>
<section><h2>Temperature (°C)</h2><div id="chart-temperature" class="chart"></div></section>
<section><h2>Humidity (%RH)</h2><div id="chart-humidity" class="chart"></div></section>
<section class="columns">
  <div><h2>Rolling statistics</h2><table id="rolling"></table></div>
  <div><h2>Alert episodes</h2><table id="episodes"></table><p id="episodes-more" hidden><a href="/alerts"></a></p></div>
  <div><h2>Rules with thresholds</h2><table id="thresholds"></table></div>
</section>
"""
    return _page(f"{sensor} · telemetry", body, ("vendor/uPlot.iife.min.js", "live.js", "sensor.js"),
                 {"sensor": sensor})


def alerts_page() -> str:
    body = """
<h1>Alerts</h1>
<form id="filters" class="filters">
  <label>state <select name="state"><option value="">any</option><option>firing</option><option>resolved</option><option>flapping</option><option>flapping_stopped</option></select></label>
  <label>severity <select name="severity"><option value="">any</option><option>critical</option><option>warning</option></select></label>
  <label>rule <select name="rule"><option value="">any</option></select></label>
  <label>sensor <input name="sensor" placeholder="greenhouse-*"></label>
</form>
<section><h2>Firing now <span id="firing-count"></span></h2>
<table id="firing"><thead><tr><th>severity</th><th>rule</th><th>sensor</th><th>since</th><th>for</th><th class="num">value</th>
  <th class="num">threshold</th></tr></thead><tbody></tbody></table></section>
<section><h2>Recent events</h2>
<table id="events"><thead><tr><th>time</th><th>state</th><th>severity</th><th>rule</th><th>sensor</th><th class="num">value</th>
  <th class="num">threshold</th></tr></thead><tbody></tbody></table></section>
"""
    return _page("Alerts · telemetry", body, ("live.js", "alerts.js"))


def error_page(status: int, title: str, message: str, *, retry_s: int | None = None) -> str:
    """Errors are pages: what went wrong in a sentence; a Redis outage reloads itself until it heals."""
    again = f'<p class="hint">This page tries again every {retry_s} s.</p>' if retry_s else ""
    body = (f'<h1>{escape(title)}</h1><p class="error" data-status="{status}">{escape(message)}</p>{again}'
            '<p><a href="/">Back to the fleet</a></p>')
    return _page(f"{title} · telemetry", body, refresh_s=retry_s)
