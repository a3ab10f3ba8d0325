// The logs page: audit records newest first, filtered by the URL's query (so a view can be shared),
// more loaded as the table scrolls (keyset cursor), new ones arriving live over a WebSocket that
// reconnects with backoff, a drawer with one record's details, and a JSON Lines export.

import { api, ApiError } from "./api.js";
import { fill, formatMs, formatTime, formatUsd, fromLocalInput, h, toLocalInput } from "./dom.js";

const FILTERS = ["model", "backend_type", "status", "shadow", "since", "until", "request_id"];
// The `shadow` filter: client requests, shadow copies (models.<m>.shadow), or both.
const SHADOW = [["false", "client requests"], ["true", "shadow copies"]];
const STATUSES = ["success", "error", "timeout", "rejected"];
const BACKEND_TYPES = ["openai", "anthropic", "openai_compatible", "gemini", "azure_openai", "bedrock", "vertex", "mlx"];
const RANGES = [["15m", "Last 15 min", 15 * 60], ["1h", "Last hour", 3600], ["24h", "Last 24 h", 86400],
  ["7d", "Last 7 days", 7 * 86400]];
const PAGE_SIZE = 50;
// Rows kept in the table; past it the oldest go (a page left open on a busy gateway stays fast).
const MAX_ROWS = 2000;
const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 10000;

export function mount(container, context) {
  const view = new LogsView(container, context);
  view.start();
  return () => view.stop();
}

function filtersFromUrl() {
  const params = new URLSearchParams(location.search);
  return Object.fromEntries(FILTERS.map((name) => [name, params.get(name) || ""]));
}

function query(filters) {
  const params = new URLSearchParams();
  for (const name of FILTERS) if (filters[name]) params.set(name, filters[name]);
  return params;
}

function select(name, label, options, value) {
  return h("label", {}, label, h("select", { name },
    h("option", { value: "" }, "any"),
    options.map((option) => h("option", { value: option, selected: option === value }, option))));
}

class LogsView {
  constructor(container, context) {
    this.container = container;
    this.context = context;
    this.filters = filtersFromUrl();
    this.seen = new Set();
    this.byId = new Map();
    this.nextCursor = null;
    this.exhausted = false;
    this.trimmed = false;
    this.loading = false;
    this.generation = 0;
    this.paused = false;
    this.pending = [];
    this.socket = null;
    this.connectedOnce = false;
    this.retryDelay = RETRY_FIRST_MS;
    this.retryTimer = null;
    this.stopped = false;
    this.selected = null;
    this.onKey = (event) => {
      if (event.key === "Escape") this.closeDrawer();
    };
  }

  // -- layout --------------------------------------------------------------------------------

  start() {
    const f = this.filters;
    const models = (this.context.config?.models || []).flatMap((m) => [m.name, ...(m.aliases || [])]);
    this.form = h("form", { class: "filters", role: "search", onchange: () => this.apply(),
      onsubmit: (event) => { event.preventDefault(); this.apply(); } },
      h("label", {}, "Model", h("input", { name: "model", list: "model-names", value: f.model,
        placeholder: "any", autocomplete: "off" })),
      h("datalist", { id: "model-names" }, models.map((name) => h("option", { value: name }))),
      select("backend_type", "Backend type", BACKEND_TYPES, f.backend_type),
      select("status", "Status", STATUSES, f.status),
      h("label", {}, "Requests", h("select", { name: "shadow" },
        h("option", { value: "" }, "all"),
        SHADOW.map(([value, text]) => h("option", { value, selected: value === f.shadow }, text)))),
      h("label", {}, "Time range", h("select", { name: "range", onchange: (event) => this.pickRange(event) },
        h("option", { value: "" }, "custom"),
        RANGES.map(([value, text]) => h("option", { value }, text)))),
      h("label", {}, "Since", h("input", { type: "datetime-local", step: "1", name: "since",
        value: toLocalInput(f.since) })),
      h("label", {}, "Until", h("input", { type: "datetime-local", step: "1", name: "until",
        value: toLocalInput(f.until) })),
      h("label", {}, "Request id", h("input", { name: "request_id", class: "request-id", value: f.request_id,
        placeholder: "req_…", autocomplete: "off", spellcheck: "false" })),
      h("button", { type: "submit" }, "Apply"),
      h("button", { type: "button", class: "quiet", onclick: () => this.clearFilters() }, "Clear"));

    this.liveState = h("span", { class: "live-state", "data-state": "connecting", id: "live-state" }, "Connecting…");
    this.pauseButton = h("button", { type: "button", id: "pause", onclick: () => this.togglePause() }, "Pause");
    this.countNote = h("span", { class: "muted", id: "record-count" });
    this.exportLink = h("a", { class: "button", id: "export", download: "" }, "Export JSON Lines");
    this.notice = h("p", { class: "alert warn", role: "status" });
    this.notice.hidden = true;

    this.tbody = h("tbody");
    this.endNote = h("div", { class: "list-end", id: "list-end" });
    this.sentinel = h("div", { class: "sentinel" });
    this.scroller = h("div", { class: "table-wrap", id: "records" },
      h("table", { class: "grid" },
        h("thead", {}, h("tr", {},
          h("th", {}, "Time"), h("th", {}, "Status"), h("th", { class: "num" }, "HTTP"), h("th", {}, "Model"),
          h("th", {}, "Backend"), h("th", {}, "Endpoint"), h("th", { class: "num" }, "Attempts"),
          h("th", { class: "num" }, "Latency"), h("th", { class: "num" }, "Tokens in / out"),
          h("th", { class: "num" }, "Cost"), h("th", {}, "Client"), h("th", {}, "Request id"))),
        this.tbody),
      this.sentinel, this.endNote);
    this.drawer = h("aside", { class: "drawer", id: "drawer", "aria-label": "Record details" });
    this.drawer.hidden = true;

    fill(this.container,
      h("div", { class: "page-head" }, h("div", {}, h("h1", {}, "Logs"),
        h("p", {}, "One record per model-API request: metadata only, never prompts or answers."))),
      this.form,
      h("div", { class: "toolbar" }, this.liveState, this.pauseButton, this.countNote,
        h("span", { class: "spacer" }), this.exportLink),
      this.notice, this.scroller, this.drawer);

    this.observer = new IntersectionObserver((entries) => {
      if (entries.some((entry) => entry.isIntersecting)) this.loadPage();
    }, { root: this.scroller, rootMargin: "0px 0px 200px 0px" });
    this.observer.observe(this.sentinel);
    document.addEventListener("keydown", this.onKey);
    this.reload();
  }

  stop() {
    this.stopped = true;
    this.generation += 1;
    this.observer?.disconnect();
    clearTimeout(this.retryTimer);
    this.closeSocket();
    document.removeEventListener("keydown", this.onKey);
  }

  // -- filters -------------------------------------------------------------------------------

  readForm() {
    const data = new FormData(this.form);
    return {
      model: (data.get("model") || "").trim(),
      backend_type: data.get("backend_type") || "",
      status: data.get("status") || "",
      shadow: data.get("shadow") || "",
      since: fromLocalInput(data.get("since")),
      until: fromLocalInput(data.get("until")),
      request_id: (data.get("request_id") || "").trim(),
    };
  }

  apply() {
    const filters = this.readForm();
    if (FILTERS.every((name) => filters[name] === this.filters[name])) return;
    this.filters = filters;
    const search = query(filters).toString();
    history.pushState(null, "", `/admin/logs${search ? `?${search}` : ""}`);
    this.reload();
  }

  pickRange(event) {
    event.stopPropagation(); // the form's change handler runs once the inputs are set
    const range = RANGES.find(([value]) => value === event.target.value);
    if (!range) return;
    const since = new Date(Date.now() - range[2] * 1000).toISOString();
    this.form.elements.since.value = toLocalInput(since);
    this.form.elements.until.value = "";
    event.target.value = "";
    this.apply();
  }

  clearFilters() {
    for (const element of this.form.elements) {
      if (element.name) element.value = "";
    }
    this.apply();
  }

  // -- pages ---------------------------------------------------------------------------------

  reload() {
    this.generation += 1;
    this.seen.clear();
    this.byId.clear();
    this.nextCursor = null;
    this.exhausted = false;
    this.trimmed = false;
    this.loading = false;
    this.pending = [];
    this.notice.hidden = true;
    this.closeDrawer();
    fill(this.tbody);
    this.scroller.scrollTop = 0;
    this.exportLink.href = `/admin/api/logs/export?${new URLSearchParams([["format", "jsonl"],
      ...query(this.filters)])}`;
    this.updatePauseButton();
    this.loadPage();
    this.connect();
  }

  async loadPage() {
    if (this.loading || this.exhausted || this.stopped) return;
    const generation = this.generation;
    this.loading = true;
    this.endNote.textContent = "Loading…";
    const params = query(this.filters);
    params.set("limit", String(PAGE_SIZE));
    if (this.nextCursor) params.set("cursor", this.nextCursor);
    try {
      const { data } = await api(`/logs?${params}`);
      if (generation !== this.generation) return;
      for (const record of data.records) {
        if (this.remember(record)) this.tbody.append(this.row(record));
      }
      this.nextCursor = data.next_cursor;
      this.exhausted = !data.next_cursor;
    } catch (error) {
      if (generation !== this.generation) return;
      this.exhausted = true;
      this.endNote.textContent = "";
      this.endNote.append(h("span", { class: "alert bad" }, problemText(error)));
      return;
    } finally {
      if (generation === this.generation) this.loading = false;
    }
    this.updateCount();
    // A page shorter than the view leaves the sentinel in sight, which the observer will not report
    // again: keep loading until the view is full or the log is exhausted.
    if (!this.exhausted && this.sentinelInView()) this.loadPage();
  }

  sentinelInView() {
    const box = this.scroller.getBoundingClientRect();
    return this.sentinel.getBoundingClientRect().top <= box.bottom + 200;
  }

  remember(record) {
    if (this.seen.has(record.id)) return false;
    this.seen.add(record.id);
    this.byId.set(String(record.id), record);
    return true;
  }

  updateCount() {
    const shown = this.seen.size;
    this.countNote.textContent = `${shown} record${shown === 1 ? "" : "s"} shown`;
    if (!shown) this.endNote.textContent = "No records match these filters.";
    else if (this.trimmed) this.endNote.textContent = `Only the newest ${MAX_ROWS} records stay on the page; reload it to page through older ones.`;
    else this.endNote.textContent = this.exhausted ? "That is every matching record." : "Scroll for more";
  }

  row(record, fresh = false) {
    const tokens = record.prompt_tokens === null && record.completion_tokens === null
      ? "" : `${record.prompt_tokens ?? "–"} / ${record.completion_tokens ?? "–"}`;
    const row = h("tr", {
      class: fresh ? "record fresh" : "record", tabindex: "0",
      dataset: { id: record.id, status: record.status, requestId: record.request_id },
      onclick: () => this.openDrawer(record.id),
      onkeydown: (event) => { if (event.key === "Enter") this.openDrawer(record.id); },
    },
    h("td", {}, h("time", { datetime: record.ts, title: record.ts }, formatTime(record.ts))),
    h("td", { class: "status" }, h("span", { class: `badge ${record.status}` }, record.status)),
    h("td", { class: "num" }, record.http_status),
    h("td", {}, record.model || h("span", { class: "muted" }, "–"),
      // A shadow copy (models.<m>.shadow) is not a client request: marked, never mistaken for one.
      record.shadow_of ? h("span", { class: "badge shadow", title: `shadow copy of ${record.shadow_of}` }, "shadow") : null),
    h("td", {}, record.backend || h("span", { class: "muted" }, "–"),
      record.backend_type ? h("span", { class: "muted" }, ` · ${record.backend_type}`) : null),
    h("td", {}, record.endpoint, record.stream ? h("span", { class: "muted" }, " · stream") : null),
    h("td", { class: "num" }, record.attempts),
    h("td", { class: "num" }, formatMs(record.latency_ms)),
    h("td", { class: "num" }, tokens),
    h("td", { class: "num", title: record.cost_usd == null ? "" : `${record.cost_usd} USD` }, formatUsd(record.cost_usd)),
    h("td", {}, record.client_key || h("span", { class: "muted" }, "–")),
    h("td", { class: "rid", title: record.request_id }, record.request_id));
    if (this.selected === String(record.id)) row.setAttribute("aria-selected", "true");
    return row;
  }

  // -- live ----------------------------------------------------------------------------------

  connect() {
    this.closeSocket();
    clearTimeout(this.retryTimer);
    if (this.stopped) return;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/admin/api/logs/live?${query(this.filters)}`);
    this.socket = socket;
    this.setLive("connecting", "Connecting…");
    socket.addEventListener("message", (event) => {
      if (this.socket === socket) this.onMessage(JSON.parse(event.data));
    });
    socket.addEventListener("close", () => {
      if (this.socket !== socket || this.stopped) return;
      this.socket = null;
      this.scheduleReconnect();
    });
  }

  closeSocket() {
    const socket = this.socket;
    this.socket = null;
    if (socket) socket.close();
  }

  onMessage(message) {
    if (message.type === "ready") {
      if (this.connectedOnce) this.catchUp(); // records written while the socket was down
      this.connectedOnce = true;
      this.retryDelay = RETRY_FIRST_MS;
      this.showLiveState();
    } else if (message.type === "record") {
      this.arrived(message.record);
    } else if (message.type === "lagged") {
      this.notice.textContent = `The live view fell behind and skipped ${message.dropped} record(s); `
        + "reload the page to see them.";
      this.notice.hidden = false;
    }
  }

  scheduleReconnect() {
    const delay = this.retryDelay * (0.8 + Math.random() * 0.4);
    this.retryDelay = Math.min(this.retryDelay * 2, RETRY_MAX_MS);
    this.setLive("reconnecting", `Reconnecting in ${Math.max(1, Math.round(delay / 1000))} s…`);
    this.retryTimer = setTimeout(async () => {
      // A refused socket may mean the session is over: asking the API signs the panel out then.
      try {
        await api("/session");
      } catch (error) {
        if (error instanceof ApiError && error.status === 401) return;
      }
      if (!this.stopped) this.connect();
    }, delay);
  }

  async catchUp() {
    const generation = this.generation;
    try {
      const params = query(this.filters);
      params.set("limit", String(PAGE_SIZE));
      const { data } = await api(`/logs?${params}`);
      if (generation !== this.generation) return;
      const newest = this.tbody.firstElementChild ? this.byId.get(this.tbody.firstElementChild.dataset.id) : null;
      const missed = data.records.filter((record) => !newest || isNewer(record, newest));
      for (const record of missed.reverse()) this.arrived(record);
    } catch (error) {
      // The next live record or a reload will show them.
    }
  }

  arrived(record) {
    if (this.seen.has(record.id)) return;
    if (this.paused) {
      if (!this.pending.some((r) => r.id === record.id)) this.pending.push(record);
      if (this.pending.length > MAX_ROWS) this.pending.shift();
      this.updatePauseButton();
      return;
    }
    this.remember(record);
    this.tbody.prepend(this.row(record, true));
    if (this.tbody.childElementCount > MAX_ROWS) this.trim();
    this.updateCount();
  }

  trim() {
    while (this.tbody.childElementCount > MAX_ROWS) {
      const last = this.tbody.lastElementChild;
      this.seen.delete(Number(last.dataset.id));
      this.byId.delete(last.dataset.id);
      last.remove();
    }
    // The cursor points past rows no longer shown: stop paging rather than skip records.
    this.exhausted = true;
    this.trimmed = true;
  }

  togglePause() {
    this.paused = !this.paused;
    if (!this.paused) {
      const pending = this.pending;
      this.pending = [];
      for (const record of pending) this.arrived(record);
    }
    this.updatePauseButton();
    if (this.socket && this.connectedOnce) this.showLiveState();
  }

  updatePauseButton() {
    const waiting = this.pending.length;
    this.pauseButton.textContent = this.paused ? `Resume${waiting ? ` (${waiting} new)` : ""}` : "Pause";
    this.pauseButton.setAttribute("aria-pressed", this.paused ? "true" : "false");
    if (this.paused && this.socket) this.showLiveState();
  }

  showLiveState() {
    if (this.paused) this.setLive("paused", "Paused: new records wait");
    else this.setLive("live", "Live");
  }

  setLive(state, text) {
    this.liveState.dataset.state = state;
    this.liveState.textContent = text;
  }

  // -- the drawer ----------------------------------------------------------------------------

  openDrawer(id) {
    const record = this.byId.get(String(id));
    if (!record) return;
    this.selected = String(id);
    for (const row of this.tbody.querySelectorAll('tr[aria-selected="true"]')) row.removeAttribute("aria-selected");
    this.tbody.querySelector(`tr[data-id="${CSS.escape(String(id))}"]`)?.setAttribute("aria-selected", "true");
    const field = (label, value) => [h("dt", {}, label), h("dd", {}, value ?? h("span", { class: "muted" }, "–"))];
    const projectUrl = this.context.config?.logfire_project_url;
    const links = [h("a", { class: "button", href: `/admin/logs?request_id=${encodeURIComponent(record.request_id)}`,
      "data-nav": true }, "Link to this record")];
    if (record.trace_id && projectUrl) {
      const url = `${projectUrl.replace(/\/+$/, "")}?q=${encodeURIComponent(`trace_id='${record.trace_id}'`)}`;
      links.push(h("a", { class: "button", id: "trace-link", href: url, target: "_blank", rel: "noopener noreferrer" },
        "Open trace in Logfire ↗"));
    }
    const path = record.failover_path || [];
    fill(this.drawer,
      h("header", {},
        h("span", { class: `badge ${record.status}` }, record.status),
        h("h2", {}, `${record.http_status} · ${record.model || record.endpoint}`),
        h("button", { type: "button", class: "quiet", id: "drawer-close", "aria-label": "Close",
          onclick: () => this.closeDrawer() }, "✕")),
      h("div", { class: "body" },
        h("h3", {}, "Request"),
        h("dl", { class: "fields" },
          field("Time", `${formatTime(record.ts)} (${record.ts})`),
          field("Request id", h("code", {}, record.request_id)),
          ...(record.shadow_of ? field("Shadow copy of", h("a", { href: `/admin/logs?request_id=${encodeURIComponent(record.shadow_of)}`,
            "data-nav": true }, record.shadow_of)) : []),
          field("Trace id", record.trace_id ? h("code", {}, record.trace_id) : null),
          field("Client key", record.client_key),
          field("Client address", record.client_address),
          field("Surface", record.surface),
          field("Endpoint", `${record.endpoint}${record.stream ? " (streamed)" : ""}`),
          field("Model", record.model),
          field("HTTP status", String(record.http_status)),
          field("Error type", record.error_type)),
        h("h3", {}, "Served by"),
        h("dl", { class: "fields" },
          field("Backend", record.backend),
          field("Backend type", record.backend_type),
          field("Upstream model", record.upstream_model),
          field("Attempts", String(record.attempts))),
        h("h3", {}, "Timing and usage"),
        h("dl", { class: "fields" },
          field("Latency", formatMs(record.latency_ms)),
          field("First token", record.ttft_ms === null ? null : formatMs(record.ttft_ms)),
          field("Prompt tokens", record.prompt_tokens === null ? null : String(record.prompt_tokens)),
          field("Completion tokens", record.completion_tokens === null ? null : String(record.completion_tokens)),
          // Subsets of the prompt tokens; null on records stored before the gateway kept them.
          field("Cached prompt tokens", record.cached_tokens == null ? null : String(record.cached_tokens)),
          field("Prompt tokens written to cache",
            record.cache_creation_tokens == null ? null : String(record.cache_creation_tokens)),
          // Null when a price is unknown (never a guess), or no usage was reported.
          field("Cost (USD)", record.cost_usd == null ? null : String(record.cost_usd))),
        h("h3", {}, "Failover path"),
        path.length
          ? h("table", { class: "path", id: "failover-path" },
            h("thead", {}, h("tr", {}, h("th", {}, "#"), h("th", {}, "Backend"), h("th", {}, "Model"),
              h("th", {}, "Outcome"), h("th", {}, "HTTP"), h("th", {}, "Took"))),
            h("tbody", {}, path.map((step, index) => h("tr", {},
              h("td", {}, index + 1), h("td", {}, step.backend), h("td", {}, step.model || "–"),
              h("td", {}, h("span", { class: `badge ${outcomeClass(step.outcome)}` }, step.outcome)),
              h("td", {}, step.status ?? "–"), h("td", {}, formatMs(step.duration_ms))))))
          : h("p", { class: "muted" }, "No backend was tried (the gateway answered by itself)."),
        h("h3", {}, "Config"),
        h("dl", { class: "fields" },
          field("Config version", record.config_version ? h("code", {}, record.config_version) : null),
          field("Instance", record.instance)),
        h("div", { class: "links" }, links),
        record.trace_id && !projectUrl
          ? h("p", { class: "muted" }, "Set telemetry.logfire.project_url in gateway.yaml to link traces to Logfire.")
          : null));
    this.drawer.hidden = false;
    this.drawer.querySelector("#drawer-close").focus();
  }

  closeDrawer() {
    if (!this.drawer || this.drawer.hidden) return;
    this.drawer.hidden = true;
    const row = this.selected && this.tbody.querySelector(`tr[data-id="${CSS.escape(this.selected)}"]`);
    this.selected = null;
    for (const selected of this.tbody.querySelectorAll('tr[aria-selected="true"]')) selected.removeAttribute("aria-selected");
    if (row) row.focus();
  }
}

/** A failover step's badge: answered, skipped (not tried), or failed. */
function outcomeClass(outcome) {
  if (outcome === "ok") return "ok";
  const skipped = ["disabled", "circuit_open", "quota", "incapable"];
  return skipped.includes(outcome) ? "" : "error";
}

function isNewer(record, than) {
  return record.ts > than.ts || (record.ts === than.ts && record.id > than.id);
}

function problemText(error) {
  if (error instanceof ApiError && error.status === 503) return `No records to show: ${error.message}`;
  return error instanceof ApiError ? error.message : String(error);
}
