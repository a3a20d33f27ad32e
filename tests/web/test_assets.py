"""The dashboard's assets: a content-hash prefix cached for a year, the page revalidated with an
ETag, the old addresses still answering, and the OpenAPI document fetched once per tab."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import httpx
from playwright.sync_api import Page, Request, expect

from tbd_agents.web import IMMUTABLE, STATIC_DIR, asset_hash, render_index, static_imports
from tests.web.conftest import Dashboard, sign_in
from tests.web.ui import goto, rendered


def fetch(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(url, timeout=60, **kwargs)  # the first page build renders the OpenAPI doc


HASHED = re.compile(r"/dashboard/assets/([0-9a-f]{16})/")


def test_page_points_at_hashed_assets_cached_for_a_year(dashboard: Dashboard) -> None:
    page = fetch(dashboard.base + "/dashboard")
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-cache"
    prefixes = set(HASHED.findall(page.text))
    assert prefixes == {asset_hash()}, page.text
    digest = prefixes.pop()
    # Every asset reference of the page moved under the prefix, none left unhashed.
    assert not re.search(r"""(?:href|src)=["']/dashboard/assets/(?![0-9a-f]{16}/)""", page.text)
    assert re.search(r'<meta name="tbd-openapi" content="[0-9a-f]{16}">', page.text)
    # The modules of the shell and the chat screen are asked for at once, not level by level.
    preloaded = re.findall(r'<link rel="modulepreload" href="/dashboard/assets/[0-9a-f]{16}/([^"]+)"',
                           page.text)  # fmt: skip
    assert {"js/api.js", "js/dom.js", "js/views/chat.js", "js/markdown.js"} <= set(preloaded)
    assert "js/main.js" not in preloaded

    for name, kind in (("js/main.js", "javascript"), ("js/views/chat.js", "javascript"),
                       ("app.css", "text/css")):  # fmt: skip
        hashed = fetch(f"{dashboard.base}/dashboard/assets/{digest}/{name}")
        assert hashed.status_code == 200, name
        assert kind in hashed.headers["content-type"]
        assert hashed.headers["cache-control"] == IMMUTABLE
        assert "script-src 'self'" in hashed.headers["content-security-policy"]
        assert hashed.content == (STATIC_DIR / name).read_bytes()
        again = fetch(hashed.url, headers={"If-None-Match": hashed.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
        # The unhashed address still answers, revalidated on every use.
        plain = fetch(f"{dashboard.base}/dashboard/assets/{name}")
        assert plain.status_code == 200 and plain.content == hashed.content
        assert plain.headers["cache-control"] == "no-cache"
        # A tab opened before an upgrade asks under the old hash: the current file, not immutable.
        stale = fetch(f"{dashboard.base}/dashboard/assets/{'0' * 16}/{name}")
        assert stale.status_code == 200 and stale.content == hashed.content
        assert stale.headers["cache-control"] == "no-cache"
    assert fetch(f"{dashboard.base}/dashboard/assets/{digest}/nope.js").status_code == 404


def test_page_answers_304_to_its_etag(dashboard: Dashboard) -> None:
    first = fetch(dashboard.base + "/")
    etag = first.headers["etag"]
    again = fetch(dashboard.base + "/dashboard/", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    assert again.headers["cache-control"] == "no-cache"
    other = fetch(dashboard.base + "/", headers={"If-None-Match": '"something-else"'})
    assert other.status_code == 200 and other.text == first.text


def test_hash_follows_the_content(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "js").mkdir()
    (tmp_path / "js" / "a.js").write_text("export const a = 1;\n")
    before = asset_hash(tmp_path)
    assert before == asset_hash(tmp_path)
    (tmp_path / "js" / "a.js").write_text("export const a = 2;\n")
    assert asset_hash(tmp_path) != before
    (tmp_path / "js" / "views").mkdir()
    (tmp_path / "js" / "main.js").write_text(
        'import {\n  a,\n} from "./a.js";\nimport "./views/v.js";\n'
        'const lazy = () => import("./views/lazy.js");\n'
    )
    (tmp_path / "js" / "views" / "v.js").write_text('export { a } from "../a.js";\n')
    (tmp_path / "js" / "views" / "lazy.js").write_text("export const z = 0;\n")
    assert static_imports(["js/main.js"], tmp_path) == ["js/main.js", "js/a.js", "js/views/v.js"]
    html = '<link rel="stylesheet" href="/dashboard/assets/app.css">\n</head>'
    assert render_index(html, "ab" * 8, "t") == (
        f'<link rel="stylesheet" href="/dashboard/assets/{"ab" * 8}/app.css">\n'
        '  <meta name="tbd-openapi" content="t">\n</head>'
    )


def test_browser_loads_hashed_modules_and_fetches_openapi_once(
    page: Page, dashboard: Dashboard
) -> None:
    asked: list[str] = []

    def record(request: Request) -> None:
        path = urlsplit(request.url).path
        if path == "/" or path.startswith(("/dashboard/assets/", "/openapi.json")):
            asked.append(path)

    page.on("request", record)
    sign_in(page, dashboard)
    # Three screens that read the OpenAPI document, each loaded anew (a reload of the tab).
    loads = 0
    for route in ("agents/new", "usage", "memories"):
        goto(page, dashboard, route)
        page.reload()
        loads += 1
        rendered(page, f"#/{route}")
    goto(page, dashboard, "knowledge-sources/new")  # and one without a reload
    assert asked.count("/") == 1 + loads, asked  # the page itself: really loaded 4 times
    assert asked.count("/openapi.json") == 1, asked
    assets = [p for p in asked if p not in ("/", "/openapi.json")]
    assert any(p.endswith("/js/views/records.js") for p in assets)
    # Dynamic imports resolve under the prefix too: nothing asked at an unhashed address.
    assert all(HASHED.match(p) for p in assets), assets
    # Kept in sessionStorage under the document's version, and forgotten on sign-out.
    version = page.locator('meta[name="tbd-openapi"]').get_attribute("content")
    kept = page.evaluate("Object.keys(sessionStorage)")
    assert sorted(kept) == ["tbd-agents.api-key", f"tbd-agents.openapi.{version}"]
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API key")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0
