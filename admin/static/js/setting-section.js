// A section of the settings page that edits a few scalar settings through the generic edit API:
// fields built from the schema (form.js), where each value comes from, whether it applies at once,
// and a "Review change" button that shows the diff (ChangeReview) before anything is written.
//
// The patch is built from the admin's intent (the values in the fields) and the config as it is when
// the patch is built, so "Reload and reapply" after a conflict writes the same values into the new
// file: a value the file holds is replaced, one it lacks is added (with the mappings above it), an
// emptied optional field is removed (back to its default).

import { ChangeReview, isReference, nodeAt, pointer, sourceText } from "./edit.js";
import { describe, schemaAt, schemaField } from "./form.js";
import { fill, h } from "./dom.js";

/** The value at `path` in a plain config, or undefined. */
export function valueAt(config, path) {
  let value = config;
  for (const part of path) value = value === undefined || value === null ? undefined : value[part];
  return value;
}

function inFile(tree, path) {
  const node = nodeAt(tree, ...path);
  return Boolean(node && node.source && node.source.kind !== "default");
}

function same(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * JSON Patch ops that make the file say `changes` ([{path, value}]; value undefined: back to the
 * default) on the config `state` (as `loadTree` gives it). Nothing for a value already in effect.
 */
export function settingOps(state, changes) {
  const ops = [];
  const additions = new Map(); // pointer of a key the file lacks → the mapping to add there
  for (const { path, value } of changes) {
    const present = inFile(state.tree, path);
    const current = valueAt(state.config, path);
    if (value === undefined) {
      if (present) ops.push({ op: "remove", path: pointer(...path) });
      continue;
    }
    if (same(current, value)) continue;
    if (present) {
      ops.push({ op: "replace", path: pointer(...path), value });
      continue;
    }
    let depth = path.length - 1; // the first key on the path that the file lacks
    while (depth > 0 && !inFile(state.tree, path.slice(0, depth))) depth -= 1;
    const at = pointer(...path.slice(0, depth + 1));
    const rest = path.slice(depth + 1);
    if (!rest.length) {
      ops.push({ op: "add", path: at, value });
      continue;
    }
    const mapping = additions.get(at) || {};
    let target = mapping;
    for (const key of rest.slice(0, -1)) target = target[key] = target[key] || {};
    target[rest[rest.length - 1]] = value;
    additions.set(at, mapping);
  }
  for (const [at, value] of additions) ops.push({ op: "add", path: at, value });
  return ops;
}

/** Checkboxes for a list whose items are one of an enum (`failover.retry_on`): the same interface as
 * form.js's `schemaField`. The list reads in the enum's order. */
export function enumChecklist(spec, value, { name, label, id }) {
  const options = spec.items?.enum || [];
  const problem = h("span", { class: "problem", role: "alert" });
  const boxes = options.map((option) => h("input", { type: "checkbox", name, value: option,
    id: `${id}-${option.replaceAll("_", "-")}` }));
  const set = (v) => {
    const chosen = new Set(Array.isArray(v) ? v : spec.default || []);
    for (const box of boxes) box.checked = chosen.has(box.value);
  };
  const current = () => boxes.filter((box) => box.checked).map((box) => box.value);
  set(value);
  const initial = JSON.stringify(current());
  const element = h("fieldset", { class: "field schema-field checklist", id },
    h("legend", {}, label),
    h("div", { class: "choices" }, boxes.map((box) => h("label", { class: "choice" }, box, h("code", {}, box.value)))),
    problem, h("small", { class: "help-text" }, describe(spec.description)));
  const read = () => {
    const chosen = current();
    const changed = JSON.stringify(chosen) !== initial;
    element.classList.toggle("changed", changed);
    return { value: chosen, error: "", changed };
  };
  for (const box of boxes) box.addEventListener("change", read);
  return { element, input: boxes[0], read, set: (v) => { set(v); read(); } };
}

/**
 * One section: `spec` = {id, title, intro, fields: [{path, label, live, note, kind}]}; `page` gives
 * `state()` (the loaded tree), `schema`, `reload()` (load the tree again, answer it), `settled()`
 * (once a reload under way is done), `saved(section)` (after a save: reloads, renders the section) and
 * `reviewing(section)` (this section is about to show a review).
 */
export class SettingSection {
  constructor(spec, page) {
    this.spec = spec;
    this.page = page;
    this.fields = [];
    this.fieldArea = h("div", { class: "field-grid" });
    this.reviewButton = h("button", { type: "submit", class: "primary", id: `${spec.id}-review` }, "Review change");
    this.undoButton = h("button", { type: "button", id: `${spec.id}-undo`, onclick: () => this.render() },
      "Undo changes");
    this.reviewArea = h("div", { id: `${spec.id}-review-area` });
    this.reviewArea.addEventListener("review-cancelled", () => this.check());
    this.element = h("section", { class: "card settings-section", id: spec.id, "aria-labelledby": `${spec.id}-title` },
      h("h2", { id: `${spec.id}-title` }, spec.title),
      spec.intro ? h("p", { class: "muted" }, spec.intro) : null,
      h("form", { novalidate: true, oninput: () => this.check(), onchange: () => this.check(),
        onsubmit: (event) => { event.preventDefault(); this.review(); } },
      this.fieldArea,
      h("div", { class: "form-actions" }, this.reviewButton, this.undoButton)),
      this.reviewArea);
    this.changeReview = new ChangeReview(this.reviewArea, {
      current: () => page.state(),
      reload: () => page.reload(),
      saved: () => page.saved(this),
    });
  }

  /** Build the fields from the loaded config (their values, where each comes from). */
  render() {
    const state = this.page.state();
    this.fields = this.spec.fields.map((field) => this.field(field, state));
    fill(this.fieldArea, this.fields.map((f) => f.element));
    this.check();
  }

  field(field, state) {
    const { path } = field;
    const value = valueAt(state.config, path);
    const spec = schemaAt(this.page.schema, path);
    const id = path.join("-").replaceAll("_", "-");
    const label = field.label || path[path.length - 1];
    const built = field.kind === "checklist"
      ? enumChecklist(spec, value, { name: path.join("."), label, id })
      : schemaField(spec, value, { name: path.join("."), label, id });
    const node = nodeAt(state.tree, ...path);
    const reference = isReference(value);
    if (reference) for (const input of built.element.querySelectorAll("input, select")) input.disabled = true;
    built.element.append(...[
      h("span", { class: "source" }, path.join("."), " · ", sourceText(node)),
      reference
        ? h("small", { class: "applies" }, "Set from the environment: change the variable instead.")
        : h("small", { class: `applies ${field.live ? "live" : "restart"}` },
          field.live ? "Applies at once, without a restart." : "Needs a restart to apply."),
      field.note ? h("small", { class: "help-text" }, field.note) : null].filter(Boolean));
    return { ...built, path, reference };
  }

  /** Validate the fields; the Review button is on when something changed and nothing is wrong. */
  check() {
    let changed = false;
    let valid = true;
    for (const field of this.fields) {
      const { error, changed: fieldChanged } = field.read();
      if (error) valid = false;
      if (fieldChanged) changed = true;
    }
    this.reviewButton.disabled = !valid || !changed;
    this.undoButton.disabled = !changed;
    return valid;
  }

  /** The changes the admin made (only those: a value someone else changed in the file meanwhile
   * stays as they left it when the change is reapplied). */
  changes() {
    return this.fields.filter((field) => !field.reference && field.read().changed)
      .map((field) => ({ path: field.path, value: field.read().value }));
  }

  async review() {
    if (!this.check()) return;
    this.page.reviewing(this);
    const changes = this.changes();
    await this.page.settled();
    const names = this.fields.filter((field) => field.read().changed).map((field) => field.path.slice(1).join("."));
    await this.changeReview.propose(`${this.spec.title.toLowerCase()}: ${names.join(", ")}`,
      (state) => settingOps(state, changes));
    this.check();
  }

  clearReview() {
    this.changeReview.clear();
    this.check();
  }
}
