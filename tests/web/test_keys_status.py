"""API keys (shown once, revoked), the status page, keyboard use and a laptop-sized layout."""

from __future__ import annotations

import uuid

import httpx
from playwright.sync_api import Page, expect

from tests.web.conftest import Dashboard, shot, sign_in
from tests.web.ui import goto, rendered


def test_create_a_key_shown_once_then_revoke_it(page: Page, dashboard: Dashboard) -> None:
    sign_in(page, dashboard)
    goto(page, dashboard, "keys")
    name = f"ci-{uuid.uuid4().hex[:6]}"
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Scope").select_option("read_only")
    page.get_by_role("button", name="Create key").click()
    dialog = page.get_by_role("dialog")
    key = dialog.get_by_label("New API key").input_value()
    assert key.startswith("tbd_")
    me = httpx.get(f"{dashboard.base}/api/me", headers={"Authorization": f"Bearer {key}"}).json()
    assert me["scope"] == "read_only"
    dialog.get_by_role("button", name="Done").click()
    rendered(page, "#/keys")
    row = page.get_by_role("row").filter(has_text=name)
    expect(row).to_contain_text("active")
    assert key not in page.content()  # shown once, never again
    shot(page, "keys")
    row.get_by_role("button", name=f"Revoke {name}").click()
    page.get_by_role("dialog").get_by_role("button", name="Revoke").click()
    expect(page.get_by_role("row").filter(has_text=name)).to_contain_text("revoked")
    assert (
        httpx.get(
            f"{dashboard.base}/api/me", headers={"Authorization": f"Bearer {key}"}
        ).status_code
        == 401
    )


def test_status_page_shows_the_readiness_checks(page: Page, dashboard: Dashboard) -> None:
    sign_in(page, dashboard)
    goto(page, dashboard, "status")
    expect(page.get_by_role("row").filter(has_text="database")).to_contain_text("ok")
    expect(page.locator("#main")).to_contain_text("Everything is ready.")
    expect(page.locator("#main")).to_contain_text("Signed in as web-admin")
    shot(page, "status")


def test_keyboard_only_sign_in_and_navigation(page: Page, dashboard: Dashboard) -> None:
    page.goto(dashboard.base + "/")
    expect(page.get_by_label("API key")).to_be_focused()
    page.keyboard.type(dashboard.key)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Welcome to TBD Agents")).to_be_visible()
    # On a fresh load the first Tab reaches the skip link, which becomes visible and moves
    # focus to the content without changing the address.
    page.reload()
    rendered(page, "#/")
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    box = skip.bounding_box()
    assert box is not None and box["y"] >= 0
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    assert page.url.endswith("/#/") or page.url.endswith("/")
    # Tab to the Agents link in the sidebar and follow it with Enter.
    agents = page.get_by_role("navigation", name="Main").get_by_role("link", name="Agents")
    for _ in range(20):
        page.keyboard.press("Tab")
        if agents.evaluate("e => e === document.activeElement"):
            break
    expect(agents).to_be_focused()
    outline = agents.evaluate(
        "e => getComputedStyle(e).outlineStyle + ' ' + getComputedStyle(e).outlineWidth"
    )
    assert not outline.startswith("none") and not outline.endswith(" 0px"), outline
    page.keyboard.press("Enter")
    rendered(page, "#/agents")
    expect(agents).to_have_attribute("aria-current", "page")
    # Focus moved to the new screen's content.
    assert page.evaluate("document.activeElement.id") == "main"


def test_dialogs_close_with_escape(page: Page, dashboard: Dashboard) -> None:
    sign_in(page, dashboard)
    agent = httpx.post(
        f"{dashboard.base}/api/agents",
        json={"name": f"esc-{uuid.uuid4().hex[:6]}"},
        headers={"Authorization": f"Bearer {dashboard.key}"},
    ).json()
    goto(page, dashboard, "agents")
    page.get_by_role("button", name=f"Delete {agent['name']}").click()
    expect(page.get_by_role("dialog")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_have_count(0)
    assert (
        httpx.get(
            f"{dashboard.base}/api/agents/{agent['id']}",
            headers={"Authorization": f"Bearer {dashboard.key}"},
        ).status_code
        == 200
    )


def test_nothing_overflows_a_small_laptop_screen(page: Page, dashboard: Dashboard) -> None:
    page.set_viewport_size({"width": 1024, "height": 640})
    sign_in(page, dashboard)
    for route in ("agents/new", "chat", "transfer", "keys", "status", "usage"):
        goto(page, dashboard, route)
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{route} is wider than the window by {overflow}px"
        shot(page, "laptop-1024-" + route.replace("/", "-"))
