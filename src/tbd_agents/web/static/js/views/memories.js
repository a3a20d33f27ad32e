// Memory search (keyword or semantic) for one agent, under the memories list.

import { get, hasEndpoint, listAll } from "../api.js";
import { h, replace, uid, when } from "../dom.js";

const SEARCH = "/api/memories/search";

/** A search panel for memories, or null when the server has no memory search. */
export async function memorySearchPanel(query) {
  if (!(await hasEndpoint("get", SEARCH))) return null;
  const agents = await listAll("/api/agents");
  if (!agents.length) return null;
  const [agentId, qId, modeId] = [uid("magent"), uid("mq"), uid("mmode")];
  const agent = h("select", { id: agentId, name: "agent_id" }, agents.map((a) => h("option", { value: a.id }, a.name)));
  if (query.get("agent_id")) agent.value = query.get("agent_id");
  const q = h("input", { id: qId, type: "search", name: "q", autocomplete: "off" });
  const mode = h("select", { id: modeId, name: "mode" }, h("option", { value: "semantic" }, "by meaning"), h("option", { value: "keyword" }, "by keyword"));
  const results = h("div", { "aria-live": "polite" });
  const form = h("form", { class: "form search-form memory-search", role: "search" },
    h("div", { class: "filters" },
      h("div", { class: "field inline" }, h("label", { for: agentId, class: "label" }, "Agent"), agent),
      h("div", { class: "field inline" }, h("label", { for: modeId, class: "label" }, "Match"), mode)),
    h("div", { class: "field" }, h("label", { for: qId, class: "label" }, "Search memories"), q),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Search")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!q.value.trim()) { q.focus(); return; }
    replace(results, h("p", { class: "muted" }, "Searching…"));
    try {
      const hits = await get(SEARCH, { agent_id: agent.value, q: q.value.trim(), mode: mode.value, k: 10 });
      if (!hits.length) { replace(results, h("p", { class: "muted" }, "No memory matches.")); return; }
      replace(results, h("ol", { class: "hits" }, hits.map((hit) => h("li", { class: "hit" },
        h("p", { class: "hit-head" },
          h("a", { href: `#/memories/${hit.memory.id}` }, h("strong", {}, hit.memory.key)),
          h("span", { class: "badge" }, `score ${Number(hit.score).toFixed(3)}`),
          h("span", { class: "muted" }, ` ${hit.memory.scope} · ${when(hit.memory.updated_at)}`)),
        h("p", {}, hit.memory.value)))));
    } catch (error) {
      replace(results, h("p", { class: "error", role: "alert" }, error.message));
    }
  });
  const titleId = uid("msearch");
  return h("section", { class: "card", "aria-labelledby": titleId },
    h("h2", { id: titleId }, "Find a memory by meaning or keyword"), form, results);
}
