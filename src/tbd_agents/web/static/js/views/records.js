// Generic screens for every resource: a searchable list and a create/edit form with delete.

import { ApiError, bodyFields, del, get, getPage, isStale, listAll, patch, post } from "../api.js";
import { confirmDialog, dialog, h, notify, replace, uid, when } from "../dom.js";
import { buildForm } from "../forms.js";
import { RESOURCES, editFields } from "../resources.js";

const MASK = "••••••••";

/** Where records of an API collection are shown (for links to dependants). */
const ROUTE_OF_COLLECTION = {
  agents: "agents",
  workflows: "workflows",
  chat_sessions: "chat",
  memories: "memories",
  providers: "providers",
  scheduled_agents: "scheduled-agents",
  knowledge_items: "knowledge-sources",
};

export function labelOf(record) {
  return record.name || record.title || record.key || record.id;
}

function cell(def, key, record, names) {
  const value = record[key];
  if (def === RESOURCES.tokens && key === "value") return h("span", { class: "masked", "aria-label": "hidden secret" }, MASK);
  if (key === "when") {
    return record.cron_expression ? h("code", {}, record.cron_expression) : `every ${record.interval_value} ${record.interval_unit}`;
  }
  if (key === "agent_id" && names.agents) return names.agents.get(value) || value;
  if (value === null || value === undefined || value === "") return h("span", { class: "muted" }, "—");
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (Array.isArray(value)) return value.length ? value.join(", ") : h("span", { class: "muted" }, "—");
  if (key.endsWith("_at")) return when(value);
  if (key === "status") return h("span", { class: ["badge", `status-${value}`] }, String(value).replace(/_/g, " "));
  const text = String(value);
  return text.length > 120 ? `${text.slice(0, 117)}…` : text;
}

function matches(record, q) {
  if (!q) return true;
  const hay = [record.name, record.title, record.key, record.value !== "********" ? record.value : "", record.description, ...(record.tags || [])]
    .filter(Boolean).join(" ").toLowerCase();
  return hay.includes(q);
}

async function agentNames() {
  try {
    return new Map((await listAll("/api/agents")).map((a) => [a.id, a.name]));
  } catch {
    return null;
  }
}

/**
 * What a delete would meet, as far as the dashboard can tell beforehand: records that still use
 * this one (the API refuses the delete while they exist) and records deleted along with it.
 */
async function knownDependants(res, record) {
  const id = record.id;
  const page = (path, query) => getPage(path, { ...query, limit: 50 }).then((p) => p.items);
  if (res === "agents") {
    const [workflows, sessions] = await Promise.all([
      page("/api/workflows", { agent_id: id }), page("/api/chat/sessions", { agent_id: id })]);
    return {
      blocking: [
        ...workflows.map((w) => ({ label: `workflow “${w.title || w.name || w.id}”`, href: `#/workflows/${w.id}` })),
        ...sessions.map((c) => ({ label: `chat session “${c.title || "untitled"}”`, href: `#/chat/${id}/${c.id}` })),
      ],
      cascading: [],
    };
  }
  if (res === "providers") {
    const agents = await page("/api/agents", { provider_id: id });
    return { blocking: agents.map((a) => ({ label: `agent “${a.name}”`, href: `#/agents/${a.id}` })), cascading: [] };
  }
  if (res === "knowledge-sources") {
    const items = await page("/api/knowledge-items", { source_id: id });
    return { blocking: [], cascading: items.map((i) => ({ label: `document “${i.name || i.file_name || i.id}”` })) };
  }
  if (res === "workflows") {
    const [schedules, runs] = await Promise.all([
      page("/api/scheduled-agents", { workflow_id: id }), page("/api/tasks", { workflow_id: id })]);
    return {
      blocking: [],
      cascading: [
        ...schedules.map((sc) => ({ label: `schedule “${sc.name || sc.id}”`, href: `#/scheduled-agents/${sc.id}` })),
        ...(runs.length ? [{ label: `${runs.length}${runs.length === 50 ? "+" : ""} runs and their events` }] : []),
      ],
    };
  }
  return { blocking: [], cascading: [] };
}

function dependantLinks(dependants) {
  return h("ul", { class: "dependants" }, dependants.map((d) => h("li", {}, d.href ? h("a", { href: d.href }, d.label) : d.label)));
}

/**
 * PATCH `changes` over `base`, the record as the form read it: conditional on its version, so a
 * save never undoes someone else's. When the record changed meanwhile (412) but not in the
 * fields being saved (a run or a test touched its status, another tab edited other fields), the
 * changes are sent again over the current version; when it changed in those fields, nothing is
 * saved and the form says so. Resolves with the saved record.
 */
async function saveOver(def, base, changes) {
  const path = `${def.path}/${encodeURIComponent(base.id)}`;
  try {
    return await patch(path, changes, { ifMatch: base.version });
  } catch (error) {
    if (!isStale(error)) throw error;
    const current = await get(path);
    const same = (k) => JSON.stringify(current[k]) === JSON.stringify(base[k]);
    const clash = Object.keys(changes).filter((k) => !same(k));
    if (clash.length) {
      throw new ApiError(412, error.code, `This ${def.singular} was changed by someone else since you `
        + `opened it (${clash.join(", ")}), so your changes were not saved. Reload the page to see the `
        + "current version, then make your changes again.", {});
    }
    return await patch(path, changes, { ifMatch: current.version });
  }
}

/**
 * Ask, then delete `record`. Dependants known beforehand are listed; when the API refuses (409)
 * its list of dependants is shown. Resolves true when the record was deleted.
 */
export async function deleteRecord(res, record) {
  const def = RESOURCES[res];
  const known = await knownDependants(res, record).catch(() => ({ blocking: [], cascading: [] }));
  const body = h("div", {},
    h("p", {}, `Delete the ${def.singular} “${labelOf(record)}”? This cannot be undone.`),
    def.deleteNote ? h("p", { class: "muted" }, def.deleteNote) : null,
    known.blocking.length ? [h("p", { class: "warning" }, "These still use it and must be changed or deleted first:"), dependantLinks(known.blocking)] : null,
    known.cascading.length ? [h("p", {}, "Deleted along with it:"), dependantLinks(known.cascading)] : null);
  if (!(await confirmDialog(`Delete ${def.singular}`, body, "Delete", true))) return false;
  try {
    await del(`${def.path}/${encodeURIComponent(record.id)}`);
    notify(`Deleted ${def.singular} “${labelOf(record)}”.`, "success");
    return true;
  } catch (error) {
    const deps = error instanceof ApiError && error.details.dependants;
    await dialog(`Cannot delete this ${def.singular}`, (close) => h("div", {},
      h("p", { role: "alert" }, error.message),
      deps ? dependantLinks(Object.entries(deps).flatMap(([collection, ids]) => ids.map((id) => ({
        label: `${collection.replace(/_/g, " ")}: ${id}`,
        href: ROUTE_OF_COLLECTION[collection] ? `#/${ROUTE_OF_COLLECTION[collection]}/${id}` : null,
      })))) : null,
      h("div", { class: "actions" }, h("button", { type: "button", class: "primary", onClick: () => close() }, "Close"))));
    return false;
  }
}

function filterControls(def, query, onChange) {
  if (!def.filters) return null;
  const controls = def.filters.map((f) => {
    const id = uid(`flt-${f.name}`);
    const select = h("select", { id, name: f.name, onChange: () => onChange(f.name, select.value) },
      h("option", { value: "" }, "any"));
    Promise.resolve(f.options()).then((opts) => {
      select.append(...opts.map((o) => h("option", { value: o.value }, o.label)));
      select.value = query.get(f.name) || "";
    });
    return h("div", { class: "field inline" }, h("label", { for: id, class: "label" }, f.label), select);
  });
  return h("div", { class: "filters" }, controls);
}

/** The list screen of resource `res`. */
export async function renderList(ctx, res) {
  const def = RESOURCES[res];
  const apiQuery = {};
  for (const f of def.filters || []) if (ctx.query.get(f.name)) apiQuery[f.name] = ctx.query.get(f.name);
  const [first, agents] = await Promise.all([
    getPage(def.path, { ...apiQuery, limit: 100 }),
    def.columns.some(([k]) => k === "agent_id") ? agentNames() : null,
  ]);
  const names = { agents };
  if (!ctx.isCurrent()) return;
  let items = first.items;
  let cursor = first.next_cursor;
  const searchId = uid("search");
  const search = h("input", { id: searchId, type: "search", placeholder: `Search ${def.title.toLowerCase()}`, autocomplete: "off" });
  const tbody = h("tbody");
  const more = h("button", { type: "button", hidden: !cursor }, "Load more");
  const count = h("p", { class: "muted", role: "status" });
  const table = h("table", { class: "records record-list" },
    h("caption", { class: "visually-hidden" }, def.title),
    h("thead", {}, h("tr", {}, def.columns.map(([, label]) => h("th", { scope: "col" }, label)), h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")))),
    tbody);

  const draw = () => {
    const q = search.value.trim().toLowerCase();
    const shown = items.filter((r) => matches(r, q));
    count.textContent = `${shown.length} of ${items.length}${cursor ? "+" : ""} shown`;
    replace(tbody, shown.map((record) => {
      const href = `#/${res}/${record.id}`;
      const cells = def.columns.map(([key, label], i) => h("td", { dataset: { label } }, i === 0 ? h("a", { href }, cell(def, key, record, names)) : cell(def, key, record, names)));
      const actions = h("td", { class: "row-actions", dataset: { label: "Actions" } },
        res === "agents" ? h("a", { href: `#/chat/${record.id}`, class: "button small" }, "Chat") : null,
        h("a", { href, class: "button small", "aria-label": `Edit ${labelOf(record)}` }, "Edit"),
        h("button", { type: "button", class: "small danger", "aria-label": `Delete ${labelOf(record)}`, onClick: async () => {
          if (await deleteRecord(res, record)) { items = items.filter((r) => r.id !== record.id); draw(); }
        } }, "Delete"));
      return h("tr", {}, cells, actions);
    }));
    if (!shown.length && items.length) tbody.append(h("tr", {}, h("td", { colspan: def.columns.length + 1, class: "muted" }, "Nothing matches the search.")));
  };
  search.addEventListener("input", draw);
  more.addEventListener("click", async () => {
    const page = await getPage(def.path, { ...apiQuery, limit: 100, cursor });
    items = items.concat(page.items);
    cursor = page.next_cursor;
    more.hidden = !cursor;
    draw();
  });

  const newButton = h("a", { href: `#/${res}/new`, class: "button primary" }, `New ${def.singular}`);
  const filters = filterControls(def, ctx.query, (name, value) => {
    const q = new URLSearchParams(ctx.query);
    if (value) q.set(name, value); else q.delete(name);
    window.location.hash = `#/${res}${q.toString() ? `?${q}` : ""}`;
  });
  // Providers: the one-step form (the API key typed in, its token made behind the scenes) first.
  const fromKey = res === "providers" ? h("a", { href: "#/setup/provider", class: "button" }, "Add a provider from its API key") : null;
  const header = h("div", { class: "page-head" }, h("h1", {}, def.title),
    fromKey ? h("div", { class: "row-actions" }, fromKey, newButton) : newButton);
  if (!items.length && !Object.keys(apiQuery).length) {
    replace(ctx.main, header, h("div", { class: "empty card" },
      h("p", {}, def.empty),
      h("a", { href: `#/${res}/new`, class: "button primary" }, `Create the first ${def.singular}`)));
    return;
  }
  draw();
  const extra = res === "memories" ? await (await import("./memories.js")).memorySearchPanel(ctx.query) : null;
  if (!ctx.isCurrent()) return;
  replace(ctx.main, header, extra, filters,
    h("div", { class: "toolbar" }, h("label", { for: searchId, class: "label" }, "Search"), search, count),
    items.length ? h("div", { class: "table-wrap" }, table) : h("div", { class: "empty card" }, h("p", {}, def.empty)),
    more);
}

/**
 * The create (record null) or edit screen of one record of `res`, with its extra panels.
 * `opts.layout({ head, formCard, extras, form, record })` places the parts itself (the agent
 * builder); `opts.onSaved(record)` hears of every save. Resolves with { form, record, base() }.
 */
export async function renderRecord(ctx, res, id, opts = {}) {
  const def = RESOURCES[res];
  const creating = id === null;
  const record = creating ? null : await get(`${def.path}/${encodeURIComponent(id)}`);
  if (!ctx.isCurrent()) return;
  const preset = {};
  for (const [k, v] of ctx.query.entries()) preset[k] = v;
  // Child records (knowledge items) lead back to their parent rather than to a flat list.
  const parentId = def.parent && ((record && record[def.parent.field]) || preset[def.parent.field]);
  const back = parentId ? `#/${def.parent.route}/${parentId}` : `#/${res}`;
  // Only the fields this server accepts for this operation (read from its OpenAPI document).
  const accepted = await bodyFields(creating ? "post" : "patch", def.path, !creating);
  const fields = editFields(def, creating)
    .filter((f) => f.virtual || !accepted || accepted.has(f.name))
    .map((f) => (f.kind === "secret" && !creating
      ? { ...f, required: false, placeholder: `${MASK} (unchanged — type a new value to replace it)` } : f));
  const filled = record ? (def.fill ? def.fill(record) : record) : (Object.keys(preset).length ? preset : null);
  let base = record; // the record as this form last read or saved it (its version: If-Match)
  const titleId = uid("title");
  const title = creating ? `New ${def.singular}` : labelOf(record);
  const form = buildForm({
    fields,
    record: filled,
    labelledBy: titleId,
    submitLabel: creating ? `Create ${def.singular}` : "Save changes",
    onCancel: () => { window.location.hash = back; },
    onSubmit: async (values) => {
      const virtual = new Set(fields.filter((f) => f.virtual).map((f) => f.name));
      const body = (picked) => {
        const prepared = def.prepare ? def.prepare(picked, values) : picked;
        return Object.fromEntries(Object.entries(prepared).filter(([k]) => !virtual.has(k)));
      };
      if (creating) {
        // Empty optional fields are left to the server's defaults.
        const filled = Object.fromEntries(Object.entries(values).filter(([, v]) => v !== null));
        const created = await post(def.path, body(filled));
        notify(`Created ${def.singular} “${labelOf(created)}”.`, "success");
        window.location.hash = `#/${res}/${created.id}`;
        return;
      }
      // PATCH only what changed (an untouched secret field is empty, so it is never sent).
      const changes = body(form.changed(values));
      if (!Object.keys(changes).length) { notify("Nothing changed.", "info"); return; }
      const saved = await saveOver(def, base, changes);
      if (saved) base = saved;
      for (const f of fields) if (f.kind === "secret") form.widget(f.name).set("");
      form.markSaved();
      notify("Saved.", "success");
      if (opts.onSaved) opts.onSaved(base);
    },
    extraActions: creating ? [] : [h("button", { type: "button", class: "danger", onClick: async () => {
      if (await deleteRecord(res, record)) window.location.hash = back;
    } }, "Delete")],
  });
  const head = h("div", { class: "page-head" },
    h("div", {}, h("p", { class: "crumbs" }, h("a", { href: back }, parentId ? def.parent.title : def.title)), h("h1", { id: titleId }, title)),
    record && res === "agents" ? h("a", { href: `#/chat/${record.id}`, class: "button primary" }, "Chat with this agent") : null);
  const extras = h("div", { class: "extras" });
  form.element.classList.add("record-form");
  const formCard = h("section", { class: "card", "aria-labelledby": titleId }, form.element);
  // Where the record's main action is a panel (run a workflow, add documents), it comes first.
  if (opts.layout) opts.layout({ head, formCard, extras, form, record });
  else if (record && def.extrasFirst) replace(ctx.main, head, extras, h("h2", { class: "settings-title" }, "Settings"), formCard);
  else replace(ctx.main, head, formCard, extras);
  await form.ready;
  const { renderExtras } = await import("./extras.js");
  await renderExtras(ctx, res, record, form, extras);
  return { form, record, base: () => base };
}
