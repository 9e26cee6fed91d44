"use strict";
// One sensor: readings, window means with their min-max band, rule thresholds and alert episodes
// on the time axis, for a range; then live. Each window is kept by its start with its latest
// revision, as the API gives it, so a revised window replaces the one drawn.
const sensorName = document.body.dataset.sensor;
const GAP_FACTOR = 3;
const EPISODE_ROWS = 12;  // the newest; the chart marks them all  // readings further apart than this many typical intervals are drawn with a gap

const view = {
  data: null, charts: {}, episodes: new Map(), range: null, redraw: null,

  windowsByStart() {
    const w = this.data.windows;
    const byStart = new Map();
    w.window_start.forEach((start, i) => byStart.set(start, Object.fromEntries(Object.keys(w).map((k) => [k, w[k][i]]))));
    return byStart;
  },
};
window.sensorView = view;

function rangeQuery() {
  const params = new URLSearchParams(location.search);
  const query = new URLSearchParams();
  for (const name of ["range", "since", "until"]) if (params.get(name)) query.set(name, params.get(name));
  return query;
}

// A metric's readings, with an explicit null wherever readings stopped for a while (a gap, not a line).
// Only the readings that carry the metric (null in the others: a probe without humidity, a
// split-topic device's other topic), so the gaps are judged on the metric's own readings.
function readingTable(metric) {
  const r = view.data.readings;
  const ts = [], values = [];
  for (let i = 0; i < r.ts.length; i++) if (r[metric][i] !== null) { ts.push(r.ts[i]); values.push(r[metric][i]); }
  const xs = [], ys = [];
  const steps = [];
  for (let i = 1; i < ts.length; i++) steps.push(ts[i] - ts[i - 1]);
  steps.sort((a, b) => a - b);
  const typical = Math.max(steps.length ? steps[Math.floor(steps.length / 2)] : 1000, 1);
  for (let i = 0; i < ts.length; i++) {
    if (i > 0 && ts[i] - ts[i - 1] > GAP_FACTOR * typical) { xs.push((ts[i - 1] + 1) / 1000); ys.push(null); }
    xs.push(ts[i] / 1000); ys.push(values[i]);
  }
  return [xs, ys];
}

// Each window as a level from its start to its end: mean, min and max.
function windowTable(metric) {
  const w = view.data.windows;
  const xs = [], mean = [], min = [], max = [];
  for (let i = 0; i < w.window_start.length; i++) {
    const start = w.window_start[i], end = w.window_end[i];
    for (const x of [start, end - 1]) {
      xs.push(x / 1000); mean.push(w[`${metric}_mean`][i]); min.push(w[`${metric}_min`][i]); max.push(w[`${metric}_max`][i]);
    }
    if (i + 1 < w.window_start.length && w.window_start[i + 1] !== end) {
      xs.push(end / 1000); mean.push(null); min.push(null); max.push(null);
    }
  }
  return [xs, mean, min, max];
}

// One x axis for both: a gap (an explicit null) spreads over the other table's points next to it
// (NULL_EXPAND), so a dropout is a gap in the line, not a line across it.
const NULL_EXPAND = 2;
function chartData(metric) {
  return uPlot.join([readingTable(metric), windowTable(metric)],
                    [[null, NULL_EXPAND], [null, NULL_EXPAND, NULL_EXPAND, NULL_EXPAND]]);
}

function decorations(metric) {
  // Alert episodes as shaded spans under the lines, thresholds as dashed lines with their rule.
  return {
    drawClear: [(u) => {
      const context = u.ctx;
      const top = u.bbox.top, height = u.bbox.height;
      context.save();
      for (const episode of view.episodes.values()) {
        const end = episode.end === null ? view.range.until : episode.end;
        const left = Math.max(u.bbox.left, u.valToPos(episode.start / 1000, "x", true));
        const right = Math.min(u.bbox.left + u.bbox.width, u.valToPos(end / 1000, "x", true));
        if (right <= left) continue;
        context.fillStyle = episode.severity === "critical" ? "rgba(217,48,37,0.15)" : "rgba(240,162,2,0.18)";
        context.fillRect(left, top, Math.max(2, right - left), height);
      }
      context.restore();
    }],
    draw: [(u) => {
      const context = u.ctx;
      context.save();
      context.setLineDash([6, 4]);
      context.font = `${11 * devicePixelRatio}px system-ui`;
      context.textAlign = "left";
      context.textBaseline = "bottom";
      for (const rule of view.data.thresholds) {
        if (rule.metric !== metric) continue;
        for (const limit of [rule.above, rule.below]) {
          if (limit === null) continue;
          const y = u.valToPos(limit, "y", true);
          if (y < u.bbox.top || y > u.bbox.top + u.bbox.height) continue;
          context.strokeStyle = rule.severity === "critical" ? "#d93025" : "#f0a202";
          context.beginPath(); context.moveTo(u.bbox.left, y); context.lineTo(u.bbox.left + u.bbox.width, y); context.stroke();
          context.fillStyle = context.strokeStyle;
          const source = rule.source === "reading" ? "" : ` (rolling ${rule.source})`;
          context.fillText(`${rule.rule}${source} ${rule.above !== null ? ">" : "<"} ${limit}`, u.bbox.left + 4, y - 4);
        }
      }
      context.restore();
    }],
  };
}

// The y range covers the data and any threshold close to it, so a limit is seen when it matters.
function yRange(metric) {
  return (u, low, high) => {
    let lo = low, hi = high;
    if (lo === null || hi === null) { lo = 0; hi = 1; }
    const span = Math.max(hi - lo, 1);
    for (const rule of view.data.thresholds) {
      if (rule.metric !== metric) continue;
      for (const limit of [rule.above, rule.below]) {
        if (limit !== null && limit > lo - span && limit < hi + span) { lo = Math.min(lo, limit); hi = Math.max(hi, limit); }
      }
    }
    const pad = (hi - lo) * 0.08 || 1;
    return [lo - pad, hi + pad];
  };
}

function makeChart(metric, unit, colour, element) {
  const options = {
    width: element.clientWidth || 900, height: 300,
    tzDate: (seconds) => uPlot.tzDate(new Date(seconds * 1000), "Etc/UTC"),  // UTC, as every time on the page
    scales: {x: {time: true, range: () => [view.range.since / 1000, view.range.until / 1000]}, y: {range: yRange(metric)}},
    series: [
      {label: "time (UTC)", value: (u, v) => v === null ? "-" : Live.time(v * 1000)},
      {label: "reading", stroke: colour, width: 1, points: {show: false}, value: (u, v) => v === null ? "-" : `${v.toFixed(2)} ${unit}`},
      {label: "window mean", stroke: "#1f2328", width: 2, points: {show: false}, spanGaps: false,
       value: (u, v) => v === null ? "-" : `${v.toFixed(3)} ${unit}`},
      {label: "window min", stroke: "rgba(31,35,40,0.25)", width: 1, points: {show: false}},
      {label: "window max", stroke: "rgba(31,35,40,0.25)", width: 1, points: {show: false}},
    ],
    bands: [{series: [4, 3], fill: "rgba(31,35,40,0.10)"}],
    axes: [{}, {label: unit, size: 60}],
    legend: {live: true},
    hooks: decorations(metric),
  };
  return new uPlot(options, chartData(metric), element);
}

function renderTables() {
  const d = view.data;
  const r = d.rolling;
  const stat = (m, k, digits) => r ? Live.number(r[m][k], digits) : "-";
  Live.fill(document.getElementById("rolling"), r ? [
    Live.row(["", "°C", "%RH"]),
    ...[["count", 0], ["mean", 2], ["std", 3], ["min", 2], ["max", 2]].map(([k, digits]) =>
      Live.row([k, [stat("temperature_c", k, digits), "num"], [stat("humidity_pct", k, digits), "num"]])),
    Live.row([`over ${r.window_s} s, as of`, Live.time(r.as_of_ts), ""]),
  ] : [Live.row(["no rolling statistics yet (no commit has applied a reading of this sensor)"])]);
  const episodes = [...view.episodes.values()].sort((a, b) => b.start - a.start);
  const shown = episodes.slice(0, EPISODE_ROWS).map((e) => Live.row([
    [e.severity, `sev-${e.severity}`], e.rule, Live.time(e.start),
    e.end === null ? ["firing", "sev-critical"] : Live.duration((e.end - e.start) / 1000),
    `${Live.number(e.value, 2)} ${e.unit}`]));
  Live.fill(document.getElementById("episodes"), shown.length ? shown : [Live.row(["none in this range"])]);
  const more = document.getElementById("episodes-more");
  more.hidden = episodes.length <= EPISODE_ROWS;
  more.firstElementChild.textContent = `… and ${episodes.length - EPISODE_ROWS} earlier: every event on the alerts page`;
  more.firstElementChild.href = `/alerts?sensor=${encodeURIComponent(sensorName)}`;
  Live.fill(document.getElementById("thresholds"), d.thresholds.map((t) => Live.row([
    t.rule, `${t.source === "reading" ? "reading" : "rolling " + t.source} ` +
    (t.above !== null ? `> ${t.above} ${t.unit}` : `< ${t.below} ${t.unit}`), [t.severity, `sev-${t.severity}`]])));
  document.getElementById("summary").textContent =
    `${d.readings.ts.length.toLocaleString()} readings and ${d.windows.window_start.length.toLocaleString()} windows ` +
    `from ${Live.time(view.range.since)} to ${Live.time(view.range.until)} · partition ${d.partition}`;
}

function drawAll() {
  for (const [metric, chart] of Object.entries(view.charts)) chart.setData(chartData(metric), true);
  renderTables();
}

function scheduleRedraw() {
  if (view.redraw === null) view.redraw = setTimeout(() => { view.redraw = null; drawAll(); }, 500);
}

// Live: readings appended in time order, windows kept by start (a higher revision replaces), alerts
// by id; a preset range slides with the clock.
function applyUpdate(update) {
  const r = view.data.readings;
  for (const [ts, temperature, humidity] of update.readings) {
    if (ts < view.range.since) continue;
    let i = r.ts.length;
    while (i > 0 && r.ts[i - 1] > ts) i--;
    if (i > 0 && r.ts[i - 1] === ts) {  // a resumed stream may send an entry twice; split topics share a time
      r.temperature_c[i - 1] ??= temperature; r.humidity_pct[i - 1] ??= humidity;
      continue;
    }
    r.ts.splice(i, 0, ts); r.temperature_c.splice(i, 0, temperature); r.humidity_pct.splice(i, 0, humidity);
  }
  if (update.windows.length) {
    const byStart = view.windowsByStart();
    for (const row of update.windows) {
      const current = byStart.get(row.window_start);
      if (row.window_start >= view.range.since && (!current || row.revision >= current.revision)) byStart.set(row.window_start, row);
    }
    const rows = [...byStart.values()].sort((a, b) => a.window_start - b.window_start);
    for (const key of Object.keys(view.data.windows)) view.data.windows[key] = rows.map((row) => row[key]);
  }
  for (const alert of update.alerts) {
    if (alert.state === "firing" && !view.episodes.has(alert.alert_id)) {
      view.episodes.set(alert.alert_id, {alert_id: alert.alert_id, rule: alert.rule, severity: alert.severity,
        start: alert.ts, end: null, value: alert.value, unit: alert.unit});
    } else if (alert.state === "resolved" && view.episodes.has(alert.alert_id)) {
      view.episodes.get(alert.alert_id).end = alert.ts;
    }
  }
  if (view.live) {
    const width = view.range.until - view.range.since;
    view.range.until = Date.now();
    view.range.since = view.range.until - width;
  }
  scheduleRedraw();
}

function setUpForm(query) {
  const form = document.getElementById("range");
  for (const button of form.querySelectorAll("button[data-range]")) {
    if (button.dataset.range === (query.get("range") || (query.get("since") ? "" : "1h"))) button.classList.add("active");
    button.addEventListener("click", () => { location.search = "?range=" + button.dataset.range; });
  }
  form.since.value = query.get("since") || "";
  form.until.value = query.get("until") || "";
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    if (form.since.value) next.set("since", form.since.value);
    if (form.until.value) next.set("until", form.until.value);
    location.search = "?" + next.toString();
  });
  const link = document.getElementById("csv");
  const kind = document.getElementById("csv-kind");
  const update = () => {
    const csv = new URLSearchParams({kind: kind.value, since: String(view.range.since), until: String(view.range.until)});
    link.href = `/api/sensors/${encodeURIComponent(sensorName)}/export.csv?${csv}`;
  };
  kind.addEventListener("change", update);
  link.addEventListener("mouseenter", update);
  link.addEventListener("focus", update);
  update();
}

async function start() {
  const query = rangeQuery();
  const base = `/api/sensors/${encodeURIComponent(sensorName)}`;
  view.data = await Live.getJSON(`${base}?${query}`);
  view.range = {since: view.data.since_ms, until: view.data.until_ms};
  view.live = view.data.range !== null || !query.get("until");
  for (const episode of view.data.episodes) view.episodes.set(episode.alert_id, episode);
  setUpForm(query);
  view.charts.temperature_c = makeChart("temperature_c", "°C", "#d93025", document.getElementById("chart-temperature"));
  view.charts.humidity_pct = makeChart("humidity_pct", "%RH", "#0969da", document.getElementById("chart-humidity"));
  renderTables();
  document.body.dataset.ready = "true";
  window.addEventListener("resize", () => {
    for (const [metric, chart] of Object.entries(view.charts)) {
      const element = document.getElementById(metric === "temperature_c" ? "chart-temperature" : "chart-humidity");
      chart.setSize({width: element.clientWidth, height: 300});
    }
  });
  if (view.live) {
    Live.follow(`/api/events/sensors/${encodeURIComponent(sensorName)}`, {
      update: applyUpdate,
      status: (status) => { view.data.rolling = status.rolling; renderTables(); },
    }, view.data.last_id);
  }
}
start().catch((error) => Live.show(`Could not load ${sensorName}: ${error.message}`, "lost"));
