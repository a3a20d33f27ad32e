// First run: a provider with its API key (one form: the key is stored as a token behind the
// scenes), a first agent on one of its models, then a chat with it. The provider step alone is
// `#/setup/provider` (a provider from its key, without the Tokens screen).

import { get, getPage, post } from "../api.js";
import { announce, h, notify, replace, uid } from "../dom.js";

const KINDS = [
  ["openai", "OpenAI", "OpenAI", "https://api.openai.com/v1"],
  ["anthropic", "Anthropic", "Anthropic", "https://api.anthropic.com/v1"],
  ["azure_openai", "Azure OpenAI", "Azure OpenAI", "https://<resource>.openai.azure.com"],
  ["custom", "OpenAI-compatible server (Ollama, vLLM, LM Studio, …)", "Local models", "http://localhost:11434/v1"],
];
const NEEDS_URL = new Set(["custom", "azure_openai"]);
export const DEFAULT_PROMPT = "You are a helpful assistant. Answer clearly and concisely, and say so when you are not sure.";

function field(label, control, hint, err) {
  const hintId = hint ? `${control.id}-hint` : null;
  if (hintId) control.setAttribute("aria-describedby", [hintId, err && err.id].filter(Boolean).join(" "));
  else if (err) control.setAttribute("aria-describedby", err.id);
  return h("div", { class: "field" }, h("label", { for: control.id, class: "label" }, label), control,
    hint ? h("p", { class: "muted small", id: hintId }, hint) : null, err || null);
}

/**
 * The provider form that takes the API key itself. `onDone(provider, models)` is called after
 * the provider (and the token holding its key) is saved.
 */
export function providerStep(onDone) {
  const p = uid("setup");
  const kind = h("select", { id: `${p}-kind` }, KINDS.map(([v, label]) => h("option", { value: v }, label)));
  const name = h("input", { id: `${p}-name`, type: "text", required: true, maxlength: 200, value: KINDS[0][2], autocomplete: "off" });
  const key = h("input", { id: `${p}-key`, type: "password", required: true, autocomplete: "new-password", spellcheck: "false" });
  const url = h("input", { id: `${p}-url`, type: "url", maxlength: 2048, autocomplete: "off", spellcheck: "false" });
  const urlField = field("Base URL", url, "", null);
  const out = h("div", { class: "connection-result", "aria-live": "polite" });
  const err = h("p", { class: "field-error", role: "alert", hidden: true, id: `${p}-err` });
  const testButton = h("button", { type: "button" }, "Test connection");
  const saveButton = h("button", { type: "submit", class: "primary" }, "Save and continue");
  let nameEdited = false;
  let models = null; // from the last successful test of these exact settings

  const sync = () => {
    const [, , defaultName, example] = KINDS.find(([v]) => v === kind.value);
    if (!nameEdited) name.value = defaultName;
    url.required = NEEDS_URL.has(kind.value);
    url.placeholder = example;
    urlField.querySelector("label").textContent = url.required ? "Base URL" : "Base URL (optional)";
  };
  const invalidate = () => { models = null; replace(out); };
  kind.addEventListener("change", () => { sync(); invalidate(); });
  name.addEventListener("input", () => { nameEdited = true; });
  key.addEventListener("input", invalidate);
  url.addEventListener("input", invalidate);
  sync();

  const fail = (message, focus) => {
    err.textContent = message;
    err.hidden = false;
    if (focus) focus.focus();
  };
  const connection = () => ({ provider_type: kind.value, api_key: key.value, base_url: url.value.trim() || null });
  const check = () => {
    err.hidden = true;
    if (!key.value) { fail("Enter the provider's API key.", key); return false; }
    if (url.required && !url.value.trim()) { fail("Enter the server's base URL (for example http://localhost:11434/v1).", url); return false; }
    return true;
  };
  const controls = { base_url: url, name, api_key: key, provider_type: kind };
  const labels = { base_url: "Base URL", name: "Name", api_key: "API key", provider_type: "Kind" };
  const focusFor = (e) => {
    const f = (e.details && e.details.field) || (e.fieldErrors ? [...e.fieldErrors().keys()][0] : null);
    return controls[f] || null;
  };
  /** The API's message; a request the schema refused names the form's field instead. */
  const say = (e) => {
    const fields = e.code === "validation_error" && e.fieldErrors ? e.fieldErrors() : new Map();
    if (!fields.size) return e.message;
    return [...fields].map(([f, msgs]) => `${labels[f] || f}: ${msgs.map((m) => m.replace(/^Value error, /, "")).join("; ")}`).join(" ");
  };
  const test = async () => {
    replace(out, h("p", { class: "muted" }, "Asking the provider for its models…"));
    try {
      const res = await post("/api/providers/test-connection", connection());
      models = res.models;
      replace(out, h("p", { class: "success" }, h("strong", {}, "Connected. "),
        models.length ? `The provider offers ${models.length} model${models.length === 1 ? "" : "s"}.` : "The provider lists no models; you can still type a model name."));
      return true;
    } catch (e) {
      replace(out);
      fail(say(e), focusFor(e));
      return false;
    }
  };
  testButton.addEventListener("click", async () => {
    if (!check()) return;
    testButton.disabled = saveButton.disabled = true;
    try { await test(); } finally { testButton.disabled = saveButton.disabled = false; }
  });
  const form = h("form", { class: "card wizard-form", "aria-labelledby": `${p}-title`, novalidate: true },
    h("h2", { id: `${p}-title` }, "Connect a model provider"),
    h("p", {}, "Paste your provider's API key: it is stored encrypted as a token named after the provider, and never shown again."),
    field("Kind", kind),
    field("Name", name, "How the provider is called here; change it if you add several."),
    field("API key", key),
    urlField,
    err,
    h("div", { class: "actions" }, testButton, saveButton),
    out);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!check()) return;
    if (!name.value.trim()) { fail("Give the provider a name.", name); return; }
    testButton.disabled = saveButton.disabled = true;
    try {
      if (models === null && !(await test())) return;
      const provider = await post("/api/providers/with-key", {
        ...connection(), name: name.value.trim(), models, default_model: models[0] || null,
      });
      await onDone(provider, models);
    } catch (error) {
      fail(error.status === 409 ? `${error.message} Choose another name.` : say(error), focusFor(error) || (error.status === 409 ? name : null));
    } finally {
      testButton.disabled = saveButton.disabled = false;
    }
  });
  return form;
}

function agentStep(provider, models, onDone) {
  const p = uid("agent");
  const name = h("input", { id: `${p}-name`, type: "text", required: true, maxlength: 200, value: "Assistant", autocomplete: "off" });
  const preferred = provider.default_model && models.includes(provider.default_model) ? provider.default_model : models[0];
  const model = models.length
    ? h("select", { id: `${p}-model` }, models.map((m) => h("option", { value: m, selected: m === preferred }, m)))
    : h("input", { id: `${p}-model`, type: "text", required: true, maxlength: 512, autocomplete: "off" });
  const prompt = h("textarea", { id: `${p}-prompt`, rows: 4 }, DEFAULT_PROMPT);
  const err = h("p", { class: "field-error", role: "alert", hidden: true });
  const button = h("button", { type: "submit", class: "primary" }, "Create agent and start chatting");
  const form = h("form", { class: "card wizard-form", "aria-labelledby": `${p}-title`, novalidate: true },
    h("h2", { id: `${p}-title` }, "Create your first agent"),
    h("p", {}, `It answers with a model of ${provider.name}.`),
    field("Agent name", name),
    field("Model", model),
    field("System prompt", prompt, "What the agent should be and do; you can change it later."),
    err,
    h("div", { class: "actions" }, button));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    err.hidden = true;
    const fail = (message, focus) => { err.textContent = message; err.hidden = false; if (focus) focus.focus(); };
    if (!name.value.trim()) { fail("Give the agent a name.", name); return; }
    if (!model.value.trim()) { fail("Choose the model the agent uses.", model); return; }
    button.disabled = true;
    try {
      const agent = await post("/api/agents", {
        name: name.value.trim(), provider_id: provider.id, model: model.value.trim(),
        system_prompt: prompt.value.trim() || DEFAULT_PROMPT,
      });
      await onDone(agent);
    } catch (error) {
      const fields = error.fieldErrors ? error.fieldErrors() : new Map();
      fail(fields.size ? [...fields].map(([f, m]) => `${f.replace(/_/g, " ")}: ${m.join("; ")}`).join(" ") : error.message);
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

/** A provider already there: use it (its stored models, else ask it). */
function existingProvider(providers, onPick) {
  const p = uid("have");
  const pick = h("select", { id: `${p}-pick` }, providers.map((pr) => h("option", { value: pr.id }, pr.name)));
  const err = h("p", { class: "field-error", role: "alert", hidden: true });
  const button = h("button", { type: "button" }, "Use this provider");
  button.addEventListener("click", async () => {
    err.hidden = true;
    button.disabled = true;
    const provider = providers.find((pr) => pr.id === pick.value);
    try {
      let models = provider.models || [];
      if (!models.length) models = (await get(`/api/providers/${encodeURIComponent(provider.id)}/models`, { refresh: true })).models;
      await onPick(provider, models);
    } catch (e) {
      err.textContent = `${e.message} You can still add the provider again with its key below.`;
      err.hidden = false;
    } finally {
      button.disabled = false;
    }
  });
  return h("section", { class: "card", "aria-labelledby": `${p}-title` },
    h("h2", { id: `${p}-title` }, "Use a provider you already have"),
    field("Provider", pick), err, h("div", { class: "actions" }, button));
}

const STEP_NAMES = ["Provider", "Agent", "Chat"];

/** The first-run wizard, in `box`. `providers`: the caller's providers (may be empty). */
export function wizard(box, providers) {
  const steps = h("ol", { class: "wizard-steps", "aria-label": "Setup steps" });
  const body = h("div");
  const show = (index, ...content) => {
    replace(steps, STEP_NAMES.map((label, i) => h("li", { class: i < index ? "done" : "", "aria-current": i === index ? "step" : null },
      `${i + 1}. ${label}${i < index ? " (done)" : ""}`)));
    replace(body, ...content);
    const heading = body.querySelector("h2");
    if (heading && index > 0) {
      heading.setAttribute("tabindex", "-1");
      heading.focus();
      announce(`Step ${index + 1} of 3: ${heading.textContent}`);
    }
  };
  const toAgent = (provider, models) => show(1, agentStep(provider, models, (agent) => {
    notify(`${agent.name} is ready: say hello.`, "success");
    window.location.hash = `#/chat/${encodeURIComponent(agent.id)}`;
  }));
  show(0, providers.length ? existingProvider(providers, toAgent) : null, providerStep(toAgent));
  replace(box, h("section", { class: "wizard", "aria-label": "Set up your hub" },
    h("h2", { class: "visually-hidden" }, "Setup"), steps, body));
}

/** `#/setup/provider`: a provider from its API key, then its page. */
export async function renderSetup(ctx) {
  replace(ctx.main, h("h1", {}, "Add a provider with its API key"),
    h("p", { class: "muted" }, "One step instead of two: the key becomes a token named after the provider. ",
      h("a", { href: "#/providers/new" }, "The full provider form"), " has every setting."),
    providerStep((provider) => {
      notify(`Provider ${provider.name} saved; its key is in the token ${provider.api_key_token_name}.`, "success");
      window.location.hash = `#/providers/${encodeURIComponent(provider.id)}`;
    }));
}

/** Whether the signed-in user has set nothing up yet (no agent of their own) and may. */
export async function isFirstRun(me) {
  if (me.scope === "read_only") return false;
  const agents = await getPage("/api/agents", { owner: me.identity, limit: 1 });
  return agents.items.length === 0;
}
