// vanishing live: the settings form, one panel of charts per run, one event stream for all.
// No build step: this file is served as is; uPlot (vendored beside it) is the global `uPlot`.

const MAX_RUNS = 4; // runs side by side (the limit; Chrome allows 6 connections a host)
const RUN_COLOURS = ["#c0392b", "#1f6fb2", "#d68910", "#239b56"];
// statuses of a run still to train; the server's final ones are ok, diverged, failed, stopped,
// unfinished
const LIVE_STATUSES = new Set(["waiting", "queued", "pending", "starting", "running", "training", "stopping"]);
// viridis at 10 stops: dark = little gradient, yellow = much
const VIRIDIS = [
  [68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
  [31, 158, 137], [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37],
];

const state = {
  token: "",
  fields: [], // /api/settings' fields
  defaultWidth: 256,
  job: null, // {id, body}: the job started from this page, for stop and resume
  panels: new Map(), // run path -> Panel
  source: null, // the one EventSource
  dirty: new Set(), // panels to redraw at the next animation frame
};

// ---- the token and the server --------------------------------------------------------------

function takeToken() {
  // The token arrives in the URL once; keep it for this tab and take it out of the address bar
  // so that a copied link shares the settings, not the token.
  const params = new URLSearchParams(location.search);
  const token = params.get("token");
  if (token) {
    sessionStorage.setItem("vanishing-token", token);
    params.delete("token");
    history.replaceState(null, "", queryUrl(params));
  }
  return token || sessionStorage.getItem("vanishing-token") || "";
}

function queryUrl(params) {
  const query = params.toString().replace(/%2C/g, ",");
  return location.pathname + (query ? "?" + query : "");
}

async function api(path, body) {
  const options = { headers: { "X-Token": state.token }, credentials: "same-origin" };
  if (body !== undefined) {
    options.method = "POST";
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const message = data && data.error ? data.error : `${response.status} ${response.statusText}`;
    throw new Error(message);
  }
  return data;
}

// ---- the form: built from the config's fields, mirrored in the URL --------------------------

function shown(value) {
  // a default as the command line writes it (the server may send it raw or already as text)
  if (value === null || value === undefined) return "";
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (Array.isArray(value)) return value.join(",");
  return String(value);
}

function element(tag, attributes = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "text") node.textContent = value;
    else if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function buildForm(settings) {
  state.fields = settings.fields;
  state.defaultWidth = (settings.depth_width || {}).default_width || 256;
  const form = document.getElementById("settings");
  form.elements.width.value = state.defaultWidth;
  form.elements.width.dataset.default = String(state.defaultWidth);
  const groups = document.getElementById("groups");
  const fieldsets = new Map();
  for (const field of state.fields) {
    const fallback = shown(field.default);
    if (field.name === "activation") {
      buildActivations(field);
      continue;
    }
    let control;
    if (field.kind === "bool") {
      control = element("input", { type: "checkbox", name: field.name });
      control.checked = fallback === "yes";
    } else if (field.choices && field.choices.length) {
      control = element("select", { name: field.name },
        field.choices.map((c) => element("option", { value: c, text: c })));
      control.value = fallback;
    } else {
      const numeric = field.kind === "int" || field.kind === "float";
      control = element("input", {
        type: "text", name: field.name, value: fallback, spellcheck: "false",
        inputmode: numeric ? "decimal" : undefined,
        placeholder: field.optional ? "none" : fallback,
      });
    }
    control.dataset.default = fallback;
    const label = element("label", { title: field.help || "", class: field.kind === "bool" ? "check" : "" },
      [field.name.replaceAll("_", " "), control]);
    if (field.kind === "widths") {
      label.title += " (depth and width replace these when depth is set)";
      document.getElementById("shape").append(label);
      continue;
    }
    const group = field.group || "other";
    if (!fieldsets.has(group)) {
      const fieldset = element("fieldset", {}, [element("legend", { text: group })]);
      fieldsets.set(group, fieldset);
      groups.append(fieldset);
    }
    fieldsets.get(group).append(label);
  }
}

function buildActivations(field) {
  const box = document.querySelector("#activations .choices");
  box.title = field.help || "";
  box.dataset.default = shown(field.default);
  for (const name of field.choices || []) {
    const input = element("input", { type: "checkbox", name: "activations", value: name });
    input.checked = name === shown(field.default);
    box.append(element("label", { class: "check" }, [input, name]));
  }
}

function controls() {
  // every field control but the activation checkboxes: [input, its field name]
  const form = document.getElementById("settings");
  return [...form.querySelectorAll("[data-default]")].filter((c) => c.name);
}

function valueOf(control) {
  return control.type === "checkbox" ? (control.checked ? "yes" : "no") : control.value.trim();
}

function chosenActivations() {
  return [...document.querySelectorAll('input[name="activations"]:checked')].map((c) => c.value);
}

function formSettings() {
  // {activations, depth, width, shared: {field: text}}: only what differs from the defaults
  const form = document.getElementById("settings");
  const depth = form.elements.depth.value.trim();
  const shared = {};
  for (const control of controls()) {
    if (control.name === "depth" || control.name === "width") continue;
    const value = valueOf(control);
    if (value === control.dataset.default || (value === "" && control.placeholder === "none")) continue;
    if (depth && state.fields.some((f) => f.name === control.name && f.kind === "widths")) continue;
    shared[control.name] = value;
  }
  return { activations: chosenActivations(), depth, width: form.elements.width.value.trim(), shared };
}

function writeUrl() {
  const { activations, depth, width, shared } = formSettings();
  const params = new URLSearchParams();
  params.set("activations", activations.join(","));
  if (depth) {
    params.set("depth", depth);
    params.set("width", width);
  }
  for (const [name, value] of Object.entries(shared)) params.set(name, value);
  history.replaceState(null, "", queryUrl(params));
}

function readUrl() {
  const params = new URLSearchParams(location.search);
  const form = document.getElementById("settings");
  const activations = params.get("activations") || params.get("activation");
  if (activations) {
    const wanted = new Set(activations.split(",").map((a) => a.trim()));
    for (const box of document.querySelectorAll('input[name="activations"]')) box.checked = wanted.has(box.value);
  }
  for (const control of controls()) {
    if (!params.has(control.name)) continue;
    const value = params.get(control.name);
    if (control.type === "checkbox") control.checked = ["yes", "true", "on", "1"].includes(value.toLowerCase());
    else control.value = value;
  }
  if (params.has("depth")) form.elements.depth.value = params.get("depth");
  limitActivations();
}

function limitActivations() {
  const boxes = [...document.querySelectorAll('input[name="activations"]')];
  const full = boxes.filter((b) => b.checked).length >= MAX_RUNS;
  for (const box of boxes) box.disabled = full && !box.checked;
}

function shapeHidden() {
  // depth and width replace the hidden widths when depth is set: grey those out
  const form = document.getElementById("settings");
  const depth = form.elements.depth.value.trim() !== "";
  for (const control of controls()) {
    if (state.fields.some((f) => f.name === control.name && f.kind === "widths")) control.disabled = depth;
  }
}

function runsBody(resume) {
  const { activations, depth, width, shared } = formSettings();
  const runs = activations.map((activation) => {
    const run = { activation, ...shared };
    if (depth) Object.assign(run, { depth, width });
    return run;
  });
  return { runs, resume };
}

function showError(message) {
  const box = document.getElementById("form-error");
  box.textContent = message || "";
  box.hidden = !message;
}

async function start(body) {
  showError("");
  if (!body.runs.length) {
    showError("Choose at least one activation.");
    return;
  }
  document.getElementById("start").disabled = true;
  try {
    const reply = await api("/api/runs", body);
    state.job = { id: reply.job, body, runs: reply.runs.map((r) => r.run) };
    showRuns(reply.runs, body.resume);
    setJobButtons(true);
  } catch (error) {
    showError(error.message);
  } finally {
    document.getElementById("start").disabled = false;
  }
}

async function stop() {
  if (!state.job) return;
  document.getElementById("stop").disabled = true;
  try {
    await api(`/api/jobs/${encodeURIComponent(state.job.id)}/stop`, {});
  } catch (error) {
    showError(error.message);
  }
}

function setJobButtons(running) {
  document.getElementById("stop").disabled = !running;
  document.getElementById("resume").disabled = running || !state.job;
}

// ---- the list of finished runs, compares and sweeps -----------------------------------------

async function loadList() {
  const list = document.getElementById("list");
  let items;
  try {
    items = (await api("/api/list")).items;
  } catch (error) {
    list.replaceChildren(element("li", { class: "empty", text: `could not read the list: ${error.message}` }));
    return;
  }
  if (!items.length) {
    list.replaceChildren(element("li", { class: "empty", text: "nothing yet: finished runs appear here" }));
    return;
  }
  list.replaceChildren(...items.map(listItem));
}

function listItem(item) {
  const accuracy = Number.isFinite(item.test_accuracy) ? `${(100 * item.test_accuracy).toFixed(1)} %` : "";
  const runs = item.runs.slice(0, MAX_RUNS).map((run) => ({ run, label: runName(run, item) }));
  const open = element("button", { type: "button", class: "open", title: item.path, text: item.label || item.path });
  open.addEventListener("click", () => showRuns(runs, false));
  const beside = element("button", { type: "button", class: "beside", title: "show beside the runs on screen", text: "+" });
  beside.addEventListener("click", () => showRuns(runs, false, true));
  return element("li", { class: `item ${item.kind}`, "data-path": item.path }, [
    element("span", { class: "kind", text: item.kind }), open, beside,
    element("span", { class: "meta", text: [item.status, accuracy, runCount(item.runs.length)].filter(Boolean).join(" · ") }),
  ]);
}

function sized(canvas, width, height) {
  // The canvas at width x height CSS pixels, drawn at the screen's density: its 2-d context.
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.round(width * dpr);
  canvas.height = Math.round(height * dpr);
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  const context = canvas.getContext("2d");
  context.scale(dpr, dpr);
  return context;
}

function runCount(count) {
  // A compare or sweep opens its first MAX_RUNS runs only: say so where it has more.
  if (count <= 1) return "";
  return count > MAX_RUNS ? `${count} runs (opens the first ${MAX_RUNS})` : `${count} runs`;
}

function runName(run, item) {
  if (item.runs.length === 1 && item.label) return item.label;
  return run.split("/").filter(Boolean).slice(-1)[0] || run;
}

// ---- panels and the event stream -------------------------------------------------------------

function showRuns(runs, resume, beside = false) {
  // The runs to show (replacing those on screen unless `beside`), then one stream for them all.
  const wanted = beside ? [...state.panels.values()].map((p) => ({ run: p.run, label: p.label })) : [];
  for (const r of runs) if (!wanted.some((w) => w.run === r.run)) wanted.push(r);
  while (wanted.length > MAX_RUNS) wanted.shift();
  for (const [run, panel] of state.panels) {
    if (!wanted.some((w) => w.run === run)) {
      panel.destroy();
      state.panels.delete(run);
    }
  }
  const main = document.getElementById("runs");
  document.getElementById("welcome").hidden = true;
  wanted.forEach(({ run, label }, index) => {
    if (!state.panels.has(run)) state.panels.set(run, new Panel(run, label));
    const panel = state.panels.get(run);
    panel.setColour(RUN_COLOURS[index % RUN_COLOURS.length]);
    main.append(panel.el); // keeps the order of `wanted`
  });
  main.dataset.count = String(wanted.length);
  for (const panel of state.panels.values()) panel.resize();
  listen();
}

function listen() {
  // One EventSource for every run on screen; the server replays each run's rows, then follows.
  if (state.source) state.source.close();
  const runs = [...state.panels.keys()];
  if (!runs.length) return;
  const source = new EventSource(`/api/events?runs=${runs.map(encodeURIComponent).join(",")}`);
  state.source = source;
  source.addEventListener("open", () => {
    for (const panel of state.panels.values()) panel.reset();
  });
  const each = (name, handle) =>
    source.addEventListener(name, (event) => {
      const data = JSON.parse(event.data);
      const panel = state.panels.get(data.run);
      if (panel) handle(panel, data);
    });
  each("row", (panel, data) => {
    panel.add(data.row);
    schedule(panel);
  });
  each("reset", (panel) => panel.reset()); // the run started afresh or resumed from a checkpoint
  each("layers", (panel, data) => panel.setNames(data.layers, data.labels)); // a watched model's
  each("verdict", (panel, data) => panel.setVerdict(data.headline));
  each("status", (panel, data) => {
    panel.setStatus(data.status);
    checkJob();
  });
  source.addEventListener("end", (event) => {
    source.close();
    if (state.source === source) state.source = null;
    const stopped = JSON.parse(event.data).server === "stopped"; // the server was shut down
    for (const panel of state.panels.values()) {
      if (stopped && LIVE_STATUSES.has(panel.status)) panel.setStatus("stopped");
      panel.ended();
    }
    checkJob(true);
  });
}

function checkJob(ended = false) {
  if (!state.job) return;
  const runs = state.job.runs || [...state.panels.keys()];
  const live = runs.some((run) => {
    const panel = state.panels.get(run);
    return panel && LIVE_STATUSES.has(panel.status) && !ended;
  });
  if (!live && (ended || runs.every((run) => state.panels.get(run)?.status))) {
    setJobButtons(false);
    loadList();
  }
}

function schedule(panel) {
  if (!state.dirty.size) requestAnimationFrame(drawDirty);
  state.dirty.add(panel);
}

function drawDirty() {
  const panels = [...state.dirty];
  state.dirty.clear();
  for (const panel of panels) if (state.panels.get(panel.run) === panel) panel.draw();
}

// ---- numbers ---------------------------------------------------------------------------------

function positive(v) {
  return typeof v === "number" && v > 0 && Number.isFinite(v) ? v : null;
}

function exp(v) {
  // 0.000123 -> "1.2e-4"; plain below 1e4 and above 1e-2
  if (v === null || v === undefined || !Number.isFinite(v)) return String(v);
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 0.01 && a < 1e4) return String(Number(v.toPrecision(3)));
  const [mantissa, power] = v.toExponential(1).split("e");
  return `${mantissa.replace(/\.0$/, "")}e${Number(power)}`;
}

function decades(u, splits) {
  // a log axis's ticks: whole decades only, every k-th so that about five are labelled
  const isDecade = (v) => v > 0 && Math.abs(Math.log10(v) - Math.round(Math.log10(v))) < 1e-6;
  const every = Math.max(1, Math.ceil(splits.filter(isDecade).length / 5));
  return splits.map((v) => (isDecade(v) && Math.round(Math.log10(v)) % every === 0 ? v : null));
}

function colour(t) {
  const x = Math.min(1, Math.max(0, t)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
  const f = x - i;
  return VIRIDIS[i].map((c, k) => Math.round(c + f * (VIRIDIS[i + 1][k] - c)));
}

// ---- one run's panel -------------------------------------------------------------------------

class Panel {
  constructor(run, label) {
    this.run = run;
    this.label = label;
    this.status = "";
    this.charts = [];
    this.el = element("section", { class: "panel", "data-run": run });
    this.el.innerHTML = `
      <header><h2></h2><span class="status"></span></header>
      <p class="verdict" aria-live="polite">waiting for the first probe…</p>
      <div class="card profile-card"><h3>Gradient reaching each layer <small class="when"></small></h3>
        <div class="profile"></div>
        <p class="note">norm of each Linear layer's weight gradient, input layer first: a line that
          falls towards layer 1 is a vanishing gradient. <b class="ratio"></b></p></div>
      <div class="card"><h3>Log gradient norm, layer × step</h3>
        <div class="heat"><canvas class="heatmap"></canvas></div>
        <div class="legend"><span class="lo"></span><span class="bar"></span><span class="hi"></span></div></div>
      <div class="card"><h3>Loss and accuracy</h3><div class="loss"></div></div>
      <div class="card"><h3>Saturated and dead units per hidden layer <small class="when"></small></h3>
        <div class="fractions"></div></div>
      <div class="card histogram-card" hidden><h3>Activations per hidden layer <small class="when"></small></h3>
        <canvas class="histograms"></canvas></div>
      <div class="card prelu-card" hidden><h3>PReLU slopes per hidden layer</h3><div class="prelu"></div></div>`;
    this.el.querySelector("h2").textContent = label;
    this.el.querySelector("h2").title = run;
    this.reset();
  }

  $(selector) {
    return this.el.querySelector(selector);
  }

  setColour(c) {
    this.colour = c;
    this.el.style.setProperty("--run", c);
  }

  setNames(layers, labels) {
    // A watched model names its layers (weighted ones for the gradients, activation ones for
    // units and histograms); a run of the MLP numbers them.
    this.names = { layers: layers || [], labels: labels || [] };
    this.$(".profile-card .note").firstChild.textContent =
      "norm of each weighted layer's weight gradient, in the order the model runs them: a line that falls towards the first layer is a vanishing gradient. ";
    schedule(this);
  }

  layerName(index, count) {
    // the weighted layer `index` (from 0) of `count`, as the page says it
    const named = this.names && this.names.layers[index];
    if (named) return named;
    return index === count - 1 ? "the output layer" : `layer ${index + 1}`;
  }

  unitName(index) {
    // the activation layer `index` (from 0)
    return (this.names && this.names.labels[index]) || `layer ${index + 1}`;
  }

  reset() {
    // Forget the rows: the stream replays them from the start when it (re)opens.
    this.probes = [];
    this.epochs = [];
    this.latest = null;
    this.first = null;
    schedule(this);
  }

  add(row) {
    if (row.kind === "probe") {
      const last = this.probes[this.probes.length - 1];
      if (last && row.step <= last.step) return; // a replayed row
      this.probes.push({ step: row.step, epoch: row.epoch, grad_norms: row.grad_norms, loss: row.loss });
      this.latest = row;
      if (!this.first) this.first = row;
    } else if (row.kind === "epoch") {
      const last = this.epochs[this.epochs.length - 1];
      if (last && row.epoch <= last.epoch) return;
      this.epochs.push(row);
    } else if (row.kind === "diverged") {
      this.setVerdict(`the loss became infinite or NaN by step ${row.step}: the run diverged`);
    }
  }

  setVerdict(headline) {
    this.$(".verdict").textContent = headline;
    this.$(".verdict").classList.add("said");
  }

  setStatus(status) {
    this.status = status || "waiting"; // null: no result yet, nothing training it
    status = this.status;
    const badge = this.$(".status");
    badge.textContent = status;
    badge.className = `status ${LIVE_STATUSES.has(status) ? "live" : status}`;
  }

  ended() {
    if (!this.status) this.setStatus("finished");
    if (!this.latest) this.$(".verdict").textContent = "no probe recorded in this run";
  }

  width() {
    return Math.max(220, this.$(".card").clientWidth - 20);
  }

  resize() {
    const width = this.width();
    for (const chart of this.charts) chart.setSize({ width, height: chart.height });
    this.drawHeatmap();
    this.drawHistograms();
  }

  destroy() {
    for (const chart of this.charts) chart.destroy();
    this.charts = [];
    this.el.remove();
  }

  chart(selector, options, data) {
    const chart = new uPlot({ width: this.width(), height: 170, legend: { live: false }, ...options }, data, this.$(selector));
    this.charts.push(chart);
    return chart;
  }

  draw() {
    const probe = this.latest;
    const whens = this.el.querySelectorAll(".when");
    for (const when of whens) when.textContent = probe ? `step ${probe.step}` : "";
    if (probe) {
      this.drawProfile(probe);
      this.drawFractions(probe);
      this.drawPrelu(probe);
    }
    this.drawLoss();
    this.drawHeatmap();
    this.drawHistograms();
  }

  drawProfile(probe) {
    const norms = probe.grad_norms;
    const layers = norms.map((_, i) => i + 1);
    const initial = this.first && this.first.grad_norms.length === norms.length ? this.first.grad_norms : norms.map(() => null);
    const data = [layers, norms.map(positive), initial.map(positive)];
    const box = this.$(".profile");
    const ratio = norms[0] / norms[norms.length - 1];
    box.dataset.ratio = String(ratio);
    box.dataset.step = String(probe.step);
    const first = this.names ? this.layerName(0, norms.length) : "Layer 1"; // a name as it is
    this.$(".ratio").textContent = `${first} gets ${exp(ratio)} of ${this.layerName(norms.length - 1, norms.length)}'s gradient.`;
    if (!data[1].some((v) => v !== null)) return;
    if (!this.profile) {
      const last = norms.length;
      this.profile = this.chart(".profile", {
        scales: { x: { time: false }, y: { distr: 3, log: 10 } },
        axes: [
          { label: "layer", space: 18, incrs: [1, 2, 5, 10, 20, 50],
            values: (u, splits) => splits.map((v) => (this.names ? this.names.layers[v - 1] || "" : v === last ? "out" : v)) },
          { label: "‖∇W‖", size: 52, filter: decades, values: (u, splits) => splits.map((v) => (v === null ? "" : exp(v))) },
        ],
        series: [
          { label: "layer" },
          { label: "now", stroke: this.colour, width: 2.5, points: { show: true, size: 6, fill: this.colour } },
          { label: `step ${this.first.step}`, stroke: "#9aa0a6", width: 1, dash: [4, 4] },
        ],
      }, data);
    } else {
      this.profile.setData(data);
    }
  }

  drawLoss() {
    // x: steps; the probe batch's loss live, each epoch's train/test loss and accuracy at its end
    const steps = [...new Set([...this.probes.map((p) => p.step), ...this.epochs.map((e) => e.step)])]
      .filter((s) => typeof s === "number").sort((a, b) => a - b);
    const at = (rows, key) => {
      const byStep = new Map(rows.map((r) => [r.step, r[key]]));
      return steps.map((s) => (byStep.has(s) && Number.isFinite(byStep.get(s)) ? byStep.get(s) : null));
    };
    const data = [steps, at(this.probes, "loss"), at(this.epochs, "train_loss"), at(this.epochs, "test_loss"),
      at(this.epochs, "test_accuracy")];
    if (!steps.length) return;
    if (!this.loss) {
      const dot = (c) => ({ show: true, size: 8, fill: c, stroke: c });
      this.loss = this.chart(".loss", {
        height: 190,
        legend: { live: false, show: true },
        scales: { x: { time: false }, acc: { range: [0, 1] } },
        axes: [
          { label: "step" },
          { label: "loss", size: 44 },
          { side: 1, scale: "acc", label: "test accuracy", size: 58, grid: { show: false }, values: (u, s) => s.map((v) => `${Math.round(v * 100)}%`) },
        ],
        series: [
          { label: "step" },
          { label: "probe loss", stroke: this.colour, width: 1.5, spanGaps: true },
          { label: "train loss", stroke: "#555", points: dot("#555"), spanGaps: true },
          { label: "test loss", stroke: "#8e44ad", dash: [5, 3], points: dot("#8e44ad"), spanGaps: true },
          { label: "test accuracy", scale: "acc", stroke: "#239b56", points: dot("#239b56"), spanGaps: true,
            value: (u, v) => (v === null ? "–" : `${(100 * v).toFixed(1)} %`) },
        ],
      }, data);
    } else {
      this.loss.setData(data);
    }
  }

  drawFractions(probe) {
    const saturated = probe.saturated_fraction || [];
    const dead = probe.dead_fraction || [];
    const count = Math.max(saturated.length, dead.length);
    if (!count) return;
    const layers = Array.from({ length: count }, (_, i) => i + 1);
    const pad = (values) => layers.map((_, i) => (Number.isFinite(values[i]) ? values[i] : null));
    const data = [layers, pad(saturated), pad(dead)];
    if (!this.fractions) {
      this.fractions = this.chart(".fractions", {
        height: 150,
        legend: { live: false, show: true },
        scales: { x: { time: false }, y: { range: [0, 1] } },
        axes: [{ label: "hidden layer", incrs: [1, 2, 5, 10, 20, 50],
          values: (u, splits) => splits.map((v) => (this.names ? this.unitName(v - 1) : v)) },
          { size: 50, values: (u, s) => s.map((v) => `${Math.round(v * 100)}%`) }],
        series: [
          { label: "layer" },
          { label: "saturated", stroke: "#d68910", width: 2, points: { show: true, size: 6, fill: "#d68910" } },
          { label: "dead", stroke: "#34495e", width: 2, dash: [5, 3], points: { show: true, size: 6, fill: "#34495e" } },
        ],
      }, data);
    } else {
      this.fractions.setData(data);
    }
  }

  drawPrelu(probe) {
    const slopes = probe.prelu_slopes;
    if (!slopes || !slopes.length) return;
    this.$(".prelu-card").hidden = false;
    const data = [slopes.map((_, i) => i + 1), slopes];
    if (!this.prelu) {
      this.prelu = this.chart(".prelu", {
        height: 130,
        scales: { x: { time: false } },
        axes: [{ label: "hidden layer", incrs: [1, 2, 5, 10, 20, 50] }, { size: 44 }],
        series: [{ label: "layer" }, { label: "slope", stroke: this.colour, width: 2, points: { show: true, size: 6, fill: this.colour } }],
      }, data);
    } else {
      this.prelu.setData(data);
    }
  }

  drawHeatmap() {
    // rows: layers (layer 1 on top); columns: probes; colour: log10 of the weight-gradient norm
    const canvas = this.$(".heatmap");
    const probes = this.probes.filter((p) => p.grad_norms && p.grad_norms.length);
    const width = this.width();
    const layers = probes.length ? probes[probes.length - 1].grad_norms.length : 0;
    const height = Math.max(90, Math.min(220, layers * 16));
    const context = sized(canvas, width, height);
    context.clearRect(0, 0, width, height);
    if (!probes.length) return;
    let lo = Infinity;
    let hi = -Infinity;
    for (const p of probes) {
      for (const v of p.grad_norms) {
        if (positive(v) === null) continue;
        lo = Math.min(lo, Math.log10(v));
        hi = Math.max(hi, Math.log10(v));
      }
    }
    if (!Number.isFinite(lo)) return;
    lo = Math.floor(lo);
    hi = Math.max(lo + 1, Math.ceil(hi));
    const image = new ImageData(probes.length, layers);
    probes.forEach((p, column) => {
      for (let layer = 0; layer < layers; layer++) {
        const v = positive(p.grad_norms[layer]);
        const [r, g, b] = v === null ? [200, 200, 200] : colour((Math.log10(v) - lo) / (hi - lo));
        const i = 4 * (layer * probes.length + column);
        image.data.set([r, g, b, 255], i);
      }
    });
    const left = 46;
    const bottom = 14;
    const cells = new OffscreenCanvas(probes.length, layers);
    cells.getContext("2d").putImageData(image, 0, 0);
    context.imageSmoothingEnabled = false;
    context.drawImage(cells, left, 0, width - left, height - bottom);
    context.fillStyle = "#444";
    context.font = "11px system-ui, sans-serif";
    context.textBaseline = "top";
    context.fillText(this.names ? this.layerName(0, layers) : "layer 1", 0, 1);
    context.textBaseline = "bottom";
    context.fillText(this.names ? this.layerName(layers - 1, layers) : "out", 0, height - bottom);
    context.textBaseline = "bottom";
    context.fillText(`step ${probes[0].step}`, left, height);
    const end = `step ${probes[probes.length - 1].step}`;
    context.fillText(end, width - context.measureText(end).width, height);
    this.$(".legend .lo").textContent = `1e${lo}`;
    this.$(".legend .hi").textContent = `1e${hi}`;
    canvas.dataset.probes = String(probes.length);
  }

  drawHistograms() {
    // small multiples: one histogram per hidden layer, each on its own x range
    const canvas = this.$(".histograms");
    const histograms = this.latest && this.latest.activation_histogram;
    if (!histograms || !histograms.length) return;
    this.$(".histogram-card").hidden = false;
    const width = this.width();
    const columns = width > 420 ? 4 : 3;
    const cellWidth = width / columns;
    const cellHeight = 62;
    const rows = Math.ceil(histograms.length / columns);
    const height = rows * cellHeight;
    const context = sized(canvas, width, height);
    context.font = "10px system-ui, sans-serif";
    histograms.forEach((histogram, index) => {
      const x0 = (index % columns) * cellWidth + 4;
      const y0 = Math.floor(index / columns) * cellHeight;
      const w = cellWidth - 10;
      const h = cellHeight - 26;
      const counts = histogram.counts || [];
      const edges = histogram.edges || [];
      const most = Math.max(1, ...counts);
      context.fillStyle = "#f3f4f6";
      context.fillRect(x0, y0 + 12, w, h);
      context.fillStyle = this.colour;
      const bar = w / Math.max(1, counts.length);
      counts.forEach((c, i) => {
        const barHeight = (h * c) / most;
        context.fillRect(x0 + i * bar, y0 + 12 + h - barHeight, Math.max(1, bar - 0.5), barHeight);
      });
      context.fillStyle = "#333";
      context.textBaseline = "top";
      context.fillText(this.unitName(index), x0, y0);
      context.fillStyle = "#777";
      context.textBaseline = "bottom";
      if (edges.length) {
        context.fillText(exp(edges[0]), x0, y0 + cellHeight - 2);
        const right = exp(edges[edges.length - 1]);
        context.fillText(right, x0 + w - context.measureText(right).width, y0 + cellHeight - 2);
      }
    });
  }
}

// ---- start ---------------------------------------------------------------------------------

async function main() {
  state.token = takeToken();
  const form = document.getElementById("settings");
  try {
    buildForm(await api("/api/settings"));
  } catch (error) {
    showError(`could not read the settings: ${error.message}`);
    return;
  }
  readUrl();
  shapeHidden();
  writeUrl();
  form.addEventListener("change", () => {
    limitActivations();
    shapeHidden();
    writeUrl();
  });
  form.addEventListener("input", () => {
    shapeHidden();
    writeUrl();
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    start(runsBody(false));
  });
  document.getElementById("stop").addEventListener("click", stop);
  document.getElementById("resume").addEventListener("click", () => state.job && start({ ...state.job.body, resume: true }));
  document.getElementById("refresh").addEventListener("click", loadList);
  document.getElementById("example").addEventListener("click", (event) => {
    event.preventDefault();
    history.replaceState(null, "", event.currentTarget.getAttribute("href"));
    readUrl();
    writeUrl();
  });
  let resizing = 0;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => state.panels.forEach((p) => p.resize()), 150);
  });
  loadList();
}

main();
