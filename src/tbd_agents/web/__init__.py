"""The web dashboard: a small client application shipped inside the package.

`mount(app)` serves the dashboard's page at `/` and `/dashboard` and its assets (plain ES modules
and one stylesheet, no third-party code) under `/dashboard/assets/`. The page itself holds no data:
every screen calls the public API with the API key the user signed in with, so serving these files
needs no authentication. Responses carry a strict Content-Security-Policy (scripts, styles and
connections from this origin only), so nothing is ever loaded from elsewhere.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import FileResponse, Response
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


class _Assets(StaticFiles):
    """StaticFiles that adds the security headers and asks browsers to revalidate."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        response.headers["Cache-Control"] = "no-cache"
        return response


def index_response() -> FileResponse:
    """The dashboard's single page, with the security headers."""
    headers = dict(SECURITY_HEADERS)
    headers["Cache-Control"] = "no-cache"
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=headers)


def mount(app: FastAPI) -> None:
    """Serve the dashboard from `app`: the page at `/`, `/dashboard` and `/dashboard/`, the
    assets under `/dashboard/assets/`. Hidden from the OpenAPI document."""
    if not (STATIC_DIR / "index.html").is_file():  # pragma: no cover - packaging error
        raise RuntimeError(f"dashboard files missing from the installed package: {STATIC_DIR}")

    async def page(request: Request) -> Response:
        return index_response()

    for path in ("/", "/dashboard", "/dashboard/"):
        app.add_api_route(path, page, methods=["GET"], include_in_schema=False)
    app.mount(ASSETS_PREFIX, _Assets(directory=STATIC_DIR), name="dashboard-assets")
