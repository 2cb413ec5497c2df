// The Parley lab page: node cards with controls, the traffic form, the
// invariants, a rate plot and the event timeline, all from the lab API
// and its /api/lab/events WebSocket. No build step, no third-party code.

const token = new URLSearchParams(location.hash.slice(1)).get("token") || "";
const $ = (id) => document.getElementById(id);
const ACTIONS = [
  ["kill", "Kill -9"], ["pause", "Pause"], ["resume", "Resume"], ["stop", "Stop"], ["restart", "Restart"],
];

/** Calls the lab API with the token; returns the parsed JSON (or throws). */
async function api(method, path, body) {
  const init = { method, headers: { Authorization: `Bearer ${token}` } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  const data = await resp.json().catch(() => null);
  if (!resp.ok) {
    throw new Error((data && data.error && data.error.message) || `${resp.status}`);
  }
  return data;
}

// ---------- event timeline ----------
const MAX_EVENTS = 200;
function addEvent(at, text, cls) {
  const li = document.createElement("li");
  if (cls) li.className = cls;
  const time = document.createElement("time");
  const d = new Date(at || Date.now());
  time.dateTime = d.toISOString();
  time.textContent = d.toLocaleTimeString();
  li.append(time, document.createTextNode(text));
  const list = $("events");
  list.prepend(li);
  while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
}

function describe(ev) {
  const parts = [ev.kind];
  if (ev.node) parts.push(`on ${ev.node}`);
  if (ev.peer) parts.push(`peer ${ev.peer}`);
  if (ev.conv_id !== undefined) parts.push(`conv ${ev.conv_id}`);
  if (ev.epoch !== undefined) parts.push(`epoch ${ev.epoch}`);
  if (ev.via && ev.via !== ev.node) parts.push(`(seen by ${ev.via})`);
  return parts.join(" ");
}

// ---------- nodes ----------
const cards = new Map(); // name -> {root, parts}
const views = new Map(); // name -> admin cluster view (or null)
const commitStats = new Map(); // name -> {at, batches, micros, messages, text}

/**
 * Commit rate, mean batch and mean latency of `name` since its previous
 * view (the admin API gives counters; rates come from two reads).
 */
function commitText(name, m) {
  const now = { at: Date.now(), batches: m.commit_batches ?? 0, micros: m.commit_micros ?? 0, messages: m.messages_committed ?? 0 };
  const prev = commitStats.get(name);
  let text = prev ? prev.text : "";
  if (prev && now.at - prev.at >= 1000) {
    const batches = now.batches - prev.batches;
    const secs = (now.at - prev.at) / 1000;
    text = batches > 0
      ? ` · ${((now.messages - prev.messages) / secs).toFixed(0)} msg/s in ${(batches / secs).toFixed(0)} commits/s, ` +
        `batch ${((now.messages - prev.messages) / batches).toFixed(1)}, ${((now.micros - prev.micros) / batches / 1000).toFixed(1)} ms`
      : " · idle";
  }
  if (!prev || now.at - prev.at >= 1000 || now.batches < prev.batches) commitStats.set(name, { ...now, text });
  return text;
}
let lastNodes = [];

function card(node) {
  let c = cards.get(node.name);
  if (c) return c;
  const root = document.createElement("section");
  root.className = "node";
  root.dataset.node = node.name;
  root.setAttribute("aria-label", node.name);
  const h = document.createElement("h3");
  const title = document.createElement("span");
  title.textContent = node.name;
  const badge = document.createElement("span");
  badge.className = "badge";
  h.append(title, badge);
  const meta = document.createElement("p");
  meta.className = "meta";
  const peers = document.createElement("ul");
  peers.setAttribute("aria-label", `cluster as ${node.name} sees it`);
  const convs = document.createElement("ul");
  convs.className = "convs";
  convs.setAttribute("aria-label", `conversations homed on ${node.name}`);
  const actions = document.createElement("div");
  actions.className = "actions";
  for (const [action, label] of ACTIONS) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    b.dataset.action = action;
    b.dataset.node = node.name;
    b.setAttribute("aria-label", `${action} ${node.name}`);
    b.addEventListener("click", () => act(node.name, action));
    actions.append(b);
  }
  root.append(h, meta, peers, convs, actions);
  $("nodes").append(root);
  c = { root, badge, meta, peers, convs };
  cards.set(node.name, c);
  return c;
}

async function act(name, action) {
  try {
    const info = await api("POST", `/api/lab/nodes/${encodeURIComponent(name)}/${action}`);
    renderNode(info);
  } catch (e) {
    addEvent(Date.now(), `${action} ${name} failed: ${e.message}`, "lab");
  }
}

/** How the other running nodes see `name`: the worst of their views. */
function liveness(name) {
  const rank = { live: 0, suspect: 1, dead: 2 };
  let worst = null;
  for (const [viewer, view] of views) {
    if (viewer === name || !view || !Array.isArray(view.nodes)) continue;
    const seen = view.nodes.find((n) => n.name === name);
    const s = seen ? seen.state : "dead";
    if (worst === null || rank[s] > rank[worst]) worst = s;
  }
  return worst;
}

function renderNode(node) {
  const c = card(node);
  c.root.dataset.state = node.state;
  c.badge.textContent = node.state;
  const view = node.state === "running" || node.state === "paused" ? views.get(node.name) : null;
  const m = (view && view.metrics) || null;
  c.meta.textContent = `${node.http} · pid ${node.pid ?? "–"}` +
    (view ? ` · ${view.sessions ?? 0} sessions` : "") +
    (m ? ` · ${m.messages_committed ?? 0} committed · ${m.fenced_appends ?? 0} fenced` +
      ` · push queue ${m.push_queue ?? 0}` + commitText(node.name, m) : "");
  const live = liveness(node.name);
  if (live) c.root.dataset.liveness = live; else delete c.root.dataset.liveness;
  c.peers.replaceChildren();
  if (view && Array.isArray(view.nodes)) {
    for (const peer of view.nodes) {
      const li = document.createElement("li");
      li.className = `dot-${peer.state}`;
      li.textContent = `● ${peer.name} ${peer.state}`;
      c.peers.append(li);
    }
  } else if (live) {
    const li = document.createElement("li");
    li.className = `dot-${live}`;
    li.textContent = `others see it ${live}`;
    c.peers.append(li);
  }
  if (view && Array.isArray(view.links_cut) && view.links_cut.length > 0) {
    const li = document.createElement("li");
    li.className = "dot-dead";
    li.textContent = `✂ drops what it sends to ${view.links_cut.join(", ")}`;
    c.peers.append(li);
  }
  renderLinkStatus();
  c.convs.replaceChildren();
  if (view && Array.isArray(view.conversations)) {
    for (const conv of view.conversations.slice(0, 50)) {
      const li = document.createElement("li");
      li.textContent = `#${conv.conv_id} e${conv.epoch} s${conv.last_seq}`;
      c.convs.append(li);
    }
  }
}

function renderState(state) {
  lastNodes = state.nodes || [];
  for (const node of lastNodes) renderNode(node);
  renderLinkChoices();
  const t = state.traffic;
  $("traffic-status").textContent = t
    ? `${t.phase}: ${t.users} users, ${t.rate}/s, groups of ${t.group_size}`
    : "stopped";
  if (state.invariants) renderInvariants(state.invariants);
}

let polling = false;
let pollSoon = null;
/** Refreshes the node cards shortly after a cluster event (debounced). */
function schedulePoll() {
  if (pollSoon === null) pollSoon = setTimeout(() => { pollSoon = null; pollViews(); }, 300);
}

async function pollViews() {
  if (polling) return;
  polling = true;
  try {
    await fetchViews();
  } finally {
    polling = false;
  }
}

async function fetchViews() {
  for (const node of lastNodes) {
    if (node.state !== "running") {
      views.delete(node.name);
      continue;
    }
    try {
      views.set(node.name, await api("GET", `/api/lab/nodes/${encodeURIComponent(node.name)}/admin/cluster`));
    } catch {
      views.set(node.name, null);
    }
  }
  for (const node of lastNodes) renderNode(node);
  sampleLatency();
}

// The running nodes' commit counters at the previous view fetch.
let lastCommits = null;
const latencySamples = []; // [ms, mean commit ms]

/** Mean commit latency over the running nodes since the previous fetch. */
function sampleLatency() {
  let batches = 0, micros = 0;
  for (const view of views.values()) {
    if (view && view.metrics) {
      batches += view.metrics.commit_batches ?? 0;
      micros += view.metrics.commit_micros ?? 0;
    }
  }
  const now = Date.now();
  if (lastCommits && batches >= lastCommits.batches && micros >= lastCommits.micros) {
    const db = batches - lastCommits.batches;
    latencySamples.push([now, db > 0 ? (micros - lastCommits.micros) / db / 1000 : 0]);
  }
  lastCommits = { batches, micros };
  while (latencySamples.length && latencySamples[0][0] < now - 61000) latencySamples.shift();
  plot("latency-plot", latencySamples, "ms", 1);
}

// ---------- invariants and the plot ----------
const samples = []; // [ms, acked]
function renderInvariants(inv) {
  const set = (id, v, bad) => {
    const el = $(id);
    el.textContent = String(v ?? 0);
    el.classList.toggle("bad", !!bad);
  };
  set("inv-acked", inv.acked);
  set("inv-lost", inv.lost, inv.lost > 0);
  set("inv-pending", inv.pending_delivery);
  set("inv-duplicated", inv.duplicated, inv.duplicated > 0);
  set("inv-out-of-order", inv.out_of_order, inv.out_of_order > 0);
  set("inv-max-unavailable", inv.max_unavailable_ms);
  set("inv-unacked", inv.unacked_sends);
  set("inv-reconnects", inv.reconnects);
}

function sample(inv) {
  const now = Date.now();
  samples.push([now, inv.acked || 0]);
  while (samples.length && samples[0][0] < now - 61000) samples.shift();
  draw();
}

function draw() {
  const rates = [];
  for (let i = 1; i < samples.length; i++) {
    const dt = (samples[i][0] - samples[i - 1][0]) / 1000;
    rates.push([samples[i][0], dt > 0 ? Math.max(0, samples[i][1] - samples[i - 1][1]) / dt : 0]);
  }
  plot("rate-plot", rates, "/s", 10);
}

/** Draws `points` ([ms, value]) of the last minute on canvas `id`. */
function plot(id, points, unit, floor) {
  const canvas = $(id);
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  const style = getComputedStyle(document.documentElement);
  ctx.clearRect(0, 0, w, h);
  const rates = points;
  const max = Math.max(floor, ...rates.map((r) => r[1]));
  ctx.strokeStyle = style.getPropertyValue("--line");
  ctx.fillStyle = style.getPropertyValue("--muted");
  ctx.font = "11px system-ui";
  ctx.beginPath();
  ctx.moveTo(30, h - 16); ctx.lineTo(w, h - 16); ctx.stroke();
  ctx.fillText(`${max < 10 ? max.toFixed(1) : Math.round(max)}${unit}`, 0, 12);
  ctx.fillText("0", 0, h - 16);
  ctx.fillText("-60 s", 30, h - 2);
  ctx.fillText("now", w - 24, h - 2);
  const now = Date.now();
  const x = (t) => 30 + ((t - (now - 60000)) / 60000) * (w - 30);
  const y = (v) => h - 16 - (v / max) * (h - 28);
  ctx.strokeStyle = style.getPropertyValue("--accent");
  ctx.lineWidth = 2;
  ctx.beginPath();
  rates.forEach(([t, v], i) => (i ? ctx.lineTo(x(t), y(v)) : ctx.moveTo(x(t), y(v))));
  ctx.stroke();
}

// ---------- the event stream ----------
let backoff = 500;
function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${proto}//${location.host}/api/lab/events?token=${encodeURIComponent(token)}`);
  ws.onopen = () => {
    backoff = 500;
    $("conn").textContent = "connected";
  };
  ws.onmessage = (msg) => {
    let f;
    try { f = JSON.parse(msg.data); } catch { return; }
    switch (f.type) {
      case "state": renderState(f); break;
      case "invariants": renderInvariants(f); sample(f); break;
      case "lab":
        addEvent(f.at, `lab: ${f.kind}${f.node ? " " + f.node : ""}`, "lab");
        schedulePoll();
        break;
      case "event": addEvent(f.at, describe(f)); schedulePoll(); break;
      case "snapshot":
        if (f.via && f.cluster) views.set(f.via, f.cluster);
        break;
      default: break;
    }
  };
  ws.onclose = () => {
    $("conn").textContent = "disconnected; retrying…";
    setTimeout(connect, backoff);
    backoff = Math.min(backoff * 2, 5000);
  };
}

// ---------- partitions ----------
/** Fills the two node pickers (keeping the choices). */
function renderLinkChoices() {
  for (const [id, fallback] of [["link-a", 0], ["link-b", 1]]) {
    const select = $(id);
    const chosen = select.value;
    const names = lastNodes.map((n) => n.name);
    if ([...select.options].map((o) => o.value).join() === names.join()) continue;
    select.replaceChildren(...names.map((name) => {
      const o = document.createElement("option");
      o.value = name;
      o.textContent = name;
      return o;
    }));
    select.value = names.includes(chosen) ? chosen : (names[fallback] || "");
  }
}

/** Says which links the nodes' filters cut now, from their own views. */
function renderLinkStatus() {
  const cuts = [];
  for (const [name, view] of views) {
    if (view && Array.isArray(view.links_cut)) {
      for (const peer of view.links_cut) cuts.push(`${name} → ${peer}`);
    }
  }
  $("links-status").textContent = cuts.length ? `cut: ${cuts.join(", ")}` : "no link cut";
}

async function link(action) {
  const a = $("link-a").value;
  const b = $("link-b").value;
  if (!a || !b || a === b) {
    $("links-status").textContent = "choose two different nodes";
    return;
  }
  try {
    await api("POST", `/api/lab/links/${encodeURIComponent(a)}/${encodeURIComponent(b)}/${action}`);
    pollViews();
  } catch (err) {
    $("links-status").textContent = `${action} failed: ${err.message}`;
  }
}
$("links-form").addEventListener("submit", (e) => {
  e.preventDefault();
  link("cut");
});
$("link-cut-one-way").addEventListener("click", () => link("cut_one_way"));
$("link-heal").addEventListener("click", () => link("heal"));

// ---------- traffic form ----------
$("traffic-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const body = {
    users: Number($("traffic-users").value),
    rate: Number($("traffic-rate").value),
    group_size: Number($("traffic-group-size").value),
  };
  try {
    renderState(await api("POST", "/api/lab/traffic", body));
  } catch (err) {
    $("traffic-status").textContent = `not started: ${err.message}`;
  }
});
$("traffic-stop").addEventListener("click", async () => {
  try {
    renderState(await api("DELETE", "/api/lab/traffic"));
  } catch (err) {
    $("traffic-status").textContent = `not stopped: ${err.message}`;
  }
});

if (!token) {
  $("conn").textContent = "no lab token: open the address the lab printed (…/#token=…)";
} else {
  api("GET", "/api/lab/state").then(renderState).catch((e) => {
    $("conn").textContent = `lab API: ${e.message}`;
  });
  connect();
  setInterval(pollViews, 2000);
}
