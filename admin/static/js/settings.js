// The settings page: the timeout tiers (their own form, timeouts.js), failover and the circuit
// breaker, the telemetry switches that apply at once, and the audit log's retention and database
// (read-only). Each section saves on its own: "Review change" shows the diff to gateway.yaml before
// anything is written (edit.js's ChangeReview), and with write-back off it gives the patch to commit.

import { api } from "./api.js";
import { ago, fill, formatTime, h } from "./dom.js";
import { loadTree, nodeAt, sourceText } from "./edit.js";
import { loadSchema } from "./form.js";
import { SettingSection, valueAt } from "./setting-section.js";
import { TimeoutsForm } from "./timeouts.js";

const FAILOVER = {
  id: "failover",
  title: "Failover",
  intro: "When a failed attempt moves on to the next target of a model's chain, and when a failing backend is "
    + "skipped for a while. Applies at once, to the requests that start after the save.",
  fields: [
    { path: ["failover", "retry_on"], label: "Move to the next target on", kind: "checklist", live: true },
    { path: ["failover", "max_attempts"], label: "Most attempts per request", live: true },
    { path: ["failover", "circuit_breaker", "enabled"], label: "Circuit breaker", live: true },
    { path: ["failover", "circuit_breaker", "failure_threshold"], label: "Failures that open the circuit", live: true },
    { path: ["failover", "circuit_breaker", "cooldown_seconds"], label: "Cooldown (seconds)", live: true },
  ],
};

const TELEMETRY = {
  id: "telemetry",
  title: "Telemetry",
  intro: "Metrics, log lines and traces. Each switch here applies at once, without a restart.",
  fields: [
    { path: ["telemetry", "prometheus", "enabled"], label: "Prometheus metrics", live: true },
    { path: ["telemetry", "logging", "level"], label: "Log level", live: true },
    { path: ["telemetry", "logging", "format"], label: "Log format", live: true },
    {
      path: ["telemetry", "logfire", "enabled"], label: "Traces (Logfire / OpenTelemetry)", live: true,
      note: "Spans are sent only when the gateway's environment names a destination (LOGFIRE_TOKEN or "
        + "OTEL_EXPORTER_OTLP_ENDPOINT). The environment is read at start: setting one needs a restart.",
    },
    { path: ["telemetry", "logfire", "service_name"], label: "Service name of the spans", live: true },
    { path: ["telemetry", "logfire", "environment"], label: "Environment of the spans", live: true },
  ],
};

export function mount(container, context) {
  const page = new SettingsPage(container, context);
  page.load();
  return () => page.stop();
}

class SettingsPage {
  constructor(container, context) {
    this.container = container;
    this.context = context;
    this.tree = null;
    this.schema = null;
    this.sections = [];
    this.reloading = null;
    this.stopped = false;
  }

  stop() {
    this.stopped = true;
    this.timeouts?.stop();
  }

  async load() {
    fill(this.container, h("p", { class: "loading" }, "Loading the settings…"));
    try {
      [this.tree, this.schema] = await Promise.all([loadTree(), loadSchema()]);
    } catch (error) {
      if (!this.stopped) fill(this.container, h("p", { class: "alert bad" }, error.message || String(error)));
      return;
    }
    if (this.stopped) return;
    this.render();
  }

  render() {
    const writeBack = this.tree.writeBack;
    const timeoutsArea = h("section", { class: "card settings-section", id: "timeouts-section",
      "aria-labelledby": "timeouts-title" });
    this.sections = [FAILOVER, TELEMETRY].map((spec) => new SettingSection(spec, this));
    this.telemetryStatus = h("ul", { class: "status-list", id: "telemetry-status", "aria-live": "polite" });
    this.sections[1].element.querySelector("form").before(this.telemetryStatus);
    this.audit = h("section", { class: "card settings-section", id: "audit-settings", "aria-labelledby": "audit-title" });
    fill(this.container,
      h("div", { class: "page-head" }, h("div", {}, h("h1", {}, "Settings"),
        h("p", {}, writeBack
          ? "Each section saves on its own: review the change to gateway.yaml, then save it. The file is "
            + "edited in place (comments and ${VAR}s stay as they are) and applied with a hot reload."
          : "Each section shows the change to gateway.yaml as a patch to commit."))),
      writeBack ? null : h("p", { class: "alert info", id: "write-back-off" },
        "Write-back is off (admin.write_back: false): the gateway does not edit gateway.yaml. ",
        "Saving shows the patch to commit instead."),
      h("nav", { class: "section-links", "aria-label": "Sections" },
        [["timeouts-section", "Timeouts"], ["failover", "Failover"], ["telemetry", "Telemetry"],
          ["audit-settings", "Audit log"]].map(([id, text]) => h("a", { href: `#${id}`,
          onclick: (event) => { event.preventDefault(); document.getElementById(id)?.scrollIntoView(); } }, text))),
      h("div", { class: "settings-sections" }, timeoutsArea, this.sections.map((s) => s.element), this.audit));
    this.timeouts = new TimeoutsForm(timeoutsArea, {
      saving: () => this.reviewing(null),
      saved: () => this.saved(null),
    });
    this.timeouts.load();
    for (const section of this.sections) section.render();
    this.renderAudit(null);
    this.loadStatus();
  }

  /** The loaded config tree (what the sections build their patches on). */
  state() {
    return this.tree;
  }

  async reload() {
    this.reloading = loadTree().then((tree) => { this.tree = tree; return tree; });
    try {
      return await this.reloading;
    } finally {
      this.reloading = null;
    }
  }

  /** Once a reload under way (after a save) is done: a review builds on the file as saved. */
  async settled() {
    if (this.reloading) await this.reloading.catch(() => null);
  }

  /** A section is about to show a review: the others' reviews and results go (one at a time). */
  reviewing(section) {
    for (const other of this.sections) if (other !== section) other.clearReview();
    if (section) this.timeouts.clearResult();
  }

  /** After a save: the new file's tree and version for every section (`section` shows its fields'
   * new values and sources), then the live state. */
  async saved(section) {
    if (section) this.timeouts.refreshVersion();
    await this.reload();
    section?.render();
    await this.loadStatus(true);
  }

  /** What runs now: tracing (on, where spans go), metrics, the audit log's last purge. `settle`: a save
   * just changed telemetry.logfire, which tracing applies a moment after the reload. */
  async loadStatus(settle = false) {
    let config = null;
    for (let attempt = 0; attempt < (settle ? 20 : 1); attempt += 1) {
      config = await api("/config").then((r) => r.data, () => null);
      if (this.stopped || !config || config.tracing?.settled !== false) break;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    const stats = await api("/logs/stats").then((r) => r.data, () => null);
    if (this.stopped) return;
    this.renderTelemetryStatus(config);
    this.renderAudit(stats);
  }

  renderTelemetryStatus(config) {
    const settings = this.tree.config.telemetry || {};
    const metrics = settings.prometheus || {};
    const tracing = config?.tracing;
    let traces;
    if (!tracing) traces = "unknown";
    else if (tracing.on) traces = [h("strong", {}, "on"), ": spans go to ", tracing.destination || "the Logfire instance given"];
    else if (settings.logfire?.enabled && !tracing.destination) {
      traces = [h("strong", {}, "off"), ": nothing receives spans (no LOGFIRE_TOKEN or OTEL_EXPORTER_OTLP_ENDPOINT in ",
        "the gateway's environment; setting one needs a restart)"];
    } else traces = [h("strong", {}, "off"), settings.logfire?.enabled ? "" : " (telemetry.logfire.enabled is false)"];
    fill(this.telemetryStatus,
      h("li", { id: "metrics-state" }, "Metrics: ", metrics.enabled
        ? [h("strong", {}, "on"), ", served at ", h("code", {}, metrics.path || "/metrics"),
          metrics.require_admin_key ? " (admin key required)" : ""]
        : [h("strong", {}, "off"), ": ", h("code", {}, metrics.path || "/metrics"), " answers 404"]),
      h("li", { id: "tracing-state" }, "Traces: ", traces),
      h("li", {}, "Log lines: ", h("strong", {}, settings.logging?.level || "info"), ", ",
        settings.logging?.format || "auto", " format, on standard error"));
  }

  renderAudit(stats) {
    const audit = this.tree.config.audit || {};
    const node = (key) => nodeAt(this.tree.tree, "audit", key);
    const purge = stats?.last_purge;
    const rows = [
      ["Audit log", audit.enabled === false ? "off (audit.enabled is false)" : "on", node("enabled")],
      ["Retention", `${audit.retention_days} days: older records are deleted at start and daily`, node("retention_days")],
      ["Database", h("code", { id: "audit-database" }, shownUrl(valueAt(this.tree.config, ["audit", "database_url"]))),
        node("database_url")],
      ["Last purge", audit.enabled === false ? "none (the audit log is off)"
        : purge ? [formatTime(purge.at), ` (${ago(purge.at)}), ${purge.deleted} records deleted, by this worker`]
          : stats ? "not yet by this worker" : "unknown", null],
    ];
    fill(this.audit,
      h("h2", { id: "audit-title" }, "Audit log"),
      h("p", { class: "muted" }, "Read-only here: edit ", h("code", {}, "audit.*"),
        " in gateway.yaml (a change applies on reload)."),
      h("dl", { class: "fields", id: "audit-fields" }, rows.map(([name, value, source]) => [
        h("dt", {}, name),
        h("dd", {}, value, source ? h("span", { class: "source" }, " · ", sourceText(source)) : null)])));
  }
}

/** A database URL as it may be shown: a password only as its `${VAR}` reference (the tree never holds
 * a resolved one; a literal one, which the loader refuses, is masked all the same). */
export function shownUrl(url) {
  if (url === null || url === undefined) return "hidden (a literal secret, which the gateway refuses)";
  return String(url).replace(/(\/\/[^:/@]*:)([^@]*)@/, (match, user, password) => (
    /^\$\{[^}]+\}$/.test(password) ? match : `${user}***@`));
}
