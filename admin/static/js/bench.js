// "Test performance" on the status page: a tile per backend that runs a short benchmark series
// (POST /admin/api/backends/<name>/bench), shows its progress with a Cancel button while it runs
// (polled every second), then the result per concurrency level (requests/s, latency and TTFT
// p50/p95, errors) and the backend's earlier runs from the audit log. The tiles live outside the
// status page's refreshed part, so its 5 s refresh does not reset them.

import { api } from "./api.js";
import { fill, formatMs, formatTime, h } from "./dom.js";

const POLL_MS = 1000;
const CANCEL_TRIES = 10;

/** The area holding the tiles; `open(name, start)` shows a backend's tile (and starts a run). */
export function benchArea() {
  const element = h("div", { class: "cards", id: "bench-area" });
  const tiles = new Map();
  let stopped = false;

  function open(name, start = false) {
    let tile = tiles.get(name);
    if (!tile) {
      tile = makeTile(name);
      tiles.set(name, tile);
      element.append(tile.element);
    }
    tile.element.scrollIntoView({ block: "nearest" });
    if (start) tile.start();
    else tile.load();
  }

  function makeTile(name) {
    const tile = { timer: null, view: null, message: "" };
    const levels = h("input", { type: "text", class: "bench-levels", value: "1, 4, 8", size: 8,
      "aria-label": "Concurrency levels", title: "Concurrency levels, comma-separated (up to 5, each 1 to 32)" });
    const seconds = h("input", { type: "number", class: "bench-seconds", value: "5", min: "0.5", max: "20", step: "0.5",
      "aria-label": "Seconds per level", title: "Seconds per level (the series takes at most 60 s)" });
    const stream = h("input", { type: "checkbox", class: "bench-stream", checked: true, "aria-label": "Stream" });
    const content = h("div", { class: "bench-content" }, h("p", { class: "muted" }, "Loading…"));
    tile.element = h("section", { class: "card bench-tile", id: `bench-${name}`, dataset: { backend: name } },
      h("h2", {}, "Performance: ", h("code", {}, name)),
      h("p", { class: "bench-form" },
        h("label", {}, "Levels ", levels), " ",
        h("label", {}, "s/level ", seconds), " ",
        h("label", {}, stream, " stream"), " ",
        h("button", { type: "button", class: "bench-start", onclick: () => tile.start() }, "Test performance"),
        " ",
        h("button", { type: "button", class: "bench-close", title: "Hide this tile", onclick: close }, "×")),
      content);

    function close() {
      clearTimeout(tile.timer);
      tiles.delete(name);
      tile.element.remove();
    }

    tile.start = async () => {
      const concurrency = levels.value.split(/[\s,]+/).filter(Boolean).map(Number);
      const body = { concurrency, seconds_per_level: Number(seconds.value), stream: stream.checked };
      tile.message = "";
      try {
        await api(`/backends/${encodeURIComponent(name)}/bench`, { method: "POST", body });
      } catch (error) {
        tile.message = error.message;
      }
      tile.load();
    };

    tile.cancel = async (id) => {
      // With several worker processes a cancel may reach one that does not run it (409
      // "other-worker"): sent again, a few times, until it reaches the run's.
      for (let attempt = 0; attempt < CANCEL_TRIES; attempt += 1) {
        try {
          await api(`/backends/${encodeURIComponent(name)}/bench/${encodeURIComponent(id)}`, { method: "DELETE" });
          break;
        } catch (error) {
          if (error.problem.reason === "other-worker" && attempt + 1 < CANCEL_TRIES) continue;
          tile.message = error.message;
          break;
        }
      }
      tile.load();
    };

    tile.load = async () => {
      clearTimeout(tile.timer);
      let view;
      try {
        view = (await api(`/backends/${encodeURIComponent(name)}/bench`)).data;
      } catch (error) {
        fill(content, h("p", { class: "alert bad" }, error.message));
        return;
      }
      if (stopped || !tiles.has(name)) return;
      tile.view = view;
      fill(content, renderTile(view, tile));
      // A run on this backend in another worker process shows as `active` only: polled too.
      const elsewhere = view.active && view.active.backend === name;
      if (view.running || elsewhere) tile.timer = setTimeout(tile.load, POLL_MS);
    };
    return tile;
  }

  /** Show the tile of a run already under way (started before this page was opened, or by another
   * admin). Any backend's answer names it: `active`. */
  async function resume(anyBackend) {
    try {
      const view = (await api(`/backends/${encodeURIComponent(anyBackend)}/bench`)).data;
      if (!stopped && view.active && !tiles.has(view.active.backend)) open(view.active.backend);
    } catch (error) {
      // Nothing to resume; the buttons still work.
    }
  }

  return {
    element,
    open,
    resume,
    stop() {
      stopped = true;
      for (const tile of tiles.values()) clearTimeout(tile.timer);
    },
  };
}

function renderTile(view, tile) {
  const running = view.running;
  const latest = running ? null : (view.latest || view.history[0] || null);
  const earlier = view.history.filter((run) => !latest || run.id !== latest.id);
  return [
    tile.message ? h("p", { class: "alert bad bench-error", role: "alert" }, tile.message) : null,
    running ? progress(running, tile) : null,
    !running && view.active
      ? h("p", { class: "muted bench-elsewhere" },
        `${view.active.admin || "An admin"} is benchmarking ${view.active.backend}`,
        view.active.pid ? ` (worker process ${view.active.pid})` : "", ".",
        view.active.backend === view.backend
          ? [" ", h("button", { type: "button", class: "bench-cancel", onclick: () => tile.cancel(view.active.id) }, "Cancel")]
          : null)
      : null,
    latest ? result(latest) : (running ? null : h("p", { class: "muted" }, "No runs yet.")),
    view.history_error ? h("p", { class: "muted bench-history-error" }, `History: ${view.history_error}`) : null,
    earlier.length ? historyTable(earlier) : null,
  ];
}

function progress(run, tile) {
  const p = run.progress || { level: 0, levels: 0, level_elapsed_s: 0, seconds_per_level: 0, requests: 0, elapsed_s: 0, total_s: 1 };
  const bar = h("i");
  bar.style.width = `${Math.min(100, (100 * p.elapsed_s) / p.total_s)}%`; // CSSOM: the CSP forbids style attributes
  return h("div", { class: "bench-progress" },
    h("p", {}, h("span", { class: "badge running" }, "running"), " ",
      `Level ${p.level} of ${p.levels}`, p.concurrency ? ` (concurrency ${p.concurrency})` : "",
      `: ${p.level_elapsed_s.toFixed(1)} of ${p.seconds_per_level} s, ${p.requests} requests. `,
      h("span", { class: "meter bench-meter" }, bar), " ",
      h("button", { type: "button", class: "bench-cancel", onclick: () => tile.cancel(run.id) }, "Cancel")),
    run.levels.length ? levelTable(run.levels) : null);
}

function result(run) {
  const stored = run.stored === false
    ? h("span", { class: "bench-not-stored" }, ` Not stored: ${run.store_error}`)
    : "";
  return h("div", { class: "bench-result" },
    h("p", {}, h("span", { class: `badge ${run.status === "done" ? "ok" : "timeout"}` }, run.status), " ",
      `${formatTime(run.started_at)}, model `, h("code", {}, run.model || "–"),
      ", config ", h("code", {}, run.config_version || "–"),
      run.admin ? `, by ${run.admin}` : "", run.error ? `: ${run.error}` : "",
      h("span", { class: "muted" }, stored)),
    run.levels.length ? levelTable(run.levels) : h("p", { class: "muted" }, "No figures: it ended before any request."));
}

function levelTable(levels) {
  return h("div", { class: "bench-scroll" }, h("table", { class: "grid bench-levels-table" },
    h("thead", {}, h("tr", {},
      h("th", { class: "num" }, "Concurrency"), h("th", { class: "num" }, "Req/s"),
      h("th", { class: "num" }, "p50"), h("th", { class: "num" }, "p95"),
      h("th", { class: "num" }, "TTFT p50"), h("th", { class: "num" }, "TTFT p95"),
      h("th", { class: "num" }, "Requests"), h("th", { class: "num" }, "Errors"))),
    h("tbody", {}, levels.map((level) => h("tr", { dataset: { concurrency: level.concurrency } },
      h("td", { class: "num" }, `${level.concurrency}${level.partial ? " (partial)" : ""}`),
      h("td", { class: "num rps" }, level.requests_per_s.toFixed(1)),
      h("td", { class: "num" }, formatMs(level.latency_ms.p50) || "–"),
      h("td", { class: "num" }, formatMs(level.latency_ms.p95) || "–"),
      h("td", { class: "num" }, level.ttft_ms ? formatMs(level.ttft_ms.p50) : "–"),
      h("td", { class: "num" }, level.ttft_ms ? formatMs(level.ttft_ms.p95) : "–"),
      h("td", { class: "num" }, level.requests),
      h("td", { class: "num", title: Object.entries(level.error_kinds || {}).map(([k, v]) => `${k} ${v}`).join(", ") },
        level.errors))))));
}

function historyTable(runs) {
  return h("details", { class: "bench-history" },
    h("summary", {}, `Earlier runs (${runs.length})`),
    h("div", { class: "bench-scroll" }, h("table", { class: "grid" },
      h("thead", {}, h("tr", {}, h("th", {}, "When"), h("th", {}, "Status"), h("th", {}, "Req/s by concurrency"),
        h("th", {}, "p50 by concurrency"), h("th", {}, "Config"))),
      h("tbody", {}, runs.map((run) => h("tr", { dataset: { run: run.id } },
        h("td", {}, formatTime(run.started_at)),
        h("td", {}, run.status),
        h("td", {}, run.levels.map((l) => `${l.concurrency}: ${l.requests_per_s.toFixed(1)}`).join(" · ")),
        h("td", {}, run.levels.map((l) => `${l.concurrency}: ${formatMs(l.latency_ms.p50) || "–"}`).join(" · ")),
        h("td", {}, h("code", {}, run.config_version || "–"))))))));
}
