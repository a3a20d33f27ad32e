// Keyboard shortcuts of the whole dashboard. None fires while typing (inputs, text areas,
// selects, editable text) or while a dialog is open; none uses Ctrl/Alt/Meta (the browser's own).

import { dialog, h } from "./dom.js";

/** [keys, what they do]: shown by "?". */
export const SHORTCUTS = [
  ["/", "Focus the page's search or filter"],
  ["g then c", "Go to Chat"],
  ["g then a", "Go to Agents"],
  ["g then r", "Go to Runs"],
  ["n", "New record (on list pages)"],
  ["?", "Show these shortcuts"],
  ["Esc", "Close a dialog or the menu"],
];

const GO = { c: "#/chat", a: "#/agents", r: "#/runs" };
/** How long after "g" the second key counts (ms). */
const SEQUENCE_MS = 1500;

function typing(target) {
  if (!(target instanceof Element)) return false;
  if (target.closest("input, textarea, select, [contenteditable]:not([contenteditable='false'])")) return true;
  return false;
}

function visible(el) {
  return el && !el.closest("[hidden]") && el.getClientRects().length > 0;
}

function focusSearch() {
  const main = document.getElementById("main");
  if (!main) return false;
  const candidates = main.querySelectorAll("[data-shortcut='search'], input[type='search'], .filters select, .toolbar input");
  const target = [...candidates].find(visible);
  if (!target) return false;
  target.focus();
  return true;
}

function newRecord() {
  const main = document.getElementById("main");
  if (!main) return false;
  const candidates = main.querySelectorAll("[data-shortcut='new'], .page-head a.primary[href$='/new']");
  const target = [...candidates].find(visible);
  if (!target) return false;
  target.click();
  return true;
}

function showHelp() {
  return dialog("Keyboard shortcuts", (close) => h("div", {},
    h("dl", { class: "shortcut-list" }, SHORTCUTS.map(([keys, what]) => [
      h("dt", {}, keys.split(" then ").map((k, i) => [i ? " then " : null, h("kbd", {}, k)])),
      h("dd", {}, what),
    ])),
    h("div", { class: "actions" }, h("button", { type: "button", class: "primary", onClick: () => close() }, "Close"))));
}

export function installShortcuts() {
  let pendingG = 0;
  document.addEventListener("keydown", (e) => {
    if (e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey || e.isComposing) return;
    if (typing(e.target) || document.querySelector("dialog[open]")) return;
    if (!document.getElementById("main")) return; // signed out: the sign-in form only
    const key = e.key;
    if (pendingG && Date.now() - pendingG < SEQUENCE_MS && GO[key.toLowerCase()]) {
      pendingG = 0;
      e.preventDefault();
      window.location.hash = GO[key.toLowerCase()];
      return;
    }
    pendingG = 0;
    if (key === "g") { pendingG = Date.now(); return; }
    if (key === "/") { if (focusSearch()) e.preventDefault(); return; }
    if (key === "n") { if (newRecord()) e.preventDefault(); return; }
    if (key === "?") { e.preventDefault(); showHelp(); }
  });
}
