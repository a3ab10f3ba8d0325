// The models page: each public model of gateway.yaml as a card with its description, aliases, cache
// settings and its failover chain. Every edit goes through the shared review (edit.js): the page turns
// the admin's intent into a JSON Patch, the review shows the dry-run diff, Save writes it.
//
// A chain is reordered by dragging a target's handle or with Alt+ArrowUp/Down on a focused target
// (or its Move up/down buttons). A reorder is one `move` op, guarded by `test` ops on the moved
// target's backend and model: built again from the same intent after a conflict, it finds the
// target by backend+model in the fresh chain, so a chain changed on disk meanwhile is never
// reordered by stale positions.

import { ChangeReview, isReference, loadTree, nodeAt, plain, pointer } from "./edit.js";
import { checkValue, loadSchema, schemaAt, schemaField } from "./form.js";
import { fill, h } from "./dom.js";

const CACHE_FIELDS = ["mode", "ttl_seconds", "similarity", "embedding_model", "any_temperature", "client_control"];

export function mount(container, context) {
  const view = new ModelsView(container, context);
  view.start();
  return () => view.stop();
}

/** A target's identity in intent: its backend and upstream model (undefined: the public name). */
function targetKey(target) {
  return { backend: target.backend, model: target.model };
}

function sameTarget(target, key) {
  return target.backend === key.backend && (target.model ?? undefined) === (key.model ?? undefined);
}

function targetLabel(key) {
  return key.model !== undefined ? `${key.backend} (${key.model})` : key.backend;
}

/** The index of the target `key` names in `model`'s chain of a fresh state; throws when gone. */
function findTarget(state, model, key) {
  const chain = state.config.models?.[model]?.chain;
  if (!chain) throw new Error(`The model ${model} is no longer in gateway.yaml.`);
  const index = chain.findIndex((target) => sameTarget(target, key));
  if (index < 0) throw new Error(`${model} no longer has the target ${targetLabel(key)} in its chain.`);
  return { chain, index };
}

/** `test` ops that fail when the chain's item at `index` is not the target `key` names. */
function guard(model, index, key) {
  const ops = [{ op: "test", path: pointer("models", model, "chain", index, "backend"), value: key.backend }];
  if (key.model !== undefined) {
    ops.push({ op: "test", path: pointer("models", model, "chain", index, "model"), value: key.model });
  }
  return ops;
}

/** "gateway.yaml line 12" for a node the file holds. */
function where(node) {
  const line = node?.source?.line;
  return line ? `gateway.yaml line ${line}` : "";
}

/** Whether the file itself sets the value at `parts` (not a schema default the tree fills in). */
function inFile(state, ...parts) {
  const node = nodeAt(state.tree, ...parts);
  return Boolean(node) && node.source?.kind !== "default";
}

/** The op that sets `value` at `parts` (undefined: removes it), or null when nothing changes. */
function setOp(state, value, ...parts) {
  const path = pointer(...parts);
  const present = inFile(state, ...parts);
  if (value === undefined) return present ? { op: "remove", path } : null;
  return { op: present ? "replace" : "add", path, value };
}

class ModelsView {
  constructor(container, context) {
    this.container = container;
    this.context = context;
    this.state = null;
    this.schema = null;
    this.stopped = false;
    this.dragging = null; // {model, index} while a target is dragged
    this.announcer = h("p", { class: "visually-hidden", id: "models-announce", "aria-live": "assertive" });
    this.reviewArea = h("div", { id: "review-area" });
    this.body = h("div", { class: "models-body" }, h("p", { class: "loading" }, "Loading the models…"));
    this.head = h("div");
    this.review = new ChangeReview(this.reviewArea, {
      current: () => this.state,
      reload: async () => {
        await this.load();
        return this.state;
      },
      saved: () => this.load(),
    });
    this.reviewArea.addEventListener("review-cancelled", () => this.render());
  }

  start() {
    fill(this.container, this.head, this.announcer, this.reviewArea, this.body);
    this.load();
  }

  stop() {
    this.stopped = true;
  }

  async load() {
    try {
      const [state, schema] = await Promise.all([loadTree(), loadSchema()]);
      if (this.stopped) return;
      this.state = state;
      this.schema = schema;
      this.render();
    } catch (error) {
      if (!this.stopped) fill(this.body, h("p", { class: "alert bad", role: "alert" }, error.message || String(error)));
    }
  }

  propose(summary, build) {
    return this.review.propose(summary, build);
  }

  announce(text) {
    this.announcer.textContent = text;
  }

  // -- rendering ----------------------------------------------------------------------------------

  render() {
    const { config, writeBack, version } = this.state;
    const models = config.models || {};
    fill(this.head,
      h("div", { class: "page-head" },
        h("div", {},
          h("h1", {}, "Models"),
          h("p", {}, "The public model names clients ask for, each with its failover chain: the gateway tries the ",
            "targets in order. Every change is shown as a diff of gateway.yaml before it is saved.")),
        h("span", { class: "spacer" }),
        h("span", { class: "muted", id: "version" }, "Version ", h("code", {}, version))),
      writeBack ? null : h("p", { class: "alert info", id: "write-back-off" },
        "Write-back is off (admin.write_back: false): the gateway does not edit gateway.yaml. ",
        "Each change is shown as a patch to commit instead."),
      h("p", { class: "muted limits-note", id: "limits-note" },
        "Limits (requests, tokens, spend) are set per client key, not per model: see ",
        h("a", { href: "/admin/keys", onclick: (event) => this.go(event, "/admin/keys") }, "Keys"), "."));
    // A save or reload draws the cards again: sections the admin had open stay open.
    const open = new Set([...this.body.querySelectorAll("details[open]")].map((d) => d.dataset.key));
    fill(this.body,
      h("div", { class: "model-list" }, Object.keys(models).map((name) => this.modelCard(name))),
      this.newModelCard());
    for (const details of this.body.querySelectorAll("details")) details.open = open.has(details.dataset.key);
  }

  go(event, url) {
    if (event.ctrlKey || event.metaKey || event.shiftKey || event.button === 1) return;
    event.preventDefault();
    this.context.navigate(url);
  }

  /** "oa (openai_compatible)", "local (mlx, disabled)". */
  backendOption(name) {
    const backend = this.state.config.backends[name] || {};
    return `${name} (${backend.type}${backend.enabled === false ? ", disabled" : ""})`;
  }

  backendNames() {
    return Object.keys(this.state.config.backends || {});
  }

  modelCard(name) {
    const model = this.state.config.models[name];
    const modelCount = Object.keys(this.state.config.models).length;
    const titleId = `model-title-${name.replace(/[^A-Za-z0-9_-]/g, "-")}`;
    const aliases = (model.aliases || []).filter(Boolean);
    return h("section", { class: "card model-card", dataset: { model: name }, "aria-labelledby": titleId },
      h("header", { class: "model-head" },
        h("h2", { id: titleId }, name),
        aliases.length ? h("span", { class: "muted" }, "also ", aliases.map((a, i) => [i ? ", " : "", h("code", {}, a)])) : null,
        model.description ? h("p", { class: "model-description" }, model.description) : null),
      (model.chain || []).some((step) => step && step.group)
        ? this.groupedChain(name, model.chain)
        : [this.chainEditor(name, model.chain || []), this.addTargetForm(name)],
      model.canary && model.canary.target ? this.canaryEditor(name, model.canary) : null,
      this.settingsForm(name, model),
      this.renameDeleteForm(name, modelCount));
  }

  // -- the chain ----------------------------------------------------------------------------------

  /** A chain with a balanced group (docs/routing.md): its steps as they are (the target editor's
   * positions would not fit them), each group's strategy and its members' weights editable. */
  groupedChain(name, chain) {
    const text = (target) => [h("strong", {}, target.backend),
      target.model !== undefined ? [" (", h("code", {}, target.model), ")"] : null];
    return h("div", { class: "chain-wrap grouped-chain" },
      h("h3", {}, "Failover chain"),
      h("p", { class: "alert info", id: `grouped-${name.replace(/[^A-Za-z0-9_-]/g, "-")}` },
        "This chain has a balanced group. Its strategy and its members' weights are edited here; add, remove ",
        "or reorder its steps and members in gateway.yaml (see docs/routing.md)."),
      h("ol", { class: "chain", "aria-label": `Failover chain of ${name}` }, chain.map((step, index) => h("li", {
        class: "target", dataset: { index: String(index) },
      }, h("span", { class: "position" }, `${index + 1}.`), h("div", { class: "target-main" },
        step.group
          ? [h("div", { class: "target-line" }, h("strong", {}, "Balanced group"),
            h("span", { class: "badge" }, step.group.strategy || "weighted"),
            step.group.sticky ? h("span", { class: "badge" }, `sticky by ${step.group.sticky.by}`) : null,
            h("span", { class: "source" }, where(nodeAt(this.state.tree, "models", name, "chain", index)))),
          this.strategyEditor(name, index, step.group),
          h("ul", { class: "group-members" }, (step.group.targets || []).map((t, member) => h("li", {},
            h("span", { class: "member-name" }, text(t)),
            this.weightEditor(name, index, member, t, (step.group.strategy || "weighted") === "weighted"))))]
          : h("div", { class: "target-line" }, text(step),
            h("span", { class: "source" }, where(nodeAt(this.state.tree, "models", name, "chain", index)))))))));
  }

  strategyEditor(name, index, group) {
    const spec = schemaAt(this.schema, ["models", name, "chain", index, "group"]).properties?.strategy || {};
    const select = h("select", { class: "group-strategy", "aria-label": `Strategy of ${name}'s group ${index + 1}` },
      (spec.enum || ["weighted", "least_busy", "latency"]).map((value) =>
        h("option", { value, selected: value === (group.strategy || "weighted") }, value)));
    return h("div", { class: "field inline" },
      h("span", { class: "field-label" }, "Strategy"), select,
      h("button", { type: "button", class: "set-strategy", onclick: () => {
        if (select.value === (group.strategy || "weighted")) return;
        this.propose(`${name}: group ${index + 1} balances by ${select.value}`, (state) => {
          const now = state.config.models?.[name]?.chain?.[index];
          if (!now || !now.group) throw new Error(`Step ${index + 1} of ${name} is no longer a group.`);
          return [setOp(state, select.value, "models", name, "chain", index, "group", "strategy")];
        });
      } }, "Set strategy"));
  }

  weightEditor(name, index, member, target, used) {
    const path = ["models", name, "chain", index, "group", "targets", member];
    const spec = schemaAt(this.schema, path).properties?.weight || { type: "number", exclusiveMinimum: 0 };
    const field = schemaField(spec, target.weight, { name: `weight-${index}-${member}`, label: "Weight" });
    field.input.setAttribute("aria-label", `Weight of ${target.backend} in ${name}'s group ${index + 1}`);
    field.input.setAttribute("placeholder", "default: 1");
    return h("span", { class: "member-weight" }, field.element,
      h("button", { type: "button", class: "set-weight", onclick: () => {
        const { value, error, changed } = field.read();
        if (error || !changed) return;
        this.propose(`${name}: ${target.backend} weighs ${value ?? 1} in group ${index + 1}`, (state) => {
          const now = state.config.models?.[name]?.chain?.[index]?.group?.targets?.[member];
          if (!now || now.backend !== target.backend) {
            throw new Error(`${target.backend} is no longer member ${member + 1} of ${name}'s group ${index + 1}.`);
          }
          const op = setOp(state, value, ...path, "weight");
          return op ? [{ op: "test", path: pointer(...path, "backend"), value: target.backend }, op] : [];
        });
      } }, "Set weight"),
      used ? null : h("small", { class: "muted" }, " (read by the weighted strategy only)"));
  }

  /** The model's canary (docs/routing.md#canary-releases): its target and rules as they are, its
   * weight editable (0 turns it off; raising it again after a rollback restarts the canary). */
  canaryEditor(name, canary) {
    const spec = schemaAt(this.schema, ["models", name, "canary"]).properties?.weight || { type: "number" };
    const field = schemaField(spec, canary.weight, { name: "canary-weight", label: "Weight (percent)" });
    field.input.setAttribute("aria-label", `Canary weight of ${name}`);
    const rules = canary.rollback || null;
    const node = nodeAt(this.state.tree, "models", name, "canary", "weight");
    return h("div", { class: "canary-editor" },
      h("h3", {}, "Canary"),
      h("p", {}, h("strong", {}, canary.target.backend),
        canary.target.model !== undefined ? [" (", h("code", {}, canary.target.model), ")"] : null,
        h("span", { class: "source" }, ` ${where(node)}`)),
      h("p", { class: "muted small" }, rules
        ? `Rolled back by itself at ${[
          rules.error_rate !== undefined ? `+${Math.round(rules.error_rate * 1000) / 10}% errors` : null,
          rules.p95_latency_ms !== undefined ? `+${rules.p95_latency_ms} ms p95` : null,
        ].filter(Boolean).join(" or ")} against the stable targets.`
        : "No automatic rollback."),
      h("div", { class: "field inline" }, field.element,
        h("button", { type: "button", class: "set-canary-weight", onclick: () => {
          const { value, error, changed } = field.read();
          if (error || !changed || value === undefined) return;
          this.propose(`${name}: canary weight ${value}%`, (state) => {
            const now = state.config.models?.[name]?.canary;
            if (!now || now.target.backend !== canary.target.backend) {
              throw new Error(`The canary of ${name} changed in gateway.yaml meanwhile.`);
            }
            return [
              { op: "test", path: pointer("models", name, "canary", "target", "backend"), value: canary.target.backend },
              setOp(state, value, "models", name, "canary", "weight"),
            ];
          });
        } }, "Set canary weight")));
  }

  chainEditor(name, chain) {
    const list = h("ol", { class: "chain", "aria-label": `Failover chain of ${name}` },
      chain.map((target, index) => this.targetRow(name, chain, target, index)));
    return h("div", { class: "chain-wrap" },
      h("h3", {}, "Failover chain"),
      h("p", { class: "muted small", id: this.hintId(name) },
        "Drag a target by its handle, or focus it and press Alt+↑ / Alt+↓, to change the order."),
      list);
  }

  targetRow(name, chain, target, index) {
    const key = targetKey(target);
    const backend = this.state.config.backends?.[target.backend];
    const enabled = backend ? backend.enabled !== false : false;
    const capabilities = Object.entries(target.capabilities || {});
    const label = `${targetLabel(key)}, position ${index + 1} of ${chain.length}`;
    // Where the target is in the file (the page may show it moved, before the move is saved).
    const savedAt = Math.max(0, (this.state.config.models[name]?.chain || []).findIndex((t) => sameTarget(t, key)));
    const modelSpec = schemaAt(this.schema, ["models", name, "chain", savedAt]).properties?.model || {};
    const modelNode = nodeAt(this.state.tree, "models", name, "chain", savedAt, "model");
    let modelEditor;
    if (isReference(target.model)) {
      modelEditor = h("div", { class: "field" }, h("span", { class: "field-label" }, "Upstream model"),
        h("span", {}, h("code", { class: "reference" }, target.model),
          h("small", { class: "muted" }, ` (set from the environment, read-only here: ${where(modelNode)})`)));
    } else {
      const field = schemaField(modelSpec, target.model, {
        name: `upstream-model-${index}`, label: "Upstream model",
      });
      field.input.setAttribute("placeholder", `default: ${name}`);
      if (modelSpec.description) field.input.setAttribute("title", modelSpec.description);
      field.input.setAttribute("aria-label", `Upstream model of ${targetLabel(key)}`);
      const apply = h("button", { type: "button", class: "set-model", onclick: () => {
        const { value, error, changed } = field.read();
        if (error || !changed) return;
        this.propose(`${name}: target ${targetLabel(key)} sends model ${value ?? name}`,
          (state) => this.buildModelChange(state, name, key, value));
      } }, "Change model");
      modelEditor = h("div", { class: "target-model" }, field.element, apply);
    }
    const row = h("li", {
      class: "target", tabindex: "0", dataset: { index: String(index), backend: target.backend },
      "aria-label": label, "aria-describedby": this.hintId(name),
      onkeydown: (event) => this.onTargetKey(event, name, chain, index),
      ondragover: (event) => this.dragOver(event, name, row),
      ondragleave: (event) => {
        // Into one of its own children is not out of the row: keep the drop line steady.
        if (!row.contains(event.relatedTarget)) row.classList.remove("drop-before", "drop-after");
      },
      ondrop: (event) => this.drop(event, name, chain, index, row),
    },
    h("span", {
      class: "drag-handle", draggable: "true", title: "Drag to reorder", "aria-hidden": "true",
      ondragstart: (event) => this.dragStart(event, name, index, row),
      ondragend: () => this.dragEnd(),
    }, "⠿"),
    h("span", { class: "position" }, `${index + 1}.`),
    h("div", { class: "target-main" },
      h("div", { class: "target-line" },
        h("strong", { class: "target-backend" }, target.backend),
        backend ? h("span", { class: "badge" }, backend.type) : h("span", { class: "badge error" }, "undefined backend"),
        backend ? h("span", { class: `badge ${enabled ? "ok" : "error"}` }, enabled ? "enabled" : "disabled") : null,
        h("span", { class: "source" }, where(nodeAt(this.state.tree, "models", name, "chain", savedAt)))),
      capabilities.length
        ? h("p", { class: "capabilities small" }, "Capabilities: ",
          capabilities.map(([cap, on], i) => [i ? ", " : "", h("span", { class: on ? "" : "muted" }, `${cap} ${on ? "yes" : "no"}`)]))
        : null,
      modelEditor),
    h("div", { class: "target-actions" },
      h("button", { type: "button", class: "move-up", disabled: index === 0,
        "aria-label": `Move ${targetLabel(key)} up`, onclick: () => this.reorder(name, chain, index, index - 1, true) }, "Move up"),
      h("button", { type: "button", class: "move-down", disabled: index === chain.length - 1,
        "aria-label": `Move ${targetLabel(key)} down`, onclick: () => this.reorder(name, chain, index, index + 1, true) }, "Move down"),
      h("button", { type: "button", class: "remove-target", disabled: chain.length === 1,
        title: chain.length === 1 ? "The last target cannot be removed: a model needs one (delete the model instead)" : null,
        "aria-label": `Remove ${targetLabel(key)}`,
        onclick: () => this.propose(`${name}: remove target ${targetLabel(key)}`,
          (state) => this.buildRemoveTarget(state, name, key)) }, "Remove"),
      chain.length === 1 ? h("span", { class: "muted small" }, "The only target: a model needs one.") : null));
    return row;
  }

  onTargetKey(event, name, chain, index) {
    if (!event.altKey || (event.key !== "ArrowUp" && event.key !== "ArrowDown")) return;
    if (event.target !== event.currentTarget) return; // typing in the model field
    event.preventDefault();
    const to = event.key === "ArrowUp" ? index - 1 : index + 1;
    if (to < 0 || to >= chain.length) {
      this.announce(`${targetLabel(targetKey(chain[index]))} is already ${to < 0 ? "first" : "last"}.`);
      return;
    }
    this.reorder(name, chain, index, to, "key");
  }

  dragStart(event, name, index, row) {
    this.dragging = { model: name, index };
    event.dataTransfer.effectAllowed = "move";
    event.dataTransfer.setData("text/plain", `${name}#${index}`);
    if (event.dataTransfer.setDragImage) event.dataTransfer.setDragImage(row, 16, 16);
    row.classList.add("dragging");
  }

  dragEnd() {
    this.dragging = null;
    for (const row of this.body.querySelectorAll(".target")) row.classList.remove("dragging", "drop-before", "drop-after");
  }

  /** Where a drop on `row` would put the dragged target: before it or after it (by the pointer's half). */
  dropSide(event, row) {
    const box = row.getBoundingClientRect();
    return event.clientY < box.top + box.height / 2 ? "before" : "after";
  }

  dragOver(event, name, row) {
    if (!this.dragging || this.dragging.model !== name) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "move";
    const side = this.dropSide(event, row);
    row.classList.toggle("drop-before", side === "before");
    row.classList.toggle("drop-after", side === "after");
  }

  drop(event, name, chain, index, row) {
    const dragging = this.dragging;
    if (!dragging || dragging.model !== name) return;
    event.preventDefault();
    const side = this.dropSide(event, row);
    this.dragEnd();
    // The position among the others where it goes, then its index once taken out of its place.
    const insert = side === "before" ? index : index + 1;
    const to = insert > dragging.index ? insert - 1 : insert;
    if (to !== dragging.index) this.reorder(name, chain, dragging.index, to, false);
  }

  /** Move the target shown at `from` of `shown` to position `to`: show the chain so, say so, and
   * review the move. The patch moves one target of the saved chain, so the page shows the saved
   * chain with that one target moved (an earlier unsaved move of another target is dropped). */
  async reorder(name, shown, from, to, keepFocus) {
    const key = targetKey(shown[from]);
    const order = (this.state.config.models[name]?.chain || []).filter((target) => !sameTarget(target, key));
    order.splice(to, 0, shown[from]);
    const list = this.cardOf(name)?.querySelector("ol.chain");
    if (list) {
      fill(list, order.map((target, index) => this.targetRow(name, order, target, index)));
      if (keepFocus) list.children[to].focus();
    }
    this.announce(`${targetLabel(key)} moved to position ${to + 1} of ${order.length} in ${name}'s chain. `
      + "Review the change to save it.");
    await this.propose(`${name}: move ${targetLabel(key)} to position ${to + 1}`,
      (state) => this.buildMove(state, name, key, to));
    // A keyboard move keeps the focus on the target, so Alt+Arrow can move it on.
    if (keepFocus === "key" && list?.children[to]?.isConnected) list.children[to].focus();
  }

  hintId(name) {
    return `reorder-hint-${name.replace(/[^A-Za-z0-9_-]/g, "-")}`;
  }

  cardOf(name) {
    return [...this.body.querySelectorAll(".model-card")].find((card) => card.dataset.model === name);
  }

  buildMove(state, name, key, to) {
    const { chain, index } = findTarget(state, name, key);
    const target = Math.min(to, chain.length - 1);
    if (target === index) return [];
    return [...guard(name, index, key),
      { op: "move", from: pointer("models", name, "chain", index), path: pointer("models", name, "chain", target) }];
  }

  buildRemoveTarget(state, name, key) {
    const { chain, index } = findTarget(state, name, key);
    if (chain.length === 1) throw new Error(`${targetLabel(key)} is the only target of ${name}: a model needs one.`);
    return [...guard(name, index, key), { op: "remove", path: pointer("models", name, "chain", index) }];
  }

  buildModelChange(state, name, key, value) {
    const { index } = findTarget(state, name, key);
    const op = setOp(state, value, "models", name, "chain", index, "model");
    return op ? [...guard(name, index, key), op] : [];
  }

  addTargetForm(name) {
    const backends = this.backendNames();
    const select = h("select", { name: "backend", "aria-label": `Backend of the new target of ${name}` },
      backends.map((backend) => h("option", { value: backend }, this.backendOption(backend))));
    const upstream = h("input", { type: "text", name: "model", spellcheck: "false", placeholder: `default: ${name}`,
      "aria-label": `Upstream model of the new target of ${name}` });
    const problem = h("span", { class: "problem", role: "alert" });
    return h("form", { class: "add-target", onsubmit: (event) => {
      event.preventDefault();
      const value = upstream.value.trim();
      const spec = schemaAt(this.schema, ["models", name, "chain", 0]).properties?.model || {};
      const error = value ? checkValue(spec, value) : "";
      problem.textContent = error;
      if (error) return;
      const target = value ? { backend: select.value, model: value } : { backend: select.value };
      this.propose(`${name}: add target ${targetLabel(targetKey(target))}`, (state) => {
        if (!state.config.models?.[name]) throw new Error(`The model ${name} is no longer in gateway.yaml.`);
        return [{ op: "add", path: pointer("models", name, "chain", "-"), value: target }];
      });
    } },
    h("h3", {}, "Add a target"),
    h("div", { class: "inline-fields" },
      h("label", {}, h("span", {}, "Backend"), select),
      h("label", {}, h("span", {}, "Upstream model (optional)"), upstream),
      h("button", { type: "submit" }, "Add target")),
    problem);
  }

  // -- description, aliases, cache ------------------------------------------------------------------

  settingsForm(name, model) {
    const spec = schemaAt(this.schema, ["models", name], model);
    const cacheSpec = schemaAt(this.schema, ["models", name, "cache"], model.cache || {});
    const fields = [];
    const editor = (parts, fieldSpec, value, label) => {
      if (isReference(value)) {
        return h("div", { class: "field" }, h("span", { class: "field-label" }, label),
          h("span", {}, h("code", { class: "reference" }, value),
            h("small", { class: "muted" }, " (set from the environment, read-only here)")));
      }
      const field = schemaField(fieldSpec || {}, value, { name: parts.join("-"), label });
      fields.push({ parts, field });
      return field.element;
    };
    const fileValue = (...parts) => (inFile(this.state, "models", name, ...parts)
      ? plain(nodeAt(this.state.tree, "models", name, ...parts)) : undefined);
    const status = h("span", { class: "problem", role: "alert" });
    const form = h("form", { class: "model-settings", novalidate: true, onsubmit: (event) => {
      event.preventDefault();
      const read = fields.map(({ parts, field }) => ({ parts, ...field.read() }));
      const bad = read.find((entry) => entry.error);
      if (bad) {
        status.textContent = `Fix ${bad.parts.join(" ")} first: ${bad.error}`;
        return;
      }
      const changed = read.filter((entry) => entry.changed);
      status.textContent = changed.length ? "" : "Nothing changed.";
      if (!changed.length) return;
      const names = changed.map((entry) => entry.parts.join(".")).join(", ");
      this.propose(`${name}: ${names}`, (state) => this.buildSettings(state, name, changed));
    } },
    h("div", { class: "field-grid" },
      editor(["description"], spec.properties?.description, fileValue("description"), "Description"),
      editor(["aliases"], spec.properties?.aliases, fileValue("aliases"), "Aliases")),
    h("h3", {}, "Response cache"),
    h("div", { class: "field-grid" },
      CACHE_FIELDS.map((field) => editor(["cache", field], cacheSpec.properties?.[field], fileValue("cache", field), field))),
    h("div", { class: "form-actions" },
      h("button", { type: "submit", class: "review-settings" }, "Review changes"), status));
    return h("details", { class: "model-settings-wrap", dataset: { key: `${name}/settings` } },
      h("summary", {}, "Description, aliases and cache"), form);
  }

  buildSettings(state, name, changed) {
    if (!state.config.models?.[name]) throw new Error(`The model ${name} is no longer in gateway.yaml.`);
    const ops = [];
    const cache = changed.filter((entry) => entry.parts[0] === "cache");
    for (const entry of changed.filter((e) => e.parts[0] !== "cache")) {
      const op = setOp(state, entry.value, "models", name, ...entry.parts);
      if (op) ops.push(op);
    }
    if (cache.length) {
      if (!inFile(state, "models", name, "cache")) {
        const value = Object.fromEntries(cache.filter((e) => e.value !== undefined).map((e) => [e.parts[1], e.value]));
        if (Object.keys(value).length) ops.push({ op: "add", path: pointer("models", name, "cache"), value });
      } else {
        const kept = CACHE_FIELDS.filter((field) => inFile(state, "models", name, "cache", field)
          && !cache.some((e) => e.parts[1] === field && e.value === undefined));
        const added = cache.filter((e) => e.value !== undefined);
        if (!kept.length && !added.length) ops.push({ op: "remove", path: pointer("models", name, "cache") });
        else {
          for (const entry of cache) {
            const op = setOp(state, entry.value, "models", name, "cache", entry.parts[1]);
            if (op) ops.push(op);
          }
        }
      }
    }
    return ops;
  }

  // -- create, rename, delete ----------------------------------------------------------------------

  renameDeleteForm(name, modelCount) {
    const nameSpec = this.schema.$defs?.public_model_name || {};
    const input = h("input", { type: "text", name: "new-name", spellcheck: "false", value: name,
      "aria-label": `New name for ${name}` });
    const problem = h("span", { class: "problem", role: "alert" });
    const confirmArea = h("div", { class: "delete-confirm" });
    const rename = h("form", { class: "rename-model", onsubmit: (event) => {
      event.preventDefault();
      const to = input.value.trim();
      const error = to === name ? "Type a new name." : checkValue(nameSpec, to);
      problem.textContent = error;
      if (error) return;
      this.propose(`rename ${name} to ${to}`, (state) => {
        if (!state.config.models?.[name]) throw new Error(`The model ${name} is no longer in gateway.yaml.`);
        if (state.config.models[to]) throw new Error(`There is already a model named ${to}.`);
        return [{ op: "move", from: pointer("models", name), path: pointer("models", to) }];
      });
    } },
    h("label", {}, h("span", {}, "Rename to"), input),
    h("button", { type: "submit" }, "Rename"), problem);
    const askDelete = () => fill(confirmArea, h("div", { class: "alert warn", role: "alert" },
      h("p", {}, h("strong", {}, `Delete ${name}?`), " Clients that ask for it (or its aliases) will get 404 model-not-found."),
      h("div", { class: "actions" },
        h("button", { type: "button", class: "danger confirm-delete", onclick: () => {
          fill(confirmArea);
          this.propose(`delete ${name}`, (state) => {
            if (!state.config.models?.[name]) throw new Error(`The model ${name} is no longer in gateway.yaml.`);
            return [{ op: "remove", path: pointer("models", name) }];
          });
        } }, `Review deleting ${name}`),
        h("button", { type: "button", onclick: () => fill(confirmArea) }, "Keep it"))));
    return h("details", { class: "model-admin", dataset: { key: `${name}/admin` } },
      h("summary", {}, "Rename or delete"),
      rename,
      h("div", { class: "form-actions" },
        h("button", { type: "button", class: "delete-model", disabled: modelCount === 1,
          title: modelCount === 1 ? "The last model cannot be deleted: gateway.yaml needs one" : null,
          onclick: askDelete }, "Delete model…")),
      confirmArea);
  }

  newModelCard() {
    const nameSpec = this.schema.$defs?.public_model_name || {};
    const backends = this.backendNames();
    const nameInput = h("input", { type: "text", id: "new-model-name", name: "name", spellcheck: "false", required: true });
    const select = h("select", { id: "new-model-backend", name: "backend" },
      backends.map((backend) => h("option", { value: backend }, this.backendOption(backend))));
    const upstream = h("input", { type: "text", id: "new-model-upstream", name: "model", spellcheck: "false",
      placeholder: "default: the public name" });
    const problem = h("span", { class: "problem", role: "alert" });
    return h("section", { class: "card new-model", "aria-labelledby": "new-model-title" },
      h("h2", { id: "new-model-title" }, "New model"),
      h("form", { id: "new-model", novalidate: true, onsubmit: (event) => {
        event.preventDefault();
        const name = nameInput.value.trim();
        const model = upstream.value.trim();
        const error = name ? checkValue(nameSpec, name) : "Name the model.";
        problem.textContent = error;
        if (error) return;
        const target = model ? { backend: select.value, model } : { backend: select.value };
        this.propose(`new model ${name}`, (state) => {
          if (state.config.models?.[name]) throw new Error(`There is already a model named ${name}.`);
          return [{ op: "add", path: pointer("models", name), value: { chain: [target] } }];
        });
      } },
      h("div", { class: "inline-fields" },
        h("label", { for: "new-model-name" }, h("span", {}, "Public name"), nameInput),
        h("label", { for: "new-model-backend" }, h("span", {}, "First target's backend"), select),
        h("label", { for: "new-model-upstream" }, h("span", {}, "Upstream model (optional)"), upstream),
        h("button", { type: "submit", class: "primary" }, "Review new model")),
      problem));
  }
}
