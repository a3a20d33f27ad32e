// Chat with an agent: sessions, streamed replies rendered as Markdown, tool calls, usage.

import { bodyMaxLength, del, get, getPage, hasEndpoint, listAll, patch, stream } from "../api.js";
import { announce, append, confirmDialog, dialog, h, notify, replace, uid, when } from "../dom.js";
import { renderInto } from "../markdown.js";
import { attachmentNames, attachmentPicker, chatModelPicker, copyButton, enhanceMessageBody, setSources, toolMeta } from "./chat_parts.js";

function usageText(usage) {
  if (!usage) return "";
  const parts = [];
  if (usage.input_tokens !== undefined) parts.push(`${usage.input_tokens} in`);
  if (usage.output_tokens !== undefined) parts.push(`${usage.output_tokens} out`);
  let text = parts.length ? `${parts.join(" · ")} tokens` : "";
  if (usage.cost_usd) text += ` · $${Number(usage.cost_usd).toFixed(6)}`;
  return text;
}

function toolCallView(call, result) {
  const args = typeof call.arguments === "string" ? call.arguments : JSON.stringify(call.arguments ?? {}, null, 2);
  const resultNode = h("pre", { class: "tool-result" }, result ? result.content ?? "" : "…");
  const meta = toolMeta(); // origin and duration (chat_parts.js)
  meta.set(call);
  if (result) meta.set({ ...call, ...result });
  const summary = h("summary", {}, "Tool call: ", h("code", {}, call.name), meta.el, result && result.is_error ? h("span", { class: "badge status-failed" }, "error") : null);
  const node = h("details", { class: "tool-call", dataset: { callId: call.id || "" } },
    summary,
    h("p", { class: "muted" }, "Arguments"), h("pre", {}, args),
    h("p", { class: "muted" }, "Result"), resultNode);
  node.setResult = (res) => {
    resultNode.textContent = res.content ?? "";
    meta.set({ ...call, ...res });
    if (res.is_error) summary.append(h("span", { class: "badge status-failed" }, "error"));
  };
  return node;
}

/** One message bubble; assistant text is rendered as Markdown, everything else as text. */
function bubble(role, content = "") {
  const body = h("div", { class: "bubble-body" });
  const tools = h("div", { class: "tool-calls" });
  const meta = h("p", { class: "usage muted" });
  const el = h("article", { class: ["message", `message-${role}`], "aria-label": role === "user" ? "You" : "Agent" },
    h("p", { class: "who" }, role === "user" ? "You" : "Agent"), tools, body, meta,
    h("div", { class: "message-tools" }, copyButton(() => text, role === "user" ? "Copy your message" : "Copy the answer")));
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
  return {
    el,
    tools,
    append(delta) {
      final = false;
      text += delta;
      if (!pending) { pending = true; window.requestAnimationFrame(draw); }
    },
    set(full) { text = full; final = true; draw(); },
    text: () => text,
    plain: () => body.textContent,
    usage(u) { meta.textContent = usageText(u); },
  };
}

/** Ask for a chat's new title in a dialog; resolves with it (trimmed) or undefined. */
function askTitle(current) {
  return dialog("Rename chat", (close) => {
    const id = uid("title");
    const input = h("input", { id, type: "text", value: current, autofocus: true, maxlength: 200 });
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

async function renderHistory(list, sessionId) {
  const messages = await listAll(`/api/chat/sessions/${encodeURIComponent(sessionId)}/messages`);
  const calls = new Map();
  let last = null; // the assistant bubble a turn's later messages join (as in the live view)
  for (const m of messages) {
    if (m.role === "tool") {
      const view = calls.get(m.tool_call_id);
      if (view) view.setResult({ content: m.content, is_error: false, ...(m.metadata || {}) });
      continue;
    }
    if (m.role === "system") continue;
    let b;
    if (m.role === "assistant" && last) {
      b = last;
      if (m.content) b.set(b.text() ? `${b.text()}\n\n${m.content}` : m.content);
    } else {
      b = bubble(m.role === "user" ? "user" : "assistant", m.content);
      list.append(b.el);
      if (m.metadata?.attachments?.length) b.el.insertBefore(attachmentNames(m.metadata.attachments), b.el.querySelector(".message-tools"));
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
}

/** `#/chat`, `#/chat/<agent>`, `#/chat/<agent>/<session>`. */
export async function renderChat(ctx, agentId, sessionId) {
  if (!agentId) { await pickAgent(ctx); return; }
  const [agent, sessions, canChat, maxChars] = await Promise.all([
    get(`/api/agents/${encodeURIComponent(agentId)}`),
    getPage("/api/chat/sessions", { agent_id: agentId, limit: 100 }),
    hasEndpoint("post", "/api/agents/{agent_id}/chat"),
    bodyMaxLength("post", "/api/agents/{agent_id}/chat", "message"),
  ]);
  const picker = await chatModelPicker(agent, sessions.items.find((s) => s.id === sessionId));
  if (!ctx.isCurrent()) return;
  let current = sessionId || null;

  const sessionNav = h("nav", { class: "sessions", "aria-label": "Chat sessions" },
    h("a", { href: `#/chat/${agentId}`, class: "button primary" }, "New chat"),
    sessions.items.length ? h("ul", {}, sessions.items.map((s) => h("li", {},
      h("a", { href: `#/chat/${agentId}/${s.id}`, "aria-current": s.id === current ? "page" : null }, s.title || "New chat"),
      h("span", { class: "muted small" }, when(s.last_message_at || s.updated_at)))))
      : h("p", { class: "muted" }, "No earlier chats."));

  // Not live while a reply streams (a screen reader would repeat every re-render); the finished
  // reply is announced once instead.
  const log = h("div", { class: "messages", role: "log", "aria-live": "off", "aria-label": "Conversation", tabindex: "0" });
  const status = h("p", { class: "chat-status muted", role: "status" });
  const inputId = uid("msg");
  const input = h("textarea", { id: inputId, rows: 3, name: "message", placeholder: "Write a message (Enter sends, Shift+Enter for a new line)", "aria-describedby": `${inputId}-err` });
  const err = h("p", { class: "field-error", id: `${inputId}-err`, hidden: true });
  const send = h("button", { type: "submit", class: "primary" }, "Send");
  const stop = h("button", { type: "button", hidden: true }, "Stop");
  const attach = attachmentPicker(); // chat_parts.js
  const composer = h("form", { class: "composer" },
    h("label", { for: inputId, class: "label" }, `Message to ${agent.name}`), input, err, attach.el,
    h("div", { class: "actions" }, send, stop));

  const sessionTools = [];
  if (current) {
    const session = sessions.items.find((s) => s.id === current) || await get(`/api/chat/sessions/${encodeURIComponent(current)}`);
    sessionTools.push(
      h("button", { type: "button", class: "small", onClick: async () => {
        const title = await askTitle(session.title);
        if (!title) return;
        await patch(`/api/chat/sessions/${encodeURIComponent(current)}`, { title });
        notify("Chat renamed.", "success");
        window.dispatchEvent(new HashChangeEvent("hashchange"));
      } }, "Rename"),
      h("button", { type: "button", class: "small danger", onClick: async () => {
        if (!(await confirmDialog("Delete chat", h("p", {}, `Delete “${session.title || "New chat"}” and its messages?`), "Delete", true))) return;
        await del(`/api/chat/sessions/${encodeURIComponent(current)}`);
        notify("Chat deleted.", "success");
        window.location.hash = `#/chat/${agentId}`;
      } }, "Delete chat"));
  }

  replace(ctx.main,
    h("div", { class: "page-head" },
      h("div", {}, h("p", { class: "crumbs" }, h("a", { href: "#/chat" }, "Chat")), h("h1", {}, `Chat with ${agent.name}`)),
      h("div", { class: "row-actions" }, picker?.el, sessionTools, h("a", { href: `#/agents/${agentId}`, class: "button small" }, "Edit agent"))),
    agent.provider_id ? null : h("p", { class: "notice notice-info" },
      h("span", {}, "This agent has no provider yet, so it cannot answer. ", h("a", { href: `#/agents/${agentId}` }, "Choose one in its settings"), ".")),
    h("div", { class: "chat" }, sessionNav,
      h("section", { class: "conversation", "aria-label": "Conversation" }, log, status,
        canChat ? composer : h("p", { class: "notice notice-info" }, "This server has no chat endpoint; past chats are shown read-only."))));

  if (current) await renderHistory(log, current);
  if (!log.children.length) log.append(h("p", { class: "muted empty-chat" }, `Say hello to ${agent.name}. Replies stream in as the model writes them.`));
  log.scrollTop = log.scrollHeight;

  let controller = null;
  stop.addEventListener("click", () => controller && controller.abort());
  // The server refuses a message over its limit; say so before sending, and never render a
  // pasted megabyte text into the conversation (that froze the tab for seconds). A length
  // check only: cheap on every keystroke, whatever was pasted.
  const tooLong = () => {
    if (!maxChars || input.value.length <= maxChars) return null;
    return `This message has ${input.value.length.toLocaleString()} characters; the limit is ${maxChars.toLocaleString()}. `
      + "Shorten it, or add long text to the agent's knowledge (Knowledge page) and ask about it.";
  };
  input.addEventListener("input", () => {
    const problem = tooLong();
    if (problem) err.textContent = problem;
    err.hidden = !problem;  // typing also clears an earlier "write a message first"
    send.disabled = Boolean(problem) || Boolean(controller);
  });
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); composer.requestSubmit(); }
  });
  composer.addEventListener("submit", async (e) => {
    e.preventDefault();
    const problem = tooLong();
    if (problem) { err.textContent = problem; err.hidden = false; input.focus(); return; }
    const text = input.value.trim();
    err.hidden = true;
    if (!text) { err.textContent = "Write a message first."; err.hidden = false; input.focus(); return; }
    let attachments = [];
    try { attachments = await attach.take(); } catch (error) { err.textContent = error.message; err.hidden = false; return; }
    log.querySelector(".empty-chat")?.remove();
    const mine = bubble("user", text);
    if (attachments.length) mine.el.insertBefore(attachmentNames(attachments.map((a) => a.name)), mine.el.querySelector(".message-tools"));
    const reply = bubble("assistant");
    reply.el.dataset.streaming = "true";
    append(log, [mine.el, reply.el]);
    input.value = "";
    send.disabled = true;
    stop.hidden = false;
    status.textContent = `${agent.name} is answering…`;
    controller = new AbortController();
    const calls = new Map();
    const errors = new Set();
    let finished = false;
    const wasNew = !current;
    try {
      await stream("POST", `/api/agents/${encodeURIComponent(agentId)}/chat`, {
        body: { ...(current ? { message: text, session_id: current } : { message: text }), ...(picker ? { model: picker.select.value } : {}), ...(attachments.length ? { attachments } : {}) },
        signal: controller.signal,
        onEvent: ({ event, data }) => {
          if (event === "session") current = data.session_id;
          else if (event === "delta") { reply.append(data.delta || ""); log.scrollTop = log.scrollHeight; }
          else if (event === "tool_call") { const v = toolCallView(data); calls.set(data.id, v); reply.tools.append(v); }
          else if (event === "tool_result") calls.get(data.id)?.setResult(data);
          else if (event === "sources") setSources(reply.el, data.items);
          else if (event === "usage") reply.usage(data.total || data);
          else if (event === "progress" && data.turn) status.textContent = `${agent.name} is answering… (turn ${data.turn}${data.max_turns ? ` of ${data.max_turns}` : ""})`;
          else if (event === "error") {
            // A failed turn sends one error; the same message is still shown only once.
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
      if (error.name === "AbortError") status.textContent = "Stopped.";
      else { reply.el.append(h("p", { class: "error", role: "alert" }, error.message)); status.textContent = ""; }
    } finally {
      reply.set(reply.text());
      delete reply.el.dataset.streaming;
      controller = null;
      send.disabled = false;
      stop.hidden = true;
      input.focus();
    }
    if (finished) announce(`${agent.name} replied: ${reply.plain().slice(0, 300)}`);
    if (wasNew && current && ctx.isCurrent()) {
      // Show the new session in the list without reloading the conversation.
      window.history.replaceState(null, "", `#/chat/${agentId}/${current}`);
      const list = sessionNav.querySelector("ul") || sessionNav.appendChild(h("ul"));
      sessionNav.querySelector("p.muted")?.remove();
      list.prepend(h("li", {}, h("a", { href: `#/chat/${agentId}/${current}`, "aria-current": "page" }, text.split("\n")[0].slice(0, 60))));
    }
  });
  if (canChat) input.focus();
}
