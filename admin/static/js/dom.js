// Small DOM and formatting helpers. Elements are built with `h()`, never from HTML strings, so
// values from the audit log or the config can never become markup.

/** h("td", {class: "num", onclick: fn}, "text", childNode, [more, children]) → an element. */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      Object.assign(element.dataset, value);
    } else if (value === true) {
      element.setAttribute(name, "");
    } else {
      element.setAttribute(name, String(value));
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(element, child);
    else element.append(child instanceof Node ? child : String(child));
  }
}

/** Replace everything inside `element` with `children`. */
export function fill(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

const timeFormat = new Intl.DateTimeFormat(undefined, {
  month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
});

/** "Nov 23, 14:05:09" in the browser's time zone. */
export function formatTime(iso) {
  if (!iso) return "";
  return timeFormat.format(new Date(iso));
}

/** "3 s ago", "5 min ago", "2 h ago", "4 d ago". */
export function ago(iso) {
  const seconds = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
  if (seconds < 60) return `${Math.round(seconds)} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

/** Milliseconds for a table: "842 ms", "12.4 s". */
export function formatMs(ms) {
  if (ms === null || ms === undefined) return "";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
}

/** A cost in USD for a table cell: "$0.0123", "$0.00004125"; "" when unknown (null). */
export function formatUsd(usd) {
  if (usd === null || usd === undefined) return "";
  if (usd === 0) return "$0";
  if (usd >= 0.01) return `$${usd.toFixed(4)}`;
  if (usd < 1e-8) return "< $0.00000001";
  return `$${usd.toFixed(8).replace(/0+$/, "")}`;
}

/** Seconds as a person reads them: "900 s" → "15 min", "86400" → "24 h". */
export function humanSeconds(seconds) {
  if (!Number.isFinite(seconds)) return "";
  if (seconds >= 3600 && seconds % 3600 === 0) return `${seconds / 3600} h`;
  if (seconds >= 60 && seconds % 60 === 0) return `${seconds / 60} min`;
  if (seconds >= 3600) return `${(seconds / 3600).toFixed(1)} h`;
  if (seconds >= 60) return `${(seconds / 60).toFixed(1)} min`;
  return `${seconds} s`;
}

/** A unified diff as a <pre> with added, removed and hunk lines marked. */
export function diffBlock(text, className = "diff") {
  const lines = text.replace(/\n$/, "").split("\n");
  return h("pre", { class: className }, lines.map((line) => {
    let kind = "";
    if (line.startsWith("+++") || line.startsWith("---")) kind = "hunk";
    else if (line.startsWith("@@")) kind = "hunk";
    else if (line.startsWith("+")) kind = "add";
    else if (line.startsWith("-")) kind = "del";
    return h("span", { class: kind }, line || " ");
  }));
}

/** An ISO-8601 instant as the value of an <input type="datetime-local"> (the browser's time zone). */
export function toLocalInput(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  const local = new Date(date.getTime() - date.getTimezoneOffset() * 60000);
  return local.toISOString().slice(0, 19);
}

/** The value of an <input type="datetime-local"> as an ISO-8601 instant in UTC ("" stays ""). */
export function fromLocalInput(value) {
  if (!value) return "";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? "" : date.toISOString();
}
