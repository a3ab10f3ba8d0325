// SVG charts drawn by the panel itself (no library): stacked bars over time buckets, one colour per
// series. Built with createElementNS, never from markup strings, so series names stay text.

const NS = "http://www.w3.org/2000/svg";
const WIDTH = 420;
const HEIGHT = 200;
const PAD = { left: 44, right: 6, top: 10, bottom: 22 };
const MAX_X_LABELS = 6;

/** Colours for series, in rank order; the last one is for "other". */
export const PALETTE = ["#2f5bd3", "#e07a1f", "#1f9a6b", "#c43c8b", "#7a5cd6", "#c9a20c", "#2aa3c4", "#8a94a3"];

/** svg("rect", {x: 1}, children…) → an SVG element. */
export function svg(tag, attrs = {}, ...children) {
  const element = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "dataset") Object.assign(element.dataset, value);
    else element.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** Axis ticks from 0 past `max`: about four steps of a round size (1, 2, 5 × 10^n). */
function ticks(max) {
  if (!(max > 0)) return [0, 1];
  const rough = max / 4;
  const power = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 5, 10].map((m) => m * power).find((size) => size >= rough);
  const list = [];
  for (let i = 0; list.length === 0 || list.at(-1) < max; i += 1) list.push(Number((i * step).toPrecision(12)));
  return list;
}

/**
 * A stacked bar chart.
 * buckets: [{key, label}] along the x axis, in order.
 * series: [{name, label, color}] bottom to top.
 * value(seriesName, bucketKey) → a number (0 when absent).
 * format(number) → the axis and tooltip text.
 */
export function stackedBars({ id, title, buckets, series, value, format }) {
  const plotWidth = WIDTH - PAD.left - PAD.right;
  const plotHeight = HEIGHT - PAD.top - PAD.bottom;
  const totals = buckets.map((bucket) => series.reduce((sum, s) => sum + (value(s.name, bucket.key) || 0), 0));
  const marks = ticks(Math.max(0, ...totals));
  const top = marks.at(-1);
  const slot = plotWidth / Math.max(1, buckets.length);
  const barWidth = Math.max(1, Math.min(36, slot * 0.72));
  const y = (v) => PAD.top + plotHeight - (v / top) * plotHeight;

  const grid = marks.map((v) => svg("g", { class: "tick" },
    svg("line", { x1: PAD.left, x2: WIDTH - PAD.right, y1: y(v), y2: y(v) }),
    svg("text", { x: PAD.left - 5, y: y(v) + 4, "text-anchor": "end" }, format(v))));

  const every = Math.max(1, Math.ceil(buckets.length / MAX_X_LABELS));
  const labels = buckets.map((bucket, i) => (i % every === 0
    ? svg("text", { class: "x-label", x: PAD.left + slot * (i + 0.5), y: HEIGHT - 6, "text-anchor": "middle" },
      bucket.label)
    : null));

  const bars = [];
  buckets.forEach((bucket, i) => {
    let base = 0;
    const x = PAD.left + slot * i + (slot - barWidth) / 2;
    for (const s of series) {
      const v = value(s.name, bucket.key) || 0;
      if (v <= 0) continue;
      bars.push(svg("rect", {
        class: "bar", x: x.toFixed(2), y: y(base + v).toFixed(2), width: barWidth.toFixed(2),
        height: Math.max(0.5, y(base) - y(base + v)).toFixed(2), fill: s.color,
        dataset: { series: s.name, bucket: bucket.key, value: String(v) },
      }, svg("title", {}, `${s.label} · ${bucket.label}: ${format(v)}`)));
      base += v;
    }
  });

  return svg("svg", {
    id, class: "chart", viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-label": title,
    preserveAspectRatio: "xMidYMid meet", dataset: { buckets: String(buckets.length) },
  },
  svg("title", {}, title),
  svg("g", { class: "grid" }, grid),
  svg("line", { class: "axis", x1: PAD.left, x2: WIDTH - PAD.right, y1: y(0), y2: y(0) }),
  svg("g", { class: "bars" }, bars),
  svg("g", { class: "x-labels" }, labels));
}
