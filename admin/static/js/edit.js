// The edit flow every page that changes gateway.yaml shares (Models, Backends, Keys, Settings).
//
// A page loads the config tree (`loadTree`: the file's values, where each comes from, its version),
// turns the admin's intent into a JSON Patch, and hands `ChangeReview.propose` a function that
// builds that patch from a tree. The review runs it as a dry run and shows the diff before anything
// is written; Save sends it with If-Match and shows the reload that applied it. When the file changed
// meanwhile, the review offers to reload the tree and build the patch again from the same intent
// (reapply); with write-back off, Save shows the patch to commit instead (`git apply` takes it).

import { api, ApiError, etagVersion } from "./api.js";
import { diffBlock, fill, h } from "./dom.js";

const PATCH_TYPE = "application/json-patch+json";

/** `pointer("models", "gpt-4o", "chain", 0)` → "/models/gpt-4o/chain/0" (RFC 6901 escaping). */
export function pointer(...parts) {
  return parts.map((part) => `/${String(part).replaceAll("~", "~0").replaceAll("/", "~1")}`).join("");
}

/** The config tree: {version, servingVersion, writeBack, tree, config}; `config` is the tree as plain
 * values, a `${VAR}` value as its reference text ("${OPENAI_API_KEY}"), a redacted one as null. */
export async function loadTree() {
  const { data, headers } = await api("/config/tree");
  return {
    version: etagVersion(headers) || data.version,
    servingVersion: data.serving_version,
    writeBack: data.write_back !== false,
    tree: data.tree,
    config: plain(data.tree),
  };
}

/** A tree node as a plain value. */
export function plain(node) {
  if (node.entries) return Object.fromEntries(Object.entries(node.entries).map(([k, v]) => [k, plain(v)]));
  if (node.items) return node.items.map(plain);
  if (node.reference !== undefined) return node.reference;
  if (node.redacted !== undefined) return null;
  return node.value;
}

/** The node at a path of keys and indexes, or undefined. */
export function nodeAt(tree, ...parts) {
  let node = tree;
  for (const part of parts) {
    if (!node) return undefined;
    node = node.entries ? node.entries[part] : node.items ? node.items[part] : undefined;
  }
  return node;
}

/** Where a value comes from, in words: "line 12", "${OPENAI_API_KEY}", "default". */
export function sourceText(node) {
  if (!node) return "not set";
  const source = node.source || {};
  if (source.kind === "env") return node.reference || source.variables.map((v) => `\${${v}}`).join(", ");
  if (source.kind === "file") return `gateway.yaml line ${source.line}`;
  return "default";
}

/** Whether a value is a `${VAR}` reference. */
export function isReference(value) {
  return typeof value === "string" && /\$\{[^}]+\}/.test(value);
}

/**
 * The review of one change at a time, shown in `element`:
 *   const review = new ChangeReview(element, { current: () => state, reload: () => page.load(),
 *                                              saved: (result) => page.load() });
 *   review.propose("Move gpt-4o's target up", (state) => [{op: "move", ...}]);
 * `current()` answers the state the page shows ({version, writeBack, config, tree}, as `loadTree`
 * gives); `reload()` loads it again and answers it; `saved(result)` runs after a save applied;
 * `patched(patch)` (optional) after write-back off showed the patch to commit instead.
 */
export class ChangeReview {
  constructor(element, { current, reload, saved, patched }) {
    this.element = element;
    this.current = current;
    this.reload = reload;
    this.saved = saved || (() => {});
    this.patched = patched || (() => {}); // write-back off: the patch to commit was shown
    this.pending = null; // {summary, build, ops, version}
    element.classList.add("review-area");
    element.setAttribute("aria-live", "polite");
  }

  /** Whether a change is being reviewed (the page keeps its editors as they are meanwhile). */
  get busy() {
    return this.pending !== null;
  }

  clear() {
    this.pending = null;
    fill(this.element);
  }

  /** Show the diff `build(state)` would make (a dry run), with Save and Cancel. `options.warn(state)`
   * may answer warnings (a string or strings) shown above the diff, e.g. what the change leaves
   * without a backend; it runs again on the fresh state after a reapply. */
  async propose(summary, build, options = {}) {
    const state = this.current();
    let ops;
    try {
      ops = build(state);
    } catch (error) {
      this.show(h("p", { class: "alert bad", role: "alert" }, error.message || String(error)));
      return;
    }
    if (!ops || !ops.length) {
      this.clear();
      return;
    }
    const warnings = [].concat((options.warn && options.warn(state)) || []);
    this.pending = { summary, build, ops, version: state.version, options };
    this.show(h("p", { class: "muted" }, "Checking the change…"));
    try {
      const { data } = await this.send(ops, state.version, true);
      this.showReview(summary, data.diff, state.writeBack, warnings);
    } catch (error) {
      this.failed(error);
    }
  }

  showReview(summary, diff, writeBack, warnings = []) {
    const save = h("button", { type: "button", class: "primary", id: "confirm-save", onclick: () => this.confirm() },
      writeBack ? "Save to gateway.yaml" : "Show the patch");
    const cancel = h("button", { type: "button", id: "cancel-change", onclick: () => this.cancel() }, "Cancel");
    this.show(h("section", { class: "card review", id: "review", "aria-labelledby": "review-title" },
      h("h2", { id: "review-title" }, "Review: ", summary),
      warnings.map((text) => h("p", { class: "alert warn review-warning", role: "alert" }, text)),
      diff
        ? [h("p", { class: "muted" }, writeBack
          ? "This is the change to gateway.yaml. Nothing is written until you save."
          : "Write-back is off: saving shows this as a patch to commit; gateway.yaml is not changed."),
        diffBlock(diff)]
        : h("p", { class: "muted" }, "No change: gateway.yaml already says this."),
      h("div", { class: "form-actions" }, diff ? save : null, cancel)));
    (diff ? save : cancel).focus();
  }

  cancel() {
    this.clear();
    this.element.dispatchEvent(new CustomEvent("review-cancelled", { bubbles: true }));
  }

  async confirm() {
    const pending = this.pending;
    if (!pending) return;
    for (const button of this.element.querySelectorAll("button")) button.disabled = true;
    try {
      const { data } = await this.send(pending.ops, pending.version, false);
      this.pending = null;
      const reload = data.reload || {};
      this.show(
        h("div", { class: "alert ok", id: "saved", role: "status" },
          h("strong", {}, "Saved and applied. "),
          `${pending.summary}: version ${data.version} is live`,
          reload.duration_ms !== undefined ? ` (reloaded in ${Math.round(reload.duration_ms)} ms).` : "."),
        data.diff ? [h("h2", {}, "Change written to gateway.yaml"), diffBlock(data.diff)] : null);
      await this.saved(data);
    } catch (error) {
      this.failed(error);
    }
  }

  async send(ops, version, dryRun) {
    return api(`/config${dryRun ? "?dry_run=true" : ""}`, {
      method: "PATCH",
      rawBody: JSON.stringify(ops),
      contentType: PATCH_TYPE,
      headers: { "if-match": `"${version}"`, "x-gateway-client": "admin-ui" },
    });
  }

  failed(error) {
    if (!(error instanceof ApiError)) {
      this.pending = null;
      this.show(h("p", { class: "alert bad", role: "alert" }, String(error)));
      return;
    }
    const problem = error.problem;
    const pending = this.pending;
    if ((error.kind === "stale-config-version" || error.kind === "patch-test-failed") && pending) {
      this.show(h("div", { class: "alert warn", id: "conflict", role: "alert" },
        h("p", {}, h("strong", {}, "gateway.yaml changed since this page loaded, "),
          "so nothing was saved (you edited version ", h("code", {}, pending.version), "; the file is now ",
          h("code", {}, problem.current_version || "newer"), ")."),
        h("p", {}, "Reload the current config and apply your change to it again, then review the new diff."),
        h("div", { class: "actions" },
          h("button", { type: "button", class: "primary", id: "reapply", onclick: () => this.reapply() },
            "Reload and reapply"),
          h("button", { type: "button", id: "cancel-change", onclick: () => this.cancel() }, "Discard my change"))));
    } else if (error.kind === "write-back-disabled") {
      this.pending = null;
      const patch = problem.patch || "";
      this.show(
        h("div", { class: "alert info", id: "patch-note" },
          h("p", {}, h("strong", {}, "Write-back is off "), "(admin.write_back: false), so gateway.yaml was not changed. ",
            "Commit this patch to apply the change (", h("code", {}, "git apply"), " takes it):")),
        diffBlock(patch, "patch"),
        h("div", { class: "form-actions" },
          h("button", { type: "button", id: "copy-patch", onclick: (event) => copy(patch, event.target) }, "Copy patch"),
          h("button", { type: "button", onclick: () => this.clear() }, "Done")));
      this.patched(patch);
    } else if (error.status === 422 && problem.errors) {
      this.pending = null;
      this.show(h("div", { class: "alert bad", id: "rejected", role: "alert" },
        h("p", {}, h("strong", {}, "The gateway refused the change; "), "gateway.yaml was not modified:"),
        h("ul", { class: "error-list" }, problem.errors.map((e) => h("li", {}, e.text || e.message)))));
    } else {
      this.pending = null;
      this.show(h("p", { class: "alert bad", id: "rejected", role: "alert" }, error.message));
    }
  }

  /** After a conflict: load the config again (the file watcher applies a save within a moment), then
   * build the same change on it and review it again. */
  async reapply() {
    const pending = this.pending;
    if (!pending) return;
    this.show(h("p", { class: "muted" }, "Loading the current config…"));
    let state = null;
    for (let attempt = 0; attempt < 10; attempt += 1) {
      try {
        state = await this.reload();
      } catch (error) {
        this.pending = null;
        this.show(h("p", { class: "alert bad", role: "alert" }, error.message || String(error)));
        return;
      }
      if (state && state.version !== pending.version) break;
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
    await this.propose(pending.summary, pending.build, pending.options);
  }

  show(...children) {
    fill(this.element, ...children);
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
