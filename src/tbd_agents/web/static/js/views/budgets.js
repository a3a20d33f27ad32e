// Budgets on the Usage page: everyone sees the budgets that apply to them with how much of the
// current period is used; admins create, edit and delete them. A budget caps the cost (US
// dollars) or tokens of a user, agent, workflow or schedule per UTC day or calendar month; runs
// that would go past it stop with `budget_exceeded`.

import { ApiError, del, get, listAll, post, put } from "../api.js";
import { confirmDialog, dialog, h, notify, replace } from "../dom.js";
import { buildForm } from "../forms.js";
import { count, money } from "../numbers.js";

const SCOPES = [["user", "User"], ["agent", "Agent"], ["workflow", "Workflow"], ["schedule", "Schedule"]];
const TARGET_LISTS = { agent: "/api/agents", workflow: "/api/workflows", schedule: "/api/scheduled-agents" };

const formatOf = (budget) => (budget.metric === "tokens" ? count : money);
const limitText = (b) => `${b.metric === "tokens" ? `${count(b.limit)} tokens` : money(b.limit)} per ${b.period}`;

const nameOf = (record) => record.name || record.title || record.id;
const options = (scope) => async () => (await listAll(TARGET_LISTS[scope])).map((r) => ({ value: r.id, label: nameOf(r) }));

/** id → name of the agents, workflows and schedules the budgets name (one list call per kind). */
async function targetNames(budgets) {
  const names = new Map();
  const scopes = new Set(budgets.map((b) => b.scope).filter((s) => TARGET_LISTS[s]));
  await Promise.all([...scopes].map(async (scope) => {
    try {
      for (const record of await listAll(TARGET_LISTS[scope])) names.set(`${scope}:${record.id}`, nameOf(record));
    } catch (error) {
      // A name is a nicety: without the list the id is shown instead.
      console.warn(`could not list ${scope}s for budget names: ${error.message}`);
    }
  }));
  return (b) => (b.scope === "user" ? b.target_id : names.get(`${b.scope}:${b.target_id}`) || `${b.target_id} (not visible or deleted)`);
}

function progress(budget) {
  const st = budget.status || { used: 0, ratio: 0, state: "ok" };
  const format = formatOf(budget);
  const pct = Math.round((Number(st.ratio) || 0) * 100);
  const text = `${format(st.used)} of ${format(budget.limit)} (${pct} %)`;
  return h("div", { class: "budget-progress" },
    h("progress", { class: `state-${st.state}`, max: "1", value: String(Math.min(Number(st.ratio) || 0, 1)), "aria-label": `Used ${text}` }),
    h("span", { class: "small" }, text));
}

const periodText = (st) => (st.period_start === st.period_end ? `on ${st.period_start}` : `${st.period_start} – ${st.period_end}`);
const stateBadge = (state) => h("span", { class: ["badge", `budget-${state}`] }, state);

function budgetFields(isNew) {
  const target = (scope, kind, extra = {}) => ({
    name: `target_${scope}`, label: SCOPES.find(([v]) => v === scope)[1], kind, required: true, virtual: true,
    showIf: (v) => v.scope === scope, ...extra,
  });
  return [
    { name: "name", label: "Name", kind: "text", required: true },
    { name: "scope", label: "Applies to", kind: "select", options: SCOPES.map(([value, label]) => ({ value, label })), default: "agent",
      help: isNew ? "What the budget caps: one user's calls, or one agent's, workflow's or schedule's runs." : "" },
    target("agent", "select", { options: options("agent") }),
    target("workflow", "select", { options: options("workflow") }),
    target("schedule", "select", { options: options("schedule") }),
    target("user", "text", { help: "The user's identity, as shown at the top of the dashboard when they sign in." }),
    { name: "metric", label: "Measure", kind: "select", default: "cost_usd",
      options: [{ value: "cost_usd", label: "Cost (US dollars)" }, { value: "tokens", label: "Tokens" }] },
    { name: "period", label: "Period", kind: "select", default: "day",
      options: [{ value: "day", label: "Day (UTC)" }, { value: "month", label: "Calendar month (UTC)" }] },
    { name: "limit", label: "Limit", kind: "number", required: true, min: 0, help: "Runs stop once the period's usage reaches it." },
    { name: "warn_ratio", label: "Warn at", kind: "number", default: 0.8, min: 0, max: 1, step: 0.05,
      help: "Share of the limit (0 to 1) at which a budget_warning event is sent, once per period." },
    { name: "enabled", label: "Enabled", kind: "checkbox", default: true },
  ];
}

/**
 * The budgets API names a refused field in `details.field` (not in 422 `loc` paths): as a Map
 * field → messages the form shows next to that field (target_id: the scope's target field).
 */
function placed(error, scope) {
  const field = error instanceof ApiError && error.details ? error.details.field : null;
  if (!field) return error;
  return new Map([[field === "target_id" ? `target_${scope}` : field, [error.message]]]);
}

/** The form of a budget (new when `budget` is null), in a dialog; resolves true when saved. */
function editBudget(budget) {
  const record = budget ? { ...budget, [`target_${budget.scope}`]: budget.target_id } : null;
  return dialog(budget ? `Edit budget “${budget.name}”` : "New budget", (close) => {
    const form = buildForm({
      fields: budgetFields(!budget),
      record,
      submitLabel: budget ? "Save budget" : "Create budget",
      onCancel: () => close(false),
      onSubmit: async (v) => {
        const body = { name: v.name, scope: v.scope, target_id: v[`target_${v.scope}`], metric: v.metric,
          period: v.period, limit: v.limit, warn_ratio: v.warn_ratio, enabled: v.enabled };
        try {
          if (budget) await put(`/api/budgets/${encodeURIComponent(budget.id)}`, body);
          else await post("/api/budgets", body);
        } catch (error) {
          throw placed(error, v.scope);
        }
        close(true);
      },
    });
    return form.element;
  });
}

async function deleteBudget(budget) {
  const ok = await confirmDialog("Delete budget", h("p", {}, `Delete the budget “${budget.name}”? Runs it applies to are no longer capped by it.`), "Delete", true);
  if (!ok) return false;
  await del(`/api/budgets/${encodeURIComponent(budget.id)}`);
  return true;
}

function table(budgets, targetOf, isAdmin, after) {
  const act = (fn, message) => async () => {
    try {
      if (await fn()) { notify(message, "success"); await after(); }
    } catch (error) {
      notify(error.message, "error");
    }
  };
  return h("div", { class: "table-wrap" }, h("table", { class: "records budgets" },
    h("caption", { class: "visually-hidden" }, "Budgets"),
    h("thead", {}, h("tr", {}, ["Budget", "Applies to", "Limit", "Used this period", "State", isAdmin ? "" : null]
      .filter((t) => t !== null).map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, budgets.map((b) => h("tr", { dataset: { budgetId: b.id, state: b.status ? b.status.state : "" } },
      h("th", { scope: "row" }, b.name, b.enabled ? null : h("span", { class: "badge status-disabled" }, "disabled")),
      h("td", {}, `${SCOPES.find(([v]) => v === b.scope)?.[1] || b.scope}: ${targetOf(b)}`),
      h("td", {}, limitText(b)),
      h("td", {}, progress(b), b.status ? h("span", { class: "muted small" }, periodText(b.status)) : null),
      h("td", {}, stateBadge(b.status ? b.status.state : "ok")),
      isAdmin ? h("td", { class: "row-actions" },
        h("button", { type: "button", class: "small", "aria-label": `Edit budget ${b.name}`, onClick: act(() => editBudget(b), "Budget saved.") }, "Edit"),
        h("button", { type: "button", class: "small danger", "aria-label": `Delete budget ${b.name}`, onClick: act(() => deleteBudget(b), "Budget deleted.") }, "Delete")) : null)))));
}

/** The Budgets section of the Usage page (loads and refreshes itself). */
export async function budgetsPanel(ctx) {
  const isAdmin = ctx.me.scope === "admin";
  const body = h("div", { class: "budgets-body", "aria-live": "polite" });
  const section = h("section", { class: "card budgets-panel", "aria-labelledby": "budgets-title" },
    h("div", { class: "page-head" },
      h("h2", { id: "budgets-title" }, "Budgets"),
      isAdmin ? h("button", { type: "button", class: "primary", onClick: async () => {
        if (await editBudget(null)) { notify("Budget created.", "success"); await load(); }
      } }, "New budget") : null),
    body);
  const load = async () => {
    body.setAttribute("aria-busy", "true");
    try {
      const budgets = await get("/api/budgets");
      if (!ctx.isCurrent()) return;
      if (!budgets.length) {
        replace(body, h("p", { class: "muted" }, isAdmin
          ? "No budgets yet. A budget caps the cost or tokens of a user, agent, workflow or schedule per day or month."
          : "No budget applies to you."));
      } else {
        replace(body, table(budgets, await targetNames(budgets), isAdmin, load));
      }
      body.dataset.state = "ready";
    } catch (error) {
      replace(body, h("p", { class: "error", role: "alert" }, error.message));
      body.dataset.state = "error";
    } finally {
      body.removeAttribute("aria-busy");
    }
  };
  await load();
  return section;
}
