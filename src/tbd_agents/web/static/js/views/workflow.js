// A workflow's page: run a prompt, watch its events live, halt it, see the history of runs.

import { features, get, post, stream } from "../api.js";
import { append, h, notify, replace, uid, when } from "../dom.js";
import { renderInto } from "../markdown.js";
import { costOf, runsTable, tokensOf } from "./runs.js";

const TERMINAL = new Set(["completed", "failed", "halted", "max_turns_reached"]);

/** The workflow endpoint whose path ends with `/{param}/<action>` and has `method`, if any. */
async function endpoint(method, action) {
  const doc = await features();
  const re = new RegExp(`^/api/workflows/\\{[^}]+\\}/${action}$`);
  const path = Object.keys(doc.paths || {}).find((p) => re.test(p) && doc.paths[p][method]);
  return path || null;
}

const fill = (template, id) => template.replace(/\{[^}]+\}/, encodeURIComponent(id));

/** Renders a run's events into a log; returns { handle(event), reset() }. */
function eventLog(box) {
  const list = h("ol", { class: "events", role: "log", "aria-label": "Run events", "aria-live": "polite" });
  const answer = h("div", { class: "answer bubble-body", "aria-label": "Answer" });
  const bar = h("progress", { max: 1, value: 0, hidden: true, "aria-label": "Turns used" });
  const progressText = h("span", { class: "muted" });
  const usage = h("p", { class: "usage muted" });
  const statusBadge = h("span", { class: "badge", id: uid("runstatus") }, "idle");
  append(box, [h("div", { class: "run-head" }, h("span", {}, "Status: "), statusBadge, bar, progressText), usage,
    h("h3", {}, "Answer"), answer, h("h3", {}, "Events"), list]);
  let text = "";
  const calls = new Map();
  const add = (kind, ...children) => {
    const li = h("li", { class: ["event", `event-${kind}`], dataset: { type: kind } }, h("span", { class: "event-type" }, kind.replace(/_/g, " ")), ...children);
    list.append(li);
    return li;
  };
  return {
    reset() { text = ""; calls.clear(); list.replaceChildren(); answer.replaceChildren(); usage.textContent = ""; bar.hidden = true; progressText.textContent = ""; },
    status(s) { statusBadge.textContent = s.replace(/_/g, " "); statusBadge.className = `badge status-${s}`; },
    handle(type, data) {
      if (type === "message_delta" || type === "delta") {
        text += data.delta || "";
        renderInto(answer, text);
      } else if (type === "message") {
        if (data.final && data.content) { text = data.content; renderInto(answer, text); }
        if (data.role === "assistant" && data.content && !data.final) add("message", h("span", {}, data.content));
      } else if (type === "log") {
        add("log", h("span", { class: `level-${data.level || "info"}` }, data.message || JSON.stringify(data)));
      } else if (type === "tool_call") {
        const result = h("pre", { class: "tool-result" }, "…");
        calls.set(data.id, result);
        add("tool_call", h("details", { class: "tool-call" }, h("summary", {}, h("code", {}, data.name)),
          h("pre", {}, JSON.stringify(data.arguments ?? {}, null, 2)), h("p", { class: "muted" }, "Result"), result));
      } else if (type === "tool_result") {
        const node = calls.get(data.id);
        if (node) node.textContent = data.content ?? "";
        else add("tool_result", h("span", {}, `${data.name}: ${data.content}`));
      } else if (type === "usage") {
        const total = data.total || data;
        usage.textContent = `Tokens: ${tokensOf(total)} · cost ${costOf(total)}`;
      } else if (type === "progress") {
        if (data.turn && data.max_turns) {
          bar.hidden = false;
          bar.max = data.max_turns;
          bar.value = data.turn;
          progressText.textContent = ` turn ${data.turn} of ${data.max_turns}`;
        } else {
          add("progress", h("span", {}, data.message || JSON.stringify(data)));
        }
      } else if (type === "status") {
        this.status(data.status);
        add("status", h("span", {}, data.status + (data.error ? `: ${data.error}` : "")));
      } else if (type === "error") {
        add("error", h("span", { class: "error" }, data.message || JSON.stringify(data)));
      } else {
        add(type, h("span", {}, JSON.stringify(data)));
      }
    },
  };
}

/** Panels of a workflow's page. */
export async function renderWorkflowPanel(ctx, workflow, box) {
  const [promptPath, streamPath, haltPath] = await Promise.all([
    endpoint("post", "prompt"), endpoint("get", "stream"), endpoint("post", "halt"),
  ]);
  const historyBox = h("div");
  const liveBox = h("div", { class: "live" });
  const log = eventLog(liveBox);
  log.status(workflow.status);
  let refreshHistory = null;
  let controller = null;
  let lastSeq = null;

  const halt = h("button", { type: "button", class: "danger", hidden: true }, "Halt");
  const follow = async () => {
    if (!streamPath) return;
    controller?.abort();
    controller = new AbortController();
    halt.hidden = !haltPath;
    try {
      await stream("GET", fill(streamPath, workflow.id), {
        signal: controller.signal,
        lastEventId: lastSeq,
        onEvent: ({ event, data, id }) => {
          if (id) lastSeq = id;
          const isEnvelope = data && typeof data === "object" && "type" in data && "data" in data && "seq" in data;
          const type = isEnvelope ? data.type : event;
          log.handle(type, isEnvelope ? data.data : data);
          if (type === "status" && TERMINAL.has((isEnvelope ? data.data : data).status)) halt.hidden = true;
        },
      });
    } catch (error) {
      if (error.name !== "AbortError") notify(`Event stream: ${error.message}`, "error");
    } finally {
      halt.hidden = true;
      if (refreshHistory) await refreshHistory();
    }
  };
  halt.addEventListener("click", async () => {
    halt.disabled = true;
    try {
      await post(fill(haltPath, workflow.id), {});
      notify("Halt requested.", "info");
    } catch (error) {
      notify(error.message, "error");
    } finally {
      halt.disabled = false;
    }
  });

  if (promptPath) {
    const promptId = uid("prompt");
    const input = h("textarea", { id: promptId, name: "prompt", rows: 3, "aria-describedby": `${promptId}-err` });
    const err = h("p", { class: "field-error", id: `${promptId}-err`, hidden: true });
    const run = h("button", { type: "submit", class: "primary" }, "Run");
    const form = h("form", { class: "form run-form" },
      h("div", { class: "field" }, h("label", { for: promptId, class: "label" }, "Prompt"), input, err),
      h("div", { class: "actions" }, run, halt));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      err.hidden = true;
      input.removeAttribute("aria-invalid");
      if (!input.value.trim()) { err.textContent = "Write a prompt first."; err.hidden = false; input.setAttribute("aria-invalid", "true"); input.focus(); return; }
      run.disabled = true;
      try {
        await post(fill(promptPath, workflow.id), { prompt: input.value.trim() });
        log.reset();
        log.status("pending");
        lastSeq = null;
        if (refreshHistory) await refreshHistory();
        follow();
      } catch (error) {
        const fields = error.fieldErrors ? error.fieldErrors() : new Map();
        err.textContent = fields.get("prompt")?.join(" ") || error.message;
        err.hidden = false;
        input.setAttribute("aria-invalid", "true");
        input.focus();
      } finally {
        run.disabled = false;
      }
    });
    append(box, [h("section", { class: "card", "aria-labelledby": "run-title" }, h("h2", { id: "run-title" }, "Run"), form, liveBox)]);
  } else {
    append(box, [h("section", { class: "card" }, h("h2", {}, "Run"), h("p", { class: "muted" }, "This server has no endpoint to start workflow runs."))]);
  }

  const openRun = async (task) => {
    const full = await get(`/api/tasks/${encodeURIComponent(task.id)}`);
    log.reset();
    log.status(full.status);
    if (full.result) log.handle("message", { role: "assistant", content: full.result, final: true });
    if (full.error) log.handle("error", { message: full.error });
    log.handle("usage", full.usage || {});
    liveBox.scrollIntoView({ block: "nearest" });
  };
  append(box, [h("section", { class: "card", "aria-labelledby": "hist-title" }, h("h2", { id: "hist-title" }, "History"), historyBox,
    h("p", { class: "muted small" }, `Last run: ${when(workflow.last_run_at)}`))]);
  refreshHistory = await runsTable(historyBox, { workflow_id: workflow.id }, "No runs yet. Write a prompt above and press Run.", openRun);
  if (!TERMINAL.has(workflow.status) && workflow.status !== "idle" && streamPath) follow();
  // Leaving the page stops following.
  window.addEventListener("hashchange", () => controller?.abort(), { once: true });
}
