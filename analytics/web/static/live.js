"use strict";
// Shared by the three pages: the page's one event stream, with the lost-connection notice, and
// small formatting helpers. The browser reconnects by itself after a network error, sending the
// last event id (Last-Event-ID); after a refused reconnect (say, a 503 while Redis is away) it
// gives up, so the page opens a new stream itself, with that id as ?last_id=.
const Live = (() => {
  const notice = () => document.getElementById("connection");
  let hideTimer = null;

  function show(text, kind) {
    const element = notice();
    element.textContent = text;
    element.className = "notice " + kind;
    element.hidden = false;
    clearTimeout(hideTimer);
  }

  function follow(url, handlers, startId) {
    let lastId = startId || null;
    let lost = false;
    let source = null;
    document.body.dataset.events = "0";

    function deliver(name, event) {
      if (event.lastEventId) lastId = event.lastEventId;
      document.body.dataset.events = String(Number(document.body.dataset.events) + 1);
      if (handlers[name]) handlers[name](JSON.parse(event.data));
    }

    // The browser gives up on a stream the server refused: say why, when the server says (a 503
    // while Redis is away), rather than blame the connection.
    async function explain() {
      try {
        const response = await fetch("/api/status", {headers: {Accept: "application/json"}});
        if (!response.ok) show(`The server is up, but: ${(await response.json()).error}. Retrying…`, "lost");
      } catch (error) {
        // the server itself is away: the notice already says so
      }
    }

    function open() {
      const target = lastId ? url + (url.includes("?") ? "&" : "?") + "last_id=" + encodeURIComponent(lastId) : url;
      source = new EventSource(target);
      source.addEventListener("open", () => {
        document.body.dataset.live = "open";
        if (lost) {
          lost = false;
          show("Connected to the server again: live.", "back");
          hideTimer = setTimeout(() => { notice().hidden = true; }, 4000);
        }
      });
      source.addEventListener("error", () => {
        lost = true;
        document.body.dataset.live = "lost";
        show("Lost the connection to the server; reconnecting…", "lost");
        if (source.readyState === EventSource.CLOSED) {
          explain();
          setTimeout(open, 2000);
        }
      });
      for (const name of ["update", "status", "progress"]) source.addEventListener(name, (event) => deliver(name, event));
      // away too long to catch up event by event: the server says so, and the page starts afresh
      source.addEventListener("reset", () => { source.close(); location.reload(); });
    }
    open();
  }

  async function getJSON(url) {
    const response = await fetch(url, {headers: {Accept: "application/json"}});
    const body = await response.json().catch(() => ({error: response.statusText}));
    if (!response.ok) throw new Error(body.error || response.statusText);
    return body;
  }

  const pad = (n) => String(n).padStart(2, "0");
  function time(ms) {
    if (ms === null || ms === undefined) return "-";
    const d = new Date(ms);
    return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ` +
           `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}Z`;
  }
  function duration(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return "-";
    if (seconds < 60) return `${Math.round(seconds)} s`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
    return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
  }
  const number = (v, digits = 1) => (v === null || v === undefined) ? "-" : Number(v).toFixed(digits);

  // Table rows from plain values or [text, className, href] triples, built with DOM calls.
  function row(cells) {
    const tr = document.createElement("tr");
    for (const cell of cells) {
      const td = document.createElement("td");
      const [text, className, href] = Array.isArray(cell) ? cell : [cell];
      if (className) td.className = className;
      if (href) {
        const a = document.createElement("a");
        a.href = href;
        a.textContent = text;
        td.appendChild(a);
      } else {
        td.textContent = text;
      }
      tr.appendChild(td);
    }
    return tr;
  }
  function fill(table, rows) {
    const body = table.tBodies[0] || table.appendChild(document.createElement("tbody"));
    body.replaceChildren(...rows);
  }
  const sensorHref = (name) => "/sensors/" + encodeURIComponent(name);

  const jump = document.getElementById("goto");
  if (jump) {
    jump.addEventListener("submit", (event) => {
      event.preventDefault();
      const name = jump.sensor.value.trim();
      if (name) location.href = sensorHref(name);
    });
  }

  return {follow, getJSON, time, duration, number, row, fill, show, sensorHref};
})();
