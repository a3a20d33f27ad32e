// Small DOM helpers. Text always goes in as text nodes: nothing here parses HTML.

/**
 * Build an element. `props` keys: `class`, `text`, `dataset` (object), `on<Event>` (listener),
 * `attrs` (object of attributes), and any other key is set as an attribute when it is a string,
 * number or true (false/null/undefined are skipped). Children may be nodes, strings, numbers,
 * arrays of those, or null/false (skipped).
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = Array.isArray(value) ? value.filter(Boolean).join(" ") : value;
    else if (key === "text") el.textContent = String(value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "attrs") for (const [a, v] of Object.entries(value)) setAttr(el, a, v);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2).toLowerCase(), value);
    else if (key === "value" && "value" in el) el.value = value;
    else if (key === "checked" || key === "selected" || key === "disabled" || key === "multiple") el[key] = Boolean(value);
    else setAttr(el, key, value);
  }
  append(el, children);
  return el;
}

function setAttr(el, name, value) {
  if (value === null || value === undefined || value === false) return;
  el.setAttribute(name, value === true ? "" : String(value));
}

/** Append children (see `h`) to `parent`; returns `parent`. */
export function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

/** Replace every child of `el` with `children`. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

let idCounter = 0;
/** A document-unique id with a readable prefix. */
export function uid(prefix = "id") {
  idCounter += 1;
  return `${prefix}-${idCounter}`;
}

/** Say something to screen-reader users (polite live region). */
export function announce(message) {
  const live = document.getElementById("live");
  if (!live) return;
  live.textContent = "";
  window.setTimeout(() => { live.textContent = message; }, 30);
}

/** At most this many notices are shown at once; the oldest (a non-error first) make room. */
export const MAX_NOTICES = 3;
/** Non-error notices go away by themselves after this long (ms); errors stay until dismissed. */
export const NOTICE_MS = 6000;
/** A notice this young (ms) survives a page change: it reports the action that moved there. */
const CARRY_MS = 1000;

function dismiss(note) {
  const hadFocus = note.contains(document.activeElement);
  note.remove();
  if (hadFocus) document.getElementById("main")?.focus();
}

/**
 * Show a notice in the page's one notice area (#notices, polite live region; errors are alerts).
 * `message` may be an Error: its `technical` text, when it has one, goes in a "Details" disclosure.
 * The same message again replaces the earlier one; at most MAX_NOTICES are shown.
 */
export function notify(message, kind = "info") {
  const box = document.getElementById("notices");
  if (!box) return;
  const text = message instanceof Error ? message.message : String(message);
  const technical = message instanceof Error && message.technical ? message.technical : null;
  for (const old of box.querySelectorAll(".notice")) if (old.dataset.message === text) old.remove();
  const note = h("div", { class: ["notice", `notice-${kind}`], role: kind === "error" ? "alert" : "status",
    dataset: { message: text, kind, born: String(Date.now()) } },
  h("div", { class: "notice-text" }, h("span", { text }),
    technical ? h("details", { class: "technical" }, h("summary", {}, "Details"), h("code", {}, technical)) : null),
  h("button", { type: "button", class: "link", "aria-label": "Dismiss", onClick: () => dismiss(note) }, "×"));
  box.append(note);
  const notes = () => [...box.querySelectorAll(".notice")];
  while (notes().length > MAX_NOTICES) {
    const all = notes();
    (all.find((n) => n.dataset.kind !== "error") || all[0]).remove();
  }
  if (kind !== "error") window.setTimeout(() => note.remove(), NOTICE_MS);
}

/** Clear the notices of the page being left (main.js calls this on every page change). */
export function clearNotices() {
  const box = document.getElementById("notices");
  if (!box) return;
  const now = Date.now();
  for (const note of box.querySelectorAll(".notice")) {
    if (now - Number(note.dataset.born || 0) > CARRY_MS) note.remove();
  }
}

/** Format an ISO date-time for people (local time), or "—". */
export function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

/** Seconds between two ISO date-times, formatted ("1.2 s", "3 min 4 s"), or "—". */
export function duration(startIso, endIso) {
  if (!startIso || !endIso) return "—";
  const ms = new Date(endIso).getTime() - new Date(startIso).getTime();
  if (!Number.isFinite(ms) || ms < 0) return "—";
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  const min = Math.floor(ms / 60000);
  return `${min} min ${Math.round((ms % 60000) / 1000)} s`;
}

/** A modal dialog (native <dialog>): resolves with the value passed to `close(value)`. */
export function dialog(title, buildBody) {
  return new Promise((resolve) => {
    const titleId = uid("dlg");
    const dlg = h("dialog", { class: "dialog", "aria-labelledby": titleId });
    const close = (value) => { dlg.close(); dlg.remove(); resolve(value); };
    dlg.addEventListener("cancel", (e) => { e.preventDefault(); close(undefined); });
    append(dlg, [h("h2", { id: titleId, text: title }), buildBody(close)]);
    document.body.append(dlg);
    dlg.showModal();
    const first = dlg.querySelector("[autofocus], input, textarea, select, button.primary, button");
    if (first) first.focus();
  });
}

/** Ask a yes/no question; resolves true when confirmed. */
export function confirmDialog(title, body, confirmLabel = "Confirm", danger = false) {
  return dialog(title, (close) => h("div", {},
    body,
    h("div", { class: "actions" },
      h("button", { type: "button", class: ["primary", danger && "danger"], onClick: () => close(true) }, confirmLabel),
      h("button", { type: "button", onClick: () => close(false) }, "Cancel"))));
}

/** Offer `text` as a file download named `name`. */
export function download(name, text, type = "application/json") {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = h("a", { href: url, download: name, class: "visually-hidden" }, name);
  document.body.append(a);
  a.click();
  a.remove();
  window.setTimeout(() => URL.revokeObjectURL(url), 1000);
}
