// Import / export of bundles: download a bundle; upload one, preview (dry run), then import.

import { get, post } from "../api.js";
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

function exportSection() {
  const itemsId = uid("items");
  const items = h("input", { id: itemsId, type: "checkbox" });
  const out = h("div", { role: "status" });
  const button = h("button", { type: "button", class: "primary" }, "Download bundle");
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const bundle = await get("/api/export", { include_items: items.checked });
      const stamp = new Date().toISOString().slice(0, 19).replace(/[:T]/g, "-");
      download(`tbd-agents-bundle-${stamp}.json`, JSON.stringify(bundle, null, 2));
      const total = Object.entries(bundle).filter(([k, v]) => Array.isArray(v) && !NOT_RECORDS.has(k))
        .reduce((n, [, list]) => n + list.length, 0);
      replace(out, h("p", {}, `Exported ${total} records.`),
        (bundle.tokens_required || []).length ? h("p", { class: "muted" }, `Token names referenced (values not included): ${bundle.tokens_required.join(", ")}.`) : null,
        (bundle.redacted || []).length ? h("p", { class: "warning" }, `Passwords removed from connection strings (set them again after an import): ${bundle.redacted.join(", ")}.`) : null);
    } catch (error) {
      replace(out, h("p", { class: "error", role: "alert" }, error.message));
    } finally {
      button.disabled = false;
    }
  });
  return h("section", { class: "card", "aria-labelledby": "export-title" },
    h("h2", { id: "export-title" }, "Export"),
    h("p", {}, "A bundle holds your agents, skills, MCP servers, custom tools, guardrails, providers, knowledge sources, workflows and schedules, in the format of TBD Agents bundles. Secret values are never included: tokens are listed by name, passwords are removed from connection strings."),
    h("div", { class: "field field-check" }, items, h("label", { for: itemsId }, "Include knowledge items (their text)")),
    h("div", { class: "actions" }, button), out);
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
    try {
      return JSON.parse(await file.files[0].text());
    } catch (e) {
      fail(`This file is not valid JSON: ${e.message}`);
      return null;
    }
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
      const fields = error.fieldErrors ? error.fieldErrors() : new Map();
      fail(fields.size ? `${error.message}` : error.message);
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

/** `#/transfer`. */
export async function renderTransfer(ctx) {
  replace(ctx.main, h("h1", {}, "Import / export"));
  append(ctx.main, [exportSection(), importSection()]);
}
