// The parts of a chat message beyond its text: copy buttons, highlighted code blocks, the
// numbered sources of an answer (with a dialog showing the passage), a tool call's duration and
// origin, the model picker of the chat header and file attachments of the composer.

import { get } from "../api.js";
import { announce, dialog, h, uid } from "../dom.js";
import { highlightWithin } from "../highlight.js";

/** Put `text` on the clipboard; true when it worked. */
async function writeClipboard(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    return false;
  }
}

/**
 * A visible, focusable "Copy" button copying `getText()`; says "Copied" (aria-live). Its visible
 * word comes from CSS (`data-state`), so the message's text stays the message's own.
 */
export function copyButton(getText, label = "Copy") {
  const button = h("button", { type: "button", class: "small copy-button", "aria-label": label, title: label });
  let timer = 0;
  button.addEventListener("click", async () => {
    const ok = await writeClipboard(getText());
    button.dataset.state = ok ? "copied" : "failed";
    announce(ok ? "Copied to the clipboard." : "Could not copy: the browser refused access to the clipboard.");
    window.clearTimeout(timer);
    timer = window.setTimeout(() => { delete button.dataset.state; }, 2000);
  });
  return button;
}

/**
 * Give every code block in a rendered message a copy button and syntax highlighting. Called
 * after the text is final (not on every streamed piece): the library loads on first use.
 */
export function enhanceMessageBody(body) {
  const blocks = [...body.querySelectorAll("pre")];
  blocks.forEach((pre, i) => {
    if (pre.parentElement?.classList.contains("code-block")) return;
    const code = pre.querySelector("code");
    const lang = code ? [...code.classList].find((c) => c.startsWith("language-"))?.slice(9) : "";
    const wrap = h("div", { class: "code-block" },
      h("div", { class: "code-tools" },
        h("span", { class: "muted small code-lang", dataset: { lang: lang || "code" } }),
        copyButton(() => (code || pre).textContent, `Copy code block ${i + 1}`)));
    pre.replaceWith(wrap);
    wrap.append(pre);
  });
  if (blocks.length) return highlightWithin(body).catch(() => {});
  return Promise.resolve();
}

/** "1.2 s" / "35 ms" for a duration in milliseconds, or "". */
export function formatDuration(ms) {
  if (ms === undefined || ms === null || !Number.isFinite(Number(ms))) return "";
  const n = Number(ms);
  return n < 1000 ? `${Math.round(n)} ms` : `${(n / 1000).toFixed(n < 10000 ? 1 : 0)} s`;
}

/** Where a tool comes from, for people: "MCP server github", "custom tool", "built-in". */
export function originText(origin, source) {
  let o = origin;
  if (!o && source) {
    const [kind, ...rest] = String(source).split(":");
    o = { kind, name: rest.join(":") };
  }
  if (!o) return "";
  if (o.kind === "mcp") return `MCP server ${o.name}`;
  if (o.kind === "custom") return o.name ? `custom tool ${o.name}` : "custom tool";
  if (o.kind === "plugin") return `plugin ${o.name}`;
  if (o.kind === "builtin") return "built-in";
  return "";
}

/** The "origin · duration" line of a tool call (updated when its result arrives). */
export function toolMeta() {
  const el = h("span", { class: "tool-meta muted small" });
  return {
    el,
    set({ origin, source, duration_ms: ms } = {}) {
      const parts = [originText(origin, source), formatDuration(ms)].filter(Boolean);
      if (parts.length) el.textContent = ` · ${parts.join(" · ")}`;
    },
  };
}

/** Show the passage of one source in a dialog, with a link to its knowledge item. */
export function openPassage(citation) {
  return dialog(`[${citation.ref}] ${citation.title || "Source"}`, (close) => h("div", { class: "passage" },
    h("blockquote", { class: "passage-text" }, citation.snippet || "The passage's text was not kept with this answer."),
    h("p", { class: "muted small" }, `Chunk ${Number(citation.chunk_index ?? 0) + 1}`,
      citation.score ? ` · score ${Number(citation.score).toFixed(3)}` : ""),
    h("div", { class: "actions" },
      citation.item_id ? h("a", { href: `#/knowledge-items/${encodeURIComponent(citation.item_id)}`, class: "button", onClick: () => close() }, "Open the knowledge item") : null,
      h("button", { type: "button", class: "primary", onClick: () => close() }, "Close"))));
}

/** The numbered sources of an answer (null when there are none). */
export function sourcesView(citations) {
  if (!citations || !citations.length) return null;
  const headingId = uid("sources");
  return h("section", { class: "sources", "aria-labelledby": headingId },
    h("h3", { id: headingId, class: "small" }, "Sources"),
    h("ol", {}, citations.map((c) => h("li", { value: c.ref },
      h("button", { type: "button", class: "link", onClick: () => openPassage(c) }, c.title || c.item_id || `Source ${c.ref}`)))));
}

/** Replace `message`'s sources (its `.sources` section) with these. */
export function setSources(container, citations) {
  container.querySelector(".sources")?.remove();
  const view = sourcesView(citations);
  if (view) container.append(view);
}

/**
 * The chat's model picker: a labelled select of the agent's provider's models. Resolves to null
 * when there is nothing to choose (no provider, a single model). `onChange(model)`.
 */
export function modelPicker(models, selected, onChange) {
  const unique = [...new Set(models.filter(Boolean))];
  if (unique.length < 2) return null;
  const id = uid("model");
  const select = h("select", { id, class: "model-select" },
    unique.map((m) => h("option", { value: m, selected: m === selected }, m)));
  select.addEventListener("change", () => { onChange(select.value); announce(`Model for this chat: ${select.value}.`); });
  return { el: h("div", { class: "model-picker" }, h("label", { for: id, class: "label" }, "Model"), select), select };
}

/**
 * The model picker of a chat with `agent` (null without a provider or a choice): its
 * provider's configured models, the session's earlier choice (`metadata.model`) selected.
 */
export async function chatModelPicker(agent, session) {
  if (!agent.provider_id) return null;
  let listing;
  try {
    listing = await get(`/api/providers/${encodeURIComponent(agent.provider_id)}/models`);
  } catch {
    return null; // a provider of another owner: the agent's model it is
  }
  const models = [agent.model, listing.default_model, ...(listing.models || [])];
  const selected = session?.metadata?.model || agent.model || listing.default_model;
  return modelPicker(models, selected, () => {});
}

const IMAGE_TYPES = ["image/png", "image/jpeg", "image/gif", "image/webp"];
const TEXT_EXTENSIONS = /\.(txt|md|markdown|csv|tsv|json|jsonl|ya?ml|toml|ini|cfg|conf|log|xml|html?|css|js|mjs|ts|tsx|jsx|py|rb|go|rs|java|kt|c|h|cc|cpp|hpp|cs|php|sh|bash|zsh|sql|rst|tex|diff|patch)$/i;
/** The server's limits (services/chat_attachments.py), checked here before anything is sent. */
export const ATTACHMENT_LIMITS = { files: 8, imageBytes: 5 * 1024 * 1024, fileBytes: 10 * 1024 * 1024, textChars: 1_000_000 };

function kindOf(file) {
  if (IMAGE_TYPES.includes(file.type)) return "image";
  if (file.type.startsWith("image/")) return "unsupported-image";
  if (file.type.startsWith("text/") || TEXT_EXTENSIONS.test(file.name) || file.type === "application/json") return "text";
  if (file.type === "application/pdf" || /\.pdf$/i.test(file.name)) return "binary";
  return "unsupported";
}

function sizeText(bytes) {
  return bytes < 1024 * 1024 ? `${Math.ceil(bytes / 1024)} KB` : `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

function readAs(file, how) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error || new Error(`could not read ${file.name}`));
    if (how === "text") reader.readAsText(file);
    else reader.readAsDataURL(file);
  });
}

/** Why `file` cannot be attached (null: it can). */
export function attachmentProblem(file) {
  const kind = kindOf(file);
  if (kind === "unsupported-image") return `${file.name}: ${file.type} images are not supported; attach PNG, JPEG, GIF or WebP.`;
  if (kind === "unsupported") return `${file.name}: only text files, PDFs and images can be attached.`;
  if (file.size === 0) return `${file.name} is empty.`;
  const limit = kind === "image" ? ATTACHMENT_LIMITS.imageBytes : ATTACHMENT_LIMITS.fileBytes;
  if (file.size > limit) return `${file.name} has ${sizeText(file.size)}; the limit is ${sizeText(limit)}.`;
  return null;
}

/**
 * The composer's "Attach files" control: a file input, the chosen files (each removable; images
 * previewed) and the problems found (too big, unsupported type, too many). `take()` resolves to
 * the request's `attachments` (text as text, other files as base64) and empties the list.
 */
export function attachmentPicker() {
  const id = uid("attach");
  const input = h("input", { id, type: "file", multiple: true, class: "attach-input", "aria-describedby": `${id}-err` });
  const list = h("ul", { class: "attachments", "aria-label": "Attached files" });
  const err = h("p", { class: "field-error", id: `${id}-err`, role: "alert", hidden: true });
  let files = [];
  const draw = () => {
    list.replaceChildren(...files.map((f, i) => h("li", {},
      f.preview ? h("img", { src: f.preview, alt: "" }) : null,
      h("span", {}, `${f.file.name} (${sizeText(f.file.size)})`),
      h("button", { type: "button", class: "link", "aria-label": `Remove ${f.file.name}`, onClick: () => { files.splice(i, 1); draw(); input.focus(); } }, "×"))));
    list.hidden = !files.length;
  };
  input.addEventListener("change", async () => {
    const problems = [];
    for (const file of input.files) {
      const problem = attachmentProblem(file);
      if (problem) { problems.push(problem); continue; }
      if (files.length >= ATTACHMENT_LIMITS.files) { problems.push(`At most ${ATTACHMENT_LIMITS.files} files per message.`); break; }
      const entry = { file, kind: kindOf(file) };
      if (entry.kind === "image") entry.preview = await readAs(file, "data");
      files.push(entry);
    }
    input.value = "";
    err.textContent = problems.join(" ");
    err.hidden = !problems.length;
    draw();
    if (files.length) announce(`${files.length} file${files.length === 1 ? "" : "s"} attached.`);
  });
  draw();
  return {
    el: h("div", { class: "attach" }, h("label", { for: id, class: "label" }, "Attach files"), input, list, err),
    count: () => files.length,
    names: () => files.map((f) => f.file.name),
    async take() {
      const out = [];
      for (const f of files) {
        if (f.kind === "text") {
          const text = await readAs(f.file, "text");
          if (text.length > ATTACHMENT_LIMITS.textChars) throw new Error(`${f.file.name} has ${text.length.toLocaleString()} characters; the limit is ${ATTACHMENT_LIMITS.textChars.toLocaleString()}.`);
          out.push({ name: f.file.name, media_type: f.file.type || "text/plain", text });
        } else {
          const url = f.preview || await readAs(f.file, "data");
          out.push({ name: f.file.name, media_type: f.file.type || "application/pdf", data: String(url).split(",", 2)[1] || "" });
        }
      }
      files = [];
      draw();
      err.hidden = true;
      return out;
    },
  };
}

/** The names of a message's attachments, shown in its bubble. */
export function attachmentNames(names) {
  if (!names || !names.length) return null;
  return h("ul", { class: "attachments", "aria-label": "Attached files" }, names.map((n) => h("li", {}, n)));
}
