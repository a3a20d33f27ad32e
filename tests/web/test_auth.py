"""Sign-in: without a valid key the dashboard shows the sign-in screen and asks the API for
nothing; a key is kept for the tab's session only; signing out forgets it."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import Page, Request, expect

from tbd_agents.domain.auth import KeyScope
from tests.web.conftest import Dashboard, shot, sign_in


def api_requests(page: Page) -> list[str]:
    seen: list[str] = []

    def record(request: Request) -> None:
        path = request.url.split("//", 1)[1].split("/", 1)[1]
        if path.startswith(("api/", "openapi.json", "health")):
            seen.append(f"{request.method} /{path}")

    page.on("request", record)
    return seen


def test_without_a_key_only_the_sign_in_screen_and_no_data(
    page: Page, dashboard: Dashboard
) -> None:
    seen = api_requests(page)
    page.goto(dashboard.base + "/#/agents")
    expect(page.get_by_role("heading", name="Sign in to TBD Agents")).to_be_visible()
    expect(page.get_by_label("API key")).to_be_focused()
    page.wait_for_load_state("networkidle")
    shot(page, "signin")
    assert seen == []
    assert page.locator("nav").count() == 0


def test_a_wrong_key_is_refused_next_to_the_field(page: Page, dashboard: Dashboard) -> None:
    seen = api_requests(page)
    page.goto(dashboard.base + "/")
    page.get_by_label("API key").fill("tbd_not-a-real-key")
    page.get_by_role("button", name="Sign in").click()
    error = page.locator("#api-key-error")
    expect(error).to_contain_text("not accepted")
    expect(page.get_by_label("API key")).to_have_attribute("aria-invalid", "true")
    page.wait_for_load_state("networkidle")
    assert seen == ["GET /api/me"]
    assert page.evaluate("sessionStorage.length") == 0


def test_a_revoked_key_in_the_session_shows_sign_in_without_data(
    page: Page, dashboard: Dashboard
) -> None:
    key = dashboard.new_key("revoked-user")
    sign_in(page, dashboard, key)
    me = httpx.get(f"{dashboard.base}/api/keys", headers={"Authorization": f"Bearer {key}"}).json()
    key_id = me[0]["id"]
    httpx.delete(
        f"{dashboard.base}/api/keys/{key_id}", headers={"Authorization": f"Bearer {key}"}
    ).raise_for_status()
    seen = api_requests(page)
    page.reload()
    expect(page.get_by_role("heading", name="Sign in to TBD Agents")).to_be_visible()
    expect(page.locator(".signin-card .notice")).to_contain_text("refused")
    page.wait_for_load_state("networkidle")
    assert seen == ["GET /api/me"]
    assert page.evaluate("sessionStorage.length") == 0


def test_sign_in_keeps_the_key_for_the_session_and_sign_out_forgets_it(
    page: Page, dashboard: Dashboard
) -> None:
    sign_in(page, dashboard)
    expect(page.locator("#who")).to_have_text("web-admin (admin)")
    shot(page, "home")
    assert page.evaluate("Object.values(sessionStorage)") == [dashboard.key]
    assert page.evaluate("localStorage.length") == 0
    page.reload()
    expect(page.get_by_role("heading", name="Welcome to TBD Agents")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in to TBD Agents")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0
    page.reload()
    expect(page.get_by_role("heading", name="Sign in to TBD Agents")).to_be_visible()


def test_a_new_tab_does_not_inherit_the_key(page: Page, dashboard: Dashboard) -> None:
    sign_in(page, dashboard)
    other = page.context.browser.new_context().new_page()
    try:
        other.goto(dashboard.base + "/")
        expect(other.get_by_role("heading", name="Sign in to TBD Agents")).to_be_visible()
    finally:
        other.context.close()


@pytest.mark.parametrize("path", ["/", "/dashboard", "/dashboard/"])
def test_page_and_assets_are_served_with_a_strict_policy(dashboard: Dashboard, path: str) -> None:
    page = httpx.get(dashboard.base + path)
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    asset = httpx.get(dashboard.base + "/dashboard/assets/js/main.js")
    assert asset.status_code == 200
    assert "javascript" in asset.headers["content-type"]
    assert asset.headers["x-content-type-options"] == "nosniff"
    assert httpx.get(dashboard.base + "/dashboard/assets/nope.js").status_code == 404


def test_the_dashboard_is_not_in_the_api_schema(dashboard: Dashboard) -> None:
    paths = httpx.get(dashboard.base + "/openapi.json").json()["paths"]
    assert not [p for p in paths if p == "/" or p.startswith("/dashboard")]


def test_a_read_only_key_signs_in_and_sees_its_scope(page: Page, dashboard: Dashboard) -> None:
    key = dashboard.new_key("reader", KeyScope.READ_ONLY)
    sign_in(page, dashboard, key)
    expect(page.locator("#who")).to_have_text("reader (read only)")
