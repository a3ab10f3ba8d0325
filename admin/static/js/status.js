// The status page: the config version being served and how it was applied, the last rejected
// reload with its file:line:col errors, each backend's circuit and recent error rate, and the
// reload history, the response cache (hit rate, savings, a button that clears it), each model's
// split (groups, canary against the stable targets, shadow) with an alert per canary rollback (its
// patch when it was not written), and a warning when a local model computes on mlx's slow bundled
// BLAS. Refreshed every few seconds while open.

import { api, ApiError } from "./api.js";
import { benchArea } from "./bench.js";
import { ago, diffBlock, fill, formatTime, h } from "./dom.js";

const REFRESH_MS = 5000;
const WINDOW_MINUTES = 15;
const SHADOW_MINUTES = 60;

export function mount(container, context) {
  let stopped = false;
  let timer = null;
  const body = h("div", { id: "status" }, h("p", { class: "muted" }, "Loading…"));
  const updated = h("span", { class: "muted", id: "updated" });
  const bench = benchArea(); // outside `body`, so the refresh keeps the benchmark tiles
  let resumed = false;
  fill(container,
    h("div", { class: "page-head" },
      h("div", {}, h("h1", {}, "Status"), h("p", {}, "What this gateway is serving, and how its backends are doing.")),
      h("span", { class: "spacer" }), updated,
      h("button", { type: "button", onclick: () => refresh() }, "Refresh")),
    body,
    bench.element);

  async function refresh() {
    clearTimeout(timer);
    const [config, backends, outcomes, audit, cache, routing, shadows] = await Promise.all([
      api("/config").then((r) => r.data),
      api("/backends").then((r) => r.data),
      api(`/logs/backends?minutes=${WINDOW_MINUTES}`).then((r) => r.data, (error) => error),
      api("/logs/stats").then((r) => r.data, () => null),
      api("/cache").then((r) => r.data, () => null),
      api("/routing").then((r) => r.data, () => null),
      api(`/logs/shadow?minutes=${SHADOW_MINUTES}`).then((r) => r.data.models, () => []),
    ]).catch((error) => [error]);
    if (stopped) return;
    if (config instanceof Error) {
      fill(body, h("p", { class: "alert bad" }, config.message));
    } else {
      fill(body, render(config, backends, outcomes, audit, cache, routing, shadows, refresh, bench.open));
      if (!resumed && backends.backends.length) bench.resume(backends.backends[0].name);
      resumed = true;
      updated.textContent = `Updated ${formatTime(new Date().toISOString())}`;
    }
    timer = setTimeout(refresh, REFRESH_MS);
  }

  refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
    bench.stop();
  };
}

function render(config, backends, outcomes, audit, cache, routing, shadows, refresh, openBench) {
  const rejected = config.last_error || config.history.find((event) => event.outcome === "rejected");
  const slow = backends.backends.filter((backend) => backend.local && backend.local.blas_warning);
  return [
    slow.length
      ? h("div", { class: "alert warn", id: "blas-warning", role: "alert" },
        h("p", {}, h("strong", {}, `Slow local model${slow.length > 1 ? "s" : ""}: `),
          slow.map((backend) => backend.name).join(", ")),
        h("p", {}, slow[0].local.blas_warning))
      : null,
    routing ? routing.rollbacks.map(rollbackAlert) : null,
    h("div", { class: "cards" },
      h("section", { class: "card", id: "config-card" },
        h("h2", {}, "Config"),
        h("dl", { class: "fields" },
          h("dt", {}, "Version"), h("dd", {}, h("code", { id: "config-version" }, config.version)),
          h("dt", {}, "Applied"), h("dd", {}, `${formatTime(config.loaded_at)} (${ago(config.loaded_at)})`),
          h("dt", {}, "How"), h("dd", { id: "config-source" }, describeSource(config.source)),
          h("dt", {}, "File"), h("dd", {}, h("code", {}, config.path)),
          h("dt", {}, "Write-back"), h("dd", {}, config.write_back ? "on: the panel edits the file" : "off: edits give a patch to commit"),
          h("dt", {}, "Worker"), h("dd", {}, `pid ${config.worker_pid}`))),
      h("section", { class: "card", id: "rejected-card" },
        h("h2", {}, "Last rejected reload"),
        rejected ? rejectedReload(rejected, Boolean(config.last_error), config.version)
          : h("p", { class: "muted" }, "None since this worker started.")),
      cache ? cacheCard(cache, refresh) : null),
    h("h2", {}, "Backends"),
    h("div", { class: "panel-table" }, backendTable(backends.backends, outcomes, openBench)),
    audit && audit.enabled
      ? h("p", { class: "muted" }, `Audit log: ${audit.written} written, ${audit.buffered} buffered, `
        + `${audit.spilled} spilled, ${audit.lost} lost; database ${audit.db_up ? "up" : "down"}.`)
      : null,
    routing ? [
      h("h2", {}, "Routing"),
      h("p", { class: "muted" }, `How each model's requests are split in this worker (pid ${routing.worker}); `
        + "every worker balances and judges the requests it serves."),
      h("div", { class: "panel-table" }, routingTable(routing.models, shadows)),
    ] : null,
    h("h2", {}, "Reload history"),
    h("div", { class: "panel-table" }, historyTable(config.history)),
  ];
}

// What the last Clear did, kept across the refreshes that re-render the card.
let lastCleared = "";

function cacheCard(cache, refresh) {
  const used = cache.models.filter((model) => model.mode !== "off").map((model) => model.name);
  const counts = cache.requests;
  const rate = cache.hit_rate === null ? "–" : `${Math.round(cache.hit_rate * 1000) / 10}%`;
  const store = cache.store;
  const note = h("span", { class: "muted", id: "cache-cleared" }, lastCleared);
  async function clear() {
    if (!window.confirm("Drop every stored answer?")) return;
    try {
      const { data } = await api("/cache/clear", { method: "POST", body: {} });
      lastCleared = ` ${data.cleared} entries dropped.`;
      refresh();
    } catch (error) {
      note.textContent = ` ${error.message}`;
    }
  }
  return h("section", { class: "card", id: "cache-card" },
    h("h2", {}, "Response cache"),
    h("dl", { class: "fields" },
      h("dt", {}, "Models"), h("dd", {}, used.length ? used.join(", ") : "none (off for every model)"),
      h("dt", {}, "Store"), h("dd", {}, store.store === "memory"
        ? `memory: ${store.entries} entries, ${Math.round(store.bytes / 1024)} KiB`
        : `redis: ${store.up ? "up" : "down"}, ${store.errors} errors`),
      h("dt", {}, "Hit rate"), h("dd", { id: "cache-hit-rate" }, `${rate} (${counts.hit} hits, ${counts.miss} misses, `
        + `${counts.bypass} bypassed, ${counts.off} not cacheable)`),
      h("dt", {}, "Saved"), h("dd", { id: "cache-saved" }, `${cache.saved_tokens} tokens, $${cache.saved_usd.toFixed(4)}`),
      h("dt", {}, "Since"), h("dd", {}, `${formatTime(cache.since)}, worker pid ${cache.worker_pid}`)),
    h("p", {}, h("button", { type: "button", id: "cache-clear", onclick: clear }, "Clear cache"), note));
}

function describeSource(source) {
  return {
    startup: "loaded at startup",
    file: "file watch (the file was saved)",
    signal: "SIGHUP",
    api: "admin API",
    ui: "admin panel (settings page)",
  }[source] || source;
}

function rejectedReload(event, current, serving) {
  return h("div", { id: "rejected-reload" },
    h("p", {}, `${formatTime(event.at)} (${ago(event.at)}), ${describeSource(event.source)}: `,
      current
        ? h("strong", {}, `the file on disk is not applied; version ${serving} is still serving.`)
        : "a later reload succeeded."),
    h("ul", { class: "error-list" }, (event.errors || []).map((error) => h("li", {}, error.text))));
}

function backendTable(backends, outcomes, openBench) {
  const recent = outcomes instanceof Error ? null : outcomes.backends;
  const unavailable = outcomes instanceof ApiError ? outcomes.message : "";
  return h("table", { class: "grid", id: "backends" },
    h("thead", {}, h("tr", {},
      h("th", {}, "Backend"), h("th", {}, "Type"), h("th", {}, "Enabled"), h("th", {}, "Circuit"),
      h("th", {}, `Errors, last ${WINDOW_MINUTES} min`), h("th", {}, "Attempts by outcome"), h("th", {}, "Performance"))),
    h("tbody", {}, backends.map((backend) => {
      const circuit = backend.circuit;
      const stats = recent ? recent[backend.name] : null;
      return h("tr", { dataset: { backend: backend.name } },
        h("td", {}, h("strong", {}, backend.name)),
        h("td", {}, backend.type),
        h("td", {}, backend.enabled ? "yes" : h("span", { class: "muted", title: backend.disabled_reason || "" },
          `no: ${backend.disabled_reason || "disabled"}`)),
        h("td", { class: "circuit" }, h("span", { class: `badge ${circuit.state}` }, circuit.state.replace("_", "-")),
          circuit.state === "open" && circuit.retry_in_seconds > 0
            ? h("span", { class: "muted" }, ` retry in ${Math.ceil(circuit.retry_in_seconds)} s`) : null,
          circuit.consecutive_failures
            ? h("span", { class: "muted" }, ` · ${circuit.consecutive_failures} failed in a row`) : null),
        h("td", { class: "error-rate" }, errorRate(stats, recent, unavailable)),
        h("td", { class: "muted" }, stats ? Object.entries(stats.outcomes).map(([k, v]) => `${k} ${v}`).join(", ") : ""),
        h("td", {}, h("button", { type: "button", class: "bench-open", disabled: !backend.enabled,
          onclick: () => openBench(backend.name, true) }, "Test performance")));
    })));
}

function errorRate(stats, recent, unavailable) {
  if (!recent) return h("span", { class: "muted", title: unavailable }, "no data");
  if (!stats || !stats.attempts) return h("span", { class: "muted" }, "no requests");
  const percent = Math.round(stats.error_rate * 1000) / 10;
  const bar = h("i");
  bar.style.width = `${Math.min(100, percent)}%`; // through CSSOM: the page's CSP forbids style attributes
  return [h("span", { class: "meter" }, bar), `${percent}% (${stats.failed} of ${stats.attempts})`];
}

function historyTable(history) {
  return h("table", { class: "grid", id: "history" },
    h("thead", {}, h("tr", {},
      h("th", {}, "When"), h("th", {}, "How"), h("th", {}, "Outcome"), h("th", {}, "Version"),
      h("th", { class: "num" }, "Took"), h("th", {}, "Rebuilt backends / errors"))),
    h("tbody", {}, history.map((event) => h("tr", {},
      h("td", {}, h("time", { datetime: event.at, title: event.at }, formatTime(event.at))),
      h("td", {}, describeSource(event.source)),
      h("td", {}, h("span", { class: `badge ${event.outcome === "rejected" ? "rejected-reload" : event.outcome}` },
        event.outcome)),
      h("td", {}, event.version ? h("code", {}, event.version) : "–"),
      h("td", { class: "num" }, `${Math.round(event.duration_ms)} ms`),
      h("td", {}, event.errors.length
        ? h("span", { class: "muted" }, event.errors.map((e) => e.text).join("; "))
        : event.rebuilt_backends.join(", "))))));
}

// A target as "backend", or "backend (upstream model)" when it sends another name than the public one.
function target(t, name) {
  return t.model && t.model !== name ? `${t.backend} (${t.model})` : t.backend;
}

function percent(value) {
  return `${Math.round(value * 1000) / 10}%`;
}

function side(name, numbers) {
  const p95 = numbers.p95_ms === null ? "–" : `${Math.round(numbers.p95_ms)} ms`;
  return `${name}: ${numbers.requests} requests, ${numbers.errors} failed (${percent(numbers.error_rate)}), p95 ${p95}`;
}

function routingTable(models, shadows) {
  return h("table", { class: "grid", id: "routing" },
    h("thead", {}, h("tr", {}, h("th", {}, "Model"), h("th", {}, "Chain (→ on failure)"), h("th", {}, "Canary"),
      h("th", {}, "Shadow"))),
    h("tbody", {}, models.map((model) => h("tr", { dataset: { model: model.model } },
      h("td", {}, h("strong", {}, model.model)),
      h("td", { class: "split" }, model.steps.map((step, index) => [
        index ? " → " : "",
        step.members
          ? h("span", { class: "group" }, `${step.strategy}: `, step.members.map((m) =>
            `${target(m, model.model)}${m.share !== undefined ? ` ${percent(m.share)}` : ""} (${m.served} served)`).join(", "))
          : target(step, model.model),
      ])),
      h("td", { class: "canary" }, model.canary ? canaryCell(model.canary, model.model) : h("span", { class: "muted" }, "none")),
      h("td", { class: "shadow" }, model.shadow
        ? shadowCell(model.shadow, shadows.find((s) => s.model === model.model
          && s.target.backend === model.shadow.target.backend && s.target.model === model.shadow.target.model), model.model)
        : h("span", { class: "muted" }, "none"))))));
}

function ms(value) {
  return value === null ? "–" : `${Math.round(value)} ms`;
}

function usd(value) {
  return value === null ? "–" : `$${value.toFixed(4)}`;
}

// The shadow target, and its copies of the last hour against the requests they copied (client → copy).
function shadowCell(shadow, stats, name) {
  const head = h("div", {}, `${target(shadow.target, name)}, ${percent(shadow.sample_rate)} sampled`);
  if (!stats) return [head, h("div", { class: "muted" }, `no copies in the last ${SHADOW_MINUTES} min`)];
  const [p, c] = [stats.primary, stats.shadow];
  return [head,
    h("div", { class: "muted shadow-pairs" }, `${stats.pairs} copies in the last ${SHADOW_MINUTES} min (client → copy):`),
    h("div", { class: "muted" }, `failed ${percent(p.error_rate)} → ${percent(c.error_rate)}`),
    h("div", { class: "muted shadow-latency" }, `mean latency ${ms(p.mean_latency_ms)} → ${ms(c.mean_latency_ms)}, `
      + `copy slower ${stats.shadow_slower} of ${stats.pairs}`),
    h("div", { class: "muted" }, `output tokens ${p.output_tokens} → ${c.output_tokens}, cost ${usd(p.cost_usd)} → ${usd(c.cost_usd)}`)];
}

function canaryCell(canary, name) {
  const rolledBack = canary.rolled_back !== null;
  return [
    h("div", {}, `${target(canary.target, name)} at `, h("strong", { class: "canary-weight" }, `${canary.effective_weight}%`),
      canary.effective_weight !== canary.weight ? ` (configured ${canary.weight}%)` : "",
      rolledBack ? [" ", h("span", { class: "badge open" }, "rolled back")] : null),
    h("div", { class: "muted" }, side("canary", canary.window.canary)),
    h("div", { class: "muted" }, side("stable", canary.window.stable)),
    canary.rollback
      ? h("div", { class: "muted" }, "rolls back at ", [
        canary.rollback.error_rate !== null ? `+${percent(canary.rollback.error_rate)} errors` : null,
        canary.rollback.p95_latency_ms !== null ? `+${canary.rollback.p95_latency_ms} ms p95` : null,
      ].filter(Boolean).join(" or "), ` over ${canary.rollback.window_seconds} s, from ${canary.rollback.min_requests} requests`)
      : h("div", { class: "muted" }, "no automatic rollback"),
  ];
}

function rollbackAlert(rollback) {
  const head = h("p", {}, h("strong", {}, `Canary of ${rollback.model} rolled back`),
    ` at ${formatTime(rollback.at)} (${ago(rollback.at)}): ${rollback.reason}.`);
  if (rollback.written) {
    return h("div", { class: "alert info rollback", role: "status" }, head,
      h("p", {}, "Written into the config file (weight 0, with a comment saying why)."));
  }
  if (rollback.written === false) {
    return h("div", { class: "alert warn rollback", role: "alert" }, head,
      h("p", {}, rollback.patch
        ? "Only in memory: the config file was not written (admin.write_back is off). Commit this patch to keep it:"
        : `Only in memory: writing it into the config file failed${rollback.error ? `: ${rollback.error}` : ""}.`),
      rollback.patch ? diffBlock(rollback.patch, "patch") : null);
  }
  return h("div", { class: "alert warn rollback", role: "alert" }, head, h("p", {}, "Writing it into the config file…"));
}
