// Start page: counts of what exists and the first steps for a newcomer.

import { get, getPage } from "../api.js";
import { h, replace } from "../dom.js";

const STEPS = [
  ["tokens", "/api/tokens", "Store your model provider's API key as a token", "#/tokens/new"],
  ["providers", "/api/providers", "Add a provider (OpenAI, Azure OpenAI, Anthropic, a compatible server) naming that token", "#/providers/new"],
  ["agents", "/api/agents", "Create an agent: a system prompt, a model, and the tools, skills and knowledge it may use", "#/agents/new"],
  ["chats", "/api/chat/sessions", "Chat with it", "#/chat"],
  ["workflows", "/api/workflows", "Make a workflow to run it in the background, then schedule it", "#/workflows/new"],
];

async function exists(path) {
  const page = await getPage(path, { limit: 1 });
  return page.items.length > 0;
}

/** `#/`. */
export async function renderHome(ctx) {
  const done = await Promise.all(STEPS.map(([, path]) => exists(path)));
  if (!ctx.isCurrent()) return;
  const next = done.findIndex((d) => !d);
  replace(ctx.main,
    h("h1", {}, "Welcome to TBD Agents"),
    next === -1
      ? h("p", {}, "Your hub is set up. Pick a section on the left.")
      : h("p", {}, "Getting started: follow these steps in order."),
    h("ol", { class: "steps" }, STEPS.map(([name, , text, href], i) => h("li", { class: ["step", done[i] ? "step-done" : i === next ? "step-next" : ""], dataset: { step: name } },
      h("span", { class: "step-state" }, done[i] ? "Done" : i === next ? "Next" : "Later"),
      h("a", { href, class: i === next ? "button primary" : "" }, text)))));
}
