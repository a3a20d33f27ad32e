// Usage: tokens and cost from the usage ledger over a date range, grouped by agent, model, user
// (admins), workflow, schedule or provider; a chart per day, totals, a table of groups, a CSV
// export; then the budgets that apply (admins create, edit and delete them).
//
// The choices live in the address (#/usage?range=30&group_by=agent&metric=cost), so a reload or a
// shared link shows the same view; changing them refreshes the figures in place (replaceState:
// the focus stays on the control being used).

import { ApiError, buildUrl, fetchFile, get, hasEndpoint } from "../api.js";
import { MAX_SERIES, stackedBars } from "../charts.js";
import { download, h, notify, replace, uid } from "../dom.js";
import { count, money } from "../numbers.js";
import { budgetsPanel } from "./budgets.js";

const RANGES = [["7", "Last 7 days"], ["30", "Last 30 days"], ["90", "Last 90 days"], ["custom", "Custom dates"]];
const GROUPS = [["", "Nothing (totals only)"], ["agent", "Agent"], ["model", "Model"], ["user", "User"],
  ["workflow", "Workflow"], ["schedule", "Schedule"], ["provider", "Provider"]];
const DAY_MS = 86_400_000;

const METRICS = {
  cost: { label: "Cost", field: "cost_usd", format: money, valueName: "US dollars" },
  tokens: { label: "Tokens", field: "total_tokens", format: count, valueName: "tokens" },
};

const isoDay = (ms) => new Date(ms).toISOString().slice(0, 10);
const validDay = (text) => /^\d{4}-\d{2}-\d{2}$/.test(text || "") && !Number.isNaN(Date.parse(`${text}T00:00:00Z`));

/** The view's state from the address, with defaults (last 30 days, by agent, cost). */
export function readState(query, isAdmin) {
  const range = RANGES.some(([v]) => v === query.get("range")) ? query.get("range") : "30";
  let groupBy = query.has("group_by") ? query.get("group_by") : "agent";
  if (!GROUPS.some(([v]) => v === groupBy) || (groupBy === "user" && !isAdmin)) groupBy = "agent";
  const metric = METRICS[query.get("metric")] ? query.get("metric") : "cost";
  const today = Date.now();
  let start = isoDay(today - 29 * DAY_MS);
  let end = isoDay(today);
  if (range === "custom") {
    if (validDay(query.get("start"))) start = query.get("start");
    if (validDay(query.get("end"))) end = query.get("end");
  } else {
    start = isoDay(today - (Number(range) - 1) * DAY_MS);
  }
  return { range, start, end, groupBy, metric, level: query.get("level") === "calls" ? "calls" : "daily" };
}

function apiQuery(state) {
  return { start: state.start, end: state.end, group_by: state.groupBy || undefined };
}

function hashOf(state) {
  const q = new URLSearchParams({ range: state.range, group_by: state.groupBy, metric: state.metric });
  if (state.range === "custom") { q.set("start", state.start); q.set("end", state.end); }
  if (state.level !== "daily") q.set("level", state.level);
  return `#/usage?${q}`;
}

function totalsStrip(totals) {
  const item = (label, value, name) => h("div", { class: "total", dataset: { total: name } },
    h("dt", {}, label), h("dd", {}, value));
  return h("dl", { class: "totals", "aria-label": "Totals for the period" },
    item("Cost", money(totals.cost_usd), "cost_usd"),
    item("Tokens", count(totals.total_tokens), "total_tokens"),
    item("Input tokens", count(totals.input_tokens), "input_tokens"),
    item("Output tokens", count(totals.output_tokens), "output_tokens"),
    item("Model calls", count(totals.calls), "calls"));
}

function groupsTable(summary, state) {
  const metric = METRICS[state.metric];
  const whole = Number(summary.totals[metric.field]) || 0;
  const groupName = GROUPS.find(([v]) => v === state.groupBy)[1];
  const share = (g) => (whole > 0 ? `${((Number(g[metric.field]) / whole) * 100).toFixed(1)} %` : "—");
  return h("div", { class: "table-wrap" }, h("table", { class: "records usage-groups" },
    h("caption", {}, `By ${groupName.toLowerCase()}, ${summary.start} to ${summary.end}`),
    h("thead", {}, h("tr", {}, [groupName, "Cost", "Tokens", "Input tokens", "Output tokens", "Model calls", `Share of ${metric.label.toLowerCase()}`]
      .map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, summary.groups.map((g) => h("tr", { dataset: { key: g.key } },
      h("th", { scope: "row" }, g.label || g.key),
      h("td", { class: "num" }, money(g.cost_usd)),
      h("td", { class: "num" }, count(g.total_tokens)),
      h("td", { class: "num" }, count(g.input_tokens)),
      h("td", { class: "num" }, count(g.output_tokens)),
      h("td", { class: "num" }, count(g.calls)),
      h("td", { class: "num" }, share(g)))))));
}

function chart(series, state) {
  const metric = METRICS[state.metric];
  const title = `${metric.label} per day`;
  return stackedBars({
    title,
    valueName: metric.valueName,
    format: metric.format,
    buckets: series.buckets,
    series: series.series.map((serie) => ({
      key: serie.key,
      label: serie.key === "all" ? metric.label
        : serie.key === "_other" ? `Other (${serie.folded})` : serie.label || serie.key,
      values: serie.points.map((p) => Number(p[metric.field]) || 0),
    })),
  });
}

function exportLink(state) {
  const query = { ...apiQuery(state), level: state.level };
  const link = h("a", { class: "button", href: buildUrl("/api/usage/export.csv", query), download: "" }, "Export CSV");
  link.addEventListener("click", async (event) => {
    event.preventDefault();
    link.setAttribute("aria-disabled", "true");
    try {
      const file = await fetchFile("/api/usage/export.csv", query);
      download(file.name || `usage-${state.start}-${state.end}.csv`, file.text, "text/csv");
      notify("CSV exported.", "success");
    } catch (error) {
      notify(`The export failed: ${error.message}`, "error");
    } finally {
      link.removeAttribute("aria-disabled");
    }
  });
  return link;
}

function controls(state, isAdmin, onChange) {
  const ids = { range: uid("range"), start: uid("start"), end: uid("end"), group: uid("group"), level: uid("level") };
  const range = h("select", { id: ids.range }, RANGES.map(([v, label]) => h("option", { value: v, selected: v === state.range }, label)));
  const start = h("input", { id: ids.start, type: "date", value: state.start, max: state.end });
  const end = h("input", { id: ids.end, type: "date", value: state.end, min: state.start });
  const custom = h("div", { class: "field-group", hidden: state.range !== "custom" },
    h("div", { class: "field inline" }, h("label", { for: ids.start, class: "label" }, "From"), start),
    h("div", { class: "field inline" }, h("label", { for: ids.end, class: "label" }, "To"), end));
  const group = h("select", { id: ids.group }, GROUPS.filter(([v]) => v !== "user" || isAdmin)
    .map(([v, label]) => h("option", { value: v, selected: v === state.groupBy }, label)));
  const metricName = uid("metric");
  const metric = h("fieldset", { class: "segmented" }, h("legend", { class: "label" }, "Show"),
    Object.entries(METRICS).map(([v, m]) => {
      const id = uid("metric");
      return h("span", {}, h("input", { type: "radio", name: metricName, id, value: v, checked: v === state.metric }),
        h("label", { for: id }, m.label));
    }));
  const level = h("select", { id: ids.level },
    h("option", { value: "daily", selected: state.level === "daily" }, "daily totals"),
    h("option", { value: "calls", selected: state.level === "calls" }, "every model call"));

  const read = () => {
    const next = { ...state, range: range.value, groupBy: group.value, level: level.value,
      metric: metric.querySelector("input:checked").value };
    custom.hidden = next.range !== "custom";
    if (next.range === "custom") {
      if (!validDay(start.value) || !validDay(end.value)) return null; // wait for both dates
      next.start = start.value;
      next.end = end.value;
      start.max = end.value;
      end.min = start.value;
    } else {
      next.start = isoDay(Date.now() - (Number(next.range) - 1) * DAY_MS);
      next.end = isoDay(Date.now());
      start.value = next.start;
      end.value = next.end;
    }
    return next;
  };
  const form = h("form", { class: "filters usage-controls", "aria-label": "Usage filters" },
    h("div", { class: "field inline" }, h("label", { for: ids.range, class: "label" }, "Period"), range),
    custom,
    h("div", { class: "field inline" }, h("label", { for: ids.group, class: "label" }, "Group by"), group),
    metric,
    h("div", { class: "field inline" }, h("label", { for: ids.level, class: "label" }, "CSV holds"), level));
  form.addEventListener("submit", (e) => e.preventDefault());
  form.addEventListener("change", () => {
    const next = read();
    if (next) onChange(next);
  });
  return form;
}

/** `#/usage`. */
export async function renderUsage(ctx) {
  const isAdmin = ctx.me.scope === "admin";
  if (!(await hasEndpoint("get", "/api/usage/summary"))) {
    replace(ctx.main, h("h1", {}, "Usage"),
      h("p", { class: "notice notice-info", role: "status" }, "This server has no usage API (it is older than the usage ledger)."));
    return;
  }
  let state = readState(ctx.query, isAdmin);
  const results = h("section", { class: "usage-results", "aria-live": "polite", "aria-labelledby": "usage-results-title" });
  const actions = h("div", { class: "actions usage-export" });
  let seq = 0;

  const load = async () => {
    const mine = ++seq;
    results.setAttribute("aria-busy", "true");
    delete results.dataset.state;
    replace(actions, exportLink(state));
    try {
      const [summary, series] = await Promise.all([
        get("/api/usage/summary", apiQuery(state)),
        // The server keeps the largest groups by the charted metric and sums the rest into
        // "_other": as many series as the chart has colours; the table below lists every group.
        get("/api/usage/timeseries", { ...apiQuery(state), interval: "day",
          limit: MAX_SERIES - 1, metric: METRICS[state.metric].field }),
      ]);
      if (mine !== seq || !ctx.isCurrent()) return;
      const heading = h("h2", { id: "usage-results-title" }, `${summary.start} to ${summary.end}`);
      if (!summary.totals.calls) {
        replace(results, heading, h("div", { class: "empty card" },
          h("p", {}, "No model calls in this period."),
          h("p", { class: "muted" }, "Usage is recorded for every model call of a run or a chat reply; choose a longer period, or run an agent.")));
      } else {
        replace(results, heading, totalsStrip(summary.totals), chart(series, state),
          summary.groups.length ? groupsTable(summary, state) : h("p", { class: "muted" }, "Choose “Group by” to see a breakdown."));
      }
      results.dataset.state = "ready";
    } catch (error) {
      if (mine !== seq || !ctx.isCurrent()) return;
      const message = error instanceof ApiError ? error.message : String(error.message || error);
      replace(results, h("h2", { id: "usage-results-title" }, "Usage"), h("p", { class: "error", role: "alert" }, message));
      results.dataset.state = "error";
    } finally {
      if (mine === seq) results.removeAttribute("aria-busy");
    }
  };

  const onChange = (next) => {
    state = next;
    window.history.replaceState(null, "", hashOf(state));
    ctx.main.dataset.rendered = hashOf(state);
    load();
  };

  replace(ctx.main,
    h("h1", {}, "Usage"),
    h("p", { class: "muted" }, isAdmin
      ? "Tokens and cost of every model call, for everyone. Days are UTC calendar days."
      : "Tokens and cost of your model calls. Days are UTC calendar days."),
    controls(state, isAdmin, onChange),
    actions,
    results);
  await load();
  if (!ctx.isCurrent()) return;
  ctx.main.append(await budgetsPanel(ctx));
}
