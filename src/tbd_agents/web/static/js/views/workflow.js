// A workflow's page: run a prompt, watch its events live, halt it, see the history of runs.

import { get, getPage, hasEndpoint, post, stream } from "../api.js";
import { append, h, notify, replace, uid, when } from "../dom.js";
import { renderInto } from "../markdown.js";
import { costOf, runsTable, tokensOf } from "./runs.js";

const TERMINAL = new Set(["completed", "failed", "halted", "max_turns_reached"]);

const RUNS = "/api/workflows/{workflow_id}/runs";
const EVENTS = "/api/tasks/{task_id}/events";
const HALT = "/api/tasks/{task_id}/halt";
const DELIVERIES = "/api/workflows/{workflow_id}/webhook-deliveries";

const fill = (template, id) => template.replace(/\{[^}]+\}/, encodeURIComponent(id));

/** Renders a run's events into a log; returns { handle(event), reset() }. */
function eventLog(box) {
  const list = h("ol", { class: "events", role: "log", "aria-label": "Run events", "aria-live": "polite" });
  const answer = h("div", { class: "answer bubble-body" });
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
        } else if (Array.isArray(data.todos)) {
          add("progress", h("span", {}, `${data.done} of ${data.total} steps done`),
            h("ul", { class: "todos" }, data.todos.map((t) => h("li", { dataset: { status: t.status } }, `${t.status === "done" || t.status === "completed" ? "✓" : "○"} ${t.title}`))));
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

function deliveriesView(items) {
  if (!items.length) return h("p", { class: "muted" }, "No webhook deliveries yet.");
  return h("div", { class: "table-wrap" }, h("table", { class: "records" },
    h("caption", { class: "visually-hidden" }, "Webhook deliveries"),
    h("thead", {}, h("tr", {}, ["Event", "URL", "Status", "Attempts", "Last answer"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, items.map((d) => h("tr", {},
      h("td", {}, d.event), h("td", {}, d.url),
      h("td", {}, h("span", { class: ["badge", `status-${d.status}`] }, d.status)),
      h("td", {}, String(d.attempts)),
      h("td", {}, d.last_error || (d.last_status_code ? `HTTP ${d.last_status_code}` : "—")))))));
}

/** Panels of a workflow's page. */
export async function renderWorkflowPanel(ctx, workflow, box) {
  const [canRun, canFollow, canHalt, canListDeliveries] = await Promise.all([
    hasEndpoint("post", RUNS), hasEndpoint("get", EVENTS), hasEndpoint("post", HALT), hasEndpoint("get", DELIVERIES),
  ]);
  const historyBox = h("div");
  const liveBox = h("div", { class: "live", "aria-label": "Run" });
  const runTitle = h("p", { class: "muted run-title" });
  const log = eventLog(liveBox);
  log.status(workflow.status);
  let refreshHistory = null;
  let controller = null;
  let following = null;

  const halt = h("button", { type: "button", class: "danger", hidden: true }, "Halt");
  /** Show the events of run `task` (stored ones, then live ones until it ends). */
  const follow = async (task) => {
    controller?.abort();
    log.reset();
    log.status(task.status);
    following = task.id;
    runTitle.textContent = `Run of ${when(task.created_at)}: “${task.prompt.length > 60 ? `${task.prompt.slice(0, 57)}…` : task.prompt}”`;
    if (!canFollow) return;
    const mine = new AbortController();
    controller = mine;
    halt.hidden = !canHalt || TERMINAL.has(task.status);
    try {
      await stream("GET", fill(EVENTS, task.id), {
        signal: mine.signal,
        onEvent: ({ event, data }) => {
          log.handle(event, data);
          if (event === "status" && TERMINAL.has(data.status)) halt.hidden = true;
        },
      });
    } catch (error) {
      if (error.name !== "AbortError") notify(`Event stream: ${error.message}`, "error");
    } finally {
      if (controller === mine) {
        halt.hidden = true;
        if (refreshHistory && ctx.isCurrent()) await refreshHistory();
      }
    }
  };
  halt.addEventListener("click", async () => {
    halt.disabled = true;
    try {
      const res = await post(fill(HALT, following), {});
      notify(`Halt: ${res.result.replace(/_/g, " ")}.`, "info");
    } catch (error) {
      notify(error.message, "error");
    } finally {
      halt.disabled = false;
    }
  });

  const runSection = h("section", { class: "card", "aria-labelledby": "run-title" }, h("h2", { id: "run-title" }, "Run"));
  if (canRun) {
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
        const task = await post(fill(RUNS, workflow.id), { prompt: input.value.trim() });
        if (refreshHistory) await refreshHistory();
        follow(task);
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
    append(runSection, [form]);
  } else {
    append(runSection, [h("p", { class: "muted" }, "This server has no endpoint to start workflow runs.")]);
  }
  append(runSection, [runTitle, liveBox]);
  append(box, [runSection]);

  const openRun = async (task) => {
    liveBox.scrollIntoView({ block: "nearest" });
    if (canFollow) { follow(task); return; }
    const full = await get(`/api/tasks/${encodeURIComponent(task.id)}`);
    log.reset();
    log.status(full.status);
    if (full.response) log.handle("message", { role: "assistant", content: full.response, final: true });
    if (full.error) log.handle("error", { message: full.error });
    log.handle("usage", full.usage || {});
  };
  append(box, [h("section", { class: "card", "aria-labelledby": "hist-title" }, h("h2", { id: "hist-title" }, "History"), historyBox,
    h("p", { class: "muted small" }, "Choose a run's time to see its events."))]);
  refreshHistory = await runsTable(historyBox, { workflow_id: workflow.id }, "No runs yet. Write a prompt above and press Run.", openRun);
  if (canListDeliveries && (workflow.webhook_url || workflow.error_webhook_url)) {
    const deliveries = await get(fill(DELIVERIES, workflow.id), { limit: 20 });
    append(box, [h("section", { class: "card", "aria-labelledby": "hooks-title" }, h("h2", { id: "hooks-title" }, "Webhook deliveries"), deliveriesView(deliveries))]);
  }
  // A run still going when the page opens is followed right away.
  const latest = (await getPage("/api/tasks", { workflow_id: workflow.id, limit: 1 })).items[0];
  if (latest && !TERMINAL.has(latest.status)) follow(latest);
  // Leaving the page stops following.
  window.addEventListener("hashchange", () => controller?.abort(), { once: true });
}
