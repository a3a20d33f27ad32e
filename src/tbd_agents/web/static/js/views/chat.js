// Chat with an agent: sessions (search, paging, pin, rename, delete, export), streamed replies
// rendered as Markdown, tool calls, usage, Stop (the partial answer is kept), regenerate and
// edit-and-resend with the versions kept ("2 / 3"), and a failed send that keeps its text.

import { bodyMaxLength, del, get, hasEndpoint, listAll, patch, put, stream } from "../api.js";
import { announce, append, confirmDialog, dialog, download, h, notify, replace, uid, when } from "../dom.js";
import { renderInto } from "../markdown.js";
import { attachmentNames, attachmentPicker, chatModelPicker, copyButton, enhanceMessageBody, setSources, toolMeta } from "./chat_parts.js";

const PAGE = 50; // sessions per page of the sidebar

function usageText(usage) {
  if (!usage) return "";
  const parts = [];
  if (usage.input_tokens !== undefined) parts.push(`${usage.input_tokens} in`);
  if (usage.output_tokens !== undefined) parts.push(`${usage.output_tokens} out`);
  let text = parts.length ? `${parts.join(" · ")} tokens` : "";
  if (usage.cost_usd) text += ` · $${Number(usage.cost_usd).toFixed(6)}`;
  return text;
}

function toolArgs(call) {
  return typeof call.arguments === "string" ? call.arguments : JSON.stringify(call.arguments ?? {}, null, 2);
}

function toolCallView(call, result) {
  const resultNode = h("pre", { class: "tool-result" }, result ? result.content ?? "" : "…");
  const meta = toolMeta(); // origin and duration (chat_parts.js)
  meta.set(call);
  if (result) meta.set({ ...call, ...result });
  const summary = h("summary", {}, "Tool call: ", h("code", {}, call.name), meta.el, result && result.is_error ? h("span", { class: "badge status-failed" }, "error") : null);
  const node = h("details", { class: "tool-call", dataset: { callId: call.id || "" } },
    summary,
    h("p", { class: "muted" }, "Arguments"), h("pre", {}, toolArgs(call)),
    h("p", { class: "muted" }, "Result"), resultNode);
  node.setResult = (res) => {
    resultNode.textContent = res.content ?? "";
    meta.set({ ...call, ...res });
    if (res.is_error) summary.append(h("span", { class: "badge status-failed" }, "error"));
  };
  return node;
}

/**
 * One message bubble, the only place a bubble is built: assistant text is rendered as Markdown,
 * everything else as text. `message`: the stored message when there is one (id, versions,
 * metadata…); `bar` holds the bubble's buttons (versions, Edit, Regenerate).
 */
function bubble(role, content = "", message = null) {
  const body = h("div", { class: "bubble-body" });
  const tools = h("div", { class: "tool-calls" });
  const meta = h("p", { class: "usage muted" });
  const bar = h("div", { class: "bubble-bar" });
  const el = h("article", { class: ["message", `message-${role}`], "aria-label": role === "user" ? "You" : "Agent" },
    h("p", { class: "who" }, role === "user" ? "You" : "Agent"), tools, body, meta,
    h("div", { class: "message-tools" }, copyButton(() => text, role === "user" ? "Copy your message" : "Copy the answer")), bar);
  let text = content;
  let pending = false;
  let final = true; // code blocks get copy buttons and highlighting once the text is final
  const draw = () => {
    pending = false;
    if (role === "assistant") renderInto(body, text);
    else body.textContent = text;
    if (final && role === "assistant") enhanceMessageBody(body);
  };
  draw();
  const b = {
    el,
    role,
    tools,
    bar,
    body,
    message,
    append(delta) {
      final = false;
      text += delta;
      if (!pending) { pending = true; window.requestAnimationFrame(draw); }
    },
    set(full) { text = full; final = true; draw(); },
    text: () => text,
    plain: () => body.textContent,
    usage(u) { meta.textContent = usageText(u); },
    stopped() {
      if (el.querySelector(".stopped-mark")) return;
      meta.before(h("p", { class: "stopped-mark" }, h("span", { class: "badge" }, "Stopped"), " The answer was stopped before it finished."));
    },
  };
  if (message && message.metadata && message.metadata.stopped) b.stopped();
  return b;
}

/** Ask for a chat's new title in a dialog; resolves with it (trimmed) or undefined. */
function askTitle(current) {
  return dialog("Rename chat", (close) => {
    const id = uid("title");
    const input = h("input", { id, type: "text", value: current || "", autofocus: true, maxlength: 200 });
    const form = h("form", { class: "form" },
      h("div", { class: "field" }, h("label", { for: id, class: "label" }, "Title"), input),
      h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Rename"),
        h("button", { type: "button", onClick: () => close(undefined) }, "Cancel")));
    form.addEventListener("submit", (e) => { e.preventDefault(); close(input.value.trim() || undefined); });
    return form;
  });
}

async function pickAgent(ctx) {
  const agents = await listAll("/api/agents");
  if (!ctx.isCurrent()) return;
  if (!agents.length) {
    replace(ctx.main, h("h1", {}, "Chat"), h("div", { class: "empty card" },
      h("p", {}, "There is no agent to chat with yet. Add a provider (and a token with its API key), then create an agent."),
      h("a", { href: "#/agents/new", class: "button primary" }, "Create an agent")));
    return;
  }
  replace(ctx.main, h("h1", {}, "Chat"), h("p", {}, "Choose an agent to chat with:"),
    h("ul", { class: "cards" }, agents.map((a) => h("li", { class: "card" },
      h("h2", {}, h("a", { href: `#/chat/${a.id}` }, a.name)),
      h("p", { class: "muted" }, a.description || a.model || "")))));
}

/** A file name from a chat title. */
function fileName(title, ext) {
  const slug = (title || "chat").toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "").slice(0, 60) || "chat";
  return `${slug}.${ext}`;
}

/** The conversation as Markdown: who said what, tool calls with arguments and results, usage. */
export function chatMarkdown(detail, agentName) {
  const results = new Map(detail.messages.filter((m) => m.role === "tool").map((m) => [m.tool_call_id, m]));
  const fence = (text) => {
    const ticks = "`".repeat(Math.max(3, ...[...String(text).matchAll(/`+/g)].map((x) => x[0].length + 1)));
    return `${ticks}\n${text}\n${ticks}`;
  };
  const out = [`# ${detail.title || "Chat"}`, "", `Agent: ${agentName} · exported ${new Date().toISOString()}`, ""];
  for (const m of detail.messages) {
    if (m.role === "tool" || m.role === "system") continue;
    out.push(m.role === "user" ? "## You" : "## Agent", "");
    if (m.content) out.push(m.content, "");
    if (m.metadata && m.metadata.stopped) out.push("_(stopped before it finished)_", "");
    for (const c of m.tool_calls || []) {
      const fn = c.function || c;
      const result = results.get(c.id);
      out.push(`### Tool call: ${fn.name || c.name}`, "", "Arguments:", "", fence(toolArgs({ arguments: fn.arguments ?? c.arguments })), "");
      if (result) out.push("Result:", "", fence(result.content ?? ""), "");
    }
    if (m.usage) out.push(`_Usage: ${usageText(m.usage)}_`, "");
  }
  return out.join("\n");
}

/** `#/chat`, `#/chat/<agent>`, `#/chat/<agent>/<session>`. */
export async function renderChat(ctx, agentId, sessionId) {
  if (!agentId) { await pickAgent(ctx); return; }
  const base = `/api/agents/${encodeURIComponent(agentId)}/chat`;
  const [agent, firstPage, canChat, maxChars] = await Promise.all([
    get(`/api/agents/${encodeURIComponent(agentId)}`),
    get(`${base}/sessions`, { limit: PAGE, pinned_first: true }),
    hasEndpoint("post", "/api/agents/{agent_id}/chat"),
    bodyMaxLength("post", "/api/agents/{agent_id}/chat", "message"),
  ]);
  // The model choice kept on the session (its metadata: the session list does not carry it).
  // (An agent without a provider has no choice to show: no request then.)
  const chosen = sessionId && agent.provider_id ? await get(`/api/chat/sessions/${encodeURIComponent(sessionId)}`).catch(() => undefined) : undefined;
  const picker = await chatModelPicker(agent, chosen);
  if (!ctx.isCurrent()) return;
  let current = sessionId || null;
  let session = current ? firstPage.find((s) => s.id === current) || null : null;
  const sessionUrl = (id) => `${base}/sessions/${encodeURIComponent(id)}`;

  // ---- the sessions sidebar: search, list (pinned first), Load more ----
  const searchId = uid("search");
  const search = h("input", { id: searchId, type: "search", placeholder: "Title or message text", autocomplete: "off" });
  const list = h("ul", { class: "session-list" });
  const listNote = h("p", { class: "muted", role: "status" });
  const more = h("button", { type: "button", class: "small", hidden: true }, "Load more");
  const sessionNav = h("nav", { class: "sessions", "aria-label": "Chat sessions" },
    h("a", { href: `#/chat/${agentId}`, class: "button primary" }, "New chat"),
    h("form", { role: "search", class: "session-search", onSubmit: (e) => e.preventDefault() },
      h("label", { for: searchId, class: "label" }, "Search chats"), search),
    list, listNote, more);
  let loaded = 0;
  let query = "";
  const sessionItem = (s) => h("li", { dataset: { id: s.id } },
    h("a", { href: `#/chat/${agentId}/${s.id}`, "aria-current": s.id === current ? "page" : null },
      s.pinned ? h("span", { class: "pin-mark", title: "Pinned" }, h("span", { "aria-hidden": "true" }, "★ "), h("span", { class: "visually-hidden" }, "Pinned: ")) : null,
      h("span", { class: "session-title" }, s.title || "New chat")),
    h("span", { class: "muted small" }, when(s.last_message_at || s.updated_at)));
  const showPage = (items, reset) => {
    if (reset) { list.replaceChildren(); loaded = 0; }
    append(list, items.map(sessionItem));
    loaded += items.length;
    more.hidden = items.length < PAGE;
    listNote.textContent = loaded ? "" : query ? `No chats match “${query}”.` : "No earlier chats.";
  };
  const loadSessions = async (reset) => {
    const items = await get(`${base}/sessions`, { limit: PAGE, skip: reset ? 0 : loaded, pinned_first: true, q: query || undefined });
    if (!ctx.isCurrent()) return;
    showPage(items, reset);
    if (!reset && items.length) list.querySelector(`li[data-id="${items[0].id}"] a`)?.focus();
  };
  showPage(firstPage, true);
  more.addEventListener("click", () => loadSessions(false).catch((e) => notify(e.message, "error")));
  let searchTimer = 0;
  search.addEventListener("input", () => {
    window.clearTimeout(searchTimer);
    searchTimer = window.setTimeout(() => {
      query = search.value.trim();
      loadSessions(true).catch((e) => notify(e.message, "error"));
    }, 250);
  });

  // ---- the conversation and the composer ----
  // Not live while a reply streams (a screen reader would repeat every re-render); the finished
  // reply is announced once instead.
  const log = h("div", { class: "messages", role: "log", "aria-live": "off", "aria-label": "Conversation", tabindex: "0" });
  const status = h("p", { class: "chat-status muted", role: "status" });
  const inputId = uid("msg");
  const input = h("textarea", { id: inputId, rows: 3, name: "message", autofocus: true, "data-autofocus": true, placeholder: "Write a message (Enter sends, Shift+Enter for a new line)", "aria-describedby": `${inputId}-err` });
  const err = h("p", { class: "field-error", id: `${inputId}-err`, hidden: true });
  const send = h("button", { type: "submit", class: "primary" }, "Send");
  const stop = h("button", { type: "button", hidden: true }, "Stop");
  const retry = h("button", { type: "button", hidden: true }, "Retry");
  const attach = attachmentPicker(); // chat_parts.js
  const composer = h("form", { class: "composer" },
    h("label", { for: inputId, class: "label" }, `Message to ${agent.name}`), input, err, attach.el,
    h("div", { class: "actions" }, send, retry, stop));

  // ---- the session's tools (also shown as soon as a new chat has its session) ----
  const tools = h("div", { class: "row-actions" });
  const currentItem = () => list.querySelector(`li[data-id="${current}"]`);
  const drawTools = () => {
    replace(tools,
      session ? [
        h("button", { type: "button", class: "small", "aria-pressed": session.pinned ? "true" : "false", onClick: togglePin }, session.pinned ? "Unpin" : "Pin"),
        h("button", { type: "button", class: "small", onClick: rename }, "Rename"),
        h("button", { type: "button", class: "small", onClick: () => exportChat("md") }, "Export Markdown"),
        h("button", { type: "button", class: "small", onClick: () => exportChat("json") }, "Export JSON"),
        h("button", { type: "button", class: "small danger", onClick: remove }, "Delete chat"),
      ] : null,
      picker?.el,
      h("a", { href: `#/agents/${agentId}`, class: "button small" }, "Edit agent"));
  };
  async function togglePin() {
    session = await patch(sessionUrl(current), { pinned: !session.pinned });
    notify(session.pinned ? "Chat pinned." : "Chat unpinned.", "success");
    drawTools();
    tools.querySelector("[aria-pressed]")?.focus();
    await loadSessions(true);
  }
  async function rename() {
    const title = await askTitle(session.title);
    if (!title) return;
    session = await patch(sessionUrl(current), { title });
    const item = currentItem();
    if (item) item.querySelector(".session-title").textContent = session.title;
    notify("Chat renamed.", "success");
  }
  async function remove() {
    if (!(await confirmDialog("Delete chat", h("p", {}, `Delete “${session.title || "New chat"}” and its messages?`), "Delete", true))) return;
    await del(sessionUrl(current));
    currentItem()?.remove();
    notify("Chat deleted.", "success");
    window.location.hash = `#/chat/${agentId}`;
  }
  async function exportChat(kind) {
    const detail = await get(sessionUrl(current), { active: true });
    if (kind === "json") {
      const data = { format: "tbd-agents-chat", exported_at: new Date().toISOString(), agent: { id: agent.id, name: agent.name }, ...detail };
      download(fileName(detail.title, "json"), JSON.stringify(data, null, 2), "application/json");
    } else {
      download(fileName(detail.title, "md"), chatMarkdown(detail, agent.name), "text/markdown");
    }
  }
  const heading = h("h1", {}, `Chat with ${agent.name}`);

  replace(ctx.main,
    h("div", { class: "page-head" },
      h("div", {}, h("p", { class: "crumbs" }, h("a", { href: "#/chat" }, "Chat")), heading),
      tools),
    agent.provider_id ? null : h("p", { class: "notice notice-info" },
      h("span", {}, "This agent has no provider yet, so it cannot answer. ", h("a", { href: `#/agents/${agentId}` }, "Choose one in its settings"), ".")),
    h("div", { class: "chat" }, sessionNav,
      h("section", { class: "conversation", "aria-label": "Conversation" }, log, status,
        canChat ? composer : h("p", { class: "notice notice-info" }, "This server has no chat endpoint; past chats are shown read-only."))));

  let controller = null;
  const busy = () => Boolean(controller);

  /** Draw the active branch: a turn's assistant and tool messages join one bubble. */
  const drawConversation = (messages) => {
    log.replaceChildren();
    const calls = new Map();
    let last = null;
    for (const m of messages) {
      if (m.role === "tool") {
        calls.get(m.tool_call_id)?.setResult({ content: m.content, is_error: false, ...(m.metadata || {}) });
        continue;
      }
      if (m.role === "system") continue;
      let b;
      if (m.role === "assistant" && last) {
        b = last;
        if (m.content) b.set(b.text() ? `${b.text()}\n\n${m.content}` : m.content);
        if (m.metadata && m.metadata.stopped) b.stopped();
      } else {
        b = bubble(m.role === "user" ? "user" : "assistant", m.content, m);
        log.append(b.el);
        if (m.metadata?.attachments?.length) b.el.insertBefore(attachmentNames(m.metadata.attachments), b.el.querySelector(".message-tools"));
        decorate(b);
      }
      last = m.role === "assistant" ? b : null;
      for (const c of m.tool_calls || []) {
        const fn = c.function || c;
        const view = toolCallView({ id: c.id, name: fn.name || c.name, arguments: fn.arguments ?? c.arguments });
        calls.set(c.id, view);
        b.tools.append(view);
      }
      if (m.usage) b.usage(m.usage);
      if (m.metadata?.citations) setSources(b.el, m.metadata.citations);
    }
    markLast();
    if (!log.children.length) log.append(h("p", { class: "muted empty-chat" }, `Say hello to ${agent.name}. Replies stream in as the model writes them.`));
    log.scrollTop = log.scrollHeight;
  };
  const loadConversation = async () => {
    const detail = await get(sessionUrl(current), { active: true });
    if (!ctx.isCurrent()) return;
    session = { ...detail, messages: undefined };
    drawConversation(detail.messages);
  };

  /** Version arrows ("2 / 3") and Edit on a bubble drawn from a stored message. */
  function decorate(b) {
    const m = b.message;
    if (!m) return;
    const v = m.versions;
    if (v && v.count > 1) {
      const go = (index) => async () => {
        if (busy()) { notify("Wait until the answer has finished (or stop it) to switch versions.", "info"); return; }
        const detail = await put(`${sessionUrl(current)}/branch`, { message_id: v.ids[index - 1] });
        drawConversation(detail.messages);
        announce(`Version ${index} of ${v.count} shown.`);
        log.querySelector(`[data-message-id="${v.ids[index - 1]}"] .versions button:not([disabled])`)?.focus();
      };
      const what = b.role === "user" ? "message" : "answer";
      b.bar.append(h("span", { class: "versions", role: "group", "aria-label": `Versions of this ${what}` },
        h("button", { type: "button", class: "small link", "aria-label": `Previous version of this ${what}`, disabled: v.index <= 1, onClick: go(v.index - 1) }, "‹"),
        h("span", { class: "version-count" }, `${v.index} / ${v.count}`),
        h("button", { type: "button", class: "small link", "aria-label": `Next version of this ${what}`, disabled: v.index >= v.count, onClick: go(v.index + 1) }, "›")));
    }
    b.el.dataset.messageId = m.id;
    if (b.role === "user" && canChat) b.bar.append(h("button", { type: "button", class: "small", onClick: () => startEdit(b) }, "Edit"));
  }

  /** Only the last answer has Regenerate. */
  function markLast() {
    log.querySelectorAll(".regenerate").forEach((x) => x.remove());
    const answers = log.querySelectorAll(".message-assistant");
    const lastAnswer = answers[answers.length - 1];
    if (!canChat || !current || !lastAnswer || lastAnswer !== log.lastElementChild) return;
    lastAnswer.querySelector(".bubble-bar").append(h("button", { type: "button", class: "small regenerate", onClick: () => regenerate() }, "Regenerate"));
  }

  function startEdit(b) {
    if (busy() || b.el.querySelector("form")) return;
    const id = uid("edit");
    const area = h("textarea", { id, rows: 3, value: b.text() });
    area.value = b.text();
    const cancel = () => { form.remove(); b.body.hidden = false; b.bar.hidden = false; b.bar.querySelector("button:last-child")?.focus(); };
    const form = h("form", { class: "edit-form" },
      h("label", { for: id, class: "label" }, "Edit message"), area,
      h("div", { class: "actions" }, h("button", { type: "submit", class: "primary small" }, "Send edit"),
        h("button", { type: "button", class: "small", onClick: cancel }, "Cancel")));
    area.addEventListener("keydown", (e) => { if (e.key === "Escape") { e.preventDefault(); cancel(); } });
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const text = area.value.trim();
      if (!text) { area.focus(); return; }
      if (maxChars && text.length > maxChars) { notify(`The limit is ${maxChars.toLocaleString()} characters.`, "error"); return; }
      // The edited message and everything after it leave the view (they stay stored as the
      // other version).
      while (b.el.nextSibling) b.el.nextSibling.remove();
      b.el.remove();
      runTurn({ text, body: { message: text, session_id: current, edit_of: b.message.id, ...(picker ? { model: picker.select.value } : {}) }, refetch: true });
    });
    b.body.hidden = true;
    b.bar.hidden = true;
    b.el.append(form);
    area.focus();
  }

  function regenerate() {
    if (busy()) return;
    const answers = log.querySelectorAll(".message-assistant");
    answers[answers.length - 1]?.remove();
    runTurn({ path: `${sessionUrl(current)}/regenerate`, refetch: true });
  }

  // The server refuses a message over its limit; say so before sending, and never render a
  // pasted megabyte text into the conversation (that froze the tab for seconds). A length
  // check only: cheap on every keystroke, whatever was pasted.
  const tooLong = () => {
    if (!maxChars || input.value.length <= maxChars) return null;
    return `This message has ${input.value.length.toLocaleString()} characters; the limit is ${maxChars.toLocaleString()}. `
      + "Shorten it, or add long text to the agent's knowledge (Knowledge page) and ask about it.";
  };

  /**
   * One streamed turn. `text`/`body`: a message (new, or `edit_of` an earlier one); `path`
   * alone: the regenerate stream. A send that fails before the server took the message puts
   * the text back in the composer and offers Retry; a run that fails offers Retry (regenerate).
   */
  async function runTurn({ text = null, body = null, path = `${base}`, refetch = false, attachments = [] }) {
    log.querySelector(".empty-chat")?.remove();
    log.querySelectorAll(".regenerate").forEach((x) => x.remove());
    const mine = text !== null ? bubble("user", text) : null;
    if (mine && attachments.length) mine.el.insertBefore(attachmentNames(attachments.map((a) => a.name)), mine.el.querySelector(".message-tools"));
    const reply = bubble("assistant");
    reply.el.dataset.streaming = "true";
    append(log, [mine && mine.el, reply.el]);
    log.scrollTop = log.scrollHeight;
    send.disabled = true;
    retry.hidden = true;
    stop.hidden = false;
    status.textContent = `${agent.name} is answering…`;
    controller = new AbortController();
    const calls = new Map();
    const errors = new Set();
    let accepted = false; // the server took the message (its `session` event came)
    let failed = false;
    let finished = false;
    const wasNew = !current;
    try {
      await stream("POST", path, {
        body: body ?? undefined,
        signal: controller.signal,
        onEvent: ({ event, data }) => {
          if (event === "session") {
            accepted = true;
            current = data.session_id;
            if (mine && data.user_message_id) mine.el.dataset.messageId = data.user_message_id;
          }
          else if (event === "delta") { reply.append(data.delta || ""); log.scrollTop = log.scrollHeight; }
          else if (event === "tool_call") { const v = toolCallView(data); calls.set(data.id, v); reply.tools.append(v); }
          else if (event === "tool_result") calls.get(data.id)?.setResult(data);
          else if (event === "sources") setSources(reply.el, data.items);
          else if (event === "usage") reply.usage(data.total || data);
          else if (event === "progress" && data.turn) status.textContent = `${agent.name} is answering… (turn ${data.turn}${data.max_turns ? ` of ${data.max_turns}` : ""})`;
          else if (event === "error") {
            // A failed turn sends one error; the same message is still shown only once.
            failed = true;
            const message = data.message || "The run failed.";
            if (!errors.has(message)) { errors.add(message); reply.el.append(h("p", { class: "error", role: "alert" }, message)); }
          }
          else if (event === "done") {
            if (data.result && !reply.text()) reply.set(data.result);
            if (data.citations?.length) setSources(reply.el, data.citations);
            reply.usage(data.usage);
          }
        },
      });
      status.textContent = "";
      finished = true;
    } catch (error) {
      if (error.name === "AbortError") {
        status.textContent = "Stopped. The answer so far is kept.";
        reply.stopped();
      } else if (!accepted) {
        // Nothing was stored: take the turn back out of the view and keep the text to send again.
        mine?.el.remove();
        reply.el.remove();
        status.textContent = "";
        if (text !== null && body && !body.edit_of && !input.value) input.value = text;
        err.textContent = `Not sent: ${error.message}`;
        err.hidden = false;
        announce(`${err.textContent} Your text is still in the message box; Retry sends it again.`);
        retry.hidden = false;
        retry.onclick = () => {
          retry.hidden = true;
          err.hidden = true;
          if (body && !body.edit_of) composer.requestSubmit(); // what the composer holds now
          else runTurn({ text, body, path, refetch });
        };
        if (refetch && current) await loadConversation().catch(() => {});
      } else {
        failed = true;
        reply.el.append(h("p", { class: "error", role: "alert" }, error.message));
        status.textContent = "";
      }
    } finally {
      reply.set(reply.text());
      delete reply.el.dataset.streaming;
      controller = null;
      send.disabled = Boolean(tooLong());
      stop.hidden = true;
    }
    if (failed && accepted) {
      reply.bar.append(h("button", { type: "button", class: "small", onClick: () => { reply.el.remove(); runTurn({ path: `${sessionUrl(current)}/regenerate`, refetch: true }); } }, "Retry"));
    }
    if (finished) announce(`${agent.name} replied: ${reply.plain().slice(0, 300)}`);
    if (accepted && wasNew && ctx.isCurrent()) {
      // The new session: its address, its place in the list and its tools, without a reload.
      window.history.replaceState(null, "", `#/chat/${agentId}/${current}`);
      session = { id: current, title: (text || "").split("\n")[0].slice(0, 80), pinned: false };
      list.querySelectorAll("a[aria-current]").forEach((a) => a.removeAttribute("aria-current"));
      list.prepend(sessionItem({ ...session, updated_at: new Date().toISOString() }));
      listNote.textContent = "";
      drawTools();
    }
    if (accepted && refetch && finished && ctx.isCurrent()) await loadConversation();
    else if (accepted) {
      if (mine && mine.el.dataset.messageId) {
        mine.message = { id: mine.el.dataset.messageId };
        decorate(mine);
      }
      markLast();
    }
    if (ctx.isCurrent()) input.focus();
  }

  stop.addEventListener("click", () => controller && controller.abort());
  input.addEventListener("input", () => {
    const problem = tooLong();
    if (problem) err.textContent = problem;
    err.hidden = !problem;  // typing also clears an earlier "write a message first"
    send.disabled = Boolean(problem) || busy();
  });
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); composer.requestSubmit(); }
  });
  composer.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (busy()) return;
    const problem = tooLong();
    if (problem) { err.textContent = problem; err.hidden = false; input.focus(); return; }
    const text = input.value.trim();
    err.hidden = true;
    retry.hidden = true;
    if (!text) { err.textContent = "Write a message first."; err.hidden = false; input.focus(); return; }
    let attachments = [];
    try { attachments = await attach.take(); } catch (error) { err.textContent = error.message; err.hidden = false; return; }
    input.value = "";
    const body = { message: text, ...(current ? { session_id: current } : {}), ...(picker ? { model: picker.select.value } : {}), ...(attachments.length ? { attachments } : {}) };
    runTurn({ text, body, attachments });
  });

  if (current) {
    await loadConversation();
    if (!ctx.isCurrent()) return;
  } else {
    drawConversation([]);
  }
  drawTools();
  if (canChat) input.focus();
}
