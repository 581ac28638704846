// brokerd management page: plain JS, no dependencies, no inline code (CSP).
// Every value from the broker goes in with textContent, never as HTML.
"use strict";

const POLL_MS = 2000;
const PAGE_SIZE = 100;
const QUEUE_COLUMNS = ["vhost", "name", "messages_ready", "messages_unacknowledged", "messages_delayed", "consumers",
  "oldest_ready_age", "message_stats.publish_details.rate", "message_stats.deliver_get_details.rate"].join(",");
const state = { csrf: null, me: null, view: "overview", vhost: "/", queue: null, sort: "name", asc: true, timer: null };

function $(id) { return document.getElementById(id); }

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function notice(text, ok) {
  const n = $("notice");
  n.textContent = text || "";
  n.className = text ? (ok ? "ok" : "error") : "";
}

async function api(method, path, body) {
  const headers = { "Accept": "application/json", "X-Brokerd-Page": "1" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && state.csrf) headers["X-CSRF-Token"] = state.csrf;
  const resp = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  const text = await resp.text();
  if (text) { try { data = JSON.parse(text); } catch (e) { data = { reason: text }; } }
  if (resp.status === 401 && path !== "/api/login") { showLogin(); }
  if (!resp.ok) {
    const err = new Error((data && data.reason) || resp.statusText);
    err.status = resp.status;
    throw err;
  }
  return data;
}

const q = (name) => "/api/queues/" + encodeURIComponent(state.vhost) + "/" + encodeURIComponent(name);

// --- login ------------------------------------------------------------------------

function showLogin() {
  stopPolling();
  state.me = null;
  $("login").hidden = false;
  $("main").hidden = true;
  $("nav").hidden = true;
  $("who").textContent = "";
}

async function start() {
  try {
    state.me = await api("GET", "/api/whoami");
  } catch (e) {
    if (e.status !== 401) notice("cannot reach the broker: " + e.message);
    return;
  }
  if (state.me.csrf_token) state.csrf = state.me.csrf_token;
  $("login").hidden = true;
  $("main").hidden = false;
  $("nav").hidden = false;
  const who = $("who");
  who.textContent = state.me.open ? "open (no users configured)" : state.me.name + " (" + state.me.tags.join(", ") + ")";
  if (!state.me.open) {
    const out = el("button", "Log out");
    out.id = "logout";
    out.addEventListener("click", logout);
    who.appendChild(out);
  }
  route();
}

async function login(ev) {
  ev.preventDefault();
  try {
    const r = await api("POST", "/api/login", { username: $("login-user").value, password: $("login-password").value });
    state.csrf = r.csrf_token || null;
    $("login-password").value = "";
    notice("");
    await start();
  } catch (e) {
    notice("login failed: " + e.message);
  }
}

async function logout() {
  try { await api("POST", "/api/logout"); } catch (e) { /* ended anyway */ }
  state.csrf = null;
  showLogin();
}

// --- views ------------------------------------------------------------------------

function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [view, ...rest] = hash.split("/");
  state.view = ["overview", "queues", "queue", "exchanges", "connections", "users", "tasks"].includes(view) ? view : "overview";
  // #/queue/<vhost>/<name>, each part percent-encoded.
  state.vhost = state.view === "queue" && rest.length >= 2 ? decodeURIComponent(rest[0]) : "/";
  state.queue = state.view === "queue" ? decodeURIComponent(rest.slice(rest.length >= 2 ? 1 : 0).join("/")) : null;
  for (const s of document.querySelectorAll(".view")) s.hidden = s.id !== "view-" + state.view;
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.dataset.view === state.view || (state.view === "queue" && a.dataset.view === "queues"));
  }
  $("peeked").textContent = "";
  refresh();
  startPolling();
}

function startPolling() {
  stopPolling();
  state.timer = setInterval(refresh, POLL_MS);
}

function stopPolling() {
  if (state.timer !== null) clearInterval(state.timer);
  state.timer = null;
}

async function refresh() {
  if (!state.me) return;
  try {
    await RENDER[state.view]();
  } catch (e) {
    if (e.status !== 401) notice(e.message);
  }
}

function card(parent, label, value) {
  const c = el("div", null, "card");
  c.appendChild(el("b", value));
  c.appendChild(el("span", label));
  parent.appendChild(c);
}

function fill(tableId, rows, cells) {
  const body = $(tableId).tBodies[0];
  body.textContent = "";
  for (const row of rows) {
    const tr = document.createElement("tr");
    for (const c of cells(row, tr)) tr.appendChild(c instanceof Node ? c : el("td", c));
    body.appendChild(tr);
  }
}

function when(t) { return typeof t === "number" ? new Date(t * 1000).toLocaleString() : "–"; }
function num(v) { return el("td", v === null || v === undefined ? "–" : v, "num"); }
function seconds(v) { return num(typeof v === "number" ? (v < 1 ? v.toPrecision(2) : v.toFixed(1)) : v); }
function rate(stats, name) { return stats && stats[name + "_details"] ? stats[name + "_details"].rate : 0; }

const RENDER = {
  async overview() {
    const [o, history] = await Promise.all([api("GET", "/api/overview"), api("GET", "/api/rates")]);
    const totals = $("totals");
    totals.textContent = "";
    card(totals, "ready", o.queue_totals.messages_ready);
    card(totals, "unacked", o.queue_totals.messages_unacknowledged);
    card(totals, "delayed", o.queue_totals.messages_delayed);
    card(totals, "queues", o.object_totals.queues);
    card(totals, "connections", o.object_totals.connections);
    card(totals, "consumers", o.object_totals.consumers);
    card(totals, "publish/s", rate(o.message_stats, "publish"));
    card(totals, "deliver/s", rate(o.message_stats, "deliver_get"));
    const mib = (n) => (n / 1048576).toFixed(1) + " MiB";
    card(totals, "message memory of " + mib(o.memory.message_limit), mib(o.memory.message_bytes));
    card(totals, "broker RSS", mib(o.memory.rss_bytes));
    if (o.disk_free !== null) card(totals, "disk free (limit " + mib(o.disk_free_limit) + ")", mib(o.disk_free));
    const alarms = $("alarms");
    alarms.textContent = "";
    for (const [name, on] of Object.entries(o.alarms)) {
      if (on) alarms.appendChild(el("div", name + " alarm: publishers are held", "alarm"));
    }
    drawChart($("chart"), history);
  },

  async queues() {
    // Filtered, sorted and paged by the broker: the page fetches only the
    // rows and columns it shows, however many queues there are.
    const params = new URLSearchParams({
      page: "1", page_size: String(PAGE_SIZE), sort: state.sort, sort_reverse: String(!state.asc),
      columns: QUEUE_COLUMNS,
    });
    const filter = $("queue-filter").value.trim();
    if (filter) params.set("name", filter);
    const r = await api("GET", "/api/queues?" + params.toString());
    $("queues-count").textContent = r.filtered_count > r.item_count
      ? "showing " + r.item_count + " of " + r.filtered_count + " (filter or sort to see others)"
      : r.filtered_count + " queue(s)";
    for (const th of document.querySelectorAll("#queues-table th")) {
      th.classList.toggle("sorted", th.dataset.sort === state.sort);
      th.classList.toggle("asc", th.dataset.sort === state.sort && state.asc);
    }
    fill("queues-table", r.items, (q, tr) => {
      tr.dataset.queue = q.name;
      tr.dataset.vhost = q.vhost;
      const link = el("a", q.name);
      link.href = "#/queue/" + encodeURIComponent(q.vhost) + "/" + encodeURIComponent(q.name);
      const name = el("td");
      name.appendChild(link);
      const ready = num(q.messages_ready);
      ready.classList.add("ready");
      return [q.vhost, name, ready, num(q.messages_unacknowledged), num(q.messages_delayed), num(q.consumers),
        num(rate(q.message_stats, "publish")), num(rate(q.message_stats, "deliver_get")), num(q.oldest_ready_age)];
    });
  },

  async queue() {
    const r = await api("GET", q(state.queue));
    $("queue-name").textContent = r.name + (r.vhost === "/" ? "" : " (vhost " + r.vhost + ")");
    const stats = $("queue-stats");
    stats.textContent = "";
    card(stats, "ready", r.messages_ready);
    stats.lastChild.id = "queue-ready";
    card(stats, "unacked", r.messages_unacknowledged);
    card(stats, "delayed", r.messages_delayed);
    card(stats, "consumers", r.consumers);
    card(stats, "oldest ready (s)", r.oldest_ready_age === null ? "–" : r.oldest_ready_age);
    card(stats, "oldest lease (s)", r.oldest_lease_age === null ? "–" : r.oldest_lease_age);
    card(stats, "publish/s", rate(r.message_stats, "publish"));
    card(stats, "ack/s", rate(r.message_stats, "ack"));
    if (r.dead_letter_queue) card(stats, "dead-letters to", r.dead_letter_queue);
  },

  async exchanges() {
    const [ex, b] = await Promise.all([api("GET", "/api/exchanges"), api("GET", "/api/bindings")]);
    fill("exchanges-table", ex, (r) => [r.vhost, r.name, r.type, r.durable ? "yes" : "no"]);
    fill("bindings-table", b, (r) => [r.vhost, r.source, r.destination, r.routing_key]);
  },

  async connections() {
    const [c, cons] = await Promise.all([api("GET", "/api/connections"), api("GET", "/api/consumers")]);
    fill("connections-table", c, (r) => [r.name, r.vhost, r.user, r.client_properties.connection_name, num(r.consumers), num(r.unsettled), num(r.recv_oct), num(r.send_oct)]);
    fill("consumers-table", cons, (r) => [r.channel_details.connection_name, r.consumer_tag, r.queue.name, num(r.prefetch_count), num(r.unsettled)]);
  },

  async users() {
    let users = [], perms = [];
    try {
      [users, perms] = await Promise.all([api("GET", "/api/users"), api("GET", "/api/permissions")]);
    } catch (e) {
      if (e.status === 403) { notice("users and permissions: administrators only"); } else throw e;
    }
    fill("users-table", users, (r) => [r.name, r.tags.join(", ")]);
    fill("permissions-table", perms, (r) => [r.user, r.vhost, r.configure, r.write, r.read]);
  },

  async tasks() {
    const [w, s, t] = await Promise.all([api("GET", "/api/workers"), api("GET", "/api/schedules"), api("GET", "/api/tasks")]);
    fill("workers-table", w, (r) => [r.vhost, r.hostname, r.online ? "online" : "offline", r.pool || "–",
      num(r.concurrency), num(r.pid), num(r.active),
      num(r.processed), (r.loadavg || []).map((x) => Number(x).toFixed(2)).join(" "), when(r.last_heartbeat)]);
    fill("schedules-table", s, (r) => {
      const cell = el("td");
      const path = "/api/schedules/" + encodeURIComponent(r.vhost) + "/" + encodeURIComponent(r.name) + "/";
      for (const [label, action] of [["Run now", "run"], r.paused ? ["Resume", "resume"] : ["Pause", "pause"]]) {
        const b = el("button", label);
        b.type = "button";
        b.dataset.action = action;
        b.addEventListener("click", () => act(action + " " + r.name, async () => {
          await api("POST", path + action);
          return action + ": " + r.name;
        }));
        cell.appendChild(b);
      }
      return [r.vhost, r.name, r.spec, (r.exchange || "(default)") + " → " + r.routing_key,
        r.paused ? "paused" : when(r.next_run), when(r.last_run), cell];
    });
    fill("tasks-table", t, (r) => {
      const detail = el("td");
      if (r.traceback) {
        const d = document.createElement("details");
        d.appendChild(el("summary", r.exception || r.exc_type + ": " + r.exc_message));
        d.appendChild(el("pre", r.traceback));
        detail.appendChild(d);
      } else {
        detail.textContent = r.result === undefined ? "" : String(r.result);
      }
      return [r.vhost || "/", r.task_id, r.name || "", r.state || "", r.hostname || "", seconds(r.runtime), detail,
        taskActions(r)];
    });
  },
};

// --- task actions: hidden from users who may only read --------------------------------

const FINAL_STATES = ["SUCCESS", "FAILURE", "REVOKED"];

function canChange() {
  const me = state.me;
  return Boolean(me && (me.open || me.tags.includes("administrator") || me.tags.includes("management")));
}

function taskActions(r) {
  const cell = el("td");
  if (!canChange()) return cell;
  const path = "/api/tasks/" + encodeURIComponent(r.vhost || "/") + "/" + encodeURIComponent(r.task_id) + "/";
  const actions = [];
  // A failure stored without the task's message says retriable: false (see docs/management.md).
  if (r.state === "FAILURE" && r.retriable !== false) actions.push(["Retry", "retry", "sent again: "]);
  if (!FINAL_STATES.includes(r.state)) actions.push(["Revoke", "revoke", "revoked: "]);
  for (const [label, action, done] of actions) {
    const b = el("button", label);
    b.type = "button";
    b.dataset.action = action;
    b.dataset.task = r.task_id;
    b.addEventListener("click", () => act(action + " " + r.task_id, async () => {
      const res = await api("POST", path + action, action === "revoke" ? {} : undefined);
      return done + r.task_id + (res.exchange ? " (to " + res.exchange + ", key " + res.routing_key + ")" : "");
    }));
    cell.appendChild(b);
  }
  return cell;
}

// --- queue actions ----------------------------------------------------------------

async function act(what, fn) {
  try {
    const msg = await fn();
    notice(msg || what + ": done", true);
    await refresh();
  } catch (e) {
    notice(what + " refused: " + e.message);
  }
}

function wireQueueActions() {
  $("purge").addEventListener("click", () => {
    if (!window.confirm("Purge every ready message of " + state.queue + "?")) return;
    act("purge", async () => { await api("DELETE", q(state.queue) + "/contents"); return "purged " + state.queue; });
  });
  $("publish").addEventListener("click", () => act("publish", async () => {
    const r = await api("POST", "/api/exchanges/" + encodeURIComponent(state.vhost) + "/amq.default/publish",
      { routing_key: state.queue, payload: $("publish-payload").value, payload_encoding: "string", properties: {} });
    return r.routed ? "published to " + state.queue : "not routed";
  }));
  $("peek").addEventListener("click", () => act("peek", async () => {
    const msgs = await api("POST", q(state.queue) + "/get",
      { count: Number($("peek-count").value) || 1, ackmode: "ack_requeue_true", encoding: "auto", truncate: 50000 });
    const out = $("peeked");
    out.textContent = "";
    for (const m of msgs) {
      out.appendChild(el("pre", "routing key: " + m.routing_key + "   attempts: " + m.attempts +
        "\nheaders: " + JSON.stringify(m.properties.headers) + "\n" + m.payload));
    }
    return msgs.length + " message(s) peeked (left in the queue)";
  }));
  $("redrive").addEventListener("click", () => act("redrive", async () => {
    const body = {};
    const count = Number($("redrive-count").value);
    if (count > 0) body.count = count;
    const to = $("redrive-to").value.trim();
    if (to) body.to = to;
    const r = await api("POST", q(state.queue) + "/redrive", body);
    return "moved " + r.moved + ", " + r.remaining + " left";
  }));
}

// --- the chart: rates over the last samples, one line per series -------------------

function drawChart(canvas, history) {
  const ctx = canvas.getContext("2d");
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || canvas.width, h = canvas.clientHeight || canvas.height;
  canvas.width = w * ratio;
  canvas.height = h * ratio;
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const series = [["publish", "#1f77b4"], ["deliver_get", "#2ca02c"], ["ack", "#d62728"]];
  const pad = { l: 48, r: 8, t: 8, b: 20 };
  let max = 1;
  for (const p of history) for (const [k] of series) max = Math.max(max, p[k] || 0);
  const x = (i) => pad.l + (history.length < 2 ? 0 : i * (w - pad.l - pad.r) / (history.length - 1));
  const y = (v) => h - pad.b - (v / max) * (h - pad.t - pad.b);
  ctx.strokeStyle = "#ccd";
  ctx.fillStyle = "#556";
  ctx.font = "11px sans-serif";
  for (let i = 0; i <= 4; i++) {
    const v = max * i / 4;
    ctx.beginPath();
    ctx.moveTo(pad.l, y(v));
    ctx.lineTo(w - pad.r, y(v));
    ctx.stroke();
    ctx.fillText(v >= 100 ? v.toFixed(0) : v.toFixed(1), 4, y(v) + 4);
  }
  if (!history.length) {
    ctx.fillText("collecting samples (every 5 s)…", pad.l + 8, h / 2);
    return;
  }
  for (const [k, color] of series) {
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    history.forEach((p, i) => (i ? ctx.lineTo(x(i), y(p[k] || 0)) : ctx.moveTo(x(i), y(p[k] || 0))));
    ctx.stroke();
  }
}

// --- start ------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", login);
  $("queue-filter").addEventListener("input", () => RENDER.queues());
  for (const th of document.querySelectorAll("#queues-table th[data-sort]")) {
    th.addEventListener("click", () => {
      state.asc = state.sort === th.dataset.sort ? !state.asc : true;
      state.sort = th.dataset.sort;
      RENDER.queues();
    });
  }
  wireQueueActions();
  window.addEventListener("hashchange", () => { notice(""); route(); });
  start();
});
