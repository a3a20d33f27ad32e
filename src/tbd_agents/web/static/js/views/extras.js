// Panels shown under a record's form, per resource (models of a provider, run history, …).

import { get, hasEndpoint, patch } from "../api.js";
import { append, h, notify, replace, when } from "../dom.js";
import { runsTable } from "./runs.js";

async function agentExtras(ctx, record, form) {
  // Offer the chosen provider's models in the model field.
  const providerSelect = form.widget("provider_id").control;
  const model = form.widget("model");
  const refresh = async () => {
    const providerId = providerSelect.value;
    if (!providerId) { model.setSuggestions([]); return; }
    try {
      const res = await get(`/api/providers/${encodeURIComponent(providerId)}/models`);
      model.setSuggestions(res.models);
      model.control.placeholder = res.default_model ? `default: ${res.default_model}` : "";
    } catch {
      model.setSuggestions([]);
    }
  };
  providerSelect.addEventListener("change", refresh);
  await refresh();
}

async function providerExtras(ctx, record, form, box) {
  if (!record) return;
  const out = h("div", { role: "status" });
  const button = h("button", { type: "button" }, "Ask the provider for its models");
  button.addEventListener("click", async () => {
    button.disabled = true;
    replace(out, h("p", { class: "muted" }, "Asking…"));
    try {
      const res = await get(`/api/providers/${encodeURIComponent(record.id)}/models`, { refresh: true });
      const use = h("button", { type: "button", onClick: () => { form.set("models", res.models); notify("Model list filled in; save to keep it."); } }, "Use this list");
      replace(out, h("p", {}, `${res.models.length} models (${res.source}):`),
        h("ul", { class: "chips" }, res.models.map((m) => h("li", {}, m))), use);
    } catch (e) {
      replace(out, h("p", { class: "error", role: "alert" }, e.message));
    } finally {
      button.disabled = false;
    }
  });
  append(box, [h("section", { class: "card", "aria-labelledby": "models-title" },
    h("h2", { id: "models-title" }, "Models"), button, out)]);
}

async function scheduleExtras(ctx, record, form, box) {
  await (await import("./schedule_preview.js")).schedulePreviewPanel(form, box);
  if (!record) return;
  const state = h("p", {}, record.enabled ? "This schedule is enabled." : "This schedule is disabled.",
    " Next run: ", h("strong", {}, record.enabled ? when(record.next_run_at) : "—"),
    "; last run: ", when(record.last_run_at), ".");
  const toggle = h("button", { type: "button", class: "primary" }, record.enabled ? "Disable" : "Enable");
  toggle.addEventListener("click", async () => {
    const updated = await patch(`/api/scheduled-agents/${encodeURIComponent(record.id)}`, { enabled: !record.enabled });
    notify(updated.enabled ? "Schedule enabled." : "Schedule disabled.", "success");
    window.dispatchEvent(new HashChangeEvent("hashchange"));
  });
  const history = h("div");
  append(box, [
    h("section", { class: "card", "aria-labelledby": "sched-state" }, h("h2", { id: "sched-state" }, "State"), state, toggle),
    h("section", { class: "card", "aria-labelledby": "sched-runs" }, h("h2", { id: "sched-runs" }, "Run history"), history),
  ]);
  if (await hasEndpoint("get", HISTORY)) {
    const occurrences = await get(HISTORY.replace("{schedule_id}", encodeURIComponent(record.id)), { limit: 50 });
    replace(history, occurrencesView(occurrences, record));
  }
  const runs = h("div");
  append(history, [h("h3", {}, "Runs"), runs]);
  await runsTable(runs, { scheduled_agent_id: record.id }, "This schedule has not started a run yet.");
}

const HISTORY = "/api/scheduled-agents/{schedule_id}/history";

function occurrencesView(items, record) {
  if (!items.length) return h("p", { class: "muted" }, "No occurrence has come up yet.");
  return h("div", { class: "table-wrap" }, h("table", { class: "records occurrences" },
    h("caption", { class: "visually-hidden" }, "Occurrences"),
    h("thead", {}, h("tr", {}, ["Occurrence", "Outcome", "Missed", "Run"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, items.map((o) => h("tr", {},
      h("td", {}, when(o.occurrence_at)),
      h("td", {}, o.outcome.replace(/_/g, " ")),
      h("td", {}, String(o.missed)),
      h("td", {}, o.task_id ? h("a", { href: `#/workflows/${record.workflow_id}` }, o.task_status ? o.task_status.replace(/_/g, " ") : "started") : "—"))))));
}

/** Render the extra panels of `res` into `box` (record is null while creating). */
export async function renderExtras(ctx, res, record, form, box) {
  if (res === "agents") await agentExtras(ctx, record, form);
  if (res === "agents" && record) (await import("./transfer.js")).agentExportPanel(record, box);
  else if (res === "providers") await providerExtras(ctx, record, form, box);
  else if (res === "scheduled-agents") await scheduleExtras(ctx, record, form, box);
  else if (res === "workflows" && record) await (await import("./workflow.js")).renderWorkflowPanel(ctx, record, box);
  else if (res === "knowledge-sources" && record) await (await import("./knowledge.js")).renderKnowledgePanel(ctx, record, box);
  else if (res === "mcps") (await import("./tool_checks.js")).mcpPanel(record, form, box);
  else if (res === "custom-tools") (await import("./tool_checks.js")).customToolPanel(record, form, box);
  else if (res === "guardrails") (await import("./tool_checks.js")).guardrailPanel(record, form, box);
}
