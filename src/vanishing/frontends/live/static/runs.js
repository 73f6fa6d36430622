// The runs on screen: one panel each, the one event stream that feeds them, and the job started
// from this page (start, stop, resume).

import { LIVE_STATUSES, MAX_RUNS } from "./api.js";
import { showError } from "./dom.js";
import { Panel } from "./panel.js";
import { follow } from "./stream.js";

const RUN_COLOURS = ["#c0392b", "#1f6fb2", "#d68910", "#239b56"];

export class Runs {
  // `main`: where the panels go; `jobEnded()`: after the page's job has ended (the list changed)
  constructor(main, api, jobEnded) {
    this.main = main;
    this.api = api;
    this.jobEnded = jobEnded;
    this.panels = new Map(); // run path -> Panel
    this.source = null; // the one EventSource
    this.job = null; // {id, body, runs}: the job started from this page, for stop and resume
    this.dirty = new Set(); // panels to redraw at the next animation frame
  }

  show(runs, beside = false) {
    // The runs to show, [{run, label}] (replacing those on screen unless `beside`), then one
    // stream for them all.
    const wanted = beside ? [...this.panels.values()].map((p) => ({ run: p.run, label: p.label })) : [];
    for (const r of runs) if (!wanted.some((w) => w.run === r.run)) wanted.push(r);
    while (wanted.length > MAX_RUNS) wanted.shift();
    for (const [run, panel] of this.panels) {
      if (!wanted.some((w) => w.run === run)) {
        panel.destroy();
        this.panels.delete(run);
      }
    }
    document.getElementById("welcome").hidden = true;
    wanted.forEach(({ run, label }, index) => {
      if (!this.panels.has(run)) this.panels.set(run, new Panel(run, label, (panel) => this.schedule(panel)));
      const panel = this.panels.get(run);
      panel.setColour(RUN_COLOURS[index % RUN_COLOURS.length]);
      this.main.append(panel.el); // keeps the order of `wanted`
    });
    this.main.dataset.count = String(wanted.length);
    this.resize();
    this.listen();
  }

  listen() {
    if (this.source) this.source.close();
    this.source = null;
    const runs = [...this.panels.keys()];
    if (!runs.length) return;
    const source = follow(runs, {
      panel: (run) => this.panels.get(run),
      opened: () => this.panels.forEach((panel) => panel.reset()), // the rows come again
      status: () => this.checkJob(),
      ended: (stopped) => {
        if (this.source === source) this.source = null;
        for (const panel of this.panels.values()) {
          if (stopped && LIVE_STATUSES.has(panel.status)) panel.setStatus("stopped");
          panel.ended();
        }
        this.checkJob(true);
      },
    });
    this.source = source;
  }

  schedule(panel) {
    // redraw `panel` at the next animation frame, once however many rows came
    if (!this.dirty.size) requestAnimationFrame(() => this.drawDirty());
    this.dirty.add(panel);
  }

  drawDirty() {
    const panels = [...this.dirty];
    this.dirty.clear();
    for (const panel of panels) if (this.panels.get(panel.run) === panel) panel.draw();
  }

  resize() {
    for (const panel of this.panels.values()) panel.resize();
  }

  async start(body) {
    // POST /api/runs: the job's runs on screen, or the server's error under the form
    showError("");
    if (!body.runs.length) {
      showError("Choose at least one activation.");
      return;
    }
    document.getElementById("start").disabled = true;
    try {
      const reply = await this.api("/api/runs", body);
      this.job = { id: reply.job, body, runs: reply.runs.map((r) => r.run) };
      this.show(reply.runs);
      this.setJobButtons(true);
    } catch (error) {
      showError(error.message);
    } finally {
      document.getElementById("start").disabled = false;
    }
  }

  resume() {
    if (this.job) this.start({ ...this.job.body, resume: true });
  }

  async stop() {
    if (!this.job) return;
    document.getElementById("stop").disabled = true;
    try {
      await this.api(`/api/jobs/${encodeURIComponent(this.job.id)}/stop`, {});
    } catch (error) {
      showError(error.message);
    }
  }

  setJobButtons(running) {
    document.getElementById("stop").disabled = !running;
    document.getElementById("resume").disabled = running || !this.job;
  }

  checkJob(ended = false) {
    // the page's job has ended once none of its runs trains: its buttons and the list follow
    if (!this.job) return;
    const runs = this.job.runs || [...this.panels.keys()];
    const live = runs.some((run) => {
      const panel = this.panels.get(run);
      return panel && LIVE_STATUSES.has(panel.status) && !ended;
    });
    if (!live && (ended || runs.every((run) => this.panels.get(run)?.status))) {
      this.setJobButtons(false);
      this.jobEnded();
    }
  }
}
