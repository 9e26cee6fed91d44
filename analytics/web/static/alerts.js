"use strict";
// Alerts: what fires now (with how long) and the latest events, filtered by state, severity, rule
// and sensor (a glob, as the command line takes). The filters live in the URL, so a filtered view
// can be shared; new events arrive on the event stream and pass the same filters.
const page = {firing: new Map(), events: [], seen: new Set(), filters: {}};
window.alertsView = page;
const LIMIT = 200;

function globMatch(pattern, text) {
  if (!pattern) return true;
  const expression = "^" + pattern.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".") + "$";
  return new RegExp(expression).test(text);
}

function passes(alert, ignoreState) {
  const f = page.filters;
  return (ignoreState || !f.state || alert.state === f.state) && (!f.severity || alert.severity === f.severity) &&
         (!f.rule || alert.rule === f.rule) && globMatch(f.sensor, alert.sensor);
}

function value(alert, field) {
  return alert[field] === null ? "-" : `${Live.number(alert[field], 2)} ${alert.unit}`;
}

function render() {
  const now = Date.now();
  const firing = [...page.firing.values()].filter((a) => passes(a, true) && page.filters.state !== "resolved")
    .sort((a, b) => a.ts - b.ts);
  Live.fill(document.getElementById("firing"), firing.map((a) => Live.row([
    [a.severity, `sev-${a.severity}`], a.rule, [a.sensor, "", Live.sensorHref(a.sensor)], Live.time(a.ts),
    Live.duration((now - a.ts) / 1000), [value(a, "value"), "num"], [value(a, "threshold"), "num"]])));
  document.getElementById("firing-count").textContent = `(${firing.length})`;
  Live.fill(document.getElementById("events"), page.events.filter((a) => passes(a, false)).slice(0, LIMIT).map((a) => Live.row([
    Live.time(a.ts), [a.state, a.state === "firing" ? `sev-${a.severity}` : "state-resolved"], a.severity, a.rule,
    [a.sensor, "", Live.sensorHref(a.sensor)], [value(a, "value"), "num"], [value(a, "threshold"), "num"]])));
}

function addRules(rules) {
  const select = document.querySelector("#filters select[name=rule]");
  const present = new Set([...select.options].map((o) => o.value));
  for (const rule of rules) {
    if (present.has(rule)) continue;
    const option = document.createElement("option");
    option.textContent = rule;
    option.value = rule;
    select.appendChild(option);
    present.add(rule);
  }
  select.value = page.filters.rule || "";
}

function applyUpdate(update) {
  for (const alert of update.alerts) {
    const key = `${alert.alert_id}/${alert.state}/${alert.id}`;
    if (page.seen.has(key)) continue;  // a resumed stream may send an entry twice
    page.seen.add(key);
    page.events.unshift(alert);
    if (alert.state === "firing") page.firing.set(alert.alert_id, alert);
    else page.firing.delete(alert.alert_id);
    addRules([alert.rule]);
  }
  page.events.length = Math.min(page.events.length, 2000);
  render();
}

async function start() {
  const form = document.getElementById("filters");
  const query = new URLSearchParams(location.search);
  for (const name of ["state", "severity", "rule", "sensor"]) page.filters[name] = query.get(name) || "";
  const snapshot = await Live.getJSON("/api/alerts?limit=2000");
  for (const alert of snapshot.firing) page.firing.set(alert.alert_id, alert);
  page.events = snapshot.recent;
  for (const alert of page.events) page.seen.add(`${alert.alert_id}/${alert.state}/${alert.id}`);
  addRules(snapshot.rules);
  for (const name of ["state", "severity", "sensor"]) form[name].value = page.filters[name];
  form.addEventListener("input", () => {
    for (const name of ["state", "severity", "rule", "sensor"]) page.filters[name] = form[name].value.trim();
    const next = new URLSearchParams(Object.entries(page.filters).filter(([, v]) => v));
    history.replaceState(null, "", next.toString() ? "?" + next : location.pathname);
    render();
  });
  form.addEventListener("submit", (event) => event.preventDefault());
  render();
  document.body.dataset.ready = "true";
  setInterval(render, 1000);  // durations tick
  Live.follow("/api/events/alerts", {update: applyUpdate}, snapshot.last_id);
}
start().catch((error) => Live.show(`Could not load the alerts: ${error.message}`, "lost"));
