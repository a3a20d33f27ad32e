// The agent builder: the agent's form split into tabs, a live test chat beside it (the unsaved
// draft, POST /api/agents/{id}/preview-chat), the assembled context with token counts
// (POST …/context), the agent's schedules, and its versions with a diff and restore.
//
// The form itself is the generic record form (views/records.js, forms.js): the same fields,
// the same save (only changed fields, If-Match, someone else's change never undone); the
// builder moves each field's row into its tab.

import { ApiError, api, get, getPage, post, stream } from "../api.js";
import { announce, confirmDialog, h, notify, replace, uid, when } from "../dom.js";
import { count } from "../numbers.js";
import { renderInto } from "../markdown.js";
import { renderRecord } from "./records.js";

/** Tabs holding form fields: [label, field names]. Fields not named here go to Basics. */
const FIELD_TABS = [
  ["Basics", ["name", "description", "system_prompt", "tags"]],
  ["Model", ["provider_id", "model", "temperature", "max_turns", "output_format"]],
  ["Tools", ["builtin_tools", "mcp_server_ids", "mcp_server_tags", "custom_tool_ids", "agent_tool_ids", "tool_definitions", "mcp_exposed"]],
  ["Knowledge", ["knowledge_source_ids", "knowledge_tags", "skill_ids", "skill_tags"]],
  ["Memory", ["memory_enabled"]],
  ["Safety", ["guardrail_ids", "tool_policy"]],
];
const PART_LABELS = {
  prompt: "System prompt",
  skills: "Skills",
  policy: "Workflow policy",
  knowledge: "Knowledge",
  memories: "Memories",
  format: "Output format policy",
};

/** Accessible tabs: role=tablist/tab/tabpanel, arrow keys, Home/End; `onShow(name)` on change. */
function tabs(names, label, onShow) {
  const list = h("div", { class: "builder-tabs", role: "tablist", "aria-label": label });
  const buttons = new Map();
  const panels = new Map();
  const show = (name, focus = false) => {
    for (const [n, button] of buttons) {
      const on = n === name;
      button.setAttribute("aria-selected", on ? "true" : "false");
      button.tabIndex = on ? 0 : -1;
      panels.get(n).hidden = !on;
    }
    if (focus) buttons.get(name).focus();
    if (onShow) onShow(name);
  };
  for (const name of names) {
    const id = uid("tab");
    // Named "<tab> settings" rather than by the tab (aria-labelledby), so that no panel
    // shares its name with a field (the Model tab and the Model field).
    const panel = h("div", { role: "tabpanel", id: `${id}-panel`, "aria-label": `${name} settings`, tabindex: "0", class: "builder-panel", hidden: true });
    const button = h("button", { type: "button", role: "tab", id, "aria-controls": panel.id, "aria-selected": "false", tabindex: "-1", onClick: () => show(name) }, name);
    button.addEventListener("keydown", (e) => {
      const keys = { ArrowRight: 1, ArrowLeft: -1, Home: "first", End: "last" };
      if (!(e.key in keys)) return;
      e.preventDefault();
      const i = names.indexOf(name);
      const step = keys[e.key];
      const next = step === "first" ? 0 : step === "last" ? names.length - 1 : (i + step + names.length) % names.length;
      show(names[next], true);
    });
    buttons.set(name, button);
    panels.set(name, panel);
    list.append(button);
  }
  return { list, panels, show };
}

/** Lines of `a` and `b` as a unified diff: [{op: " " | "-" | "+", text}] (LCS by lines). */
export function lineDiff(a, b) {
  const x = String(a ?? "").split("\n");
  const y = String(b ?? "").split("\n");
  const n = x.length;
  const m = y.length;
  // Very long texts: every old line removed, every new one added (the table stays bounded).
  if (n * m > 4_000_000) return [...x.map((text) => ({ op: "-", text })), ...y.map((text) => ({ op: "+", text }))];
  const lcs = Array.from({ length: n + 1 }, () => new Array(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i -= 1) for (let j = m - 1; j >= 0; j -= 1) {
    lcs[i][j] = x[i] === y[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
  }
  const out = [];
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (x[i] === y[j]) { out.push({ op: " ", text: x[i] }); i += 1; j += 1; }
    else if (lcs[i + 1][j] >= lcs[i][j + 1]) { out.push({ op: "-", text: x[i] }); i += 1; }
    else { out.push({ op: "+", text: y[j] }); j += 1; }
  }
  while (i < n) { out.push({ op: "-", text: x[i] }); i += 1; }
  while (j < m) { out.push({ op: "+", text: y[j] }); j += 1; }
  return out;
}

const shown = (v) => (v === null || v === undefined || v === "" ? "—" : typeof v === "string" ? v : JSON.stringify(v));

function diffView(older, newer) {
  const a = older.snapshot;
  const b = newer.snapshot;
  const fields = [...new Set([...Object.keys(a), ...Object.keys(b)])].filter((k) => JSON.stringify(a[k]) !== JSON.stringify(b[k]));
  if (!fields.length) return h("p", { class: "muted" }, `Versions ${older.number} and ${newer.number} are the same.`);
  return h("table", { class: "records version-diff" },
    h("caption", {}, `Changes from version ${older.number} to version ${newer.number}`),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Field"), h("th", { scope: "col" }, `Version ${older.number}`), h("th", { scope: "col" }, `Version ${newer.number}`))),
    h("tbody", {}, fields.map((k) => {
      if (k === "system_prompt" || (typeof a[k] === "string" && typeof b[k] === "string" && (a[k].includes("\n") || b[k].includes("\n")))) {
        const lines = lineDiff(a[k], b[k]);
        return h("tr", { dataset: { field: k } }, h("th", { scope: "row" }, k),
          h("td", { colspan: 2 }, h("pre", { class: "line-diff", "aria-label": `Line changes of ${k}` }, lines.map((l) => h("span", {
            class: l.op === "-" ? "del" : l.op === "+" ? "ins" : "same",
          }, l.op === "-" ? h("span", { class: "visually-hidden" }, "removed: ") : l.op === "+" ? h("span", { class: "visually-hidden" }, "added: ") : null, `${l.op} ${l.text}\n`)))));
      }
      return h("tr", { dataset: { field: k } }, h("th", { scope: "row" }, k), h("td", { class: "del" }, shown(a[k])), h("td", { class: "ins" }, shown(b[k])));
    })));
}

/** The agent builder at #/agents/<id> and #/agents/new. */
export async function renderAgentBuilder(ctx, id) {
  const creating = id === null;
  const onSavedHooks = [];
  let parts = null;
  const screen = await renderRecord(ctx, "agents", id, {
    onSaved: (saved) => { for (const hook of onSavedHooks) hook(saved); },
    layout: (p) => { parts = p; },
  });
  if (!screen || !ctx.isCurrent()) return;
  const { form, record } = screen;
  const { head, formCard, extras } = parts;
  const formEl = form.element;

  // --- tabs -------------------------------------------------------------------------------
  const extraTabs = creating ? [] : ["Schedules", "Context", "Versions"];
  const names = [...FIELD_TABS.map(([n]) => n), ...extraTabs];
  const loaders = {};
  const loaded = new Set();
  const t = tabs(names, "Agent settings", (name) => {
    if (loaders[name] && !loaded.has(name)) { loaded.add(name); loaders[name](); }
  });
  const placed = new Set();
  for (const [name, fields] of FIELD_TABS) {
    for (const f of fields) {
      const row = formEl.querySelector(`.field[data-field="${f}"]`);
      if (row) { t.panels.get(name).append(row); placed.add(f); }
    }
  }
  for (const row of formEl.querySelectorAll(":scope > .field")) t.panels.get("Basics").append(row);
  const actions = formEl.querySelector(":scope > .actions");
  for (const [name] of FIELD_TABS) formEl.insertBefore(t.panels.get(name), actions);
  t.panels.get("Memory").append(h("p", { class: "help" }, record
    ? h("a", { href: `#/memories?agent_id=${encodeURIComponent(record.id)}` }, "See what this agent remembers")
    : "Save the agent to see its memories."));
  const outside = extraTabs.map((n) => t.panels.get(n));
  replace(formCard, t.list, outside, formEl);

  // --- test chat ----------------------------------------------------------------------------
  const side = h("aside", { class: "builder-side card", "aria-labelledby": "test-chat-title" });
  const chatToggle = h("button", { type: "button", class: "builder-chat-toggle", "aria-expanded": "false", "aria-controls": "test-chat-body" }, "Test chat");
  const chatBody = h("div", { id: "test-chat-body", class: "builder-chat-body" });
  chatToggle.addEventListener("click", () => {
    const open = chatToggle.getAttribute("aria-expanded") !== "true";
    chatToggle.setAttribute("aria-expanded", open ? "true" : "false");
    side.classList.toggle("open", open);
  });
  side.append(h("h2", { id: "test-chat-title" }, chatToggle), chatBody);
  // Open beside the editor on wide screens; a drawer to open on narrow ones.
  if (!window.matchMedia("(max-width: 1100px)").matches) { side.classList.add("open"); chatToggle.setAttribute("aria-expanded", "true"); }

  const draftBody = () => {
    const { values, problems } = form.values();
    if (problems.size) { form.showErrors(problems); throw new Error("Fix the highlighted fields first."); }
    return values;
  };

  if (creating) {
    chatBody.append(h("p", { class: "muted" }, "Create the agent first, then test it here as you edit it."));
  } else {
    let history = [];
    const log = h("div", { class: "messages builder-messages", role: "log", "aria-label": "Test conversation", "aria-live": "polite" });
    const status = h("p", { class: "chat-status muted", role: "status" });
    const inputId = uid("test-msg");
    const input = h("textarea", { id: inputId, rows: 2, placeholder: "Ask the agent as currently edited…" });
    const send = h("button", { type: "submit", class: "primary" }, "Send");
    const reset = h("button", { type: "button", onClick: () => { history = []; log.replaceChildren(); status.textContent = "Conversation cleared."; } }, "New conversation");
    const bubble = (role, text) => {
      const body = h("div", { class: "bubble-body" });
      if (role === "assistant") renderInto(body, text); else body.textContent = text;
      const node = h("div", { class: ["message", `message-${role}`] }, h("p", { class: "who" }, role === "user" ? "You" : "Agent (draft)"), body);
      log.append(node);
      log.scrollTop = log.scrollHeight;
      return { node, body };
    };
    const chatForm = h("form", { class: "builder-chat-form", onSubmit: async (e) => {
      e.preventDefault();
      const message = input.value.trim();
      if (!message) { status.textContent = "Type a message first."; input.focus(); return; }
      let draft;
      try { draft = draftBody(); } catch (err) { status.textContent = err.message; return; }
      bubble("user", message);
      input.value = "";
      send.disabled = true;
      status.textContent = "The agent is answering…";
      const reply = bubble("assistant", "");
      reply.node.dataset.streaming = "true";
      let text = "";
      let failed = null;
      try {
        await stream("POST", `/api/agents/${encodeURIComponent(record.id)}/preview-chat`, {
          body: { draft, message, history },
          onEvent: ({ event, data }) => {
            if (event === "delta") { text += data.content || ""; reply.body.textContent = text; }
            else if (event === "error") failed = data.message || "The turn failed.";
          },
        });
      } catch (err) {
        failed = err.message;
      }
      delete reply.node.dataset.streaming;
      renderInto(reply.body, text || (failed ? "" : "(no answer)"));
      if (failed) {
        reply.body.append(h("p", { class: "error", role: "alert" }, failed));
        status.textContent = "The test turn failed.";
      } else {
        history = [...history, { role: "user", content: message }, { role: "assistant", content: text }];
        status.textContent = "Answered (not saved as a chat session).";
      }
      send.disabled = false;
    } },
    h("label", { for: inputId, class: "label" }, "Test message"), input,
    h("div", { class: "actions" }, send, reset));
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); chatForm.requestSubmit(); }
    });
    chatBody.append(h("p", { class: "help" }, "Chats with the agent as edited here, saved or not. Nothing is kept as a chat session."), log, status, chatForm);
  }

  // --- schedules ----------------------------------------------------------------------------
  if (!creating) {
    loaders.Schedules = async () => {
      const panel = t.panels.get("Schedules");
      replace(panel, h("p", { class: "muted" }, "Loading…"));
      try {
        const workflows = (await getPage("/api/workflows", { agent_id: record.id, limit: 100 })).items;
        const rows = [];
        for (const w of workflows) {
          const schedules = (await getPage("/api/scheduled-agents", { workflow_id: w.id, limit: 100 })).items;
          for (const s of schedules) rows.push({ w, s });
        }
        replace(panel,
          h("p", {}, "Schedules run a workflow of this agent with a prompt, on an interval or a cron expression."),
          rows.length
            ? h("ul", { class: "dependants" }, rows.map(({ w, s }) => h("li", {},
              h("a", { href: `#/scheduled-agents/${s.id}` }, s.name || s.id),
              ` — workflow “${w.title || w.id}”, ${s.enabled ? "enabled" : "disabled"}, next run ${when(s.next_run_at)}`)))
            : h("p", { class: "muted" }, "No schedules use this agent yet."),
          workflows.length
            ? h("p", {}, workflows.map((w) => h("a", { class: "button", href: `#/scheduled-agents/new?workflow_id=${encodeURIComponent(w.id)}` }, `New schedule for “${w.title || w.id}”`)))
            : h("p", {}, "A schedule runs a workflow: ", h("a", { href: `#/workflows/new?agent_id=${encodeURIComponent(record.id)}` }, "create a workflow of this agent"), " first."));
      } catch (err) {
        replace(panel, h("p", { class: "error", role: "alert" }, err.message));
      }
    };
  }

  // --- context ------------------------------------------------------------------------------
  if (!creating) {
    const panel = t.panels.get("Context");
    const qId = uid("ctx-q");
    const query = h("input", { id: qId, type: "text", placeholder: "e.g. What is our refund policy?", autocomplete: "off" });
    const out = h("div", { class: "context-out", "aria-live": "polite" });
    const showContext = async () => {
      let draft;
      try { draft = draftBody(); } catch (err) { replace(out, h("p", { class: "error", role: "alert" }, err.message)); return; }
      replace(out, h("p", { class: "muted" }, "Assembling…"));
      try {
        const res = await post(`/api/agents/${encodeURIComponent(record.id)}/context`, { draft, query: query.value });
        const pct = res.context_window ? Math.min(100, (100 * res.total_tokens) / res.context_window) : 0;
        replace(out,
          h("p", { class: "context-total" }, h("strong", {}, `${count(res.total_tokens)} tokens`),
            ` of ${count(res.context_window)} in ${res.model}'s context window (${pct.toFixed(pct < 1 ? 2 : 1)} %), before the conversation. `,
            h("span", { class: "muted" }, `Counted with ${res.counter}.`)),
          h("meter", { min: 0, max: res.context_window || 1, value: res.total_tokens, "aria-label": "Context used" }),
          h("table", { class: "records context-parts" },
            h("caption", {}, "System prompt, in order"),
            h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Part"), h("th", { scope: "col", class: "num" }, "Tokens"), h("th", { scope: "col" }, "Text"))),
            h("tbody", {}, res.parts.map((p) => h("tr", { dataset: { kind: p.kind } },
              h("th", { scope: "row" }, PART_LABELS[p.kind] || p.kind),
              h("td", { class: "num" }, count(p.tokens)),
              h("td", {}, h("details", {}, h("summary", {}, p.text.split("\n")[0].slice(0, 80) || "(empty)"), h("pre", { class: "context-text" }, p.text))))))),
          h("table", { class: "records context-tools" },
            h("caption", {}, `Tool definitions (${count(res.tool_tokens)} tokens)`),
            h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Tool"), h("th", { scope: "col", class: "num" }, "Tokens"))),
            h("tbody", {}, res.tools.length ? res.tools.map((tool) => h("tr", {}, h("th", { scope: "row" }, tool.name), h("td", { class: "num" }, count(tool.tokens))))
              : h("tr", {}, h("td", { colspan: 2, class: "muted" }, "No tools.")))),
          query.value.trim() ? null : h("p", { class: "help" }, "Type a sample message to see the knowledge and memories it would retrieve."),
          res.warnings.length ? h("ul", { class: "warning" }, res.warnings.map((w) => h("li", {}, w))) : null);
        announce(`Context: ${res.total_tokens} tokens.`);
      } catch (err) {
        replace(out, h("p", { class: "error", role: "alert" }, err.message));
      }
    };
    const ctxForm = h("form", { class: "context-form", onSubmit: (e) => { e.preventDefault(); showContext(); } },
      h("label", { for: qId, class: "label" }, "Sample user message"), query,
      h("button", { type: "submit", class: "primary" }, "Show context"));
    replace(panel, h("p", { class: "help" }, "What the model gets before the conversation, for the agent as edited here (saved or not)."), ctxForm, out);
    loaders.Context = showContext;
  }

  // --- versions -----------------------------------------------------------------------------
  if (!creating) {
    const panel = t.panels.get("Versions");
    const loadVersions = async () => {
      replace(panel, h("p", { class: "muted" }, "Loading…"));
      let versions;
      try {
        versions = await get(`/api/agents/${encodeURIComponent(record.id)}/versions`);
      } catch (err) {
        replace(panel, h("p", { class: "error", role: "alert" }, err.message));
        return;
      }
      if (!versions.length) { replace(panel, h("p", { class: "muted" }, "No versions recorded yet: every save records one.")); return; }
      const pick = (label, selected) => {
        const sid = uid("ver");
        const select = h("select", { id: sid }, versions.map((v) => h("option", { value: v.number, selected: v.number === selected }, `Version ${v.number}`)));
        return { select, node: h("div", { class: "field inline" }, h("label", { for: sid, class: "label" }, label), select) };
      };
      const older = pick("Compare version", versions[Math.min(1, versions.length - 1)].number);
      const newer = pick("with version", versions[0].number);
      const diffBox = h("div", { class: "diff-box", "aria-live": "polite" });
      const showDiff = async () => {
        try {
          const [a, b] = await Promise.all([older.select.value, newer.select.value].map((n) => get(`/api/agents/${encodeURIComponent(record.id)}/versions/${n}`)));
          replace(diffBox, diffView(a, b));
        } catch (err) {
          replace(diffBox, h("p", { class: "error", role: "alert" }, err.message));
        }
      };
      older.select.addEventListener("change", showDiff);
      newer.select.addEventListener("change", showDiff);
      const restore = async (v) => {
        if (dirty()) {
          if (!(await confirmDialog("Discard your unsaved changes?", h("p", {}, "Restoring reloads the agent; your unsaved edits would be lost."), "Discard and go on", true))) return;
        }
        if (!(await confirmDialog(`Restore version ${v.number}?`, h("p", {}, `The agent's settings become those of version ${v.number}; this is saved as a new version (the current one stays in the history).`), "Restore"))) return;
        try {
          const restored = await api("POST", `/api/agents/${encodeURIComponent(record.id)}/versions/${v.number}/restore`, { ifMatch: screen.base().version });
          notify(`Restored version ${v.number} (now version ${restored.version}).`, "success");
          window.dispatchEvent(new HashChangeEvent("hashchange"));
        } catch (err) {
          notify(err instanceof ApiError && err.status === 412 ? "The agent was changed meanwhile: reload the page and try again." : err.message, "error");
        }
      };
      replace(panel,
        h("table", { class: "records versions" },
          h("caption", {}, "Versions, newest first"),
          h("thead", {}, h("tr", {}, ["Version", "Saved", "By", "What changed", ""].map((c) => h("th", { scope: "col" }, c || h("span", { class: "visually-hidden" }, "Actions"))))),
          h("tbody", {}, versions.map((v, i) => h("tr", {},
            h("td", {}, String(v.number)),
            h("td", {}, when(v.created_at)),
            h("td", {}, v.github_user || "—"),
            h("td", {}, v.summary === "created" ? "created" : `${v.summary}: ${v.changed_fields.join(", ") || "—"}`),
            h("td", {}, i === 0 ? h("span", { class: "muted" }, "current") : h("button", { type: "button", class: "small", "aria-label": `Restore version ${v.number}`, onClick: () => restore(v) }, "Restore")))))),
        h("div", { class: "filters" }, older.node, newer.node),
        diffBox);
      await showDiff();
    };
    loaders.Versions = loadVersions;
    onSavedHooks.push(() => { loaded.delete("Versions"); loaded.delete("Context"); if (!t.panels.get("Versions").hidden) { loaded.add("Versions"); loadVersions(); } });
  }

  // --- unsaved-changes guard ------------------------------------------------------------------
  const dirty = () => {
    try {
      const { values } = form.values();
      return Object.keys(form.changed(values)).length > 0;
    } catch {
      return true;
    }
  };
  const beforeUnload = (e) => { if (ctx.isCurrent() && dirty()) { e.preventDefault(); e.returnValue = ""; } };
  const guardLinks = async (e) => {
    if (!ctx.isCurrent()) { document.removeEventListener("click", guardLinks, true); window.removeEventListener("beforeunload", beforeUnload); return; }
    const link = e.target.closest && e.target.closest("a[href^='#']");
    if (!link || link.closest("dialog") || !dirty() || link.getAttribute("href") === window.location.hash) return;
    e.preventDefault();
    e.stopPropagation();
    const go = await confirmDialog("Leave without saving?", h("p", {}, "This agent has unsaved changes. Leave the page and lose them?"), "Leave without saving", true);
    if (go) { document.removeEventListener("click", guardLinks, true); window.location.hash = link.getAttribute("href"); }
  };
  document.addEventListener("click", guardLinks, true);
  window.addEventListener("beforeunload", beforeUnload);
  const unsaved = h("p", { class: "unsaved muted", role: "status" });
  const markDirty = () => { unsaved.textContent = dirty() ? "Unsaved changes" : ""; };
  formEl.addEventListener("input", markDirty);
  formEl.addEventListener("change", markDirty);
  onSavedHooks.push(markDirty);
  actions.append(unsaved);

  replace(ctx.main, head, h("div", { class: ["builder", creating && "builder-new"] }, h("div", { class: "builder-main" }, formCard, extras), side));
  t.show("Basics");
}
