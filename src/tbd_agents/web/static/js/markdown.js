// A small, safe Markdown renderer for chat replies.
//
// Safety comes first: the whole input is HTML-escaped before any Markdown is recognised, so
// whatever the model writes (<script>, <img onerror=...>, raw HTML) arrives as text. The only
// tags in the output are the ones written below; link targets are limited to http(s), mailto
// and in-page anchors, and every link opens with rel="noopener noreferrer".
//
// Supported: headings (#), paragraphs, line breaks, **bold**, *italic* / _italic_,
// ~~strike~~, `code`, fenced code blocks (```lang), block quotes, bullet and numbered lists
// (one level of nesting by indentation), horizontal rules, [links](url) and simple tables.

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

/** Escape text for HTML (element content and quoted attribute values). */
export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

const SAFE_URL = /^(https?:\/\/|mailto:|#)/i;

function safeHref(escapedUrl) {
  // The URL is already escaped; undo the entity for & only to test the scheme.
  const raw = escapedUrl.replace(/&amp;/g, "&").trim();
  if (!SAFE_URL.test(raw)) return null;
  return escapedUrl.trim();
}

/** Inline Markdown on one escaped line of text. */
function inline(escaped) {
  const codes = [];
  // Code spans first, so nothing inside them is interpreted.
  let text = escaped.replace(/`([^`]+)`/g, (_, code) => {
    codes.push(`<code>${code}</code>`);
    return `\u0000${codes.length - 1}\u0000`;
  });
  text = text.replace(/\[([^\]]+)\]\(([^)\s]+)\)/g, (whole, label, url) => {
    const href = safeHref(url);
    if (!href) return label;
    return `<a href="${href}" target="_blank" rel="noopener noreferrer">${label}</a>`;
  });
  text = text
    .replace(/\*\*(?=\S)([\s\S]*?\S)\*\*/g, "<strong>$1</strong>")
    .replace(/__(?=\S)([\s\S]*?\S)__/g, "<strong>$1</strong>")
    .replace(/(^|[^*\w])\*(?=\S)([^*]*?\S)\*(?!\w)/g, "$1<em>$2</em>")
    .replace(/(^|[^_\w])_(?=\S)([^_]*?\S)_(?!\w)/g, "$1<em>$2</em>")
    .replace(/~~(?=\S)([\s\S]*?\S)~~/g, "<del>$1</del>");
  // eslint-disable-next-line no-control-regex
  return text.replace(/\u0000(\d+)\u0000/g, (_, i) => codes[Number(i)]);
}

const FENCE = /^\s*```\s*([\w+-]*)\s*$/;
const HEADING = /^(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^\s*([-*_])(\s*\1){2,}\s*$/;
const BULLET = /^(\s*)[-*+]\s+(.*)$/;
const ORDERED = /^(\s*)(\d{1,9})[.)]\s+(.*)$/;
const QUOTE = /^\s*&gt;\s?(.*)$/;
const TABLE_SEP = /^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$/;

function tableCells(line) {
  let s = line.trim();
  if (s.startsWith("|")) s = s.slice(1);
  if (s.endsWith("|")) s = s.slice(0, -1);
  return s.split("|").map((c) => inline(c.trim()));
}

function renderList(lines, start) {
  // Collects consecutive list lines (and their indented children) into <ul>/<ol>.
  const first = lines[start];
  const ordered = ORDERED.test(first) && !BULLET.test(first);
  const tag = ordered ? "ol" : "ul";
  const baseIndent = (first.match(/^\s*/) || [""])[0].length;
  const items = [];
  let i = start;
  while (i < lines.length) {
    const line = lines[i];
    const m = ordered ? line.match(ORDERED) : line.match(BULLET);
    const indent = (line.match(/^\s*/) || [""])[0].length;
    if (m && indent === baseIndent) {
      items.push({ text: ordered ? m[3] : m[2], children: [] });
      i += 1;
    } else if (line.trim() !== "" && indent > baseIndent && items.length) {
      items[items.length - 1].children.push(line);
      i += 1;
    } else {
      break;
    }
  }
  const startAttr = ordered ? Number((first.match(ORDERED) || [])[2] || 1) : 1;
  const open = ordered && startAttr !== 1 ? `<ol start="${startAttr}">` : `<${tag}>`;
  const body = items.map((it) => {
    const nested = it.children.length ? blocks(it.children) : "";
    return `<li>${inline(it.text)}${nested}</li>`;
  }).join("");
  return { html: `${open}${body}</${tag}>`, next: i };
}

function blocks(lines) {
  const out = [];
  let i = 0;
  let para = [];
  const flush = () => {
    if (para.length) out.push(`<p>${para.map(inline).join("<br>")}</p>`);
    para = [];
  };
  while (i < lines.length) {
    const line = lines[i];
    const fence = line.match(FENCE);
    if (fence) {
      flush();
      const lang = fence[1];
      const code = [];
      i += 1;
      while (i < lines.length && !FENCE.test(lines[i])) { code.push(lines[i]); i += 1; }
      i += 1; // the closing fence (or the end of a reply still streaming)
      const cls = lang ? ` class="language-${lang}"` : "";
      out.push(`<pre><code${cls}>${code.join("\n")}</code></pre>`);
      continue;
    }
    if (line.trim() === "") { flush(); i += 1; continue; }
    const heading = line.match(HEADING);
    if (heading) {
      flush();
      const level = heading[1].length;
      out.push(`<h${level}>${inline(heading[2])}</h${level}>`);
      i += 1;
      continue;
    }
    if (RULE.test(line)) { flush(); out.push("<hr>"); i += 1; continue; }
    if (QUOTE.test(line)) {
      flush();
      const quoted = [];
      while (i < lines.length && QUOTE.test(lines[i])) { quoted.push(lines[i].match(QUOTE)[1]); i += 1; }
      out.push(`<blockquote>${blocks(quoted)}</blockquote>`);
      continue;
    }
    if (BULLET.test(line) || ORDERED.test(line)) {
      flush();
      const list = renderList(lines, i);
      out.push(list.html);
      i = list.next;
      continue;
    }
    if (line.includes("|") && i + 1 < lines.length && TABLE_SEP.test(lines[i + 1])) {
      flush();
      const head = tableCells(line);
      i += 2;
      const rows = [];
      while (i < lines.length && lines[i].includes("|") && lines[i].trim() !== "") { rows.push(tableCells(lines[i])); i += 1; }
      const th = head.map((c) => `<th scope="col">${c}</th>`).join("");
      const trs = rows.map((r) => `<tr>${r.map((c) => `<td>${c}</td>`).join("")}</tr>`).join("");
      out.push(`<div class="table-wrap"><table><thead><tr>${th}</tr></thead><tbody>${trs}</tbody></table></div>`);
      continue;
    }
    para.push(line);
    i += 1;
  }
  flush();
  return out.join("");
}

/** Markdown source → HTML string that contains only the renderer's own tags. */
export function renderMarkdown(source) {
  // NUL is removed: the inline pass uses it to mark code spans.
  // eslint-disable-next-line no-control-regex
  const clean = String(source || "").replace(/\r\n?/g, "\n").replace(/\u0000/g, "");
  const escaped = escapeHtml(clean);
  return blocks(escaped.split("\n"));
}

/** Render `source` into `element` (replacing its content). */
export function renderInto(element, source) {
  element.innerHTML = renderMarkdown(source);
}
