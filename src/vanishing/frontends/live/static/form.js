// The settings form: built from /api/settings' fields, mirrored in the URL (the page's whole
// state: a copied address shares the experiment).

import { MAX_RUNS, queryUrl } from "./api.js";
import { element } from "./dom.js";

function shown(value) {
  // a default as the command line writes it (the server may send it raw or already as text)
  if (value === null || value === undefined) return "";
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (Array.isArray(value)) return value.join(",");
  return String(value);
}

export class SettingsForm {
  constructor(form, settings) {
    this.form = form;
    this.fields = settings.fields;
    this.defaultWidth = (settings.depth_width || {}).default_width || 256;
    // per arch, the defaults that differ with it (a recurrent network: tanh, one layer of 128)
    this.archDefaults = settings.arch_defaults || {};
    this.build();
    this.arch = this.archControl() ? this.archControl().value : ""; // the arch the defaults show
  }

  build() {
    this.form.elements.width.value = this.defaultWidth;
    this.form.elements.width.dataset.default = String(this.defaultWidth);
    const sections = this.form.querySelector("#sections");
    const fieldsets = new Map();
    for (const field of this.fields) {
      if (field.name === "activation") {
        this.buildActivations(field);
        continue;
      }
      const label = fieldLabel(field);
      if (field.kind === "widths") {
        label.title += " (depth and width replace these when depth is set)";
        this.form.querySelector("#shape").append(label);
        continue;
      }
      if (field.name === "arch") {
        // the network first: its kind sets the shape's and the activation's defaults
        this.form.querySelector("#shape legend").after(label);
        continue;
      }
      const section = field.section || "other";
      if (!fieldsets.has(section)) {
        const fieldset = element("fieldset", {}, [element("legend", { text: section })]);
        fieldsets.set(section, fieldset);
        sections.append(fieldset);
      }
      fieldsets.get(section).append(label);
    }
  }

  buildActivations(field) {
    const box = this.form.querySelector("#activations .choices");
    box.title = field.help || "";
    box.dataset.default = shown(field.default);
    for (const name of field.choices || []) {
      const input = element("input", { type: "checkbox", name: "activations", value: name });
      input.checked = name === shown(field.default);
      box.append(element("label", { class: "check" }, [input, name]));
    }
  }

  controls() {
    // every field's control but the activation checkboxes
    return [...this.form.querySelectorAll("[data-default]")].filter((c) => c.name);
  }

  activationBoxes() {
    return [...this.form.querySelectorAll('input[name="activations"]')];
  }

  isWidths(control) {
    return this.fields.some((f) => f.name === control.name && f.kind === "widths");
  }

  archControl() {
    return this.form.elements.arch;
  }

  defaultsOf(arch) {
    // {activation, hidden}: the defaults a run of `arch` gets where it leaves them out
    const field = (name) => shown((this.fields.find((f) => f.name === name) || {}).default);
    const own = this.archDefaults[arch] || {};
    return { activation: own.activation ?? field("activation"), hidden: own.hidden ?? field("hidden") };
  }

  followArch() {
    // Another arch: the activation and hidden widths it defaults to are shown instead of the
    // last arch's, where the user left those as they were (what differs from the shown default
    // is sent; what equals it is left to the settings parser, which gives the same default).
    const control = this.archControl();
    if (!control || control.value === this.arch) return;
    const before = this.defaultsOf(this.arch);
    const after = this.defaultsOf(control.value);
    this.arch = control.value;
    for (const widths of this.controls().filter((c) => this.isWidths(c))) {
      if (widths.value.trim() === before.hidden || widths.value.trim() === "") widths.value = after.hidden;
      widths.dataset.default = after.hidden;
    }
    const boxes = this.activationBoxes();
    const checked = boxes.filter((b) => b.checked).map((b) => b.value);
    if (!checked.length || (checked.length === 1 && checked[0] === before.activation)) {
      for (const box of boxes) box.checked = box.value === after.activation;
    }
    this.form.querySelector("#activations .choices").dataset.default = after.activation;
    this.limitActivations();
  }

  values() {
    // {activations, depth, width, shared: {field: text}}: only what differs from the defaults
    const depth = this.form.elements.depth.value.trim();
    const shared = {};
    for (const control of this.controls()) {
      if (control.name === "depth" || control.name === "width") continue;
      const value = valueOf(control);
      if (value === control.dataset.default || (value === "" && control.placeholder === "none")) continue;
      if (depth && this.isWidths(control)) continue;
      shared[control.name] = value;
    }
    const activations = this.activationBoxes().filter((b) => b.checked).map((b) => b.value);
    return { activations, depth, width: this.form.elements.width.value.trim(), shared };
  }

  writeUrl() {
    const { activations, depth, width, shared } = this.values();
    const params = new URLSearchParams();
    params.set("activations", activations.join(","));
    if (depth) {
      params.set("depth", depth);
      params.set("width", width);
    }
    for (const [name, value] of Object.entries(shared)) params.set(name, value);
    history.replaceState(null, "", queryUrl(params));
  }

  readUrl() {
    const params = new URLSearchParams(location.search);
    if (params.has("arch") && this.archControl()) {
      // the arch's defaults first: the widths and activations the address gives replace them
      this.archControl().value = params.get("arch");
      this.followArch();
    }
    const activations = params.get("activations") || params.get("activation");
    if (activations) {
      const wanted = new Set(activations.split(",").map((a) => a.trim()));
      for (const box of this.activationBoxes()) box.checked = wanted.has(box.value);
    }
    for (const control of this.controls()) {
      if (!params.has(control.name)) continue;
      const value = params.get(control.name);
      if (control.type === "checkbox") control.checked = ["yes", "true", "on", "1"].includes(value.toLowerCase());
      else control.value = value;
    }
    if (params.has("depth")) this.form.elements.depth.value = params.get("depth");
    this.limitActivations();
  }

  limitActivations() {
    const boxes = this.activationBoxes();
    const full = boxes.filter((b) => b.checked).length >= MAX_RUNS;
    for (const box of boxes) box.disabled = full && !box.checked;
  }

  shapeHidden() {
    // depth and width replace the hidden widths when depth is set: grey those out
    const depth = this.form.elements.depth.value.trim() !== "";
    for (const control of this.controls()) if (this.isWidths(control)) control.disabled = depth;
  }

  runsBody(resume) {
    // POST /api/runs' body: one run per chosen activation, the other settings shared; the
    // arch's default activation is left out, as any default is (the parser gives it)
    const { activations, depth, width, shared } = this.values();
    const fallback = this.defaultsOf(this.arch).activation;
    const runs = activations.map((activation) => {
      const run = activation === fallback ? { ...shared } : { activation, ...shared };
      if (depth) Object.assign(run, { depth, width });
      return run;
    });
    return { runs, resume };
  }
}

function fieldLabel(field) {
  // a field's control in its <label>, holding its default in data-default
  const fallback = shown(field.default);
  let control;
  if (field.kind === "bool") {
    control = element("input", { type: "checkbox", name: field.name });
    control.checked = fallback === "yes";
  } else if (field.choices && field.choices.length) {
    // an optional one (how a recurrent network reads an image) may be none: its default
    const choices = field.optional ? ["none", ...field.choices] : field.choices;
    control = element("select", { name: field.name },
      choices.map((c) => element("option", { value: c, text: c })));
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
  return element("label", { title: field.help || "", class: field.kind === "bool" ? "check" : "" },
    [field.name.replaceAll("_", " "), control]);
}

function valueOf(control) {
  return control.type === "checkbox" ? (control.checked ? "yes" : "no") : control.value.trim();
}
