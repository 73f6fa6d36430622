// The list of finished runs, compares and sweeps in the served directories (GET /api/list).

import { MAX_RUNS } from "./api.js";
import { element } from "./dom.js";

export class RunList {
  // `open(runs, beside)` shows [{run, label}] in place of the runs on screen, or beside them
  constructor(list, api, open) {
    this.list = list;
    this.api = api;
    this.open = open;
  }

  async load() {
    let items;
    try {
      items = (await this.api("/api/list")).items;
    } catch (error) {
      this.list.replaceChildren(element("li", { class: "empty", text: `could not read the list: ${error.message}` }));
      return;
    }
    if (!items.length) {
      this.list.replaceChildren(element("li", { class: "empty", text: "nothing yet: finished runs appear here" }));
      return;
    }
    this.list.replaceChildren(...items.map((item) => this.item(item)));
  }

  item(item) {
    const accuracy = score(item);
    const runs = item.runs.slice(0, MAX_RUNS).map((run) => ({ run, label: runName(run, item) }));
    const open = element("button", { type: "button", class: "open", title: item.path, text: item.label || item.path });
    open.addEventListener("click", () => this.open(runs, false));
    const beside = element("button", { type: "button", class: "beside", title: "show beside the runs on screen", text: "+" });
    beside.addEventListener("click", () => this.open(runs, true));
    return element("li", { class: `item ${item.kind}`, "data-path": item.path }, [
      element("span", { class: "kind", text: item.kind }), open, beside,
      element("span", { class: "meta", text: [item.status, item.note, accuracy, runCount(item.runs.length)].filter(Boolean).join(" · ") }),
    ]);
  }
}

function runCount(count) {
  // A compare or sweep opens its first MAX_RUNS runs only: say so where it has more.
  if (count <= 1) return "";
  return count > MAX_RUNS ? `${count} runs (opens the first ${MAX_RUNS})` : `${count} runs`;
}

function runName(run, item) {
  // a run's panel title: the server's label for a single run, else its directory's name
  if (item.runs.length === 1 && item.label) return item.label;
  return run.split("/").filter(Boolean).slice(-1)[0] || run;
}

function score(item) {
  // a classification's test accuracy; a regression's test loss (mean squared error) and baseline
  if (Number.isFinite(item.test_accuracy)) return `${(100 * item.test_accuracy).toFixed(1)} %`;
  if (Number.isFinite(item.test_loss) && Number.isFinite(item.baseline_loss)) {
    return `MSE ${item.test_loss.toPrecision(3)} (baseline ${item.baseline_loss.toPrecision(3)})`;
  }
  return "";
}
