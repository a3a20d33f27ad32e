// Import / export of bundles: download a bundle; upload one, preview (dry run), then import.

import { get, listAll, post } from "../api.js";
import { append, download, h, notify, replace, uid } from "../dom.js";

/** The kinds of records a bundle carries, in import order (the report has one result each). */
const KINDS = ["providers", "skills", "mcp_servers", "custom_tools", "guardrails", "knowledge_sources",
  "knowledge_items", "agents", "workflows", "scheduled_agents"];
/** Keys of a bundle that are not lists of records. */
const NOT_RECORDS = new Set(["tokens_required", "redacted"]);

function counts(title, results, field) {
  const entries = results.filter(([, r]) => r[field]);
  if (!entries.length) return null;
  return h("div", {}, h("h3", {}, title), h("ul", {}, entries.map(([c, r]) => h("li", {}, `${c.replace(/_/g, " ")}: ${r[field]}`))));
}

/** The report of an import (or of its dry run): one result `{created, skipped, overwritten, errors, ids}` per kind. */
export function reportView(report) {
  const results = KINDS.filter((k) => report[k]).map((k) => [k, report[k]]);
  const errors = results.flatMap(([, r]) => r.errors || []);
  const nothing = !results.some(([, r]) => r.created) && !(report.conflicts || []).length && !errors.length;
  return h("div", { class: "report", dataset: { dryRun: String(report.dry_run) } },
    h("p", {}, report.dry_run ? h("strong", {}, "Preview — nothing was changed. ") : h("strong", {}, "Imported. "), `Mode: ${report.mode}.`),
    nothing ? h("p", { class: "muted" }, "The bundle holds nothing new.") : null,
    counts(report.dry_run ? "Would create" : "Created", results, "created"),
    counts(report.dry_run ? "Would skip" : "Skipped", results, "skipped"),
    counts(report.dry_run ? "Would overwrite" : "Overwritten", results, "overwritten"),
    errors.length ? h("div", { class: "import-errors" }, h("h3", {}, report.dry_run ? "Would not be imported" : "Not imported"),
      h("ul", {}, errors.map((e) => h("li", { class: "error" }, e)))) : null,
    (report.conflicts || []).length ? h("div", {}, h("h3", {}, "Conflicts (same name already exists)"),
      h("div", { class: "table-wrap" }, h("table", { class: "records conflicts" },
        h("thead", {}, h("tr", {}, ["Collection", "Name", "Action"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, report.conflicts.map((c) => h("tr", {}, h("td", {}, c.collection.replace(/_/g, " ")), h("td", {}, c.name), h("td", {}, c.action))))))) : null,
    (report.renamed || []).length ? h("div", {}, h("h3", {}, "Renamed"), h("ul", {}, report.renamed.map((r) => h("li", {}, `${r.collection}: “${r.from}” → “${r.to}”`)))) : null,
    (report.missing_tokens || []).length ? h("p", { class: "warning", role: "status" },
      `Create these tokens (their values are never exported): ${report.missing_tokens.join(", ")}.`) : null);
}

function slug(text) {
  return text.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "").slice(0, 40) || "agent";
}

/** Download the bundle of everything (`agent` null) or of one agent and what it uses. */
async function downloadBundle(agent, includeItems, out) {
  const bundle = await get("/api/export", { include_items: includeItems, agent_id: agent ? agent.id : null });
  const stamp = new Date().toISOString().slice(0, 19).replace(/[:T]/g, "-");
  download(agent ? `tbd-agents-agent-${slug(agent.name)}-${stamp}.json` : `tbd-agents-bundle-${stamp}.json`, JSON.stringify(bundle, null, 2));
  const lists = Object.entries(bundle).filter(([k, v]) => Array.isArray(v) && !NOT_RECORDS.has(k) && v.length);
  const total = lists.reduce((n, [, list]) => n + list.length, 0);
  replace(out, h("p", {}, `Exported ${total} records`, agent ? ` (${lists.map(([k, v]) => `${v.length} ${k.replace(/_/g, " ")}`).join(", ")})` : "", "."),
    (bundle.tokens_required || []).length ? h("p", { class: "muted" }, `Token names referenced (values not included): ${bundle.tokens_required.join(", ")}.`) : null,
    (bundle.redacted || []).length ? h("p", { class: "warning" }, `Passwords removed from connection strings (set them again after an import): ${bundle.redacted.join(", ")}.`) : null);
}

/** The "Export" panel of an agent's page. */
export function agentExportPanel(agent, box) {
  const out = h("div", { role: "status" });
  const button = h("button", { type: "button" }, "Export this agent");
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await downloadBundle(agent, false, out);
    } catch (error) {
      replace(out, h("p", { class: "error", role: "alert" }, error.message));
    } finally {
      button.disabled = false;
    }
  });
  append(box, [h("section", { class: "card", "aria-labelledby": "agent-export-title" },
    h("h2", { id: "agent-export-title" }, "Export"),
    h("p", {}, "A bundle of this agent and what it uses (provider, skills, MCP servers, custom tools, guardrails, knowledge sources), to import on another hub. Secret values are never included."),
    h("div", { class: "actions" }, button), out)]);
}

function exportSection(agents, chosen) {
  const itemsId = uid("items");
  const whatId = uid("what");
  const items = h("input", { id: itemsId, type: "checkbox" });
  const what = h("select", { id: whatId },
    h("option", { value: "" }, "Everything you can see"),
    agents.map((a) => h("option", { value: a.id, selected: a.id === chosen }, `Agent “${a.name}” and what it uses`)));
  const out = h("div", { role: "status" });
  const button = h("button", { type: "button", class: "primary" }, "Download bundle");
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await downloadBundle(agents.find((a) => a.id === what.value) || null, items.checked, out);
    } catch (error) {
      replace(out, h("p", { class: "error", role: "alert" }, error.message));
    } finally {
      button.disabled = false;
    }
  });
  return h("section", { class: "card", "aria-labelledby": "export-title" },
    h("h2", { id: "export-title" }, "Export"),
    h("p", {}, "A bundle holds your agents, skills, MCP servers, custom tools, guardrails, providers, knowledge sources, workflows and schedules, in the format of TBD Agents bundles — or one agent and what it uses. Secret values are never included: tokens are listed by name, passwords are removed from connection strings."),
    h("div", { class: "field" }, h("label", { for: whatId, class: "label" }, "What to export"), what),
    h("div", { class: "field field-check" }, items, h("label", { for: itemsId }, "Include knowledge items (their text)")),
    h("div", { class: "actions" }, button), out);
}

const BUNDLE_KEYS = new Set([...KINDS, "items", "resources"]);

/** Why `text` (a file's content) is not a bundle, or null if it may be one (the server checks the rest). */
export function notABundle(text) {
  if (!text.trim()) return "This file is empty. Choose a bundle exported from TBD Agents (a .json file).";
  let body;
  try {
    body = JSON.parse(text);
  } catch (e) {
    return `This file is not JSON (${e.message}). Choose a bundle exported from TBD Agents (a .json file).`;
  }
  const shape = body === null ? "null" : Array.isArray(body) ? "a list" : typeof body === "object" ? null : `a ${typeof body}`;
  if (shape) return `This file holds ${shape}, not a bundle: a bundle is a JSON object with lists of records such as agents, skills or workflows.`;
  if (!Object.keys(body).some((k) => BUNDLE_KEYS.has(k))) {
    return "This JSON object is not a bundle: it has none of the lists a bundle holds (agents, skills, workflows, knowledge_sources, …, or items). Export a bundle from TBD Agents and import that file.";
  }
  return null;
}

function importSection() {
  const fileId = uid("bundle");
  const modeId = uid("mode");
  const file = h("input", { id: fileId, type: "file", accept: ".json,application/json", "aria-describedby": `${fileId}-err` });
  const mode = h("select", { id: modeId },
    h("option", { value: "create" }, "create: always add new records"),
    h("option", { value: "skip" }, "skip: keep what exists"),
    h("option", { value: "rename" }, "rename: import a copy under a new name"),
    h("option", { value: "overwrite" }, "overwrite: replace what exists"));
  const err = h("p", { class: "field-error", id: `${fileId}-err`, role: "alert", hidden: true });
  const previewButton = h("button", { type: "button", class: "primary" }, "Preview import");
  const importButton = h("button", { type: "button", disabled: true }, "Import");
  const out = h("div", { class: "import-report", "aria-live": "polite" });
  let bundle = null;

  const fail = (message) => { err.textContent = message; err.hidden = false; };
  const readBundle = async () => {
    err.hidden = true;
    if (!file.files.length) { fail("Choose a bundle file first."); file.focus(); return null; }
    const text = await file.files[0].text();
    const problem = notABundle(text);
    if (problem) { fail(problem); replace(out); file.focus(); return null; }
    return JSON.parse(text);
  };
  const run = async (dryRun) => {
    if (dryRun) bundle = await readBundle();
    if (!bundle) return;
    previewButton.disabled = importButton.disabled = true;
    try {
      const report = await post("/api/import", bundle, { mode: mode.value, dry_run: dryRun });
      replace(out, reportView(report));
      if (!dryRun) { notify("Bundle imported.", "success"); bundle = null; }
      importButton.disabled = !dryRun;
    } catch (error) {
      fail(error.status === 422 || error.status === 400 ? `The server refused this bundle: ${error.message}` : error.message);
      replace(out);
      importButton.disabled = true;
    } finally {
      previewButton.disabled = false;
    }
  };
  const invalidate = () => { importButton.disabled = true; replace(out); };
  file.addEventListener("change", invalidate);
  mode.addEventListener("change", invalidate);
  previewButton.addEventListener("click", () => run(true));
  importButton.addEventListener("click", () => run(false));
  return h("section", { class: "card", "aria-labelledby": "import-title" },
    h("h2", { id: "import-title" }, "Import"),
    h("p", {}, "Upload a bundle (the whole configuration, or one kind of record), preview what it would create and which items cannot be imported, then import."),
    h("div", { class: "field" }, h("label", { for: fileId, class: "label" }, "Bundle file"), file, err),
    h("div", { class: "field" }, h("label", { for: modeId, class: "label" }, "When a name already exists"), mode),
    h("div", { class: "actions" }, previewButton, importButton), out);
}

/** `#/transfer` (`?agent=<id>`: that agent chosen for export). */
export async function renderTransfer(ctx) {
  const agents = await listAll("/api/agents");
  if (!ctx.isCurrent()) return;
  replace(ctx.main, h("h1", {}, "Import / export"));
  append(ctx.main, [exportSection(agents, ctx.query.get("agent")), importSection()]);
}
