// The dashboard's shell: sign-in gate, navigation, hash routing.

import { currentKey, forgetKey, get } from "./api.js";
import { announce, clearNotices, h, replace, uid } from "./dom.js";
import { installShortcuts } from "./shortcuts.js";
import { RESOURCES } from "./resources.js";
import { renderSignIn } from "./views/signin.js";

/** The navigation: Start, then the pages in three groups (each a labelled list). */
const NAV_START = ["Start", "#/"];
const NAV_GROUPS = [
  ["Build", [
    ["Agents", "#/agents"],
    ["Skills", "#/skills"],
    ["MCP servers", "#/mcps"],
    ["Custom tools", "#/custom-tools"],
    ["Guardrails", "#/guardrails"],
    ["Knowledge", "#/knowledge-sources"],
    ["Memories", "#/memories"],
  ]],
  ["Run", [
    ["Chat", "#/chat"],
    ["Workflows", "#/workflows"],
    ["Schedules", "#/scheduled-agents"],
    ["Runs", "#/runs"],
    ["Usage", "#/usage"],
  ]],
  ["Admin", [
    ["Providers", "#/providers"],
    ["Tokens", "#/tokens"],
    ["API keys", "#/keys"],
    ["Import / export", "#/transfer"],
    ["Status", "#/status"],
  ]],
];

const THEME_KEY = "tbd-agents.theme";
const root = document.getElementById("app");
let me = null;
let renderSeq = 0;

/** The theme choice ("system", "light", "dark"), applied to <html> and kept in localStorage. */
function setTheme(choice) {
  document.documentElement.setAttribute("data-theme", choice);
  try { window.localStorage.setItem(THEME_KEY, choice); } catch { /* storage refused: this page only */ }
}

function themePicker() {
  const id = uid("theme");
  const current = document.documentElement.getAttribute("data-theme") || "system";
  const select = h("select", { id, class: "theme-picker", onChange: () => setTheme(select.value) },
    [["system", "System"], ["light", "Light"], ["dark", "Dark"]].map(([value, label]) =>
      h("option", { value, selected: value === current }, label)));
  return h("div", { class: "theme" }, h("label", { for: id, class: "visually-hidden" }, "Theme"), select);
}

function navLink([label, href]) {
  return h("li", {}, h("a", { href, dataset: { nav: href } }, label));
}

/** Open or close the navigation drawer (narrow screens). Closing returns focus to the button. */
function setDrawer(open, { returnFocus = true } = {}) {
  const layout = document.querySelector(".layout");
  const button = document.getElementById("menu-button");
  if (!layout || !button) return;
  const wasOpen = layout.classList.contains("nav-open");
  layout.classList.toggle("nav-open", open);
  button.setAttribute("aria-expanded", String(open));
  // While the drawer covers the page, the page behind it is out of reach (keyboard and readers).
  const content = layout.querySelector(".content");
  if (content) content.inert = open;
  if (open) document.querySelector("#nav a[aria-current='page'], #nav a")?.focus();
  else if (wasOpen && returnFocus) button.focus();
}

function shell() {
  const nav = h("nav", { class: "sidebar", id: "nav", "aria-label": "Main" },
    h("ul", { class: "nav-start" }, navLink(NAV_START)),
    NAV_GROUPS.map(([group, links]) => {
      const headingId = `nav-${group.toLowerCase()}`;
      return h("div", { class: "nav-group" },
        h("h2", { id: headingId, class: "nav-heading" }, group),
        h("ul", { "aria-labelledby": headingId }, links.map(navLink)));
    }));
  nav.addEventListener("click", (e) => {
    // Following a link closes the drawer; focus then goes to the new page, not the button.
    const link = e.target.closest("a");
    if (!link || !document.querySelector(".layout.nav-open")) return;
    setDrawer(false, { returnFocus: false });
    if (link.getAttribute("href") === (window.location.hash || "#/")) document.getElementById("main")?.focus();
  });
  const menuButton = h("button", { type: "button", id: "menu-button", class: "menu-button", "aria-controls": "nav", "aria-expanded": "false",
    onClick: () => setDrawer(!document.querySelector(".layout.nav-open")) }, h("span", { "aria-hidden": "true" }, "☰"), h("span", { class: "menu-label" }, " Menu"));
  const header = h("header", { class: "topbar" },
    h("div", { class: "topbar-start" }, menuButton, h("a", { class: "brand", href: "#/" }, "TBD Agents")),
    h("div", { class: "who" },
      themePicker(),
      h("span", { class: "muted", id: "who" }, me ? `${me.identity} (${me.scope.replace("_", " ")})` : ""),
      h("button", { type: "button", id: "sign-out", onClick: () => forgetKey("You signed out.") }, "Sign out")));
  const main = h("main", { id: "main", tabindex: "-1" });
  const scrim = h("div", { class: "nav-scrim", "aria-hidden": "true", onClick: () => setDrawer(false) });
  replace(root, header, h("div", { class: "layout" },
    nav, scrim, h("div", { class: "content" }, h("div", { id: "notices", class: "notices", "aria-live": "polite" }), main)));
  return main;
}

function markCurrent(fullHash) {
  const hash = fullHash.split("?")[0];
  for (const a of document.querySelectorAll("[data-nav]")) {
    const target = a.dataset.nav;
    const current = target === "#/" ? hash === "#/" || hash === "" : hash === target || hash.startsWith(`${target}/`);
    if (current) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

/** Parse "#/a/b?x=1" into { parts: ["a", "b"], query: URLSearchParams }. */
export function parseHash(hash = window.location.hash) {
  const clean = hash.replace(/^#\/?/, "");
  const [path, qs] = clean.split("?");
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), query: new URLSearchParams(qs || "") };
}

async function route() {
  if (!currentKey() || !me) return;
  const seq = ++renderSeq;
  let main = document.getElementById("main");
  if (!main) main = shell();
  const { parts, query } = parseHash();
  markCurrent(window.location.hash || "#/");
  clearNotices();
  if (document.querySelector(".layout.nav-open")) setDrawer(false, { returnFocus: false });
  const [first, second, third] = parts;
  const ctx = { main, parts, query, me, isCurrent: () => seq === renderSeq };
  main.replaceChildren(h("p", { class: "muted" }, "Loading…"));
  main.setAttribute("aria-busy", "true");
  delete main.dataset.rendered;
  try {
    if (!first) await (await import("./views/home.js")).renderHome(ctx);
    else if (first === "chat") await (await import("./views/chat.js")).renderChat(ctx, second, third);
    else if (first === "setup") await (await import("./views/onboarding.js")).renderSetup(ctx);
    else if (first === "runs") await (await import("./views/runs.js")).renderRuns(ctx, second);
    else if (first === "keys") await (await import("./views/keys.js")).renderKeys(ctx);
    else if (first === "transfer") await (await import("./views/transfer.js")).renderTransfer(ctx);
    else if (first === "usage") await (await import("./views/usage.js")).renderUsage(ctx);
    else if (first === "status") await (await import("./views/status.js")).renderStatus(ctx);
    else if (first === "agents" && second) await (await import("./views/agent_builder.js")).renderAgentBuilder(ctx, second === "new" ? null : second);
    else if (RESOURCES[first]) {
      const views = await import("./views/records.js");
      if (!second) await views.renderList(ctx, first);
      else await views.renderRecord(ctx, first, second === "new" ? null : second);
    } else {
      replace(main, h("h1", {}, "Not found"), h("p", {}, "There is no such page. "), h("a", { href: "#/" }, "Back to the start page"));
    }
  } catch (error) {
    if (!ctx.isCurrent()) return;
    if (error && error.name === "NotSignedIn") return;
    replace(main, h("h1", {}, "Something went wrong"), h("p", { class: "error", role: "alert" }, error.message || String(error)),
      error.technical ? h("details", { class: "technical" }, h("summary", {}, "Details"), h("code", {}, error.technical)) : null,
      h("p", {}, h("a", { href: "#/" }, "Back to the start page")));
  } finally {
    if (ctx.isCurrent()) {
      main.removeAttribute("aria-busy");
      main.dataset.rendered = window.location.hash || "#/";
    }
  }
  if (!ctx.isCurrent()) return;
  const heading = main.querySelector("h1");
  if (heading) {
    document.title = `${heading.textContent} · TBD Agents`;
    announce(heading.textContent);
  }
}

function showSignIn(reason) {
  me = null;
  root.removeAttribute("aria-busy");
  renderSignIn(root, reason, async (profile) => {
    me = profile;
    shell();
    await route();
    document.getElementById("main").focus();
  });
}

async function start() {
  window.addEventListener("tbd:signed-out", (e) => showSignIn(e.detail && e.detail.reason));
  // The skip link moves focus without touching the address (the hash is the router's).
  document.querySelector(".skip-link").addEventListener("click", (e) => {
    e.preventDefault();
    document.getElementById("main")?.focus();
  });
  window.addEventListener("hashchange", async () => {
    await route();
    // Focus the new page, unless the page put it somewhere itself (the chat's composer).
    const main = document.getElementById("main");
    if (!main || main.contains(document.activeElement) && document.activeElement !== main) return;
    const wanted = main.querySelector("[data-autofocus], [autofocus]");
    (wanted || main).focus({ preventScroll: true });
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && document.querySelector(".layout.nav-open") && !document.querySelector("dialog[open]")) {
      e.preventDefault();
      setDrawer(false);
    }
  });
  // Widening the window past the phone layout closes the drawer (the sidebar is back).
  window.matchMedia("(max-width: 760px)").addEventListener("change", (e) => {
    if (!e.matches) setDrawer(false, { returnFocus: false });
  });
  installShortcuts();
  if (!currentKey()) { showSignIn(""); return; }
  // The shell is drawn before the server says whose key this is: the first paint does not wait
  // for that round trip (a refused key still ends on the sign-in screen).
  shell().replaceChildren(h("p", { class: "muted" }, "Loading…"));
  try {
    me = await get("/api/me");
  } catch (error) {
    // A refused key already signed out (401); anything else: say what happened.
    if (currentKey()) showSignIn(`Could not check your key: ${error.message}`);
    return;
  }
  root.removeAttribute("aria-busy");
  const who = document.getElementById("who");
  if (who) who.textContent = `${me.identity} (${me.scope.replace("_", " ")})`;
  await route();
}

start();
