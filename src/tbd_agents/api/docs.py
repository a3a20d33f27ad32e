"""The API reference pages and the security headers of every response.

`/docs` is Swagger UI (with "Try it out" and an Authorize button for the Bearer API key) and
`/redoc` is ReDoc, both on our `/openapi.json`. Their files come from an installed package
(`fastapi-offline`, an optional dependency) and are served by this app under `/docs/static/`, so the
pages make no request to another origin. Each page answers with its own strict
Content-Security-Policy: scripts and styles from this origin plus the one inline bootstrap script
allowed by a nonce that is new on every response. ReDoc's bundle needs two adjustments to live
under that policy (see `REDOC_FIXES`); they are applied in memory as it is served.

`/docs/list` is a page rendered on the server from the OpenAPI document, without any script: every
operation with its method, path, summary and parameters. `/docs` and `/redoc` show it instead when
the assets package is not installed (or ReDoc's bundle is not the one the fixes were written for).

`SecurityHeaders` (an ASGI middleware) gives every HTML response that has none a strict
Content-Security-Policy, and every response under /api `Cache-Control: no-store`: keys, tokens,
provider and MCP settings come back in API answers, and marking all of them (not a list of
routes that would drift) keeps them out of browser and proxy caches.
"""

from __future__ import annotations

import base64
import hashlib
import html
import importlib.resources
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

_STYLE = (
    "body{font:15px/1.45 system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem}"
    "code{font-size:.95em}h2{margin-top:2rem;border-bottom:1px solid #ccc}"
    ".op{margin:.6rem 0}.m{display:inline-block;min-width:4.5rem;font-weight:bold}"
    ".p{color:#555;margin-left:4.5rem;font-size:.9em}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()

#: The list page (/docs/list): nothing but its own inline style; links only (no scripts, no fetches).
DOCS_CSP = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
#: Any other HTML answer without its own policy (the dashboard sets a stricter-scoped one).
DEFAULT_HTML_CSP = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

#: The installed package that ships Swagger UI's and ReDoc's files (an optional dependency).
ASSETS_PACKAGE = "fastapi_offline"
REDOC_FILE = "redoc.standalone.js"
ASSET_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", REDOC_FILE, "favicon.png")
STATIC_PREFIX = "/docs/static"
#: ReDoc's bundle as we serve it, each (original, replacement) found exactly once:
REDOC_FIXES = (
    # Its "API docs by Redocly" badge shows an image from a CDN; an empty src loads nothing.
    (b'src:"https://cdn.redoc.ly/redoc/logo-mini.svg"', b'src:""'),
    # The scrollbar stylesheet it inserts while loading, before `Redoc.init` hands it the nonce,
    # takes the nonce of the <script> element that loads the bundle.
    (b"n.nc=void 0;", b"n.nc=document.currentScript&&document.currentScript.nonce||void 0;"),
)
_PAGE_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}

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


def assets_dir(package: str = ASSETS_PACKAGE) -> Path | None:
    """The directory of Swagger UI's and ReDoc's files in `package`, or None when the package is
    not importable or lacks one of them."""
    try:
        root = importlib.resources.files(package) / "static"
    except ImportError:
        return None
    path = Path(str(root))
    return path if all((path / name).is_file() for name in ASSET_FILES) else None


def fixed_redoc(original: bytes) -> bytes | None:
    """ReDoc's bundle with `REDOC_FIXES` applied, or None if one of them does not match once."""
    for old, new in REDOC_FIXES:
        if original.count(old) != 1:
            return None
        original = original.replace(old, new)
    return original


def docs_csp(nonce: str, *, redoc: bool = False) -> str:
    """The policy of the Swagger UI and ReDoc pages: files from this origin, inline code only
    with `nonce`; ReDoc also runs its search index in a worker built from a blob: URL."""
    worker = " worker-src blob:;" if redoc else ""
    return (
        f"default-src 'none'; script-src 'self' 'nonce-{nonce}'; "
        f"style-src 'self' 'nonce-{nonce}'; img-src 'self' data:; connect-src 'self';{worker} "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )


def _js(value: object) -> str:
    """`value` as a JavaScript literal that cannot close the surrounding <script>."""
    return json.dumps(value).replace("<", "\\u003c")


def _page(
    title: str, static: str, nonce: str, *, head: str, body: str, script: str, boot: str
) -> str:
    """An HTML page that loads `script` from our static files, then runs `boot` inline."""
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}'
        f'</title><link rel="icon" href="{static}/favicon.png">{head}</head><body>{body}'
        f'<script src="{static}/{script}" nonce="{nonce}"></script>'
        f'<script nonce="{nonce}">{boot}</script></body></html>'
    )


def render_swagger(title: str, openapi_url: str, static: str, nonce: str) -> str:
    """Swagger UI on our OpenAPI document: Authorize takes an API key (the document's Bearer
    scheme) and keeps it in the browser across reloads (`persistAuthorization`)."""
    config = {
        "url": openapi_url,
        "dom_id": "#swagger-ui",
        "layout": "BaseLayout",
        "deepLinking": True,
        "persistAuthorization": True,
        "displayRequestDuration": True,
        "validatorUrl": None,  # the default sends the schema's URL to a public validator
    }
    presets = "[SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset]"
    return _page(
        f"{title} - Swagger UI",
        static,
        nonce,
        head=f'<link rel="stylesheet" href="{static}/swagger-ui.css">',
        body='<div id="swagger-ui"></div>',
        script="swagger-ui-bundle.js",
        boot=f"window.ui = SwaggerUIBundle(Object.assign({_js(config)}, {{presets: {presets}}}));",
    )


def render_redoc(title: str, openapi_url: str, static: str, nonce: str) -> str:
    """ReDoc on our OpenAPI document; the stylesheets it generates carry `nonce`."""
    options = _js({"nonce": nonce})
    return _page(
        f"{title} - ReDoc",
        static,
        nonce,
        head="",
        body='<div id="redoc"></div>',
        script=REDOC_FILE,
        boot=f'Redoc.init({_js(openapi_url)}, {options}, document.getElementById("redoc"));',
    )


class _DocsAssets(StaticFiles):
    """The package's files with `nosniff`; ReDoc's bundle is served with its fixes."""

    def __init__(self, directory: Path, redoc: bytes | None) -> None:
        super().__init__(directory=directory)
        self.redoc = redoc

    async def get_response(self, path: str, scope: Scope) -> Response:
        if path == REDOC_FILE and self.redoc is not None:
            response = Response(self.redoc, media_type="text/javascript; charset=utf-8")
        else:
            response = await super().get_response(path, scope)
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


Renderer = Callable[[str, str, str, str], str]


def install_docs(app: FastAPI, assets: Path | None = None) -> None:
    """Serve the list page at /docs/list; Swagger UI at /docs, ReDoc at /redoc and their files
    under /docs/static from `assets` (default: `assets_dir()`), or the list page there too when
    there are none. Create the app with docs_url=None, redoc_url=None."""
    assets = assets or assets_dir()
    redoc = fixed_redoc((assets / REDOC_FILE).read_bytes()) if assets else None

    async def reference(request: Request) -> HTMLResponse:
        return HTMLResponse(
            render_reference(app.openapi()),
            headers={"Content-Security-Policy": DOCS_CSP, "Cache-Control": "no-cache"},
        )

    def viewer(render: Renderer) -> Callable[[Request], Awaitable[HTMLResponse]]:
        async def page(request: Request) -> HTMLResponse:
            root = request.scope.get("root_path", "")
            nonce = secrets.token_urlsafe(18)
            body = render(app.title, f"{root}{app.openapi_url}", f"{root}{STATIC_PREFIX}", nonce)
            csp = docs_csp(nonce, redoc=render is render_redoc)
            headers = {"Content-Security-Policy": csp, "Cache-Control": "no-store"}
            return HTMLResponse(body, headers={**headers, **_PAGE_HEADERS})

        return page

    if assets is None:
        log.warning("%s is not installed: /docs and /redoc show the plain list", ASSETS_PACKAGE)
    elif redoc is None:
        log.warning("%s: unexpected ReDoc bundle, /redoc shows the plain list", assets)
    pages: dict[str, Callable[[Request], Awaitable[HTMLResponse]]] = {
        "/docs/list": reference,
        "/docs": reference,
        "/redoc": reference,
    }
    if assets is not None:
        app.mount(STATIC_PREFIX, _DocsAssets(assets, redoc), name="docs-static")
        pages["/docs"] = viewer(render_swagger)
        if redoc is not None:
            pages["/redoc"] = viewer(render_redoc)
    for path, handler in pages.items():
        app.add_api_route(path, handler, methods=["GET"], include_in_schema=False)


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


def install_cached_openapi(app: FastAPI) -> None:
    """Serve `app.openapi_url` with a strong ETag and `Cache-Control: no-cache`, answering 304
    to a matching `If-None-Match`. The document (a few hundred KB) only changes with the
    server's code, yet the dashboard asks for it on every page load: with the validator a
    reload costs a 304 without a body instead of the whole document. Replaces FastAPI's own
    route for that path."""
    url = app.openapi_url
    if not url:
        return
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) != url]
    cached: dict[str, tuple[bytes, str]] = {}

    async def openapi(request: Request) -> Response:
        if "doc" not in cached:
            body = json.dumps(app.openapi(), separators=(",", ":")).encode()
            cached["doc"] = (body, f'"{hashlib.sha256(body).hexdigest()[:32]}"')
        body, tag = cached["doc"]
        headers = {"ETag": tag, "Cache-Control": "no-cache"}
        asked = request.headers.get("if-none-match", "")
        if tag in {t.strip().removeprefix("W/") for t in asked.split(",")}:
            return Response(status_code=304, headers=headers)
        return Response(body, media_type="application/json", headers=headers)

    app.add_api_route(url, openapi, methods=["GET"], include_in_schema=False)
