"""/docs (Swagger UI), /redoc (ReDoc) and /docs/list, attacked for real: the app on a loopback
socket with the embedded PostgreSQL of the API tests, and Debian's Chromium driven by Playwright
loading the pages under their Content-Security-Policy.

Issue #12, finding L4: /docs loaded Swagger UI from a CDN without a policy. The pages must come
with their scripts from this server only, run no inline code but the nonce-bearing bootstrap,
and trip no CSP violation in a real browser."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Page, expect
from sqlalchemy.engine import URL

from tbd_agents.api import docs
from tbd_agents.domain.auth import KeyScope
from tbd_agents.services.keys import ApiKeys
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tests.api.conftest import api_db, make_settings  # noqa: F401
from tests.api.live import live_server
from tests.support import pg

VIEWERS = ["/docs", "/redoc"]
#: The first /docs/list of a server builds its OpenAPI document: more than httpx's default 5 s
#: on a busy machine (several test processes at once).
TIMEOUT = 60.0
JS_TYPES = ("text/javascript", "application/javascript")


@pytest.fixture(scope="module")
def live_url(api_db: URL, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:  # noqa: F811
    settings = make_settings(
        tmp_path_factory.mktemp("docs"), postgres_uri=api_db.render_as_string(hide_password=False)
    )
    with live_server(settings) as url:
        yield url


@pytest.fixture(scope="module")
def api_key(api_db: URL) -> str:  # noqa: F811
    """A user's API key, written straight to the database (as the CLI does)."""

    async def create() -> str:
        store = PostgresStore(create_engine(api_db, pool_size=1, max_overflow=0), url=api_db)
        try:
            async with store.unit_of_work() as repos:
                key = await ApiKeys(repos).create("docs-reader", scope=KeyScope.USER, name="docs")
                return key.plaintext
        finally:
            await store.close()

    return pg.run(create())


class _Page(HTMLParser):
    """The resource URLs of a page and its <script> elements (nonce, inline or not)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.scripts: list[dict[str, str | None]] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script":
            self.scripts.append({**values, "text": ""})
            self._in_script = True
        for attr in ("src", "href", "action", "data"):
            if values.get(attr):
                self.urls.append(str(values[attr]))

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1]["text"] = (self.scripts[-1]["text"] or "") + data


def parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


def directives(csp: str) -> dict[str, list[str]]:
    parts = (d.split() for d in csp.split(";") if d.strip())
    return {d[0]: d[1:] for d in parts}


def get(url: str) -> httpx.Response:
    return httpx.get(url, timeout=TIMEOUT)


def external_urls(text: str, base: str) -> list[str]:
    return [u for u in re.findall(r"https?://[^\s\"'<>)]+", text) if not u.startswith(base)]


# --- the pages over HTTP --------------------------------------------------------------------------
@pytest.mark.parametrize("path", VIEWERS)
def test_viewer_page_has_a_nonce_csp_and_no_external_url(live_url: str, path: str) -> None:
    first, second = get(live_url + path), get(live_url + path)
    assert first.status_code == 200 and first.headers["content-type"].startswith("text/html")
    csp = directives(first.headers["content-security-policy"])
    assert csp["default-src"] == ["'none'"]
    nonce = csp["script-src"][1].removeprefix("'nonce-").removesuffix("'")
    assert csp["script-src"] == ["'self'", f"'nonce-{nonce}'"] and len(nonce) >= 22
    assert csp["style-src"] == ["'self'", f"'nonce-{nonce}'"]
    assert csp["img-src"] == ["'self'", "data:"] and csp["connect-src"] == ["'self'"]
    for name in ("frame-ancestors", "base-uri", "form-action", "object-src"):
        assert csp.get(name, ["'none'"]) == ["'none'"], name
    assert "unsafe" not in first.headers["content-security-policy"]
    assert nonce not in second.headers["content-security-policy"]  # new on every response
    page = parse(first.text)
    inline = [s for s in page.scripts if not s.get("src")]
    assert len(inline) == 1 and "/openapi.json" in str(inline[0]["text"])
    assert all(s.get("nonce") == nonce for s in page.scripts)
    assert page.urls and all(not urlsplit(u).netloc for u in page.urls), page.urls
    assert external_urls(first.text, live_url) == []
    assert first.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", VIEWERS)
def test_viewer_assets_are_served_with_their_types(live_url: str, path: str) -> None:
    page = get(live_url + path)
    urls = parse(page.text).urls
    assert any(u.endswith(".js") for u in urls)
    for url in urls:
        asset = get(urljoin(live_url + path, url))
        assert asset.status_code == 200, url
        assert asset.headers["x-content-type-options"] == "nosniff", url
        kind = asset.headers["content-type"].split(";")[0]
        expected = {".js": JS_TYPES, ".css": ("text/css",), ".png": ("image/png",)}
        assert kind in expected[Path(url).suffix], (url, kind)
        if url.endswith(".css"):  # what a stylesheet makes the browser load: data: only
            refs = re.findall(r"url\(\s*[\"']?([^\"')]+)", asset.text)
            assert refs and all(r.startswith("data:") for r in refs), refs
        if url.endswith(docs.REDOC_FILE):  # its badge image no longer points at a CDN
            assert b"cdn.redoc.ly" not in asset.content
            assert b"currentScript.nonce" in asset.content


def test_list_page_has_no_script_and_links_only_here(live_url: str) -> None:
    page = get(live_url + "/docs/list")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "http" not in csp and "script-src" not in csp
    parsed = parse(page.text)
    assert parsed.scripts == []
    assert parsed.urls and all(not urlsplit(u).netloc for u in parsed.urls), parsed.urls
    assert "/api/agents" in page.text and "/openapi.json" in parsed.urls


# --- fallbacks --------------------------------------------------------------------------------------
def test_without_the_assets_package_docs_is_the_list(
    api_db: URL,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With `fastapi_offline` not importable, /docs and /redoc are the script-free list."""
    monkeypatch.setitem(sys.modules, docs.ASSETS_PACKAGE, None)  # `import` now fails
    assert docs.assets_dir() is None
    settings = make_settings(tmp_path, postgres_uri=api_db.render_as_string(hide_password=False))
    with live_server(settings) as url:
        for path in VIEWERS:
            page = get(url + path)
            assert page.status_code == 200 and parse(page.text).scripts == []
            assert page.headers["content-security-policy"] == docs.DOCS_CSP
            assert "/api/agents" in page.text
        assert get(url + "/docs/static/swagger-ui.css").status_code == 404


def test_an_unknown_redoc_bundle_is_not_served_as_redoc(tmp_path: Path) -> None:
    """If the package's ReDoc no longer matches our fixes, /redoc is the list, /docs stays."""
    real = docs.assets_dir()
    assert real is not None, "fastapi-offline is a dependency: pip install -e ."
    assert docs.fixed_redoc((real / docs.REDOC_FILE).read_bytes()) is not None
    for name in docs.ASSET_FILES:
        (tmp_path / name).symlink_to(real / name)
    (tmp_path / docs.REDOC_FILE).unlink()
    (tmp_path / docs.REDOC_FILE).write_text("window.Redoc = {init() {}};")
    app = FastAPI(docs_url=None, redoc_url=None)
    docs.install_docs(app, tmp_path)
    # TestClient runs the app on its own loop in a thread: under tests/web an event loop stays
    # registered on the main thread (Playwright), so this test must not be a coroutine.
    with TestClient(app) as client:
        assert parse(client.get("/redoc").text).scripts == []
        assert "swagger-ui-bundle.js" in client.get("/docs").text


# --- in a real browser ------------------------------------------------------------------------------
class Watch:
    """What a page did: requests, CSP violations (from the DOM event), errors."""

    def __init__(self, page: Page) -> None:
        self.requests: list[str] = []
        self.errors: list[str] = []
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.add_init_script(
            "window.__csp = []; document.addEventListener('securitypolicyviolation', e =>"
            " window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"
        )

    def foreign(self) -> list[str]:
        """Requests that left for anything but this machine (blob: and data: stay in the page)."""
        hosts = {
            urlsplit(u).hostname for u in self.requests if urlsplit(u).scheme in ("http", "https")
        }
        return sorted(h for h in hosts if h != "127.0.0.1")


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    context.set_default_timeout(20_000)
    yield context.new_page()
    context.close()


def test_swagger_ui_renders_and_tries_a_request_with_an_api_key(
    page: Page, live_url: str, api_key: str
) -> None:
    watch = Watch(page)
    sent: list[str | None] = []
    page.on(
        "request",
        lambda r: (
            urlsplit(r.url).path == "/api/agents" and sent.append(r.headers.get("authorization"))
        ),
    )
    page.goto(live_url + "/docs")
    operation = page.locator(".opblock-get", has=page.locator('[data-path="/api/agents"]'))
    expect(operation).to_be_visible()
    page.get_by_role("button", name="Authorize").first.click()
    page.locator("#auth-bearer-value").fill(api_key)
    page.get_by_role("button", name="Apply credentials").click()
    page.locator(".modal-ux .btn-done").click()
    operation.locator(".opblock-summary").first.click()
    operation.get_by_role("button", name="Try it out").click()
    operation.get_by_role("button", name="Execute").click()
    expect(operation.locator(".live-responses-table tbody td.response-col_status")).to_have_text(
        "200"
    )
    assert sent == [f"Bearer {api_key}"]
    page.reload()  # persistAuthorization: the key survives a reload
    expect(page.locator(".auth-wrapper .authorize.locked")).to_be_visible()
    assert page.evaluate("window.__csp") == []
    assert watch.errors == [] and watch.foreign() == []
    assert any(u.endswith("/docs/static/swagger-ui-bundle.js") for u in watch.requests)


def test_redoc_renders_without_csp_violation(page: Page, live_url: str) -> None:
    watch = Watch(page)
    page.goto(live_url + "/redoc")
    # ReDoc lays out all ~300 operations before showing any: 10-30 s on a loaded 2-core machine.
    expect(page.get_by_text("/api/agents", exact=True).first).to_be_attached(timeout=90_000)
    expect(page.get_by_role("menuitem").first).to_be_visible()
    page.get_by_placeholder("Search...").fill("agents")  # the search worker (a blob: URL) runs
    # The worker indexes every operation first: as slow as the layout when the machine is busy
    # (the fault suite's servers run beside this test in the full suite).
    expect(page.get_by_role("search").get_by_role("menuitem").first).to_be_visible(timeout=90_000)
    assert page.evaluate("window.__csp") == []
    assert watch.errors == [] and watch.foreign() == []
