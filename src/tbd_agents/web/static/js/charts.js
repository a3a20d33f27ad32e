// Small SVG charts drawn here (no chart library: the dashboard ships no third-party code).
// Colours come from CSS classes (.series-0 …) because the Content-Security-Policy forbids inline
// styles; every chart is an image with a text summary for screen readers, followed by the same
// numbers as a table.

import { h } from "./dom.js";

const SVG_NS = "http://www.w3.org/2000/svg";
/** Distinct colours in app.css; series past the last share "Other". */
export const MAX_SERIES = 8;

/** Build an SVG element: attributes set as given, children appended (strings as text). */
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined && value !== false) el.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** The smallest "round" number (1, 2, 2.5, 5 × 10^n) at or above `value`. */
export function niceCeil(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value - 1e-12) return step * power;
  return 10 * power;
}

/**
 * Keep the `MAX_SERIES - 1` largest series (by their sum) and fold the rest into one "Other"
 * series, so a chart of 200 agents stays readable; the table under the chart keeps every group.
 * `series`: [{ key, label, values: [number per bucket] }].
 */
export function foldSeries(series) {
  if (series.length <= MAX_SERIES) return series;
  const sum = (s) => s.values.reduce((a, b) => a + b, 0);
  const sorted = [...series].sort((a, b) => sum(b) - sum(a));
  const kept = sorted.slice(0, MAX_SERIES - 1);
  const rest = sorted.slice(MAX_SERIES - 1);
  const other = rest[0].values.map((_, i) => rest.reduce((a, s) => a + s.values[i], 0));
  return [...kept, { key: "_other", label: `Other (${rest.length})`, values: other }];
}

/**
 * A stacked bar chart: one bar per bucket, one segment per series.
 *
 * `buckets`: labels of the x axis (ISO dates); `series`: [{ key, label, values }]; `format(n)`:
 * how a value is written; `title`: what is charted ("Cost per day"). Returns a <figure> holding
 * the SVG (role="img", aria-label = summary), a legend and a <details> with the data table.
 */
export function stackedBars({ buckets, series, format, title, valueName }) {
  const shown = foldSeries(series);
  const totals = buckets.map((_, i) => shown.reduce((a, s) => a + (s.values[i] || 0), 0));
  const max = niceCeil(Math.max(0, ...totals));
  const width = 800;
  const height = 260;
  const pad = { left: 72, right: 12, top: 12, bottom: 36 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const step = plotW / Math.max(buckets.length, 1);
  const barW = Math.max(1, Math.min(48, step * 0.72));
  const y = (v) => pad.top + plotH - (v / max) * plotH;

  const grid = [0, 0.25, 0.5, 0.75, 1].map((f) => s("g", { class: "chart-grid" },
    s("line", { x1: pad.left, x2: width - pad.right, y1: y(max * f), y2: y(max * f) }),
    s("text", { x: pad.left - 6, y: y(max * f) + 4, "text-anchor": "end" }, format(max * f))));
  const labelEvery = Math.max(1, Math.ceil(buckets.length / 10));
  const xLabels = buckets.map((b, i) => (i % labelEvery === 0
    ? s("text", { class: "chart-x", x: pad.left + step * (i + 0.5), y: height - pad.bottom + 18, "text-anchor": "middle" }, shortDate(b))
    : null));
  const bars = buckets.map((bucket, i) => {
    let base = 0;
    const x = pad.left + step * i + (step - barW) / 2;
    const segments = shown.map((serie, k) => {
      const value = serie.values[i] || 0;
      if (value <= 0) return null;
      const top = y(base + value);
      const rect = s("rect", {
        class: `bar series-${k}`, x: x.toFixed(2), y: top.toFixed(2), width: barW.toFixed(2),
        height: Math.max(0.5, y(base) - top).toFixed(2),
        "data-date": bucket, "data-series": serie.key, "data-value": value,
      }, s("title", {}, `${bucket} · ${serie.label}: ${format(value)}`));
      base += value;
      return rect;
    });
    return s("g", { class: "bar-group", "data-date": bucket, "data-total": totals[i] }, segments);
  });

  const summary = chartSummary({ buckets, totals, shown, format, title });
  const svg = s("svg", {
    class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": summary,
    preserveAspectRatio: "xMidYMid meet", focusable: "false",
  }, s("title", {}, summary), grid,
  s("line", { class: "chart-axis", x1: pad.left, x2: width - pad.right, y1: y(0), y2: y(0) }),
  xLabels, bars);
  const legend = shown.length > 1 || (shown[0] && shown[0].key !== "all")
    ? h("ul", { class: "chart-legend", "aria-hidden": "true" }, shown.map((serie, k) =>
      h("li", {}, h("span", { class: ["swatch", `series-${k}`] }), serie.label)))
    : null;
  return h("figure", { class: "chart-figure" },
    h("figcaption", {}, title),
    svg,
    legend,
    h("details", { class: "chart-data" },
      h("summary", {}, "Show the chart's numbers as a table"),
      dataTable({ buckets, shown, totals, format, title, valueName })));
}

/** "2026-11-07" → "11-07" (the year is in the page's range). */
function shortDate(iso) {
  return /^\d{4}-\d{2}-\d{2}$/.test(iso) ? iso.slice(5) : iso;
}

function chartSummary({ buckets, totals, shown, format, title }) {
  if (!buckets.length) return `${title}: no data.`;
  const sum = totals.reduce((a, b) => a + b, 0);
  let peak = 0;
  totals.forEach((t, i) => { if (t > totals[peak]) peak = i; });
  const groups = shown.length > 1 ? ` Split into ${shown.length} groups: ${shown.map((x) => x.label).join(", ")}.` : "";
  return `${title}, ${buckets[0]} to ${buckets[buckets.length - 1]}: ${format(sum)} in total; `
    + `highest ${buckets[peak]} with ${format(totals[peak])}.${groups} The numbers are in the table below.`;
}

function dataTable({ buckets, shown, totals, format, title, valueName }) {
  const multi = shown.length > 1;
  return h("div", { class: "table-wrap" }, h("table", { class: "records chart-table" },
    h("caption", {}, `${title} (${valueName})`),
    h("thead", {}, h("tr", {},
      h("th", { scope: "col" }, "Date"),
      multi ? shown.map((serie) => h("th", { scope: "col" }, serie.label)) : null,
      h("th", { scope: "col" }, multi ? "Total" : valueName))),
    h("tbody", {}, buckets.map((bucket, i) => h("tr", {},
      h("th", { scope: "row" }, bucket),
      multi ? shown.map((serie) => h("td", { class: "num" }, format(serie.values[i] || 0))) : null,
      h("td", { class: "num" }, format(totals[i])))))));
}
