"""The web built-ins: `web_fetch` (GET one URL, as readable text) and `web_search`.

`web_fetch` connects through the outbound policy of security/outbound.py with the agent owner's
policy (the one its provider and MCP servers get): internal, loopback and metadata addresses are
refused unless OUTBOUND_ALLOWED_HOSTS lists them (an admin owner may reach internal hosts, as
with every other record of theirs). Each redirect hop is checked again (at most 5), the body is
capped at WEB_FETCH_MAX_BYTES, and HTML is reduced to its text (scripts, styles and markup
dropped) with a small html.parser pass.

`web_search` asks the backend the operator configured: WEB_SEARCH_BACKEND `searxng` (a SearXNG
instance or anything answering `GET WEB_SEARCH_URL?q=…&format=json` with
`{"results": [{"title", "url", "content"}]}`) or `brave` (the Brave Search API:
`GET …/res/v1/web/search?q=…` with the key in `X-Subscription-Token`, answering
`{"web": {"results": [{"title", "url", "description"}]}}`). Without a backend the tool is not
offered and the run is warned. The search backend is the operator's, so it is reached with the
operator's policy (trusted), not the agent owner's.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin

import httpx

from tbd_agents.engine.messages import ToolSpec
from tbd_agents.engine.tools.base import FunctionTool, Tool, ToolContext, ToolResult
from tbd_agents.engine.workspace import WorkspaceConfig
from tbd_agents.security.outbound import HostPolicy, OutboundPolicy, OutboundRefused, http_client

MAX_REDIRECTS = 5
BRAVE_URL = "https://api.search.brave.com/res/v1/web/search"
_SKIP = {"script", "style", "noscript", "template", "svg", "head"}
_BLOCK = {
    "p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article",
    "pre", "blockquote", "table", "ul", "ol", "header", "footer", "nav", "hr", "title",
}  # fmt: skip


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in _SKIP:
            self.skipping += 1
        if tag in _BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in _SKIP and self.skipping:
            self.skipping -= 1
        if tag in _BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif not self.skipping:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """The readable text of an HTML page: title first, markup, scripts and styles dropped."""
    parser = _Text()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    body = "\n".join(line for line in lines if line)
    title = " ".join(parser.title.split())
    return f"# {title}\n\n{body}" if title else body


async def _get(client: httpx.AsyncClient, url: str, cap: int) -> tuple[httpx.Response, bytes, str]:
    """GET `url` following at most MAX_REDIRECTS redirects, each hop checked by the client's
    transport; (response, body up to `cap` bytes, final URL)."""
    for _ in range(MAX_REDIRECTS + 1):
        async with client.stream("GET", url) as response:
            if response.is_redirect and "location" in response.headers:
                url = urljoin(url, response.headers["location"])
                continue
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > cap:
                    del body[cap:]
                    break
            return response, bytes(body), url
    raise ValueError(f"more than {MAX_REDIRECTS} redirects")


def web_fetch_tool(policy: OutboundPolicy, max_bytes: int, timeout: float) -> Tool:
    spec = ToolSpec(
        "web_fetch",
        "Fetch a web page or file by URL (http/https GET) and answer its text.",
        {
            "type": "object",
            "properties": {"url": {"type": "string", "minLength": 1, "format": "uri"}},
            "required": ["url"],
            "additionalProperties": False,
        },
    )

    async def run(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        url = args["url"].strip()
        if not url.lower().startswith(("http://", "https://")):
            return ToolResult("Error: web_fetch takes an http:// or https:// URL", True)
        try:
            async with http_client(policy, "web_fetch", timeout=timeout) as client:
                response, body, final = await _get(client, url, max_bytes)
        except OutboundRefused as exc:
            return ToolResult(f"Error: {exc.message}", True)
        except (httpx.HTTPError, ValueError) as exc:
            return ToolResult(f"Error: fetching {url} failed: {type(exc).__name__}: {exc}", True)
        kind = response.headers.get("content-type", "")
        text = body.decode(response.encoding or "utf-8", "replace")
        if "html" in kind or text.lstrip()[:15].lower().startswith(("<!doctype html", "<html")):
            text = html_to_text(text)
        cut = " (cut at WEB_FETCH_MAX_BYTES)" if len(body) >= max_bytes else ""
        head = f"HTTP {response.status_code} {final} ({kind or 'unknown type'}){cut}\n\n"
        return ToolResult(head + text, is_error=response.status_code >= 400)

    return FunctionTool(spec, run, timeout=timeout + 5)


def search_problem(config: WorkspaceConfig) -> str | None:
    """Why web_search cannot be offered (None: it can)."""
    if config.web_search_backend == "brave":
        return None if config.web_search_api_key else "set WEB_SEARCH_API_KEY (Brave Search API)"
    if not config.web_search_url:
        return (
            "set WEB_SEARCH_URL to a SearXNG-compatible JSON endpoint (or WEB_SEARCH_BACKEND="
            "brave with WEB_SEARCH_API_KEY)"
        )
    return None


def _results(backend: str, data: Any) -> list[dict[str, str]]:
    if backend == "brave":
        items = (data.get("web") or {}).get("results") or []
        text_key = "description"
    else:
        items = data.get("results") or []
        text_key = "content"
    return [
        {"title": str(i.get("title", "")), "url": str(i.get("url", "")),
         "snippet": html_to_text(str(i.get(text_key) or ""))}
        for i in items if isinstance(i, dict)
    ]  # fmt: skip


def web_search_tool(config: WorkspaceConfig, timeout: float) -> Tool:
    spec = ToolSpec(
        "web_search",
        "Search the web; answers titles, URLs and snippets. Use web_fetch to read a result.",
        {
            "type": "object",
            "properties": {
                "query": {"type": "string", "minLength": 1},
                "max_results": {"type": "integer", "minimum": 1, "maximum": 20, "default": 8},
            },
            "required": ["query"],
            "additionalProperties": False,
        },
    )
    backend = config.web_search_backend
    operator = OutboundPolicy(HostPolicy(), trusted=True)

    async def run(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        params: dict[str, str] = {"q": args["query"]}
        headers = {"Accept": "application/json"}
        if backend == "brave":
            url = config.web_search_url or BRAVE_URL
            headers["X-Subscription-Token"] = config.web_search_api_key or ""
        else:
            url = config.web_search_url or ""
            params["format"] = "json"
        try:
            async with http_client(operator, "web_search", timeout=timeout) as client:
                response = await client.get(url, params=params, headers=headers)
            response.raise_for_status()
            found = _results(backend, response.json())
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            return ToolResult(
                f"Error: the search backend failed: {type(exc).__name__}: {exc}", True
            )
        found = found[: int(args.get("max_results", 8))]
        if not found:
            return ToolResult("No results.")
        return ToolResult(json.dumps(found, ensure_ascii=False), data=found)

    return FunctionTool(spec, run, timeout=timeout + 5)
