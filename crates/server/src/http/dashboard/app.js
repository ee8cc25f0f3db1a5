// callpulse dashboard: the live panel follows the WebSocket (a snapshot, then deltas); the rest is
// read from the JSON API when the page opens, when a call finishes, and on a slow timer.
// Everything from outside (numbers, names, metadata) is written with textContent, never as HTML.
"use strict";

const METRICS = [
  ["total_calls", "Calls", "count"],
  ["answer_rate", "Answer rate", "ratio"],
  ["avg_handle_time_seconds", "Handle time", "seconds"],
  ["abandonment_rate", "Abandonment", "ratio"],
  ["avg_speed_of_answer_seconds", "Speed of answer", "seconds"],
  ["service_level", "Service level", "ratio"],
  ["error_rate", "Error rate", "ratio"],
];
const TRENDS = [
  ["total_calls", "Calls"],
  ["answer_rate", "Answer rate"],
  ["avg_handle_time_seconds", "Handle time"],
  ["abandonment_rate", "Abandonment"],
  ["error_rate", "Error rate"],
];
// METRICS.md §7: a trunk is unhealthy above this error rate.
const TRUNK_UNHEALTHY_ERROR_RATE = 0.2;
const TRUNK_MIN_CALLS = 5;

const state = {
  tz: undefined,
  seq: 0,
  summary: null,
  calls: new Map(),
  agents: new Map(),
  recent: [],
  alerts: [],
  liveSummary: null,
  connected: false,
  group: "trunk",
  targets: {},
  statuses: {},
};

// ---- helpers ---------------------------------------------------------------------------------

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(child ?? ""));
  }
  return node;
}

function format(kind, v) {
  if (v === null || v === undefined) return "–";
  if (kind === "ratio") return (v * 100).toFixed(1) + "%";
  if (kind === "seconds") return formatDuration(v);
  return String(v);
}

function formatDuration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return s + "s";
  const m = Math.floor(s / 60);
  if (m < 60) return m + "m " + String(s % 60).padStart(2, "0") + "s";
  return Math.floor(m / 60) + "h " + String(m % 60).padStart(2, "0") + "m";
}

function timeOf(iso, withDate) {
  if (!iso) return "–";
  const options = { timeZone: state.tz, hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false };
  if (withDate) Object.assign(options, { month: "short", day: "numeric" });
  return new Intl.DateTimeFormat(undefined, options).format(new Date(iso));
}

async function getJson(path) {
  const r = await fetch(path, { headers: { Accept: "application/json" } });
  if (r.status === 401) {
    // The session cookie is missing or no longer valid.
    location.assign("/login");
  }
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}

function throttle(fn, ms) {
  let last = 0;
  let timer = null;
  return () => {
    const wait = last + ms - Date.now();
    if (wait <= 0) {
      last = Date.now();
      fn();
    } else if (!timer) {
      timer = setTimeout(() => {
        timer = null;
        last = Date.now();
        fn();
      }, wait);
    }
  };
}

// ---- live panel (WebSocket) ------------------------------------------------------------------

function connect(delay = 500) {
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const ws = new WebSocket(scheme + location.host + "/api/v1/live/ws");
  ws.onopen = () => {
    state.connected = true;
    delay = 500;
    setConnection("live");
  };
  ws.onmessage = (event) => {
    const m = JSON.parse(event.data);
    if (m.type === "snapshot") {
      applySnapshot(m);
    } else if (m.type === "delta") {
      if (m.seq !== state.seq + 1) {
        ws.close(); // a gap: reconnect for a fresh snapshot
        return;
      }
      applyDelta(m);
    }
  };
  ws.onclose = () => {
    state.connected = false;
    setConnection("lost");
    setTimeout(() => connect(Math.min(delay * 2, 10000)), delay);
  };
}

function setConnection(s) {
  const node = document.getElementById("connection");
  node.dataset.state = s;
  node.textContent = s === "live" ? "live" : s === "lost" ? "reconnecting…" : "connecting";
  renderHealth();
}

function applySnapshot(m) {
  state.seq = m.seq;
  state.calls = new Map(m.calls.map((c) => [c.call_id, c]));
  state.agents = new Map(m.agents.map((a) => [a.agent_id, a]));
  state.recent = m.recent_calls;
  state.alerts = m.alerts;
  state.liveSummary = m.summary;
  renderLive();
}

function applyDelta(m) {
  state.seq = m.seq;
  for (const c of m.calls) state.calls.set(c.call_id, c);
  for (const id of m.ended) state.calls.delete(id);
  for (const a of m.agents) state.agents.set(a.agent_id, a);
  state.liveSummary = m.summary;
  if (m.recent_calls) {
    state.recent = m.recent_calls;
    refreshAfterCalls();
  }
  if (m.alerts) state.alerts = m.alerts;
  renderLive();
}

function setTile(selector, value, text) {
  const tile = document.querySelector(selector);
  tile.dataset.value = value === null || value === undefined ? "null" : String(value);
  tile.querySelector(".value").textContent = text;
  return tile;
}

function longestWait() {
  let longest = 0;
  const now = Date.now();
  for (const c of state.calls.values()) {
    if (c.direction === "inbound" && !c.answer_time) {
      longest = Math.max(longest, (now - Date.parse(c.start_time)) / 1000);
    }
  }
  return longest;
}

function renderLive() {
  const s = state.liveSummary;
  if (!s) return;
  for (const key of ["active_calls", "ringing_calls", "callers_in_queue"]) {
    setTile(`[data-live="${key}"]`, s[key], String(s[key]));
  }
  const wait = longestWait();
  setTile('[data-live="longest_wait_seconds"]', Math.round(wait), s.callers_in_queue ? formatDuration(wait) : "–");
  setTile('[data-live="agents_available"]', s.agents.available, String(s.agents.available));
  document.getElementById("agents-other").textContent =
    `busy ${s.agents.busy} · away ${s.agents.away} · offline ${s.agents.offline}`;
  const alerts = setTile('[data-live="active_alerts"]', s.active_alerts, String(s.active_alerts));
  alerts.dataset.alert = String(s.active_alerts > 0);
  renderAlerts();
  renderLiveCalls();
  renderAgents();
  renderJustFinished();
  renderHealth();
}

function renderAlerts() {
  document.getElementById("alerts").replaceChildren(
    ...state.alerts.map((a) =>
      el("li", { class: a.severity, "data-alert": a.alert },
        a.summary,
        el("span", { class: "since" }, "since " + timeOf(a.started_at)),
      ),
    ),
  );
}

function renderLiveCalls() {
  const body = document.querySelector("#live-calls tbody");
  const calls = [...state.calls.values()].sort((a, b) => a.start_time.localeCompare(b.start_time));
  const now = Date.now();
  body.replaceChildren(
    ...calls.slice(0, 60).map((c) =>
      el("tr", { "data-call": c.call_id },
        el("td", {}, c.call_id),
        el("td", {}, c.direction),
        el("td", { class: "phase-" + c.phase }, c.phase),
        el("td", {}, c.caller_number || "–"),
        el("td", {}, c.trunk_id || "–"),
        el("td", {}, c.queue || "–"),
        el("td", {}, c.agent_id || "–"),
        el("td", { class: "elapsed", "data-since": c.start_time }, formatDuration((now - Date.parse(c.start_time)) / 1000)),
      ),
    ),
  );
  document.getElementById("live-calls-empty").classList.toggle("hidden", calls.length > 0);
}

function renderAgents() {
  const order = { available: 0, busy: 1, away: 2, offline: 3 };
  const agents = [...state.agents.values()].sort(
    (a, b) => order[a.state] - order[b.state] || a.agent_id.localeCompare(b.agent_id),
  );
  document.getElementById("agents").replaceChildren(
    ...agents.slice(0, 80).map((a) => el("li", { class: a.state, title: a.state }, a.agent_id)),
  );
}

function renderJustFinished() {
  document.getElementById("just-finished").replaceChildren(
    ...state.recent.map((c) =>
      el("li", {},
        timeOf(c.end_time) + " ",
        el("span", { class: "outcome-" + c.outcome }, c.outcome),
        " " + (c.caller_number || c.call_id) + " " + formatDuration(c.duration_seconds || 0),
      ),
    ),
  );
}

function tick() {
  document.getElementById("clock").textContent = timeOf(new Date().toISOString());
  const now = Date.now();
  for (const cell of document.querySelectorAll("#live-calls .elapsed")) {
    cell.textContent = formatDuration((now - Date.parse(cell.dataset.since)) / 1000);
  }
  const s = state.liveSummary;
  if (s) {
    const wait = longestWait();
    setTile('[data-live="longest_wait_seconds"]', Math.round(wait), s.callers_in_queue ? formatDuration(wait) : "–");
  }
}

// ---- health banner ---------------------------------------------------------------------------

function renderHealth() {
  const node = document.getElementById("health");
  const bad = METRICS.filter(([name]) => state.statuses[name] === "bad").map(([, label]) => label);
  const warn = METRICS.filter(([name]) => state.statuses[name] === "warn").map(([, label]) => label);
  const alerts = state.liveSummary ? state.liveSummary.active_alerts : 0;
  let health = "ok";
  let text = "Healthy";
  if (!state.connected) {
    health = "bad";
    text = "Live feed lost";
  } else if (alerts > 0 || bad.length) {
    health = "bad";
    text = [alerts ? `${alerts} alert${alerts > 1 ? "s" : ""}` : null, bad.length ? "off target: " + bad.join(", ") : null]
      .filter(Boolean)
      .join(" · ");
  } else if (warn.length) {
    health = "warn";
    text = "Worse than last week: " + warn.join(", ");
  }
  node.dataset.health = health;
  node.textContent = text;
}

// ---- today against last week -----------------------------------------------------------------

function targetText(name) {
  const t = state.targets[name];
  const kind = METRICS.find(([n]) => n === name)[2];
  if (!t) return "";
  if (t.min !== undefined) return " · target ≥ " + format(kind, t.min);
  return " · target ≤ " + format(kind, t.max);
}

async function loadSummary() {
  const s = await getJson("/api/v1/summary");
  state.summary = s;
  state.tz = s.tz;
  state.targets = s.targets;
  state.statuses = s.status;
  document.getElementById("tz").textContent = s.tz;
  const weekAgo = new Date(Date.parse(s.until) - 7 * 86400000).toISOString();
  document.getElementById("today-compare").textContent =
    "against " + new Intl.DateTimeFormat(undefined, { timeZone: s.tz, weekday: "long", month: "short", day: "numeric" }).format(new Date(weekAgo)) +
    " up to " + timeOf(s.until).slice(0, 5);
  document.getElementById("summary-tiles").replaceChildren(
    ...METRICS.map(([name, label, kind]) => {
      const value = s.today[name];
      return el("div", { class: "tile", "data-metric": name, "data-status": s.status[name] || "ok", "data-value": value === null ? "null" : String(value) },
        el("span", { class: "label" }, label),
        el("span", { class: "value" }, format(kind, value)),
        el("span", { class: "sub" }, "last week " + format(kind, s.last_week[name]) + targetText(name)),
      );
    }),
  );
  renderHealth();
}

// ---- trends ----------------------------------------------------------------------------------

function renderCharts() {
  const stamp = Date.now();
  for (const box of document.querySelectorAll(".charts")) {
    const range = box.dataset.range;
    box.replaceChildren(
      ...TRENDS.map(([name, label]) =>
        el("figure", { "data-chart": name },
          el("figcaption", {}, label),
          el("img", { src: `/api/v1/charts/${name}.svg?range=${range}&t=${stamp}`, alt: `${label}, past ${range}`, width: 560, height: 200 }),
        ),
      ),
    );
  }
}

// ---- breakdown -------------------------------------------------------------------------------

function trunkHealth(m) {
  if (m.total_calls < TRUNK_MIN_CALLS) return "insufficient";
  if (m.error_rate !== null && m.error_rate > TRUNK_UNHEALTHY_ERROR_RATE) return "unhealthy";
  const target = state.targets.error_rate && state.targets.error_rate.max;
  if (m.error_rate !== null && target !== undefined && m.error_rate > target) return "degraded";
  return "healthy";
}

async function loadBreakdown() {
  const group = state.group;
  const answer = await getJson("/api/v1/metrics?group_by=" + group);
  if (group !== state.group) return;
  document.getElementById("breakdown-key").textContent = group[0].toUpperCase() + group.slice(1);
  const rows = answer.groups.filter((g) => g.metrics.total_calls > 0 || g.metrics.in_progress_calls > 0);
  rows.sort((a, b) => b.metrics.total_calls - a.metrics.total_calls);
  document.querySelector("#breakdown-table tbody").replaceChildren(
    ...rows.map(({ key, metrics: m }) => {
      const health = group === "trunk" ? trunkHealth(m) : "";
      return el("tr", { "data-key": key === null ? "" : key },
        el("td", {}, key === null ? "(none)" : key),
        el("td", { "data-field": "total_calls" }, String(m.total_calls)),
        el("td", { "data-field": "answer_rate" }, format("ratio", m.answer_rate)),
        el("td", {}, format("seconds", m.avg_handle_time_seconds)),
        el("td", {}, format("ratio", m.abandonment_rate)),
        el("td", { "data-field": "error_rate" }, format("ratio", m.error_rate)),
        el("td", { class: health ? "health-" + health : "" }, health || "–"),
      );
    }),
  );
  document.getElementById("breakdown-empty").classList.toggle("hidden", rows.length > 0);
}

// ---- recent CDRs and the timeline dialog -----------------------------------------------------

async function loadCdrs() {
  const form = new FormData(document.getElementById("cdr-filters"));
  const params = new URLSearchParams({ order: "desc", limit: "50" });
  for (const [k, v] of form.entries()) if (v) params.set(k, v);
  const query = params.toString();
  const answer = await getJson("/api/v1/cdrs?" + query);
  const today = new Date().toDateString();
  document.querySelector("#cdr-table tbody").replaceChildren(
    ...answer.cdrs.map((c) =>
      el("tr", { "data-call": c.call_id, onclick: () => openCdr(c.call_id) },
        el("td", {}, timeOf(c.start_time, new Date(c.start_time).toDateString() !== today)),
        el("td", {}, c.call_id),
        el("td", {}, c.direction),
        el("td", {}, c.caller_number || "–"),
        el("td", {}, c.callee_number || "–"),
        el("td", {}, c.trunk_id || "–"),
        el("td", {}, c.agent_id || "–"),
        el("td", { class: "outcome-" + c.outcome }, c.outcome),
        el("td", {}, c.duration_seconds === null ? "–" : formatDuration(c.duration_seconds)),
        el("td", {}, c.queue_wait_seconds ? formatDuration(c.queue_wait_seconds) : "–"),
      ),
    ),
  );
  document.getElementById("cdr-empty").classList.toggle("hidden", answer.cdrs.length > 0);
}

async function openCdr(callId) {
  const { cdr, events } = await getJson("/api/v1/cdrs/" + encodeURIComponent(callId));
  document.getElementById("cdr-title").textContent = cdr.call_id;
  const fields = [];
  for (const [k, v] of Object.entries(cdr)) {
    if (v === null || k === "anomalies" || k === "call_id") continue;
    const text = typeof v === "object" ? JSON.stringify(v) : k.endsWith("_time") ? timeOf(v, true) : String(v);
    fields.push(el("dt", {}, k), el("dd", { "data-field": k }, text));
  }
  document.getElementById("cdr-fields").replaceChildren(...fields);
  document.getElementById("cdr-anomalies").replaceChildren(
    ...(cdr.anomalies.length ? cdr.anomalies.map((a) => el("li", {}, a)) : [el("li", { class: "muted" }, "none")]),
  );
  document.querySelector("#cdr-events tbody").replaceChildren(
    ...events.map((e) =>
      el("tr", { "data-event": e.type },
        el("td", {}, timeOf(e.at, true)),
        el("td", {}, e.source),
        el("td", {}, e.type),
        el("td", {}, JSON.stringify(e.detail)),
      ),
    ),
  );
  const dialog = document.getElementById("cdr-dialog");
  if (!dialog.open) dialog.showModal();
}

// ---- ingestion health ------------------------------------------------------------------------

async function loadIngest() {
  const s = await getJson("/api/v1/ingest");
  const values = {
    webhooks_last_minute: s.webhooks_last_minute,
    webhooks_rejected: s.since_start.webhooks_rejected,
    quarantined_in_store: s.quarantined_in_store,
    calls_closed_by_timeout: s.since_start.calls_closed_by_timeout,
    events_in_log: s.events_in_log,
  };
  for (const [k, v] of Object.entries(values)) setTile(`[data-ingest="${k}"]`, v, String(v));
}

// ---- wiring ----------------------------------------------------------------------------------

function quietly(promise) {
  promise.catch((e) => console.warn(e));
}

const refreshAfterCalls = throttle(() => {
  quietly(loadSummary());
  quietly(loadBreakdown());
  quietly(loadCdrs());
}, 5000);

document.addEventListener("DOMContentLoaded", async () => {
  for (const button of document.querySelectorAll(".tabs button")) {
    button.addEventListener("click", () => {
      state.group = button.dataset.group;
      for (const b of document.querySelectorAll(".tabs button")) b.classList.toggle("active", b === button);
      quietly(loadBreakdown());
    });
  }
  document.getElementById("cdr-filters").addEventListener("input", () => quietly(loadCdrs()));
  document.getElementById("cdr-filters").addEventListener("submit", (e) => e.preventDefault());
  try {
    await loadSummary();
  } catch (e) {
    console.warn(e);
  }
  connect();
  renderCharts();
  quietly(loadBreakdown());
  quietly(loadCdrs());
  quietly(loadIngest());
  setInterval(tick, 1000);
  setInterval(() => quietly(loadIngest()), 10000);
  setInterval(() => {
    quietly(loadSummary());
    quietly(loadBreakdown());
  }, 60000);
  setInterval(renderCharts, 300000);
});
