// The keys page: the client keys and admin keys of gateway.yaml (`auth.client_keys`, `auth.admin_keys`)
// with how each is stored, the models a client key may use, its limits and its recent usage; and the
// edits an admin makes to them, each reviewed as a diff before it is written (edit.js):
//
// - a new key: POST /admin/api/keys/new makes it (the CLI's generator); only its SHA-256 goes into the
//   patch, and the key itself is shown once (#new-key) after the save applied, kept in this page's
//   memory only: leaving or reloading the page loses it;
// - a client key's models allowlist and limits (fields from the schema's `$defs.key_limits`);
// - revoking (removing) a key, guarded by a `test` of its name at its index, so a stale index is a
//   conflict and "Reload and reapply" finds the key by its name again;
// - rotating: the leaked-key runbook, and a new key with the same allowlist and limits beside the old.
//
// A key written as `${VAR}` shows the variable's name only; the page never sees a key it did not make.

import { api } from "./api.js";
import { fill, formatUsd, h } from "./dom.js";
import { ChangeReview, isReference, loadTree, nodeAt, pointer } from "./edit.js";
import { describe, loadSchema, schemaAt, schemaField } from "./form.js";

const KINDS = {
  client: { list: "client_keys", title: "Client keys", one: "client key" },
  admin: { list: "admin_keys", title: "Admin keys", one: "admin key" },
};
const RATE_LIMITS = [
  ["requests_per_minute", "Requests per minute", "req/min"],
  ["tokens_per_minute", "Tokens per minute", "tokens/min"],
  ["concurrent_requests", "Concurrent requests", "at once"],
];
const BUDGETS = [
  ["per_day", "Budget per day (USD)", "/day"],
  ["per_month", "Budget per month (USD)", "/month"],
];

export function mount(container, context) {
  const view = new KeysView(container, context);
  view.load();
  return () => view.stop();
}

/** A value as the file writes it: undefined for what only the schema's defaults fill in. */
function fromFile(node) {
  if (!node || node.source?.kind === "default") return undefined;
  if (node.entries) {
    const out = {};
    for (const [name, child] of Object.entries(node.entries)) {
      const value = fromFile(child);
      if (value !== undefined) out[name] = value;
    }
    return out;
  }
  if (node.items) return node.items.map(fromFile);
  if (node.reference !== undefined) return node.reference;
  if (node.redacted !== undefined) return null;
  return node.value;
}

/** The keys of one list as the file has them: [{index, name, key, key_sha256, models, limits}]. */
function keysOf(state, kind) {
  const node = nodeAt(state.tree, "auth", KINDS[kind].list);
  return (node?.items || []).map((item, index) => ({ index, kind, ...(fromFile(item) || {}) }));
}

function isEmpty(value) {
  return value === undefined || value === null
    || (typeof value === "object" && !Array.isArray(value) && Object.values(value).every(isEmpty));
}

/** The ops that turn `before` into `after` at `path`, member by member (an emptied object: removed),
 * so the file keeps every line the change does not touch. */
function changeOps(path, before, after) {
  const gone = isEmpty(after);
  if (isEmpty(before)) return gone ? [] : [{ op: before === undefined ? "add" : "replace", path, value: prune(after) }];
  if (gone) return [{ op: "remove", path }];
  const objects = [before, after].every((v) => typeof v === "object" && !Array.isArray(v));
  if (!objects) return JSON.stringify(before) === JSON.stringify(after) ? [] : [{ op: "replace", path, value: after }];
  const names = [...new Set([...Object.keys(before), ...Object.keys(after)])];
  return names.flatMap((name) => changeOps(`${path}${pointer(name)}`, before[name], after[name]));
}

function prune(value) {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return value;
  return Object.fromEntries(Object.entries(value).filter(([, v]) => !isEmpty(v)).map(([k, v]) => [k, prune(v)]));
}

/** "60 req/min · 4 at once · $5/day" (empty: ""). */
function limitsText(limits) {
  if (!limits) return "";
  const parts = RATE_LIMITS.filter(([name]) => limits[name] !== undefined)
    .map(([name, , unit]) => `${Number(limits[name]).toLocaleString("en")} ${unit}`);
  for (const [name, , unit] of BUDGETS) {
    if (limits.budget_usd?.[name] !== undefined) parts.push(`$${limits.budget_usd[name]}${unit}`);
  }
  return parts.join(" · ");
}

/** How a key is stored, never the key: the variable's name, or the start of its SHA-256. */
function storedAs(key) {
  const reference = [key.key, key.key_sha256].find(isReference);
  if (reference) {
    // The variable's name only: a `${VAR:-default}`'s default may be the key itself.
    const variables = [...reference.matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)/g)].map((m) => m[1]);
    return h("span", {}, h("code", {}, variables.length ? variables.map((v) => `\${${v}}`).join(", ") : "${…}"),
      h("small", { class: "muted block" }, "environment variable"));
  }
  if (typeof key.key_sha256 === "string") {
    return h("span", { title: "Only the key's SHA-256 is in gateway.yaml" },
      "SHA-256 ", h("code", {}, `${key.key_sha256.slice(0, 8)}…`));
  }
  return h("span", { class: "over-text" }, "a literal key (refused: use ${VAR} or key_sha256)");
}

/** A free name for the successor of `name`: name-2, name-3… (within the schema's 64 characters). */
function nextName(name, taken) {
  const base = name.replace(/-\d+$/, "");
  for (let n = 2; ; n += 1) {
    const candidate = `${base.slice(0, 63 - String(n).length)}-${n}`;
    if (!taken.has(candidate)) return candidate;
  }
}

class KeysView {
  constructor(container, context) {
    this.container = container;
    this.context = context;
    this.state = null;
    this.schema = null;
    this.usage = null;
    this.stopped = false;
    this.creating = null; // the key being added, until its save applies: {kind, name, key, key_sha256}
    this.body = h("div", { id: "keys-body" }, h("p", { class: "muted" }, "Loading…"));
    this.keyArea = h("div", { id: "new-key-area", "aria-live": "polite" });
    this.editor = h("div", { id: "key-editor-area" });
    this.reviewArea = h("div", { id: "review-area" });
    this.review = new ChangeReview(this.reviewArea, {
      current: () => this.state,
      reload: () => this.reload(),
      saved: () => this.afterSave(),
      patched: () => this.afterPatch(),
    });
    this.reviewArea.addEventListener("review-cancelled", () => { this.creating = null; });
    this.note = h("div", { id: "keys-note" });
    fill(container, h("div", { class: "keys-page" },
      h("div", { class: "page-head" }, h("div", {}, h("h1", {}, "Keys"),
        h("p", {}, "Who may call this gateway: client keys for the model API, admin keys for this panel and the admin API. ",
          "gateway.yaml holds each key as a ${VAR} reference or its SHA-256, never the key."))),
      this.note, this.keyArea, this.editor, this.reviewArea, this.body, runbook()));
  }

  stop() {
    this.stopped = true;
    this.creating = null; // the key shown once goes with the page
  }

  async load() {
    try {
      const [state, schema] = await Promise.all([loadTree(), loadSchema()]);
      if (this.stopped) return;
      this.state = state;
      this.schema = schema;
      this.render();
      this.loadUsage();
    } catch (error) {
      if (!this.stopped) fill(this.body, h("p", { class: "alert bad", role: "alert" }, error.message));
    }
  }

  async reload() {
    this.state = await loadTree();
    if (!this.stopped) this.render();
    return this.state;
  }

  /** Requests and spend per key over the last 30 days (the audit log; the page works without it). */
  async loadUsage() {
    try {
      const { data } = await api("/usage?group_by=client");
      if (this.stopped) return;
      this.usage = {
        rows: Object.fromEntries(data.rows.map((row) => [row.client, row])),
        budgets: Object.fromEntries((data.budgets || []).map((b) => [b.client, b])),
      };
      this.render();
    } catch (error) {
      this.usage = null; // audit off or unreadable: no usage column
    }
  }

  render() {
    const state = this.state;
    fill(this.note, state.writeBack ? null : h("p", { class: "alert info", id: "write-back-off" },
      "Write-back is off (admin.write_back: false): the gateway does not edit gateway.yaml. ",
      "Each change here ends with a patch to commit instead; a new key works once its patch is applied."));
    const defaults = fromFile(nodeAt(state.tree, "auth", "default_limits"));
    fill(this.body,
      this.table("client", defaults),
      this.table("admin"),
      h("section", { class: "card keys-card", "aria-labelledby": "default-limits-title" },
        h("h2", { id: "default-limits-title" }, "Default limits"),
        h("p", { id: "default-limits" }, limitsText(defaults) || "None: a client key without limits of its own has none."),
        h("p", { class: "muted small" }, describe(this.schema.properties.auth.properties.default_limits.description)),
        h("div", { class: "form-actions" },
          h("button", { type: "button", id: "edit-default-limits", onclick: () => this.openLimits(null) },
            "Edit default limits"))));
  }

  table(kind, defaults) {
    const { title, one } = KINDS[kind];
    const keys = keysOf(this.state, kind);
    const client = kind === "client";
    const head = ["Name", "Stored as", ...(client ? ["Models", "Limits", "Usage (30 days)"] : []), "Actions"];
    const rows = keys.map((key) => h("tr", { dataset: { key: key.name } },
      h("th", { scope: "row", "data-label": "Name" }, key.name),
      h("td", { "data-label": "Stored as" }, storedAs(key)),
      client ? [
        h("td", { "data-label": "Models", class: "models" },
          key.models ? key.models.map((m) => h("code", { class: "chip" }, m)) : h("span", { class: "muted" }, "all (*)")),
        h("td", { "data-label": "Limits", class: "limits" }, limitsText(key.limits) || h("span", { class: "muted" },
          defaults && !isEmpty(defaults) ? "the defaults" : "none"),
        key.limits && defaults && !isEmpty(defaults) ? h("small", { class: "muted block" }, "others: the defaults") : null),
        h("td", { "data-label": "Usage (30 days)", class: "usage" }, this.usageText(key.name)),
      ] : null,
      h("td", { "data-label": "Actions", class: "actions-cell" },
        client ? h("button", { type: "button", class: "edit-key", onclick: () => this.openLimits(key.name),
          "aria-label": `Edit models and limits of ${key.name}` }, "Edit") : null,
        h("button", { type: "button", class: "rotate-key", onclick: () => this.openRotate(kind, key.name),
          "aria-label": `Rotate ${key.name}` }, "Rotate"),
        h("button", { type: "button", class: "revoke-key", onclick: () => this.openRevoke(kind, key.name),
          "aria-label": `Revoke ${key.name}` }, "Revoke"))));
    const empty = client
      ? "No client keys: the model API serves local requests only (or everyone, with auth.allow_unauthenticated)."
      : "No admin keys: the admin API takes the local admin token (.gateway-admin-token beside the config).";
    return h("section", { class: "card keys-card", "aria-labelledby": `${kind}-keys-title` },
      h("div", { class: "toolbar" }, h("h2", { id: `${kind}-keys-title` }, title, " ",
        h("span", { class: "muted" }, `(${keys.length})`)),
      h("span", { class: "spacer" }),
      h("button", { type: "button", class: "primary", id: `new-${kind}-key`, onclick: () => this.openCreate(kind) },
        `New ${one}`)),
      keys.length
        ? h("div", { class: "table-scroll" }, h("table", { class: "grid key-table", id: `${kind}-keys` },
          h("thead", {}, h("tr", {}, head.map((label) => h("th", { scope: "col" }, label)))),
          h("tbody", {}, rows)))
        : h("p", { class: "muted" }, empty));
  }

  usageText(name) {
    if (!this.usage) return h("span", { class: "muted" }, "—");
    const row = this.usage.rows[name];
    const budget = this.usage.budgets[name];
    const parts = [`${(row?.requests || 0).toLocaleString("en")} requests`];
    if (row?.cost_usd) parts.push(formatUsd(row.cost_usd));
    return h("span", {}, parts.join(" · "),
      budget && (budget.spent_day || budget.spent_month)
        ? h("small", { class: "muted block" }, `today ${formatUsd(budget.spent_day) || "$0"}, this month ${formatUsd(budget.spent_month) || "$0"}`)
        : null);
  }

  allNames(state = this.state) {
    return new Set([...keysOf(state, "client"), ...keysOf(state, "admin")].map((key) => key.name));
  }

  // -- the editor -----------------------------------------------------------------------------------

  showEditor(...children) {
    this.review.clear();
    fill(this.editor, ...children);
    const first = this.editor.querySelector("input, button");
    this.editor.scrollIntoView({ block: "nearest" });
    if (first) first.focus();
  }

  closeEditor() {
    fill(this.editor);
  }

  /** The models and limits fields of a client key (`values` as the file has them). */
  limitFields(values = {}, withModels = true) {
    const keySpec = schemaAt(this.schema, ["auth", "client_keys", "*"]);
    const limitsSpec = schemaAt(this.schema, ["auth", "default_limits"]);
    const budgetSpec = limitsSpec.properties.budget_usd;
    const fields = {};
    if (withModels) {
      fields.models = schemaField(keySpec.properties.models, values.models,
        { name: "models", label: "Models allowed", id: "key-models" });
      const publics = Object.keys(this.state.config.models || {});
      if (publics.length) {
        fields.models.element.append(h("small", { class: "help-text" }, "Empty: all models. This gateway's models: ",
          publics.map((name, i) => [i ? ", " : "", h("code", {}, name)])));
      }
    }
    for (const [name, label] of RATE_LIMITS) {
      fields[name] = schemaField(limitsSpec.properties[name], values.limits?.[name], { name, label, id: `limit-${name}` });
    }
    for (const [name, label] of BUDGETS) {
      fields[name] = schemaField(budgetSpec.properties[name], values.limits?.budget_usd?.[name],
        { name, label, id: `limit-${name}` });
    }
    return fields;
  }

  /** {models, limits} from the fields, or null (the first wrong field focused). */
  readLimits(fields) {
    const read = Object.fromEntries(Object.entries(fields).map(([name, field]) => [name, field.read()]));
    const wrong = Object.entries(read).find(([, r]) => r.error);
    if (wrong) {
      fields[wrong[0]].input.focus();
      return null;
    }
    const limits = {};
    for (const [name] of RATE_LIMITS) if (read[name].value !== undefined) limits[name] = read[name].value;
    const budget = {};
    for (const [name] of BUDGETS) if (read[name].value !== undefined) budget[name] = read[name].value;
    if (Object.keys(budget).length) limits.budget_usd = budget;
    return { models: read.models?.value, limits };
  }

  form(id, heading, intro, fieldsets, submitLabel, onsubmit) {
    return h("form", { class: "card key-form", id, novalidate: true, "aria-labelledby": `${id}-title`,
      onsubmit: (event) => { event.preventDefault(); onsubmit(); } },
    h("h2", { id: `${id}-title` }, heading),
    intro ? h("p", { class: "muted" }, intro) : null,
    fieldsets,
    h("div", { class: "form-actions" },
      h("button", { type: "submit", class: "primary", id: "review-key" }, submitLabel),
      h("button", { type: "button", id: "cancel-key", onclick: () => this.closeEditor() }, "Cancel")));
  }

  limitsFieldset(fields) {
    return h("fieldset", { class: "limits-fields" }, h("legend", {}, "Limits (empty: the defaults)"),
      h("div", { class: "field-grid" }, [...RATE_LIMITS, ...BUDGETS].map(([name]) => fields[name].element)));
  }

  // -- create ---------------------------------------------------------------------------------------

  openCreate(kind, preset = {}) {
    const client = kind === "client";
    const name = schemaField(this.schema.$defs.name, preset.name, { name: "name", label: "Name", id: "key-name", required: true });
    name.element.append(h("small", { class: "help-text" },
      "Logs, the audit log, metrics and the Usage page name the key by it."));
    const fields = client ? this.limitFields(preset) : {};
    this.showEditor(this.form("key-form", `New ${KINDS[kind].one}`,
      preset.rotating
        ? `A successor for ${preset.rotating}, with the same ${client ? "models and limits" : "rights"}: both keys work until you revoke ${preset.rotating}.`
        : "The gateway makes a random key; gateway.yaml gets only its SHA-256, and you see the key once, after the save.",
      [this.endsLocalSession(kind) ? h("p", { class: "alert warn", id: "first-admin-key" },
        h("strong", {}, "The first admin key turns the local admin token off: "),
        "this session (opened with the token) ends once the key is saved. Copy the key when it is shown, ",
        "then sign in with it.") : null,
      h("div", { class: "field-grid" }, name.element, client ? fields.models.element : null),
      client ? this.limitsFieldset(fields) : null],
      "Review the new key",
      () => this.proposeCreate(kind, name, fields)));
  }

  async proposeCreate(kind, nameField, fields) {
    const name = nameField.read();
    if (name.error) {
      nameField.input.focus();
      return;
    }
    const settings = kind === "client" ? this.readLimits(fields) : {};
    if (!settings) return;
    if (this.allNames().has(name.value)) {
      nameField.set(name.value);
      nameField.element.querySelector(".problem").textContent = `A key named ${name.value} already exists.`;
      nameField.input.focus();
      return;
    }
    let made;
    try {
      ({ data: made } = await api("/keys/new", { method: "POST" }));
    } catch (error) {
      this.review.show(h("p", { class: "alert bad", role: "alert" }, error.message));
      return;
    }
    // The key stays in this page's memory only; the patch carries its hash.
    this.creating = { kind, name: name.value, key: made.key, key_sha256: made.key_sha256 };
    const entry = { name: name.value, key_sha256: made.key_sha256 };
    if (settings.models) entry.models = settings.models;
    if (!isEmpty(settings.limits)) entry.limits = prune(settings.limits);
    this.closeEditor();
    await this.review.propose(`add ${KINDS[kind].one} ${name.value}`, (state) => {
      if (this.allNames(state).has(entry.name)) throw new Error(`A key named ${entry.name} already exists now.`);
      const list = KINDS[kind].list;
      if (nodeAt(state.tree, "auth")?.source?.kind === "default") return [{ op: "add", path: "/auth", value: { [list]: [entry] } }];
      if (nodeAt(state.tree, "auth", list)?.source?.kind === "default") return [{ op: "add", path: pointer("auth", list), value: [entry] }];
      return [{ op: "add", path: `${pointer("auth", list)}/-`, value: entry }];
    });
  }

  /** Whether adding a key of `kind` ends this session: the first admin key turns the local token off. */
  endsLocalSession(kind) {
    return kind === "admin" && this.context.session?.admin_keys_configured === false && this.state.writeBack;
  }

  async afterSave() {
    const made = this.creating;
    this.creating = null;
    if (made && this.endsLocalSession(made.kind)) {
      // This session is over: loading anything now would show the sign-in page, and lose the key.
      this.showKey(made, true, true);
      return;
    }
    await this.reload();
    this.loadUsage();
    if (made) this.showKey(made, true);
  }

  afterPatch() {
    const made = this.creating;
    this.creating = null;
    if (made) this.showKey(made, false);
  }

  /** The new key, once: it is in no file, no log and no later answer of the gateway. */
  showKey(made, applied, sessionEnded = false) {
    const value = h("input", { type: "text", id: "new-key-value", readonly: true, value: made.key, spellcheck: "false",
      autocomplete: "off", "aria-describedby": "new-key-note", onfocus: (event) => event.target.select() });
    const copyButton = h("button", { type: "button", id: "copy-key", onclick: () => copyKey(value, copyButton) }, "Copy");
    fill(this.keyArea, h("section", { class: `card alert ${applied ? "ok" : "warn"}`, id: "new-key", role: "region",
      "aria-labelledby": "new-key-title" },
    h("h2", { id: "new-key-title" }, `The new ${KINDS[made.kind].one} ${made.name}: copy it now`),
    h("div", { class: "key-line" }, h("label", { for: "new-key-value", class: "visually-hidden" }, "New key"), value, copyButton),
    h("p", { id: "new-key-note" }, h("strong", {}, "Shown once. "),
      "gateway.yaml stores only its SHA-256 (", h("code", {}, `${made.key_sha256.slice(0, 8)}…`),
      "), so nobody can show this key again: leaving or reloading this page loses it. ",
      "Hand it to its user or put it in your secret store."),
    applied
      ? h("p", {}, made.kind === "client"
        ? "It works now: send it as Authorization: Bearer <key> or x-api-key."
        : "It opens this panel and the admin API now.",
      sessionEnded ? h("strong", {}, " The local admin token no longer does: this session has ended; sign in with this key.") : null)
      : h("p", { id: "new-key-pending" }, h("strong", {}, "It does not work yet: "),
        "write-back is off, so it works only once the patch below is committed to gateway.yaml and applied. ",
        "Keep the key until then; if the patch is never applied, the key is worth nothing."),
    h("div", { class: "form-actions" },
      h("button", { type: "button", id: "dismiss-key", onclick: () => fill(this.keyArea) }, "I have stored it"))));
    this.keyArea.scrollIntoView({ block: "nearest" });
    value.focus();
  }

  // -- models and limits ----------------------------------------------------------------------------

  /** Edit a client key's models and limits (`name`), or the default limits (`name` null). */
  openLimits(name) {
    const key = name === null ? null : keysOf(this.state, "client").find((k) => k.name === name);
    if (name !== null && !key) return;
    const values = key || { limits: fromFile(nodeAt(this.state.tree, "auth", "default_limits")) };
    const fields = this.limitFields(values, key !== null);
    const title = key ? `Models and limits of ${name}` : "Default limits";
    this.showEditor(this.form("limits-form", title,
      key ? "Members left empty come from the default limits; an emptied allowlist allows every model."
        : "For every client key without a limit of its own, member by member.",
      [key ? h("div", { class: "field-grid" }, fields.models.element) : null, this.limitsFieldset(fields)],
      "Review the change",
      () => this.proposeLimits(name, fields)));
  }

  async proposeLimits(name, fields) {
    const wanted = this.readLimits(fields);
    if (!wanted) return;
    this.closeEditor();
    this.creating = null;
    if (name === null) {
      await this.review.propose("set the default limits", (state) => {
        const before = fromFile(nodeAt(state.tree, "auth", "default_limits"));
        if (nodeAt(state.tree, "auth")?.source?.kind === "default") {
          return isEmpty(wanted.limits) ? [] : [{ op: "add", path: "/auth", value: { default_limits: prune(wanted.limits) } }];
        }
        return changeOps(pointer("auth", "default_limits"), before, wanted.limits);
      });
      return;
    }
    await this.review.propose(`set the models and limits of ${name}`, (state) => {
      const key = keysOf(state, "client").find((k) => k.name === name);
      if (!key) throw new Error(`There is no client key named ${name} any more.`);
      const base = pointer("auth", "client_keys", key.index);
      const ops = [...changeOps(`${base}/models`, key.models, wanted.models),
        ...changeOps(`${base}/limits`, key.limits, wanted.limits)];
      return ops.length ? [{ op: "test", path: `${base}/name`, value: name }, ...ops] : [];
    });
  }

  // -- revoke ---------------------------------------------------------------------------------------

  /** Why removing this key is refused here, or "". */
  lockout(kind, name, state = this.state) {
    if (kind !== "admin") return "";
    const session = this.context.session || {};
    const admins = keysOf(state, "admin");
    if (!session.admin_keys_configured || session.name !== name) return "";
    const last = admins.length === 1;
    return `You are signed in with ${name}: removing it ends this session at once${last
      ? ", and as it is the last admin key, the admin API would then take only the local admin token "
        + "(.gateway-admin-token beside the config), which works only while no admin keys are configured"
      : ""}. Add another admin key (or use one you have), sign in with it, then revoke ${name}.`;
  }

  openRevoke(kind, name) {
    const refusal = this.lockout(kind, name);
    const one = KINDS[kind].one;
    if (refusal) {
      this.showEditor(h("div", { class: "alert warn", id: "revoke-refused", role: "alert" },
        h("p", {}, h("strong", {}, `${name} is not revoked here. `), refusal),
        h("div", { class: "actions" }, h("button", { type: "button", onclick: () => this.closeEditor() }, "Close"))));
      return;
    }
    this.showEditor(h("section", { class: "card", id: "confirm-revoke", role: "alertdialog",
      "aria-labelledby": "confirm-revoke-title", "aria-describedby": "confirm-revoke-text" },
    h("h2", { id: "confirm-revoke-title" }, `Revoke the ${one} ${name}?`),
    h("p", { id: "confirm-revoke-text" }, kind === "client"
      ? `Once the change is applied, every request with ${name}'s key gets 401. Requests in progress run to their end.`
      : `Once the change is applied, ${name}'s key no longer opens the admin API, and panel sessions opened with it end.`),
    h("div", { class: "form-actions" },
      h("button", { type: "button", class: "primary danger", id: "revoke-yes",
        onclick: () => this.proposeRevoke(kind, name) }, `Review removing ${name}`),
      h("button", { type: "button", id: "revoke-no", onclick: () => this.closeEditor() }, "Keep it"))));
  }

  async proposeRevoke(kind, name) {
    this.closeEditor();
    this.creating = null;
    await this.review.propose(`revoke ${KINDS[kind].one} ${name}`, (state) => {
      const key = keysOf(state, kind).find((k) => k.name === name);
      if (!key) throw new Error(`There is no ${KINDS[kind].one} named ${name} any more: nothing to revoke.`);
      const refusal = this.lockout(kind, name, state);
      if (refusal) throw new Error(refusal);
      const path = pointer("auth", KINDS[kind].list, key.index);
      return [{ op: "test", path: `${path}/name`, value: name }, { op: "remove", path }];
    });
  }

  // -- rotate ---------------------------------------------------------------------------------------

  openRotate(kind, name) {
    const key = keysOf(this.state, kind).find((k) => k.name === name);
    if (!key) return;
    const successor = nextName(name, this.allNames());
    this.showEditor(h("section", { class: "card", id: "rotate", "aria-labelledby": "rotate-title" },
      h("h2", { id: "rotate-title" }, `Rotate ${name}`),
      h("p", {}, `Make ${successor}, a new key with ${kind === "client" ? "the same models and limits" : "the same rights"}; `,
        `both work until you revoke ${name}, so its user moves over without downtime.`),
      rotationSteps(name, successor, kind),
      h("div", { class: "form-actions" },
        h("button", { type: "button", class: "primary", id: "rotate-create",
          onclick: () => this.openCreate(kind, { name: successor, models: key.models, limits: key.limits, rotating: name }) },
        `Create ${successor}`),
        h("button", { type: "button", onclick: () => this.closeEditor() }, "Cancel"))));
  }
}

function rotationSteps(name, successor, kind) {
  return h("ol", { class: "runbook-steps" },
    h("li", {}, `Create ${successor} (below): its key is shown once; hand it over or store it.`),
    h("li", {}, kind === "client"
      ? `Move the client to the new key. Usage by key shows when ${name} stops being used.`
      : `Sign in to this panel with the new key.`),
    h("li", {}, `Revoke ${name} here: from the moment the change is applied, its key gets 401.`));
}

/** The leaked-key runbook (docs/runbooks/leaked-key.md), as the steps this page takes. */
function runbook() {
  return h("details", { class: "card runbook", id: "runbook" },
    h("summary", {}, "A key leaked? The runbook (docs/runbooks/leaked-key.md)"),
    h("ol", {},
      h("li", {}, "Make a new key: Rotate on the leaked key's row creates a successor (name-2) with the same models and limits. ",
        "The key is shown once; gateway.yaml holds only its SHA-256. (From a shell: ", h("code", {}, "gateway key new NAME"), ".)"),
      h("li", {}, "Hand the new key to the client. Old and new work side by side, so the client moves without downtime."),
      h("li", {}, "Revoke the leaked key here. Saving applies the change at once (a hot reload); with write-back off, ",
        "commit the patch and the file watch applies it. A key stored as ", h("code", {}, "${VAR}"),
        " is changed in the environment instead, which needs a restart."),
      h("li", {}, "From the moment the reload is applied, every request with the old key gets 401 unauthorized; ",
        "requests in progress (a stream) run to their end. An admin key's panel sessions end with it.")),
    h("p", {}, "Confirm: the Status page shows the new config version; a request with the old key answers 401; ",
      "the Usage page, by key, shows the traffic moving to the new name. Logs name keys, never show them."));
}

async function copyKey(input, button) {
  input.focus();
  input.select();
  try {
    await navigator.clipboard.writeText(input.value);
    button.textContent = "Copied";
  } catch (error) {
    button.textContent = "Selected: press Ctrl+C";
  }
}
