"""The API reference pages and the security headers of every response.

`/docs` and `/redoc` are one self-contained HTML page rendered on the server from the OpenAPI
document: every operation with its method, path, summary and parameters, and a link to
`/openapi.json` for tools. FastAPI's Swagger UI and ReDoc pages load their scripts from a public
CDN, and no installed package ships those assets, so they are not served: our pages make no
request to another origin. The page has no script and one inline stylesheet allowed by its hash.

`SecurityHeaders` (an ASGI middleware) gives every HTML response that has none a strict
Content-Security-Policy, and every response under /api `Cache-Control: no-store`: keys, tokens,
provider and MCP settings come back in API answers, and marking all of them (not a list of
routes that would drift) keeps them out of browser and proxy caches.
"""

from __future__ import annotations

import base64
import hashlib
import html
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_STYLE = (
    "body{font:15px/1.45 system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem}"
    "code{font-size:.95em}h2{margin-top:2rem;border-bottom:1px solid #ccc}"
    ".op{margin:.6rem 0}.m{display:inline-block;min-width:4.5rem;font-weight:bold}"
    ".p{color:#555;margin-left:4.5rem;font-size:.9em}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()

#: Our reference page: nothing but its own inline style; links only (no scripts, no fetches).
DOCS_CSP = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
#: Any other HTML answer without its own policy (the dashboard sets a stricter-scoped one).
DEFAULT_HTML_CSP = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

_METHODS = ("get", "post", "put", "patch", "delete")


def _operation(method: str, path: str, op: dict[str, Any]) -> str:
    params = [
        f"{html.escape(p.get('name', ''))} ({html.escape(p.get('in', ''))})"
        for p in op.get("parameters", [])
    ]
    if "requestBody" in op:
        kinds = ", ".join(op["requestBody"].get("content", {}))
        params.append(f"body: {html.escape(kinds)}")
    extra = f'<div class="p">{"; ".join(params)}</div>' if params else ""
    return (
        f'<div class="op"><span class="m">{method.upper()}</span><code>{html.escape(path)}</code>'
        f" {html.escape(op.get('summary', ''))}{extra}</div>"
    )


def render_reference(openapi: dict[str, Any]) -> str:
    """The HTML reference of an OpenAPI document, grouped by tag."""
    groups: dict[str, list[str]] = {}
    for path, item in openapi.get("paths", {}).items():
        for method in _METHODS:
            if method in item:
                tag = (item[method].get("tags") or ["other"])[0]
                groups.setdefault(tag, []).append(_operation(method, path, item[method]))
    info = openapi.get("info", {})
    title = html.escape(f"{info.get('title', 'API')} {info.get('version', '')}")
    sections = "".join(f"<h2>{html.escape(tag)}</h2>{''.join(ops)}" for tag, ops in groups.items())
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{_STYLE}</style></head><body><h1>{title}</h1>"
        f"<p>{html.escape(info.get('description', ''))}</p>"
        '<p>Machine-readable schema: <a href="/openapi.json">/openapi.json</a> (open it in any '
        "OpenAPI viewer or client generator). Send <code>Authorization: Bearer &lt;API key&gt;"
        "</code> with every <code>/api</code> request.</p>"
        f"{sections}</body></html>"
    )


def install_docs(app: FastAPI) -> None:
    """Serve the reference at /docs and /redoc (create the app with docs_url=None, redoc_url=None)."""

    async def reference(request: Request) -> HTMLResponse:
        return HTMLResponse(
            render_reference(app.openapi()),
            headers={"Content-Security-Policy": DOCS_CSP, "Cache-Control": "no-cache"},
        )

    for path in ("/docs", "/redoc"):
        app.add_api_route(path, reference, methods=["GET"], include_in_schema=False)


class SecurityHeaders:
    """Adds a CSP to HTML responses lacking one and `no-store` to every /api response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_api = scope["path"] == "/api" or scope["path"].startswith("/api/")

        async def add_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])]
                names = {k.lower() for k, _ in headers}
                content_type = next((v for k, v in headers if k.lower() == b"content-type"), b"")
                if (
                    content_type.startswith(b"text/html")
                    and b"content-security-policy" not in names
                ):
                    headers.append((b"content-security-policy", DEFAULT_HTML_CSP.encode()))
                if is_api:
                    headers = [(k, v) for k, v in headers if k.lower() != b"cache-control"]
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, add_headers)
