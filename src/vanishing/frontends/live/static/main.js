// vanishing live: the settings form, one panel of charts per run, one event stream for all.
// No build step: these ES modules are served as they are, main.js first; nothing is fetched
// from anywhere but this server.

import { connect, takeToken } from "./api.js";
import { showError } from "./dom.js";
import { SettingsForm } from "./form.js";
import { RunList } from "./list.js";
import { Runs } from "./runs.js";

async function main() {
  const api = connect(takeToken());
  const list = new RunList(document.getElementById("list"), api, (chosen, beside) => runs.show(chosen, beside));
  const runs = new Runs(document.getElementById("runs"), api, () => list.load());
  const element = document.getElementById("settings");
  let form;
  try {
    form = new SettingsForm(element, await api("/api/settings"));
  } catch (error) {
    showError(`could not read the settings: ${error.message}`);
    return;
  }
  form.readUrl();
  form.shapeHidden();
  form.writeUrl();
  element.addEventListener("change", () => {
    form.followArch(); // a recurrent network defaults to tanh and one layer of 128
    form.limitActivations();
    form.shapeHidden();
    form.writeUrl();
  });
  element.addEventListener("input", () => {
    form.shapeHidden();
    form.writeUrl();
  });
  element.addEventListener("submit", (event) => {
    event.preventDefault();
    runs.start(form.runsBody(false));
  });
  document.getElementById("stop").addEventListener("click", () => runs.stop());
  document.getElementById("resume").addEventListener("click", () => runs.resume());
  document.getElementById("refresh").addEventListener("click", () => list.load());
  document.getElementById("example").addEventListener("click", (event) => {
    event.preventDefault();
    history.replaceState(null, "", event.currentTarget.getAttribute("href"));
    form.readUrl();
    form.shapeHidden();
    form.writeUrl();
  });
  let resizing = 0;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => runs.resize(), 150);
  });
  list.load();
}

main();
