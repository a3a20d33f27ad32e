// Run history (task executions): status, trigger, when, duration, tokens and cost.

import { del, get, getPage } from "../api.js";
import { confirmDialog, duration, h, notify, replace, when } from "../dom.js";

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

function row(task, onOpen, onDelete) {
  const status = h("span", { class: ["badge", `status-${task.status}`] }, task.status.replace(/_/g, " "));
  return h("tr", { dataset: { taskId: task.id } },
    h("td", {}, onOpen ? h("button", { type: "button", class: "link", onClick: () => onOpen(task) }, when(task.started_at || task.created_at)) : when(task.started_at || task.created_at)),
    h("td", {}, status),
    h("td", {}, task.trigger),
    h("td", {}, duration(task.started_at, task.finished_at)),
    h("td", {}, tokensOf(task.usage)),
    h("td", {}, costOf(task.usage)),
    h("td", { class: "prompt-cell" }, task.prompt.length > 80 ? `${task.prompt.slice(0, 77)}…` : task.prompt),
    h("td", { class: "row-actions" }, h("button", { type: "button", class: "small danger", "aria-label": "Delete this run", onClick: () => onDelete(task) }, "Delete")));
}

/**
 * Fill `box` with the runs matching `query` (newest first), with a "Load more" button.
 * `onOpen(task)`, when given, makes each run's time a button. Returns a refresh function.
 */
export async function runsTable(box, query, emptyText, onOpen) {
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
    replace(box, h("div", { class: "table-wrap" }, h("table", { class: "records runs" },
      h("caption", { class: "visually-hidden" }, "Runs"),
      h("thead", {}, h("tr", {}, ["Started", "Status", "Trigger", "Duration", "Tokens", "Cost", "Prompt", ""].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, items.map((t) => row(t, onOpen, (task) => deleteRun(task, () => load(false))))))), moreButton);
  };
  await load(false);
  return () => load(false);
}
