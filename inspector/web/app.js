// The inspector page: the mesh as a graph (cytoscape), rates (uPlot), units, memory search,
// posting signals, and the live feed, all from the HTTP API and the /v1/live websocket.
"use strict";

const state = {
  token: sessionStorage.getItem("swarm-token") || "",
  cy: null,
  chart: null,
  // Per-second counts for the chart: [seconds[], signals[], executions[], failures[]].
  series: [[], [], [], []],
  feed: [],
};

const $ = (selector) => document.querySelector(selector);

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (state.token) h["Authorization"] = "Bearer " + state.token;
  return h;
}

async function api(path, options) {
  const opts = Object.assign({}, options || {});
  opts.headers = headers(opts.headers);
  const response = await fetch(path, opts);
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = text; }
  if (!response.ok) {
    const message = body && body.error ? body.error.message : response.statusText;
    const error = new Error(message);
    error.status = response.status;
    if (response.status === 401) $("#token-form").hidden = false;
    throw error;
  }
  return body;
}

function text(value) {
  return document.createTextNode(value === undefined || value === null ? "" : String(value));
}

function cell(row, value, className) {
  const td = document.createElement("td");
  td.appendChild(text(value));
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

// ---- graph ----------------------------------------------------------------------------------

function edgeLabel(e) {
  if (e.relation === "emits") return e.count ? e.rate.toFixed(2) + "/s" : "";
  const parts = [e.rate.toFixed(2) + "/s"];
  if (e.failures) parts.push(e.failures + " failed");
  if (e.pending) parts.push(e.pending + " pending");
  return e.count || e.pending ? parts.join(" · ") : "";
}

// Labels are drawn at this size in CSS pixels: the graph is laid out at zoom 1 so that they
// stay readable whatever its size (the panel grows to the graph's height instead).
const FONT = 14;
const EDGE_FONT = 12;
const FONT_FAMILY = "system-ui, sans-serif";

const measure = (() => {
  const context = document.createElement("canvas").getContext("2d");
  context.font = FONT + "px " + FONT_FAMILY;
  return (line) => context.measureText(line).width;
})();

// A node just big enough for its label.
function sized(data) {
  const lines = data.label.split("\n");
  const padding = data.kind === "unit" ? 24 : 36;
  data.w = Math.ceil(Math.max(...lines.map(measure))) + padding;
  data.h = Math.ceil(lines.length * FONT * 1.25) + 14;
  return { data };
}

function graphElements(topology) {
  const nodes = [];
  for (const u of topology.units) {
    nodes.push(sized({ id: u.id, label: u.name + "\nv" + u.version + " · gen " + u.generation,
      kind: "unit", disabled: u.state === "disabled" ? 1 : 0, failing: u.failures > 0 ? 1 : 0 }));
  }
  for (const k of topology.kinds) {
    let label = k.kind;
    if (k.pending) label += "\n" + k.pending + " pending";
    if (k.dead_letters) label += "\n" + k.dead_letters + " dead";
    nodes.push(sized({ id: k.id, label: label, kind: k.pattern ? "pattern" : "kind",
      dead: k.dead_letters > 0 ? 1 : 0 }));
  }
  const ids = new Set(nodes.map((n) => n.data.id));
  const edges = topology.edges
    .filter((e) => ids.has(e.source) && ids.has(e.target))
    .map((e) => ({ data: { id: e.source + "->" + e.target, source: e.source, target: e.target,
      label: edgeLabel(e), width: Math.min(1.5 + Math.log1p(e.count) * 1.2, 10),
      failing: e.failures > 0 ? 1 : 0, idle: e.count === 0 ? 1 : 0 } }));
  return { nodes, edges };
}

function graphStyle() {
  return [
    { selector: "node", style: { "label": "data(label)", "text-wrap": "wrap", "font-size": FONT,
      "font-family": FONT_FAMILY, "text-valign": "center", "text-halign": "center",
      "color": "#1d232b", "width": "data(w)", "height": "data(h)" } },
    { selector: "node[kind = 'unit']", style: { "shape": "round-rectangle", "background-color": "#bee3f8",
      "border-width": 2, "border-color": "#2b6cb0" } },
    { selector: "node[kind = 'unit'][disabled = 1]", style: { "background-color": "#e2e8f0",
      "border-style": "dashed", "border-color": "#718096" } },
    { selector: "node[kind = 'unit'][failing = 1]", style: { "border-color": "#c53030" } },
    { selector: "node[kind = 'kind'], node[kind = 'pattern']", style: { "shape": "ellipse",
      "background-color": "#fefcbf", "border-width": 1, "border-color": "#b7791f" } },
    { selector: "node[kind = 'pattern']", style: { "border-style": "dashed" } },
    { selector: "node[dead = 1]", style: { "border-color": "#c53030", "border-width": 3 } },
    { selector: "edge", style: { "curve-style": "bezier", "target-arrow-shape": "triangle",
      "width": "data(width)", "line-color": "#4a5568", "target-arrow-color": "#4a5568",
      "label": "data(label)", "font-size": EDGE_FONT, "font-family": FONT_FAMILY,
      "text-background-color": "#fff",
      "text-background-opacity": 0.85, "text-background-padding": 2 } },
    { selector: "edge[idle = 1]", style: { "line-style": "dashed", "line-color": "#a0aec0",
      "target-arrow-color": "#a0aec0" } },
    { selector: "edge[failing = 1]", style: { "line-color": "#c53030", "target-arrow-color": "#c53030" } },
  ];
}

// Top to bottom by flow: each node one layer below the first node that feeds it (the roots,
// fed by nothing, on top); a layer wider than the panel wraps onto more rows, each layer's nodes
// ordered under their parents. Positions are in the panel's CSS pixels; returns them with the
// height the graph needs.
function layered(nodes, edges, width) {
  const PAD = 24, GAP = 28, ROW_GAP = 22, LAYER_GAP = 60;
  const ids = nodes.map((n) => n.data.id);
  const out = new Map(ids.map((id) => [id, []]));
  const parents = new Map(ids.map((id) => [id, []]));
  for (const e of edges) {
    out.get(e.data.source).push(e.data.target);
    parents.get(e.data.target).push(e.data.source);
  }
  const depth = new Map();
  let queue = ids.filter((id) => parents.get(id).length === 0);
  if (!queue.length && ids.length) queue = [ids[0]];
  for (const id of queue) depth.set(id, 0);
  for (let i = 0; i < queue.length; i++) {
    for (const next of out.get(queue[i])) {
      if (!depth.has(next)) { depth.set(next, depth.get(queue[i]) + 1); queue.push(next); }
    }
  }
  const layers = [];
  for (const n of nodes) {
    const d = depth.has(n.data.id) ? depth.get(n.data.id) : 0;
    (layers[d] = layers[d] || []).push(n);
  }
  const xs = new Map();
  const positions = {};
  const under = (n) => {
    const placed = parents.get(n.data.id).filter((p) => xs.has(p)).map((p) => xs.get(p));
    return placed.length ? placed.reduce((a, b) => a + b, 0) / placed.length : Infinity;
  };
  let y = PAD;
  for (const layer of layers.filter(Boolean)) {
    layer.sort((a, b) => (under(a) - under(b)) || a.data.id.localeCompare(b.data.id));
    const rows = [[]];
    let used = 0;
    for (const n of layer) {
      if (rows[rows.length - 1].length && used + GAP + n.data.w > width - 2 * PAD) {
        rows.push([]);
        used = 0;
      }
      used += (used ? GAP : 0) + n.data.w;
      rows[rows.length - 1].push(n);
    }
    for (const row of rows) {
      const total = row.reduce((sum, n) => sum + n.data.w, 0) + GAP * (row.length - 1);
      const height = Math.max(...row.map((n) => n.data.h));
      let x = Math.max(PAD, (width - total) / 2);
      for (const n of row) {
        positions[n.data.id] = { x: x + n.data.w / 2, y: y + height / 2 };
        xs.set(n.data.id, x + n.data.w / 2);
        x += n.data.w + GAP;
      }
      y += height + ROW_GAP;
    }
    y += LAYER_GAP - ROW_GAP;
  }
  return { positions, height: y - LAYER_GAP + ROW_GAP + PAD };
}

function drawGraph(topology) {
  const { nodes, edges } = graphElements(topology);
  const container = $("#graph");
  const width = container.clientWidth;
  const shape = width + "|" + nodes.map((n) => n.data.id).sort().join(",") + "|" +
    edges.map((e) => e.data.id).sort().join(",");
  if (!state.cy) {
    state.cy = cytoscape({ container, elements: [], style: graphStyle(), wheelSensitivity: 0.3,
      minZoom: 0.25, maxZoom: 3 });
  }
  const cy = state.cy;
  if (state.graphShape !== shape) {
    // New nodes or edges, or a new width: lay the graph out again, at zoom 1, and give the
    // panel the height it needs.
    const { positions, height } = layered(nodes, edges, width);
    container.style.height = Math.min(Math.max(height, 320), 4000) + "px";
    cy.resize();
    cy.elements().remove();
    cy.add(nodes);
    cy.add(edges);
    cy.layout({ name: "preset", positions: (node) => positions[node.id()], fit: false }).run();
    cy.zoom(1);
    cy.pan({ x: 0, y: 0 });
    state.graphShape = shape;
  } else {
    // Same graph: only the numbers change.
    for (const n of nodes) cy.getElementById(n.data.id).data(n.data);
    for (const e of edges) cy.getElementById(e.data.id).data(e.data);
  }
  container.dataset.nodes = nodes.map((n) => n.data.id).sort().join(" ");
  container.dataset.edges = edges.filter((e) => !e.data.idle).map((e) => e.data.id).sort().join(" ");
  const backlog = [];
  if (topology.pending !== null && topology.pending !== undefined) backlog.push(topology.pending + " pending");
  if (topology.lag !== null && topology.lag !== undefined) backlog.push(topology.lag + " waiting");
  $("#backlog").textContent = backlog.join(" · ");
}

async function refreshTopology() {
  try { drawGraph(await api("/v1/mesh/topology")); } catch (e) { console.warn("topology", e); }
}

// ---- rates chart ----------------------------------------------------------------------------

const WINDOW = 120;

function bump(index) {
  const now = Math.floor(Date.now() / 1000);
  const [xs] = state.series;
  if (!xs.length || xs[xs.length - 1] !== now) {
    const last = xs.length ? xs[xs.length - 1] : now - 1;
    for (let t = Math.max(last + 1, now - WINDOW); t <= now; t++) {
      xs.push(t);
      for (let s = 1; s < state.series.length; s++) state.series[s].push(0);
    }
    while (xs.length > WINDOW) for (const s of state.series) s.shift();
  }
  if (index) state.series[index][state.series[index].length - 1] += 1;
}

function drawChart() {
  bump(0);
  const el = $("#chart");
  if (!state.chart) {
    state.chart = new uPlot({
      width: Math.max(el.clientWidth, 300), height: 200,
      series: [{}, { label: "signals", stroke: "#2b6cb0" }, { label: "executions", stroke: "#2f855a" },
        { label: "failures", stroke: "#c53030" }],
      axes: [{}, { size: 40 }],
    }, state.series, el);
  } else {
    state.chart.setData(state.series);
  }
}

// ---- units ----------------------------------------------------------------------------------

// Degraded: a unit is quarantined or has calls stuck past their deadline.
function showHealth(health) {
  const badge = $("#health");
  const problems = health.problems || [];
  badge.textContent = health.status;
  badge.className = "badge " + (problems.length ? "off" : "on");
  badge.title = problems.map((p) => p.unit + ": " + p.reason).join("\n") || "every unit sound";
}

async function refreshHealth() {
  try { showHealth(await api("/v1/health")); } catch (e) { console.warn("health", e); }
}

async function refreshUnits() {
  let units;
  try { units = await api("/v1/units"); } catch (e) { console.warn("units", e); return; }
  const body = $("#units tbody");
  body.replaceChildren();
  for (const u of units) {
    const row = document.createElement("tr");
    row.dataset.unit = u.name;
    cell(row, u.name);
    cell(row, u.version);
    cell(row, u.generation);
    const stuck = u.stuck_calls ? " (" + u.stuck_calls + " stuck)" : "";
    cell(row, u.state + stuck, "state-" + u.state);
    const action = u.state === "ready" ? "disable" : "enable";
    const button = document.createElement("button");
    button.className = "secondary";
    button.textContent = action;
    button.addEventListener("click", async () => {
      try { await api("/v1/units/" + encodeURIComponent(u.name) + "/" + action, { method: "POST" }); }
      catch (e) { alert(action + " " + u.name + ": " + e.message); }
      refreshUnits();
      refreshTopology();
    });
    row.appendChild(document.createElement("td")).appendChild(button);
    body.appendChild(row);
  }
}

// ---- memory search --------------------------------------------------------------------------

async function search(event) {
  event.preventDefault();
  const params = new URLSearchParams({ text: $("#search-text").value, k: "20" });
  const kind = $("#search-kind").value.trim();
  if (kind) params.set("kind", kind);
  const status = $("#search-status");
  status.textContent = "searching…";
  const body = $("#search-results tbody");
  try {
    const hits = await api("/v1/executions/similar?" + params.toString());
    body.replaceChildren();
    for (const hit of hits) {
      const e = hit.execution;
      const row = document.createElement("tr");
      row.title = JSON.stringify(e.signal.payload) + "\n(click: its conversation)";
      row.className = "opens";
      row.dataset.execution = e.id;
      row.addEventListener("click", () => openConversation("executions", e.id));
      cell(row, hit.similarity.toFixed(3));
      cell(row, e.unit);
      cell(row, e.signal.kind);
      const failed = e.outcome.status !== "success";
      cell(row, failed ? e.outcome.error : "success", failed ? "failure wrap" : "");
      cell(row, new Date(e.started_at).toLocaleTimeString());
      body.appendChild(row);
    }
    status.textContent = hits.length + " executions";
  } catch (e) {
    body.replaceChildren();
    status.textContent = "search failed: " + e.message;
  }
}

// ---- posting --------------------------------------------------------------------------------

async function post(event) {
  event.preventDefault();
  const status = $("#post-status");
  let payload;
  try { payload = JSON.parse($("#post-payload").value); } catch (e) {
    status.textContent = "payload is not JSON: " + e.message;
    return;
  }
  try {
    const posted = await api("/v1/signals", { method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ kind: $("#post-kind").value.trim(), payload }) });
    status.textContent = "posted " + posted.id;
  } catch (e) {
    status.textContent = "refused: " + e.message;
  }
}

// ---- conversations --------------------------------------------------------------------------

function short(id) {
  return String(id).slice(-8);
}

// One line of the tree (an `li` of `className`, its line of text, what it holds below).
function treeItem(className, line, children) {
  const li = document.createElement("li");
  li.className = className;
  const head = document.createElement("span");
  head.className = "line";
  head.appendChild(text(line));
  li.appendChild(head);
  if (children.length) {
    const ul = document.createElement("ul");
    for (const child of children) ul.appendChild(child);
    li.appendChild(ul);
  }
  return li;
}

// A signal of the tree, with the executions that handled it below it.
function signalItem(node, conversation) {
  const focused = node.id === conversation.focus && !conversation.focus_execution;
  const kind = node.signal ? node.signal.kind : "signal no unit took";
  const li = treeItem("signal" + (focused ? " focus" : ""), kind + "  " + short(node.id),
    node.executions.map((child) => executionItem(child, conversation)));
  li.dataset.signal = node.id;
  if (node.signal) li.firstChild.title = JSON.stringify(node.signal.payload);
  return li;
}

// An execution of the tree, with the signals it emitted below it.
function executionItem(node, conversation) {
  const e = node.execution;
  const failed = e.outcome.status !== "success";
  const line = "→ " + e.unit + "@" + e.unit_version + " gen " + e.generation + "  " +
    (failed ? e.outcome.kind + ": " + e.outcome.error : "ok") + "  " +
    (e.latency_us / 1000).toFixed(2) + " ms  [" + e.policy + ", p " + e.propensity.toFixed(2) +
    (e.attempt ? ", attempt " + (e.attempt + 1) : "") + "]";
  const li = treeItem("execution" + (failed ? " failure" : "") +
    (e.id === conversation.focus_execution ? " focus" : ""), line,
    node.emitted.map((child) => signalItem(child, conversation)));
  li.dataset.execution = e.id;
  li.dataset.unit = e.unit;
  return li;
}

// Shows the conversation of a signal or an execution (`what` is "signals" or "executions"),
// from memory, as a tree.
async function openConversation(what, id) {
  const panel = $("#conversation-panel");
  const tree = $("#conversation");
  const title = $("#conversation-title");
  panel.hidden = false;
  title.textContent = "loading…";
  tree.replaceChildren();
  let conversation;
  try {
    conversation = await api("/v1/" + what + "/" + encodeURIComponent(id) + "/conversation");
  } catch (e) {
    title.textContent = e.status === 404 ? "memory has nothing of it (yet)" : "failed: " + e.message;
    return;
  }
  const ul = document.createElement("ul");
  ul.className = "tree";
  ul.appendChild(signalItem(conversation.root, conversation));
  tree.appendChild(ul);
  title.textContent = "conversation " + conversation.correlation_id +
    (conversation.complete ? "" : " (from where memory starts)") +
    (conversation.truncated ? " (cut at 500 signals)" : "");
  panel.scrollIntoView({ block: "nearest" });
}

// ---- live feed ------------------------------------------------------------------------------

function addFeed(event) {
  const li = document.createElement("li");
  const time = new Date().toLocaleTimeString();
  if (event.type === "signal") {
    bump(1);
    const s = event.signal;
    li.className = (event.dead_letter ? "dead " : "") + "opens";
    li.dataset.signal = s.id;
    li.addEventListener("click", () => openConversation("signals", s.id));
    li.appendChild(text(time + "  " + (event.dead_letter ? "dead letter " : "signal ") + s.kind + "  " +
      JSON.stringify(s.payload).slice(0, 160)));
  } else if (event.type === "execution") {
    bump(2);
    const e = event.execution;
    const failed = e.outcome.status !== "success";
    if (failed) bump(3);
    li.className = (failed ? "failure " : "") + "opens";
    li.dataset.execution = e.id;
    li.addEventListener("click", () => openConversation("executions", e.id));
    li.appendChild(text(time + "  " + e.unit + "@" + e.unit_version + " ← " + e.signal.kind + "  " +
      (failed ? e.outcome.error : "ok") + "  " + (e.latency_us / 1000).toFixed(2) + " ms  [" + e.policy + "]"));
  } else if (event.type === "lagged") {
    li.className = "failure";
    li.appendChild(text(time + "  missed " + event.missed + " events (too many to show)"));
  } else {
    return;
  }
  const feed = $("#feed");
  feed.insertBefore(li, feed.firstChild);
  while (feed.children.length > 200) feed.removeChild(feed.lastChild);
}

let topologyTimer = null;
function soonTopology() {
  if (topologyTimer) return;
  topologyTimer = setTimeout(() => { topologyTimer = null; refreshTopology(); }, 500);
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  let url = scheme + "//" + location.host + "/v1/live";
  if (state.token) url += "?access_token=" + encodeURIComponent(state.token);
  const socket = new WebSocket(url);
  const badge = $("#connection");
  socket.addEventListener("open", () => { badge.textContent = "live"; badge.className = "badge on"; });
  socket.addEventListener("message", (message) => {
    let event;
    try { event = JSON.parse(message.data); } catch (_) { return; }
    addFeed(event);
    soonTopology();
  });
  socket.addEventListener("close", () => {
    badge.textContent = "offline";
    badge.className = "badge off";
    setTimeout(connect, 2000);
  });
}

// ---- start ----------------------------------------------------------------------------------

async function start() {
  $("#search-form").addEventListener("submit", search);
  $("#conversation-close").addEventListener("click", () => { $("#conversation-panel").hidden = true; });
  let resizing = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(refreshTopology, 200);
  });
  $("#post-form").addEventListener("submit", post);
  $("#token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.token = $("#token").value.trim();
    sessionStorage.setItem("swarm-token", state.token);
    $("#token-form").hidden = true;
    location.reload();
  });
  try {
    const health = await api("/v1/health");
    if (health.tokens && !state.token) $("#token-form").hidden = false;
    showHealth(health);
  } catch (_) { /* shown by the badge */ }
  drawChart();
  await Promise.all([refreshTopology(), refreshUnits()]);
  connect();
  setInterval(drawChart, 1000);
  setInterval(refreshTopology, 5000);
  setInterval(refreshUnits, 10000);
  setInterval(refreshHealth, 10000);
}

start();
