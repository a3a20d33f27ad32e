"""The web dashboard: a small client application shipped inside the package.

`mount(app)` serves the dashboard's page at `/` and `/dashboard` and its assets (plain ES modules
and one stylesheet, no third-party code) under `/dashboard/assets/`. The page itself holds no data:
every screen calls the public API with the API key the user signed in with, so serving these files
needs no authentication. Responses carry a strict Content-Security-Policy (scripts, styles and
connections from this origin only), so nothing is ever loaded from elsewhere.

Caching: at start-up the assets are read and hashed together, and they are served from memory
under `/dashboard/assets/<hash>/...` for a year (`immutable`); the page (`no-cache`, with an ETag) has its
`/dashboard/assets/` references rewritten to that prefix when it is served, so a new release
changes every address at once and a browser never mixes modules of two releases. The modules import
each other by relative paths, so they all resolve under the hashed prefix. The unhashed addresses
keep working (revalidated on every use), as do the addresses of an older hash (a tab opened before
an upgrade): those get the current file, never cached as immutable. The page also lists
`<link rel="modulepreload">` for the modules of the shell and the chat screen, and carries the
OpenAPI document's version (`<meta name="tbd-openapi">`), the client's key for keeping it.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import os
import re
from collections.abc import Sequence
from pathlib import Path

from fastapi import FastAPI, HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).parent / "static"
ASSETS_PREFIX = "/dashboard/assets"

#: Applied to the page and every asset: only this origin, no inline code, no framing.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

#: Cache-Control of the assets under the hashed prefix: their content never changes there.
IMMUTABLE = "public, max-age=31536000, immutable"
#: The first path segment of a hashed address (`asset_hash` length).
_HASH_SEGMENT = re.compile(r"^[0-9a-f]{16}$")
#: `href="/dashboard/assets/` or `src='/dashboard/assets/` in the page.
#: `import ... from "./x.js"`, `export ... from "../x.js"` and `import "./x.js"` (not `import()`).
_STATIC_IMPORT = re.compile(
    r"""^\s*(?:import|export)\b[^;'"()]*?\bfrom\s*["'](\.{1,2}/[^"']+)["']"""
    r"""|^\s*import\s*["'](\.{1,2}/[^"']+)["']""",
    re.MULTILINE,
)
#: The modules a first load needs: the shell and the chat screen (the one to show fastest).
PRELOAD_ENTRIES = ["js/main.js", "js/views/chat.js"]
_ASSET_REFERENCE = re.compile(r"""(\b(?:href|src)\s*=\s*["'])/dashboard/assets/""")


def read_assets(directory: Path = STATIC_DIR) -> dict[str, bytes]:
    """Every file under `directory`, by its relative path (`js/main.js`)."""
    return {
        path.relative_to(directory).as_posix(): path.read_bytes()
        for path in sorted(p for p in directory.rglob("*") if p.is_file())
    }


def asset_hash(directory: Path = STATIC_DIR, files: dict[str, bytes] | None = None) -> str:
    """16 hex digits of a SHA-256 over every file under `directory` (relative path and bytes)."""
    digest = hashlib.sha256()
    for name, body in sorted((files if files is not None else read_assets(directory)).items()):
        digest.update(name.encode() + b"\0" + body + b"\0")
    return digest.hexdigest()[:16]


class _HashedAssets:
    """The assets under the hashed prefix, from memory: exactly the bytes the hash was computed
    over (an edited file on disk cannot appear under the old hash), without a file-system call or
    a thread hop per request."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files: dict[str, tuple[bytes, str, str]] = {}
        for name, body in files.items():
            kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
            if name.endswith(".js"):
                kind = "text/javascript"
            self.files[name] = (body, kind, f'"{hashlib.sha256(body).hexdigest()[:32]}"')

    async def respond(self, request: Request) -> Response:
        found = self.files.get(request.path_params["path"])
        if found is None:
            raise HTTPException(status_code=404)
        body, kind, etag = found
        headers = {**SECURITY_HEADERS, "Cache-Control": IMMUTABLE, "ETag": etag}
        if etag in {
            t.strip().removeprefix("W/")
            for t in request.headers.get("if-none-match", "").split(",")
        }:
            return Response(status_code=304, headers=headers)
        return Response(body, media_type=kind, headers=headers)


class _Assets(StaticFiles):
    """StaticFiles with the security headers and `Cache-Control: no-cache` (revalidated with the
    ETag / Last-Modified StaticFiles sends): the assets at their unhashed addresses, and at the
    addresses of another release's hash."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        first, _, rest = path.partition("/")
        stale = bool(rest) and _HASH_SEGMENT.match(first) is not None
        # An address under another release's hash: the current file, revalidated every time.
        response = await super().get_response(rest if stale else path, scope)
        response.headers.update(SECURITY_HEADERS)
        response.headers["Cache-Control"] = "no-cache"
        return response


def static_imports(entries: list[str], directory: Path = STATIC_DIR) -> list[str]:
    """`entries` (module paths relative to `directory`) and every module they import statically,
    directly or not, in a stable order."""
    seen: list[str] = []
    todo = list(entries)
    while todo:
        name = todo.pop(0)
        if name in seen:
            continue
        seen.append(name)
        source = (directory / name).read_text(encoding="utf-8")
        for match in _STATIC_IMPORT.finditer(source):
            target = (Path(name).parent / (match.group(1) or match.group(2))).as_posix()
            resolved = os.path.normpath(target)
            if (directory / resolved).is_file():
                todo.append(resolved)
    return seen


def render_index(html: str, digest: str, openapi_tag: str, preload: Sequence[str] = ()) -> str:
    """The page with its asset references moved under the hashed prefix, `<link
    rel="modulepreload">` for the modules in `preload` (fetched at once, instead of one level of
    imports after the other) and the OpenAPI document's version in `<meta name="tbd-openapi">`
    (the client's cache key for it)."""
    page = _ASSET_REFERENCE.sub(rf"\g<1>{ASSETS_PREFIX}/{digest}/", html)
    lines = [f'<link rel="modulepreload" href="{ASSETS_PREFIX}/{digest}/{m}">' for m in preload]
    lines.append(f'<meta name="tbd-openapi" content="{openapi_tag}">')
    return page.replace("</head>", "".join(f"  {line}\n" for line in lines) + "</head>", 1)


def mount(app: FastAPI) -> None:
    """Serve the dashboard from `app`: the page at `/`, `/dashboard` and `/dashboard/`, the
    assets under `/dashboard/assets/<hash>/` and `/dashboard/assets/`. Hidden from the OpenAPI
    document."""
    if not (STATIC_DIR / "index.html").is_file():  # pragma: no cover - packaging error
        raise RuntimeError(f"dashboard files missing from the installed package: {STATIC_DIR}")
    files = read_assets()
    digest = asset_hash(files=files)
    # main.js itself is the page's script; everything else is fetched alongside it.
    preload = [m for m in static_imports(PRELOAD_ENTRIES) if m != "js/main.js"]
    built: dict[str, tuple[bytes, str]] = {}

    def build() -> tuple[bytes, str]:
        # On first use: the OpenAPI document is complete only once every route is added.
        if "page" not in built:
            doc = json.dumps(app.openapi(), separators=(",", ":"), sort_keys=True).encode()
            tag = hashlib.sha256(doc).hexdigest()[:16]
            html = files["index.html"].decode("utf-8")
            body = render_index(html, digest, tag, preload).encode()
            built["page"] = (body, f'"{hashlib.sha256(body).hexdigest()[:32]}"')
        return built["page"]

    async def page(request: Request) -> Response:
        body, etag = build()
        headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache", "ETag": etag}
        asked = request.headers.get("if-none-match", "")
        if etag in {t.strip().removeprefix("W/") for t in asked.split(",")}:
            return Response(status_code=304, headers=headers)
        return Response(body, media_type="text/html", headers=headers)

    for path in ("/", "/dashboard", "/dashboard/"):
        app.add_api_route(path, page, methods=["GET"], include_in_schema=False)
    # Before the mount: it would otherwise take the hashed prefix's requests too.
    app.add_api_route(
        f"{ASSETS_PREFIX}/{digest}/{{path:path}}",
        _HashedAssets(files).respond,
        methods=["GET", "HEAD"],
        include_in_schema=False,
    )
    app.mount(ASSETS_PREFIX, _Assets(directory=STATIC_DIR), name="dashboard-assets")
