// Run history (task executions): status, trigger, when, duration, tokens and cost. The runs page
// (`#/runs`) lists every run with filters kept in the address; `#/runs/<id>` shows one run.

import { ApiError, del, get, getPage, listAll, post } from "../api.js";
import { confirmDialog, duration, h, notify, replace, uid, when } from "../dom.js";

// Usage of runs made here carries both key sets; runs moved from the existing TBD Agents only
// its UsageStats fields (total_*).
export function tokensOf(usage) {
  if (!usage) return "—";
  const inp = usage.input_tokens ?? usage.total_input_tokens ?? 0;
  const out = usage.output_tokens ?? usage.total_output_tokens ?? 0;
  return inp || out ? `${inp} in / ${out} out` : "—";
}

export function costOf(usage) {
  const cost = usage ? usage.cost_usd ?? usage.total_cost : 0;
  return cost ? `$${Number(cost).toFixed(6)}` : "—";
}

async function deleteRun(task, after) {
  const ok = await confirmDialog("Delete run", h("p", {}, `Delete the run of ${when(task.created_at)} and its events?`), "Delete", true);
  if (!ok) return;
  await del(`/api/tasks/${encodeURIComponent(task.id)}`);
  notify("Run deleted.", "success");
  await after();
}

function statusBadge(status) {
  return h("span", { class: ["badge", `status-${status}`] }, status.replace(/_/g, " "));
}

function clip(text, n = 80) {
  return text.length > n ? `${text.slice(0, n - 3)}…` : text;
}

function row(task, onOpen, onDelete, opts) {
  const started = when(task.started_at || task.created_at);
  const open = opts.linkRuns
    ? h("a", { href: `#/runs/${encodeURIComponent(task.id)}` }, started)
    : onOpen ? h("button", { type: "button", class: "link", onClick: () => onOpen(task) }, started) : started;
  const named = (map, id) => (id ? (map && map.get(id)) || id : "—");
  return h("tr", { dataset: { taskId: task.id, status: task.status } },
    h("td", { dataset: { label: "Started" } }, open),
    h("td", { dataset: { label: "Status" } }, statusBadge(task.status)),
    opts.names ? h("td", { dataset: { label: "Agent" } }, named(opts.names.agents, task.agent_id)) : null,
    opts.names ? h("td", { dataset: { label: "Workflow" } }, named(opts.names.workflows, task.workflow_id)) : null,
    h("td", { dataset: { label: "Trigger" } }, task.trigger),
    h("td", { dataset: { label: "Duration" } }, duration(task.started_at, task.finished_at)),
    h("td", { dataset: { label: "Tokens" } }, tokensOf(task.usage)),
    h("td", { dataset: { label: "Cost" } }, costOf(task.usage)),
    h("td", { class: "prompt-cell", dataset: { label: "Prompt" } }, clip(task.prompt || ""),
      task.error ? h("div", { class: "error small" }, clip(task.error)) : null),
    h("td", { class: "row-actions" }, h("button", { type: "button", class: "small danger", "aria-label": "Delete this run", onClick: () => onDelete(task) }, "Delete")));
}

/**
 * Fill `box` with the runs matching `query` (newest first), with a "Load more" button.
 * `onOpen(task)`, when given, makes each run's time a button. `opts.names` ({agents, workflows}:
 * Maps id → name) adds those columns; `opts.linkRuns` links each time to `#/runs/<id>`.
 * Returns a refresh function.
 */
export async function runsTable(box, query, emptyText, onOpen, opts = {}) {
  let cursor = null;
  let items = [];
  const load = async (more) => {
    const page = await getPage("/api/tasks", { ...query, limit: 20, cursor: more ? cursor : null });
    items = more ? items.concat(page.items) : page.items;
    cursor = page.next_cursor;
    draw();
  };
  const draw = () => {
    if (!items.length) { replace(box, h("p", { class: "muted" }, emptyText)); return; }
    const moreButton = cursor ? h("button", { type: "button", onClick: () => load(true) }, "Load more runs") : null;
    const heads = ["Started", "Status", ...(opts.names ? ["Agent", "Workflow"] : []), "Trigger", "Duration", "Tokens", "Cost", "Prompt", ""];
    replace(box, h("div", { class: "table-wrap" }, h("table", { class: "records runs" },
      h("caption", { class: "visually-hidden" }, "Runs"),
      h("thead", {}, h("tr", {}, heads.map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, items.map((t) => row(t, onOpen, (task) => deleteRun(task, () => load(false)), opts))))),
      h("p", { class: "muted small", role: "status" }, `${items.length} run${items.length === 1 ? "" : "s"} shown${cursor ? " (more below)" : ""}.`),
      moreButton);
  };
  await load(false);
  return () => load(false);
}

// --- the runs page -------------------------------------------------------------------------

const STATUSES = ["pending", "running", "awaiting_approval", "completed", "failed", "halted", "max_turns_reached"];
const TRIGGERS = ["manual", "api", "schedule", "webhook"];
/** Filters of the runs page: address parameter → list parameter of GET /api/tasks. */
const FILTERS = ["status", "agent_id", "workflow_id", "scheduled_agent_id", "trigger", "from", "to", "q"];

/** `YYYY-MM-DD` (a local day) → the ISO instant it starts at; `next` → the day after's start. */
function dayStart(day, next = false) {
  const [y, m, d] = day.split("-").map(Number);
  if (!y || !m || !d) return null;
  return new Date(y, m - 1, d + (next ? 1 : 0)).toISOString();
}

/** The GET /api/tasks query for the page's address parameters. */
export function runsQuery(params) {
  const query = {};
  for (const name of ["status", "agent_id", "workflow_id", "scheduled_agent_id", "trigger", "q"]) {
    const value = (params.get(name) || "").trim();
    if (value) query[name] = value;
  }
  if (params.get("from")) query.created_after = dayStart(params.get("from"));
  if (params.get("to")) query.created_before = dayStart(params.get("to"), true);
  return query;
}

function select(prefix, name, label, value, options) {
  const id = `${prefix}-${name}`;
  return h("div", { class: "field" }, h("label", { for: id, class: "label" }, label),
    h("select", { id, name },
      h("option", { value: "" }, "Any"),
      options.map(([v, text]) => h("option", { value: v, selected: v === value }, text))));
}

/** `#/runs` and `#/runs/<id>`. */
export async function renderRuns(ctx, runId) {
  if (runId) { await renderRun(ctx, runId); return; }
  const params = ctx.query;
  const [agents, workflows, schedules] = await Promise.all([
    listAll("/api/agents"), listAll("/api/workflows"), listAll("/api/scheduled-agents"),
  ]);
  if (!ctx.isCurrent()) return;
  const names = {
    agents: new Map(agents.map((a) => [a.id, a.name])),
    workflows: new Map(workflows.map((w) => [w.id, w.title || w.name || w.id])),
  };
  const p = uid("runs");
  const v = (name) => params.get(name) || "";
  const from = h("input", { id: `${p}-from`, name: "from", type: "date", value: v("from") });
  const to = h("input", { id: `${p}-to`, name: "to", type: "date", value: v("to") });
  const q = h("input", { id: `${p}-q`, name: "q", type: "search", value: v("q"), maxlength: 200, placeholder: "words in the prompt or error" });
  const err = h("p", { class: "field-error", role: "alert", hidden: true });
  const form = h("form", { class: "card runs-filters", "aria-label": "Filter runs" },
    h("div", { class: "filter-grid" },
      select(p, "status", "Status", v("status"), STATUSES.map((s) => [s, s.replace(/_/g, " ")])),
      select(p, "agent_id", "Agent", v("agent_id"), agents.map((a) => [a.id, a.name])),
      select(p, "workflow_id", "Workflow", v("workflow_id"), workflows.map((w) => [w.id, names.workflows.get(w.id)])),
      select(p, "trigger", "Trigger", v("trigger"), TRIGGERS.map((t) => [t, t])),
      select(p, "scheduled_agent_id", "Schedule", v("scheduled_agent_id"), schedules.map((s) => [s.id, s.name || s.id])),
      h("div", { class: "field" }, h("label", { for: from.id, class: "label" }, "From (day)"), from),
      h("div", { class: "field" }, h("label", { for: to.id, class: "label" }, "To (day, included)"), to),
      h("div", { class: "field" }, h("label", { for: q.id, class: "label" }, "Search"), q)),
    err,
    h("div", { class: "actions" },
      h("button", { type: "submit", class: "primary" }, "Apply filters"),
      h("a", { href: "#/runs", class: "button" }, "Clear filters")));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    err.hidden = true;
    if (from.value && to.value && from.value > to.value) {
      err.textContent = "“From” is after “To”: pick a start day on or before the end day.";
      err.hidden = false;
      from.focus();
      return;
    }
    const out = new URLSearchParams();
    for (const name of FILTERS) {
      const control = form.elements.namedItem(name);
      const value = control ? control.value.trim() : "";
      if (value) out.set(name, value);
    }
    const hash = out.toString() ? `#/runs?${out}` : "#/runs";
    if (window.location.hash === hash) window.dispatchEvent(new HashChangeEvent("hashchange"));
    else window.location.hash = hash;
  });
  const box = h("div", { class: "runs-list", "aria-live": "polite" });
  const active = FILTERS.filter((n) => v(n)).length;
  replace(ctx.main, h("h1", {}, "Runs"),
    h("p", { class: "muted" }, "Every run of your workflows and schedules, newest first. The filters are kept in the address: copy it to share this view."),
    form, box);
  await runsTable(box, runsQuery(params), active ? "No run matches these filters." : "No runs yet: run a workflow to see it here.", null, { names, linkRuns: true });
}

function fact(term, value) {
  return [h("dt", {}, term), h("dd", {}, value)];
}

function logEntry(entry) {
  if (!entry || typeof entry !== "object") return h("li", {}, String(entry));
  const extra = entry.tool_input !== undefined || entry.tool_output !== undefined
    ? h("details", {}, h("summary", {}, "Tool input and output"),
      h("pre", {}, JSON.stringify({ input: entry.tool_input, output: entry.tool_output }, null, 2)))
    : null;
  return h("li", { class: "run-log-entry" },
    h("span", { class: "muted small" }, entry.timestamp ? when(entry.timestamp) : ""), " ",
    h("strong", {}, entry.event || entry.type || "event"), " ",
    entry.detail || entry.message || "", extra);
}

/** One waiting tool call: its arguments (editable JSON), a reason, Approve / Deny. */
function approvalCard(approval, after) {
  const p = uid("approval");
  const args = h("textarea", { id: `${p}-args`, rows: 6, spellcheck: false, class: "mono" },
    JSON.stringify(approval.arguments || {}, null, 2));
  const reason = h("input", { id: `${p}-reason`, maxlength: 2000, placeholder: "optional" });
  const err = h("p", { class: "field-error", role: "alert", hidden: true });
  const fail = (message) => { err.textContent = message; err.hidden = false; };
  const decide = async (verb) => {
    err.hidden = true;
    const body = { reason: reason.value.trim() || null };
    if (verb === "approve") {
      let edited;
      try { edited = JSON.parse(args.value); } catch (e) { fail(`The arguments are not valid JSON: ${e.message}`); args.focus(); return; }
      if (!edited || typeof edited !== "object" || Array.isArray(edited)) { fail("The arguments must be a JSON object."); args.focus(); return; }
      if (JSON.stringify(edited) !== JSON.stringify(approval.arguments || {})) body.arguments = edited;
    }
    try {
      await post(`/api/approvals/${encodeURIComponent(approval.id)}/${verb}`, body);
    } catch (e) {
      if (e instanceof ApiError) { fail(e.message); return; }
      throw e;
    }
    notify(verb === "approve" ? "Approved: the run resumes." : "Denied: the run resumes without the call.", "success");
    await after();
  };
  return h("div", { class: "approval", dataset: { approvalId: approval.id } },
    h("p", {}, h("strong", {}, approval.tool_name), ` (${approval.origin || "unknown origin"}) — `,
      h("span", { class: "muted small" }, `${approval.rule}; expires ${when(approval.expires_at)}`)),
    h("div", { class: "field" }, h("label", { for: args.id, class: "label" }, "Arguments (edit before approving if needed)"), args),
    h("div", { class: "field" }, h("label", { for: reason.id, class: "label" }, "Reason"), reason),
    err,
    h("div", { class: "actions" },
      h("button", { type: "button", class: "primary", onClick: () => decide("approve") }, "Approve"),
      h("button", { type: "button", class: "danger", onClick: () => decide("deny") }, "Deny")));
}

async function approvalsSection(task, after) {
  if (task.status !== "awaiting_approval") return null;
  const waiting = await get("/api/approvals", { task_id: task.id });
  return h("section", { class: "card", "aria-labelledby": "run-approvals" },
    h("h2", { id: "run-approvals" }, "Awaiting approval"),
    waiting.length
      ? waiting.map((a) => approvalCard(a, after))
      : h("p", { class: "muted" }, "Every call is decided: the run resumes shortly."));
}

async function renderRun(ctx, runId) {
  const task = await get(`/api/tasks/${encodeURIComponent(runId)}`);
  const [agent, workflow] = await Promise.all([
    task.agent_id ? get(`/api/agents/${encodeURIComponent(task.agent_id)}`).catch(() => null) : null,
    get(`/api/workflows/${encodeURIComponent(task.workflow_id)}`).catch(() => null),
  ]);
  if (!ctx.isCurrent()) return;
  const usage = task.usage || {};
  const logs = task.logs || [];
  const approvals = await approvalsSection(task, () => renderRun(ctx, runId));
  if (!ctx.isCurrent()) return;
  replace(ctx.main,
    h("p", {}, h("a", { href: "#/runs" }, "← All runs")),
    h("h1", {}, `Run of ${when(task.started_at || task.created_at)}`),
    h("section", { class: "card", "aria-labelledby": "run-facts" },
      h("h2", { id: "run-facts" }, "Summary"),
      h("dl", { class: "facts" },
        fact("Status", statusBadge(task.status)),
        fact("Agent", agent ? h("a", { href: `#/agents/${encodeURIComponent(agent.id)}` }, agent.name) : task.agent_id || "—"),
        fact("Workflow", workflow ? h("a", { href: `#/workflows/${encodeURIComponent(workflow.id)}` }, workflow.title || workflow.id) : task.workflow_id),
        fact("Trigger", task.trigger),
        fact("Created", when(task.created_at)),
        fact("Duration", duration(task.started_at, task.finished_at)),
        fact("Model", task.model || "—"),
        fact("Turns / tool calls", `${task.turns ?? 0} / ${task.tool_calls ?? 0}`),
        fact("Tokens", tokensOf(usage)),
        fact("Cost", costOf(usage)))),
    approvals,
    task.error ? h("section", { class: "card", "aria-labelledby": "run-error" }, h("h2", { id: "run-error" }, "Error"),
      h("p", { class: "error" }, task.error)) : null,
    h("section", { class: "card", "aria-labelledby": "run-prompt" }, h("h2", { id: "run-prompt" }, "Prompt"),
      h("pre", { class: "run-text" }, task.prompt || "(empty)")),
    task.response ? h("section", { class: "card", "aria-labelledby": "run-answer" }, h("h2", { id: "run-answer" }, "Answer"),
      h("pre", { class: "run-text" }, task.response)) : null,
    h("section", { class: "card", "aria-labelledby": "run-events" }, h("h2", { id: "run-events" }, `Events (${logs.length})`),
      logs.length ? h("ol", { class: "run-log" }, logs.map(logEntry)) : h("p", { class: "muted" }, "This run recorded no events.")));
}
