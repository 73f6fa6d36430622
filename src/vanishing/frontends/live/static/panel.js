// One run's panel: its rows as the stream delivers them, its status and verdict, and its charts.
// Its layers are named only by the server's `layers` event (settings.naming.LayerNames: the
// words the report's sentences use).

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
  <div class="card"><h3>Log gradient norm, layer × step</h3>
    <div class="heat"><canvas class="heatmap"></canvas></div>
    <div class="legend"><span class="lo"></span><span class="bar"></span><span class="hi"></span></div></div>
  <div class="card"><h3>Loss and accuracy</h3><div class="loss"></div></div>
  <div class="card"><h3>Saturated and dead units per hidden layer <small class="when"></small></h3>
    <div class="fractions"></div></div>
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
    this.charts = {}; // uPlot charts by name: profile, steps, loss, fractions, prelu
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

  drawLoss() {
    // x: steps; the probe batch's loss live, each epoch's train/test loss and accuracy at its end
    const steps = [...new Set([...this.probes.map((p) => p.step), ...this.epochs.map((e) => e.step)])]
      .filter((s) => typeof s === "number").sort((a, b) => a - b);
    if (!steps.length) return;
    const at = (rows, key) => {
      const byStep = new Map(rows.map((r) => [r.step, r[key]]));
      return steps.map((s) => (byStep.has(s) && Number.isFinite(byStep.get(s)) ? byStep.get(s) : null));
    };
    const data = [steps, at(this.probes, "loss"), at(this.epochs, "train_loss"), at(this.epochs, "test_loss"),
      at(this.epochs, "test_accuracy")];
    this.chart("loss", () => charts.lossOptions(this.colour), data);
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
    this.$(".legend .lo").textContent = `1e${scale[0]}`;
    this.$(".legend .hi").textContent = `1e${scale[1]}`;
    canvas.dataset.probes = String(probes.length);
  }

  drawHistograms() {
    const histograms = this.latest && this.latest.activation_histogram;
    if (!histograms || !histograms.length) return;
    this.$(".histogram-card").hidden = false;
    charts.drawHistograms(this.$(".histograms"), histograms, this.names.hidden, this.colour, this.width());
  }
}
