// Start page: a first-run wizard for a newcomer (no agent of their own yet), else counts of
// what exists and the next steps.

import { getPage, listAll } from "../api.js";
import { h, replace } from "../dom.js";

const STEPS = [
  ["providers", "/api/providers", "Add a provider (OpenAI, Azure OpenAI, Anthropic, a compatible server) with its API key", "#/setup/provider"],
  ["agents", "/api/agents", "Create an agent: a system prompt, a model, and the tools, skills and knowledge it may use", "#/agents/new"],
  ["chats", "/api/chat/sessions", "Chat with it", "#/chat"],
  ["workflows", "/api/workflows", "Make a workflow to run it in the background, then schedule it", "#/workflows/new"],
];

async function exists(path) {
  const page = await getPage(path, { limit: 1 });
  return page.items.length > 0;
}

function stepList(done) {
  const next = done.findIndex((d) => !d);
  return h("ol", { class: "steps" }, STEPS.map(([name, , text, href], i) => h("li", { class: ["step", done[i] ? "step-done" : i === next ? "step-next" : ""], dataset: { step: name } },
    h("span", { class: "step-state" }, done[i] ? "Done" : i === next ? "Next" : "Later"),
    h("a", { href, class: i === next ? "button primary" : "" }, text))));
}

/** `#/`. */
export async function renderHome(ctx) {
  const onboarding = await import("./onboarding.js");
  if (await onboarding.isFirstRun(ctx.me)) {
    const providers = await listAll("/api/providers", { owner: ctx.me.identity });
    if (!ctx.isCurrent()) return;
    const box = h("div");
    replace(ctx.main,
      h("h1", {}, "Welcome to TBD Agents"),
      h("p", {}, "Three steps to your first conversation: connect a model provider, create an agent, chat with it."),
      box);
    onboarding.wizard(box, providers);
    return;
  }
  const done = await Promise.all(STEPS.map(([, path]) => exists(path)));
  if (!ctx.isCurrent()) return;
  const next = done.findIndex((d) => !d);
  replace(ctx.main,
    h("h1", {}, "Welcome to TBD Agents"),
    next === -1
      ? h("p", {}, "Your hub is set up. Pick a section on the left.")
      : h("p", {}, "Getting started: follow these steps in order."),
    stepList(done),
    h("p", {}, h("a", { href: "#/runs" }, "See every run"), " · ", h("a", { href: "#/setup/provider" }, "Add another provider with its API key")));
}
