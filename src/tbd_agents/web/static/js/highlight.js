// Syntax highlighting of code blocks with the vendored highlight.js (vendor/highlight/README.md).
//
// The library and its grammars are loaded on first use only (dynamic import), so a page without
// code never fetches them. Highlighting works on the text of a <code> element: highlight.js
// escapes it and adds only <span class="hljs-..."> elements, so nothing the model wrote becomes
// markup.

const LANGUAGES = ["python", "javascript", "typescript", "json", "bash", "shell", "sql", "yaml",
  "go", "rust", "java", "c", "cpp", "css", "xml", "markdown", "diff"];
/** Names people write after ``` that are another name of a bundled grammar. */
const ALIASES = { py: "python", js: "javascript", mjs: "javascript", jsx: "javascript", ts: "typescript",
  tsx: "typescript", sh: "bash", zsh: "bash", console: "shell", yml: "yaml", golang: "go", rs: "rust",
  h: "c", hpp: "cpp", "c++": "cpp", cc: "cpp", html: "xml", svg: "xml", md: "markdown", patch: "diff" };

let loading = null;

/** The highlight.js instance with the bundled grammars (loaded once). */
export function loadHighlighter() {
  if (!loading) {
    loading = (async () => {
      const { default: hljs } = await import("../vendor/highlight/core.min.js");
      const grammars = await Promise.all(LANGUAGES.map((name) => import(`../vendor/highlight/languages/${name}.min.js`)));
      grammars.forEach((mod, i) => hljs.registerLanguage(LANGUAGES[i], mod.default));
      return hljs;
    })();
    loading.catch(() => { loading = null; }); // try again next time
  }
  return loading;
}

/** The bundled grammar for a fence's language tag, or null (then highlight.js guesses). */
export function languageOf(tag) {
  const name = String(tag || "").toLowerCase();
  if (LANGUAGES.includes(name)) return name;
  return ALIASES[name] || null;
}

/** Highlight every `pre > code` in `root` not yet highlighted; resolves when done. */
export async function highlightWithin(root) {
  const blocks = [...root.querySelectorAll("pre > code:not(.hljs)")];
  if (!blocks.length) return;
  const hljs = await loadHighlighter();
  for (const code of blocks) {
    if (!code.isConnected && !root.contains(code)) continue;
    const tag = [...code.classList].find((c) => c.startsWith("language-"))?.slice(9);
    const lang = languageOf(tag);
    const text = code.textContent;
    const result = lang ? hljs.highlight(text, { language: lang, ignoreIllegals: true }) : hljs.highlightAuto(text, LANGUAGES);
    code.innerHTML = result.value;
    code.classList.add("hljs");
    if (result.language) code.dataset.language = result.language;
  }
}
