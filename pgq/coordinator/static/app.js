// pgq dashboard: reads the HTTP API, follows GET /events (fetch-streamed, so the token
// travels in a header), re-reads only what an event touched. No build step, no library.
"use strict";

const STATUSES = ["waiting", "queued", "running", "succeeded", "dead", "cancelled"];
// columns a phone leaves out of the overview (the jobs view still filters by them)
const RARE = new Set(["waiting", "cancelled"]);
const state = { session: null, view: null, stream: null, refresh: new Map() };

// -- tiny DOM helpers --------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
// replaceChildren would show null as the text "null": skip empties as h() does
function fill(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false && c !== ""));
}
const pill = (s) => h("span", { class: `pill ${s}` }, s);
const main = () => document.getElementById("main");

function toast(text) {
  const t = document.getElementById("toast");
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 4000);
}

function ago(iso) {
  if (!iso) return "—";
  const s = (Date.now() - Date.parse(iso)) / 1000;
  const a = Math.abs(s);
  const f = a < 60 ? `${Math.round(a)}s` : a < 3600 ? `${Math.round(a / 60)}m`
    : a < 86400 ? `${Math.round(a / 3600)}h` : `${Math.round(a / 86400)}d`;
  return s >= 0 ? `${f} ago` : `in ${f}`;
}
const when = (iso) => (iso ? h("time", { datetime: iso, title: iso }, ago(iso)) : "—");

function errorText(err) {
  if (!err) return "";
  if (typeof err === "string") return err;
  return err.message || JSON.stringify(err);
}

// -- API ------------------------------------------------------------------------------

function token() { return sessionStorage.getItem("pgq-token") || ""; }

async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, {
    method: options.method || "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  if (res.status === 401) {
    askForToken(token() ? "That token was refused." : "");
    throw new Error("a token is needed");
  }
  const data = res.status === 204 ? null : await res.json().catch(() => null);
  if (res.status === 403 && path === "/ui/api/session") {
    askForToken("That token may not read the dashboard: it needs the reader or admin scope.");
    throw new Error("a reader token is needed");
  }
  if (res.status === 403 && options.method && options.method !== "GET") {
    // The token may look but not act: hide every action from now on, redraw the view.
    if (state.session) state.session.can = [];
    setTimeout(route, 0);
    throw new Error("this token may only read; acting needs an admin token");
  }
  if (!res.ok) {
    if (options.allow && options.allow.includes(res.status)) return { status: res.status, data };
    const msg = (data && data.error && data.error.message) || `${res.status} ${res.statusText}`;
    throw new Error(msg);
  }
  return options.allow ? { status: res.status, data } : data;
}

function has(feature) {
  return !!(state.session && state.session.features && state.session.features[feature]);
}

function can(action) {
  return !!(state.session && state.session.can && state.session.can.includes(action));
}

async function act(label, fn) {
  try {
    const out = await fn();
    toast(label);
    return out;
  } catch (e) {
    toast(`${label} failed: ${e.message}`);
    return null;
  }
}

// -- token --------------------------------------------------------------------------------

function askForToken(problem) {
  const dialog = document.getElementById("token-dialog");
  const err = document.getElementById("token-error");
  err.hidden = !problem;
  err.textContent = problem || "";
  if (!dialog.open) dialog.showModal();
  document.getElementById("token-input").focus();
}

function setupToken() {
  document.getElementById("token-form").addEventListener("submit", () => {
    sessionStorage.setItem("pgq-token", document.getElementById("token-input").value.trim());
    start();
  });
}

// -- live events --------------------------------------------------------------------------

async function follow() {
  const live = document.getElementById("live");
  if (state.stream) state.stream.abort();
  const ctrl = new AbortController();
  state.stream = ctrl;
  const headers = { Accept: "text/event-stream" };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  try {
    const res = await fetch("/events", { headers, signal: ctrl.signal });
    if (!res.ok || !res.body) throw new Error(`${res.status}`);
    live.textContent = "live";
    live.className = "live on";
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const frame = buf.slice(0, i);
        buf = buf.slice(i + 2);
        let name = "message";
        let data = "";
        for (const line of frame.split("\n")) {
          if (line.startsWith("event: ")) name = line.slice(7);
          else if (line.startsWith("data: ")) data += line.slice(6);
        }
        if (data) onEvent(name, JSON.parse(data));
      }
    }
  } catch (e) {
    if (ctrl.signal.aborted) return;
  }
  if (ctrl.signal.aborted) return;
  live.textContent = "reconnecting…";
  live.className = "live off";
  setTimeout(() => { if (state.stream === ctrl) { follow(); onEvent("resync", {}); } }, 2000);
}

// An event schedules a re-read of what the current view shows about it, at most once per
// 250 ms per thing, so a burst of thousands of events costs a few requests.
function later(key, fn) {
  if (state.refresh.has(key)) return;
  state.refresh.set(key, setTimeout(() => { state.refresh.delete(key); fn(); }, 250));
}

function onEvent(name, ev) {
  const v = state.view;
  if (!v) return;
  if (name === "resync") { later("view", () => v.reload && v.reload()); return; }
  if (v.onEvent) v.onEvent(name, ev);
}

// -- views --------------------------------------------------------------------------------

function queryOf(hash) {
  const q = hash.indexOf("?");
  return new URLSearchParams(q >= 0 ? hash.slice(q + 1) : "");
}

function route() {
  const hash = location.hash || "#/";
  const path = hash.split("?")[0];
  let m;
  let view;
  if (path === "#/" || path === "#") view = overviewView();
  else if (path === "#/jobs") view = jobsView(queryOf(hash), {});
  else if (path === "#/dead") view = jobsView(new URLSearchParams({ status: "dead" }), { dead: true });
  else if (path === "#/schedules") view = schedulesView();
  else if ((m = path.match(/^#\/jobs\/(\d+)$/))) view = jobView(Number(m[1]));
  else view = { render: (el) => el.append(h("h2", {}, "Not found"), h("p", {}, h("a", { href: "#/" }, "Overview"))) };
  const navKey = path.startsWith("#/jobs/") ? "jobs" : path.slice(2) || "overview";
  document.querySelectorAll("[data-nav]").forEach((a) => {
    if (a.dataset.nav === navKey) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  });
  state.view = view;
  const el = main();
  el.replaceChildren();
  view.render(el);
}

// Overview: counts per queue and status (pgq.stats()), queue controls, last hour's charts.
function overviewView() {
  const view = {};
  const box = h("div", { "data-view": "overview" });
  view.reload = async () => {
    const [ov, queues] = await Promise.all([
      api("/ui/api/overview"),
      has("queues") ? api("/queues", { allow: [404] }).catch(() => ({ status: 404 })) : { status: 404 },
    ]);
    // Reloads (every burst of events, every action) rebuild the table: a limits form the
    // user has open is carried over as it is (open, half-typed, focused), not replaced by
    // a closed one under their cursor.
    const openForms = new Map([...box.querySelectorAll("details.limits[open]")].map((d) => [d.dataset.queue, d]));
    const perQueue = new Map();
    const totals = Object.fromEntries(STATUSES.map((s) => [s, 0]));
    for (const row of ov.stats) {
      if (!perQueue.has(row.queue)) perQueue.set(row.queue, { counts: {}, oldest: null });
      const q = perQueue.get(row.queue);
      q.counts[row.status] = row.count;
      if (row.status === "queued") q.oldest = row.oldest_run_at;
      totals[row.status] = (totals[row.status] || 0) + row.count;
    }
    const settings = new Map();
    const flow = queues.status === 200 && queues.data && Array.isArray(queues.data.queues);
    if (flow) for (const q of queues.data.queues) {
      settings.set(q.queue, q);
      if (!perQueue.has(q.queue)) perQueue.set(q.queue, { counts: {}, oldest: null });
    }
    const head = h("tr", {}, h("th", { scope: "col" }, "Queue"),
      STATUSES.map((s) => h("th", { scope: "col", class: `num${RARE.has(s) ? " rare" : ""}` }, pill(s))),
      h("th", { scope: "col", class: "hide-narrow" }, "Oldest queued"),
      flow ? h("th", { scope: "col" }, "Flow") : null);
    const rows = [...perQueue.keys()].sort().map((name) => {
      const q = perQueue.get(name);
      const set = settings.get(name);
      return h("tr", { "data-queue": name },
        h("th", { scope: "row" }, name),
        STATUSES.map((s) => {
          const n = q.counts[s] || 0;
          const link = h("a", { href: `#/jobs?status=${s}&queue=${encodeURIComponent(name)}`,
            "aria-label": `${n} ${s} jobs in ${name}` }, n.toLocaleString());
          return h("td", { class: `num${s === "dead" && n ? " count-dead" : ""}${RARE.has(s) ? " rare" : ""}`, "data-status": s }, link);
        }),
        // a future run_at is a retry waiting for its backoff (or a delayed job): say so
        h("td", { class: "hide-narrow" }, !q.oldest ? "—" : Date.parse(q.oldest) > Date.now() ? ["next due ", when(q.oldest)] : when(q.oldest)),
        flow ? h("td", {}, queueControls(name, set, openForms.get(name))) : null);
    });
    const total = h("tr", { "data-queue": "*" }, h("th", { scope: "row" }, "all"),
      STATUSES.map((s) => h("td", { class: `num${RARE.has(s) ? " rare" : ""}`, "data-status": s }, h("strong", {}, (totals[s] || 0).toLocaleString()))),
      h("td", { class: "hide-narrow" }), flow ? h("td", {}) : null);
    const focused = document.activeElement;
    fill(box,
      h("h2", {}, "Queues"),
      h("div", { class: "card scroll" }, h("table", { "aria-label": "Jobs per queue and status" },
        h("thead", {}, head), h("tbody", {}, rows, total))),
      flow ? null : h("p", { class: "muted" }, "Pause, resume and limits appear here when this coordinator serves /queues."),
      h("div", { class: "grid" },
        chart("Throughput, last hour (succeeded per minute)", ov.finished_per_minute, ["succeeded"], "var(--succeeded)"),
        chart("Failures, last hour (dead or cancelled per minute)", ov.finished_per_minute, ["dead", "cancelled"], "var(--dead)")));
    if (focused instanceof HTMLElement && focused.isConnected && document.activeElement !== focused) focused.focus();
  };
  view.render = (el) => { el.append(box); view.reload().catch((e) => fill(box, h("p", { class: "error" }, e.message))); };
  view.onEvent = () => later("overview", () => view.reload().catch(() => {}));
  return view;
}

function queueControls(name, set, openForm) {
  const wrap = h("div", { class: "actions" });
  if (!set) return wrap;
  const limits = [["concurrency", "at most"], ["key_concurrency", "per key"], ["rate", "rate"]]
    .filter(([k]) => set[k] !== null && set[k] !== undefined)
    .map(([k, label]) => `${label} ${set[k]}${k === "rate" ? "/s" : ""}`).join(", ");
  wrap.append(set.paused ? h("span", { class: "pill waiting" }, "paused") : "", limits ? h("span", { class: "muted" }, limits) : "");
  if (can("queues")) {
    const verb = set.paused ? "resume" : "pause";
    wrap.append(h("button", {
      type: "button", "aria-label": `${verb} queue ${name}`,
      onclick: () => act(`${verb}d ${name}`, () => api(`/queues/${encodeURIComponent(name)}/${verb}`, { method: "POST" }))
        .then(() => state.view.reload && state.view.reload()),
    }, verb === "pause" ? "Pause" : "Resume"), openForm || limitsForm(name, set));
  }
  return wrap;
}

// PUT /queues/{queue}/limits: all four at once, an empty field meaning no limit.
function limitsForm(name, set) {
  const fields = [["concurrency", "Concurrency", "1"], ["key_concurrency", "Per key", "1"],
    ["rate", "Rate /s", "0.001"], ["burst", "Burst", "1"]];
  const inputs = fields.map(([k, label, step]) => {
    const input = h("input", { type: "number", min: step, step, id: `limit-${name}-${k}`, name: k, inputmode: "decimal" });
    if (set[k] !== null && set[k] !== undefined) input.value = set[k];
    return h("label", { for: input.id }, label, input);
  });
  const submit = (ev) => {
    ev.preventDefault();
    const body = {};
    for (const [k] of fields) {
      const v = ev.target.elements[k].value.trim();
      if (v !== "") body[k] = Number(v);
    }
    act(`limits of ${name} set`, () => api(`/queues/${encodeURIComponent(name)}/limits`, { method: "PUT", body }))
      .then((saved) => {
        if (saved !== null) details.open = false; // saved: the reload shows the new limits
        return state.view.reload && state.view.reload();
      });
  };
  const details = h("details", { class: "limits", "data-queue": name },
    h("summary", { "aria-label": `limits of queue ${name}` }, "Limits"),
    h("form", { onsubmit: submit }, inputs, h("button", { type: "submit" }, "Save")));
  return details;
}

function chart(title, rows, statuses, color) {
  const now = new Date();
  now.setSeconds(0, 0);
  const start = now.getTime() - 59 * 60000;
  const bins = new Array(60).fill(0);
  for (const r of rows) {
    if (!statuses.includes(r.status)) continue;
    const i = Math.round((Date.parse(r.minute) - start) / 60000);
    if (i >= 0 && i < 60) bins[i] += r.count;
  }
  const max = Math.max(1, ...bins);
  const total = bins.reduce((a, b) => a + b, 0);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 600 120");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `${title}: ${total} in total, at most ${max === 1 && total === 0 ? 0 : max} in a minute`);
  bins.forEach((n, i) => {
    const r = document.createElementNS(ns, "rect");
    const hgt = (n / max) * 110;
    r.setAttribute("x", i * 10 + 1);
    r.setAttribute("y", 115 - hgt);
    r.setAttribute("width", 8);
    r.setAttribute("height", Math.max(hgt, n ? 1 : 0));
    r.setAttribute("fill", color);
    const t = document.createElementNS(ns, "title");
    t.textContent = `${n} at ${new Date(start + i * 60000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}`;
    r.append(t);
    svg.append(r);
  });
  const base = document.createElementNS(ns, "line");
  for (const [k, v] of Object.entries({ x1: 0, x2: 600, y1: 115.5, y2: 115.5, stroke: "#b9bdc8" })) base.setAttribute(k, v);
  svg.append(base);
  return h("section", { class: "card chart" }, h("h3", {}, title), svg,
    h("div", { class: "legend" }, h("span", {}, `${total.toLocaleString()} in the last hour`), h("span", {}, `peak ${total ? max : 0}/min`)));
}

// Jobs list (and the dead letters): filters, cursor pages, live rows.
function jobsView(params, opts) {
  const view = {};
  const status = params.get("status") || "";
  const queue = params.get("queue") || "";
  const type = params.get("type") || "";
  const after = params.get("after") || "";
  const limit = 50;
  const box = h("div", { "data-view": opts.dead ? "dead" : "jobs" });
  const tbody = h("tbody", {});
  const rowsById = new Map();

  function row(j) {
    return h("tr", { "data-job": j.id, "data-status": j.status },
      h("td", { class: "num" }, h("a", { href: `#/jobs/${j.id}` }, j.id)),
      h("td", {}, j.type),
      h("td", { class: "hide-narrow" }, j.queue),
      h("td", {}, pill(j.status)),
      h("td", { class: "num hide-narrow" }, `${j.attempts}/${j.max_attempts}`),
      h("td", {}, j.error && (j.status === "dead" || opts.dead) ? h("span", { class: "errmsg" }, errorText(j.error).slice(0, 160)) : progressCell(j)),
      h("td", { class: "hide-narrow" }, when(j.updated_at)),
      opts.dead && can("retry") ? h("td", {}, h("button", {
        type: "button", "aria-label": `Retry job ${j.id}`,
        onclick: () => act(`Job ${j.id} replayed`, () => api(`/jobs/${j.id}/retry`, { method: "POST" })).then(() => view.reload()),
      }, "Retry")) : null);
  }

  const form = h("form", { class: "filters", "aria-label": "Filter jobs", onsubmit: (e) => {
    e.preventDefault();
    const p = new URLSearchParams();
    for (const k of ["status", "queue", "type"]) { const v = form.elements[k].value.trim(); if (v) p.set(k, v); }
    location.hash = `#/jobs${p.toString() ? `?${p}` : ""}`;
  } },
  h("label", {}, "Status", h("select", { name: "status" }, h("option", { value: "" }, "any"),
    STATUSES.map((s) => h("option", { value: s, selected: s === status }, s)))),
  h("label", {}, "Queue", h("input", { name: "queue", value: queue, placeholder: "any", size: 12 })),
  h("label", {}, "Type", h("input", { name: "type", value: type, placeholder: "any", size: 16 })),
  h("button", { type: "submit", class: "primary" }, "Filter"));

  view.reload = async () => {
    const q = new URLSearchParams({ limit: String(limit) });
    if (status) q.set("status", status);
    if (queue) q.set("queue", queue);
    if (type) q.set("type", type);
    if (after) q.set("after", after);
    const page = await api(`/jobs?${q}`);
    rowsById.clear();
    tbody.replaceChildren(...page.jobs.map((j) => { const r = row(j); rowsById.set(j.id, r); return r; }));
    if (!page.jobs.length) tbody.append(h("tr", {}, h("td", { colspan: 8, class: "muted" }, "No jobs match.")));
    const nextP = new URLSearchParams(q);
    nextP.delete("limit");
    if (page.next) nextP.set("after", page.next);
    pager.replaceChildren(
      after ? h("a", { href: `#/${opts.dead ? "dead" : "jobs"}${firstPageQuery()}` }, "First page") : "",
      page.next ? h("a", { href: `#/jobs?${nextP}`, rel: "next" }, "Next page →") : h("span", { class: "muted" }, "Last page"));
  };
  function firstPageQuery() {
    const p = new URLSearchParams();
    if (!opts.dead && status) p.set("status", status);
    if (queue) p.set("queue", queue);
    if (type) p.set("type", type);
    return p.toString() ? `?${p}` : "";
  }
  const pager = h("nav", { class: "pager", "aria-label": "Pages" });

  view.onEvent = async (name, ev) => {
    if (queue && ev.queue !== queue) return;
    if (type && ev.type !== type) return;
    const existing = rowsById.get(ev.id);
    if (existing) {
      later(`job${ev.id}`, async () => {
        const j = await api(`/jobs/${ev.id}`).catch(() => null);
        if (!j) return;
        const r = row(j);
        r.classList.add("flash");
        existing.replaceWith(r);
        rowsById.set(j.id, r);
      });
    } else if (!after && (!status || ev.status === status)) {
      later("list", () => view.reload().catch(() => {}));
    }
  };

  view.render = (el) => {
    const title = opts.dead ? "Dead letters" : "Jobs";
    const bulk = h("div", { class: "actions" });
    if (opts.dead && can("bulk")) {
      bulk.append(h("button", {
        type: "button", class: "primary",
        onclick: () => {
          if (!confirm(`Replay every dead job${queue ? ` in ${queue}` : ""}${type ? ` of type ${type}` : ""}?`)) return;
          act("Dead jobs replayed", () => api("/jobs/retry", { method: "POST", body: { statuses: ["dead"], ...(queue ? { queue } : {}), ...(type ? { type } : {}) } }))
            .then((r) => { if (r) toast(`${r.count} dead jobs replayed`); view.reload(); });
        },
      }, "Replay all dead jobs"));
    }
    if (!opts.dead && can("bulk") && ["queued", "waiting"].includes(status)) {
      bulk.append(h("button", {
        type: "button", class: "danger",
        onclick: () => {
          if (!confirm(`Cancel every ${status} job${queue ? ` in ${queue}` : ""}${type ? ` of type ${type}` : ""}?`)) return;
          act("Jobs cancelled", () => api("/jobs/cancel", { method: "POST", body: { statuses: [status], ...(queue ? { queue } : {}), ...(type ? { type } : {}) } }))
            .then((r) => { if (r) toast(`${r.count} jobs cancelled`); view.reload(); });
        },
      }, `Cancel all ${status}`));
    }
    el.append(box);
    box.append(h("h2", {}, title), opts.dead ? h("p", { class: "muted" }, "Jobs that ran out of attempts or failed permanently. Open one to read every attempt's error.") : form,
      bulk,
      h("div", { class: "card scroll" }, h("table", { "aria-label": title },
        h("thead", {}, h("tr", {}, h("th", { scope: "col", class: "num" }, "Id"), h("th", { scope: "col" }, "Type"),
          h("th", { scope: "col", class: "hide-narrow" }, "Queue"), h("th", { scope: "col" }, "Status"),
          h("th", { scope: "col", class: "num hide-narrow" }, "Attempts"), h("th", { scope: "col" }, opts.dead ? "Error" : "Progress / error"),
          h("th", { scope: "col", class: "hide-narrow" }, "Updated"), opts.dead && can("retry") ? h("th", { scope: "col" }, "Action") : null)),
        tbody)), pager);
    view.reload().catch((e) => tbody.replaceChildren(h("tr", {}, h("td", { class: "error" }, e.message))));
  };
  return view;
}

function fraction(p) {
  if (!p || typeof p !== "object") return null;
  if (typeof p.percent === "number") return Math.max(0, Math.min(1, p.percent / 100));
  if (typeof p.done === "number" && typeof p.total === "number" && p.total > 0) return Math.max(0, Math.min(1, p.done / p.total));
  return null;
}

function progressBar(p) {
  const f = fraction(p);
  if (f === null) return p ? h("span", { class: "muted" }, p.message || JSON.stringify(p).slice(0, 80)) : "";
  const pct = Math.round(f * 100);
  return h("div", {},
    h("div", { class: "bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": pct, "aria-label": "Progress" },
      widthSpan(pct)),
    h("span", { class: "muted" }, `${pct}%${p.message ? ` — ${p.message}` : ""}`));
}
// the page's CSP forbids style attributes; a CSSOM assignment is allowed
function widthSpan(pct) { const s = h("span", {}); s.style.width = `${pct}%`; return s; }
function progressCell(j) { return j.status === "running" && j.progress ? progressBar(j.progress) : j.error ? h("span", { class: "errmsg" }, errorText(j.error).slice(0, 100)) : ""; }

// One job: facts, arguments, result, progress, every attempt's error, timeline, actions.
function jobView(id) {
  const view = {};
  const box = h("div", { "data-view": "job", "data-job": id });
  view.reload = async () => {
    // a page of one from the list, not GET /jobs/{id}: an unknown id then answers 200
    // with no job instead of a 404 that the browser logs as a console error
    const found = await api(`/jobs?after=${id - 1}&limit=1`);
    const r = found.jobs.length && found.jobs[0].id === id ? { status: 200, data: found.jobs[0] } : { status: 404 };
    if (r.status === 404) { fill(box, h("h2", {}, `Job ${id}`), h("p", {}, "No such job (it may have been pruned).")); return; }
    const j = r.data;
    // a live reload rebuilds the page: keep what the reader opened and what they typed
    const opened = new Set([...box.querySelectorAll("details[data-keep][open]")].map((d) => d.dataset.keep));
    const oldCopy = box.querySelector("details.copy");
    const errors = await api(`/ui/api/jobs/${id}/errors`).catch(() => ({ errors: j.error ? [j.error] : [] }));
    const errorsCard = errorsSection(errors.errors);
    const actions = h("div", { class: "actions" });
    if (can("retry") && ["dead", "cancelled"].includes(j.status)) {
      actions.append(h("button", { type: "button", class: "primary", onclick: () => act(`Job ${id} replayed`, () => api(`/jobs/${id}/retry`, { method: "POST" })).then(view.reload) }, "Retry"));
    }
    if (can("cancel") && ["waiting", "queued", "running"].includes(j.status)) {
      actions.append(h("button", { type: "button", class: "danger", onclick: () => { if (confirm(`Cancel job ${id}?`)) act(`Job ${id} cancelled`, () => api(`/jobs/${id}`, { method: "DELETE" })).then(view.reload); } }, "Cancel"));
    }
    const timeline = [["created", j.created_at], ["due", j.run_at],
      ...errors.errors.map((e) => [`attempt ${e.attempt ?? "?"} failed${e.kind ? ` (${e.kind})` : ""}`, e.at]),
      ["finished", j.finished_at]].filter(([, t]) => t).sort((a, b) => Date.parse(a[1]) - Date.parse(b[1]));
    fill(box, 
      h("h2", {}, `Job ${id} `, pill(j.status)),
      actions,
      j.status === "dead" ? errorsCard : null,
      can("enqueue") && ["dead", "cancelled"].includes(j.status) ? oldCopy || copyForm(j) : null,
      h("div", { class: "grid" },
        h("section", { class: "card" }, h("h3", {}, "Facts"), h("dl", { class: "facts" },
          ...[["Type", j.type], ["Queue", j.queue], ["Attempts", `${j.attempts} of ${j.max_attempts}`], ["Priority", j.priority],
            ["Timeout", `${j.timeout_seconds}s`], ["Worker", j.worker_id || "—"], ["Updated", when(j.updated_at)],
            ["Depends on", j.depends_on && j.depends_on.length ? j.depends_on.map((d, i) => [i ? ", " : "", h("a", { href: `#/jobs/${d}` }, d)]) : "—"]]
            .map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]))),
        h("section", { class: "card" }, h("h3", {}, "Progress"), j.progress ? progressBar(j.progress) : h("p", { class: "muted" }, j.status === "running" ? "No progress reported yet." : "—"),
          h("h3", {}, "Timeline"), h("ol", { class: "timeline" }, timeline.map(([k, t]) => h("li", {}, `${k} `, when(t)))))),
      j.status !== "dead" && errors.errors.length ? errorsCard : null,
      h("section", { class: "card" }, h("h3", {}, "Arguments"), h("pre", {}, JSON.stringify(j.arguments, null, 2))),
      j.result !== null || j.status === "succeeded"
        ? h("section", { class: "card" }, h("h3", {}, "Result"), h("pre", {}, JSON.stringify(j.result, null, 2)))
        : null);
    for (const d of box.querySelectorAll("details[data-keep]")) if (opened.has(d.dataset.keep)) d.open = true;
  };
  view.render = (el) => { el.append(box); view.reload().catch((e) => fill(box, h("p", { class: "error" }, e.message))); };
  view.onEvent = (name, ev) => { if (ev.id === id) later(`job${id}`, () => view.reload().catch(() => {})); };
  return view;
}

function errorsSection(errors) {
  return h("section", { class: "card" }, h("h3", {}, `Errors (${errors.length})`),
    errors.length ? h("ol", { class: "errors" }, [...errors].reverse().map(errorItem))
      : h("p", { class: "muted" }, "No error recorded."));
}

// One attempt's error: its message first, then when; a traceback with its own line breaks
// (folded), and whatever else the runner reported as JSON.
function errorItem(e) {
  const shown = ["message", "attempt", "at", "traceback", "type", "kind"];
  const rest = Object.fromEntries(Object.entries(e).filter(([k]) => !shown.includes(k)));
  return h("li", {},
    h("div", { class: "errmsg" }, errorText(e)),
    h("span", { class: "muted" }, `attempt ${e.attempt ?? "?"}, `, when(e.at),
      e.type || e.kind ? ` — ${[e.type, e.kind && `(${e.kind})`].filter(Boolean).join(" ")}` : ""),
    typeof e.traceback === "string" ? h("details", { "data-keep": `traceback-${e.attempt}-${e.at}` }, h("summary", {}, "Traceback"), h("pre", {}, e.traceback)) : null,
    Object.keys(rest).length ? h("pre", {}, JSON.stringify(rest, null, 2)) : null);
}

// Fix the cause and run again: a new job like this one, with the arguments as edited here.
function copyForm(j) {
  const area = h("textarea", { id: `copy-args-${j.id}`, rows: 6, spellcheck: "false" });
  area.value = JSON.stringify(j.arguments, null, 2);
  const submit = async (ev) => {
    ev.preventDefault();
    let args;
    try { args = JSON.parse(area.value); } catch (e) { toast(`The arguments are not JSON: ${e.message}`); return; }
    const body = { type: j.type, queue: j.queue, priority: j.priority, max_attempts: j.max_attempts,
      timeout_seconds: j.timeout_seconds, arguments: args, ...(j.concurrency_key ? { concurrency_key: j.concurrency_key } : {}) };
    const made = await act("New job enqueued", () => api("/jobs", { method: "POST", body }));
    if (made) location.hash = `#/jobs/${made.id}`;
  };
  return h("details", { class: "card copy" },
    h("summary", {}, "Edit the arguments and run a copy"),
    h("form", { onsubmit: submit },
      h("label", { for: area.id }, `Arguments of a new ${j.type} job (this one stays ${j.status})`),
      area,
      h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Enqueue the copy"))));
}

// Schedules: shown when this coordinator serves /schedules.
function schedulesView() {
  const view = {};
  const box = h("div", { "data-view": "schedules" });
  view.reload = async () => {
    const r = has("schedules") ? await api("/schedules", { allow: [404] }) : { status: 404 };
    if (r.status === 404 || !r.data || !Array.isArray(r.data.schedules)) {
      fill(box, h("h2", {}, "Schedules"), h("p", { class: "muted" }, "This coordinator does not serve /schedules yet."));
      return;
    }
    fill(box, h("h2", {}, "Schedules"), h("div", { class: "card scroll" }, h("table", { "aria-label": "Schedules" },
      h("thead", {}, h("tr", {}, ["Name", "Cron", "Type", "Queue", "Next run", "Last run", "State"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, r.data.schedules.map((s) => h("tr", {}, h("td", {}, s.name), h("td", {}, h("code", {}, s.cron), s.timezone && s.timezone !== "UTC" ? ` (${s.timezone})` : ""),
        h("td", {}, s.type), h("td", {}, s.queue), h("td", {}, when(s.next_run_at)), h("td", {}, when(s.last_run_at)),
        h("td", {}, s.paused ? pill("waiting") : "active")))))));
  };
  view.render = (el) => { el.append(box); view.reload().catch((e) => fill(box, h("p", { class: "error" }, e.message))); };
  return view;
}

// -- start ----------------------------------------------------------------------------------

async function start() {
  try {
    state.session = await api("/ui/api/session");
  } catch (e) {
    return;  // askForToken is showing
  }
  route();
  follow();
}

document.addEventListener("DOMContentLoaded", () => {
  setupToken();
  window.addEventListener("hashchange", route);
  document.getElementById("open-job").addEventListener("submit", (e) => {
    e.preventDefault();
    const id = document.getElementById("open-job-id").value.trim();
    if (/^\d+$/.test(id)) location.hash = `#/jobs/${id}`;
  });
  // relative times stay true without re-reading anything
  setInterval(() => document.querySelectorAll("time[datetime]").forEach((t) => { t.textContent = ago(t.getAttribute("datetime")); }), 15000);
  start();
});
