// The dashboard's shell: sign-in gate, navigation, hash routing.

import { currentKey, forgetKey, get } from "./api.js";
import { announce, h, replace } from "./dom.js";
import { RESOURCES } from "./resources.js";
import { renderSignIn } from "./views/signin.js";

const NAV = [
  ["Start", "#/"],
  ["Agents", "#/agents"],
  ["Chat", "#/chat"],
  ["Workflows", "#/workflows"],
  ["Schedules", "#/scheduled-agents"],
  ["Knowledge", "#/knowledge-sources"],
  ["Memories", "#/memories"],
  ["Skills", "#/skills"],
  ["MCP servers", "#/mcps"],
  ["Custom tools", "#/custom-tools"],
  ["Guardrails", "#/guardrails"],
  ["Providers", "#/providers"],
  ["Tokens", "#/tokens"],
  ["API keys", "#/keys"],
  ["Usage", "#/usage"],
  ["Import / export", "#/transfer"],
  ["Status", "#/status"],
];

const root = document.getElementById("app");
let me = null;
let renderSeq = 0;

function shell() {
  const nav = h("nav", { class: "sidebar", "aria-label": "Main" },
    h("ul", {}, NAV.map(([label, href]) => h("li", {}, h("a", { href, dataset: { nav: href } }, label)))));
  const header = h("header", { class: "topbar" },
    h("a", { class: "brand", href: "#/" }, "TBD Agents"),
    h("div", { class: "who" },
      h("span", { class: "muted", id: "who" }, me ? `${me.identity} (${me.scope.replace("_", " ")})` : ""),
      h("button", { type: "button", id: "sign-out", onClick: () => forgetKey("You signed out.") }, "Sign out")));
  const main = h("main", { id: "main", tabindex: "-1" });
  replace(root, header, h("div", { class: "layout" }, nav, h("div", { class: "content" }, h("div", { id: "notices", class: "notices" }), main)));
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
  const [first, second, third] = parts;
  const ctx = { main, parts, query, me, isCurrent: () => seq === renderSeq };
  main.replaceChildren(h("p", { class: "muted" }, "Loading…"));
  main.setAttribute("aria-busy", "true");
  delete main.dataset.rendered;
  try {
    if (!first) await (await import("./views/home.js")).renderHome(ctx);
    else if (first === "chat") await (await import("./views/chat.js")).renderChat(ctx, second, third);
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
    replace(main, h("h1", {}, "Something went wrong"), h("p", { class: "error", role: "alert" }, error.message || String(error)));
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
    const main = document.getElementById("main");
    if (main) main.focus({ preventScroll: true });
  });
  if (!currentKey()) { showSignIn(""); return; }
  try {
    me = await get("/api/me");
  } catch (error) {
    // A refused key already signed out (401); anything else: say what happened.
    if (currentKey()) showSignIn(`Could not check your key: ${error.message}`);
    return;
  }
  root.removeAttribute("aria-busy");
  shell();
  await route();
}

start();
