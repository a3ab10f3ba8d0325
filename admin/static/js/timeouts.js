// The settings page's timeouts form: the timeout tiers of each endpoint kind, saved through
// PATCH /admin/api/config/timeouts. Saving sends only the changed fields with If-Match (the version
// this form loaded), shows the diff written to gateway.yaml and the hot reload that applied it; a file
// changed on disk meanwhile is a conflict to resolve, and with write-back off the form shows the patch
// to commit instead.

import { api, ApiError, etagVersion } from "./api.js";
import { diffBlock, fill, h, humanSeconds } from "./dom.js";

const TIERS = [
  ["chat", "/v1/chat/completions, /v1/messages"],
  ["completions", "/v1/completions"],
  ["embeddings", "/v1/embeddings"],
];
const FIELDS = ["total", "connect", "first_byte"];

/** The form in `container`; `hooks.saving()` runs before a save, `hooks.saved()` after one. */
export class TimeoutsForm {
  constructor(container, hooks = {}) {
    this.container = container;
    this.hooks = hooks;
    this.version = null;
    this.values = null;
    this.limits = {};
    this.inputs = new Map(); // "chat.total" → {input, hint, problem, wrap}
    this.stopped = false;
  }

  stop() {
    this.stopped = true;
  }

  async load(keepResult = false) {
    try {
      const { data, headers } = await api("/config/timeouts");
      if (this.stopped) return;
      this.version = etagVersion(headers) || data.version;
      this.values = data.timeouts;
      this.limits = data.fields || {};
      this.writeBack = data.write_back !== false;
      this.render(keepResult);
    } catch (error) {
      if (!this.stopped) fill(this.container, h("p", { class: "alert bad" }, error.message));
    }
  }

  render(keepResult) {
    const previousResult = keepResult && this.result ? [...this.result.childNodes] : [];
    this.inputs.clear();
    this.saveButton = h("button", { type: "submit", class: "primary", id: "save" },
      this.writeBack ? "Save to gateway.yaml" : "Show the patch");
    this.resetButton = h("button", { type: "button", onclick: () => this.reset() }, "Undo changes");
    this.versionNote = h("span", { class: "muted", id: "version" }, "Version ", h("code", {}, this.version));
    this.result = h("div", { class: "result", id: "result", "aria-live": "polite" }, previousResult);
    const rows = TIERS.map(([kind, routes]) => h("tr", {},
      h("th", { scope: "row" }, kind, h("small", {}, routes)),
      FIELDS.map((name) => h("td", { dataset: { label: `${name} (seconds)` } }, this.field(kind, name)))));
    this.form = h("form", { novalidate: true, id: "timeouts",
      oninput: () => this.validate(), onsubmit: (event) => { event.preventDefault(); this.save(); } },
      h("div", { class: "table-scroll" }, h("table", { class: "tiers" },
        h("thead", {}, h("tr", {}, h("th", {}, "Endpoint kind"),
          FIELDS.map((name) => h("th", {}, `${name} (seconds)`)))),
        h("tbody", {}, rows))),
      h("ul", { class: "help" }, FIELDS.map((name) => h("li", {}, h("strong", {}, name), ": ",
        this.limits[name]?.description || ""))),
      h("div", { class: "form-actions" }, this.saveButton, this.resetButton, h("span", { class: "spacer" }),
        this.versionNote));
    fill(this.container,
      h("h2", { id: "timeouts-title" }, "Timeouts"),
      h("p", { class: "muted" }, "Timeout tiers per endpoint kind. Applies at once, to the requests that start after the save."),
      this.form, this.result);
    this.validate();
  }

  field(kind, name) {
    const current = this.values[kind][name];
    const limit = this.limits[name] || {};
    const input = h("input", {
      type: "number", step: "any", inputmode: "decimal", name: `${kind}.${name}`, id: `${kind}-${name}`,
      value: String(current), min: limit.exclusiveMinimum ?? 0, max: limit.maximum,
      "aria-label": `${kind} ${name} in seconds`,
    });
    const hint = h("span", { class: "hint" });
    const problem = h("span", { class: "problem", role: "alert" });
    const wrap = h("div", { class: "field" }, h("div", { class: "input" }, input, h("span", { class: "unit" }, "s")),
      hint, problem);
    this.inputs.set(`${kind}.${name}`, { kind, name, input, hint, problem, wrap });
    return wrap;
  }

  /** Check every field against the schema's bounds; returns the changed values, or null if any is wrong. */
  validate() {
    const changes = {};
    let valid = true;
    let changed = 0;
    for (const { kind, name, input, hint, problem, wrap } of this.inputs.values()) {
      const limit = this.limits[name] || {};
      const text = input.value.trim();
      const value = Number(text);
      let message = "";
      if (text === "" || !Number.isFinite(value)) message = "Enter a number of seconds.";
      else if (value <= (limit.exclusiveMinimum ?? 0)) message = "Must be more than 0.";
      else if (limit.maximum !== undefined && value > limit.maximum) {
        message = `At most ${limit.maximum} (${humanSeconds(limit.maximum)}).`;
      }
      problem.textContent = message;
      input.setAttribute("aria-invalid", message ? "true" : "false");
      const isChanged = !message && value !== this.values[kind][name];
      wrap.classList.toggle("changed", isChanged);
      hint.textContent = message ? "" : isChanged
        ? `was ${this.values[kind][name]} s · now ${humanSeconds(value)}`
        : humanSeconds(value);
      if (message) valid = false;
      if (isChanged) {
        changes[kind] = { ...(changes[kind] || {}), [name]: value };
        changed += 1;
      }
    }
    this.saveButton.disabled = !valid || changed === 0;
    this.resetButton.disabled = changed === 0;
    return valid ? changes : null;
  }

  reset() {
    for (const { kind, name, input } of this.inputs.values()) input.value = String(this.values[kind][name]);
    this.validate();
  }

  async save() {
    if (this.refreshing) await this.refreshing; // (another section just saved: send the new version)
    const changes = this.validate();
    if (!changes || !Object.keys(changes).length) return;
    this.saveButton.disabled = true;
    this.hooks.saving?.();
    fill(this.result, h("p", { class: "muted" }, "Saving…"));
    try {
      const { data, headers } = await api("/config/timeouts", {
        method: "PATCH",
        body: changes,
        headers: { "if-match": `"${this.version}"`, "x-gateway-client": "admin-ui" },
      });
      this.saved(data, etagVersion(headers));
    } catch (error) {
      this.failed(error);
    }
  }

  saved(data, etag) {
    this.values = data.timeouts;
    this.version = etag || data.version;
    for (const { kind, name, input } of this.inputs.values()) input.value = String(this.values[kind][name]);
    fill(this.versionNote, "Version ", h("code", {}, this.version));
    // A 200 means written and applied: the server prepares the new config before it writes the file,
    // and refuses (422) an edit that would not apply.
    const reload = data.reload || {};
    fill(this.result,
      h("p", { class: "alert ok", id: "saved" },
        h("strong", {}, "Saved and applied. "),
        `gateway.yaml was updated and version ${data.version} is live`,
        reload.duration_ms !== undefined ? ` (${Math.round(reload.duration_ms)} ms).` : ".",
        " New requests use these timeouts."),
      h("h2", {}, "Change to gateway.yaml"),
      data.diff ? diffBlock(data.diff) : h("p", { class: "muted" }, "No change: the file already had these values."));
    this.validate();
    this.hooks.saved?.();
  }

  /** Clear what the last save showed (another section of the page shows its own). */
  clearResult() {
    if (this.result) fill(this.result);
  }

  /** Take the file's version and values as they are now (after another section saved), keeping
   * what is being edited here. */
  refreshVersion() {
    this.refreshing = this.fetchVersion().finally(() => { this.refreshing = null; });
    return this.refreshing;
  }

  async fetchVersion() {
    try {
      const { data, headers } = await api("/config/timeouts");
      if (this.stopped || !this.form) return;
      this.version = etagVersion(headers) || data.version;
      this.values = data.timeouts;
      fill(this.versionNote, "Version ", h("code", {}, this.version));
      this.validate();
    } catch (error) {
      // The next save answers with the conflict, which offers to load the values again.
    }
  }

  failed(error) {
    if (!(error instanceof ApiError)) {
      fill(this.result, h("p", { class: "alert bad" }, String(error)));
      this.validate();
      return;
    }
    const problem = error.problem;
    if (error.kind === "stale-config-version") {
      fill(this.result, h("div", { class: "alert warn", id: "conflict", role: "alert" },
        h("p", {}, h("strong", {}, "gateway.yaml changed on disk since this page loaded, "),
          "so nothing was saved (you edited version ", h("code", {}, this.version), "; the file is now ",
          h("code", {}, problem.current_version || "newer"), ")."),
        h("p", {}, "Load the current values, then make your change again."),
        h("div", { class: "actions" },
          h("button", { type: "button", id: "reload-values", onclick: () => this.reloadValues() },
            "Load the current values"))));
    } else if (error.kind === "write-back-disabled") {
      fill(this.result,
        h("div", { class: "alert info", id: "patch-note" },
          h("p", {}, h("strong", {}, "Write-back is off "), "(admin.write_back: false), so gateway.yaml was not changed. ",
            "Commit this patch to apply the change:")),
        diffBlock(problem.patch || "", "patch"),
        h("div", { class: "form-actions" },
          h("button", { type: "button", onclick: (event) => copy(problem.patch || "", event.target) }, "Copy patch")));
    } else if (error.status === 422 && problem.errors) {
      fill(this.result, h("div", { class: "alert bad", id: "rejected" },
        h("p", {}, h("strong", {}, "The gateway refused the change; "), "gateway.yaml was not modified:"),
        h("ul", { class: "error-list" }, problem.errors.map((e) => h("li", {}, e.text || e.message)))));
    } else if (error.status === 400 && problem.field) {
      const entry = this.inputs.get(problem.field);
      if (entry) entry.problem.textContent = problem.detail;
      fill(this.result, h("p", { class: "alert bad" }, problem.detail));
    } else {
      fill(this.result, h("p", { class: "alert bad" }, error.message));
    }
    this.validate();
  }

  async reloadValues() {
    const staleVersion = this.version;
    // The file watcher applies a save within a moment; give it a few seconds to catch up.
    for (let attempt = 0; attempt < 10; attempt += 1) {
      await this.load();
      if (this.stopped || this.version !== staleVersion) break;
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
    if (this.stopped) return;
    const note = this.version === staleVersion
      ? h("p", { class: "alert warn" }, "The gateway has not applied the file on disk yet (is it valid? see the Status page).")
      : h("p", { class: "alert ok", id: "reloaded" }, "Loaded the values of version ", h("code", {}, this.version), ".");
    fill(this.result, note);
  }
}

async function copy(text, button) {
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch (error) {
    button.textContent = "Select the patch above and copy it";
  }
}
