// One run's panel: its rows as the stream delivers them, its status and verdict, and its charts.
// Its layers are named only by the server's `layers` event (settings.naming.LayerNames: the
// words the report's sentences use), a recurrent run's recurrent layers by its probe rows'
// `time_layers`.

import { LIVE_STATUSES } from "./api.js";
import * as charts from "./charts.js";
import { element } from "./dom.js";

const TEMPLATE = `
  <header><h2></h2><span class="status"></span></header>
  <p class="verdict" aria-live="polite">waiting for the first probe…</p>
  <div class="card profile-card"><h3>Gradient reaching each layer <small class="when"></small></h3>
    <div class="profile"></div>
    <p class="note">norm of each weighted layer's weight gradient, in the order the model runs them:
      a line that falls towards the first layer is a vanishing gradient. <b class="ratio"></b></p></div>
  <div class="card steps-card" hidden><h3>How far each step moves each layer <small class="when"></small></h3>
    <div class="steps"></div>
    <p class="note">update ratio ‖ΔW‖/‖W‖ of the optimizer's step: under SGD it falls with the gradient,
      Adam and RMSprop rescale each weight's step so it need not; near 1, a step as large as the weights.
      <b class="moves"></b></p></div>
  <div class="card time-card" hidden><h3>Gradient reaching each time step <small class="when"></small></h3>
    <div class="time"></div>
    <p class="note">‖∂L/∂hₜ‖ at each step t of the sequence, per recurrent layer, now (solid) and at the
      first probe (dashed): a line that falls towards t = 1 is a gradient vanishing through time.
      <b class="time-ratio"></b></p></div>
  <div class="card time-heat-card" hidden><h3>Log gradient norm, recurrent layer × time step <small class="when"></small></h3>
    <div class="heat"><canvas class="time-heatmap"></canvas></div>
    <div class="legend"><span class="lo"></span><span class="bar"></span><span class="hi"></span></div></div>
  <div class="card gates-card" hidden><h3>Gates per recurrent layer <small class="when"></small></h3>
    <table class="gates"></table>
    <p class="note">each gate's mean activation over the probe batch, its steps and units, now and at the
      first probe; saturated: its share below 0.05 or above 0.95. A forget (LSTM) or update (GRU) gate
      near 1 carries the state from step to step.</p></div>
  <div class="card heat-card"><h3>Log gradient norm, layer × step</h3>
    <div class="heat"><canvas class="heatmap"></canvas></div>
    <div class="legend"><span class="lo"></span><span class="bar"></span><span class="hi"></span></div></div>
  <div class="card"><h3 class="loss-title">Loss and accuracy</h3><div class="loss"></div>
    <p class="note loss-note" hidden></p></div>
  <div class="card"><h3>Saturated and dead units per hidden layer <small class="when"></small></h3>
    <div class="fractions"></div></div>
  <div class="card ranks-card" hidden><h3>Each rank of the data-parallel job, at its last probe</h3>
    <table class="ranks"></table><p class="note ranks-note"></p></div>
  <div class="card histogram-card" hidden><h3>Activations per hidden layer <small class="when"></small></h3>
    <canvas class="histograms"></canvas></div>
  <div class="card prelu-card" hidden><h3>PReLU slopes per hidden layer</h3><div class="prelu"></div></div>`;

export class Panel {
  // `changed(panel)`: the panel has something new to draw (the caller batches the redraws)
  constructor(run, label, changed) {
    this.run = run;
    this.label = label;
    this.changed = changed;
    this.status = "";
    this.names = { weighted: [], hidden: [] }; // the server's, per weighted and per hidden layer
    this.charts = {}; // uPlot charts by name: profile, steps, time, loss, fractions, prelu
    this.regression = false; // the epoch rows carry a baseline loss: no accuracy to show
    this.timeShape = ""; // the time chart's layers and steps: another shape, another chart
    this.el = element("section", { class: "panel", "data-run": run });
    this.el.innerHTML = TEMPLATE;
    this.$("h2").textContent = label;
    this.$("h2").title = run;
    this.reset();
  }

  $(selector) {
    return this.el.querySelector(selector);
  }

  setColour(c) {
    this.colour = c;
    this.el.style.setProperty("--run", c);
  }

  setNames(weighted, hidden) {
    // the layers' names from the server; the charts whose axes they label are drawn anew
    const names = { weighted: weighted || [], hidden: hidden || [] };
    if (JSON.stringify(names) === JSON.stringify(this.names)) return;
    this.names = names;
    this.destroyCharts(["profile", "steps", "fractions", "prelu"]);
    this.changed(this);
  }

  reset() {
    // Forget the rows: the stream replays them from the start when it (re)opens.
    this.probes = [];
    this.epochs = [];
    this.latest = null;
    this.first = null;
    this.firstSteps = null; // the first probe with update ratios (none: no optimizer watched)
    this.firstTime = null; // the first probe with a time profile (a recurrent layer's)
    this.changed(this);
  }

  add(row) {
    if (row.kind === "probe") {
      const last = this.probes[this.probes.length - 1];
      if (last && row.step <= last.step) return; // a replayed row
      this.probes.push({ step: row.step, epoch: row.epoch, grad_norms: row.grad_norms, loss: row.loss });
      this.latest = row;
      if (!this.first) this.first = row;
      if (!this.firstSteps && row.update_ratio && row.update_ratio.length) this.firstSteps = row;
      if (!this.firstTime && timeProfile(row)) this.firstTime = row;
    } else if (row.kind === "epoch") {
      const last = this.epochs[this.epochs.length - 1];
      if (last && row.epoch <= last.epoch) return;
      this.epochs.push(row);
    } else if (row.kind === "diverged") {
      this.setVerdict(`the loss became infinite or NaN by step ${row.step}: the run diverged`);
    }
    this.changed(this);
  }

  setVerdict(headline) {
    this.$(".verdict").textContent = headline;
    this.$(".verdict").classList.add("said");
  }

  setRanks(header, rows, note) {
    // the server's per-rank table (reporting.ranks: the report's), the combined run's row first
    const cell = (tag, text) => element(tag, { text });
    const lines = [header, ...rows].map((line, i) => element("tr", {}, line.map((text) => cell(i ? "td" : "th", text))));
    this.$(".ranks").replaceChildren(...lines);
    this.$(".ranks-note").textContent = note;
    this.$(".ranks-card").hidden = false;
  }

  setStatus(status, note) {
    this.status = status || "waiting"; // null: no result yet, nothing training it
    const badge = this.$(".status");
    badge.textContent = note ? `${this.status} ${note}` : this.status; // note: whose run it is
    badge.className = `status ${LIVE_STATUSES.has(this.status) ? "live" : this.status}`;
  }

  ended() {
    if (!this.status) this.setStatus("finished");
    // an unreadable run keeps the server's reason in place of a verdict
    if (!this.latest && this.status !== "unreadable") this.$(".verdict").textContent = "no probe recorded in this run";
  }

  width() {
    return Math.max(220, this.$(".card").clientWidth - 20);
  }

  resize() {
    const width = this.width();
    for (const chart of Object.values(this.charts)) chart.setSize({ width, height: chart.height });
    this.drawHeatmap();
    if (this.latest) this.drawTimeHeatmap(this.latest);
    this.drawHistograms();
  }

  destroyCharts(names) {
    for (const name of names) {
      if (this.charts[name]) this.charts[name].destroy();
      delete this.charts[name];
    }
  }

  destroy() {
    this.destroyCharts(Object.keys(this.charts));
    this.el.remove();
  }

  chart(name, options, data) {
    // the chart `name` with `data`: made by `options()` the first time, then given the new data
    if (this.charts[name]) this.charts[name].setData(data);
    else this.charts[name] = charts.lineChart(this.$(`.${name}`), this.width(), options(), data);
  }

  draw() {
    const probe = this.latest;
    for (const when of this.el.querySelectorAll(".when")) when.textContent = probe ? `step ${probe.step}` : "";
    if (probe) {
      this.drawProfile(probe);
      this.drawSteps(probe);
      this.drawTime(probe);
      this.drawTimeHeatmap(probe);
      this.drawGates(probe);
      this.drawFractions(probe);
      this.drawPrelu(probe);
    }
    this.drawLoss();
    this.drawHeatmap();
    this.drawHistograms();
  }

  drawProfile(probe) {
    const norms = probe.grad_norms;
    const { weighted } = this.names;
    const initial = this.first && this.first.grad_norms.length === norms.length ? this.first.grad_norms : norms.map(() => null);
    const data = [norms.map((_, i) => i + 1), norms.map(charts.positive), initial.map(charts.positive)];
    // The first and the last layer a gradient reached (a model may list one it never used).
    const reached = norms.map((v, i) => (v === null || v === undefined ? -1 : i)).filter((i) => i >= 0);
    const box = this.$(".profile");
    box.dataset.step = String(probe.step);
    if (reached.length >= 2) {
      const [first, last] = [reached[0], reached[reached.length - 1]];
      const ratio = norms[first] / norms[last];
      box.dataset.ratio = String(ratio);
      const says = (i, fallback) => weighted[i] || fallback;
      this.$(".ratio").textContent = `At step ${probe.step}, ${says(first, "the first layer")} gets ${charts.exp(ratio)} of ${says(last, "the last")}'s gradient.`;
    } else {
      delete box.dataset.ratio;
      this.$(".ratio").textContent = "";
    }
    if (!data[1].some((v) => v !== null)) return;
    this.chart("profile", () => charts.profileOptions(weighted, this.colour, this.first.step), data);
  }

  drawSteps(probe) {
    // the update ratio ‖ΔW‖/‖W‖ per weighted layer, now and at the first probe that had one
    const ratios = probe.update_ratio;
    if (!ratios || !ratios.length || !this.firstSteps) return;
    const { weighted } = this.names;
    const start = this.firstSteps.update_ratio;
    const initial = start.length === ratios.length ? start : ratios.map(() => null);
    const data = [ratios.map((_, i) => i + 1), ratios.map(charts.positive), initial.map(charts.positive)];
    const box = this.$(".steps");
    box.dataset.step = String(probe.step);
    box.dataset.values = JSON.stringify(data[1]);
    const [first, last] = [data[1][0], data[1][data[1].length - 1]];
    if (ratios.length >= 2 && first !== null && last !== null) {
      const says = (i, fallback) => weighted[i] || fallback;
      const relative = first / last;
      box.dataset.relative = String(relative);
      this.$(".moves").textContent = `At step ${probe.step}, ${says(0, "the first layer")} moves ${charts.exp(relative)} times as far as ${says(ratios.length - 1, "the last")}, for its size.`;
    } else {
      delete box.dataset.relative;
      this.$(".moves").textContent = "";
    }
    if (!data[1].some((v) => v !== null)) return;
    this.$(".steps-card").hidden = false;
    const firstStep = this.firstSteps.step;
    this.chart("steps", () => charts.profileOptions(weighted, this.colour, firstStep, "‖ΔW‖/‖W‖"), data);
  }

  drawTime(probe) {
    // ‖∂L/∂h_t‖ over the time steps, per recurrent layer, at this probe and at the first
    const norms = timeProfile(probe);
    if (!norms || !this.firstTime) return;
    const names = timeNames(probe, norms.length);
    const steps = Math.max(...norms.map((values) => values.length));
    const start = timeProfile(this.firstTime);
    const initial = start.length === norms.length ? start : norms.map(() => []);
    const shape = JSON.stringify([names, steps, this.firstTime.step]);
    if (shape !== this.timeShape) this.destroyCharts(["time"]);
    this.timeShape = shape;
    const ts = Array.from({ length: steps }, (_, i) => i + 1);
    const pad = (values) => ts.map((_, i) => charts.positive(values[i]));
    const data = [ts, ...norms.flatMap((values, layer) => [pad(values), pad(initial[layer])])];
    // per layer, the gradient reaching t = 1 over that reaching the last step, and per step
    const ratios = norms.map((values) => {
      const [first, last] = [charts.positive(values[0]), charts.positive(values[values.length - 1])];
      return first !== null && last !== null && values.length > 1 ? first / last : null;
    });
    const box = this.$(".time");
    box.dataset.step = String(probe.step);
    box.dataset.firstStep = String(this.firstTime.step);
    box.dataset.layers = JSON.stringify(names);
    box.dataset.steps = String(steps);
    box.dataset.ratios = JSON.stringify(ratios);
    box.dataset.values = JSON.stringify(data.slice(1).filter((_, i) => i % 2 === 0));
    const said = ratios.map((ratio, layer) => {
      if (ratio === null) return "";
      const whose = names[layer] ? `${names[layer]}: ` : "";
      const last = norms[layer].length;
      const perStep = ratio > 0 ? ` (${charts.exp(ratio ** (1 / (last - 1)))} per step)` : "";
      return `${whose}the gradient reaching t = 1 is ${charts.exp(ratio)} of that reaching t = ${last}${perStep}`;
    }).filter(Boolean);
    this.$(".time-ratio").textContent = said.length ? `At step ${probe.step}, ${said.join("; ")}.` : "";
    if (!data.slice(1).some((values) => values.some((v) => v !== null))) return;
    this.$(".time-card").hidden = false;
    const colours = norms.map((_, layer) => (layer === 0 ? this.colour : charts.LAYER_COLOURS[(layer - 1) % charts.LAYER_COLOURS.length]));
    this.chart("time", () => charts.timeOptions(names, colours, this.firstTime.step), data);
  }

  drawTimeHeatmap(probe) {
    // recurrent layer x time step at this probe, log colour
    const norms = timeProfile(probe);
    if (!norms) return;
    const canvas = this.$(".time-heatmap");
    const scale = charts.drawTimeHeatmap(canvas, norms, timeNames(probe, norms.length), this.width());
    if (!scale) return;
    this.$(".time-heat-card").hidden = false;
    this.$(".time-heat-card .legend .lo").textContent = `1e${scale[0]}`;
    this.$(".time-heat-card .legend .hi").textContent = `1e${scale[1]}`;
    canvas.dataset.step = String(probe.step);
    canvas.dataset.scale = JSON.stringify(scale);
  }

  drawGates(probe) {
    // each recurrent layer's gates: mean activation now and at the first probe, saturated share
    const gates = Array.isArray(probe.gates) ? probe.gates : [];
    if (!gates.some((g) => g && typeof g === "object" && Object.keys(g).length)) return;
    const names = timeNames(probe, gates.length);
    const listed = (row, key) => (row && Array.isArray(row[key]) && row[key].length === gates.length ? row[key] : []);
    const initial = listed(this.firstTime, "gates");
    const saturated = listed(probe, "gates_saturated");
    const share = (v) => (Number.isFinite(v) ? `${(100 * v).toFixed(1)} %` : "–");
    const mean = (v) => (Number.isFinite(v) ? v.toFixed(2) : "–");
    const cell = (tag, text) => element(tag, { text });
    const rows = [element("tr", {}, ["layer", "gate", "now", `step ${this.firstTime ? this.firstTime.step : ""}`.trim(), "saturated"].map((t) => cell("th", t)))];
    gates.forEach((layer, i) => {
      for (const [gate, value] of Object.entries(layer || {})) {
        rows.push(element("tr", {}, [
          cell("td", names[i] || ""), cell("td", gate), cell("td", mean(value)),
          cell("td", mean((initial[i] || {})[gate])), cell("td", share((saturated[i] || {})[gate])),
        ]));
      }
    });
    const table = this.$(".gates");
    table.replaceChildren(...rows);
    table.dataset.step = String(probe.step);
    table.dataset.values = JSON.stringify(gates);
    this.$(".gates-card").hidden = false;
  }

  drawLoss() {
    // x: steps; the probe batch's loss live, each epoch's train/test loss and accuracy at its end
    // (a regression's epoch rows carry its baseline and no accuracy: the baseline is drawn)
    const steps = [...new Set([...this.probes.map((p) => p.step), ...this.epochs.map((e) => e.step)])]
      .filter((s) => typeof s === "number").sort((a, b) => a - b);
    if (!steps.length) return;
    const at = (rows, key) => {
      const byStep = new Map(rows.map((r) => [r.step, r[key]]));
      return steps.map((s) => (byStep.has(s) && Number.isFinite(byStep.get(s)) ? byStep.get(s) : null));
    };
    const baselines = this.epochs.map((e) => e.baseline_loss).filter((v) => Number.isFinite(v));
    const regression = baselines.length > 0;
    if (regression !== this.regression) {
      this.regression = regression;
      this.destroyCharts(["loss"]);
      this.$(".loss-title").textContent = regression ? "Loss (mean squared error) and its baseline" : "Loss and accuracy";
    }
    const data = [steps, at(this.probes, "loss"), at(this.epochs, "train_loss"), at(this.epochs, "test_loss"),
      regression ? steps.map(() => baselines[baselines.length - 1]) : at(this.epochs, "test_accuracy")];
    this.chart("loss", () => charts.lossOptions(this.colour, regression), data);
    const note = this.$(".loss-note");
    const tested = this.epochs.filter((e) => Number.isFinite(e.test_loss));
    const last = tested[tested.length - 1];
    note.hidden = !(regression && last);
    if (!regression || !last) return;
    const baseline = baselines[baselines.length - 1];
    note.dataset.loss = String(last.test_loss);
    note.dataset.baseline = String(baseline);
    note.textContent = `Epoch ${last.epoch}: test loss (mean squared error) ${charts.exp(last.test_loss)}; `
      + `the baseline, always answering the targets' mean, scores ${charts.exp(baseline)}.`;
  }

  drawFractions(probe) {
    const saturated = probe.saturated_fraction || [];
    const dead = probe.dead_fraction || [];
    const count = Math.max(saturated.length, dead.length);
    if (!count) return;
    const layers = Array.from({ length: count }, (_, i) => i + 1);
    const pad = (values) => layers.map((_, i) => (Number.isFinite(values[i]) ? values[i] : null));
    this.chart("fractions", () => charts.fractionsOptions(this.names.hidden), [layers, pad(saturated), pad(dead)]);
  }

  drawPrelu(probe) {
    const slopes = probe.prelu_slopes;
    if (!slopes || !slopes.length) return;
    this.$(".prelu-card").hidden = false;
    this.chart("prelu", () => charts.preluOptions(this.names.hidden, this.colour), [slopes.map((_, i) => i + 1), slopes]);
  }

  drawHeatmap() {
    const probes = this.probes.filter((p) => p.grad_norms && p.grad_norms.length);
    const canvas = this.$(".heatmap");
    const scale = charts.drawHeatmap(canvas, probes, this.names.weighted, this.width());
    if (!scale) return;
    this.$(".heat-card .legend .lo").textContent = `1e${scale[0]}`;
    this.$(".heat-card .legend .hi").textContent = `1e${scale[1]}`;
    canvas.dataset.probes = String(probes.length);
  }

  drawHistograms() {
    const histograms = this.latest && this.latest.activation_histogram;
    if (!histograms || !histograms.length) return;
    this.$(".histogram-card").hidden = false;
    charts.drawHistograms(this.$(".histograms"), histograms, this.names.hidden, this.colour, this.width());
  }
}

function timeProfile(row) {
  // a probe row's ‖∂L/∂h_t‖ per recurrent layer (lists of T numbers), or null: none recorded
  const norms = row && row.time_signal_norms;
  if (!Array.isArray(norms) || !norms.length || !norms.every(Array.isArray)) return null;
  return norms.some((values) => values.length) ? norms : null;
}

function timeNames(row, count) {
  // the recurrent layers' names the row gives (`time_layers`), one per layer, else blanks
  const names = row.time_layers;
  return Array.isArray(names) && names.length === count ? names.map(String) : Array(count).fill("");
}
