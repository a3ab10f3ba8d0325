// Forms from the config's JSON Schema (GET /admin/api/config/schema): the schema says each field's
// type, bounds, enum and description, so the panel's inputs check what `gateway check` checks, say
// what the docs say, and a setting added to the schema needs no second description here.
//
//   const schema = await loadSchema();
//   const spec = schemaAt(schema, ["backends", "*"], { type: "openai" });   // a backend's properties
//   const field = schemaField(spec.properties.max_concurrency, 4, { name: "max_concurrency" });
//   form.append(field.element); field.read() → {value, error}  (value undefined: leave unset)

import { api } from "./api.js";
import { h } from "./dom.js";

let cached = null;

/** The config's JSON Schema (loaded once per page load). */
export async function loadSchema() {
  if (!cached) cached = api("/config/schema").then(({ data }) => data);
  return cached;
}

/** Follow `$ref`s ("#/$defs/x") to the schema they name. */
export function resolve(schema, node) {
  let current = node;
  for (let depth = 0; current && current.$ref && depth < 16; depth += 1) {
    const path = current.$ref.replace(/^#\//, "").split("/");
    let target = schema;
    for (const part of path) target = target?.[part];
    // Keep what sits beside the $ref (a description, properties naming more fields).
    const { $ref, ...rest } = current;
    current = { ...target, ...rest, properties: { ...(target?.properties || {}), ...(rest.properties || {}) } };
  }
  return current || {};
}

/**
 * The schema of the value at `path` (keys; "*" for any key of a map or any item of a list), with
 * `properties` merged from `$ref`s and from the `allOf` if/then branches that `value` selects
 * (a backend's `type`). A property given as `true` (allowed, defined elsewhere) takes the
 * definition from the schema it refines.
 */
export function schemaAt(schema, path, value = {}) {
  let node = schema;
  for (const part of path) {
    node = resolve(schema, node);
    if (node.properties && part in node.properties && node.properties[part] !== true) node = node.properties[part];
    else if (node.items && (part === "*" || typeof part === "number")) node = node.items;
    else if (node.additionalProperties && typeof node.additionalProperties === "object") node = node.additionalProperties;
    else return {};
  }
  return withProperties(schema, resolve(schema, node), value);
}

function withProperties(schema, node, value) {
  const properties = {};
  const required = [...(node.required || [])];
  for (const [name, spec] of Object.entries(node.properties || {})) {
    if (spec !== true) properties[name] = resolve(schema, spec);
  }
  for (const branch of node.allOf || []) {
    const cond = branch.if?.properties || {};
    const selected = Object.entries(cond).every(([name, test]) => (test.const !== undefined
      ? value?.[name] === test.const
      : !test.enum || test.enum.includes(value?.[name])));
    const part = selected ? branch.then : !branch.if ? branch : null;
    for (const [name, spec] of Object.entries(part?.properties || {})) {
      // A branch refining a property (a default) keeps what the first definition said.
      if (spec !== true) properties[name] = { ...(properties[name] || {}), ...resolve(schema, spec) };
    }
    required.push(...(part?.required || []));
  }
  return { ...node, properties, required };
}

/** Markdown's `code` in a description as <code> elements (descriptions are plain text otherwise). */
export function describe(text) {
  if (!text) return null;
  return text.split(/(`[^`]+`)/).map((part) => (part.startsWith("`") && part.endsWith("`") && part.length > 1
    ? h("code", {}, part.slice(1, -1))
    : part));
}

/** Why `value` breaks `spec`'s bounds, or "" (the checks `gateway check` makes on one scalar). */
export function checkValue(spec, value) {
  if (value === undefined) return "";
  if (spec.enum && !spec.enum.includes(value)) return `One of ${spec.enum.filter((v) => v !== false).join(", ")}.`;
  const types = [].concat(spec.type || []);
  if (types.includes("integer") && !Number.isInteger(value)) return "Enter a whole number.";
  if (types.includes("number") || types.includes("integer")) {
    if (typeof value !== "number" || !Number.isFinite(value)) return "Enter a number.";
    if (spec.minimum !== undefined && value < spec.minimum) return `At least ${spec.minimum}.`;
    if (spec.exclusiveMinimum !== undefined && value <= spec.exclusiveMinimum) return `More than ${spec.exclusiveMinimum}.`;
    if (spec.maximum !== undefined && value > spec.maximum) return `At most ${spec.maximum}.`;
  }
  if (types.includes("string") && typeof value === "string") {
    if (spec.minLength !== undefined && value.length < spec.minLength) return spec.minLength === 1 ? "Required." : `At least ${spec.minLength} characters.`;
    if (spec.pattern && !new RegExp(spec.pattern, "u").test(value)) {
      const said = spec.errorMessage?.pattern; // the schema's own words ("must be an http:// or https:// URL")
      return said ? `${said[0].toUpperCase()}${said.slice(1)}.` : `Does not match ${spec.pattern}.`;
    }
  }
  return "";
}

let fieldCount = 0;

/**
 * An input for one scalar setting (or a list of strings), built from its schema: a switch for a
 * boolean, a select for an enum, a number input with the schema's bounds, a text input otherwise.
 * `value` undefined shows the schema's default as a placeholder. Returns {element, input, read, set}:
 * `read()` → {value, error, changed}; an emptied optional field reads as undefined (remove it).
 */
export function schemaField(spec, value, { name, label = name, id, required = false } = {}) {
  const inputId = id || `field-${name.replace(/[^A-Za-z0-9_-]/g, "-")}-${(fieldCount += 1)}`;
  const types = [].concat(spec.type || []);
  const problem = h("span", { class: "problem", role: "alert" });
  const help = h("small", { class: "help-text" }, describe(spec.description));
  let input;
  let read;
  let set;
  if (types.includes("boolean") && !spec.enum) {
    input = h("input", { type: "checkbox", role: "switch", id: inputId, name });
    set = (v) => { input.checked = v === undefined ? spec.default === true : Boolean(v); };
    read = () => input.checked;
  } else if (spec.enum) {
    const options = spec.enum.filter((v) => v !== false);
    input = h("select", { id: inputId, name },
      required ? null : h("option", { value: "" }, spec.default !== undefined ? `default (${spec.default})` : "not set"),
      options.map((option) => h("option", { value: String(option) }, String(option))));
    set = (v) => { input.value = v === undefined || v === false ? "" : String(v); };
    read = () => (input.value === "" ? undefined : input.value);
  } else if (types.includes("integer") || types.includes("number")) {
    input = h("input", {
      type: "number", id: inputId, name, step: types.includes("integer") ? "1" : "any", inputmode: "decimal",
      min: spec.minimum ?? spec.exclusiveMinimum, max: spec.maximum,
      placeholder: spec.default !== undefined ? `default ${spec.default}` : "",
    });
    set = (v) => { input.value = v === undefined || v === null ? "" : String(v); };
    read = () => (input.value.trim() === "" ? undefined : Number(input.value));
  } else if (types.includes("array")) {
    input = h("input", { type: "text", id: inputId, name, placeholder: "comma-separated",
      spellcheck: "false" });
    set = (v) => { input.value = Array.isArray(v) ? v.join(", ") : ""; };
    read = () => {
      const items = input.value.split(",").map((s) => s.trim()).filter(Boolean);
      return items.length ? items : undefined;
    };
  } else {
    input = h("input", { type: "text", id: inputId, name, spellcheck: "false",
      placeholder: spec.default ? `default ${spec.default}` : "" });
    set = (v) => { input.value = v === undefined || v === null ? "" : String(v); };
    read = () => (input.value === "" ? undefined : input.value);
  }
  set(value);
  const initial = JSON.stringify(read());
  const element = h("div", { class: "field schema-field" },
    h("label", { for: inputId }, label), input, problem, help);
  const check = () => {
    const current = read();
    let error = current === undefined && required ? "Required." : "";
    if (!error && current !== undefined) {
      error = Array.isArray(current) && spec.items
        ? current.map((item) => checkValue(spec.items, item)).find(Boolean) || ""
        : checkValue(spec, current);
    }
    problem.textContent = error;
    input.setAttribute("aria-invalid", error ? "true" : "false");
    const changed = JSON.stringify(current) !== initial;
    element.classList.toggle("changed", changed);
    return { value: current, error, changed };
  };
  input.addEventListener("input", check);
  input.addEventListener("change", check);
  return { element, input, read: check, set: (v) => { set(v); check(); } };
}
