// A knowledge source's documents: upload with progress, items, text preview, hybrid search.

import { currentKey, get, hasEndpoint, listAll, post, upload } from "../api.js";
import { append, dialog, download, h, notify, replace, uid, when } from "../dom.js";
import { deleteRecord } from "./records.js";

const ACCEPT = ".txt,.md,.markdown,.html,.htm,.pdf,.json,.csv";

function size(bytes) {
  if (bytes === null || bytes === undefined) return "—";
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

async function preview(item) {
  const full = await get(`/api/knowledge-items/${encodeURIComponent(item.id)}`);
  await dialog(full.name || full.file_name || "Document", (close) => h("div", {},
    h("p", { class: "muted" }, `${full.content_type} · ${size(full.file_size)} · ${full.status}`),
    h("pre", { class: "preview" }, full.text_content ? full.text_content.slice(0, 20000) : "(no text extracted)"),
    h("div", { class: "actions" }, h("button", { type: "button", class: "primary", onClick: () => close() }, "Close"))));
}

async function downloadContent(item) {
  const response = await fetch(`/api/knowledge-items/${encodeURIComponent(item.id)}/content`, { headers: { Authorization: `Bearer ${currentKey()}` } });
  if (!response.ok) { notify(`Download failed (${response.status}).`, "error"); return; }
  download(item.file_name || `${item.name || item.id}.txt`, await response.blob(), response.headers.get("content-type") || "application/octet-stream");
}

function itemsTable(items, onChange, canDownload) {
  if (!items.length) return h("p", { class: "muted empty-items" }, "No documents in this source yet. Upload a file or add text above.");
  return h("div", { class: "table-wrap" }, h("table", { class: "records items" },
    h("caption", { class: "visually-hidden" }, "Documents"),
    h("thead", {}, h("tr", {}, ["Title", "File", "Status", "Size", "Added", ""].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, items.map((item) => h("tr", {},
      h("td", {}, h("button", { type: "button", class: "link", onClick: () => preview(item) }, item.name || item.file_name || item.id)),
      h("td", {}, item.file_name || "—"),
      h("td", {}, h("span", { class: ["badge", `status-${item.status}`] }, item.status)),
      h("td", {}, size(item.file_size)),
      h("td", {}, when(item.created_at)),
      h("td", { class: "row-actions" },
        canDownload ? h("button", { type: "button", class: "small", onClick: () => downloadContent(item) }, "Download") : null,
        h("a", { href: `#/knowledge-items/${item.id}`, class: "button small" }, "Edit"),
        h("button", { type: "button", class: "small danger", onClick: async () => { if (await deleteRecord("knowledge-items", item)) onChange(); } }, "Delete")))))));
}

function uploadForm(source, onDone) {
  const fileId = uid("file");
  const titleId = uid("title");
  const file = h("input", { id: fileId, type: "file", name: "file", accept: ACCEPT, "aria-describedby": `${fileId}-help ${fileId}-err` });
  const title = h("input", { id: titleId, type: "text", name: "title", autocomplete: "off" });
  const bar = h("progress", { max: 100, value: 0, hidden: true, "aria-label": "Upload progress" });
  const pct = h("span", { class: "muted", role: "status" });
  const err = h("p", { class: "field-error", id: `${fileId}-err`, hidden: true });
  const button = h("button", { type: "submit", class: "primary" }, "Upload");
  const form = h("form", { class: "form upload-form" },
    h("div", { class: "field" }, h("label", { for: fileId, class: "label" }, "File"), file,
      h("p", { class: "help", id: `${fileId}-help` }, "Text, Markdown, HTML, PDF, JSON or CSV, up to 50 MB. It is split into chunks and indexed for search."), err),
    h("div", { class: "field" }, h("label", { for: titleId, class: "label" }, "Title (optional)"), title),
    h("div", { class: "actions" }, button, bar, pct));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    err.hidden = true;
    if (!file.files.length) { err.textContent = "Choose a file first."; err.hidden = false; file.focus(); return; }
    const data = new FormData();
    data.append("source_id", source.id);
    data.append("file", file.files[0]);
    if (title.value.trim()) data.append("title", title.value.trim());
    button.disabled = true;
    bar.hidden = false;
    bar.value = 0;
    try {
      const item = await upload("/api/knowledge-items/upload", data, (loaded, total) => {
        if (total) { bar.value = Math.round((loaded / total) * 100); pct.textContent = `${bar.value}% sent`; }
      });
      bar.value = 100;
      pct.textContent = `Uploaded and indexed “${item.name || item.file_name}”.`;
      form.reset();
      onDone();
    } catch (error) {
      const fields = error.fieldErrors ? error.fieldErrors() : new Map();
      err.textContent = fields.size ? [...fields.values()].flat().join(" ") : error.message;
      err.hidden = false;
      pct.textContent = "";
      file.focus();
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

function searchForm(source) {
  const qId = uid("q");
  const kId = uid("k");
  const q = h("input", { id: qId, type: "search", name: "query", autocomplete: "off" });
  const k = h("input", { id: kId, type: "number", name: "k", min: 1, max: 50, value: 5 });
  const results = h("div", { class: "search-results", "aria-live": "polite" });
  const form = h("form", { class: "form search-form", role: "search" },
    h("div", { class: "field" }, h("label", { for: qId, class: "label" }, "Search this source"), q),
    h("div", { class: "field inline" }, h("label", { for: kId, class: "label" }, "Results"), k),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Search")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!q.value.trim()) { q.focus(); return; }
    replace(results, h("p", { class: "muted" }, "Searching…"));
    try {
      const hits = await post("/api/knowledge/search", { query: q.value.trim(), source_ids: [source.id], k: Number(k.value) || 5 });
      if (!hits.length) { replace(results, h("p", { class: "muted" }, "No passage matches.")); return; }
      replace(results, h("ol", { class: "hits" }, hits.map((hit) => h("li", { class: "hit" },
        h("p", { class: "hit-head" },
          h("strong", {}, hit.citation.title || hit.citation.file_name || hit.citation.item_id),
          h("span", { class: "badge" }, `score ${hit.score.toFixed(3)}`),
          hit.similarity !== null ? h("span", { class: "muted" }, ` similarity ${hit.similarity.toFixed(3)}`) : null,
          hit.keyword_rank !== null ? h("span", { class: "muted" }, ` · keyword rank ${hit.keyword_rank}`) : null,
          h("span", { class: "muted" }, ` · chunk ${hit.citation.chunk_index} (chars ${hit.citation.start_offset}–${hit.citation.end_offset})`)),
        h("pre", { class: "chunk" }, hit.text)))));
    } catch (error) {
      replace(results, h("p", { class: "error", role: "alert" }, error.message));
    }
  });
  return h("div", {}, form, results);
}

/** Panels of a knowledge source's page. */
export async function renderKnowledgePanel(ctx, source, box) {
  const [canUpload, canSearch, canDownload] = await Promise.all([
    hasEndpoint("post", "/api/knowledge-items/upload"),
    hasEndpoint("post", "/api/knowledge/search"),
    hasEndpoint("get", "/api/knowledge-items/{record_id}/content"),
  ]);
  const itemsBox = h("div");
  const refresh = async () => {
    const items = await listAll("/api/knowledge-items", { source_id: source.id });
    replace(itemsBox, itemsTable(items, refresh, canDownload));
  };
  append(box, [
    h("section", { class: "card", "aria-labelledby": "add-docs" },
      h("h2", { id: "add-docs" }, "Add documents"),
      canUpload ? uploadForm(source, refresh) : null,
      h("p", {}, h("a", { href: `#/knowledge-items/new?source_id=${encodeURIComponent(source.id)}`, class: "button" }, "Add text by hand"))),
    h("section", { class: "card", "aria-labelledby": "docs" }, h("h2", { id: "docs" }, "Documents"), itemsBox),
    canSearch ? h("section", { class: "card", "aria-labelledby": "search-docs" }, h("h2", { id: "search-docs" }, "Search"), searchForm(source)) : null,
  ]);
  await refresh();
}
