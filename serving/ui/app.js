// The dashboard: one pipeline, a form from its input schema, runs followed live over
// SSE, the run history from the capture store, live jobs and health figures.
// Plain browser JavaScript, no build step: served as is by the daemon (serving/ui.py).
"use strict";

const KEY_STORE = "serving.authKey";
const SVG = "http://www.w3.org/2000/svg";
const TERMINAL = new Set(["run_completed", "run_failed", "run_canceled"]);
const EVENTS = [
  "run_started", "step_started", "step_retrying", "step_completed", "step_failed",
  "progress", "chunk", "gap", "run_completed", "run_failed", "run_canceled",
];
const POLL_MS = { health: 2000, jobs: 2000, runs: 5000 };

const state = {
  config: { auth: false },
  key: sessionStorage.getItem(KEY_STORE),
  keyWaiters: null,
  info: null,
  fields: [],
  job: null,      // the job this page follows
  es: null,       // its EventSource
  lastSeq: 0,     // last event id seen: where a new stream resumes
  reconnects: 0,
  marks: new Map(), // step id -> [status, text] of the run shown, kept across redraws
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) node.append(child);
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  return node;
}

function seconds(value) {
  if (value === null || value === undefined) return "–";
  return value < 1 ? `${(value * 1000).toFixed(1)} ms` : `${value.toFixed(2)} s`;
}

function utc(unixSeconds) {
  return new Date(unixSeconds * 1000).toISOString().replace("T", " ").slice(0, 19);
}

function pretty(value) {
  return typeof value === "string" ? value : JSON.stringify(value, null, 2);
}

// -- the auth key ----------------------------------------------------------------------

// Resolves once the user gave a key; every caller that hit a 401 meanwhile waits on it.
function askKey(message) {
  if (state.keyWaiters) return state.keyWaiters.promise;
  let resolve;
  const promise = new Promise((r) => { resolve = r; });
  state.keyWaiters = { promise, resolve };
  $("key-error").textContent = message || "";
  $("key-input").value = "";
  $("key-dialog").showModal();
  $("key-input").focus();
  return promise;
}

function setupKeyDialog() {
  const dialog = $("key-dialog");
  dialog.addEventListener("cancel", (event) => event.preventDefault()); // Escape: the page needs a key
  $("key-form").addEventListener("submit", (event) => {
    const key = $("key-input").value.trim();
    if (!key) { event.preventDefault(); $("key-error").textContent = "Enter the key."; return; }
    state.key = key;
    sessionStorage.setItem(KEY_STORE, key);
    $("forget-key").hidden = false;
    const waiters = state.keyWaiters;
    state.keyWaiters = null;
    waiters.resolve();
  });
  $("forget-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORE);
    state.key = null;
    location.reload();
  });
}

// Every call but the stream goes through here: the key as a bearer header, and a 401
// asks for the key again and retries.
async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (state.key) headers.set("Authorization", `Bearer ${state.key}`);
  const init = { method: options.method || "GET", headers };
  if (options.json !== undefined) {
    headers.set("Content-Type", "application/json");
    init.body = JSON.stringify(options.json);
  }
  const response = await fetch(path, init);
  if (response.status === 401 && state.config.auth) {
    state.key = null;
    sessionStorage.removeItem(KEY_STORE);
    await askKey("That key was refused; enter it again.");
    return api(path, options);
  }
  return response;
}

// -- the pipeline: DAG and form ------------------------------------------------------------

// Steps in columns by depth (left to right), or in rows (top to bottom) when the
// panel is too narrow for the columns, as on a phone.
function drawDag(steps) {
  const level = new Map();
  for (const s of steps) { // /info lists steps in DAG order: upstream first
    const ups = s.upstream.filter((u) => level.has(u));
    level.set(s.id, ups.length ? 1 + Math.max(...ups.map((u) => level.get(u))) : 0);
  }
  const W = 150, H = 46, GAP = 56, GAP2 = 18, PAD = 8;
  const ranks = [];
  for (const s of steps) (ranks[level.get(s.id)] ||= []).push(s);
  const across = Math.max(...ranks.map((r) => r.length));
  const wideWidth = PAD * 2 + ranks.length * W + (ranks.length - 1) * GAP;
  const vertical = $("dag").clientWidth > 0 && $("dag").clientWidth < wideWidth;
  const pos = new Map();
  ranks.forEach((rank, i) => rank.forEach((s, j) => pos.set(s.id, vertical
    ? { x: PAD + j * (W + GAP2), y: PAD + i * (H + GAP) }
    : { x: PAD + i * (W + GAP), y: PAD + j * (H + GAP2) })));
  const width = vertical ? PAD * 2 + across * W + (across - 1) * GAP2 : wideWidth;
  const height = vertical
    ? PAD * 2 + ranks.length * H + (ranks.length - 1) * GAP
    : PAD * 2 + across * H + (across - 1) * GAP2;
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img",
    "data-layout": vertical ? "vertical" : "horizontal",
    "aria-label": `Steps of ${state.info.pipeline.name}: ${steps.map((s) => s.id).join(", ")}` });
  const defs = svg("defs");
  const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "9", refY: "5",
    markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" });
  marker.append(svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow" }));
  defs.append(marker);
  root.append(defs);
  for (const s of steps) {
    for (const up of s.upstream) {
      const a = pos.get(up), b = pos.get(s.id);
      if (!a || !b) continue;
      let d;
      if (vertical) {
        const x1 = a.x + W / 2, y1 = a.y + H, x2 = b.x + W / 2, y2 = b.y - 2, mid = (y1 + y2) / 2;
        d = `M ${x1} ${y1} C ${x1} ${mid}, ${x2} ${mid}, ${x2} ${y2}`;
      } else {
        const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x - 2, y2 = b.y + H / 2, mid = (x1 + x2) / 2;
        d = `M ${x1} ${y1} C ${mid} ${y1}, ${mid} ${y2}, ${x2} ${y2}`;
      }
      root.append(svg("path", { d, class: "edge", "marker-end": "url(#arrow)", "data-from": up, "data-to": s.id }));
    }
  }
  for (const s of steps) {
    const p = pos.get(s.id);
    const [status, text] = state.marks.get(s.id) || ["pending", "waiting"];
    const g = svg("g", { class: `node ${status}`, "data-step": s.id, transform: `translate(${p.x} ${p.y})` });
    const title = svg("title");
    title.textContent = s.id === s.step ? s.id : `${s.id} (${s.step})`;
    const name = svg("text", { x: "10", y: "19" });
    name.textContent = s.id.length > 18 ? `${s.id.slice(0, 17)}…` : s.id;
    const dur = svg("text", { x: "10", y: "36", class: "dur" });
    dur.textContent = text;
    g.append(title, svg("rect", { width: W, height: H, rx: "8" }), name, dur);
    root.append(g);
  }
  $("dag").replaceChildren(root);
}

function stepNode(id) {
  return document.querySelector(`#dag g.node[data-step="${CSS.escape(id)}"]`);
}

function markStep(id, status, text) {
  state.marks.set(id, [status, text]);
  const node = stepNode(id);
  if (!node) return;
  node.setAttribute("class", `node ${status}`);
  node.querySelector(".dur").textContent = text;
}

function resolveSchema(schema, root) {
  let s = schema;
  const seen = new Set();
  while (s && s.$ref && !seen.has(s.$ref)) {
    seen.add(s.$ref);
    const name = s.$ref.split("/").pop();
    const { $ref, ...rest } = s;
    s = { ...((root.$defs || {})[name] || {}), ...rest };
  }
  return s || {};
}

// One input per parameter, `name` = the parameter's name, typed from its JSON Schema.
function buildForm(inputSchema) {
  const root = resolveSchema(inputSchema, inputSchema);
  const required = new Set(root.required || []);
  const fields = [];
  const box = $("fields");
  box.replaceChildren();
  for (const [name, raw] of Object.entries(root.properties || {})) {
    let schema = resolveSchema(raw, inputSchema);
    let nullable = false;
    const options = schema.anyOf || schema.oneOf;
    if (options) {
      const nonNull = options.filter((o) => o.type !== "null");
      nullable = nonNull.length < options.length;
      if (nonNull.length === 1) schema = { ...resolveSchema(nonNull[0], inputSchema), default: schema.default };
    }
    const has = "default" in schema;
    const id = `param-${name}`;
    let kind, input;
    if (Array.isArray(schema.enum)) {
      kind = "enum";
      input = el("select", { id, name });
      schema.enum.forEach((v, i) => input.append(el("option", { value: String(i), text: pretty(v) })));
      if (has) input.value = String(Math.max(0, schema.enum.findIndex((v) => JSON.stringify(v) === JSON.stringify(schema.default))));
    } else if (schema.type === "boolean") {
      kind = "boolean";
      input = el("input", { id, name, type: "checkbox" });
      input.checked = has ? Boolean(schema.default) : false;
    } else if (schema.type === "integer" || schema.type === "number") {
      kind = schema.type;
      input = el("input", { id, name, type: "number", step: schema.type === "integer" ? "1" : "any", inputmode: "decimal" });
      if (has && schema.default !== null) input.value = String(schema.default);
    } else if (schema.type === "string") {
      kind = "string";
      input = el("input", { id, name, type: "text", autocomplete: "off" });
      if (has && schema.default !== null) input.value = schema.default;
    } else {
      kind = "json";
      input = el("textarea", { id, name, spellcheck: "false", rows: "3" });
      if (has) input.value = JSON.stringify(schema.default, null, 2);
    }
    const hint = `${kind === "json" ? "JSON" : kind}${required.has(name) ? ", required" : ""}${nullable ? ", empty for null" : ""}`;
    const label = el("label", { for: id }, name, " ", el("span", { class: "hint", text: `(${hint})` }));
    box.append(el("div", { class: `field field-${kind}` }, label, input));
    fields.push({ name, kind, input, schema, nullable, required: required.has(name) });
  }
  if (!fields.length) box.append(el("p", { class: "muted", text: "This pipeline takes no parameters." }));
  state.fields = fields;
}

function collect() {
  const params = {};
  const problems = [];
  for (const f of state.fields) {
    const raw = f.input.value;
    if (f.kind === "boolean") params[f.name] = f.input.checked;
    else if (f.kind === "enum") params[f.name] = f.schema.enum[Number(raw)];
    else if (f.kind === "string") params[f.name] = raw;
    else if (raw.trim() === "") {
      if (f.nullable) params[f.name] = null;
      else if (f.required) problems.push(`${f.name}: a value is required`);
    } else if (f.kind === "json") {
      try { params[f.name] = JSON.parse(raw); } catch { problems.push(`${f.name}: not valid JSON`); }
    } else {
      const n = Number(raw);
      if (!Number.isFinite(n) || (f.kind === "integer" && !Number.isInteger(n))) problems.push(`${f.name}: expected ${f.kind === "integer" ? "an integer" : "a number"}`);
      else params[f.name] = n;
    }
  }
  $("form-error").textContent = problems.join("\n");
  return problems.length ? null : params;
}

// -- a run, followed live ------------------------------------------------------------------

function setStatus(status) {
  const node = $("status");
  node.textContent = status;
  node.dataset.status = status;
}

function resetLive() {
  state.lastSeq = 0;
  state.reconnects = 0;
  $("chunks").textContent = "";
  $("outputs").textContent = "";
  $("run-error").textContent = "";
  $("progress").value = 0;
  $("progress-message").textContent = "";
  state.marks.clear();
  for (const node of document.querySelectorAll("#dag g.node")) {
    node.setAttribute("class", "node pending");
    node.querySelector(".dur").textContent = "waiting";
  }
}

function stopStream() {
  if (state.es) state.es.close();
  state.es = null;
}

async function submit(event) {
  event.preventDefault();
  const params = collect();
  if (!params) return;
  stopStream();
  resetLive();
  $("run").disabled = true;
  setStatus("submitting");
  try {
    const response = await api("/invoke?mode=async", { method: "POST", json: { parameters: params } });
    const body = await response.json();
    if (response.status !== 202) {
      const detail = (body.errors || []).map((e) => `${e.loc}: ${e.msg}`).join("\n");
      $("form-error").textContent = `${body.detail || body.error || response.statusText}${detail ? `\n${detail}` : ""}`;
      setStatus("idle");
      return;
    }
    state.job = body.job_id;
    $("job-id").textContent = body.job_id;
    setStatus(body.status);
    $("cancel").disabled = false;
    await follow(body.job_id);
    refreshJobs();
  } catch (error) {
    $("run-error").textContent = `could not submit: ${error.message}`;
    setStatus("idle");
  } finally {
    $("run").disabled = false;
  }
}

// Shows a job from the list in the live panel: its stream replays every event kept.
function watchJob(job) {
  stopStream();
  resetLive();
  state.job = job.job_id;
  $("job-id").textContent = job.job_id;
  setStatus(job.status);
  $("cancel").disabled = ["completed", "failed", "canceled"].includes(job.status);
  follow(job.job_id).catch((e) => { $("run-error").textContent = e.message; });
}

// Opens the job's stream from the last event seen. A dropped connection is retried by
// the browser itself with Last-Event-ID; one the server refused (an expired stream
// token, a 503) closes, and is reopened here with a fresh token and `after_seq`.
async function follow(jobId) {
  if (state.job !== jobId) return;
  const response = await api(`/jobs/${encodeURIComponent(jobId)}/stream-token`, { method: "POST" });
  if (!response.ok) {
    $("run-error").textContent = `cannot follow job ${jobId}: ${(await response.json()).detail}`;
    return;
  }
  let url = (await response.json()).stream_url;
  if (state.lastSeq > 0) url += `${url.includes("?") ? "&" : "?"}after_seq=${state.lastSeq}`;
  const es = new EventSource(url);
  state.es = es;
  for (const type of EVENTS) es.addEventListener(type, (event) => onEvent(jobId, type, event));
  es.addEventListener("error", () => {
    if (state.es !== es || es.readyState !== EventSource.CLOSED) return;
    state.es = null;
    const delay = Math.min(10000, 500 * 2 ** Math.min(state.reconnects++, 5));
    setTimeout(() => follow(jobId).catch((e) => { $("run-error").textContent = e.message; }), delay);
  });
}

function onEvent(jobId, type, event) {
  if (state.job !== jobId) return;
  const seq = Number(event.lastEventId);
  if (seq && seq <= state.lastSeq) return; // already shown before a reconnect
  if (seq) state.lastSeq = seq;
  state.reconnects = 0;
  const data = JSON.parse(event.data);
  switch (type) {
    case "run_started": setStatus("running"); break;
    case "step_started": setStatus("running"); markStep(data.step, "running", "running…"); break;
    case "step_retrying": markStep(data.step, "retrying", `retry ${data.attempt}`); break;
    case "step_completed": markStep(data.step, "completed", seconds(data.duration)); break;
    case "step_failed": markStep(data.step, "failed", `failed ${seconds(data.duration)}`); break;
    case "progress":
      if (data.fraction !== null && data.fraction !== undefined) $("progress").value = data.fraction;
      $("progress-message").textContent = data.message ? `${data.step}: ${data.message}` : data.step;
      break;
    case "chunk": $("chunks").textContent += typeof data.data === "string" ? data.data : `${JSON.stringify(data.data)}\n`; break;
    case "gap": $("run-error").textContent = `events ${data.from_seq}–${data.to_seq} were dropped before they were read`; break;
    case "run_completed": setStatus("completed"); $("progress").value = 1; break;
    case "run_failed": setStatus("failed"); $("run-error").textContent = data.error; break;
    case "run_canceled": setStatus("canceled"); $("run-error").textContent = `canceled: ${data.reason}`; break;
  }
  if (TERMINAL.has(type)) finished(jobId, type);
}

async function finished(jobId, type) {
  stopStream();
  $("cancel").disabled = true;
  if (type === "run_completed") {
    const response = await api(`/jobs/${encodeURIComponent(jobId)}`);
    if (response.ok) {
      const job = await response.json();
      $("outputs").textContent = JSON.stringify(job.result ? job.result.outputs : null, null, 2);
    }
  }
  refreshJobs();
  refreshRuns();
  setTimeout(() => refreshRuns().catch(() => {}), 1000); // the capture store writes in batches
}

async function cancel() {
  if (!state.job) return;
  $("cancel").disabled = true;
  const response = await api(`/jobs/${encodeURIComponent(state.job)}/cancel`, { method: "POST" });
  if (!response.ok && response.status !== 409) $("run-error").textContent = (await response.json()).detail;
}

// -- below: history, jobs, health ---------------------------------------------------------

function statusCell(status) {
  return el("td", { class: `st-${status}`, text: status });
}

async function refreshRuns() {
  const params = new URLSearchParams({ limit: "15", pipeline: state.info.pipeline.name });
  const response = await api(`/runs?${params}`);
  const body = await response.json();
  const tbody = $("runs").querySelector("tbody");
  if (!response.ok) {
    $("runs-note").textContent = body.detail;
    tbody.replaceChildren();
    return;
  }
  $("runs-note").textContent = body.runs.length ? "" : "No runs captured yet.";
  tbody.replaceChildren(...body.runs.map((run) => el("tr", { "data-run": run.run_id },
    el("td", {}, el("button", { type: "button", class: "link", text: utc(run.started_at),
      "aria-label": `run ${run.run_id}, ${run.status}, details`, onclick: () => showRun(run.run_id) })),
    statusCell(run.status),
    el("td", { text: seconds(run.duration) }),
    el("td", { class: "params mono", text: run.parameters === null ? "–" : JSON.stringify(run.parameters),
      title: run.parameters === null ? "" : JSON.stringify(run.parameters) }))));
}

async function showRun(runId) {
  const response = await api(`/runs/${encodeURIComponent(runId)}`);
  const run = await response.json();
  const box = $("run-detail");
  box.hidden = false;
  if (!response.ok) { box.replaceChildren(el("p", { class: "error", text: run.detail })); return; }
  const facts = el("dl", {},
    el("dt", { text: "run" }), el("dd", { class: "mono", text: `${run.run_name} (${run.run_id})` }),
    el("dt", { text: "status" }), el("dd", { class: `st-${run.status}`, text: run.status }),
    el("dt", { text: "started" }), el("dd", { text: `${utc(run.started_at)} UTC` }),
    el("dt", { text: "duration" }), el("dd", { text: seconds(run.duration) }),
    el("dt", { text: "parameters" }), el("dd", { class: "mono", text: JSON.stringify(run.parameters) }),
    el("dt", { text: "outputs" }), el("dd", { class: "mono", text: run.output_preview || "–" }));
  if (run.error) facts.append(el("dt", { text: "error" }), el("dd", { class: "error", text: run.error }));
  const steps = el("table", { class: "run-steps" },
    el("thead", {}, el("tr", {}, ...["step", "status", "duration", "attempts", "output"].map((h) => el("th", { text: h })))),
    el("tbody", {}, ...run.steps.map((s) => el("tr", { "data-step": s.step_id },
      el("td", { text: s.step_id }), statusCell(s.status), el("td", { text: seconds(s.duration) }),
      el("td", { text: String(s.attempts) }),
      el("td", { class: "mono", text: s.error || s.output_preview || "–" })))));
  const logs = run.steps.flatMap((s) => s.logs.map((l) => ({ ...l, step: s.step_id }))).sort((a, b) => a.ts - b.ts);
  const logBox = el("pre", { class: "box run-logs",
    text: logs.length ? logs.map((l) => `${utc(l.ts)} ${l.step} ${l.level}: ${l.message}`).join("\n") : "no log lines" });
  const parts = [el("h3", { text: "Run" }), facts, el("h3", { text: "Steps" }), el("div", { class: "scroll" }, steps),
    el("h3", { text: "Logs" }), logBox];
  if (run.artifacts.length) {
    parts.push(el("h3", { text: "Visualizations" }),
      el("ul", {}, ...run.artifacts.map((a) => el("li", { text: `${a.step_id} · ${a.name} (${a.kind}, ${a.size} B)` }))));
  }
  box.replaceChildren(...parts);
  box.focus();
}

async function refreshJobs() {
  const response = await api("/jobs?limit=10");
  if (!response.ok) return;
  const { jobs } = await response.json();
  $("jobs-empty").hidden = jobs.length > 0;
  $("jobs").querySelector("tbody").replaceChildren(...jobs.map((job) => el("tr", { "data-job": job.job_id },
    el("td", { class: "mono" }, el("button", { type: "button", class: "link", text: `…${job.job_id.slice(-10)}`,
      title: job.job_id, "aria-label": `follow job ${job.job_id} (${job.status})`, onclick: () => watchJob(job) })),
    statusCell(job.status),
    el("td", { text: job.created_at.replace("T", " ").slice(0, 19) }),
    el("td", { text: `${job.progress.steps_done}/${job.progress.steps_total}` }))));
}

function metricSums(text) {
  const sums = new Map();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (match) sums.set(match[1], (sums.get(match[1]) || 0) + Number(match[3]));
  }
  return sums;
}

async function refreshHealth() {
  const response = await fetch("/metrics"); // open even with a key
  if (!response.ok) return;
  const m = metricSums(await response.text());
  const show = (id, name) => { $(id).textContent = m.has(name) ? String(Math.round(m.get(name))) : "–"; };
  show("h-requests", "serving_requests_total");
  show("h-inflight", "serving_inflight");
  show("h-queue", "serving_queue_depth");
  $("h-dropped").textContent = String(Math.round(m.get("serving_capture_dropped_total") || 0)); // no sample until one is dropped
  $("h-breaker").textContent = !m.has("serving_capture_breaker_open") ? "–" : m.get("serving_capture_breaker_open") > 0 ? "open" : "closed";
}

function every(ms, fn) {
  const tick = () => { if (!state.keyWaiters && document.visibilityState !== "hidden") fn().catch(() => {}); };
  tick();
  setInterval(tick, ms);
}

async function main() {
  setupKeyDialog();
  $("run-form").addEventListener("submit", submit);
  $("cancel").addEventListener("click", () => cancel().catch((e) => { $("run-error").textContent = e.message; }));
  state.config = await (await fetch("/ui/config.json")).json();
  if (state.config.auth && !state.key) await askKey();
  $("forget-key").hidden = !state.config.auth;
  const response = await api("/info");
  state.info = await response.json();
  const { pipeline } = state.info;
  document.title = `${pipeline.name} · serving`;
  $("pipeline-name").textContent = pipeline.name;
  $("pipeline-description").textContent = pipeline.description || "";
  $("version").textContent = `v${state.info.version} · ${state.info.runtime}`;
  drawDag(state.info.steps);
  let layout = null;
  let drawnFor = $("dag").clientWidth;
  new ResizeObserver(() => {
    if ($("dag").clientWidth === drawnFor) return; // a new drawing changed the height only
    drawnFor = $("dag").clientWidth;
    clearTimeout(layout);
    layout = setTimeout(() => drawDag(state.info.steps), 100);
  }).observe($("dag"));
  buildForm(state.info.input_schema);
  every(POLL_MS.health, refreshHealth);
  every(POLL_MS.jobs, refreshJobs);
  every(POLL_MS.runs, refreshRuns);
  document.body.dataset.ready = "true";
}

main().catch((error) => {
  $("run-error").textContent = `the dashboard could not start: ${error.message}`;
});
