// "Try it" panels under the forms of MCP servers, custom tools and guardrails.

import { api, post } from "../api.js";
import { append, h, notify, replace, uid } from "../dom.js";

const enc = encodeURIComponent;

function card(id, title, ...children) {
  return h("section", { class: "card", "aria-labelledby": id }, h("h2", { id }, title), ...children);
}

function failure(out, message) {
  replace(out, h("p", { class: "error", role: "alert" }, message));
}

/** A button that shows "busy" text in `out` while `action` runs and reports thrown errors. */
function actionButton(label, out, action, busy = "Working…") {
  const button = h("button", { type: "button" }, label);
  button.addEventListener("click", async () => {
    button.disabled = true;
    replace(out, h("p", { class: "muted" }, busy));
    try {
      await action();
    } catch (e) {
      failure(out, e.message);
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

/** MCP server: test the saved connection, list its tools, tick the allowlist. */
export function mcpPanel(record, form, box) {
  if (!record) return;
  const out = h("div", { role: "status" });
  const test = actionButton("Test connection", out, async () => {
    const res = await post(`/api/mcps/${enc(record.id)}/test`);
    if (!res.ok) { failure(out, `Connection failed (${res.latency_ms} ms): ${res.error}`); return; }
    const boxes = res.tools.map((t) => {
      const id = uid("tool");
      const input = h("input", { type: "checkbox", id, value: t.name, checked: t.allowed });
      return { input, row: h("li", {}, input, " ", h("label", { for: id }, h("code", {}, t.name)), t.description ? h("span", { class: "muted" }, ` — ${t.description}`) : null) };
    });
    const save = h("button", { type: "button", class: "primary" }, "Save allowed tools");
    save.addEventListener("click", async () => {
      const chosen = boxes.filter((b) => b.input.checked).map((b) => b.input.value);
      if (!chosen.length) { notify("Tick at least one tool (an empty list allows every tool).", "error"); return; }
      const allowed = chosen.length === boxes.length ? [] : chosen;
      const updated = await api("PUT", `/api/mcps/${enc(record.id)}/tools`, { body: { allowed_tools: allowed } });
      form.set("allowed_tools", updated.allowed_tools);
      form.markSaved();
      notify(allowed.length ? `Agents may use ${allowed.length} of ${boxes.length} tools.` : "Agents may use every tool of this server.", "success");
    });
    const groupId = uid("tools");
    replace(out,
      h("p", {}, `Connected in ${res.latency_ms} ms; ${res.tools.length} tools. Tick the tools agents may use:`),
      h("fieldset", { "aria-labelledby": groupId }, h("legend", { id: groupId }, "Tools offered to agents"), h("ul", { class: "plain" }, boxes.map((b) => b.row))),
      save);
  }, "Connecting…");
  append(box, [card("mcp-test-title", "Connection", h("p", { class: "muted" }, "Connects with the saved settings (secrets resolved) and lists the server's tools."), test, out)]);
}

/** Custom tool: validate the source in the form; run the saved tool with JSON arguments. */
export function customToolPanel(record, form, box) {
  const checkOut = h("div", { role: "status" });
  const validate = actionButton("Validate", checkOut, async () => {
    let schema;
    try { schema = form.widget("parameters_schema").get(); } catch { schema = undefined; }
    const res = await post("/api/custom-tools/validate", {
      source_code: form.widget("source_code").get() || "",
      name: form.widget("name").get() || "run",
      ...(schema && typeof schema === "object" ? { parameters_schema: schema } : {}),
    });
    if (res.ok) replace(checkOut, h("p", { class: "success" }, `Valid: entry point ${res.entry_point}().`));
    else replace(checkOut, h("ul", { class: "error", role: "alert" }, res.errors.map((e) => h("li", {}, e))));
  }, "Checking…");
  const panels = [card("tool-check-title", "Check", h("p", { class: "muted" }, "Parses the source in the form (it is not run)."), validate, checkOut)];
  if (record) {
    const argsId = uid("args");
    const args = h("textarea", { id: argsId, rows: 4, spellcheck: "false", class: "code" }, "{}");
    const runOut = h("div", { role: "status" });
    const run = actionButton("Run with arguments", runOut, async () => {
      let parsed;
      try { parsed = JSON.parse(args.value || "{}"); } catch (e) { failure(runOut, `Arguments are not JSON: ${e.message}`); return; }
      if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) { failure(runOut, "Arguments must be a JSON object."); return; }
      const res = await post(`/api/custom-tools/${enc(record.id)}/run`, { arguments: parsed });
      if (!res.ok) { failure(runOut, `Failed after ${res.duration_ms} ms: ${res.error}`); return; }
      replace(runOut, h("p", {}, `Result (${res.duration_ms} ms):`),
        h("pre", { class: "result" }, JSON.stringify(res.value, null, 2)),
        res.stdout ? [h("p", { class: "muted" }, "Printed:"), h("pre", {}, res.stdout)] : null);
    }, "Running…");
    panels.push(card("tool-run-title", "Run",
      h("p", { class: "muted" }, "Runs the saved version in the sandbox, with its declared environment only."),
      h("div", { class: "field" }, h("label", { for: argsId, class: "label" }, "Arguments (JSON)"), args), run, runOut));
  }
  append(box, panels);
}

/** Guardrail: apply the settings in the form (saved or not) to a sample text. */
export function guardrailPanel(record, form, box) {
  const textId = uid("try");
  const text = h("textarea", { id: textId, rows: 4 });
  const out = h("div", { role: "status" });
  const pick = (name) => { try { return form.widget(name).get(); } catch { return undefined; } };
  const tryIt = actionButton("Try it", out, async () => {
    const guardrail = {};
    for (const name of ["guardrail_type", "action", "patterns", "prompt_config"]) {
      const v = pick(name);
      if (v !== undefined && v !== null && v !== "") guardrail[name] = v;
    }
    if (pick("name")) guardrail.name = pick("name");
    const res = await post("/api/guardrails/try", { guardrail, text: text.value });
    replace(out,
      h("p", {}, "Outcome: ", h("span", { class: ["badge", `action-${res.action}`] }, res.action)),
      h("p", {}, "The caller would receive:"),
      h("pre", { class: "result" }, res.output),
      res.reasons.length ? h("ul", {}, res.reasons.map((r) => h("li", {}, r))) : h("p", { class: "muted" }, "Nothing matched."));
  }, "Checking…");
  append(box, [card("guard-try-title", "Try it",
    h("p", { class: "muted" }, "Applies the settings in the form (saved or not) to this text."),
    h("div", { class: "field" }, h("label", { for: textId, class: "label" }, "Text to try"), text), tryIt, out)]);
}
