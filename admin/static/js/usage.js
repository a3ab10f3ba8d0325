// The usage page: spend, tokens and requests over time per key, model or backend (SVG charts drawn
// by chart.js), each key's budget with what is spent of it today and this month, a per-model table,
// and a CSV export. Everything comes from GET /admin/api/usage, aggregated by the database; the
// range and the grouping are in the URL, so a view can be shared.

import { api } from "./api.js";
import { PALETTE, stackedBars } from "./chart.js";
import { fill, h } from "./dom.js";

const RANGES = [["24h", "Last 24 hours"], ["7d", "Last 7 days"], ["30d", "Last 30 days"], ["90d", "Last 90 days"],
  ["custom", "Custom"]];
const GROUPS = [["client", "Key"], ["model", "Model"], ["backend", "Backend"]];
const NO_NAME = { client: "(no key)", model: "(no model)", backend: "(no backend)" };
const DAY_MS = 86400000;
const HOUR_MS = 3600000;
// Series drawn one by one; the rest are added up as "other".
const MAX_SERIES = 7;
const OTHER = "\u0000other";

const usd = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD" });
const count = new Intl.NumberFormat("en-US");
const compact = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 1 });
const dayLabel = new Intl.DateTimeFormat("en-GB", { month: "short", day: "numeric", timeZone: "UTC" });

/** "$1,234.50"; amounts under a cent keep two significant digits ("$0.0042"). */
export function formatUsd(value) {
  if (value > 0 && value < 0.01) return `$${value.toPrecision(2)}`;
  return usd.format(value);
}

function axisUsd(value) {
  if (value === 0) return "$0";
  if (value >= 1000) return `$${compact.format(value)}`;
  return value < 1 ? `$${Number(value.toPrecision(2))}` : `$${Number(value.toFixed(2))}`;
}

/** The range and grouping the URL names (defaults: last 30 days, by key). */
function viewFromUrl() {
  const params = new URLSearchParams(location.search);
  const range = RANGES.some(([value]) => value === params.get("range")) ? params.get("range") : "30d";
  const group = GROUPS.some(([value]) => value === params.get("group")) ? params.get("group") : "client";
  return { range, group, since: params.get("since") || "", until: params.get("until") || "" };
}

function startOfUtcDay(ms) {
  return Math.floor(ms / DAY_MS) * DAY_MS;
}

/** {since, until, bucket} in ms and "day" | "hour" for a view; custom days are UTC dates, until inclusive. */
function timeSpan(view, now = Date.now()) {
  if (view.range === "24h") {
    const until = Math.floor(now / HOUR_MS) * HOUR_MS + HOUR_MS;
    return { since: until - 24 * HOUR_MS, until, bucket: "hour" };
  }
  if (view.range === "custom" && view.since && view.until) {
    const since = Date.parse(`${view.since}T00:00:00Z`);
    const until = Date.parse(`${view.until}T00:00:00Z`) + DAY_MS;
    if (Number.isFinite(since) && Number.isFinite(until) && since < until) return { since, until, bucket: "day" };
  }
  const days = { "7d": 7, "90d": 90 }[view.range] || 30;
  const until = startOfUtcDay(now) + DAY_MS;
  return { since: until - days * DAY_MS, until, bucket: "day" };
}

function buckets({ since, until, bucket }) {
  const step = bucket === "hour" ? HOUR_MS : DAY_MS;
  const list = [];
  for (let t = since; t < until; t += step) {
    const iso = new Date(t).toISOString();
    list.push(bucket === "hour"
      ? { key: `${iso.slice(0, 13)}:00:00Z`, label: `${iso.slice(11, 13)}:00` }
      : { key: iso.slice(0, 10), label: dayLabel.format(new Date(t)) });
  }
  return list;
}

function isoDate(ms) {
  return new Date(ms).toISOString().slice(0, 10);
}

function tokens(row) {
  return row.prompt_tokens + row.completion_tokens;
}

/** Spend as text: "unknown" when no request of them had a price, "≥ $x" when some had none. */
function spendText(cost, unpriced) {
  if (unpriced > 0 && cost === 0) return "unknown";
  return `${unpriced > 0 ? "≥ " : ""}${formatUsd(cost)}`;
}

export function mount(container) {
  const view = viewFromUrl();
  let generation = 0;

  const rangeSelect = h("select", { name: "range", id: "usage-range", onchange: () => apply() },
    RANGES.map(([value, text]) => h("option", { value, selected: value === view.range }, text)));
  const initial = timeSpan(view);
  const sinceInput = h("input", { type: "date", name: "since", value: view.since || isoDate(initial.since) });
  const untilInput = h("input", { type: "date", name: "until", value: view.until || isoDate(initial.until - DAY_MS) });
  const customFields = [h("label", {}, "From (UTC)", sinceInput), h("label", {}, "To (UTC)", untilInput)];
  const groupSelect = h("select", { name: "group", id: "usage-group", onchange: () => apply() },
    GROUPS.map(([value, text]) => h("option", { value, selected: value === view.group }, text)));
  const exportLink = h("a", { class: "button", id: "export-csv", download: "" }, "Export CSV");
  const form = h("form", { class: "filters", onsubmit: (event) => { event.preventDefault(); apply(); } },
    h("label", {}, "Range", rangeSelect), customFields,
    h("label", {}, "Per", groupSelect),
    h("button", { type: "submit", id: "usage-apply" }, "Apply"),
    h("span", { class: "spacer" }), exportLink);
  const body = h("div", { id: "usage" }, h("p", { class: "muted" }, "Loading…"));

  fill(container,
    h("div", { class: "page-head" }, h("div", {}, h("h1", {}, "Usage"),
      h("p", {}, "Requests, tokens and spend from the audit log; budgets are set in gateway.yaml "
        + "(auth.client_keys[].limits.budget_usd, auth.default_limits)."))),
    form, body);

  function showCustom() {
    for (const field of customFields) field.hidden = rangeSelect.value !== "custom";
  }

  function apply() {
    view.range = rangeSelect.value;
    view.group = groupSelect.value;
    view.since = view.range === "custom" ? sinceInput.value : "";
    view.until = view.range === "custom" ? untilInput.value : "";
    const params = new URLSearchParams({ range: view.range, group: view.group });
    if (view.range === "custom") {
      params.set("since", view.since);
      params.set("until", view.until);
    }
    history.replaceState(null, "", `/admin/usage?${params}`);
    load();
  }

  async function load() {
    const id = ++generation;
    showCustom();
    const span = timeSpan(view);
    const range = { since: new Date(span.since).toISOString(), until: new Date(span.until).toISOString() };
    const query = (groupBy) => new URLSearchParams({ group_by: groupBy, ...range });
    exportLink.href = `/admin/api/usage?${query(`${span.bucket},${view.group}`)}&format=csv`;
    let results;
    try {
      results = await Promise.all([
        api(`/usage?${query(`${span.bucket},${view.group}`)}`),
        api(`/usage?${query("client")}`),
        api(`/usage?${query("model")}`),
      ]);
    } catch (error) {
      if (id === generation) fill(body, h("p", { class: "alert bad", id: "usage-error" }, error.message));
      return;
    }
    if (id !== generation) return;
    const [series, keys, models] = results.map((result) => result.data);
    fill(body, render(view, span, series, keys, models));
  }

  load();
  return () => { generation += 1; };
}

function render(view, span, series, keys, models) {
  const totals = keys.totals;
  const unpriced = totals.unpriced_requests;
  return [
    h("div", { class: "stats", id: "usage-totals" },
      stat("Spend", spendText(totals.cost_usd, unpriced), "spend"),
      stat("Tokens in / out", `${compact.format(totals.prompt_tokens)} / ${compact.format(totals.completion_tokens)}`, "tokens"),
      stat("Requests", count.format(totals.requests), "requests"),
      stat("Errors · rejected", `${count.format(totals.error + totals.timeout)} · ${count.format(totals.rejected)}`, "failures")),
    unpriced > 0
      ? h("p", { class: "alert warn", id: "unpriced-note" },
        `${count.format(unpriced)} request(s) reported tokens but have no price (no prices for their model's `
        + "backend in gateway.yaml): spend shown is at least the known costs.")
      : null,
    series.truncated ? h("p", { class: "alert warn" }, "Too many groups for one chart: narrow the range.") : null,
    totals.requests === 0
      ? h("p", { class: "empty", id: "usage-empty" }, "No requests in this range.")
      : charts(view, span, series),
    h("h2", {}, "Keys and budgets"),
    h("div", { class: "panel-table" }, keyTable(keys)),
    h("p", { class: "muted small" }, "Budgets count each UTC calendar day and month; requests of unknown cost "
      + "are not charged."),
    h("h2", {}, "Models"),
    models.rows.length
      ? h("div", { class: "panel-table" }, modelTable(models.rows))
      : h("p", { class: "muted", id: "models-empty" }, "No requests in this range."),
  ];
}

function stat(label, value, name) {
  return h("div", { class: "stat", dataset: { stat: name } }, h("span", { class: "label" }, label),
    h("strong", {}, value));
}

/** The series of the chart rows (ranked by spend, then tokens, then requests), the tail as "other". */
function rankSeries(rows, group) {
  const sums = new Map();
  for (const row of rows) {
    const name = row[group] ?? "";
    const sum = sums.get(name) || { cost: 0, tokens: 0, requests: 0 };
    sum.cost += row.cost_usd;
    sum.tokens += tokens(row);
    sum.requests += row.requests;
    sums.set(name, sum);
  }
  const ranked = [...sums.entries()].sort(([, a], [, b]) => b.cost - a.cost || b.tokens - a.tokens
    || b.requests - a.requests).map(([name]) => name);
  const shown = ranked.length > MAX_SERIES + 1 ? ranked.slice(0, MAX_SERIES) : ranked;
  const list = shown.map((name, i) => ({ name, label: name === "" ? NO_NAME[group] : name, color: PALETTE[i] }));
  if (shown.length < ranked.length) list.push({ name: OTHER, label: `${ranked.length - shown.length} others`, color: PALETTE.at(-1) });
  return { list, seriesOf: (name) => (shown.includes(name) ? name : OTHER) };
}

function charts(view, span, data) {
  const group = view.group;
  const { list, seriesOf } = rankSeries(data.rows, group);
  const cells = new Map(); // "series\u0001bucket" → {cost, tokens, requests}
  for (const row of data.rows) {
    const key = `${seriesOf(row[group] ?? "")}\u0001${row[span.bucket]}`;
    const cell = cells.get(key) || { cost: 0, tokens: 0, requests: 0 };
    cell.cost += row.cost_usd;
    cell.tokens += tokens(row);
    cell.requests += row.requests;
    cells.set(key, cell);
  }
  const value = (measure) => (name, bucket) => cells.get(`${name}\u0001${bucket}`)?.[measure] || 0;
  const axis = buckets(span);
  const per = span.bucket === "hour" ? "hour" : "day";
  const chart = (id, title, measure, format) => h("section", { class: "card chart-card" },
    h("h2", {}, title),
    stackedBars({ id, title, buckets: axis, series: list, value: value(measure), format }));
  return [
    h("ul", { class: "legend", id: "usage-legend", "aria-label": "Series" },
      list.map((s) => h("li", { dataset: { series: s.name } }, swatch(s.color), s.label))),
    h("div", { class: "charts" },
      chart("chart-spend", `Spend per ${per} (USD)`, "cost", axisUsd),
      chart("chart-tokens", `Tokens per ${per} (input + output)`, "tokens", (v) => compact.format(v)),
      chart("chart-requests", `Requests per ${per}`, "requests", (v) => compact.format(v))),
  ];
}

function swatch(color) {
  const mark = h("i", { class: "swatch" });
  mark.style.background = color; // through CSSOM: the page's CSP forbids style attributes
  return mark;
}

/** Keys: every key of the config with its budget, then keys seen in the range that are no longer there. */
function keyTable(data) {
  const byClient = new Map(data.rows.map((row) => [row.client ?? "", row]));
  const configured = new Set(data.budgets.map((b) => b.client));
  const extra = data.rows.filter((row) => !configured.has(row.client ?? ""));
  return h("table", { class: "grid", id: "keys" },
    h("thead", {}, h("tr", {},
      h("th", {}, "Key"), h("th", { class: "num" }, "Requests"), h("th", { class: "num" }, "Tokens"),
      h("th", { class: "num" }, "Spend in range"), h("th", {}, "Today"), h("th", {}, "This month"))),
    h("tbody", {},
      data.budgets.map((budget) => {
        const row = byClient.get(budget.client);
        return h("tr", { dataset: { client: budget.client } },
          h("th", { scope: "row" }, budget.client),
          rangeCells(row),
          h("td", { class: "budget", dataset: { period: "day", label: "Today" } },
            budgetCell(budget.spent_day, budget.per_day, budget.unpriced_day)),
          h("td", { class: "budget", dataset: { period: "month", label: "This month" } },
            budgetCell(budget.spent_month, budget.per_month, budget.unpriced_month)));
      }),
      extra.map((row) => h("tr", { dataset: { client: row.client ?? "" } },
        h("th", { scope: "row" }, row.client ?? NO_NAME.client, " ", h("span", { class: "muted" }, "(not in config)")),
        rangeCells(row),
        h("td", { class: "muted", dataset: { label: "Today" } }, "–"),
        h("td", { class: "muted", dataset: { label: "This month" } }, "–")))));
}

function rangeCells(row) {
  const cell = (label, text) => h("td", { class: row ? "num" : "num muted", dataset: { label } }, text);
  return [
    cell("Requests", count.format(row ? row.requests : 0)),
    cell("Tokens", count.format(row ? tokens(row) : 0)),
    cell("Spend in range", row ? spendText(row.cost_usd, row.unpriced_requests) : formatUsd(0)),
  ];
}

function budgetCell(spent, cap, unpriced) {
  const spentText = `${unpriced > 0 ? "≥ " : ""}${formatUsd(spent)}`;
  if (cap === null || cap === undefined) {
    return [h("span", { class: "amount" }, spentText), " ", h("span", { class: "muted" }, "no budget")];
  }
  const share = spent / cap;
  const over = spent >= cap;
  const bar = h("i");
  bar.style.width = `${Math.min(100, share * 100)}%`;
  return [
    h("span", { class: `meter budget-meter${over ? " over" : ""}`, role: "meter", "aria-valuemin": "0",
      "aria-valuemax": String(cap), "aria-valuenow": String(spent), "aria-label": "Budget used" }, bar),
    h("span", { class: "amount" }, `${spentText} of ${formatUsd(cap)}`),
    " ", h("span", { class: over ? "over-text" : "muted" }, `(${Math.round(share * 100)}%)`),
  ];
}

function modelTable(rows) {
  return h("table", { class: "grid", id: "models" },
    h("thead", {}, h("tr", {},
      h("th", {}, "Model"), h("th", { class: "num" }, "Requests"), h("th", { class: "num" }, "Errors"),
      h("th", { class: "num" }, "Input tokens"), h("th", { class: "num" }, "Cached"),
      h("th", { class: "num" }, "Output tokens"), h("th", { class: "num" }, "Spend"),
      h("th", { class: "num" }, "Unpriced"))),
    h("tbody", {}, rows.map((row) => h("tr", { dataset: { model: row.model ?? "" } },
      h("th", { scope: "row" }, row.model ?? NO_NAME.model),
      h("td", { class: "num" }, count.format(row.requests)),
      h("td", { class: "num" }, count.format(row.error + row.timeout)),
      h("td", { class: "num" }, count.format(row.prompt_tokens)),
      h("td", { class: "num" }, count.format(row.cached_tokens)),
      h("td", { class: "num" }, count.format(row.completion_tokens)),
      h("td", { class: "num" }, spendText(row.cost_usd, row.unpriced_requests)),
      h("td", { class: "num" }, row.unpriced_requests ? count.format(row.unpriced_requests) : "")))));
}
