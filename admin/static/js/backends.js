// The backends page: each backend of gateway.yaml as a card (type, where it points, its API key as
// the `${VAR}` it names and whether that variable is set, its live circuit and queue, the models
// whose chains use it), with an enabled switch, its type's settings from the schema, and adding or
// removing a backend. Every change goes through the shared review (edit.js): the diff before
// anything is written, a conflict reapplied on the fresh file, the patch to commit when write-back
// is off.

import { api } from "./api.js";
import { ChangeReview, loadTree, nodeAt, plain, pointer, sourceText } from "./edit.js";
import { checkValue, describe, loadSchema, schemaAt, schemaField } from "./form.js";
import { fill, h } from "./dom.js";

const REFRESH_MS = 5000;
/** Shown and edited elsewhere on the card (or read-only), not as plain settings fields. */
const OWN_FIELDS = new Set(["type", "enabled", "api_key", "headers", "capabilities", "prices", "limits"]);
/** The settings in the order a person looks for them; the schema's others follow. */
const ORDER = ["base_url", "path", "hf_repo", "create_preset", "load", "max_concurrency", "max_queue",
  "queue_timeout_seconds", "max_connections", "batching", "max_batch_size", "prompt_cache_size",
  "default_max_tokens", "organization", "anthropic_version"];
/** A secret's only accepted form: a reference to an environment variable (`${NAME}`, `${NAME:-}`). */
const REFERENCE = /^\$\{[A-Za-z_][A-Za-z0-9_]*(:-)?\}$/;
const CLOUD_TYPES = new Set(["openai", "anthropic"]);

export function mount(container, context) {
  const page = new BackendsPage(container, context);
  page.load();
  return () => page.stop();
}

/** A chain's targets, a balanced group's members in its place (docs/routing.md). */
export function chainTargets(chain) {
  return (chain || []).flatMap((step) => (step && step.group ? step.group.targets || [] : [step]));
}

/** The names of the models whose chains use `backend`, in the file `config`. */
export function modelsUsing(config, backend) {
  return Object.entries(config.models || {})
    .filter(([, model]) => chainTargets(model.chain).some((target) => target.backend === backend))
    .map(([name]) => name);
}

/** Whether the value at `node` is written in the file (not a schema default). */
function inFile(node) {
  return Boolean(node) && node.source && node.source.kind !== "default";
}

class BackendsPage {
  constructor(container, context) {
    this.container = container;
    this.context = context;
    this.state = null; // loadTree() + {live, serving}
    this.schema = null;
    this.stopped = false;
    this.timer = null;
    this.cards = new Map(); // name → {element, toggle, live}
    this.open = new Set(); // backends whose settings are open
    this.reviewHost = null; // the backend whose card holds the review ("" for the add form)
    this.reviewElement = h("div", { id: "change-review" });
    this.review = new ChangeReview(this.reviewElement, {
      current: () => this.state,
      reload: () => this.load(),
      saved: () => this.load(),
    });
    // A switch shows the admin's intent while its change is reviewed, and the file again once the
    // review is over without a save (cancelled, refused, or only shown as a patch).
    new MutationObserver(() => { if (!this.review.busy && this.state) this.resetSwitches(); })
      .observe(this.reviewElement, { childList: true });
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  async load() {
    try {
      const [tree, schema, live, serving] = await Promise.all([
        loadTree(), loadSchema(), api("/backends").then((r) => r.data), api("/config").then((r) => r.data),
      ]);
      if (this.stopped) return this.state;
      this.schema = schema;
      this.state = { ...tree, live: byName(live.backends), serving: byName(serving.backends) };
      this.render();
      this.schedule();
    } catch (error) {
      if (!this.stopped) fill(this.container, h("p", { class: "alert bad", role: "alert" }, error.message || String(error)));
    }
    return this.state;
  }

  schedule() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.refreshLive(), REFRESH_MS);
  }

  /** The live part of each card (circuit, queue) every few seconds; the forms stay as typed. */
  async refreshLive() {
    try {
      const { data } = await api("/backends");
      if (this.stopped) return;
      this.state.live = byName(data.backends);
      for (const [name, card] of this.cards) fill(card.live, liveState(this.state.live[name]));
    } catch (error) {
      // The next refresh tries again; a signed-out session is handled by the shell.
    }
    if (!this.stopped) this.schedule();
  }

  render() {
    const { config, writeBack } = this.state;
    const backends = config.backends || {};
    this.cards.clear();
    const breaker = (config.failover || {}).circuit_breaker || {};
    const cards = Object.keys(backends).map((name) => this.card(name, breaker));
    const addButton = h("button", { type: "button", id: "add-backend", "aria-expanded": "false",
      onclick: () => this.toggleAdd(addButton) }, "Add a backend");
    this.addArea = h("div", { id: "add-area" });
    fill(this.container,
      h("div", { class: "page-head" },
        h("div", {}, h("h1", {}, "Backends"),
          h("p", {}, "Where requests go. Each change is shown as a diff of gateway.yaml before it is ",
            writeBack ? "saved and applied with a hot reload." : "turned into a patch to commit.")),
        h("span", { class: "spacer" }), addButton),
      writeBack ? null : h("p", { class: "alert info", id: "write-back-off" },
        "Write-back is off (admin.write_back: false): this page does not edit gateway.yaml. ",
        "Each change ends with the patch to commit (git apply takes it)."),
      this.addArea,
      cards.length ? h("div", { class: "backend-list", id: "backends" }, cards)
        : h("p", { class: "muted" }, "No backends yet: add one."));
    this.placeReview();
  }

  /** Put the review where the change was made: in its backend's card, or under the add form. */
  placeReview() {
    const host = this.reviewHost && this.cards.get(this.reviewHost);
    if (host) host.element.append(this.reviewElement);
    else this.addArea.after(this.reviewElement);
  }

  propose(host, summary, build, options) {
    this.reviewHost = host;
    this.placeReview();
    return this.review.propose(summary, build, options);
  }

  resetSwitches() {
    for (const [name, card] of this.cards) card.toggle.checked = fileEnabled(this.state, name);
  }

  card(name, breaker) {
    const { config, tree } = this.state;
    const backend = config.backends[name];
    const live = this.state.live[name];
    const serving = this.state.serving[name];
    const used = modelsUsing(config, name);
    const titleId = `backend-title-${slug(name)}`;
    const enabledNode = nodeAt(tree, "backends", name, "enabled");
    const fromEnv = enabledNode && enabledNode.source && enabledNode.source.kind === "env";
    const toggle = h("input", { type: "checkbox", role: "switch", class: "enabled-switch", name: "enabled",
      id: `enabled-${slug(name)}`, "aria-label": `${name} enabled`, disabled: fromEnv,
      onchange: () => this.proposeEnabled(name, toggle.checked) });
    toggle.checked = fileEnabled(this.state, name);
    const liveCell = h("dd", { class: "live" }, liveState(live));
    const reason = serving && !serving.enabled && serving.disabled_reason !== "enabled: false"
      ? serving.disabled_reason : "";
    const element = h("section", { class: "card backend-card", id: `backend-${slug(name)}`,
      dataset: { backend: name }, "aria-labelledby": titleId },
    h("div", { class: "backend-head" },
      h("h2", { id: titleId }, name),
      h("span", { class: "badge" }, backend.type),
      serving && !serving.enabled ? h("span", { class: "badge error off" }, "off") : null,
      h("label", { class: "switch" }, toggle, fromEnv ? `Enabled (set by ${enabledNode.reference})` : "Enabled")),
    reason ? h("p", { class: "alert warn disabled-reason", role: "note" }, `Disabled: ${reason}.`) : null,
    h("dl", { class: "backend-facts" },
      backend.type === "mlx"
        ? [h("dt", {}, backend.path ? "Path" : "Hugging Face repo"),
          h("dd", {}, h("code", {}, backend.path || backend.hf_repo || "–"))]
        : [h("dt", {}, "Base URL"), h("dd", { class: "base-url" }, h("code", {}, backend.base_url || "–"),
          sourceNote(nodeAt(tree, "backends", name, "base_url"))),
        h("dt", {}, "API key"), h("dd", { class: "api-key" }, apiKeyState(tree, name, backend, live))],
      h("dt", {}, "Circuit"), liveCell,
      h("dt", {}, "Breaker"), h("dd", {}, `Opens after ${breaker.failure_threshold ?? "?"} failures in a row, for `,
        `${breaker.cooldown_seconds ?? "?"} s (global: `,
        h("a", { href: "/admin/settings", "data-nav": "" }, "Settings"), ")"),
      h("dt", {}, "Used by"), h("dd", { class: "used-by" }, used.length
        ? used.map((model, i) => [i ? ", " : "", h("a", { href: "/admin/models", "data-nav": "" }, model)])
        : h("span", { class: "muted" }, "no model")),
      h("dt", {}, "Capabilities"), h("dd", { class: "muted" }, ((live || serving || {}).capabilities || []).join(", ") || "–"),
      Object.keys(backend.headers || {}).length
        ? [h("dt", {}, "Headers"), h("dd", {}, Object.entries(backend.headers).map(([key, value]) =>
          h("div", {}, h("code", {}, `${key}: ${value === null ? "(a literal credential: not shown)" : value}`))))]
        : null),
    this.settingsForm(name),
    this.removeArea(name, used));
    this.cards.set(name, { element, toggle, live: liveCell });
    return element;
  }

  // -- enabled ---------------------------------------------------------------------------------

  proposeEnabled(name, on) {
    const build = (state) => {
      if (!nodeAt(state.tree, "backends", name)) throw new Error(`${name} is no longer in gateway.yaml.`);
      const node = nodeAt(state.tree, "backends", name, "enabled");
      const path = pointer("backends", name, "enabled");
      if (on) {
        // `true` is the default: the key goes, and the file reads as if it had never been off.
        return inFile(node) && node.value === false ? [{ op: "test", path, value: false }, { op: "remove", path }] : [];
      }
      if (inFile(node)) return node.value === false ? [] : [{ op: "replace", path, value: false }];
      return [{ op: "add", path, value: false }];
    };
    const warn = (state) => (on ? [] : stranded(state, name).map((model) =>
      `Model ${model} has no other enabled target: its requests will fail until a backend of its chain is enabled.`));
    this.propose(name, `${on ? "Enable" : "Disable"} ${name}`, build, { warn });
  }

  // -- settings --------------------------------------------------------------------------------

  settingsForm(name) {
    const { config, tree } = this.state;
    const backend = config.backends[name];
    const spec = schemaAt(this.schema, ["backends", "*"], backend);
    const fields = []; // {parts, field, node}
    const readOnly = [];
    const names = Object.keys(spec.properties || {}).filter((key) => !OWN_FIELDS.has(key));
    names.sort((a, b) => rank(a) - rank(b));
    const add = (parts, fieldSpec, label) => {
      const node = nodeAt(tree, "backends", name, ...parts);
      if (node && node.source && node.source.kind === "env") {
        readOnly.push(h("div", { class: "field schema-field" }, h("span", { class: "label" }, label),
          h("code", {}, node.reference), h("small", { class: "help-text" }, "Set from the environment: change the variable.")));
        return;
      }
      const value = inFile(node) ? plain(node) : undefined;
      const field = schemaField(fieldSpec, value, { name: parts.join("."), label,
        required: (spec.required || []).includes(parts[0]) && parts.length === 1 });
      if (parts[0] === "limits") field.input.placeholder = "no limit";
      fields.push({ parts, field });
    };
    for (const key of names) add([key], spec.properties[key], key);
    const limits = schemaAt(this.schema, ["backends", "*", "limits"], {});
    for (const [key, fieldSpec] of Object.entries(limits.properties || {})) add(["limits", key], fieldSpec, `limits.${key}`);
    const apiKey = "api_key" in (spec.properties || {}) ? this.apiKeyField(name, spec) : null;
    if (apiKey) fields.push(apiKey);

    const problem = h("p", { class: "alert bad form-problem", role: "alert", hidden: true });
    const submit = h("button", { type: "submit", class: "primary", name: "review" }, "Review changes");
    const form = h("form", { class: "backend-settings", novalidate: true, dataset: { backend: name },
      onsubmit: (event) => { event.preventDefault(); this.proposeSettings(name, fields, problem); } },
    h("div", { class: "field-grid" }, apiKey ? apiKey.field.element : null,
      fields.filter((f) => f !== apiKey).map((f) => f.field.element), readOnly),
    problem,
    h("div", { class: "form-actions" }, submit,
      h("button", { type: "button", onclick: () => { for (const f of fields) f.field.set(f.initial); problem.hidden = true; } },
        "Undo changes")));
    for (const f of fields) f.initial = f.field.read().value;
    const details = h("details", { class: "settings" }, h("summary", {}, "Settings"), form);
    details.open = this.open.has(name);
    details.addEventListener("toggle", () => (details.open ? this.open.add(name) : this.open.delete(name)));
    return details;
  }

  /** The API key: a `${NAME}` reference only (the key itself never goes in gateway.yaml), shown as
   * the file writes it, never as the value the environment gives. */
  apiKeyField(name, spec) {
    const node = nodeAt(this.state.tree, "backends", name, "api_key");
    const required = (spec.required || []).includes("api_key");
    const inputId = `api-key-${slug(name)}`;
    const input = h("input", { type: "text", id: inputId, name: "api_key", spellcheck: "false", autocomplete: "off",
      placeholder: "${OPENAI_API_KEY}" });
    input.value = node && node.reference !== undefined ? node.reference : "";
    const initial = input.value;
    const problem = h("span", { class: "problem", role: "alert" });
    const element = h("div", { class: "field schema-field" },
      h("label", { for: inputId }, "api_key"), input, problem,
      h("small", { class: "help-text" }, describe(spec.properties.api_key.description),
        node && node.redacted ? " The file holds a literal key (refused): replace it with a reference." : ""));
    const read = () => {
      const value = input.value.trim();
      let error = "";
      if (value === "") {
        if (required) error = "Required: a ${NAME} reference.";
        else if (initial) error = "A ${VAR} value cannot be removed here: empty the variable instead.";
      } else if (!REFERENCE.test(value)) {
        error = "Only a ${NAME} reference to an environment variable: the key itself never goes in gateway.yaml.";
      }
      problem.textContent = error;
      input.setAttribute("aria-invalid", error ? "true" : "false");
      const changed = value !== initial;
      element.classList.toggle("changed", changed);
      return { value: value === "" ? undefined : value, error, changed };
    };
    input.addEventListener("input", read);
    return { parts: ["api_key"], field: { element, input, read, set: (v) => { input.value = v || ""; read(); } } };
  }

  proposeSettings(name, fields, problem) {
    const changes = [];
    let first = null;
    for (const { parts, field } of fields) {
      const { value, error, changed } = field.read();
      if (error && !first) first = { field, error, label: parts.join(".") };
      if (!error && changed) changes.push({ parts, value });
    }
    if (first) {
      problem.textContent = `${first.label}: ${first.error} Nothing was sent.`;
      problem.hidden = false;
      first.field.input.focus();
      return;
    }
    problem.hidden = true;
    if (!changes.length) {
      problem.textContent = "Nothing changed.";
      problem.hidden = false;
      return;
    }
    const summary = `${name}: ${changes.map((c) => `${c.parts.join(".")} ${c.value === undefined ? "unset" : `= ${c.value}`}`).join(", ")}`;
    this.propose(name, summary, (state) => settingsOps(state, name, changes));
  }

  // -- remove ----------------------------------------------------------------------------------

  removeArea(name, used) {
    const reasonId = `remove-reason-${slug(name)}`;
    return h("div", { class: "form-actions backend-remove" },
      h("button", { type: "button", class: "danger", name: "remove", disabled: used.length > 0,
        "aria-describedby": used.length ? reasonId : null,
        onclick: () => this.propose(name, `Remove backend ${name}`, (state) => {
          if (!nodeAt(state.tree, "backends", name)) throw new Error(`${name} is no longer in gateway.yaml.`);
          const users = modelsUsing(state.config, name);
          if (users.length) throw new Error(`${name} is used by ${users.join(", ")}: take it out of their chains first.`);
          return [{ op: "remove", path: pointer("backends", name) }];
        }) }, "Remove backend"),
      used.length ? h("span", { class: "muted", id: reasonId },
        `Used by ${used.join(", ")}: take it out of ${used.length > 1 ? "their chains" : "its chain"} first (Models page).`)
        : null);
  }

  // -- add -------------------------------------------------------------------------------------

  toggleAdd(button) {
    if (this.addArea.firstChild) {
      fill(this.addArea);
      button.setAttribute("aria-expanded", "false");
      return;
    }
    button.setAttribute("aria-expanded", "true");
    fill(this.addArea, this.addForm());
    this.addArea.querySelector("input").focus();
  }

  addForm() {
    const backendSpec = schemaAt(this.schema, ["backends", "*"], {});
    const types = backendSpec.properties.type.enum;
    const nameSpec = this.schema.$defs?.name || { type: "string", minLength: 1 };
    const nameField = schemaField(nameSpec, undefined, { name: "name", label: "Name", id: "new-name", required: true });
    const type = h("select", { id: "new-type", name: "type" }, types.map((t) => h("option", { value: t }, t)));
    type.value = "openai_compatible";
    const where = h("input", { type: "text", id: "new-where", name: "where", spellcheck: "false" });
    const whereLabel = h("label", { for: "new-where" });
    const key = h("input", { type: "text", id: "new-key", name: "api_key", spellcheck: "false", autocomplete: "off",
      placeholder: "${OPENAI_API_KEY}" });
    const keyField = h("div", { class: "field schema-field" }, h("label", { for: "new-key" }, "API key reference"), key,
      h("small", { class: "help-text" }, "A ${NAME} reference; ${NAME:-} when the variable may be unset (a cloud backend with an empty key stays disabled)."));
    const problem = h("p", { class: "alert bad form-problem", role: "alert", hidden: true });
    const sync = () => {
      const mlx = type.value === "mlx";
      whereLabel.textContent = mlx ? "Model path" : type.value === "openai_compatible" ? "Base URL" : "Base URL (optional)";
      where.placeholder = mlx ? "models/my-model" : "https://host/v1";
      keyField.hidden = mlx;
    };
    type.addEventListener("change", sync);
    sync();
    const submit = (event) => {
      event.preventDefault();
      const name = nameField.read();
      const spec = schemaAt(this.schema, ["backends", "*"], { type: type.value });
      const value = { type: type.value };
      const text = where.value.trim();
      const reference = key.value.trim();
      let error = name.error ? `Name: ${name.error}` : "";
      if (!error && name.value in (this.state.config.backends || {})) error = `Name: ${name.value} already exists.`;
      if (type.value === "mlx") {
        if (!text) error ||= "Model path: required for an mlx backend.";
        else value.path = text;
      } else {
        if (text) {
          const bad = checkValue(spec.properties.base_url, text);
          if (bad) error ||= `Base URL: ${bad}`;
          value.base_url = text;
        } else if ((spec.required || []).includes("base_url")) error ||= "Base URL: required for this type.";
        if (reference && !REFERENCE.test(reference)) error ||= "API key: only a ${NAME} reference, never the key itself.";
        else if (reference) value.api_key = reference;
        else if ((spec.required || []).includes("api_key")) error ||= "API key: required for this type (a ${NAME} reference).";
      }
      problem.textContent = error;
      problem.hidden = !error;
      if (error) return;
      const newName = name.value;
      this.propose("", `Add backend ${newName}`, (state) => {
        if (nodeAt(state.tree, "backends", newName)) throw new Error(`${newName} already exists in gateway.yaml.`);
        return inFile(nodeAt(state.tree, "backends"))
          ? [{ op: "add", path: pointer("backends", newName), value }]
          : [{ op: "add", path: pointer("backends"), value: { [newName]: value } }];
      });
    };
    return h("form", { class: "card add-backend", id: "add-form", novalidate: true, onsubmit: submit,
      "aria-labelledby": "add-title" },
    h("h2", { id: "add-title" }, "Add a backend"),
    h("div", { class: "field-grid" }, nameField.element,
      h("div", { class: "field schema-field" }, h("label", { for: "new-type" }, "Type"), type,
        h("small", { class: "help-text" }, describe(backendSpec.properties.type.description))),
      h("div", { class: "field schema-field" }, whereLabel, where), keyField),
    problem,
    h("div", { class: "form-actions" }, h("button", { type: "submit", class: "primary", id: "add-review" }, "Review")));
  }
}

/** The JSON Patch for settings `changes` ({parts, value}: value undefined = unset) on `state`'s file:
 * a key the file has is replaced or removed, a missing one added; `limits` is added whole when the
 * file has none, and removed whole when its last key goes. */
export function settingsOps(state, name, changes) {
  const backend = nodeAt(state.tree, "backends", name);
  if (!backend) throw new Error(`${name} is no longer in gateway.yaml.`);
  const ops = [];
  const limitsNode = nodeAt(backend, "limits");
  const limits = inFile(limitsNode) ? { ...plain(limitsNode) } : null;
  const newLimits = {};
  for (const { parts, value } of changes) {
    const path = pointer("backends", name, ...parts);
    const node = nodeAt(backend, ...parts);
    if (parts[0] === "limits" && !limits) {
      if (value !== undefined) newLimits[parts[1]] = value;
    } else if (value === undefined) {
      if (inFile(node)) ops.push({ op: "remove", path });
      if (parts[0] === "limits") delete limits[parts[1]];
    } else if (inFile(node)) {
      if (JSON.stringify(plain(node)) !== JSON.stringify(value)) ops.push({ op: "replace", path, value });
    } else {
      ops.push({ op: "add", path, value });
      if (parts[0] === "limits") limits[parts[1]] = value;
    }
  }
  if (Object.keys(newLimits).length) ops.push({ op: "add", path: pointer("backends", name, "limits"), value: newLimits });
  if (limits && !Object.keys(limits).length) {
    // The last quota goes: the whole `limits` entry goes with it, not an empty `limits: {}`.
    return [...ops.filter((op) => !op.path.startsWith(pointer("backends", name, "limits"))),
      { op: "remove", path: pointer("backends", name, "limits") }];
  }
  return ops;
}

/** The models that `name` being off leaves with no enabled target. */
function stranded(state, name) {
  return modelsUsing(state.config, name).filter((model) =>
    chainTargets(state.config.models[model].chain)
      .every((target) => target.backend === name || !effectiveEnabled(state, target.backend)));
}

function fileEnabled(state, name) {
  const backend = (state.config.backends || {})[name];
  return Boolean(backend) && backend.enabled !== false;
}

function effectiveEnabled(state, name) {
  const serving = state.serving[name];
  // Off for a reason other than the file's switch (an empty API key): the switch cannot turn it on.
  if (serving && !serving.enabled && serving.disabled_reason !== "enabled: false") return false;
  return fileEnabled(state, name);
}

function apiKeyState(tree, name, backend, live) {
  const node = nodeAt(tree, "backends", name, "api_key");
  if (node && node.redacted) return h("span", { class: "over-text" }, "a literal key (refused by the loader: use a ${VAR} reference)");
  if (!inFile(node)) return h("span", { class: "muted" }, CLOUD_TYPES.has(backend.type) ? "not set" : "none (not sent)");
  const set = live && live.api_key_set;
  return [h("code", {}, node.reference !== undefined ? node.reference : "(literal)"), " ",
    live && "api_key_set" in live
      ? h("span", { class: `badge ${set ? "ok" : "error"}`, dataset: { keySet: String(Boolean(set)) } },
        set ? "set" : "empty")
      : null];
}

function sourceNote(node) {
  if (!node || !node.source || node.source.kind === "file") return null;
  return h("span", { class: "muted" }, ` (${sourceText(node)})`);
}

function liveState(live) {
  if (!live) return h("span", { class: "muted" }, "not running (saved but not applied yet?)");
  const circuit = live.circuit;
  const concurrency = live.concurrency;
  return [
    h("span", { class: `badge circuit ${circuit.state}` }, circuit.state.replace("_", "-")),
    circuit.state === "open" && circuit.retry_in_seconds > 0
      ? h("span", { class: "muted" }, ` retry in ${Math.ceil(circuit.retry_in_seconds)} s`) : null,
    circuit.consecutive_failures ? h("span", { class: "muted" }, ` · ${circuit.consecutive_failures} failed in a row`) : null,
    h("span", { class: "muted concurrency" }, concurrency
      ? ` · ${concurrency.in_flight} of ${concurrency.max_concurrency} in flight, ${concurrency.queued} queued`
      : " · no concurrency limit"),
    live.local ? h("span", { class: "muted engine" }, live.local.loaded
      ? ` · model loaded: ${live.local.active} decoding, ${live.local.queued} waiting`
      : " · model not loaded yet") : null,
  ];
}

function byName(items) {
  return Object.fromEntries((items || []).map((item) => [item.name, item]));
}

function slug(name) {
  return name.replace(/[^A-Za-z0-9_-]/g, "-");
}

function rank(key) {
  const index = ORDER.indexOf(key);
  return index < 0 ? ORDER.length : index;
}
