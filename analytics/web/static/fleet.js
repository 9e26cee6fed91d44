"use strict";
// The fleet page: every sensor a cell of one canvas, coloured by alert state; counters, top
// sensors, partitions and losses. The snapshot draws the page once; the event stream then moves
// each sensor's latest value and the firing alerts, and only the cells that changed are redrawn.
const OK = 0, SILENT = 1, WARNING = 2, CRITICAL = 3;
const COLOURS = ["#2e9d57", "#9aa0a6", "#f0a202", "#d93025"];
const STATE_NAMES = ["ok", "silent", "warning firing", "critical firing"];

const fleet = {
  names: [], index: new Map(), ts: [], temperature: [], humidity: [], states: [],
  firing: new Map(),   // alert id -> {sensor, severity}
  staleMs: 30000, cell: 10, gap: 1, columns: 1, dirty: new Set(), frame: null,

  addSensor(name) {
    const position = this.names.length;
    this.names.push(name); this.index.set(name, position);
    this.ts.push(null); this.temperature.push(null); this.humidity.push(null); this.states.push(SILENT);
    return position;
  },

  stateOf(position, now) {
    let state = (this.ts[position] === null || now - this.ts[position] > this.staleMs) ? SILENT : OK;
    for (const alert of this.firing.values()) {
      if (alert.sensor === this.names[position]) state = Math.max(state, alert.severity === "critical" ? CRITICAL : WARNING);
    }
    return state;
  },

  // Firing alerts per sensor, so that a redraw of 10,000 cells does not scan the alerts each time.
  firingBySensor() {
    const levels = new Map();
    for (const alert of this.firing.values()) {
      const level = alert.severity === "critical" ? CRITICAL : WARNING;
      levels.set(alert.sensor, Math.max(levels.get(alert.sensor) || 0, level));
    }
    return levels;
  },

  restate(now) {
    const levels = this.firingBySensor();
    for (let i = 0; i < this.names.length; i++) {
      const base = (this.ts[i] === null || now - this.ts[i] > this.staleMs) ? SILENT : OK;
      const state = Math.max(base, levels.get(this.names[i]) || 0);
      if (state !== this.states[i]) { this.states[i] = state; this.dirty.add(i); }
    }
  },

  layout() {
    const canvas = document.getElementById("grid");
    const width = canvas.parentElement.clientWidth;
    const n = Math.max(1, this.names.length);
    const target = Math.sqrt((width * 560) / n);
    this.cell = Math.max(3, Math.min(28, Math.floor(target)));
    this.gap = this.cell >= 6 ? 1 : 0;
    this.columns = Math.max(1, Math.floor(width / this.cell));
    const rows = Math.ceil(n / this.columns);
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.floor(width * ratio);
    canvas.height = Math.floor(rows * this.cell * ratio);
    canvas.style.height = rows * this.cell + "px";
    canvas.dataset.cells = String(this.names.length);
    canvas.getContext("2d").setTransform(ratio, 0, 0, ratio, 0, 0);
    document.getElementById("grid-caption").textContent = ` · ${this.names.length.toLocaleString()} sensors`;
    this.drawAll();
  },

  cellAt(position) {
    return [(position % this.columns) * this.cell, Math.floor(position / this.columns) * this.cell];
  },

  drawCell(context, position) {
    const [x, y] = this.cellAt(position);
    context.fillStyle = COLOURS[this.states[position]];
    context.fillRect(x, y, this.cell - this.gap, this.cell - this.gap);
  },

  drawAll() {
    const context = document.getElementById("grid").getContext("2d");
    context.clearRect(0, 0, context.canvas.width, context.canvas.height);
    for (let i = 0; i < this.names.length; i++) this.drawCell(context, i);
    this.dirty.clear();
  },

  schedule() {
    if (this.frame !== null) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = null;
      const context = document.getElementById("grid").getContext("2d");
      for (const position of this.dirty) this.drawCell(context, position);
      this.dirty.clear();
    });
  },

  // What a person sees in a cell: the canvas pixel at its centre (the browser tests read it).
  colourOf(name) {
    const position = this.index.get(name);
    if (position === undefined) return null;
    const [x, y] = this.cellAt(position);
    const ratio = window.devicePixelRatio || 1;
    const half = (this.cell - this.gap) / 2;
    const pixel = document.getElementById("grid").getContext("2d")
      .getImageData(Math.floor((x + half) * ratio), Math.floor((y + half) * ratio), 1, 1).data;
    return "#" + [pixel[0], pixel[1], pixel[2]].map((v) => v.toString(16).padStart(2, "0")).join("");
  },

  applyUpdate(data) {
    let added = false;
    for (const [name, ts, temperature, humidity] of data.readings) {
      let position = this.index.get(name);
      if (position === undefined) { position = this.addSensor(name); added = true; }
      if (this.ts[position] === null || ts >= this.ts[position]) {  // a metric a reading lacks keeps its last value
        this.ts[position] = ts;
        if (temperature !== null) this.temperature[position] = temperature;
        if (humidity !== null) this.humidity[position] = humidity;
      }
    }
    for (const alert of data.alerts) {
      if (alert.state === "firing") this.firing.set(alert.alert_id, alert);
      else this.firing.delete(alert.alert_id);
      if (!this.index.has(alert.sensor)) { this.addSensor(alert.sensor); added = true; }
    }
    this.restate(Date.now());
    if (added) this.layout(); else this.schedule();
    renderFiringCounters();
    document.getElementById("updated").textContent = Live.time(Date.now());
  },
};
window.fleet = fleet;

function counter(label, value, alarm) {
  const box = document.createElement("div");
  box.className = "counter" + (alarm ? " alarm" : "");
  const number = document.createElement("span");
  number.className = "value";
  number.textContent = value;
  const caption = document.createElement("span");
  caption.className = "label";
  caption.textContent = label;
  box.append(number, caption);
  return box;
}

let lastStatus = null;
function renderCounters() {
  const c = lastStatus.counters;
  const critical = [...fleet.firing.values()].filter((a) => a.severity === "critical").length;
  const warning = fleet.firing.size - critical;
  const updated = counter("last update (UTC)", "-");
  updated.querySelector(".value").id = "updated";
  document.getElementById("counters").replaceChildren(
    counter("sensors", c.sensors.toLocaleString()), counter("reporting", c.reporting.toLocaleString()),
    counter("silent", c.silent.toLocaleString(), c.silent > 0),
    counter("firing critical", critical, critical > 0), counter("firing warning", warning, false),
    counter("readings / s", Math.round(c.readings_per_s).toLocaleString()), updated);
  document.getElementById("counters").dataset.firing = String(fleet.firing.size);
}
function renderFiringCounters() {
  if (lastStatus) {
    const previous = document.getElementById("updated").textContent;
    renderCounters();
    document.getElementById("updated").textContent = previous;
  }
}

function renderStatus(status) {
  lastStatus = status;
  renderCounters();
  const top = (id, rows, unit) => Live.fill(document.getElementById(id),
    rows.map((r) => Live.row([[r.sensor, "", Live.sensorHref(r.sensor)], [`${r.value === null ? "never" : r.value}${unit}`, "num"]])));
  top("top-alerts", status.top.alerts, "");
  top("top-stale", status.top.stale, " s");
  top("top-deviation", status.top.deviation, " σ");
  Live.fill(document.getElementById("partitions"), status.partitions.map((p) => Live.row([
    [p.index, "num"], p.owner, [p.epoch, "num"], [p.length.toLocaleString(), "num"],
    [p.lag === null ? "-" : p.lag.toLocaleString(), "num"], [Live.number(p.lag_s, 1), "num"], [p.pending, "num"]])));
  const losses = document.getElementById("losses");
  const figures = [["dead letters", status.dead_letters], ["missing by seq", status.losses.missing_seq],
                   ["lost to trim", status.losses.lost_to_trim], ["too late (dead-lettered)", status.losses.too_late],
                   ["late (windows revised)", status.losses.late], ["window revisions", status.losses.revisions],
                   ["processed", status.processed]];
  losses.replaceChildren(...figures.flatMap(([label, value]) => {
    const dt = document.createElement("dt"); dt.textContent = label;
    const dd = document.createElement("dd"); dd.textContent = Number(value).toLocaleString();
    return [dt, dd];
  }));
  document.getElementById("warnings").replaceChildren(...status.warnings.map((text) => {
    const li = document.createElement("li"); li.textContent = text; return li;
  }));
}

function installHover() {
  const canvas = document.getElementById("grid");
  const tooltip = document.getElementById("tooltip");
  const positionAt = (event) => {
    const box = canvas.getBoundingClientRect();
    const column = Math.floor((event.clientX - box.left) / fleet.cell);
    const position = Math.floor((event.clientY - box.top) / fleet.cell) * fleet.columns + column;
    return column < fleet.columns && position < fleet.names.length ? position : -1;
  };
  canvas.addEventListener("mousemove", (event) => {
    const position = positionAt(event);
    if (position < 0) { tooltip.hidden = true; return; }
    const age = fleet.ts[position] === null ? "no reading" : `${Live.duration((Date.now() - fleet.ts[position]) / 1000)} ago`;
    tooltip.textContent = `${fleet.names[position]}: ${Live.number(fleet.temperature[position])} °C, ` +
      `${Live.number(fleet.humidity[position])} %RH (${age}) · ${STATE_NAMES[fleet.states[position]]}`;
    tooltip.hidden = false;
    tooltip.style.left = (event.offsetX + 14) + "px";
    tooltip.style.top = (event.offsetY + canvas.offsetTop + 14) + "px";
  });
  canvas.addEventListener("mouseleave", () => { tooltip.hidden = true; });
  canvas.addEventListener("click", (event) => {
    const position = positionAt(event);
    if (position >= 0) location.href = Live.sensorHref(fleet.names[position]);
  });
}

async function start() {
  const snapshot = await Live.getJSON("/api/fleet");
  fleet.staleMs = snapshot.stale_after_s * 1000;
  const s = snapshot.sensors;
  s.names.forEach((name, i) => {
    const position = fleet.addSensor(name);
    fleet.ts[position] = s.ts[i]; fleet.temperature[position] = s.temperature_c[i];
    fleet.humidity[position] = s.humidity_pct[i]; fleet.states[position] = s.states[i];
  });
  for (const alert of snapshot.firing) fleet.firing.set(alert.alert_id, alert);
  renderStatus(snapshot);
  fleet.layout();
  document.body.dataset.ready = "true";
  installHover();
  window.addEventListener("resize", () => fleet.layout());
  setInterval(() => { fleet.restate(Date.now()); fleet.schedule(); }, 1000);  // silence is a matter of time
  Live.follow("/api/events/fleet", {update: (data) => fleet.applyUpdate(data), status: renderStatus}, snapshot.last_id);
}
start().catch((error) => Live.show(`Could not load the fleet: ${error.message}`, "lost"));
